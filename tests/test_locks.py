"""The lock table: shared and exclusive locks on paths, held until the transaction ends, on
the memory backend and on PostgreSQL (advisory locks), and taken by Kinto's write views."""

import threading

import pytest
import transaction

from kinto_attachment import locks

from .conftest import ALICE, held_elsewhere


RECORD = ("buckets", "b", "c", "r")
COLLECTION = ("buckets", "b", "c")


def attempt(registry, path, exclusive=True):
    """Whether this thread's new transaction gets ``path`` at once (then gives it back)."""
    transaction.manager.begin()
    try:
        locks.hold(registry, path, exclusive=exclusive, wait=False)
    except locks.Busy:
        return False
    finally:
        transaction.manager.abort()
    return True


@pytest.fixture
def registry(kinto):
    return kinto.registry


@pytest.mark.parametrize("blobs", ["local"])
def test_exclusive_excludes_and_shared_shares(registry):
    with held_elsewhere(registry, COLLECTION, exclusive=False):
        assert attempt(registry, COLLECTION, exclusive=False)
        assert not attempt(registry, COLLECTION)
    with held_elsewhere(registry, COLLECTION):
        assert not attempt(registry, COLLECTION, exclusive=False)
    assert attempt(registry, COLLECTION)


@pytest.mark.parametrize("blobs", ["local"])
def test_a_path_shares_its_ancestors(registry):
    # Two records of one collection: both can be written at once...
    with held_elsewhere(registry, RECORD):
        assert attempt(registry, ("buckets", "b", "c", "other"))
        # ...but not while the collection (or the bucket, or everything) goes.
        assert not attempt(registry, COLLECTION)
        assert not attempt(registry, ("buckets", "b"))
        assert not attempt(registry, locks.ROOT)
        assert attempt(registry, ("buckets", "other-bucket", "c"))
    with held_elsewhere(registry, COLLECTION):
        assert not attempt(registry, RECORD)


@pytest.mark.parametrize("blobs", ["local"])
def test_locks_end_with_the_transaction(registry):
    for end in (transaction.manager.commit, transaction.manager.abort):
        transaction.manager.begin()
        locks.hold(registry, RECORD)
        locks.hold(registry, RECORD)  # Taken again by the same transaction: no wait.
        assert not _attempt_in_thread(registry, RECORD)
        end()
        assert _attempt_in_thread(registry, RECORD)


def _attempt_in_thread(registry, path):
    result = []
    thread = threading.Thread(target=lambda: result.append(attempt(registry, path)))
    thread.start()
    thread.join(10)
    return result[0]


@pytest.mark.parametrize("blobs", ["local"])
def test_a_waiting_writer_goes_on_when_the_holder_ends(registry):
    """``wait=True`` (the default) blocks until the other transaction ends."""
    got = threading.Event()

    def waiter():
        transaction.manager.begin()
        locks.hold(registry, RECORD)
        got.set()
        transaction.manager.abort()

    with held_elsewhere(registry, COLLECTION):
        thread = threading.Thread(target=waiter, daemon=True)
        thread.start()
        assert not got.wait(0.3)
    assert got.wait(10)
    thread.join(10)


@pytest.mark.parametrize("blobs", ["local"])
def test_kinto_deletes_wait_for_the_lock_of_what_they_delete(kinto):
    """A record, collection or bucket delete through Kinto's views takes the same locks as
    uploads: while one is held elsewhere, the delete waits (it has not happened yet)."""
    kinto.create_collection()
    kinto.upload(kinto.record_url())
    deleted = threading.Event()

    def delete():
        kinto.app.delete("/v1/buckets/blog/collections/articles", headers=ALICE)
        deleted.set()

    with held_elsewhere(kinto.registry, ("buckets", "blog", "articles", "r1")):
        thread = threading.Thread(target=delete, daemon=True)
        thread.start()
        assert not deleted.wait(0.5)
    assert deleted.wait(10)
    thread.join(10)
    assert kinto.files() == []


def test_postgresql_needs_a_transaction_per_request():
    class Client:
        commit_manually = True

    class Storage:
        client = Client()

    with pytest.raises(Exception, match="transaction_per_request"):
        locks.for_storage(Storage())


def _meanwhile(monkeypatch, change):
    """Make ``change(storage)`` happen as if another request committed it just before the
    upload got its record's lock (after its permissions were checked)."""
    original = locks.hold

    def hold(registry, path, **kwargs):
        original(registry, path, **kwargs)
        if path == ("buckets", "blog", "articles", "r1"):
            change(registry.storage)

    monkeypatch.setattr(locks, "hold", hold)


RECORDS = "/buckets/blog/collections/articles"


@pytest.mark.parametrize("blobs", ["local"])
def test_upload_to_a_record_deleted_meanwhile_is_404_and_leaves_no_file(kinto, monkeypatch):
    kinto.create_collection()
    previous = kinto.upload(kinto.record_url()).json
    before = kinto.files()
    _meanwhile(
        monkeypatch,
        lambda s: s.delete(resource_name="record", parent_id=RECORDS, object_id="r1"),
    )
    response = kinto.upload(kinto.record_url(), b"new", "new.txt", status=404)
    assert response.json["details"] == {"id": "r1", "resource_name": "record"}
    assert kinto.files() == before
    assert kinto.read(previous["location"]) == b"hello"


def _delete_collection(storage):
    storage.delete_all(resource_name="record", parent_id=RECORDS, with_deleted=False)
    storage.delete(resource_name="collection", parent_id="/buckets/blog", object_id="articles")


@pytest.mark.parametrize("blobs", ["local"])
def test_upload_to_a_collection_deleted_meanwhile_is_404_and_leaves_no_file(kinto, monkeypatch):
    """Replacing a file: the collection is not read before the body (the record found says
    it exists), but under the record's lock."""
    kinto.create_collection()
    kinto.upload(kinto.record_url())
    before = kinto.files()
    _meanwhile(monkeypatch, _delete_collection)
    response = kinto.upload(kinto.record_url(), b"new", "new.txt", status=404)
    assert response.json["details"] == {"id": "articles", "resource_name": "collection"}
    assert kinto.files() == before


@pytest.mark.parametrize("blobs", ["local"])
def test_upload_creating_a_record_created_meanwhile_is_412(kinto, monkeypatch):
    kinto.create_collection()
    _meanwhile(
        monkeypatch,
        lambda s: s.create(resource_name="record", parent_id=RECORDS, obj={"id": "r1"}),
    )
    response = kinto.upload(kinto.record_url(), status=412)
    assert response.json["errno"] == 114
    assert kinto.files() == []


def test_records_deleted_together_are_locked_in_order(kinto_memory, monkeypatch):
    """Found by review (2026-12-05).

    The deletion listener locked the records of one deletion in the order Kinto listed them
    (newest first), where every other path sorts them (a batch's writes, adoption's
    batches): a plugin deleting several records at once (kinto-signer) could deadlock with
    an adoption batch. They are locked sorted, before any is unlinked."""
    kinto = kinto_memory
    kinto.create_collection()
    for record_id in ("r1", "r3", "r2"):
        kinto.upload(kinto.record_url(record_id), record_id.encode(), f"{record_id}.txt")
    held = []
    hold = locks.hold

    def spy(registry, path, *args, **kwargs):
        held.append(path)
        return hold(registry, path, *args, **kwargs)

    monkeypatch.setattr(locks, "hold", spy)
    kinto.app.delete("/v1/buckets/blog/collections/articles/records", headers=ALICE)
    records = [path for path in held if len(path) == 4]
    assert records == sorted(set(records)) and len(records) == 3, held
