"""``locks.hold`` skips what the transaction holds exclusively already (``_Held``, a data
manager of the transaction): the transaction never believes it holds a path that PostgreSQL
(advisory xact locks) or the memory table does not hold. Attacks of a review (2026-12-06);
the savepoint one was a finding, fixed, the others held."""

import threading
import unittest.mock

import pytest
import transaction

from kinto_attachment import locks, write_locks
from kinto_attachment.state import links

from .conftest import ALICE, held_elsewhere
from .kinto_writes.pauses import in_thread
from .test_locks import COLLECTION, RECORD, attempt


def elsewhere(registry, path, exclusive=True):
    """:func:`attempt` from another thread (another transaction, another connection)."""
    result = []
    thread = threading.Thread(
        target=lambda: result.append(attempt(registry, path, exclusive)), daemon=True
    )
    thread.start()
    thread.join(20)
    return result[0]


@pytest.fixture
def registry(kinto):
    return kinto.registry


@pytest.mark.parametrize("blobs", ["local"])
@pytest.mark.parametrize("end", ["commit", "abort"])
def test_a_new_transaction_takes_again_what_the_previous_one_held(registry, end):
    """Attack: the held set outliving its transaction (a transaction reused after its end, as
    ``end_before_body`` commits and begins another): the second ``hold`` must lock again."""
    transaction.manager.begin()
    locks.hold(registry, COLLECTION)
    getattr(transaction.manager, end)()
    assert elsewhere(registry, RECORD)
    transaction.manager.begin()
    try:
        locks.hold(registry, RECORD)
        assert not elsewhere(registry, RECORD)
        assert not elsewhere(registry, COLLECTION)
    finally:
        transaction.manager.abort()


@pytest.mark.parametrize("blobs", ["local"])
def test_an_implicit_transaction_after_a_commit_holds_nothing(registry):
    """Attack: ``transaction.get()`` after a commit, with no ``begin`` (a command's code after
    its ``with transaction.manager:``), makes a new transaction: nothing believed held."""
    with transaction.manager:
        locks.hold(registry, COLLECTION)
    try:
        locks.hold(registry, RECORD)  # transaction.get(): an implicit new one
        assert not elsewhere(registry, RECORD)
    finally:
        transaction.manager.abort()


@pytest.mark.parametrize("blobs", ["local"])
def test_a_busy_hold_records_nothing(registry):
    """Attack: a ``wait=False`` hold that fails (Busy) recorded as held: a later hold of the
    same transaction would then skip, holding nothing."""
    with held_elsewhere(registry, RECORD):
        transaction.manager.begin()
        try:
            with pytest.raises(locks.Busy):
                locks.hold(registry, RECORD, wait=False)
            assert RECORD not in locks._Held.of(transaction.get()).paths(registry.attachment_locks)
        finally:
            transaction.manager.abort()


@pytest.mark.parametrize("blobs", ["local"])
def test_a_shared_hold_is_not_recorded_as_exclusive(registry):
    """Attack: a shared hold recorded (then an exclusive one of the same path skipped)."""
    transaction.manager.begin()
    try:
        locks.hold(registry, COLLECTION, exclusive=False)
        locks.hold(registry, COLLECTION)
        assert not elsewhere(registry, RECORD)
    finally:
        transaction.manager.abort()


@pytest.mark.parametrize("blobs", ["local"])
def test_threads_keep_their_own_held_paths(registry):
    """Attack: a thread (the dispatcher's, a hashing one) seeing the request thread's held
    set: its own transaction must lock for itself."""
    transaction.manager.begin()
    try:
        locks.hold(registry, COLLECTION)
        # Another thread's transaction: waits (Busy), never "already held".
        assert not elsewhere(registry, RECORD)
    finally:
        transaction.manager.abort()


@pytest.mark.postgresql
@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("blobs", ["local"])
def test_a_lock_released_by_a_savepoint_rollback_is_taken_again(registry):
    """Found by a review of a fix (2026-12-06); fixed: the held paths are a data manager's,
    rolled back with the savepoint. Attack: a savepoint (``lifecycle`` joins a data manager
    that supports them: "a listener may take savepoints") rolled back after a hold.
    PostgreSQL releases a lock taken after a savepoint when the savepoint is rolled back; the
    held set did not forget it, so the next hold of the path (or of any path under it) was
    skipped: the transaction wrote believing it held a lock that another transaction may
    take."""
    storage = registry.storage
    transaction.manager.begin()
    try:
        storage.list_all(resource_name="record", parent_id="/buckets/b/collections/c")  # joins
        savepoint = transaction.savepoint()
        locks.hold(registry, COLLECTION)
        savepoint.rollback()
        locks.hold(registry, COLLECTION)
        locks.hold(registry, RECORD)
        assert not elsewhere(registry, RECORD), "another transaction got the record's lock"
    finally:
        transaction.manager.abort()


@pytest.mark.parametrize("blobs", ["local"])
def test_a_batch_deleting_records_holds_their_collection_throughout(kinto):
    """Attack: a batch holding a collection exclusively (a plural DELETE of its records)
    skips the locks of its later writes there and its listener's per-record locks; the
    collection must really be held until the batch commits: an upload to one of its records,
    sent meanwhile, waits, then finds its record deleted (404), and the deleted record's file
    goes; nothing of the other collection goes."""
    kinto.create_collection()
    kinto.create_collection(collection="other")
    kinto.upload(kinto.record_url("r1"), b"one")
    kept = kinto.upload(kinto.record_url("r1", collection="other"), b"kept").json["location"]
    out, go, locked = {}, threading.Event(), threading.Event()
    original = write_locks.lock_batch

    def lock_batch(request):
        original(request)
        locked.set()
        assert go.wait(20)

    requests = [
        {"method": "DELETE", "path": "/buckets/blog/collections/articles/records"},
        {
            "method": "PUT",
            "path": "/buckets/blog/collections/articles/records/r2",
            "body": {"data": {"n": 2}},
        },
    ]
    with unittest.mock.patch.object(write_locks, "lock_batch", lock_batch):
        batch = in_thread(
            out,
            "batch",
            lambda: kinto.app.post_json("/v1/batch", {"requests": requests}, headers=ALICE),
        )
        assert locked.wait(20)
        upload = in_thread(
            out, "upload", lambda: kinto.upload(kinto.record_url("r1"), b"two", status="*")
        )
        upload.join(0.5)
        waited = upload.is_alive()
        go.set()
        batch.join(30)
        upload.join(30)
    assert waited, "the upload ran while the batch held the collection"
    assert [r["status"] for r in out["batch"].json["responses"]] == [200, 201]
    assert out["upload"].status_int == 404, out["upload"].body
    kinto.app.get(kinto.record_url("r1"), headers=ALICE, status=404)
    assert kinto.files() == [kinto.key_of(kept)]


@pytest.mark.postgresql
def test_two_nodes_uploads_and_writes_wait_for_a_plural_delete(tmp_path, monkeypatch):
    """Attack (two nodes, one PostgreSQL database): a plural delete whose listener skipped
    its records' locks (its collection held) must still exclude, until it commits, another
    node's upload to a deleted record (multipart: its first transaction committed before the
    body, its record locked in the next) and to a new record: neither interleaves;
    the deleted records' files go, the new upload's stays, linked."""
    from kinto_attachment.uploads import lifecycle

    from .conftest import two_nodes

    with two_nodes(tmp_path, "review_held_locks") as (first, second):
        first.create_collection()
        old = first.upload(first.record_url("r1"), b"old").json["location"]
        first.upload(first.record_url("r2"), b"two")
        paused, go = threading.Event(), threading.Event()
        deleter = []
        original = lifecycle.discard

        def discard(request, popped):
            if threading.get_ident() in deleter:
                paused.set()
                assert go.wait(20)
            return original(request, popped)

        monkeypatch.setattr(lifecycle, "discard", discard)
        out = {}

        def delete():
            deleter.append(threading.get_ident())
            return first.app.delete("/v1/buckets/blog/collections/articles/records", headers=ALICE)

        threads = [in_thread(out, "delete", delete)]
        assert paused.wait(20)
        threads.append(
            in_thread(
                out, "r1", lambda: second.upload(second.record_url("r1"), b"new", status="*")
            )
        )
        threads.append(
            in_thread(
                out, "r9", lambda: second.upload(second.record_url("r9"), b"nine", status="*")
            )
        )
        for thread in threads[1:]:
            thread.join(0.3)
        waiting = [thread.is_alive() for thread in threads[1:]]
        go.set()
        for thread in threads:
            thread.join(30)
        assert waiting == [True, True], waiting
        assert sorted(r["id"] for r in out["delete"].json["data"]) == ["r1", "r2"]
        assert out["r1"].status_int == 404, out["r1"].body
        assert out["r9"].status_int == 201, out["r9"].body
        assert not first.exists(old)
        nine = out["r9"].json["location"]
        assert first.files() == [first.key_of(nine)]
        with transaction.manager:
            found = links.all_links(first.registry.storage)
        assert [(link["record_id"], link["key"]) for link in found] == [("r9", first.key_of(nine))]
        from .conftest import dispose

        dispose(first, second)
