"""Kinto's metrics service, as the plugin's measures report to it."""

from kinto.core import metrics as core_metrics
from kinto.plugins.statsd import StatsDService


def service_of(registry):
    """Kinto's metrics service, or None when no plugin enabled one."""
    service = registry.queryUtility(core_metrics.IMetricsService)
    return None if isinstance(service, core_metrics.NoOpMetricsService) else service


def count(service, key, value, labels=()):
    """Add ``value`` to the counter ``key`` of ``labels`` (``(name, value)`` pairs)."""
    if isinstance(service, StatsDService):
        # Kinto's StatsD service keeps labelled counts as sets of unique values, which would
        # lose the counts: the labels go in the key instead, as that service does for timers.
        key = ".".join([key, *(f"{name}.{label}" for name, label in labels)])
        labels = ()
    service.count(key, value, unique=list(labels) or None)
