"""The measures of what uploads and downloads go through: the blob store's operations (timed
as Kinto times its own backends), the ``/data/files`` transfer budget's waits, garbage
collections and the delivery of events."""

import time

from kinto.core import metrics as core_metrics
from kinto.core.utils import classname

from ..data_files.limiter import Busy
from .service import count, service_of


def watch_store(service, store):
    """Time the store's operations as Kinto times its backends (``backend.{class}.seconds``
    by ``method``), and as kinto-attachment its storage; the staged blobs' ``write``,
    ``commit`` and ``abort`` too, since that is where an upload spends its time."""
    name = classname(store)
    core_metrics.watch_execution_time(service, store, prefix="backend", classname=name)
    stage = store.stage

    def watched_stage(*args, **kwargs):
        staged = stage(*args, **kwargs)
        core_metrics.watch_execution_time(service, staged, prefix="backend", classname=name)
        return staged

    store.stage = watched_stage


def timed_acquire(service, acquire):
    """The limiter's ``acquire``, recording how long it waited and for what outcome:
    ``acquired``, or ``busy`` (no budget in time: a 503)."""

    def waited(started, outcome):
        seconds = time.perf_counter() - started
        service.timer(
            "attachment.limiter.wait_seconds", value=seconds, labels=[("outcome", outcome)]
        )

    def timed_acquire(*args, **kwargs):
        started = time.perf_counter()
        try:
            hold = acquire(*args, **kwargs)
        except Busy:
            waited(started, "busy")
            raise
        waited(started, "acquired")
        return hold

    return timed_acquire


def collected(registry, report):
    """Count a garbage collection and what it removed (a dry run removes nothing)."""
    service = service_of(registry)
    if service is None or report.dry_run:
        return
    count(service, "attachment.gc.runs", 1)
    removed = {
        "expired_files": report.expired_files,
        "expired_uploads": report.expired_uploads,
        "replaced": report.replaced,
        "orphans": report.orphans,
        "aborted_uploads": report.aborted,
    }
    for kind, items in removed.items():
        count(service, "attachment.gc.removed", len(items), [("kind", kind)])
    count(service, "attachment.gc.removed_bytes", report.total_bytes)


class EventMeasures:
    """What the events' dispatcher reports (:attr:`~kinto_attachment.events.dispatcher.
    Dispatcher.measures`), by destination: events delivered and their latency from commit,
    failed deliveries (``retried`` or ``dead``), events pending."""

    def __init__(self, service):
        self._service = service

    def delivered(self, destination, latency_seconds):
        labels = [("destination", destination)]
        count(self._service, "attachment.events.delivered", 1, labels)
        self._service.timer(
            "attachment.events.latency_seconds", value=latency_seconds, labels=labels
        )

    def failed(self, destination, dead):
        outcome = "dead" if dead else "retried"
        count(self._service, f"attachment.events.{outcome}", 1, [("destination", destination)])

    def pending(self, destination, events):
        labels = [("destination", destination)]
        self._service.observe("attachment.events.pending", events, labels=labels)
