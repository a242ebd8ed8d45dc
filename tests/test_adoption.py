"""Data written by kinto-attachment: served, replaced and deleted as ours, then adopted.

The rows are built here as kinto-attachment writes them (a record whose ``attachment`` names
the file by URL, and a link under ``__attachments__``); ``tests/live/test_legacy_data.py`` checks
the same against data written by the real kinto-attachment.
"""

import logging
import os
import subprocess
import time
import uuid

import pytest
import transaction

from kinto_attachment import adoption, gc
from kinto_attachment.adoption import copies, rows, unreferenced
from kinto_attachment.adoption.migration import Migration
from kinto_attachment.state import legacy, links

from .conftest import ALICE, cached_app


URL = "/v1/buckets/blog/collections/articles/records/r1"
LEGACY_RESOURCES = {"8": "", "9": "attachments"}


def store_file(kinto, content, key=None):
    key = key or f"blog/articles/{uuid.uuid4().hex}.txt"
    staged = kinto.registry.attachment_store.stage(key, "text/plain")
    staged.write(content)
    return staged.commit()


def legacy_record(
    kinto,
    record_id="r1",
    content=b"old content",
    link="8",
    location=None,
    key=None,
    collection="articles",
):
    """A record of blog/``collection`` and its file as kinto-attachment leaves them
    (``link``: its version's link row, or None for a record without one; ``key``: a file
    stored already, else one of ``content``); returns the record's attachment."""
    store = kinto.registry.attachment_store
    key = key or store_file(kinto, content)
    attachment = {
        "filename": "old.txt",
        "hash": "0" * 64,
        "location": location or store.url(key),
        "mimetype": "text/plain",
        "size": len(content),
    }
    parent_id = f"/buckets/blog/collections/{collection}"
    record_url = f"/v1{parent_id}/records/{record_id}"
    kinto.app.put_json(record_url, {"data": {"title": "old"}}, headers=ALICE)
    storage = kinto.registry.storage
    with transaction.manager:
        record = storage.get(resource_name="record", parent_id=parent_id, object_id=record_id)
        storage.update(
            resource_name="record",
            parent_id=parent_id,
            object_id=record_id,
            obj={**record, "attachment": attachment},
        )
        if link is not None:
            legacy_row(storage, record_id, key, link, collection)
    return {**attachment, "key": key}


def legacy_row(storage, record_id, key, link="8", collection="articles"):
    """kinto-attachment's row (of its version ``link``) linking ``key`` to the record
    ``record_id`` of blog/``collection``; in the caller's transaction."""
    parent_id = f"/buckets/blog/collections/{collection}"
    storage.create(
        resource_name=LEGACY_RESOURCES[link],
        parent_id=legacy.PARENT_ID,
        obj={
            "location": key,
            "bucket_uri": "/buckets/blog",
            "collection_uri": parent_id,
            "record_uri": f"{parent_id}/records/{record_id}",
        },
    )


def legacy_rows(kinto):
    with transaction.manager:
        return list(legacy.every(kinto.registry.storage))


def retained_keys(kinto):
    with transaction.manager:
        return sorted(r["key"] for r in links.retained(kinto.registry.storage))


def our_links(kinto):
    with transaction.manager:
        return sorted(link["key"] for link in links.all_links(kinto.registry.storage))


def prepared(kinto):
    kinto.create_collection()
    kinto.registry.attachment_adopted = False  # The marker went with the previous test's data.
    return kinto


@pytest.fixture
def old(kinto):
    return prepared(kinto)


@pytest.fixture
def old_local(backend, tmp_path_factory, request):
    """For the garbage collector's tests, which age files (local files have an mtime)."""
    return prepared(cached_app(backend, tmp_path_factory, request))


@pytest.mark.parametrize("link", ["8", "9", None])
def test_downloads_serve_the_old_file(old, link):
    attachment = legacy_record(old, link=link)
    response = old.app.get(URL + "/attachment", headers=ALICE)
    assert response.body == b"old content"
    head = old.app.head(URL + "/attachment", headers=ALICE)
    assert head.headers["Content-Length"] == str(attachment["size"])


@pytest.mark.parametrize("link", ["8", "9"])
def test_replacing_deletes_the_old_file_and_its_row(old, link):
    attachment = legacy_record(old, link=link)
    old.upload(URL, b"new", "new.txt", status=200)
    assert not old.registry.attachment_store.exists(attachment["key"])
    assert legacy_rows(old) == []


def test_keep_old_files_keeps_it_and_the_gc_too(tmp_path_factory, request):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.keep_old_files": "true"}
    )
    kinto.create_collection()
    kinto.registry.attachment_adopted = False
    attachment = legacy_record(kinto)
    kinto.upload(URL, b"new", "new.txt", status=200)
    age(kinto, attachment["key"])
    gc.collect(kinto.registry)
    assert kinto.registry.attachment_store.exists(attachment["key"])


@pytest.mark.parametrize(
    "path,scope",
    [
        (URL, "record"),
        ("/v1/buckets/blog/collections/articles", "collection"),
        ("/v1/buckets/blog", "bucket"),
        ("/v1/buckets/blog/collections/articles/records", "all records"),
    ],
)
@pytest.mark.parametrize("link", ["8", "9"])
def test_deletes_delete_the_old_files(old, path, scope, link):
    first = legacy_record(old, "r1", link=link)
    second = legacy_record(old, "r2", link=link)
    old.app.delete(path, headers=ALICE)
    store = old.registry.attachment_store
    assert not store.exists(first["key"])
    assert store.exists(second["key"]) == (scope == "record")
    assert len(legacy_rows(old)) == (1 if scope == "record" else 0)


def test_flush_deletes_the_old_files(tmp_path_factory, request):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.flush_endpoint_enabled": "true"}
    )
    kinto.create_collection()
    attachment = legacy_record(kinto)
    kinto.app.post("/v1/__flush__", status=202)
    assert not kinto.registry.attachment_store.exists(attachment["key"])


def test_a_location_outside_base_url_or_a_missing_file_is_a_404(old):
    legacy_record(old, "r1", link=None, location="https://elsewhere.example.com/x.txt")
    response = old.app.get(URL + "/attachment", headers=ALICE, status=404)
    assert response.json["errno"] == 111
    attachment = legacy_record(old, "r2", link="8")
    old.registry.attachment_store.delete(attachment["key"])
    other = old.record_url("r2") + "/attachment"
    assert old.app.get(other, headers=ALICE, status=404).json["errno"] == 111


def test_adoption_makes_everything_ours_once(old):
    linked = legacy_record(old, "r1", link="8")
    linked9 = legacy_record(old, "r2", link="9")
    bare = legacy_record(old, "r3", link=None)
    foreign = legacy_record(old, "r4", link=None, location="https://cdn.example.com/r4.txt")
    # A link whose record names another file (kinto-attachment kept the old file).
    kept = legacy_record(old, "r5", link="8")
    store_file(old, b"kept", kept["key"] + ".old")
    with transaction.manager:
        rows = [row for row in legacy.every(old.registry.storage) if row["record_id"] == "r5"]
        old.registry.storage.update(
            resource_name=rows[0]["legacy"],
            parent_id=legacy.PARENT_ID,
            object_id=rows[0]["id"],
            obj={**_row(old, rows[0]), "location": kept["key"] + ".old"},
        )

    foreign_uri = "/buckets/blog/collections/articles/records/r4"
    dry = adoption.adopt(old.registry, dry_run=True)
    assert (dry.linked, dry.retained, dry.unlinked) == (2, 1, 2)
    assert dry.foreign == [(foreign_uri, foreign["location"])]
    # The file stored for r4, whose location is elsewhere: nothing names it.
    assert dry.unreferenced == [foreign["key"]]
    assert len(legacy_rows(old)) == 3 and our_links(old) == []
    assert not adoption.done(old.registry)

    report = adoption.adopt(old.registry)
    assert (report.linked, report.retained, report.unlinked) == (2, 1, 2)
    assert [uri for uri, _ in report.foreign] == [foreign_uri]
    assert legacy_rows(old) == []
    assert our_links(old) == sorted([linked["key"], linked9["key"]])
    # Files of records without a link, of links no record names, and that nothing names.
    assert report.unreferenced == [foreign["key"]]
    assert retained_keys(old) == sorted(
        [bare["key"], kept["key"], kept["key"] + ".old", foreign["key"]]
    )
    assert adoption.done(old.registry)
    assert "made ours: 2" in report.describe()
    assert f"that were kept: 1\n  {foreign['key']}" in report.describe()

    again = adoption.adopt(old.registry)
    assert (again.linked, again.retained, again.unlinked, again.unreferenced) == (0, 0, 0, [])


def test_once_adopted_the_gc_keeps_every_file_a_record_or_a_kept_link_names(old_local):
    linked = legacy_record(old_local, "r1", link="8")
    bare = legacy_record(old_local, "r2", link=None)
    kept = legacy_record(old_local, "r3", link="9")
    old_local.upload(old_local.record_url("r3"), b"new", "new.txt", status=200)
    adoption.adopt(old_local.registry)
    for key in (linked["key"], bare["key"]):
        age(old_local, key)
    report = gc.collect(old_local.registry)
    assert report.orphans == []
    store = old_local.registry.attachment_store
    assert store.exists(linked["key"]) and store.exists(bare["key"])
    assert not store.exists(kept["key"])  # Replaced: deleted at once, not left to the GC.


def _row(kinto, link):
    with transaction.manager:
        return kinto.registry.storage.get(
            resource_name=link["legacy"], parent_id=legacy.PARENT_ID, object_id=link["id"]
        )


def age(kinto, key):
    """Make a local file older than the GC's grace period."""
    two_days_ago = time.time() - 2 * 86400
    os.utime(os.path.join(kinto.base_path, key), (two_days_ago, two_days_ago))


def test_the_gc_adopts_before_looking_for_orphans(old_local):
    bare = legacy_record(old_local, "r1", link=None)
    linked = legacy_record(old_local, "r2", link="8")
    for key in (bare["key"], linked["key"]):
        age(old_local, key)

    dry = gc.collect(old_local.registry, dry_run=True)
    assert dry.adoption_pending and dry.orphans == []
    assert "not adopted yet" in dry.describe()

    report = gc.collect(old_local.registry)
    assert report.orphans == []
    store = old_local.registry.attachment_store
    assert store.exists(bare["key"]) and store.exists(linked["key"])
    assert adoption.done(old_local.registry)
    # Once adopted, what nothing references is an orphan again.
    orphan = store_file(old_local, b"nobody's")
    age(old_local, orphan)
    assert [o.key for o in gc.collect(old_local.registry).orphans] == [orphan]


def test_files_kinto_attachment_kept_with_keep_old_files_are_kept_at_adoption(old_local):
    """kinto-attachment with ``keep_old_files = true`` (Remote Settings' setting) removes the
    row of a replaced file and keeps the file, on purpose: no row nor record names it. The
    first adoption (here, the server's collector at its first round) retains every file
    nothing references, lists it, and no orphan pass deletes it."""
    kept_by_kinto_attachment = store_file(old_local, b"version 1, kept on purpose")
    current = legacy_record(old_local, "r1", content=b"version 2", link="8")
    staged = old_local.registry.attachment_store.stage("blog/articles/x.txt", "text/plain")
    staged.write(b"an upload a crash interrupted")  # Temporary: still the collector's.
    for key in (kept_by_kinto_attachment, current["key"]):
        age(old_local, key)

    dry = gc.collect(old_local.registry, dry_run=True)
    assert dry.adoption_pending and dry.orphans == []
    assert dry.kept_at_adoption == [kept_by_kinto_attachment]
    report = gc.collect(old_local.registry)
    assert report.kept_at_adoption == [kept_by_kinto_attachment]
    assert f"never removed: 1\n  {kept_by_kinto_attachment}\n" in report.describe()

    store = old_local.registry.attachment_store
    assert store.exists(current["key"])
    assert store.exists(kept_by_kinto_attachment), "a file keep_old_files kept was deleted"
    assert kept_by_kinto_attachment not in [o.key for o in report.orphans]
    with transaction.manager:
        (entry,) = [r for r in links.retained(old_local.registry.storage) if r.get("reason")]
    assert entry["key"] == kept_by_kinto_attachment
    assert entry["reason"] == links.UNREFERENCED_AT_ADOPTION
    later = gc.collect(old_local.registry, now=gc.data_file_entries.msec_time() + 86400 * 3000)
    assert later.orphans == [] or all(o.temporary for o in later.orphans)
    assert store.exists(kept_by_kinto_attachment)


def test_kinto_migrate_runs_the_adoption(old, capsys, caplog):
    legacy_record(old, "r1", link="8")
    migration = Migration(old.registry)
    with caplog.at_level(logging.INFO, logger="kinto_attachment.adoption"):
        migration.initialize_schema(client=None, dry_run=True)
    # Reported once: in the log, as Kinto's own migration messages, never printed besides.
    assert sum(r.getMessage().count("made ours: 1") for r in caplog.records) == 1
    assert capsys.readouterr() == ("", "")
    assert len(legacy_rows(old)) == 1
    migration.initialize_schema(client=None)
    assert legacy_rows(old) == [] and len(our_links(old)) == 1


def test_a_row_naming_no_record_keeps_its_file(old):
    key = store_file(old, b"whose?")
    with transaction.manager:
        old.registry.storage.create(
            resource_name="",
            parent_id=legacy.PARENT_ID,
            obj={"location": key, "bucket_uri": "/buckets/blog", "record_uri": "/elsewhere"},
        )
    # Not a link of any record: deleting the bucket leaves it to adoption.
    old.app.delete("/v1/buckets/blog", headers=ALICE)
    assert old.registry.attachment_store.exists(key)
    report = adoption.adopt(old.registry)
    assert (report.linked, report.retained) == (0, 1)
    with transaction.manager:
        kept = [r["key"] for r in links.retained(old.registry.storage)]
    assert kept == [key] and legacy_rows(old) == []


def test_a_copy_without_a_link_never_deletes_the_original_file(old):
    """kinto-signer copies records between collections: the copy names the original's file
    and has no link. Deleting the copy, before or after adoption, keeps the file."""
    original = legacy_record(old, "r1", link="8")
    copy = legacy_record(old, "r2", link=None)
    store = old.registry.attachment_store
    with transaction.manager:
        storage = old.registry.storage
        parent_id = "/buckets/blog/collections/articles"
        record = storage.get(resource_name="record", parent_id=parent_id, object_id="r2")
        attachment = {**record["attachment"], "location": store.url(original["key"])}
        storage.update(
            resource_name="record",
            parent_id=parent_id,
            object_id="r2",
            obj={**record, "attachment": attachment},
        )
    store.delete(copy["key"])
    old.app.delete(old.record_url("r2"), headers=ALICE)
    assert store.exists(original["key"])
    legacy_record(old, "r3", link=None, location=store.url(original["key"]))
    adoption.adopt(old.registry)
    old.app.delete(old.record_url("r3"), headers=ALICE)
    assert store.exists(original["key"])
    assert old.app.get(URL + "/attachment", headers=ALICE).body == b"old content"


@pytest.mark.parametrize("moved", [False, True], ids=["current-url", "previous-base-url"])
@pytest.mark.parametrize("grace", ["0", "60"], ids=["deleted-at-once", "after-a-grace"])
def test_deleting_the_original_keeps_the_retained_file_its_copy_names(
    tmp_path_factory, request, grace, moved
):
    """kinto-signer copies: r2 names r1's file and has no link, so adoption retains that
    file. Deleting r1 stops its link referencing the file, yet the copy still names it: a
    retained file is deleted neither at once (no replaced grace) nor by the collector.

    Both may name it by a URL under a previous ``base_url`` (the CDN moved): r1 keeps its
    link (the path ends with the key), and the copy its file, by the same rule (found by
    review, 2026-12-05: the copy was only reported, and deleting r1 deleted its file)."""
    settings = {
        "kinto.attachment.gc.orphans_grace_seconds": "60",
        "kinto.attachment.gc.replaced_grace_seconds": grace,
    }
    kinto = prepared(cached_app("memory", tmp_path_factory, request, **settings))
    store = kinto.registry.attachment_store
    key = store_file(kinto, b"old content")
    location = f"https://old-cdn.example.com/{key}" if moved else store.url(key)
    store.delete(legacy_record(kinto, "r1", link=None, location=location)["key"])  # Unused.
    with transaction.manager:
        legacy_row(kinto.registry.storage, "r1", key)
    original = {"key": key}
    copy = legacy_record(kinto, "r2", link=None, location=location)
    store.delete(copy["key"])  # legacy_record stored a file of its own for it: unused.
    report = adoption.adopt(kinto.registry)
    assert (report.linked, report.unlinked) == (1, 1)

    kinto.app.delete(kinto.record_url("r1"), headers=ALICE)
    gc.collect(kinto.registry, now=gc.data_file_entries.msec_time() + 120 * 1000)

    assert store.exists(original["key"]), "the file a record still names was deleted"
    if not moved:  # Served from our base URL; under another, the client fetches it there.
        response = kinto.app.get(kinto.record_url("r2") + "/attachment", headers=ALICE)
        assert response.body == b"old content"


# Interrupted adoption: a crash at any of its writes loses nothing, and running it again ends
# where an uninterrupted run would.


class Crash(Exception):
    """What a kill -9 is to adoption, which writes to the database only: the transaction it
    is in never commits."""


class Writes:
    """Counts adoption's writes (a link made ours, a file retained, legacy rows forgotten);
    the ``crash_at``-th raises :class:`Crash` before it is made."""

    def __init__(self, monkeypatch):
        self.count, self.crash_at = 0, None
        for module, name in ((links, "add"), (links, "retain"), (legacy, "forget")):
            monkeypatch.setattr(module, name, self._counted(getattr(module, name)))

    def _counted(self, write):
        def counted(*args, **kwargs):
            self.count += 1
            if self.count == self.crash_at:
                raise Crash(f"crash before write {self.count}")
            return write(*args, **kwargs)

        return counted


def legacy_state(kinto):
    """Records of every kind adoption meets, over several batches. Returns the keys adoption
    must end with as ``(our links, retained)``, and the keys legacy rows name beforehand."""
    linked = [legacy_record(kinto, f"l{i}", link="89"[i % 2])["key"] for i in range(3)]
    bare = [legacy_record(kinto, f"b{i}", link=None)["key"] for i in range(3)]
    kept = legacy_record(kinto, "k", link="8")
    old_key = kept["key"] + ".old"
    store_file(kinto, b"kept", old_key)
    with transaction.manager:
        row = next(r for r in legacy.every(kinto.registry.storage) if r["record_id"] == "k")
        kinto.registry.storage.update(
            resource_name=row["legacy"],
            parent_id=legacy.PARENT_ID,
            object_id=row["id"],
            obj={**_row(kinto, row), "location": old_key},
        )
    final = (sorted(linked), sorted([*bare, kept["key"], old_key]))
    return final, {*linked, old_key}


@pytest.mark.rolls_back
def test_adoption_interrupted_at_any_write_loses_nothing_and_resumes(kinto, monkeypatch):
    for step in (rows, copies, unreferenced):  # Several transactions for a few rows.
        monkeypatch.setattr(step, "BATCH", 2)
    writes = Writes(monkeypatch)
    final, _ = legacy_state(prepared(kinto))
    adoption.adopt(kinto.registry)
    assert (our_links(kinto), retained_keys(kinto), legacy_rows(kinto)) == (*final, [])
    total = writes.count
    assert total > 2 * 2

    for crash_at in range(1, total + 1):
        kinto.wipe()
        final, named_by_rows = legacy_state(prepared(kinto))
        writes.count, writes.crash_at = 0, crash_at
        with pytest.raises(Crash):
            adoption.adopt(kinto.registry)
        # Whatever committed before the crash: every file a legacy row named is still named by
        # that row, a link of ours or a retained entry; and adoption is not done, so the
        # garbage collector adopts before it looks for orphans (files that only records name
        # are safe until then)...
        protected = set(our_links(kinto)) | set(retained_keys(kinto))
        protected |= {row["key"] for row in legacy_rows(kinto)}
        assert named_by_rows <= protected, crash_at
        assert not adoption.done(kinto.registry)
        # ...and the next run (a restarted ``kinto migrate``, or the garbage collector)
        # finishes the work as if nothing had happened.
        writes.crash_at = None
        kinto.registry.attachment_adopted = False  # Nothing of the crashed process survives.
        adoption.adopt(kinto.registry)
        assert (our_links(kinto), retained_keys(kinto), legacy_rows(kinto)) == (*final, []), (
            crash_at
        )
        assert adoption.done(kinto.registry)
        store = kinto.registry.attachment_store
        assert all(store.exists(key) for key in final[0] + final[1])


@pytest.mark.postgresql
def test_kinto_migrate_dry_run_on_a_fresh_database_reports_and_exits_0(tmp_path):
    """``kinto migrate --dry-run`` on a database Kinto has not created its tables in: Kinto's
    dry run creates none, and adoption, which has nothing to adopt there, says so instead of
    querying tables that are not there."""
    from .conftest import own_database, postgresql_ini
    from .support.live import BIN

    with own_database("adoption_fresh") as url:
        ini = tmp_path / "kinto.ini"
        ini.write_text(postgresql_ini(url, tmp_path / "files"))
        command = [str(BIN / "kinto"), "migrate", "--ini", str(ini), "--dry-run"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_files_another_instance_of_ours_wrote_are_not_kept_at_adoption(old_local, caplog):
    """Found by review (2026-12-05).

    Every restart of ``make serve`` (the memory backend: a new instance each time) adopted
    the earlier process's files as kinto-attachment's, retained for good ("the previous plugin
    left it"): the folder only grew. A name that carries an instance's tag was written by
    this plugin, never by kinto-attachment: adoption leaves it to the collectors (this one
    keeps another instance's, as it always did)."""
    from kinto_attachment.state import instance

    earlier_run = store_file(
        old_local, b"an earlier process's", f"blog/articles/{instance.tagged_name('0badcafe')}.txt"
    )
    kept_by_kinto_attachment = store_file(old_local, b"kept on purpose")
    for key in (earlier_run, kept_by_kinto_attachment):
        age(old_local, key)
    with caplog.at_level(logging.INFO, logger="kinto_attachment.adoption"):
        dry = gc.collect(old_local.registry, dry_run=True)
    assert dry.kept_at_adoption == [kept_by_kinto_attachment]
    assert f"Would keep {kept_by_kinto_attachment!r}" in caplog.text
    report = gc.collect(old_local.registry)
    assert report.kept_at_adoption == [kept_by_kinto_attachment]
    assert old_local.registry.attachment_store.exists(earlier_run)  # Another instance's: kept.
    with transaction.manager:
        retained = [r["key"] for r in links.retained(old_local.registry.storage)]
    assert retained == [kept_by_kinto_attachment]
