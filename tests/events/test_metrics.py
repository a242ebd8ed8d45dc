"""Event metrics, by destination: delivered, retried, dead, pending, delivery latency."""

import pytest
from kinto.plugins import prometheus

from ..test_metrics import added, scrape
from .conftest import destination_settings
from .test_delivery import RECORD, delivered


@pytest.fixture
def measured(events_app, receiver):
    prometheus.reset_registry()
    includes = "kinto.plugins.flush kinto.plugins.prometheus kinto_attachment"
    kinto = events_app(
        "memory",
        max_attempts=2,
        more={"kinto.includes": includes},
        **destination_settings("webhook", receiver),
    )
    yield kinto
    prometheus.reset_registry()


def test_event_metrics_by_destination(measured, receiver):
    kinto = measured
    before = scrape(kinto.app)
    receiver.statuses = [(500, {}), (500, {})]
    kinto.upload(RECORD, b"dies")
    delivered(kinto)  # Retried once, then dead.
    receiver.statuses = [(503, {})]
    kinto.upload(RECORD.replace("r1", "r2"), b"retried once")
    kinto.upload(RECORD.replace("r1", "r3"), b"delivered at once")
    kinto.upload(RECORD.replace("r1", "r4"), b"waits")
    kinto.registry.attachment_dispatcher.housekeep()
    delivered(kinto)
    kinto.registry.attachment_dispatcher.housekeep()
    after = scrape(kinto.app)

    webhook = {"destination": "webhook"}
    assert added(before, after, "kinto_attachment_events_delivered_total", **webhook) == 3
    assert added(before, after, "kinto_attachment_events_retried_total", **webhook) == 2
    assert added(before, after, "kinto_attachment_events_dead_total", **webhook) == 1
    latency = "kinto_attachment_events_latency_seconds_count"
    assert added(before, after, latency, **webhook) == 3
    pending = "kinto_attachment_events_pending"
    assert added(before, after, pending + "_count", **webhook) == 2
    assert added(before, after, pending + "_sum", **webhook) == 3  # 3 waited, then none.
