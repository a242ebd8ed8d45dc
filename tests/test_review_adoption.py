"""Review of the adoption of kinto-attachment's data and of the commands operators run: each
test states a defect and the behaviour expected once it is fixed."""

import contextlib
import os
import subprocess
import time

import pytest
import transaction

from kinto_attachment import adoption, gc
from kinto_attachment.events import command as events_command
from kinto_attachment.gc import command
from kinto_attachment.state import links

from .conftest import (
    ALICE,
    Kinto,
    build_settings,
    cached_app,
    flush,
    make_app,
    postgresql_ini,
    s3_settings,
)
from .support.live import BIN
from .test_adoption import legacy_record, legacy_row, prepared, store_file


def two_days_ago(path):
    then = time.time() - 2 * 86400
    os.utime(path, (then, then))


@pytest.mark.postgresql
def test_adoption_run_against_an_empty_store_does_not_doom_the_kept_files(pg_url, tmp_path):
    """Defect: ``kinto migrate`` run where the store is not the servers' (a one-off job or
    container without the attachments volume mounted: ``base_path`` is an empty folder) adopts
    against that empty store: step 3 finds no unreferenced file to keep, yet the adoption
    marker is written. The servers' collector, with the real store, then never adopts again,
    its store check passes (the records' files are there), and its first orphan pass deletes
    every file kinto-attachment kept on purpose with ``keep_old_files`` (no record nor row
    names them), which adoption exists to keep.

    Expected: adoption refuses (or at least does not mark itself done) when the store lacks
    the files the records and links name, as the collector's store check refuses an orphan
    pass; the files kept by kinto-attachment survive the servers' collection."""
    served = str(tmp_path / "attachments")
    kinto = Kinto(make_app(build_settings("postgresql", served, pg=pg_url)), served)
    flush(kinto.app)
    kinto.create_collection()
    kinto.registry.attachment_adopted = False
    kept = store_file(kinto, b"version 1, kept on purpose by keep_old_files")
    current = legacy_record(kinto, "r1", content=b"version 2", link="8")
    for key in (kept, current["key"]):
        two_days_ago(os.path.join(served, key))

    # ``kinto migrate`` from a job whose volume is not mounted: same database, and a
    # ``base_path`` that does not exist (the store makes it, empty). Its exit code is not
    # looked at: refusing is a fix; what matters is what the servers' collector does next.
    ini = tmp_path / "migrate.ini"
    ini.write_text(postgresql_ini(pg_url, tmp_path / "not-mounted"))
    migrate = [str(BIN / "kinto"), "migrate", "--ini", str(ini)]
    subprocess.run(migrate, capture_output=True, text=True, timeout=120)

    # The servers' collector, with the real store.
    kinto.registry.attachment_adopted = False
    with contextlib.suppress(gc.Refused):  # Refusing is a fix too: nothing removed.
        gc.collect(kinto.registry)
    store = kinto.registry.attachment_store
    assert store.exists(current["key"])
    assert store.exists(kept), "a file kinto-attachment kept on purpose was deleted"


def test_deleting_one_of_two_adopted_records_sharing_a_file_keeps_it(tmp_path_factory, request):
    """Defect: kinto-attachment can leave two rows naming one key (``randomize = false``: a
    record whose file was lost keeps its row, and the next upload of that name takes the free
    name). Adoption makes both rows links. With ``gc.replaced_grace_seconds = 0`` deleting one
    record retires the key at once (``uploads.lifecycle.retire`` looks only at retained
    files), deleting the file the other record's link still names. With a grace period the
    collector keeps it (``links.linked_among``): the immediate path lacks that check.

    Expected: a key that another record's link still names is not deleted when one record
    goes, whatever the grace period."""
    kinto = prepared(cached_app("memory", tmp_path_factory, request))  # Grace 0 (conftest).
    store = kinto.registry.attachment_store
    shared = legacy_record(kinto, "new", content=b"the new record's file", link="8")
    kinto.app.put_json(kinto.record_url("old"), {"data": {}}, headers=ALICE)
    attachment = {k: v for k, v in shared.items() if k != "key"}
    storage = kinto.registry.storage
    parent_id = "/buckets/blog/collections/articles"
    with transaction.manager:
        record = storage.get(resource_name="record", parent_id=parent_id, object_id="old")
        storage.update(
            resource_name="record",
            parent_id=parent_id,
            object_id="old",
            obj={**record, "attachment": attachment},
        )
        legacy_row(storage, "old", shared["key"])
    report = adoption.adopt(kinto.registry)
    assert report.linked == 2
    with transaction.manager:
        assert len([k for k in links.all_links(storage) if k["key"] == shared["key"]]) == 2

    kinto.app.delete(kinto.record_url("old"), headers=ALICE)

    assert store.exists(shared["key"]), "the file another record's link names was deleted"
    response = kinto.app.get(kinto.record_url("new") + "/attachment", headers=ALICE, status="*")
    assert response.status_int == 200


@pytest.mark.parametrize(
    "main,args", [(command.main, []), (events_command.main, ["list"])], ids=["gc", "events"]
)
def test_commands_with_a_missing_ini_file_refuse_rather_than_crash(tmp_path, capsys, main, args):
    """Defect: ``kinto-attachment-gc --ini missing.ini`` (a typo in a cron line), and
    ``kinto-attachment-events`` likewise, end with a ``FileNotFoundError`` traceback
    (``state.shared.registry_of`` calls ``setup_logging`` on a file nobody checked), exit
    code 1, which the GC command documents as "the storage backend failed in the middle".

    Expected: a one-line refusal naming the file, exit code 2 (a wrong command line)."""
    missing = tmp_path / "missing.ini"
    try:
        code = main(["--ini", str(missing), *args])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert str(missing) in capsys.readouterr().err


def _run_gc(ini, capsys):
    """``kinto-attachment-gc --ini ini``: its exit code (a traceback is a failure of the
    test, reported as such) and what it printed."""
    try:
        code = command.main(["--ini", str(ini)])
    except SystemExit as exit_:
        code = exit_.code
    except Exception as error:  # noqa: BLE001
        pytest.fail(f"traceback instead of a refusal: {error!r}")
    return code, capsys.readouterr()


@pytest.mark.postgresql
def test_gc_command_with_an_ini_that_does_not_include_the_plugin_refuses(pg_url, tmp_path, capsys):
    """Defect: ``kinto-attachment-gc`` given a Kinto configuration whose ``kinto.includes``
    lacks ``kinto_attachment`` (another service's ini, a typo, includes set by an environment
    variable the cron job lacks) crashes with ``AttributeError: 'Registry' object has no
    attribute 'attachment_store'``.

    Expected: a refusal saying the configuration does not include the plugin, exit code 2."""
    make_app(build_settings("postgresql", str(tmp_path / "files"), pg=pg_url))  # The schema.
    ini = tmp_path / "gc.ini"
    text = postgresql_ini(pg_url, tmp_path / "files")
    ini.write_text(text.replace("kinto.includes = kinto_attachment\n", ""))
    code, output = _run_gc(ini, capsys)
    assert code == 2, output


@pytest.mark.postgresql
def test_gc_command_with_a_wrong_s3_bucket_refuses(pg_url, s3_server, tmp_path, capsys):
    """Defect: ``kinto-attachment-gc`` whose ini names an S3 bucket that does not exist (or
    that its credentials may not list) crashes with a ``StorageUnavailable`` traceback from
    the store listing (exit code 1): the command only turns Kinto's ``BackendError`` into a
    message, never the store's failure, although it documents a store it cannot use as a
    refusal ("nothing is removed", exit code 2).

    Expected: a one-line refusal naming the store's error, exit code 2."""
    make_app(build_settings("postgresql", str(tmp_path / "files"), pg=pg_url))  # The schema.
    settings = s3_settings(s3_server)
    settings["kinto.attachment.aws.bucket_name"] = "no-such-bucket"
    text = postgresql_ini(pg_url, tmp_path / "files")
    text = text.replace(f"kinto.attachment.base_path = {tmp_path / 'files'}\n", "")
    ini = tmp_path / "gc.ini"
    ini.write_text(text + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    code, output = _run_gc(ini, capsys)
    assert code == 2, output
    assert "no-such-bucket" in output.err or "NoSuchBucket" in output.err


def test_adoption_keeps_the_link_of_a_record_whose_location_is_its_bare_key(
    tmp_path_factory, request
):
    """Defect: kinto-attachment's ``base_url`` defaults to empty (pyramid_storage's
    ``urljoin("", key)``): its records' ``location`` is then the bare key. An operator who
    sets ``base_url`` when switching (a CDN) keeps such records: before adoption their
    kinto-attachment row serves the download. Adoption's ``_names`` accepts a location under
    another base URL only when its path ends with ``"/" + key``; a bare key has no leading
    slash, so the row is not made a link but the file retained: the download that worked
    before adoption is a 404 after it (and deleting the record no longer deletes its file).

    Expected: adoption makes the row a link (the row names the record's file, whatever form
    its location has), and the download keeps working."""
    kinto = prepared(cached_app("memory", tmp_path_factory, request))
    attachment = legacy_record(kinto, "r1", link="8")
    bare = attachment["key"]
    storage = kinto.registry.storage
    parent_id = "/buckets/blog/collections/articles"
    with transaction.manager:
        record = storage.get(resource_name="record", parent_id=parent_id, object_id="r1")
        record["attachment"] = {**record["attachment"], "location": bare}
        storage.update(resource_name="record", parent_id=parent_id, object_id="r1", obj=record)
    url = kinto.record_url("r1") + "/attachment"
    assert kinto.app.get(url, headers=ALICE).body == b"old content"  # Before adoption.

    report = adoption.adopt(kinto.registry)

    assert (report.linked, report.retained) == (1, 0), (report.linked, report.retained)
    response = kinto.app.get(url, headers=ALICE, status="*")
    assert response.status_int == 200, "served before adoption, a 404 after"


def set_location(kinto, record_id, location):
    """A record created with any ``attachment`` (kinto-attachment only compared attachments
    on updates: a client could create a record naming any location)."""
    storage = kinto.registry.storage
    parent_id = "/buckets/blog/collections/articles"
    attachment = {"filename": "x.txt", "location": location, "hash": "0" * 64, "size": 1}
    with transaction.manager:
        storage.update(
            resource_name="record",
            parent_id=parent_id,
            object_id=record_id,
            obj={"id": record_id, "attachment": attachment},
        )


@pytest.mark.postgresql
def test_a_location_whose_key_holds_a_nul_neither_blocks_adoption_nor_the_gc(
    tmp_path_factory, request
):
    """Defect: a record that kinto-attachment let a client create with a ``location`` such as
    ``{base_url}a%00b.txt`` makes adoption retain the key ``"a\\x00b.txt"``, which PostgreSQL
    refuses to store (JSONB has no ``\\u0000``): adoption raises at every run, so ``kinto
    migrate`` fails for good, and the collector, which adopts before its first orphan pass,
    never collects orphans again (the command exits 1, "storage backend lost").

    Expected: such a location is reported (as outside the store, like any location that
    names no possible key) and adoption completes."""
    kinto = prepared(cached_app("postgresql", tmp_path_factory, request))
    legacy_record(kinto, "r1", link="8")
    base_url = kinto.registry.attachment_settings.base_url
    set_location(kinto, "nul", base_url + "a%00b.txt")
    try:
        report = adoption.adopt(kinto.registry)
    except Exception as error:  # noqa: BLE001
        pytest.fail(f"adoption failed: {error!r}"[:300])
    assert adoption.done(kinto.registry)
    assert report.linked == 1


@pytest.mark.parametrize("grace", ["0", "60"], ids=["deleted-at-once", "after-a-grace"])
def test_deleting_the_original_keeps_the_file_its_copy_names_under_a_previous_base_url(
    tmp_path_factory, request, grace
):
    """Defect: kinto-signer copies a record (no link) naming its file by the URL
    kinto-attachment wrote under a previous ``base_url`` (the CDN moved). Adoption makes
    the original's row a link (``_names`` accepts a path ending with the key), but for the
    copy it only reports the location as outside ``base_url`` and retains nothing (step 2
    never applies the rule step 1 applies). Deleting the original then deletes the file
    the copy still names (clients read ``location`` and fetch it), whereas with a current
    URL the same copy's file is retained and kept
    (``test_deleting_the_original_keeps_the_retained_file_its_copy_names``).

    Expected: a copy whose location names a key of the store the way an adopted link's
    record does (path ending with the key) keeps that key: retained, never deleted."""
    settings = {
        "kinto.attachment.gc.orphans_grace_seconds": "60",
        "kinto.attachment.gc.replaced_grace_seconds": grace,
    }
    kinto = prepared(cached_app("memory", tmp_path_factory, request, **settings))
    store = kinto.registry.attachment_store
    original = legacy_record(kinto, "r1", link="8")
    moved = "https://old-cdn.example.com/" + original["key"]
    storage = kinto.registry.storage
    parent_id = "/buckets/blog/collections/articles"
    attachment = {k: v for k, v in original.items() if k != "key"} | {"location": moved}
    with transaction.manager:
        record = storage.get(resource_name="record", parent_id=parent_id, object_id="r1")
        storage.update(
            resource_name="record",
            parent_id=parent_id,
            object_id="r1",
            obj={**record, "attachment": attachment},
        )
        storage.create(
            resource_name="record",
            parent_id=parent_id,
            obj={"id": "copy", "attachment": attachment},
        )
    report = adoption.adopt(kinto.registry)
    assert report.linked == 1

    kinto.app.delete(kinto.record_url("r1"), headers=ALICE)
    gc.collect(kinto.registry, now=gc.data_file_entries.msec_time() + 120 * 1000)

    assert store.exists(original["key"]), "the file a copy still names was deleted"
