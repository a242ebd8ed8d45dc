"""Blobs that records and ``/data/files`` entries stop referencing are kept for
``gc.replaced_grace_seconds`` (the downloads that started before read them to the end), then
deleted by the garbage collector, once; ``keep_old_files`` keeps its files as before."""

import os
import time

import pytest
import transaction
from kinto.core.storage.exceptions import BackendError
from pyramid.exceptions import ConfigurationError

from kinto_attachment import gc
from kinto_attachment import settings as attachment_settings
from kinto_attachment.state import data_file_entries, links, references, replaced
from kinto_attachment.uploads import record as record_step

from ..conftest import ALICE, cached_app


GRACE_SECONDS = 60
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
URL = "/v1/buckets/blog/collections/articles/records/r1"


def app_with_grace(backend, blobs, tmp_path_factory, request, **extra):
    kinto = cached_app(
        backend,
        tmp_path_factory,
        request,
        blobs=blobs,
        **{
            "kinto.attachment.gc.replaced_grace_seconds": str(GRACE_SECONDS),
            # Orphans are collected at once: only the replaced entries keep their blobs.
            "kinto.attachment.gc.orphans_grace_seconds": "0",
            **extra,
        },
    )
    kinto.create_collection()
    return kinto


@pytest.fixture
def graced(backend, blobs, tmp_path_factory, request):
    return app_with_grace(backend, blobs, tmp_path_factory, request)


def entries(kinto):
    with transaction.manager:
        return list(replaced.every(kinto.registry.storage))


def now_ms():
    return data_file_entries.msec_time()


def upload_file(kinto, file_id, content):
    kinto.app.post(f"/v1/data/files?id={file_id}", content, extra_environ=LOCAL)
    with transaction.manager:
        return data_file_entries.get(kinto.registry.storage, file_id)["key"]


def replace_attachment(kinto):
    old = kinto.upload(URL, b"old").json
    kinto.upload(URL, b"new")
    return kinto.key_of(old["location"])


def delete_attachment(kinto):
    old = kinto.upload(URL, b"old").json
    kinto.app.delete(URL + "/attachment", headers=ALICE)
    return kinto.key_of(old["location"])


def delete_record(kinto):
    old = kinto.upload(URL, b"old").json
    kinto.app.delete(URL, headers=ALICE)
    return kinto.key_of(old["location"])


def delete_collection(kinto):
    old = kinto.upload(URL, b"old").json
    kinto.app.delete("/v1/buckets/blog/collections/articles", headers=ALICE)
    return kinto.key_of(old["location"])


def delete_bucket(kinto):
    old = kinto.upload(URL, b"old").json
    kinto.app.delete("/v1/buckets/blog", headers=ALICE)
    return kinto.key_of(old["location"])


def upload_data_file_again(kinto):
    old = upload_file(kinto, "x", b"old")
    upload_file(kinto, "x", b"new")
    return old


def delete_data_file(kinto):
    old = upload_file(kinto, "x", b"old")
    kinto.app.delete("/v1/data/files/x", extra_environ=LOCAL)
    return old


CHANGES = [
    replace_attachment,
    delete_attachment,
    delete_record,
    delete_collection,
    delete_bucket,
    upload_data_file_again,
    delete_data_file,
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda change: change.__name__)
def test_unreferenced_blobs_are_kept_for_the_grace_then_collected(graced, change):
    before = now_ms()
    old = change(graced)
    after = now_ms()

    (entry,) = entries(graced)
    assert entry["key"] == old
    assert before + GRACE_SECONDS * 1000 <= entry["until"] <= after + GRACE_SECONDS * 1000
    # Referenced until it is due: no orphan for the collector, however old the blob is.
    early = gc.collect(graced.registry, now=entry["until"] - 1)
    assert early.replaced == [] and early.orphans == []
    assert old in graced.files()

    report = gc.collect(graced.registry, now=entry["until"])
    assert [e["key"] for e in report.replaced] == [old]
    assert report.orphans == [] and report.dangling == []
    assert old not in graced.files()
    assert entries(graced) == []
    assert "Replaced files past their grace (removed): 1" in report.describe()


def test_a_dry_run_lists_what_is_due_and_deletes_nothing(tmp_path_factory, request):
    kinto = app_with_grace("memory", "local", tmp_path_factory, request)
    old = replace_attachment(kinto)
    (entry,) = entries(kinto)
    report = gc.collect(kinto.registry, now=entry["until"], dry_run=True)
    assert [e["key"] for e in report.replaced] == [old]
    assert "Replaced files past their grace (would be removed): 1" in report.describe()
    assert old in kinto.files() and entries(kinto) == [entry]


def test_an_entry_is_claimed_once(backend, tmp_path_factory, request):
    """Two collectors that found the same entries due: only one deletes each blob (once
    deleted, its name may be given to a new file)."""
    kinto = app_with_grace(backend, "local", tmp_path_factory, request)
    replace_attachment(kinto)
    storage = kinto.registry.storage
    with transaction.manager:
        due = replaced.due(storage, now_ms() + GRACE_SECONDS * 2000, limit=10)
    assert len(due) == 1
    with transaction.manager:
        assert replaced.claim(storage, due) == due
    with transaction.manager:
        assert replaced.claim(storage, due) == []
        assert replaced.claim(storage, []) == []


def test_entries_of_earlier_versions_are_collected(backend, tmp_path_factory, request):
    """Entries that earlier versions recorded, all under one parent, stay references until due,
    then are claimed and their blobs deleted as the others."""
    kinto = app_with_grace(backend, "local", tmp_path_factory, request)
    old = replace_attachment(kinto)
    storage = kinto.registry.storage
    with transaction.manager:
        (entry,) = replaced.every(storage)
        replaced.claim(storage, [entry])
        storage.update(
            resource_name=replaced.RESOURCE,
            parent_id=replaced.PARENT_ID,
            object_id=entry["id"],
            obj={"key": entry["key"], "until": entry["until"]},
        )
    assert [e["key"] for e in entries(kinto)] == [old]
    early = gc.collect(kinto.registry, now=entry["until"] - 1)
    assert early.replaced == [] and early.orphans == [] and old in kinto.files()
    report = gc.collect(kinto.registry, now=entry["until"])
    assert [e["key"] for e in report.replaced] == [old]
    assert old not in kinto.files() and entries(kinto) == []


def test_collected_by_batches(tmp_path_factory, request, monkeypatch):
    kinto = app_with_grace("memory", "local", tmp_path_factory, request)
    monkeypatch.setattr(gc, "DELETE_BATCH", 2)
    olds = [upload_file(kinto, f"f{i}", b"old") for i in range(5)]
    for i in range(5):
        kinto.app.delete(f"/v1/data/files/f{i}", extra_environ=LOCAL)
    report = gc.collect(kinto.registry, now=now_ms() + GRACE_SECONDS * 2000)
    assert sorted(e["key"] for e in report.replaced) == sorted(olds)
    assert kinto.files() == []


@pytest.mark.parametrize("backend", ["memory"])
def test_keep_old_files_is_unchanged(backend, tmp_path_factory, request):
    kinto = app_with_grace(
        backend, "local", tmp_path_factory, request, **{"kinto.attachment.keep_old_files": "true"}
    )
    old = replace_attachment(kinto)
    assert entries(kinto) == []
    with transaction.manager:
        assert links.is_retained(kinto.registry.storage, old)
    gc.collect(kinto.registry, now=now_ms() + GRACE_SECONDS * 2000)
    assert old in kinto.files()


@pytest.mark.parametrize("backend", ["memory"])
def test_files_retained_by_earlier_versions_are_still_kept(backend, tmp_path_factory, request):
    """Earlier versions recorded every retained file under one parent: still retained, never
    taken for orphans."""
    kinto = app_with_grace(
        backend, "local", tmp_path_factory, request, **{"kinto.attachment.keep_old_files": "true"}
    )
    old = replace_attachment(kinto)
    storage = kinto.registry.storage
    with transaction.manager:
        (entry,) = links.retained(storage)
        for parent_id in (links.RETAINED_PARENT + "/" + entry["id"], links.RETAINED_PARENT):
            storage.delete_all(resource_name=links.RETAINED, parent_id=parent_id)
        assert not links.is_retained(storage, old)
        storage.update(
            resource_name=links.RETAINED,
            parent_id=links.RETAINED_PARENT,
            object_id=entry["id"],
            obj={"key": old},
        )
    with transaction.manager:
        assert links.is_retained(storage, old)
        assert [r["key"] for r in links.retained(storage)] == [old]
    report = gc.collect(kinto.registry, now=now_ms() + GRACE_SECONDS * 2000)
    assert report.orphans == [] and old in kinto.files()


def test_a_replaced_entry_is_a_reference_read_after_the_links(tmp_path_factory, request):
    kinto = app_with_grace("memory", "local", tmp_path_factory, request)
    old = replace_attachment(kinto)
    with transaction.manager:
        found = [(r.where, r.key) for r in references.read(kinto.registry)]
    assert found[-1] == ("replaced", old)


def test_without_grace_blobs_are_deleted_at_commit(tmp_path_factory, request):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.attachment.gc.replaced_grace_seconds": "0"},
    )
    kinto.create_collection()
    old = replace_attachment(kinto)
    assert old not in kinto.files() and entries(kinto) == []


def test_the_default_grace_and_its_setting():
    base = {"attachment.base_path": "/tmp/unused"}
    assert attachment_settings.parse(base).gc.replaced_grace_seconds == 600
    setting = "attachment.gc.replaced_grace_seconds"
    assert attachment_settings.parse({**base, setting: "0"}).gc.replaced_grace_seconds == 0
    with pytest.raises(ConfigurationError, match="replaced_grace_seconds"):
        attachment_settings.parse({**base, setting: "-1"})


def test_an_old_blob_is_never_taken_for_an_orphan_while_it_is_kept(tmp_path_factory, request):
    """Local store: the replaced blob is two days old, past any orphan grace."""
    kinto = app_with_grace("memory", "local", tmp_path_factory, request)
    old = replace_attachment(kinto)
    two_days_ago = time.time() - 2 * 86400
    os.utime(os.path.join(kinto.base_path, old), (two_days_ago,) * 2)
    report = gc.collect(kinto.registry)
    assert report.orphans == [] and old in kinto.files()


@pytest.mark.postgresql
@pytest.mark.parametrize("where", ["in-view", "before-commit"])
def test_an_upload_that_fails_before_the_database_commits_leaves_no_file(
    tmp_path_factory, request, monkeypatch, where
):
    """Found by review (2026-12-05), of the fix that leaves a blob to the collector once the
    database was asked to commit (its answer may be lost after it committed).

    Before that, a failure (in the view, or in a hook before the commit: the file's
    durability, an event) leaves the database uncommitted for sure: the blob goes, at once or
    when the thread's transaction manager aborts the failed transaction (its next request;
    Pyramid's tween aborts none that failed to commit), and its chosen name is held a minute
    (a store's client sends a delete again when its answer is lost), then free again."""
    kinto = cached_app(
        "postgresql",
        tmp_path_factory,
        request,
        **{"kinto.attachment.randomize": "false", "kinto.attachment.extensions": "any"},
    )
    kinto.create_collection()
    lock_record = record_step.lock_record

    def gone(*args):
        raise BackendError(message="The database is gone.")

    def failing(request, context):
        if where == "in-view":
            gone()
        request.tm.get().addBeforeCommitHook(gone)
        return lock_record(request, context)

    monkeypatch.setattr(record_step, "lock_record", failing)
    kinto.upload(URL, b"lost", "report.txt", status=503)
    monkeypatch.undo()
    if where == "before-commit":
        kinto.app.get("/v1/", headers=ALICE)  # Its next request.
    assert [name for name in kinto.files() if not name.startswith(".")] == []
    held = [e for e in replaced.every(kinto.registry.storage) if e["key"] == "report.txt"]
    assert [e.get(replaced.QUARANTINED) for e in held] == [True]
    assert 0 < held[0]["until"] - now_ms() <= replaced.QUARANTINE_SECONDS * 1000
    assert kinto.upload(URL, b"kept", "report.txt").json["location"].endswith("report-1.txt")
