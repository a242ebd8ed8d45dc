"""Switching a kinto-attachment installation to this package, as operators do it: records
with any ``attachment`` value, copies, moved CDNs, adoption while the servers serve or on two
nodes at once."""

import contextlib
import subprocess
import threading
import time

import pytest
import transaction

from kinto_attachment import adoption, gc
from kinto_attachment.state import legacy, links

from .conftest import (
    ALICE,
    Kinto,
    build_settings,
    cached_app,
    flush,
    make_app,
    own_database,
    postgresql_ini,
)
from .support.live import BIN
from .test_adoption import (
    age,
    legacy_record,
    legacy_row,
    prepared,
    store_file,
)


PARENT = "/buckets/blog/collections/articles"
FAR_FUTURE_MS = 3000 * 86400 * 1000


def memory_app(tmp_path_factory, request, **settings):
    return prepared(cached_app("memory", tmp_path_factory, request, **settings))


def set_attachment(kinto, record_id, attachment, collection="articles"):
    """What kinto-attachment let any client do (a PUT creating a record with any
    ``attachment`` value: its listener only compares two truthy values on updates), and what
    kinto-signer does on any server: a record written straight into Kinto's storage."""
    parent = f"/buckets/blog/collections/{collection}"
    storage = kinto.registry.storage
    with transaction.manager:
        try:
            record = storage.get(resource_name="record", parent_id=parent, object_id=record_id)
        except Exception:
            record = {"id": record_id}
        storage.update(
            resource_name="record",
            parent_id=parent,
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


@pytest.mark.parametrize("randomize", ["true", "false"])
def test_a_file_uploaded_while_the_first_adoption_runs_is_not_kept_forever(
    tmp_path_factory, request, monkeypatch, randomize
):
    """``kinto migrate`` while the servers serve (as the docs allow): an upload commits
    between adoption's reading of the references and its listing of the store. Its file,
    named by this instance's tag (never kinto-attachment's), was retained at adoption: once
    its record replaced it, it was never deleted, by the replacement nor by the collector.

    Found by review (2026-12-05): with ``randomize = false`` (kinto-attachment's
    folder-named setups, kept by operators who switch), the name is the client's and carries
    no tag: it was retained all the same (and listed as kinto-attachment's). Adoption now
    looks again, in the transaction that retains a batch, whether a link names each key."""
    kinto = memory_app(tmp_path_factory, request, **{"kinto.attachment.randomize": randomize})
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


@pytest.mark.postgresql
def test_adoption_run_against_an_empty_store_does_not_doom_the_kept_files(pg_url, tmp_path):
    """Found by review (2026-12-05).

    ``kinto migrate`` run where the store is not the servers' (a one-off job or
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
        age(kinto, key)

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
    """Found by review (2026-12-05).

    Kinto-attachment can leave two rows naming one key (``randomize = false``: a
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
    set_attachment(kinto, "old", {k: v for k, v in shared.items() if k != "key"})
    storage = kinto.registry.storage
    with transaction.manager:
        legacy_row(storage, "old", shared["key"])
    report = adoption.adopt(kinto.registry)
    assert report.linked == 2
    with transaction.manager:
        assert len([k for k in links.all_links(storage) if k["key"] == shared["key"]]) == 2

    kinto.app.delete(kinto.record_url("old"), headers=ALICE)

    assert store.exists(shared["key"]), "the file another record's link names was deleted"
    response = kinto.app.get(kinto.record_url("new") + "/attachment", headers=ALICE, status="*")
    assert response.status_int == 200


def test_adoption_keeps_the_link_of_a_record_whose_location_is_its_bare_key(
    tmp_path_factory, request
):
    """Found by review (2026-12-05).

    Kinto-attachment's ``base_url`` defaults to empty (pyramid_storage's
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
    bare = {k: v for k, v in attachment.items() if k != "key"} | {"location": attachment["key"]}
    set_attachment(kinto, "r1", bare)
    url = kinto.record_url("r1") + "/attachment"
    assert kinto.app.get(url, headers=ALICE).body == b"old content"  # Before adoption.

    report = adoption.adopt(kinto.registry)

    assert (report.linked, report.retained) == (1, 0), (report.linked, report.retained)
    response = kinto.app.get(url, headers=ALICE, status="*")
    assert response.status_int == 200, "served before adoption, a 404 after"


@pytest.mark.postgresql
def test_a_location_whose_key_holds_a_nul_neither_blocks_adoption_nor_the_gc(
    tmp_path_factory, request
):
    """Found by review (2026-12-05).

    A record that kinto-attachment let a client create with a ``location`` such as
    ``{base_url}a%00b.txt`` makes adoption retain the key ``"a\\x00b.txt"``, which PostgreSQL
    refuses to store (JSONB has no ``\\u0000``): adoption raises at every run, so ``kinto
    migrate`` fails for good, and the collector, which adopts before its first orphan pass,
    never collects orphans again (the command exits 1, "storage backend lost").

    Expected: such a location is reported (as outside the store, like any location that
    names no possible key) and adoption completes."""
    kinto = prepared(cached_app("postgresql", tmp_path_factory, request))
    legacy_record(kinto, "r1", link="8")
    base_url = kinto.registry.attachment_settings.base_url
    location = base_url + "a%00b.txt"
    set_attachment(kinto, "nul", {"filename": "x.txt", "location": location, "size": 1})
    try:
        report = adoption.adopt(kinto.registry)
    except Exception as error:  # noqa: BLE001
        pytest.fail(f"adoption failed: {error!r}"[:300])
    assert adoption.done(kinto.registry)
    assert report.linked == 1


def test_a_location_urlsplit_refuses_neither_blocks_adoption_nor_the_gc(tmp_path_factory, request):
    """Found by review (2026-12-05).

    ``adoption.copies`` now looks, for every record whose ``location`` is outside
    ``base_url``, for the keys its path names (``_linked_keys`` -> ``_path_keys`` ->
    ``urllib.parse.urlsplit``). ``urlsplit`` raises ``ValueError`` on a netloc with an
    unbalanced bracket (``https://[cdn/x.txt``), which kinto-attachment let any client
    write: adoption raises at every run (``kinto migrate`` fails for good) and the collector,
    which adopts before its first orphan pass, never collects orphans again. Before the
    change such a record was only reported as ``foreign``. Expected: a location ``urlsplit``
    refuses names no key (``_path_keys`` returns an empty set, as for a ``%00``), it is
    reported as foreign, and adoption completes."""
    kinto = prepared(cached_app("memory", tmp_path_factory, request))
    legacy_record(kinto, "r1", link="8")
    odd = {"filename": "x.txt", "location": "https://[cdn/x.txt", "size": 1}
    set_attachment(kinto, "odd", odd)
    try:
        report = adoption.adopt(kinto.registry)
    except ValueError as error:
        pytest.fail(f"adoption failed: {error!r}")
    assert adoption.done(kinto.registry)
    assert report.linked == 1
    assert any(location == odd["location"] for _, location in report.foreign)
    gc.collect(kinto.registry)  # And the collector's orphan pass runs.


@pytest.mark.postgresql
def test_kinto_migrate_dry_run_does_not_run_the_collector(tmp_path):
    """Found by review (2026-12-05).

    ``kinto migrate`` builds the whole Kinto application (``bootstrap``), which fires
    ``ApplicationCreated``: our subscriber starts the servers' periodic collector thread
    (``gc.start_collector``, every ``data_files.gc_interval_seconds``, 300 s by default) and
    the events' dispatcher in the *migrate* process. Unlike ``kinto-attachment-gc``
    (``state.shared.registry_of`` stops them), nothing stops them there. A migration that
    lasts longer than the interval (a large store listed by step 3, a busy database) gets a
    real, non-dry ``gc.collect(orphans=True)`` in the background: it adopts for real,
    deletes replaced files and orphans, from the migrate host.

    With ``--dry-run`` this breaks the promise the docs make ("counts what it would do"):
    an operator who runs ``kinto migrate --dry-run`` to check before switching (while
    kinto-attachment nodes still serve) finds kinto-attachment's rows adopted, the adoption
    marker written (so the servers' collector never adopts again) and files deleted.

    Here the dry run is held up a few seconds (a database lock on Kinto's ``metadata``
    table, which only the migration reads: what a long migration looks like), with
    ``data_files.gc_interval_seconds = 1``. Expected: a dry run changes nothing (the
    ``migrate`` command, ``registry.command == "migrate"``, starts no collector nor
    dispatcher, or stops them as ``registry_of`` does)."""
    import psycopg2

    with own_database("review_adoption_dry") as url:
        files = tmp_path / "files"
        kinto = Kinto(make_app(build_settings("postgresql", str(files), pg=url)), str(files))
        kinto.create_collection()
        legacy_record(kinto, "r1", link="8")
        with transaction.manager:
            assert len(list(legacy.every(kinto.registry.storage))) == 1

        ini = tmp_path / "kinto.ini"
        ini.write_text(
            postgresql_ini(url, files) + "kinto.attachment.data_files.gc_interval_seconds = 1\n"
        )
        blocker = psycopg2.connect(url)
        try:
            with blocker.cursor() as cursor:
                cursor.execute("LOCK TABLE metadata IN ACCESS EXCLUSIVE MODE")
            command = [str(BIN / "kinto"), "migrate", "--ini", str(ini), "--dry-run"]
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            time.sleep(4)  # A migration that takes a while.
        finally:
            blocker.rollback()
            blocker.close()
        out, err = process.communicate(timeout=120)

        with transaction.manager:
            rows = list(legacy.every(kinto.registry.storage))
            ours = list(links.all_links(kinto.registry.storage))
        kinto.registry.attachment_adopted = False
        marked = adoption.done(kinto.registry)
    assert process.returncode == 0, err[-2000:]
    assert (len(rows), len(ours), marked) == (1, 0, False), (
        "kinto migrate --dry-run adopted kinto-attachment's data "
        f"(rows left {len(rows)}, our links {len(ours)}, marker {marked})"
    )


@pytest.mark.parametrize("how", ["delete", "replace"])
def test_before_adoption_removing_one_of_two_records_sharing_a_legacy_file_keeps_it(
    tmp_path_factory, request, how
):
    """Found by review (2026-12-05).

    kinto-attachment can leave two rows naming one key (``randomize = false``: a record
    whose file was lost keeps its row, the next upload of that name takes the free name).
    Adoption knows it (``adoption.rows._shared_kept`` retains such a key, and
    ``test_deleting_one_of_two_adopted_records_sharing_a_file_keeps_it`` checks it), but
    until adoption has run (the servers are switched, ``kinto migrate`` not run yet, and the
    servers' collector adopts only at its first orphan pass) the deletion path reads the
    rows as links (``links.pop`` -> ``legacy.links``) and retires their keys
    (``lifecycle.discard``) without asking whether another row still names the key:
    deleting, or replacing the file of, one record deletes the file the other record still
    names (its download is a 404 for good). With a grace period the collector's
    ``_collect_replaced`` deletes it too: it looks at retained keys and our links, never at
    kinto-attachment's rows.

    Expected: a key that another kinto-attachment row (or link) still names is not deleted
    when one of its records goes or gets a new file, before adoption as after it."""
    kinto = memory_app(tmp_path_factory, request)  # Grace 0 (conftest): deleted at commit.
    store = kinto.registry.attachment_store
    shared = legacy_record(kinto, "new", content=b"the new record's file", link="8")
    kinto.app.put_json(kinto.record_url("old"), {"data": {}}, headers=ALICE)
    set_attachment(kinto, "old", {k: v for k, v in shared.items() if k != "key"})
    with transaction.manager:
        legacy_row(kinto.registry.storage, "old", shared["key"])

    if how == "delete":
        kinto.app.delete(kinto.record_url("old"), headers=ALICE)
    else:
        kinto.upload(kinto.record_url("old"), b"another file", "other.txt")

    assert store.exists(shared["key"]), "the file another record (and its row) names was deleted"
    url = kinto.record_url("new") + "/attachment"
    assert kinto.app.get(url, headers=ALICE, status="*").status_int == 200


def test_a_location_naming_a_too_long_file_name_neither_blocks_adoption_nor_the_gc(
    tmp_path_factory, request
):
    """Found by review (2026-12-05).

    A record that kinto-attachment let a client create with any ``attachment`` (its
    listener only compares two truthy values on updates) may name, under ``base_url``, a
    file name longer than the file system allows (255 bytes). On the local store
    ``exists()`` of that key raises ``OSError(ENAMETOOLONG)``, not ``FileNotFoundError``:
    ``references.in_store`` only catches ``ValueError``, so the first adoption's store check
    (``unreferenced.store_mismatch`` -> ``references.sample_in_store``) raises at every run.
    ``kinto migrate`` fails for good, and the collector (``gc.store_check.check_store``, the
    same sample, before anything) fails at every round: orphans are never collected again.
    Same class as the ``%00`` and ``https://[cdn`` locations of test_adoption_hostile.

    Expected: such a key counts as not in the store (as a key that would climb out of it),
    adoption completes and the collector runs."""
    kinto = memory_app(tmp_path_factory, request)
    legacy_record(kinto, "r1", link="8")
    base_url = kinto.registry.attachment_settings.base_url
    odd = {"filename": "x.txt", "location": base_url + "a" * 300 + ".txt", "size": 1}
    set_attachment(kinto, "odd", odd)
    try:
        report = adoption.adopt(kinto.registry)
        gc.collect(kinto.registry)
    except OSError as error:
        pytest.fail(f"adoption or the collector failed: {error!r}"[:300])
    assert report.linked == 1
    assert adoption.done(kinto.registry)


def test_a_few_lost_files_sorting_first_do_not_stop_adoption_and_the_collector_for_good(
    tmp_path_factory, request
):
    """Found by review (2026-12-05).

    Adoption's store check (``unreferenced.store_mismatch``) and the collector's
    (``gc.store_check.check_store``) look for the *first* 32 files the references name
    (``references.sample_in_store``: records bucket by bucket, collection by collection, in
    id order), not for a sample of them. Files lost for real (kinto-attachment deletes the
    old file before its refused replacements; an old folder removed by hand) are
    clustered: those of one old collection. When that collection sorts first, more than
    half of the sample is missing, and although the store holds nearly every file records
    name (100 of 117 here), adoption says the store "is not the servers' own", never
    completes, and every orphan pass of the servers' collector is refused, at every run,
    for as long as those records exist: the collector is off for good, with an error that
    blames a configuration that is right. The docs promise the check keeps adoption from
    listing a store that does not hold "most of the files records and links name".

    Expected: a store that holds most of the files the references name passes (sample
    spread over the references, e.g. a reservoir sample, or count every one)."""
    kinto = memory_app(tmp_path_factory, request)
    store = kinto.registry.attachment_store
    kinto.create_collection("archive", "old")
    storage = kinto.registry.storage
    for i in range(17):  # Files lost: the records still name them.
        record_id = f"lost{i:02d}"
        kinto.app.put_json(
            f"/v1/buckets/archive/collections/old/records/{record_id}",
            {"data": {}},
            headers=ALICE,
        )
        with transaction.manager:
            parent = "/buckets/archive/collections/old"
            record = storage.get(resource_name="record", parent_id=parent, object_id=record_id)
            location = store.url(f"archive/old/{record_id}.txt")
            storage.update(
                resource_name="record",
                parent_id=parent,
                object_id=record_id,
                obj={**record, "attachment": {"location": location, "filename": "x.txt"}},
            )
    for i in range(100):
        legacy_record(kinto, f"r{i:03d}", link="8")

    report = adoption.adopt(kinto.registry)

    assert report.store_mismatch is None, report.store_mismatch
    assert adoption.done(kinto.registry)
    gc.collect(kinto.registry)  # Not refused.


@pytest.mark.postgresql
def test_deleting_both_records_sharing_a_legacy_file_at_once_leaks_it_for_good(
    tmp_path_factory, request, monkeypatch
):
    """Found by review (2026-12-05).

    ``uploads.lifecycle.discard`` keeps a blob of kinto-attachment's rows that another row
    still names (``legacy.naming``), read under READ COMMITTED without any lock on the key.

    Two records (of two collections: no common row lock) name one file, each with its
    kinto-attachment row. Both are deleted at the same time: each transaction has removed
    its own row, and each still sees the other's (not committed yet): both keep the file.
    Once both have committed nothing names it; the file was not recorded as replaced, so no
    later check deletes it. The collector's first orphan pass then runs the first adoption,
    which retains every unreferenced file it finds (``keep_unreferenced_files``): the file
    is kept for good. Before the fix both deletes deleted it.

    Expected: once both records are gone their file goes too (e.g. a shared key is recorded
    as replaced, and ``gc._collect_replaced`` keeps it only while ``legacy.naming`` or a link
    still names it; or the key is locked before the rows naming it are read)."""
    kinto = prepared(cached_app("postgresql", tmp_path_factory, request))
    kinto.app.put_json("/v1/buckets/blog/collections/other", {}, headers=ALICE, status=201)
    store = kinto.registry.attachment_store
    key = store_file(kinto, b"shared")
    legacy_record(kinto, "r1", key=key)
    legacy_record(kinto, "r2", key=key, collection="other")
    first, second = (
        f"/v1/buckets/blog/collections/{c}/records/{r}"
        for c, r in (("articles", "r1"), ("other", "r2"))
    )

    barrier = threading.Barrier(2, timeout=10)
    original = legacy.naming
    looked = threading.local()

    def naming(storage, keys, batch=1000):
        if not getattr(looked, "once", False):  # Each delete's first look, not a second.
            looked.once = True
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()  # Both rows removed (uncommitted) before either looks.
        return original(storage, keys, batch)

    monkeypatch.setattr(legacy, "naming", naming)
    failures = []

    def delete(url):
        try:
            kinto.app.delete(url, headers=ALICE, status=200)
        except Exception as error:  # pragma: no cover (reported below)
            failures.append(error)

    threads = [threading.Thread(target=delete, args=(url,)) for url in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    monkeypatch.undo()
    assert not failures, failures
    assert not barrier.broken, "the two deletes did not run side by side"
    with transaction.manager:
        assert not list(legacy.every(kinto.registry.storage))
        assert not links.linked_among(kinto.registry.storage, [key])

    # Whatever the collector does next (its first orphan pass adopts first).
    kinto.registry.attachment_adopted = False
    gc.collect(kinto.registry, now=int((time.time() + 10 * 86400) * 1000))
    assert adoption.done(kinto.registry)
    with transaction.manager:
        retained = links.is_retained(kinto.registry.storage, key)
    assert not store.exists(key) and not retained, (
        "the file of two deleted records is still stored"
        + (", retained for good by adoption" if retained else "")
    )


def later(kinto):
    return gc.data_file_entries.msec_time() + FAR_FUTURE_MS


# Step 2 run again after the switch, on records of ours.


@pytest.mark.parametrize("randomize", ["true", "false"])
def test_a_later_kinto_migrate_never_keeps_our_own_files_a_signer_copy_names(
    tmp_path_factory, request, randomize
):
    """Found by review (2026-12-05).

    Adoption runs at every ``kinto migrate`` (deploys run it each time) and "does nothing
    once everything is ours" (``adoption/migration.py``). Yet its step 2
    (``adoption/copies.py:keep_unlinked_files``) still retains, at every run, the file of
    every record that has an attachment and no link: after the switch, that is every copy
    kinto-signer made of a record uploaded *through this plugin* (preview/main collections).
    Our own files (their names carry the instance's tag) are retained for good: deleting the
    original and every copy never deletes the file, neither at once nor by the collector
    (retained keys are skipped by ``lifecycle.unreferenced`` and are references for the orphan
    pass). Step 3 already leaves tagged names out for this very reason
    (``unreferenced.py``: "Retained, an earlier make serve's files were kept for good").
    Also contradicts docs/migrating.rst ("Replacing or deleting the original deletes its file
    as kinto-attachment does, unless keep_old_files"): that now depends on whether a deploy
    ran ``kinto migrate`` between the copy and the deletion.

    It was: the file stays forever; each migrate reports it as "Records without a link
    whose files were kept". Fixed (as suggested): in step 2, skip keys whose name carries an
    instance tag (``instance.tag_of``), as step 3 does (or run step 2 only until adoption is
    done, the later runs only adopting rows a kinto-attachment node still wrote).

    Found by review (2026-12-05): names given by their clients (``randomize = false``, kept
    by operators of kinto-attachment's folder-named setups) carry no tag, and were retained
    for good likewise. Fixed: a key an upload's link names (it carries ``since``) is ours."""
    kinto = memory_app(tmp_path_factory, request, **{"kinto.attachment.randomize": randomize})
    legacy_record(kinto, "r0", link="8")
    adoption.adopt(kinto.registry)  # The first kinto migrate: done.
    assert adoption.done(kinto.registry)

    uploaded = kinto.upload(kinto.record_url("r1"), b"ours, after the switch", "new.txt").json
    key = kinto.key_of(uploaded["location"])
    kinto.app.put_json("/v1/buckets/blog/collections/preview", {}, headers=ALICE)
    set_attachment(kinto, "r1", uploaded, collection="preview")  # kinto-signer's copy.

    again = adoption.adopt(kinto.registry)  # The next deploy's kinto migrate.

    kinto.app.delete(kinto.record_url("r1", collection="preview"), headers=ALICE)
    kinto.app.delete(kinto.record_url("r1"), headers=ALICE)
    store = kinto.registry.attachment_store
    if store.exists(key):  # Not deleted with its record: the collector's, then.
        age(kinto, key)
        gc.collect(kinto.registry, now=later(kinto))
    assert not store.exists(key), (
        f"our own file, named by nothing, is kept forever (retained by a later migrate: "
        f"unlinked={again.unlinked})"
    )


# What the dry run reports.


def test_dry_run_counts_a_copy_of_a_file_whose_record_is_gone_as_the_run_does(
    tmp_path_factory, request
):
    """Found by review (2026-12-05).

    docs/migrating.rst: "``kinto migrate --dry-run`` counts what it would do", and the
    operator's checklist relies on it. A kinto-attachment row whose record is gone (Kinto's
    ``kinto delete-collection`` deletes records without events, so kinto-attachment's rows
    and files stay) names a file that a kinto-signer copy in another collection still names.

    The run retains the file in step 1 (record gone: ``rows._adopt_row``) and step 2 then
    skips the copy (``links.is_retained``): ``unlinked == 0``. The dry run retains nothing in
    step 1, and step 2 (``copies._keep_files_of``) only knows the rows of the copy's own
    collection (``pretended``): it counts the copy, ``unlinked == 1``. It was: dry run
    (retained, unlinked) = (1, 1), the run (1, 0). Fixed (as suggested): in a dry run, remember the
    keys step 1 would retain (and link) and let step 2 treat them as retained
    (``would_retain``)."""
    kinto = memory_app(tmp_path_factory, request)
    original = legacy_record(kinto, "r1", link="8")
    kinto.app.put_json("/v1/buckets/blog/collections/main", {}, headers=ALICE)
    copy = {k: v for k, v in original.items() if k != "key"}
    set_attachment(kinto, "r1", copy, collection="main")  # kinto-signer's copy.
    with transaction.manager:  # ``kinto delete-collection``'s way: no event, rows stay.
        kinto.registry.storage.delete(resource_name="record", parent_id=PARENT, object_id="r1")

    dry = adoption.adopt(kinto.registry, dry_run=True)
    done = adoption.adopt(kinto.registry)

    assert kinto.registry.attachment_store.exists(original["key"])
    assert (dry.linked, dry.retained, dry.unlinked) == (done.linked, done.retained, done.unlinked)


# Adoption while the servers serve.


def _rows_in_order(kinto, *record_ids):
    """kinto-attachment rows for the records ``record_ids``, with ids in that order (the
    order adoption reads them in: ``paging`` sorts by id)."""
    store = kinto.registry.attachment_store
    keys = {}
    for position, record_id in enumerate(record_ids):
        attachment = legacy_record(kinto, record_id, link=None)
        keys[record_id] = attachment["key"]
        with transaction.manager:
            kinto.registry.storage.create(
                resource_name="",
                parent_id=legacy.PARENT_ID,
                obj={
                    "id": f"{position:08d}-0000-4000-8000-000000000000",
                    "location": attachment["key"],
                    "bucket_uri": "/buckets/blog",
                    "collection_uri": PARENT,
                    "record_uri": f"{PARENT}/records/{record_id}",
                },
            )
    assert all(store.exists(key) for key in keys.values())
    return keys


@pytest.mark.postgresql
def test_adoption_and_a_batch_of_record_writes_never_deadlock(
    tmp_path_factory, request, monkeypatch
):
    """Found by review (2026-12-05).

    docs/migrating.rst: adoption runs "in their own transactions (safe while the server
    serves)"; ``locks.py``: "Since every path is locked in the same order ... our locks cannot
    deadlock with one another" and ``write_locks.lock_batch`` sorts a batch's paths because
    "two batches writing r1, r2 and r2, r1 would each wait for the other (PostgreSQL aborts
    one: a 503)".

    Adoption's step 1 (``rows.adopt_rows`` -> ``_adopt_row``) locks the record of each row of a
    batch of 100, in the rows' id order (random uuids), and holds every lock until the
    batch commits. A ``POST /batch`` of the servers that writes two of those records locks
    them in sorted order. Adoption holds rB and wants rA, the batch holds rA and wants rB:
    PostgreSQL detects the deadlock and aborts one of them, a 503 for the client or a
    traceback for ``kinto migrate`` (with the memory backend, whose collector adopts in the
    server, nothing detects it: both hang for good).

    Fixed (as suggested): lock the records of a batch of rows sorted by path (sort the batch by
    ``(bucket_id, collection_id, record_id)`` before ``_adopt_row``), or adopt each row in a
    transaction of its own."""
    kinto = prepared(cached_app("postgresql", tmp_path_factory, request))
    _rows_in_order(kinto, "rB", "rA")  # Adoption reads rB's row first.
    adoption_holds_rb, batch_holds_ra = threading.Event(), threading.Event()
    still_there, hold = legacy.still_there, kinto.registry.attachment_locks.hold
    batch_thread = {}

    adoption_held = set()

    def paused_after_locking(storage, link):
        if link["record_id"] == "rB":
            adoption_holds_rb.set()
            if "rA" not in adoption_held:  # Adoption locked rB first: let the batch take rA.
                batch_holds_ra.wait(10)
        return still_there(storage, link)

    def hold_and_tell(path, *args, **kwargs):
        hold(path, *args, **kwargs)
        if threading.current_thread() is batch_thread.get("thread") and path[-1:] == ("rA",):
            batch_holds_ra.set()
        elif threading.current_thread() is batch_thread.get("adoption"):
            adoption_held.add(path[-1])

    monkeypatch.setattr(legacy, "still_there", paused_after_locking)
    monkeypatch.setattr(kinto.registry.attachment_locks, "hold", hold_and_tell)
    outcome = {}

    def migrate():
        try:
            outcome["adoption"] = adoption.adopt(kinto.registry)
        except Exception as error:  # noqa: BLE001 (reported below)
            outcome["adoption"] = error

    def batch():
        adoption_holds_rb.wait(10)
        body = {
            "defaults": {"method": "PATCH"},
            "requests": [
                {"path": f"{PARENT}/records/{rid}", "body": {"data": {"title": "new"}}}
                for rid in ("rA", "rB")
            ],
        }
        response = kinto.app.post_json("/v1/batch", body, headers=ALICE, status="*")
        statuses = [r["status"] for r in response.json.get("responses", [])]
        outcome["batch"] = (response.status_int, statuses)

    threads = [threading.Thread(target=migrate), threading.Thread(target=batch)]
    batch_thread["adoption"], batch_thread["thread"] = threads
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    monkeypatch.undo()
    assert not any(thread.is_alive() for thread in threads), "adoption and the batch hang"
    assert not isinstance(outcome["adoption"], Exception), repr(outcome["adoption"])[:300]
    assert outcome["batch"] == (200, [200, 200]), outcome["batch"]


# kinto migrate as a careless operator runs it.


def _kinto_migrate(ini, *args):
    command = [str(BIN / "kinto"), "migrate", "--ini", str(ini), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.postgresql
def test_kinto_migrate_dry_run_on_a_database_of_an_older_kinto_is_no_traceback(tmp_path):
    """Found by review (2026-12-05).

    docs/migrating.rst tells the operator to start with ``kinto migrate --dry-run``, and
    supports kinto-attachment 6.x, which ran on Kinto 13 (storage schema 20: the table was
    ``records``, renamed ``objects`` by Kinto 14's migration 20 -> 21). Switching plugins is
    often done with a Kinto upgrade: Kinto's own dry run only says which migrations it
    would run. ``Migration.initialize_schema`` (``adoption/migration.py``) guards a dry run
    on a database without Kinto's tables (``_has_tables``: installed version None) but not
    one whose schema is older than Kinto's: adoption then queries ``objects``, which is not
    there yet, and ``kinto migrate --dry-run`` ends with a traceback (``UndefinedTable``).

    Fixed (as suggested): in a dry run, adopt only when Kinto's storage schema is the current one
    (``installed_version == storage.schema_version``); otherwise log that adoption will be
    counted once Kinto's schema is migrated."""
    from .conftest import build_settings, make_app
    from .support.legacy import query

    with own_database("review_adoption_old") as url:
        make_app(build_settings("postgresql", str(tmp_path / "files"), pg=url))  # Schema.
        query(
            url,
            """
            ALTER TABLE objects RENAME COLUMN resource_name TO collection_id;
            ALTER TABLE objects RENAME TO records;
            ALTER TABLE timestamps RENAME COLUMN resource_name TO collection_id;
            DELETE FROM metadata WHERE name = 'storage_schema_version';
            INSERT INTO metadata (name, value) VALUES ('storage_schema_version', '20');
            """,
        )
        ini = tmp_path / "kinto.ini"
        ini.write_text(postgresql_ini(url, tmp_path / "files"))
        done = _kinto_migrate(ini, "--dry-run")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-1500:]


@pytest.mark.postgresql
def test_kinto_migrate_of_a_read_only_node_neither_writes_nor_fails(tmp_path):
    """Found by review (2026-12-05).

    Kinto's ``kinto migrate`` honours ``readonly = true`` (read-only nodes, often on a
    read replica, as Remote Settings' readers run): "Cannot migrate the storage backend
    while in readonly mode", logged, and it goes on (exit 0): containers that run
    ``kinto migrate`` before they serve start all the same. This plugin's migration
    (``adoption/migration.py:Migration.initialize_schema``) ignores the setting: it creates
    its index, makes the instance's tag and adopts, all writes. On a read replica each of
    them fails: ``kinto migrate`` ends with a traceback (exit 1) and the read-only node does
    not start; on a read-write database, a node configured read-only writes.

    Here: a database whose sessions are read-only (what a replica is to its clients) and
    ``kinto.readonly = true``. Fixed (as suggested): when ``readonly`` is set, log that adoption
    (and the index) are left to a read-write node's ``kinto migrate``, and return."""
    from .conftest import build_settings, make_app

    with own_database("review_adoption_ro") as url:
        make_app(build_settings("postgresql", str(tmp_path / "files"), pg=url))  # Schema.
        (tmp_path / "files").mkdir(exist_ok=True)
        replica = url + "?options=-c%%20default_transaction_read_only%%3Don"  # configparser
        ini = tmp_path / "reader.ini"
        ini.write_text(postgresql_ini(replica, tmp_path / "files") + "kinto.readonly = true\n")
        done = _kinto_migrate(ini)
    assert "Cannot migrate the storage backend while in readonly mode" in done.stderr
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-1500:]
