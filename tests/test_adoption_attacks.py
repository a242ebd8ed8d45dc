"""The adoption of kinto-attachment data (``kinto migrate``) against an adversarial review's
attacks (2026-12-05): copies, later runs, two nodes, kills, replacements meanwhile, odd
locations and ids. Those marked HELD are attacks the code withstood.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import transaction

from kinto_attachment import adoption, gc
from kinto_attachment.adoption import copies, rows, unreferenced
from kinto_attachment.state import legacy, links

from .conftest import (
    ALICE,
    Kinto,
    build_settings,
    cached_app,
    dispose,
    make_app,
    own_database,
    postgresql_ini,
)
from .support.live import BIN
from .test_adoption import age, legacy_record, legacy_row, prepared, store_file
from .test_adoption_hostile import memory_app, set_attachment


PARENT = "/buckets/blog/collections/articles"
FAR_FUTURE_MS = 3000 * 86400 * 1000


def later():
    return gc.data_file_entries.msec_time() + FAR_FUTURE_MS


def all_rows(kinto):
    with transaction.manager:
        return list(legacy.every(kinto.registry.storage))


def retained_keys(kinto):
    with transaction.manager:
        return {r["key"] for r in links.retained(kinto.registry.storage)}


def linked_keys(kinto):
    with transaction.manager:
        return {link["key"] for link in links.all_links(kinto.registry.storage)}


def collect_everything(kinto):
    """The collector, long after everything (every grace period past)."""
    kinto.registry.attachment_adopted = False  # As a collector of another process.
    return gc.collect(kinto.registry, now=later())


# 1. Copies naming a file by a URL written under an older base_url.


#: (this plugin's base_url, kinto-attachment's): the CDN now serves the store from the root;
#: the operator dropped the trailing slash (kinto-attachment's urljoin rule made it matter).
MOVES = {
    "cdn-root": ("https://files.example.com/", "https://files.example.com/attachments/"),
    "slash-dropped": ("https://files.example.com/files", "https://files.example.com/files/"),
}


@pytest.mark.parametrize("grace", ["0", "60"], ids=["deleted-at-once", "after-a-grace"])
@pytest.mark.parametrize("move", list(MOVES))
def test_copy_naming_its_file_under_an_older_base_url_below_the_current_one_keeps_it(
    tmp_path_factory, request, grace, move
):
    """Found by review (2026-12-05).

    kinto-attachment wrote ``location = urljoin(old base_url, key)``; this plugin's
    ``base_url`` differs, and the old locations still lie below its prefix (``cdn-root``:
    ``.../attachments/`` then ``.../``; ``slash-dropped``: ``.../files/`` then ``.../files``).

    The original has its kinto-attachment row: adoption makes it our link (the path ends
    with the key, ``locations.names``), and its download keeps working. kinto-signer's copy
    (another collection, no row) names the same file by the same URL. docs/migrating.rst:
    "a record whose link names its file under another, older, URL ... keeps its link, and a
    copy naming that file by such a URL keeps it too". Deleting the original must not delete
    the file its copy names (as with an older URL on another host, which held). It was: the
    copy's location read as a key under the current ``base_url`` (``attachments/K``, no such
    file) was retained instead of ``K``, which went with the original. Fixed: a copy keeps
    every key a link names by step 1's rule, and the key under ``base_url`` if it is stored."""
    base_url, old_base_url = MOVES[move]
    settings = {
        "kinto.attachment.base_url": base_url,
        "kinto.attachment.gc.replaced_grace_seconds": grace,
    }
    kinto = memory_app(tmp_path_factory, request, **settings)
    store = kinto.registry.attachment_store
    content = b"the file both records name"
    key = store_file(kinto, content)
    old_location = old_base_url + key
    legacy_record(kinto, "r1", content, link="8", location=old_location, key=key)
    kinto.app.put_json("/v1/buckets/blog/collections/preview", {}, headers=ALICE)
    legacy_record(
        kinto, "r1", content, link=None, location=old_location, key=key, collection="preview"
    )
    url = kinto.record_url("r1") + "/attachment"
    assert kinto.app.get(url, headers=ALICE).body == content

    report = adoption.adopt(kinto.registry)
    assert report.linked == 1
    assert kinto.app.get(url, headers=ALICE).body == content

    kinto.app.delete(kinto.record_url("r1"), headers=ALICE)
    assert store.exists(key), (
        "deleting the original deleted the file its kinto-signer copy still names "
        f"(retained instead: {sorted(retained_keys(kinto))})"
    )
    gc.collect(kinto.registry, now=later(), orphans=False)  # The replaced files' pass.
    assert store.exists(key), (
        "the collector deleted the file a kinto-signer copy still names "
        f"(retained instead: {sorted(retained_keys(kinto))})"
    )


def test_held_copy_naming_its_file_under_the_current_base_url_keeps_it(tmp_path_factory, request):
    """HELD: the same with the current ``base_url`` (the usual case)."""
    kinto = memory_app(tmp_path_factory, request)
    store = kinto.registry.attachment_store
    original = legacy_record(kinto, "r1", link="8")
    kinto.app.put_json("/v1/buckets/blog/collections/preview", {}, headers=ALICE)
    legacy_record(kinto, "r1", link=None, key=original["key"], collection="preview")
    adoption.adopt(kinto.registry)
    kinto.app.delete(kinto.record_url("r1"), headers=ALICE)
    collect_everything(kinto)
    assert store.exists(original["key"])


# 2. A later ``kinto migrate`` and our own uploads named by their clients.


# 3. Two adoptions at once, on PostgreSQL (two nodes' ``kinto migrate``).


def bulk_legacy(kinto, count, prefix="r", collection="articles", copies_in=None):
    """``count`` records of kinto-attachment (a file, the record, its row), written in one
    transaction; with ``copies_in``, a kinto-signer copy of each in that collection. Returns
    ``{record_id: key}``."""
    store = kinto.registry.attachment_store
    storage = kinto.registry.storage
    parent = f"/buckets/blog/collections/{collection}"
    keys = {}
    for i in range(count):
        record_id = f"{prefix}{i:04d}"
        keys[record_id] = store_file(kinto, f"content of {record_id}\n".encode())
    with transaction.manager:
        for record_id, key in keys.items():
            size = len(f"content of {record_id}\n".encode())
            attachment = {
                "filename": "x.txt",
                "hash": "0" * 64,
                "location": store.url(key),
                "mimetype": "text/plain",
                "size": size,
            }
            storage.create(
                resource_name="record",
                parent_id=parent,
                obj={"id": record_id, "attachment": attachment},
            )
            legacy_row(
                storage, record_id, key, link="89"[len(record_id) % 2], collection=collection
            )
            if copies_in:
                storage.create(
                    resource_name="record",
                    parent_id=f"/buckets/blog/collections/{copies_in}",
                    obj={"id": record_id, "attachment": attachment},
                )
    return keys


@pytest.mark.postgresql
def test_held_two_nodes_adopting_at_once_lose_nothing(tmp_path):
    """HELD: two nodes' ``kinto migrate`` at once (several batches each, copies, a file
    kept by ``keep_old_files``): every file stays named by a link or a retained entry, and
    the collector afterwards deletes none of them."""
    base_path = str(tmp_path / "store")
    with own_database("review_adopt_two") as url:
        settings = build_settings("postgresql", base_path, pg=url)
        first = Kinto(make_app(settings), base_path)
        second = Kinto(make_app(settings), base_path)
        try:
            prepared(first)
            second.registry.attachment_adopted = False
            first.app.put_json("/v1/buckets/blog/collections/preview", {}, headers=ALICE)
            keys = bulk_legacy(first, 230, copies_in="preview")
            kept_by_keep_old_files = store_file(first, b"kept on purpose")
            outcomes = {}
            barrier = threading.Barrier(2)

            def run(name, node):
                barrier.wait(10)
                try:
                    outcomes[name] = adoption.adopt(node.registry)
                except Exception as error:  # noqa: BLE001 (reported below)
                    outcomes[name] = error

            threads = [
                threading.Thread(target=run, args=(name, node))
                for name, node in (("first", first), ("second", second))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(300)
            assert not any(t.is_alive() for t in threads), "the two adoptions hang"
            for outcome in outcomes.values():
                assert not isinstance(outcome, Exception), repr(outcome)[:500]
            assert outcomes["first"].linked + outcomes["second"].linked == len(keys)
            assert all_rows(first) == []
            assert linked_keys(first) == set(keys.values())
            # Each original has a copy: its file is retained (deleting it keeps the file).
            assert set(keys.values()) | {kept_by_keep_old_files} <= retained_keys(first)
            report = collect_everything(first)
            assert report.orphans == []
            store = first.registry.attachment_store
            first.app.delete(first.record_url("r0000"), headers=ALICE)
            assert all(store.exists(key) for key in keys.values())
            assert store.exists(kept_by_keep_old_files)
        finally:
            dispose(first, second)


# 4. ``kinto migrate`` killed (-9) half way, then run again, on PostgreSQL.


DRIVER = """
import sys, time
from pyramid.paster import bootstrap
from kinto_attachment.state import links

env = bootstrap(sys.argv[1])
add = links.add

def slow_add(*args, **kwargs):
    add(*args, **kwargs)
    print("add", flush=True)
    time.sleep(0.01)

links.add = slow_add
from kinto_attachment import adoption

adoption.adopt(env["registry"])
print("done", flush=True)
"""


@pytest.mark.postgresql
def test_held_kinto_migrate_killed_half_way_then_run_again_loses_nothing(tmp_path):
    """HELD: adoption killed (``kill -9``) in its second batch: what committed (the first
    batch) and what did not (the second, rolled back with the connection) leave every file
    named by a row, a link or a retained entry; adoption is not marked done, so the
    collector looks for no orphan; ``kinto migrate`` again ends as an uninterrupted run."""
    base_path = tmp_path / "store"
    with own_database("review_adopt_kill") as url:
        kinto = Kinto(
            make_app(build_settings("postgresql", str(base_path), pg=url)), str(base_path)
        )
        process = None
        try:
            prepared(kinto)
            kinto.app.put_json("/v1/buckets/blog/collections/preview", {}, headers=ALICE)
            keys = bulk_legacy(kinto, 160)
            copy_of = bulk_legacy(kinto, 5, prefix="c", copies_in="preview")
            kept = store_file(kinto, b"kept by keep_old_files")
            ini = tmp_path / "kinto.ini"
            ini.write_text(
                postgresql_ini(url, base_path)
                + "kinto.attachment.data_files.gc_interval_seconds = 0\n"
            )
            driver = tmp_path / "driver.py"
            driver.write_text(DRIVER)
            process = subprocess.Popen(
                [sys.executable, str(driver), str(ini)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            added = 0
            for line in process.stdout:
                added += line.startswith("add")
                if added >= 130:  # In the second batch of rows.
                    break
            assert added >= 130, "the driver ended before it was killed"
            os.kill(process.pid, signal.SIGKILL)
            process.wait(30)

            everything = {*keys.values(), *copy_of.values()}
            protected = linked_keys(kinto) | retained_keys(kinto)
            protected |= {row["key"] for row in all_rows(kinto)}
            assert everything <= protected
            assert 0 < len(all_rows(kinto)) < len(everything)
            kinto.registry.attachment_adopted = False
            assert not adoption.done(kinto.registry)

            migrate = subprocess.run(
                [str(BIN / "kinto"), "migrate", "--ini", str(ini)],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert migrate.returncode == 0, migrate.stderr[-2000:]
            assert all_rows(kinto) == []
            assert linked_keys(kinto) == everything
            assert set(copy_of.values()) | {kept} <= retained_keys(kinto)
            kinto.registry.attachment_adopted = False
            assert adoption.done(kinto.registry)
            for key in everything | {kept}:
                age(kinto, key)
            assert collect_everything(kinto).orphans == []
            store = kinto.registry.attachment_store
            assert all(store.exists(key) for key in everything | {kept})
        finally:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(30)
            dispose(kinto)


# 5. The collector after a partial adoption.


class Crash(Exception):
    pass


@pytest.mark.parametrize("dry_run", [False, True], ids=["collect", "dry-run"])
def test_held_the_collector_after_a_partial_adoption_deletes_no_legacy_file(
    tmp_path_factory, request, monkeypatch, dry_run
):
    """HELD: adoption crashed after its first batch (two rows made links); the files still
    named only by kinto-attachment's rows, by copies without a row, or by nothing (kept by
    ``keep_old_files``), all older than every grace period, survive the collector, which
    adopts before its orphan pass (a dry run looks for no orphan)."""
    kinto = memory_app(tmp_path_factory, request)
    for step in (rows, copies, unreferenced):
        monkeypatch.setattr(step, "BATCH", 2)
    kinto.app.put_json("/v1/buckets/blog/collections/preview", {}, headers=ALICE)
    keys = bulk_legacy(kinto, 6, copies_in="preview")
    unlinked = legacy_record(kinto, "bare", link=None)["key"]
    kept = store_file(kinto, b"kept by keep_old_files")
    everything = {*keys.values(), unlinked, kept}
    for key in everything:
        age(kinto, key)
    add, calls = links.add, []

    def crashing_add(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise Crash("kill -9")
        return add(*args, **kwargs)

    monkeypatch.setattr(links, "add", crashing_add)
    with pytest.raises(Crash):
        adoption.adopt(kinto.registry)
    monkeypatch.setattr(links, "add", add)
    assert len(all_rows(kinto)) == 4 and len(linked_keys(kinto)) == 2

    kinto.registry.attachment_adopted = False
    report = gc.collect(kinto.registry, now=later(), dry_run=dry_run)
    assert report.orphans == []
    store = kinto.registry.attachment_store
    assert all(store.exists(key) for key in everything)
    if not dry_run:
        assert adoption.done(kinto.registry)
        assert all_rows(kinto) == []
        assert collect_everything(kinto).orphans == []
        assert all(store.exists(key) for key in everything)


# 6. Uploads while adoption runs.


def adoption_paused_on_r1(kinto, monkeypatch, outcome):
    """Adoption started in a thread (its report, or its exception, in ``outcome["adoption"]``)
    and paused while it holds r1's lock, making r1's row a link: ``(thread, release)``."""
    locked, release = threading.Event(), threading.Event()
    still_there = legacy.still_there

    def paused(storage, link):
        found = still_there(storage, link)
        locked.set()
        release.wait(30)
        return found

    monkeypatch.setattr(legacy, "still_there", paused)

    def migrate():
        try:
            outcome["adoption"] = adoption.adopt(kinto.registry)
        except Exception as error:  # noqa: BLE001
            outcome["adoption"] = error

    adopting = threading.Thread(target=migrate)
    adopting.start()
    assert locked.wait(30)
    return adopting, release


@pytest.mark.postgresql
def test_held_a_replacement_waiting_for_adoptions_lock_keeps_the_new_file(
    tmp_path_factory, request, monkeypatch
):
    """HELD: adoption holds r1's lock (it is making r1's row a link) when a client replaces
    r1's file. The upload waits: the old file is still there while adoption's batch is not
    committed; then the replacement takes the link adoption made, deletes the old file
    (grace 0) and never the new one."""
    kinto = prepared(cached_app("postgresql", tmp_path_factory, request))
    old = legacy_record(kinto, "r1", link="8")
    store = kinto.registry.attachment_store
    outcome = {}
    adopting, release = adoption_paused_on_r1(kinto, monkeypatch, outcome)

    def upload():
        response = kinto.upload(kinto.record_url("r1"), b"new content", "new.txt", status="*")
        outcome["upload"] = response

    uploading = threading.Thread(target=upload)
    uploading.start()
    time.sleep(1.5)
    try:
        assert "upload" not in outcome, "the upload did not wait for adoption's lock"
        assert store.exists(old["key"]), "the old file went before adoption committed"
    finally:
        release.set()
        adopting.join(60)
        uploading.join(60)
    monkeypatch.undo()
    assert not isinstance(outcome["adoption"], Exception), repr(outcome["adoption"])
    assert outcome["upload"].status_int == 200, outcome["upload"].body
    new_key = kinto.key_of(outcome["upload"].json["location"])
    assert store.exists(new_key), "the new file was deleted"
    assert not store.exists(old["key"])
    assert old["key"] not in retained_keys(kinto)
    assert linked_keys(kinto) == {new_key}
    body = kinto.app.get(kinto.record_url("r1") + "/attachment", headers=ALICE).body
    assert body == b"new content"
    collect_everything(kinto)
    assert store.exists(new_key)


@pytest.mark.postgresql
def test_held_a_refused_replacement_during_adoption_keeps_the_legacy_file(
    tmp_path_factory, request, monkeypatch
):
    """HELD: a replacement refused (a stale ``If-Match``) while adoption holds the record's
    lock: the legacy file stays, adopted."""
    kinto = prepared(cached_app("postgresql", tmp_path_factory, request))
    old = legacy_record(kinto, "r1", link="8")
    store = kinto.registry.attachment_store
    outcome = {}
    adopting, release = adoption_paused_on_r1(kinto, monkeypatch, outcome)

    def upload():
        outcome["upload"] = kinto.app.post(
            kinto.record_url("r1") + "/attachment",
            upload_files=[("attachment", "new.txt", b"new")],
            headers={**ALICE, "If-Match": '"1"'},
            status="*",
        )

    uploading = threading.Thread(target=upload)
    uploading.start()
    time.sleep(0.5)
    release.set()
    adopting.join(60)
    uploading.join(60)
    monkeypatch.undo()
    assert not isinstance(outcome["adoption"], Exception), repr(outcome["adoption"])
    assert outcome["upload"].status_int == 412, outcome["upload"].status
    assert store.exists(old["key"])
    assert linked_keys(kinto) == {old["key"]}
    assert kinto.app.get(kinto.record_url("r1") + "/attachment", headers=ALICE).body == (
        b"old content"
    )


# 7. Names: case, percent-encoding, outside the store, missing files, tombstones.


def test_held_names_differing_by_case_are_two_files(tmp_path_factory, request):
    """HELD (a disk that keeps case): ``Report.txt`` and ``report.txt`` of two records are
    two links; deleting one record deletes its file only."""
    kinto = memory_app(tmp_path_factory, request, **{"kinto.attachment.randomize": "false"})
    store = kinto.registry.attachment_store
    upper = legacy_record(kinto, "r1", b"upper", key=store_file(kinto, b"upper", "Report.txt"))
    lower = legacy_record(kinto, "r2", b"lower", key=store_file(kinto, b"lower", "report.txt"))
    report = adoption.adopt(kinto.registry)
    assert report.linked == 2 and report.retained == 0
    kinto.app.delete(kinto.record_url("r1"), headers=ALICE)
    assert not store.exists(upper["key"]) and store.exists(lower["key"])
    assert kinto.app.get(kinto.record_url("r2") + "/attachment", headers=ALICE).body == b"lower"


def test_held_a_percent_encoded_location_keeps_its_link(tmp_path_factory, request):
    """HELD: a location whose safe characters a client percent-encoded names the row's
    key: a link, served, deleted with its record."""
    kinto = memory_app(tmp_path_factory, request)
    store = kinto.registry.attachment_store
    key = store_file(kinto, b"old content", "blog/articles/a-b_c.txt")
    encoded = "https://files.example.com/blog/articles/a%2Db%5Fc.txt"
    legacy_record(kinto, "r1", location=encoded, key=key)
    report = adoption.adopt(kinto.registry)
    assert (report.linked, report.retained, report.foreign) == (1, 0, [])
    url = kinto.record_url("r1") + "/attachment"
    assert kinto.app.get(url, headers=ALICE).body == b"old content"
    kinto.app.delete(kinto.record_url("r1"), headers=ALICE)
    assert not store.exists(key)


@pytest.mark.parametrize(
    "path",
    ["../outside.txt", "%2e%2e/outside.txt", "blog/../../outside.txt"],
    ids=["dots", "encoded-dots", "climbing"],
)
def test_held_a_location_climbing_out_of_the_store_neither_blocks_nor_reaches_out(
    tmp_path_factory, request, path
):
    """HELD: a record (no row) whose location under ``base_url`` climbs out of the store:
    adoption completes, the collector runs, the download is a JSON 404 and the file
    outside the store is untouched."""
    kinto = memory_app(tmp_path_factory, request)
    legacy_record(kinto, "r1", link="8")
    outside = os.path.join(os.path.dirname(kinto.base_path), "outside.txt")
    with open(outside, "wb") as f:
        f.write(b"not the store's")
    try:
        odd = {"filename": "x.txt", "location": "https://files.example.com/" + path, "size": 15}
        set_attachment(kinto, "odd", odd)
        report = adoption.adopt(kinto.registry)
        assert adoption.done(kinto.registry) and report.linked == 1
        collect_everything(kinto)
        response = kinto.app.get(
            kinto.record_url("odd") + "/attachment", headers=ALICE, status="*"
        )
        assert response.status_int == 404, response.status
        kinto.app.delete(kinto.record_url("odd"), headers=ALICE)
        with open(outside, "rb") as f:
            assert f.read() == b"not the store's"
    finally:
        os.unlink(outside)


def test_held_a_legacy_record_whose_file_is_missing(tmp_path_factory, request):
    """HELD: a row whose file is gone: adopted as a link, downloads a JSON 404, deleting
    the record is no 500, the collector reports it dangling."""
    kinto = memory_app(tmp_path_factory, request)
    legacy_record(kinto, "r0", link="8")
    lost = legacy_record(kinto, "r1", link="8")
    kinto.registry.attachment_store.delete(lost["key"])
    report = adoption.adopt(kinto.registry)
    assert report.linked == 2
    url = kinto.record_url("r1") + "/attachment"
    assert kinto.app.get(url, headers=ALICE, status="*").status_int == 404
    collected = collect_everything(kinto)
    assert any(key == lost["key"] for _, key in collected.dangling)
    kinto.app.delete(kinto.record_url("r1"), headers=ALICE, status=200)


def test_held_a_row_of_a_deleted_record_recreated_under_its_id_keeps_the_file(
    tmp_path_factory, request
):
    """HELD: a record deleted without events (a tombstone left; kinto-attachment's row and
    file stay), then made again under its id without an attachment: adoption keeps the
    file (retained), and deleting the new record does not delete it."""
    kinto = memory_app(tmp_path_factory, request)
    old = legacy_record(kinto, "r1", link="8")
    with transaction.manager:
        kinto.registry.storage.delete(resource_name="record", parent_id=PARENT, object_id="r1")
    kinto.app.put_json(kinto.record_url("r1"), {"data": {"title": "again"}}, headers=ALICE)
    report = adoption.adopt(kinto.registry)
    assert (report.linked, report.retained) == (0, 1)
    kinto.app.delete(kinto.record_url("r1"), headers=ALICE)
    collect_everything(kinto)
    assert kinto.registry.attachment_store.exists(old["key"])


# 8. Records kinto-attachment stored, whose links this plugin cannot store.


@pytest.mark.postgresql
def test_a_legacy_record_whose_link_postgresql_cannot_index_does_not_stop_adoption(
    tmp_path_factory, request
):
    """Found by review (2026-12-05).

    Kinto takes record ids of any length; kinto-attachment kept its link in the row's
    JSON (no index). A record id long enough that PostgreSQL still stores the record (its
    primary key's index row fits in 2704 bytes) but not our link, whose parent id holds the
    whole record URI (``attachment:/buckets/.../records/{id}``, indexed with the link's id):
    adoption raises at every run (``kinto migrate`` fails for good) and the collector, which
    adopts before its first orphan pass, never looked for orphans again. Fixed: adoption
    completes (such a record's file retained, listed in the report), the collector runs."""
    import secrets
    import string

    kinto = prepared(cached_app("postgresql", tmp_path_factory, request))
    legacy_record(kinto, "r0", link="8")
    alphabet = string.ascii_letters + string.digits
    long_id = "x" + "".join(secrets.choice(alphabet) for _ in range(2640))
    key = store_file(kinto, b"old content")
    store = kinto.registry.attachment_store
    attachment = {"filename": "x.txt", "location": store.url(key), "size": 11, "hash": "0" * 64}
    with transaction.manager:
        storage = kinto.registry.storage
        storage.create(
            resource_name="record", parent_id=PARENT, obj={"id": long_id, "attachment": attachment}
        )
        legacy_row(storage, long_id, key)
    try:
        report = adoption.adopt(kinto.registry)
        collected = collect_everything(kinto)
    except Exception as error:  # noqa: BLE001
        pytest.fail(f"adoption or the collector failed: {error!r}"[:400])
    assert adoption.done(kinto.registry)
    assert report.linked + report.retained == 2
    assert collected.orphans == []
    assert store.exists(key)
