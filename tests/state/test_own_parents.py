"""Objects that any request may write, whatever its record (replaced and retained blobs,
``/data/files`` entries, resumable uploads), each under a parent of their own: writers at once
never collide, and what earlier versions wrote under one shared parent keeps working."""

import threading
import time

import pytest
import sqlalchemy
import transaction

from kinto_attachment import gc
from kinto_attachment.state import data_file_entries, links, paging, replaced, tus_uploads

from ..conftest import ALICE, cached_app
from ..views.test_resumable import create, head, patch


LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
DAY_MS = 86400 * 1000


def add_replaced(storage, key):
    replaced.add(storage, [key], data_file_entries.msec_time() + 60_000)


def has_replaced(storage, key):
    return key in {entry["key"] for entry in replaced.every(storage)}


def add_data_file(storage, file_id):
    previous = data_file_entries.get(storage, file_id)  # As an upload does.
    data_file_entries.put(storage, file_id, {"key": file_id, "hash": "h"}, previous)


def has_data_file(storage, file_id):
    return data_file_entries.get(storage, file_id) is not None


def add_upload(storage, upload_id):
    parent_id = paging.own_parent(tus_uploads.PARENT_ID, upload_id)
    tus_uploads.save(storage, {"id": upload_id, "parent": parent_id, "offset": 0})


def has_upload(storage, upload_id):
    return tus_uploads.get(storage, upload_id) is not None


WRITERS = {
    replaced.RESOURCE: (add_replaced, has_replaced),
    links.RETAINED: (lambda storage, key: links.retain(storage, [key]), links.is_retained),
    data_file_entries.RESOURCE: (add_data_file, has_data_file),
    tus_uploads.RESOURCE: (add_upload, has_upload),
}


@pytest.mark.postgresql
@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("resource", sorted(WRITERS))
def test_writers_at_once_do_not_collide(backend, resource, tmp_path_factory, request):
    """Two transactions writing objects of one resource at the same moment both commit, the
    second without waiting for the first. Kinto's storage gives the objects of one parent
    distinct timestamps: if they shared a parent, both would take the same one (here, the one
    after an object dated in the future, as when timestamps run ahead of the clock under
    load), and the second would wait for the first, then be refused (Kinto's 409)."""
    import sqlalchemy

    kinto = cached_app(backend, tmp_path_factory, request)
    storage, (add, has) = kinto.registry.storage, WRITERS[resource]
    with transaction.manager:
        add(storage, "before")
    with transaction.manager, storage.client.connect() as connection:
        connection.execute(
            sqlalchemy.text(
                "UPDATE objects SET last_modified = last_modified + interval '1 hour'"
                " WHERE resource_name = :resource"
            ),
            {"resource": resource},
        )
    outcome = []

    def second():
        try:
            with transaction.manager:
                add(storage, "second")
            outcome.append("committed")
        except Exception as error:  # The test reports it.
            outcome.append(error)

    with transaction.manager:
        add(storage, "first")
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(5)
        waited = thread.is_alive()
    thread.join(10)
    assert outcome == ["committed"] and not waited
    with transaction.manager:
        assert all(has(storage, key) for key in ("before", "first", "second"))


def to_shared_parent(storage, resource, parent_id, object_id):
    """Move an object where earlier versions wrote every object of ``resource`` (naming no
    parent)."""
    found = paging.find(storage, resource, parent_id, object_id)
    own = paging.own_parent(parent_id, object_id)
    assert paging.parent_of(found, parent_id) == own
    storage.delete(resource_name=resource, parent_id=own, object_id=object_id, with_deleted=False)
    fields = {k: v for k, v in found.items() if k not in ("id", "last_modified", "parent")}
    storage.update(resource_name=resource, parent_id=parent_id, object_id=object_id, obj=fields)
    transaction.commit()


@pytest.fixture
def app(backend, tmp_path_factory, request):
    kinto = cached_app(backend, tmp_path_factory, request)
    kinto.create_collection()
    return kinto


def post_file(kinto, file_id, content, ttl=None):
    query = f"?id={file_id}" + (f"&ttl={ttl}" if ttl else "")
    kinto.app.post(f"/v1/data/files{query}", content, extra_environ=LOCAL, status=200)


def data_file(kinto, file_id):
    return kinto.app.get(f"/v1/data/files/{file_id}", extra_environ=LOCAL).body


def shared_data_file(kinto, file_id, content, ttl=None):
    post_file(kinto, file_id, content, ttl)
    storage = kinto.registry.storage
    to_shared_parent(storage, data_file_entries.RESOURCE, data_file_entries.PARENT_ID, file_id)
    assert "parent" not in data_file_entries.get(storage, file_id)


def entry_ids(kinto):
    return sorted(entry["id"] for entry in data_file_entries.entries(kinto.registry.storage))


def test_data_files_of_earlier_versions_are_served_replaced_and_deleted(app):
    shared_data_file(app, "old", b"v1")
    post_file(app, "new", b"other")
    assert data_file(app, "old") == b"v1"
    listed = app.app.get("/v1/data/files", extra_environ=LOCAL).json
    assert sorted(f["id"] for f in listed) == ["new", "old"]
    first_key = data_file_entries.get(app.registry.storage, "old")["key"]

    post_file(app, "old", b"v2")
    assert data_file(app, "old") == b"v2"
    # Moved to a parent of its own: one entry, not a second one beside the first.
    assert entry_ids(app) == ["new", "old"]
    entry = data_file_entries.get(app.registry.storage, "old")
    own = paging.own_parent(data_file_entries.PARENT_ID, "old")
    assert entry["parent"] == own and entry["key"] != first_key
    assert first_key not in app.files()

    app.app.delete("/v1/data/files/old", extra_environ=LOCAL, status=204)
    app.app.get("/v1/data/files/old", extra_environ=LOCAL, status=404)
    assert entry_ids(app) == ["new"]
    assert app.files() == [data_file_entries.get(app.registry.storage, "new")["key"]]


def test_expired_data_files_of_earlier_versions_are_collected(app):
    shared_data_file(app, "old", b"short-lived", ttl=1)
    report = gc.collect(app.registry, now=data_file_entries.msec_time() + DAY_MS)
    assert [entry["id"] for entry in report.expired_files] == ["old"]
    assert entry_ids(app) == [] and app.files() == []


def shared_upload(kinto, length, first):
    """A resumable upload that sent ``first``, moved where earlier versions kept uploads."""
    _, url = create(kinto.app, length)
    patch(kinto.app, url, first, 0)
    upload_id = url.rsplit("/", 1)[-1]
    storage = kinto.registry.storage
    to_shared_parent(storage, tus_uploads.RESOURCE, tus_uploads.PARENT_ID, upload_id)
    assert "parent" not in tus_uploads.get(storage, upload_id)
    return url, upload_id


def test_uploads_of_earlier_versions_go_on_and_finish(app):
    url, upload_id = shared_upload(app, 10, b"12345")
    assert head(app.app, url).headers["Upload-Offset"] == "5"
    patch(app.app, url, b"678", 5)
    # Recorded where it was, not in a second object.
    assert [u["id"] for u in tus_uploads.entries(app.registry.storage)] == [upload_id]
    where = {"resource_name": tus_uploads.RESOURCE, "parent_id": tus_uploads.PARENT_ID}
    assert app.registry.storage.get(**where, object_id=upload_id)["offset"] == 8
    patch(app.app, url, b"90", 8)
    record = app.app.get(app.record_url(), headers=ALICE).json["data"]
    assert record["attachment"]["size"] == 10
    assert tus_uploads.entries(app.registry.storage) == []


def test_uploads_of_earlier_versions_are_terminated_and_collected(app):
    url, _ = shared_upload(app, 10, b"12345")
    app.app.delete(url, headers={**ALICE, "Tus-Resumable": "1.0.0"}, status=204)
    assert tus_uploads.entries(app.registry.storage) == []

    _, upload_id = shared_upload(app, 10, b"12345")
    report = gc.collect(app.registry, now=data_file_entries.msec_time() + 30 * DAY_MS)
    assert [u["id"] for u in report.expired_uploads] == [upload_id]
    assert tus_uploads.entries(app.registry.storage) == [] and app.files() == []


def test_unknown_ids_leave_no_trace_in_the_memory_backend(tmp_path_factory, request):
    """Kinto's memory backend makes an empty parent of any it is asked to get from: looking
    ids up under parents of their own would grow it with every request for an unknown id."""
    kinto = cached_app("memory", tmp_path_factory, request)
    kinto.create_collection()
    _, url = create(kinto.app, 10)
    uploads = url.rsplit("/", 1)[0]
    store = kinto.registry.storage._store
    before = len(store)
    for number in range(20):
        kinto.app.get(f"/v1/data/files/unknown-{number}", extra_environ=LOCAL, status=404)
        kinto.app.delete(f"/v1/data/files/unknown-{number}", extra_environ=LOCAL, status=204)
        head(kinto.app, f"{uploads}/{number:032x}", status=404)
    assert len(store) == before


@pytest.mark.postgresql
def test_data_files_of_earlier_versions_uploaded_at_once_do_not_collide(
    tmp_path_factory, request, monkeypatch
):
    """Found by review (2026-12-05).

    Two ids an earlier version wrote (under the shared parent) uploaded again at once, the
    second while the first's transaction is open: written back under the shared parent,
    both got one timestamp, and the second was refused (Kinto's 409, its file not stored).
    They move to parents of their own as they are written."""
    kinto = cached_app("postgresql", tmp_path_factory, request)
    storage = kinto.registry.storage
    for file_id in ("first", "second"):
        shared_data_file(kinto, file_id, file_id.encode() * 100)
    with transaction.manager, storage.client.connect() as connection:
        # Dated ahead of the clock, as timestamps run under load: the next ones are equal.
        connection.execute(
            sqlalchemy.text(
                "UPDATE objects SET last_modified = last_modified + interval '1 hour'"
                " WHERE resource_name = :resource"
            ),
            {"resource": data_file_entries.RESOURCE},
        )
    written, put = threading.Event(), data_file_entries.put

    def put_then_linger(*args, **kwargs):
        result = put(*args, **kwargs)
        if threading.current_thread().name == "first":
            written.set()
            time.sleep(1.5)  # The first upload's transaction stays open.
        return result

    monkeypatch.setattr(data_file_entries, "put", put_then_linger)
    answers = {}

    def upload(file_id):
        answers[file_id] = kinto.app.post(
            f"/v1/data/files?id={file_id}", b"new", extra_environ=LOCAL, status="*"
        )

    first = threading.Thread(target=upload, args=("first",), name="first")
    first.start()
    assert written.wait(10)
    second = threading.Thread(target=upload, args=("second",), name="second")
    second.start()
    first.join(30)
    second.join(30)
    assert {i: a.status_code for i, a in answers.items()} == {"first": 200, "second": 200}
    assert data_file(kinto, "first") == data_file(kinto, "second") == b"new"
