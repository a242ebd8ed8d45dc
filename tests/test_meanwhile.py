"""What other requests change while one runs (found by review, 2026-12-05): the uploader's
``write`` taken away, or the record made again without it, while an upload streams (checked
again when it writes the record); batches writing records in opposite orders (locked in
order before the first write)."""

import contextlib
import json
import threading
import time

import pytest
import transaction

from kinto_attachment import locks
from kinto_attachment.uploads import record as record_step

from .conftest import ALICE, BOB
from .views.test_resumable import create, metadata, patch


RECORDS = "/buckets/blog/collections/articles"
R1_URI = RECORDS + "/records/r1"


def userid(kinto, headers):
    return kinto.app.get("/v1/", headers=headers).json["user"]["id"]


def _committed_elsewhere(registry, change):
    """``change(registry)`` in a transaction of another thread, committed."""
    failures = []

    def run():
        try:
            with transaction.manager:
                change(registry)
        except Exception as e:  # pragma: no cover (reported below)
            failures.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert not failures, failures


def _at_record_lock(monkeypatch, change):
    """``change(registry)`` committed by another transaction after the upload's permission
    check (while its body streamed), just as the upload gets the record's lock."""
    original = locks.hold
    done = []

    def hold(registry, path, **kwargs):
        original(registry, path, **kwargs)
        if path == ("buckets", "blog", "articles", "r1") and not done:
            done.append(True)
            time.sleep(record_step.RECHECK_SECONDS + 0.05)  # The body took its time.
            _committed_elsewhere(registry, change)

    monkeypatch.setattr(locks, "hold", hold)


def _revoke_bob(alice):
    def change(registry):
        registry.permission.replace_object_permissions(R1_URI, {"write": [alice]})

    return change


def _recreate_without_bob(alice):
    """Alice deletes the record and creates another one under the same id, Bob not a writer."""

    def change(registry):
        registry.storage.delete(resource_name="record", parent_id=RECORDS, object_id="r1")
        registry.permission.delete_object_permissions(R1_URI)
        registry.storage.create(
            resource_name="record", parent_id=RECORDS, obj={"id": "r1", "title": "alice's new"}
        )
        registry.permission.replace_object_permissions(R1_URI, {"write": [alice]})

    return change


def _bob_may_write_r1(kinto):
    kinto.create_collection()
    bob = userid(kinto, BOB)
    kinto.app.put_json(
        kinto.record_url(),
        {"data": {"title": "t"}, "permissions": {"write": [bob]}},
        headers=ALICE,
    )
    return bob, userid(kinto, ALICE)


@pytest.mark.parametrize("blobs", ["local"])
@pytest.mark.parametrize("meanwhile", ["revoked", "recreated"])
def test_multipart_upload_rechecks_write_permission_under_the_record_lock(
    kinto, monkeypatch, meanwhile
):
    """Found by review (2026-12-05).

    The ``write`` permission is checked by the route factory before the body
    is read, and never again once the record is locked and read again
    (``uploads/record.py`` ``lock_record``/``attach``). While Bob's upload streams (minutes or
    hours for a large file), Alice revokes his ``write`` ("revoked"), or deletes the record and
    creates a new one under the same id that Bob may not write ("recreated"): Bob's upload
    still replaces the file of Alice's record and applies the form's ``permissions`` part,
    granting himself ``write`` on it. Expected: refused (403; 404/412 for a record replaced by
    another), Alice's record untouched, no file stored."""
    bob, alice = _bob_may_write_r1(kinto)
    url = kinto.record_url()
    change = _revoke_bob(alice) if meanwhile == "revoked" else _recreate_without_bob(alice)
    _at_record_lock(monkeypatch, change)
    response = kinto.upload(
        url, b"bob's", "b.txt", headers=BOB, permissions={"write": [bob]}, status="*"
    )
    monkeypatch.undo()
    after = kinto.app.get(url, headers=ALICE).json
    assert response.status_int in (403, 404, 412), response.status
    assert "attachment" not in after["data"]
    assert bob not in after["permissions"]["write"]
    assert kinto.files() == []


@pytest.mark.parametrize("blobs", ["local"])
@pytest.mark.parametrize("meanwhile", ["revoked", "recreated"])
def test_last_tus_patch_rechecks_write_permission_under_the_record_lock(
    kinto, monkeypatch, meanwhile
):
    """Found by review (2026-12-05), resumable.

    The last ``PATCH`` is authorised before its chunk is read,
    the record written (``tus_steps.finish`` → ``attach``) without a check under the lock: an
    upload whose uploader lost ``write`` (or whose record was replaced by another one Bob may
    not write) while the last chunk streamed becomes the attachment, with the ``permissions``
    of its metadata. Expected: refused (403; 404/412 for a replaced record), record untouched."""
    bob, alice = _bob_may_write_r1(kinto)
    url = kinto.record_url()
    meta = metadata(permissions=json.dumps({"write": [bob]}))
    _, upload = create(kinto.app, 5, headers=BOB, meta=meta)
    change = _revoke_bob(alice) if meanwhile == "revoked" else _recreate_without_bob(alice)
    _at_record_lock(monkeypatch, change)
    response = patch(kinto.app, upload, b"bob's", 0, headers=BOB, status="*")
    monkeypatch.undo()
    after = kinto.app.get(url, headers=ALICE).json
    assert response.status_int in (403, 404, 412), response.status
    assert "attachment" not in after["data"]
    assert bob not in after["permissions"]["write"]


@pytest.mark.parametrize("blobs", ["local"])
@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgresql)])
def test_batches_writing_two_records_in_opposite_orders_do_not_deadlock(kinto, monkeypatch):
    """Found by review (2026-12-05): each record write of a ``POST /batch`` takes its
    record's lock when its sub-request's context is found (``listeners._lock_write``), in the
    order the client chose, and holds it to the end of the batch's transaction. Two batches
    writing ``r1, r2`` and ``r2, r1`` deadlock: PostgreSQL aborts one (a ``503`` for the whole
    batch; on the memory backend both wait forever). Kinto alone serialises them (the
    collection's timestamp row) and both succeed; ``locks.py`` says our locks "cannot deadlock
    with one another nor with the row locks Kinto takes after them". The barrier below only
    forces the interleaving (each batch holds its first record) that comes naturally under
    load. Expected: no 5xx (each batch waits for the other, as without the plugin)."""
    kinto.create_collection()
    for record_id in ("r1", "r2"):
        kinto.app.put_json(kinto.record_url(record_id), {"data": {}}, headers=ALICE)
    barrier = threading.Barrier(2, timeout=2)  # Fixed, the second waits for the lock.
    original = locks.hold
    first = threading.local()

    def hold(registry, path, **kwargs):
        original(registry, path, **kwargs)
        if len(path) == 4 and not getattr(first, "taken", False):
            first.taken = True
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()

    monkeypatch.setattr(locks, "hold", hold)
    answers = {}

    def batch(name, order):
        requests = [
            {"method": "PATCH", "path": f"{RECORDS}/records/{r}", "body": {"data": {"by": name}}}
            for r in order
        ]
        response = kinto.app.post_json(
            "/v1/batch", {"requests": requests}, headers=ALICE, status="*"
        )
        answers[name] = (response.status_int, response.json)

    threads = [
        threading.Thread(target=batch, args=("A", ["r1", "r2"])),
        threading.Thread(target=batch, args=("B", ["r2", "r1"])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    monkeypatch.undo()
    for name in ("A", "B"):
        status, body = answers[name]
        assert status < 500, (name, body)
        assert all(r["status"] < 500 for r in body["responses"]), (name, body)
