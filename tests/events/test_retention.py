"""The blob an undelivered ``stored`` event names survives its replacement and garbage
collection; once delivered, it stays ``min(fetch_grace_seconds, url_expires_seconds)``, then
goes as any replaced blob does."""

import pytest
import transaction
from kinto.core.utils import msec_time

from kinto_attachment import gc
from kinto_attachment.events import command
from kinto_attachment.state import references

from .conftest import destination_settings
from .test_delivery import BACKENDS, LOCAL, RECORD, delivered


HOUR_MS = 3600 * 1000


def collect(kinto, later_ms=0):
    """A whole collection (orphans too, with no grace), ``later_ms`` from now."""
    return gc.collect(kinto.registry, now=msec_time() + later_ms)


def app(events_app, receiver, backend, replaced_grace=0, **extra):
    more = {
        "kinto.attachment.gc.replaced_grace_seconds": str(replaced_grace),
        "kinto.attachment.gc.orphans_grace_seconds": "0",
    }
    return events_app(backend, more=more, **extra, **destination_settings("webhook", receiver))


@pytest.mark.parametrize("replaced_grace", [0, 600])
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_undelivered_version_survives_replacement_and_gc(
    events_app, receiver, backend, replaced_grace
):
    kinto = app(events_app, receiver, backend, replaced_grace, fetch_grace_seconds=3600)
    old = kinto.upload(RECORD, b"old").json
    receiver.statuses = [(503, {})] * 3  # Down: the first event stays undelivered.
    new = kinto.upload(RECORD, b"new").json
    kinto.registry.attachment_dispatcher.run_once()
    receiver.statuses = [(503, {})] * 3
    assert kinto.exists(old["location"])
    collect(kinto, later_ms=2 * HOUR_MS)
    assert kinto.exists(old["location"]), "held by its undelivered event"
    with transaction.manager:
        referenced, _ = references.index(kinto.registry)
    assert kinto.key_of(old["location"]) in referenced

    receiver.statuses = []
    delivered(kinto)
    assert len(receiver.events()) == 2
    collect(kinto, later_ms=HOUR_MS // 2)
    assert kinto.exists(old["location"]), "within fetch_grace_seconds of its delivery"
    collect(kinto, later_ms=HOUR_MS + 60_000)
    assert not kinto.exists(old["location"]), "released after the grace"
    assert kinto.exists(new["location"])


def test_the_url_lifetime_bounds_the_hold(events_app, receiver):
    kinto = app(events_app, receiver, "memory", fetch_grace_seconds=3600, url_expires_seconds=60)
    old = kinto.upload(RECORD, b"old").json
    delivered(kinto)
    kinto.upload(RECORD, b"new")
    collect(kinto)
    assert kinto.exists(old["location"])
    collect(kinto, later_ms=61_000)
    assert not kinto.exists(old["location"])


def test_a_dead_event_holds_its_blob_until_purged(events_app, receiver):
    kinto = app(events_app, receiver, "memory", max_attempts=1, fetch_grace_seconds=0)
    receiver.statuses = [(500, {})]
    old = kinto.upload(RECORD, b"old").json
    delivered(kinto)
    kinto.upload(RECORD, b"new")
    delivered(kinto)
    collect(kinto, later_ms=HOUR_MS)
    assert kinto.exists(old["location"])
    assert command.run(kinto.registry, "purge") == ["1 dead events purged"]
    collect(kinto)
    assert not kinto.exists(old["location"])


def test_an_expired_data_file_held_by_its_event_waits(events_app, receiver):
    kinto = app(events_app, receiver, "memory", fetch_grace_seconds=0)
    receiver.statuses = [(503, {})]
    kinto.app.post("/v1/data/files?id=f&ttl=1", b"data", extra_environ=LOCAL)
    kinto.registry.attachment_dispatcher.run_once()
    [key] = [k for k in kinto.files() if k.startswith(".data-files/")]
    report = collect(kinto, later_ms=1000)
    assert [entry["id"] for entry in report.expired_files] == ["f"]
    assert key in kinto.files()
    delivered(kinto)
    collect(kinto, later_ms=1000)
    assert key not in kinto.files()
