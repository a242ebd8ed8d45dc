"""Events under interleavings the other tests do not play: the dispatcher's writes racing an
upload's on PostgreSQL, commit hooks of the memory backend running in an order a preempted
thread can split."""

import hashlib
import threading
import time

import pytest
import transaction

from kinto_attachment.state import outbox

from .conftest import destination_settings
from .test_delivery import RECORD, delivered


def rows(kinto, state=None):
    with transaction.manager:
        return sorted(outbox.rows(kinto.registry.storage, state), key=lambda r: r["seq"])


@pytest.mark.postgresql
def test_an_upload_never_fails_because_the_dispatcher_retries_the_previous_event(
    events_app, receiver
):
    """Found by review (2026-12-05).

    Uploads to a record get ``409 Integrity constraint violated`` while the dispatcher
    works on that record's previous event.

    Every outbox row of a subject (and destination) lives under one Kinto parent id, and
    Kinto's ``bump_timestamp`` trigger gives the objects of a parent ``last_modified`` values
    that a UNIQUE index (``idx_objects_parent_id_resource_name_last_modified``) keeps
    distinct. The dispatcher's own statements (the claim, the mark as delivered or failed,
    the command's revive: all ``UPDATE ... SET data``) fire that trigger on the latest row of
    the parent, in transactions of their own, concurrently with the upload's ``INSERT`` of
    the next row (:data:`kinto_attachment.state.outbox.INSERT`), which the record's lock does
    not order with them. Both take the same millisecond: whichever writes second violates the
    index. When it is the upload, the upload fails (409, its file thrown away) because of
    event bookkeeping; when it is the dispatcher's mark, a whole round of delivered events is
    left pending and delivered again. :mod:`kinto_attachment.state.paging` knows the hazard
    (``own_parent``) and avoids it for replaced and retained blobs; the outbox does not.

    Played here with a destination answering 500 (its head event retried, as it is when a
    destination is down or refuses), the second upload of each record racing the retries:
    about one upload in ten fails.
    """
    kinto = events_app(
        "postgresql", max_attempts=10**6, **destination_settings("webhook", receiver)
    )
    dispatcher = kinto.registry.attachment_dispatcher
    stop = threading.Event()
    dispatcher_errors = []

    def dispatch():  # What the lane of a busy server does, without its pause between rounds.
        while not stop.is_set():
            try:
                dispatcher.run_once()
            except Exception as e:  # Reported below.
                dispatcher_errors.append(repr(e)[:300])

    thread = threading.Thread(target=dispatch, daemon=True)
    thread.start()
    refused = []
    try:
        for i in range(100):
            url = RECORD.replace("r1", f"hot{i}")
            receiver.statuses = [(500, {})] * 100_000  # The destination refuses a while.
            kinto.upload(url, b"first")
            time.sleep(0.02)  # Its event is retried meanwhile.
            answer = kinto.upload(url, b"second", status="*")
            if answer.status_int not in (200, 201):
                refused.append((answer.status_int, answer.text[:200]))
            receiver.statuses = []  # Back: both events are delivered.
            deadline = time.monotonic() + 10
            while rows(kinto, outbox.PENDING) and time.monotonic() < deadline:
                time.sleep(0.01)
            if refused or dispatcher_errors:
                break
    finally:
        stop.set()
        thread.join(30)
    assert refused == [], "an upload failed because of the outbox's timestamps"
    assert dispatcher_errors == [], "the dispatcher's marks failed"


def test_memory_backend_keeps_the_order_of_a_record_whose_commits_follow_closely(
    events_app, receiver, monkeypatch
):
    """Found by review (2026-12-05).

    On the memory backend, a record's events can be delivered out of order.

    There, rows are written ``uncommitted`` and made ``pending`` by an after-commit hook
    (:func:`kinto_attachment.events.recording._after_commit`). But the record's lock is
    released by an after-commit hook too (:class:`kinto_attachment.locks.MemoryLocks`),
    registered first (the lock is taken before the row is written), so it runs first: from
    then on, until the row is made pending, the next upload of the record takes the lock,
    writes its row (the next ``seq``), commits and makes it pending; a claim
    (:class:`~kinto_attachment.events.claims.MemoryClaims`) only sees pending rows, so it
    takes that later row as its subject's head and delivers it before the earlier one. In a
    threaded server (waitress: ``make serve``) the first request's thread only has to be
    preempted between its two hooks. The documented order ("numbered in commit order...; a
    row is only claimed once every earlier row of its subject and destination is delivered")
    is broken, and a worker ends with the old version as the record's last event. Fix: make
    the rows pending before the lock is released (a hook registered before the lock's, or a
    before-commit step on a backend that cannot roll back, removed on abort), or let claims
    wait behind an earlier ``uncommitted`` row."""
    from kinto_attachment.events import recording

    kinto = events_app("memory", **destination_settings("webhook", receiver))
    dispatcher = kinto.registry.attachment_dispatcher
    original = recording._after_commit
    interleaved = []

    def preempted(success, *args):
        if not interleaved:  # The first upload's thread, preempted between its hooks.
            interleaved.append(True)
            second = threading.Thread(target=lambda: kinto.upload(RECORD, b"second"))
            second.start()
            second.join(5)
            assert not second.is_alive(), "the record's lock was still held"
            claim = threading.Thread(target=dispatcher.run_once)
            claim.start()
            claim.join(10)
        return original(success, *args)

    monkeypatch.setattr(recording, "_after_commit", preempted)
    kinto.upload(RECORD, b"first")
    delivered(kinto)
    hashes = [e["data"]["attachment"]["hash"] for e in receiver.events()]
    assert hashes == [hashlib.sha256(b"first").hexdigest(), hashlib.sha256(b"second").hexdigest()]
