"""Switching a kinto-attachment installation to this package, as operators do it: records
with any ``attachment`` value, copies, moved CDNs, adoption while the servers serve or on two
nodes at once."""

import threading

import pytest
import transaction

from kinto_attachment import adoption, gc
from kinto_attachment.state import legacy

from .conftest import ALICE, cached_app
from .test_adoption import age, legacy_record, legacy_row, prepared, store_file


PARENT = "/buckets/blog/collections/articles"


def memory_app(tmp_path_factory, request, **settings):
    return prepared(cached_app("memory", tmp_path_factory, request, **settings))


def set_attachment(kinto, record_id, attachment):
    """What kinto-attachment let any client do: a PUT creating a record with any
    ``attachment`` value (its listener only compares two truthy values on updates)."""
    storage = kinto.registry.storage
    with transaction.manager:
        try:
            record = storage.get(resource_name="record", parent_id=PARENT, object_id=record_id)
        except Exception:
            record = {"id": record_id}
        storage.update(
            resource_name="record",
            parent_id=PARENT,
            object_id=record_id,
            obj={**record, "attachment": attachment},
        )


def test_adoption_survives_a_record_whose_attachment_is_not_an_object(tmp_path_factory, request):
    kinto = memory_app(tmp_path_factory, request)
    kept = legacy_record(kinto, "r1", link="8")
    set_attachment(kinto, "odd", "not an object")
    report = adoption.adopt(kinto.registry)
    assert report.linked == 1
    assert kinto.registry.attachment_store.exists(kept["key"])


def test_adoption_survives_a_non_string_location(tmp_path_factory, request):
    kinto = memory_app(tmp_path_factory, request)
    legacy_record(kinto, "r1", link="8")
    set_attachment(kinto, "odd", {"location": 42, "filename": "x"})
    report = adoption.adopt(kinto.registry)
    assert report.linked == 1


def test_gc_survives_a_record_whose_attachment_is_not_an_object(tmp_path_factory, request):
    kinto = memory_app(tmp_path_factory, request)
    set_attachment(kinto, "odd", ["a", "list"])
    report = gc.collect(kinto.registry)
    assert report.orphans == []


def test_get_attachment_of_a_record_whose_attachment_is_not_an_object_is_a_404(
    tmp_path_factory, request
):
    kinto = memory_app(tmp_path_factory, request)
    set_attachment(kinto, "odd", "not an object")
    response = kinto.app.get(kinto.record_url("odd") + "/attachment", headers=ALICE, status="*")
    assert response.status_int == 404, response.status


def test_upload_replaces_an_attachment_that_is_not_an_object(tmp_path_factory, request):
    """kinto-attachment replaced it: its own record writes skip its listener."""
    kinto = memory_app(tmp_path_factory, request)
    set_attachment(kinto, "odd", "not an object")
    response = kinto.upload(kinto.record_url("odd"), b"new", "new.txt", status="*")
    assert response.status_int == 200, response.status


def test_a_file_uploaded_while_the_first_adoption_runs_is_not_kept_forever(
    tmp_path_factory, request, monkeypatch
):
    """``kinto migrate`` while the servers serve (as the docs allow): an upload commits
    between adoption's reading of the references and its listing of the store. Its file,
    named by this instance's tag (never kinto-attachment's), is retained at adoption: once
    its record replaces it, it is never deleted, by the replacement nor by the collector."""
    kinto = memory_app(tmp_path_factory, request)
    legacy_record(kinto, "r1", link="8")
    store = kinto.registry.attachment_store
    listing = store.iter_blobs
    uploaded = {}

    def listed_after_an_upload():
        response = kinto.upload(kinto.record_url("r2"), b"uploaded meanwhile", "m.txt")
        uploaded["key"] = kinto.key_of(response.json["location"])
        yield from listing()

    monkeypatch.setattr(store, "iter_blobs", listed_after_an_upload)
    report = adoption.adopt(kinto.registry)
    monkeypatch.undo()
    assert uploaded["key"] not in report.unreferenced
    kinto.upload(kinto.record_url("r2"), b"replacement", "n.txt", status=200)
    if store.exists(uploaded["key"]):  # Or deleted by the replacement already.
        age(kinto, uploaded["key"])
        gc.collect(kinto.registry, now=gc.data_file_entries.msec_time() + 86400 * 1000)
    assert not store.exists(uploaded["key"]), "a replaced file is kept forever"


def test_a_record_replaced_while_adoption_reads_its_row_does_not_keep_the_old_file(
    tmp_path_factory, request, monkeypatch
):
    """Adoption reads a batch of kinto-attachment rows, then locks each record. A client
    replaces r1's file in between (the server serves): the replacement removes r1's row and
    records the old file as replaced. Adoption then finds r1 naming another file and retains
    the old one: the collector never deletes it."""
    kinto = memory_app(
        tmp_path_factory, request, **{"kinto.attachment.gc.replaced_grace_seconds": "60"}
    )
    old = legacy_record(kinto, "r1", link="8")
    every, replaced = legacy.every, []

    def rows_then_a_replacement(storage, filters=None):
        rows = list(every(storage, filters))
        if rows and filters is None and not replaced:  # Adoption's read, once.
            replaced.append(True)
            kinto.upload(kinto.record_url("r1"), b"new", "new.txt", status=200)
        yield from rows

    monkeypatch.setattr(legacy, "every", rows_then_a_replacement)
    report = adoption.adopt(kinto.registry)
    monkeypatch.undo()
    gc.collect(kinto.registry, now=gc.data_file_entries.msec_time() + 86400 * 1000)
    assert not kinto.registry.attachment_store.exists(old["key"]), (
        f"replaced, yet kept forever (retained: {report.retained})"
    )


def test_two_nodes_migrating_at_once_report_each_link_once(tmp_path_factory, request, monkeypatch):
    """``kinto migrate`` on two nodes at once: node B reads the rows node A is adopting,
    waits for A's locks, then adopts them again and reports them as its own."""
    kinto = memory_app(tmp_path_factory, request)
    for i in range(3):
        legacy_record(kinto, f"r{i}", link="8")
    every, reports, started = legacy.every, [], []

    def rows_while_another_node_adopts(storage, filters=None):
        rows = list(every(storage, filters))
        if rows and filters is None and not started:
            started.append(True)
            other = threading.Thread(target=lambda: reports.append(adoption.adopt(kinto.registry)))
            other.start()
            other.join(30)
        yield from rows

    monkeypatch.setattr(legacy, "every", rows_while_another_node_adopts)
    mine = adoption.adopt(kinto.registry)
    (theirs,) = reports
    assert theirs.linked + mine.linked == 3, (theirs.linked, mine.linked)


def test_adoption_keeps_the_link_of_a_record_written_under_a_previous_base_url(
    tmp_path_factory, request
):
    """kinto-attachment's link names the file by key, whatever ``base_url`` was when it was
    written (a CDN that moved). Before adoption the link serves the download and deleting
    the record deletes the file, as kinto-attachment did; adoption turned the link into a
    retained file: the download became a 404, the file was kept forever. A dry run counts
    what the run does (it listed the record as outside ``base_url``)."""
    kinto = memory_app(tmp_path_factory, request)
    attachment = legacy_record(kinto, "r1", link="8")
    moved = "https://old-cdn.example.com/" + attachment["key"]
    set_attachment(
        kinto, "r1", {k: v for k, v in attachment.items() if k != "key"} | {"location": moved}
    )
    url = kinto.record_url("r1") + "/attachment"
    assert kinto.app.get(url, headers=ALICE).body == b"old content"  # Before adoption.
    dry = adoption.adopt(kinto.registry, dry_run=True)
    done = adoption.adopt(kinto.registry)
    assert (dry.linked, dry.unlinked, dry.foreign) == (done.linked, done.unlinked, done.foreign)
    assert done.linked == 1 and done.foreign == []
    response = kinto.app.get(url, headers=ALICE, status="*")
    assert response.status_int == 200, "served before adoption, a 404 after"


def test_a_gzipped_legacy_attachment_is_served_as_stored(tmp_path_factory, request):
    """kinto-attachment's ``gzipped = true``: the file is the .gz, described by the record
    (``mimetype``, ``size``, ``hash`` of the .gz), with the ``original``'s beside."""
    import gzip
    import hashlib

    kinto = memory_app(tmp_path_factory, request)
    original = b"original content\n" * 100
    packed = gzip.compress(original)
    store = kinto.registry.attachment_store
    key = store_file(kinto, packed, "blog/articles/font.ttf.gz")
    attachment = {
        "filename": "font.ttf.gz",
        "location": store.url(key),
        "hash": hashlib.sha256(packed).hexdigest(),
        "mimetype": "application/x-gzip",
        "size": len(packed),
        "original": {
            "filename": "font.ttf",
            "hash": hashlib.sha256(original).hexdigest(),
            "mimetype": "application/x-font",
            "size": len(original),
        },
    }
    set_attachment(kinto, "gz", attachment)
    for run in ("before", "after"):
        response = kinto.app.get(kinto.record_url("gz") + "/attachment", headers=ALICE)
        assert response.body == packed, run
        assert "Content-Encoding" not in response.headers, run
        assert response.headers["Content-Length"] == str(len(packed))
        adoption.adopt(kinto.registry)
    assert store.exists(key)


def test_a_download_of_a_copy_with_partial_metadata_is_no_500(tmp_path_factory, request):
    """kinto-attachment let clients create records with any ``attachment`` (a copy made by
    hand, without ``size``): its ``location`` is ours, the file exists."""
    kinto = memory_app(tmp_path_factory, request)
    attachment = legacy_record(kinto, "r1", link="8")
    set_attachment(kinto, "copy", {"location": attachment["location"], "filename": "old.txt"})
    response = kinto.app.get(kinto.record_url("copy") + "/attachment", headers=ALICE, status="*")
    assert response.status_int in (200, 404), response.status


def test_dry_run_counts_what_the_run_does_with_signer_copies(tmp_path_factory, request):
    """Remote Settings: kinto-signer copies a workspace record to ``preview`` and ``main``,
    both naming its file, without links. The dry run counts the file once per copy; the
    run retains it once."""
    kinto = memory_app(tmp_path_factory, request)
    original = legacy_record(kinto, "r1", link="8")
    for collection in ("preview", "main"):
        kinto.app.put_json(f"/v1/buckets/blog/collections/{collection}", {}, headers=ALICE)
        with transaction.manager:
            kinto.registry.storage.create(
                resource_name="record",
                parent_id=f"/buckets/blog/collections/{collection}",
                obj={"id": "r1", "attachment": {k: v for k, v in original.items() if k != "key"}},
            )
    dry = adoption.adopt(kinto.registry, dry_run=True)
    done = adoption.adopt(kinto.registry)
    assert (dry.linked, dry.retained, dry.unlinked) == (done.linked, done.retained, done.unlinked)


@pytest.mark.parametrize("backend", ["memory", "postgresql"])
@pytest.mark.parametrize("adopted", [True, False], ids=["adopted", "not-adopted"])
def test_a_new_upload_never_takes_the_name_a_legacy_record_still_names(
    tmp_path_factory, request, backend, adopted
):
    """``randomize = false``: kinto-attachment left a record whose file is missing (its own
    refused replacements delete the old file first). A new upload of the same name into
    that folder must not take the free name: the legacy record would serve another record's
    bytes, and deleting it would delete the new record's file."""
    settings = {"kinto.attachment.randomize": "false"}
    kinto = prepared(cached_app(backend, tmp_path_factory, request, **settings))
    store = kinto.registry.attachment_store
    attachment = {
        "filename": "lost.txt",
        "location": store.url("lost.txt"),
        "hash": "0" * 64,
        "mimetype": "text/plain",
        "size": 11,  # As long as the new file: the bytes themselves tell.
    }
    kinto.app.put_json(kinto.record_url("old"), {"data": {}}, headers=ALICE)
    set_attachment(kinto, "old", attachment)
    with transaction.manager:
        legacy_row(kinto.registry.storage, "old", "lost.txt")  # Its file is gone.
    if adopted:
        adoption.adopt(kinto.registry)
    new = kinto.upload(kinto.record_url("new"), b"new content", "lost.txt").json
    assert kinto.key_of(new["location"]) == "lost-1.txt"
    old = kinto.app.get(kinto.record_url("old") + "/attachment", headers=ALICE, status="*")
    assert old.body != b"new content", "a legacy record serves another record's file"
    kinto.app.delete(kinto.record_url("old"), headers=ALICE)
    assert store.exists(kinto.key_of(new["location"])), "the new record's file was deleted"


def test_a_new_upload_never_takes_the_name_of_a_kept_file_deleted_by_hand(
    tmp_path_factory, request
):
    """``keep_old_files``: the old file is recorded as kept; deleted by hand since, its name
    is still not given to a new file (the collector would keep that one forever, and a
    record of the history may still name it)."""
    settings = {"kinto.attachment.randomize": "false", "kinto.attachment.keep_old_files": "true"}
    kinto = prepared(cached_app("memory", tmp_path_factory, request, **settings))
    store = kinto.registry.attachment_store
    first = kinto.upload(kinto.record_url("r"), b"first", "name.txt").json
    kinto.upload(kinto.record_url("r"), b"second", "other.txt")
    store.delete(kinto.key_of(first["location"]))
    again = kinto.upload(kinto.record_url("r2"), b"third", "name.txt").json
    assert kinto.key_of(again["location"]) == "name-1.txt"
