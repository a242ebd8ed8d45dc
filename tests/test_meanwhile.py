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

from .conftest import ALICE, BOB, cached_app
from .support.threads import in_another_thread
from .views.test_resumable import create, metadata, patch


RECORDS = "/buckets/blog/collections/articles"
R1_URI = RECORDS + "/records/r1"
WITH_DEFAULT_BUCKET = {
    "kinto.includes": "kinto.plugins.default_bucket kinto.plugins.flush kinto_attachment"
}


def userid(kinto, headers):
    return kinto.app.get("/v1/", headers=headers).json["user"]["id"]


def _committed_elsewhere(registry, change):
    """``change(registry)`` in a transaction of another thread, committed."""

    def committed():
        with transaction.manager:
            change(registry)

    in_another_thread(committed, timeout=30)


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
@pytest.mark.parametrize("kind", ["multipart", "tus"])
def test_an_upload_rechecks_a_write_given_through_a_group_the_uploader_left(
    kinto, monkeypatch, kind
):
    """Found by review (2026-12-05), Kinto's groups.

    Bob may write Alice's record as a member of the bucket's group ``editors``; while his
    upload streams, Alice removes him from the group (what Kinto's groups view does). The
    check under the record's lock reused the principals worked out before the body came
    (cached for the request by Kinto and pyramid_multiauth): the upload replaced Alice's file,
    and Kinto's write gave Bob ``write`` on the record for himself."""
    kinto.create_collection()
    bob = userid(kinto, BOB)
    group = "/buckets/blog/groups/editors"
    kinto.app.put_json(f"/v1{group}", {"data": {"members": [bob]}}, headers=ALICE)
    url = kinto.record_url()
    kinto.app.put_json(url, {"data": {"t": 1}, "permissions": {"write": [group]}}, headers=ALICE)
    if kind == "tus":
        _, upload = create(kinto.app, 5, headers=BOB)

    def leave(registry):
        registry.permission.remove_user_principal(bob, group)

    _at_record_lock(monkeypatch, leave)
    if kind == "tus":
        response = patch(kinto.app, upload, b"bob's", 0, headers=BOB, status="*")
    else:
        response = kinto.upload(url, b"bob's", "b.txt", headers=BOB, status="*")
    monkeypatch.undo()
    after = kinto.app.get(url, headers=ALICE).json
    assert response.status_int == 403, response.status
    assert "attachment" not in after["data"]
    assert bob not in after["permissions"]["write"]
    # Nothing stored but, for tus, the upload's bytes so far (it is still Bob's to terminate).
    assert [f for f in kinto.files() if not f.startswith(".uploads/")] == []


def _opposite_batches(kinto, monkeypatch, paths_a, paths_b):
    """Two batches of ``PUT``s, each holding the first record lock it takes until the other
    holds its own (the interleaving load brings): their answers, by name."""
    barrier = threading.Barrier(2, timeout=2)
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

    def batch(name, paths):
        requests = [
            {"method": "PUT", "path": path, "body": {"data": {"by": name}}} for path in paths
        ]
        response = kinto.app.post_json(
            "/v1/batch", {"requests": requests}, headers=ALICE, status="*"
        )
        answers[name] = (response.status_int, response.json)

    threads = [
        threading.Thread(target=batch, args=("A", paths_a), daemon=True),
        threading.Thread(target=batch, args=("B", paths_b), daemon=True),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    monkeypatch.undo()
    return answers


def _no_5xx(answers):
    assert set(answers) == {"A", "B"}, answers  # Neither hung.
    for name, (status, body) in answers.items():
        assert status < 500, (name, body)
        assert all(r["status"] < 500 for r in body["responses"]), (name, body)


#: Spellings of ``.../records/r{n}`` that Kinto's batch serves as that record.
SPELLINGS = {
    "as-sent": lambda n: f"{RECORDS}/records/r{n}",
    "percent-encoded": lambda n: f"{RECORDS}/records/r%3{n}",
    "trailing-slash": lambda n: f"{RECORDS}/records/r{n}/",
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize("blobs", ["local"])
@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgresql)])
def test_batches_writing_records_in_opposite_orders_do_not_deadlock(kinto, monkeypatch, spelling):
    """Found by review (2026-12-05): each record write of a ``POST /batch`` took its record's
    lock when its sub-request came, in the client's order, until the batch's transaction
    ended: two batches writing ``r1, r2`` and ``r2, r1`` deadlocked (PostgreSQL aborts one: a
    503 for the whole batch). A batch now locks them all, in order, first.

    Then (the review of that fix): ``write_locks.lock_batch`` matched each sub-request's
    ``path`` as sent against the route
    table, while Kinto's batch serves another spelling of a record's path as that record:
    ``build_request`` -> ``Request.blank`` percent-decodes it (``.../records/r%31`` is
    ``r1``: ``_lock_batch`` pre-locks a record ``r%31`` that no write touches), and
    ``follow_subrequest`` follows the 307 of a trailing slash (``.../r1/`` matches no route:
    nothing pre-locked). Either way the sub-request locks ``r1`` in the client's order, and
    two batches ``[r1, r2']`` and ``[r2, r1']`` deadlock as before the fix (PostgreSQL aborts
    one: a 503 for a whole batch). Expected: paths read as Kinto reads them (decoded, the
    trailing-slash redirect applied), locked in order, both batches succeed."""
    kinto.create_collection()
    other = SPELLINGS[spelling]
    answers = _opposite_batches(
        kinto,
        monkeypatch,
        [f"{RECORDS}/records/r1", other(2)],
        [f"{RECORDS}/records/r2", other(1)],
    )
    _no_5xx(answers)


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgresql)])
def test_batch_locks_the_records_of_the_default_bucket(
    backend, tmp_path_factory, request, monkeypatch
):
    """Found by review (2026-12-05).

    ``/buckets/default/...`` sub-requests match Kinto's ``default_bucket`` route, for which
    ``_write_lock`` has no path: ``_lock_batch`` pre-locks nothing, the plugin's own
    sub-request (the user's real bucket id) locks each record in the client's order, and two
    batches of one user writing ``r1, r2`` and ``r2, r1`` of the default bucket deadlock
    (a 503 on PostgreSQL). Expected: the default bucket's paths are locked as the bucket they
    stand for (``request.default_bucket_id``), in order, and both batches succeed."""
    kinto = cached_app(backend, tmp_path_factory, request, **WITH_DEFAULT_BUCKET)
    default = "/buckets/default/collections/articles/records"
    kinto.app.put_json(f"/v1{default}/r0", {"data": {}}, headers=ALICE)  # Bucket, collection.
    answers = _opposite_batches(
        kinto,
        monkeypatch,
        [f"{default}/r1", f"{default}/r2"],
        [f"{default}/r2", f"{default}/r1"],
    )
    _no_5xx(answers)
