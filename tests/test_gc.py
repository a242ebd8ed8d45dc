"""Garbage collection: expired entries removed by compare-and-delete, orphans a crash left
behind removed after a grace period, referenced blobs never, dangling references reported."""

import base64
import os
import subprocess
import threading
import time

import pytest
import requests
import transaction
from kinto.core.storage.exceptions import BackendError
from pyramid.exceptions import ConfigurationError

from kinto_attachment import adoption, gc
from kinto_attachment import settings as attachment_settings
from kinto_attachment.events import command as events_command
from kinto_attachment.gc import command, store_check
from kinto_attachment.state import (
    data_file_entries,
    instance,
    links,
    paging,
    references,
    replaced,
    tus_uploads,
)
from kinto_attachment.storage.local import LocalStore

from .conftest import (
    ALICE,
    Kinto,
    build_settings,
    cached_app,
    held_elsewhere,
    make_app,
    own_database,
    postgresql_ini,
    s3_client,
    s3_settings,
)
from .support.live import ALICE as ALICE_LIVE
from .support.live import BIN, running_server


GRACE_SECONDS = 60
GRACE = {"kinto.attachment.gc.orphans_grace_seconds": str(GRACE_SECONDS)}
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
TUS = {"Tus-Resumable": "1.0.0"}
MiB = 1024 * 1024


def adopted(kinto):
    """An instance past its first collection (or ``kinto migrate``): adoption done while the
    store was empty. Otherwise the first collection would keep whatever the test leaves
    unreferenced, as files a previous plugin left (:mod:`kinto_attachment.adoption`)."""
    kinto.registry.attachment_adopted = False  # The marker went with the previous test's data.
    adoption.adopt(kinto.registry)
    return kinto


@pytest.fixture
def kinto_gc(backend, blobs, tmp_path_factory, request):
    """Every backend, with a grace period of a minute (``now`` can then be past it)."""
    kinto = cached_app(backend, tmp_path_factory, request, blobs=blobs, **GRACE)
    kinto.create_collection()
    return adopted(kinto)


def after_grace():
    return data_file_entries.msec_time() + (GRACE_SECONDS + 60) * 1000


def orphan(kinto, key=None, content=b"orphan"):
    """A blob stored for a transaction that never committed: nothing references it. Its name
    is random by default (``randomize``), carrying the instance's tag as an upload's would."""
    key = key or f"blog/articles/{instance.random_name(kinto.registry)}.txt"
    staged = kinto.registry.attachment_store.stage(key, "text/plain")
    staged.write(content)
    return staged.commit()


def post_file(kinto, file_id, content=b"data", ttl=None):
    query = f"?id={file_id}" + (f"&ttl={ttl}" if ttl else "")
    kinto.app.post(f"/v1/data/files{query}", content, extra_environ=LOCAL, status=200)
    return data_file_entries.get(kinto.registry.storage, file_id)


def start_tus(kinto, length, chunk=b"", record="r2"):
    """A resumable upload in progress (``chunk`` sent); its URL."""
    name = base64.b64encode(b"big.txt").decode()
    headers = {**ALICE, **TUS, "Upload-Length": str(length), "Upload-Metadata": f"filename {name}"}
    response = kinto.app.post(
        kinto.record_url(record) + "/attachment/uploads", headers=headers, status=201
    )
    url = response.headers["Location"][len("http://localhost") :]
    if chunk:
        send_tus(kinto, url, chunk, 0)
    return url


def send_tus(kinto, url, chunk, offset):
    headers = {
        **ALICE,
        **TUS,
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": str(offset),
    }
    kinto.app.patch(url, chunk, headers=headers, status=204)


def keys(listed):
    return sorted(item.key for item in listed)


def test_old_orphans_are_removed_young_ones_kept(kinto_gc):
    key = orphan(kinto_gc)
    report = gc.collect(kinto_gc.registry)
    assert report.orphans == [] and kinto_gc.files() == [key]

    report = gc.collect(kinto_gc.registry, now=after_grace())
    assert [(o.key, o.size, o.temporary) for o in report.orphans] == [(key, 6, False)]
    assert report.total_bytes == 6
    assert kinto_gc.files() == []


def test_orphans_are_deleted_by_batches(kinto_gc, monkeypatch):
    monkeypatch.setattr(gc.orphans, "DELETE_BATCH", 2)
    store = kinto_gc.registry.attachment_store
    batches = []
    delete_many = store.delete_many
    monkeypatch.setattr(
        store, "delete_many", lambda keys: batches.append(len(keys)) or delete_many(keys)
    )
    for _ in range(5):
        orphan(kinto_gc)

    report = gc.collect(kinto_gc.registry, now=after_grace())

    assert len(report.orphans) == 5 and kinto_gc.files() == []
    assert [size for size in batches if size] == [2, 2, 1]


def test_referenced_blobs_are_never_removed(kinto_gc):
    attached = kinto_gc.upload(kinto_gc.record_url("r1"), b"attached").json
    kinto_gc.create_collection("other", "c")
    elsewhere = kinto_gc.upload(kinto_gc.record_url("r", "other", "c"), b"elsewhere").json
    post_file(kinto_gc, "kept", b"data file")
    # Past one S3 part: a multipart upload with a part, and a tail.
    content = os.urandom(8 * MiB + 10)
    tus = start_tus(kinto_gc, len(content) + 5, content)
    retained = orphan(kinto_gc, "blog/articles/old.txt", b"kept on purpose")
    with transaction.manager:
        links.retain(kinto_gc.registry.storage, [retained])
    before = kinto_gc.files()

    report = gc.collect(kinto_gc.registry, now=after_grace())

    assert (report.orphans, report.aborted, report.dangling) == ([], [], [])
    assert kinto_gc.files() == before
    assert kinto_gc.read(attached["location"]) == b"attached"
    assert kinto_gc.read(elsewhere["location"]) == b"elsewhere"
    send_tus(kinto_gc, tus, b"12345", len(content))
    record = kinto_gc.app.get(kinto_gc.record_url("r2"), headers=ALICE).json["data"]
    assert kinto_gc.read(record["attachment"]["location"]) == content + b"12345"


def test_a_reference_moving_while_references_are_read_is_seen(
    backend, tmp_path_factory, request, monkeypatch
):
    """A replacement under ``keep_old_files`` moves the old key from the record to the
    retained keys: read after the records, the retained keys still have it.

    On local disk only, where the old blob can be made old: the new one must stay young."""
    extra = {**GRACE, "kinto.attachment.keep_old_files": "true"}
    kinto = cached_app(backend, tmp_path_factory, request, **extra)
    kinto.create_collection()
    old = kinto.upload(kinto.record_url("r1"), b"old").json
    two_days_ago = time.time() - 2 * 86400
    os.utime(os.path.join(kinto.base_path, kinto.key_of(old["location"])), (two_days_ago,) * 2)
    replaced = []

    def replace_once():
        """Another request, committed while the collector reads."""
        if not replaced:
            thread = threading.Thread(
                target=lambda: replaced.append(kinto.upload(kinto.record_url("r1"), b"new"))
            )
            thread.start()
            thread.join(30)

    def then_replace(read):
        # The move happens between the reads of its source and its destination.
        def reader(*args):
            yield from read(*args)
            replace_once()

        return reader

    monkeypatch.setattr(references, "_attached", then_replace(references._attached))
    monkeypatch.setattr(links, "retained", then_replace(links.retained))
    report = gc.collect(kinto.registry)

    assert replaced and report.orphans == []
    assert kinto.read(old["location"]) == b"old"


def test_leftovers_of_crashed_uploads_are_removed_after_the_grace_period(kinto_gc):
    store = kinto_gc.registry.attachment_store
    crashed = store.stage("blog/articles/crashed.bin", "application/octet-stream")
    crashed.write(b"0123456789")  # Local: an .upload-*.part file; S3: only in memory.
    if kinto_gc.bucket is not None:
        client = s3_client(store.client.meta.endpoint_url)
        client.put_object(Bucket=kinto_gc.bucket, Key="__uploads__/lost.tail", Body=b"tail")
    before = kinto_gc.files()
    assert before

    young = gc.collect(kinto_gc.registry)
    assert young.orphans == []
    assert kinto_gc.files() == before

    if kinto_gc.bucket is not None:
        # After the young round: moto dates every multipart upload from 2010.
        big = f"blog/articles/{instance.random_name(kinto_gc.registry)}.bin"
        client.create_multipart_upload(Bucket=kinto_gc.bucket, Key=big)
    report = gc.collect(kinto_gc.registry, now=after_grace())
    assert kinto_gc.files() == []
    assert report.temporary == report.orphans and len(report.orphans) == 1
    if kinto_gc.bucket is None:
        assert os.path.basename(report.orphans[0].key).startswith(".upload-")
        assert report.aborted == []
    else:
        assert report.orphans[0].key == "__uploads__/lost.tail"
        assert [p.key for p in report.aborted] == [big]


def test_a_file_named_through_a_symbolic_link_in_the_store_is_kept(tmp_path_factory, request):
    """Found by review (2026-12-05).

    An operator moved a bucket's folder inside ``base_path`` and left a symbolic link in its
    place (``blog -> archive/blog``): the files are served through the link, and the listing,
    which follows no link, finds them under their real path; they are still referenced."""
    folders = {"kinto.attachment.folder": "{bucket_id}/{collection_id}"}
    kinto = adopted(cached_app("memory", tmp_path_factory, request, **GRACE, **folders))
    kinto.create_collection()
    attached = kinto.upload(kinto.record_url("r1"), b"precious").json
    assert kinto.key_of(attached["location"]).startswith("blog/articles/")
    base = kinto.base_path
    os.makedirs(os.path.join(base, "archive"))
    os.rename(os.path.join(base, "blog"), os.path.join(base, "archive", "blog"))
    os.symlink(os.path.join("archive", "blog"), os.path.join(base, "blog"))
    assert kinto.read(attached["location"]) == b"precious"

    report = gc.collect(kinto.registry, now=after_grace())

    assert report.orphans == [] and report.dangling == []
    assert kinto.read(attached["location"]) == b"precious"


def test_a_stale_listing_never_deletes_a_file_uploaded_since_under_its_name(
    backend, blobs, tmp_path_factory, request
):
    """Found by review (2026-12-05).

    Two collectors at once (two nodes' threads, or one and the command), ``randomize =
    false``. Both list the old orphan ``name.txt``; the faster deletes it and quarantines its
    name a minute. The slower holds it until its listing ends (the orphans whose names say
    nobody's wait for it; minutes on a large store): meanwhile the quarantine ended and an
    upload took the name for a record. The slower then finds another object under the name,
    and keeps it."""
    settings = {**GRACE, "kinto.attachment.randomize": "false"}
    kinto = adopted(cached_app(backend, tmp_path_factory, request, blobs=blobs, **settings))
    kinto.create_collection()
    kinto.upload(kinto.record_url("r0"), b"kept", "other.txt")  # The database names a file.
    registry, store = kinto.registry, kinto.registry.attachment_store
    staged = store.stage("name.txt", "text/plain")
    staged.write(b"an old orphan")
    assert staged.commit() == "name.txt"
    now = after_grace()
    uploaded = []

    def meanwhile():
        gc.collect(registry, now=now)  # The faster collector.
        later = now + (replaced.QUARANTINE_SECONDS + 10) * 1000
        gc.collect(registry, now=later, orphans=False)  # The name's quarantine over.
        uploaded.append(kinto.upload(kinto.record_url("r1"), b"new", "name.txt").json)

    iter_blobs = store.iter_blobs

    def slow_listing():
        listing = list(iter_blobs())
        store.iter_blobs = iter_blobs  # The faster collector lists at its own pace.
        yield from listing
        meanwhile()

    store.iter_blobs = slow_listing
    try:
        report = gc.collect(registry, now=now)
    finally:
        store.iter_blobs = iter_blobs
    [attached] = uploaded
    assert kinto.key_of(attached["location"]) == "name.txt"  # The name was free again.
    assert [o.key for o in report.orphans] == ["name.txt"]  # Listed as one, yet...
    assert kinto.read(attached["location"]) == b"new"  # ...the new file stays.


def test_orphans_whose_names_say_nobody_are_kept_where_nothing_names_a_file(kinto_gc, caplog):
    """Found by review (2026-12-05).

    A database where no record, link or ``/data/files`` entry names a file cannot tell the
    servers' files from anybody's (the command's ``kinto.ini`` may read another, empty,
    database): the orphans whose names say nobody's are kept, and said; the instance's own
    (tagged) go."""
    untagged = orphan(kinto_gc, "blog/articles/report.pdf")
    tagged = orphan(kinto_gc)

    report = gc.collect(kinto_gc.registry, now=after_grace())

    assert [o.key for o in report.orphans] == [tagged]
    assert report.unowned == [untagged] and kinto_gc.files() == [untagged]
    assert "No record, link or /data/files entry of this database names a file" in caplog.text


@pytest.mark.postgresql
def test_the_command_reading_an_empty_database_never_deletes_the_servers_files(tmp_path):
    """Found by review (2026-12-05).

    The cron line's ``kinto.ini`` reads another database than the servers' (initialised by
    ``kinto migrate``, empty), on their ``base_path``, ``randomize = false``: its first run
    retains (in the wrong database) what the store holds; a file the servers upload after it
    is no orphan to its next run all the same."""
    served = str(tmp_path / "attachments")
    with own_database("gc_servers") as servers_url, own_database("gc_wrong") as wrong:
        settings = build_settings(
            "postgresql", served, pg=servers_url, **{"kinto.attachment.randomize": "false"}
        )
        kinto = Kinto(make_app(settings), served)
        make_app(build_settings("postgresql", str(tmp_path / "unused"), pg=wrong))  # Its schema.
        kinto.create_collection()
        first = kinto.upload(kinto.record_url("r1"), b"first", "first.txt").json
        ini = tmp_path / "gc.ini"
        ini.write_text(postgresql_ini(wrong, served))
        assert command.main(["--ini", str(ini)]) == 0
        second = kinto.upload(kinto.record_url("r2"), b"second", "second.txt").json
        two_days_ago = time.time() - 2 * 86400
        for location in (first["location"], second["location"]):
            os.utime(os.path.join(served, kinto.key_of(location)), (two_days_ago,) * 2)

        command.main(["--ini", str(ini)])

        assert kinto.read(first["location"]) == b"first"
        assert kinto.read(second["location"]) == b"second"


def test_local_orphans_are_judged_by_their_modification_time(tmp_path_factory, request, tmp_path):
    kinto = adopted(cached_app("memory", tmp_path_factory, request))
    kinto.create_collection()
    old, young = orphan(kinto), orphan(kinto)
    staged = os.path.join(kinto.base_path, "blog", ".upload-crashed.part")
    with open(staged, "wb") as f:
        f.write(b"partial")
    # A link out of the store is neither followed nor deleted.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_bytes(b"not ours")
    os.symlink(outside, os.path.join(kinto.base_path, "link"))
    two_days_ago = time.time() - 2 * 86400
    for path in (os.path.join(kinto.base_path, old), staged, outside / "precious.txt"):
        os.utime(path, (two_days_ago, two_days_ago))

    report = gc.collect(kinto.registry)

    assert keys(report.orphans) == ["blog/.upload-crashed.part", old]
    assert keys(report.temporary) == ["blog/.upload-crashed.part"]
    assert kinto.files() == [young]
    assert (outside / "precious.txt").read_bytes() == b"not ours"


def test_dangling_references_are_reported_and_left_alone(kinto_gc):
    """The store still holds as many of the named files as it lost (a store that holds none
    is refused: tests/test_gc_promises.py)."""
    attached = kinto_gc.upload(kinto_gc.record_url("r1"), b"attached").json
    lost = post_file(kinto_gc, "lost")
    for kept in ("r2", "r3"):
        kinto_gc.upload(kinto_gc.record_url(kept), b"kept")
    store = kinto_gc.registry.attachment_store
    key = kinto_gc.key_of(attached["location"])
    store.delete_many([key, lost["key"]])
    uri = "/buckets/blog/collections/articles/records/r1"

    for dry_run in (True, False):
        report = gc.collect(kinto_gc.registry, now=after_grace(), dry_run=dry_run)
        assert sorted(report.dangling) == [
            (uri, key),
            ("data-file lost", lost["key"]),
            (f"link of {uri}", key),
        ]
    record = kinto_gc.app.get(kinto_gc.record_url("r1"), headers=ALICE).json["data"]
    assert record["attachment"] == attached
    assert data_file_entries.get(kinto_gc.registry.storage, "lost") == lost


def test_a_retained_file_recorded_as_replaced_is_never_deleted(kinto_gc):
    """Deleting the record whose link names a retained file records it as replaced (a copy
    without a link may still name it): the collector claims such an entry, and keeps the
    file."""
    key = orphan(kinto_gc, "blog/articles/retained.txt")
    with transaction.manager:
        links.retain(kinto_gc.registry.storage, [key])
        replaced.add(kinto_gc.registry.storage, [key], until=0)
    for dry_run in (True, False):
        report = gc.collect(kinto_gc.registry, now=after_grace(), dry_run=dry_run)
        assert report.replaced == [] and report.orphans == []
    assert kinto_gc.files() == [key]


def test_a_store_one_folder_above_the_servers_is_refused_by_the_collector_thread(
    tmp_path_factory, request, caplog
):
    """``base_path`` one folder too high: every file is listed under another key, none is
    referenced. The collector looks for a sample of the referenced files first, finds none,
    and refuses the round with an error in the log (no traceback), removing nothing."""
    kinto = adopted(cached_app("memory", tmp_path_factory, request, **GRACE))
    kinto.create_collection()
    attached = kinto.upload(kinto.record_url("r1"), b"precious").json
    key = kinto.key_of(attached["location"])
    registry = kinto.registry
    served = registry.attachment_store
    above = os.path.dirname(served.base_path)
    registry.attachment_store = LocalStore(above, base_url=served.base_url)
    try:
        with pytest.raises(store_check.Refused, match="base_path"):
            gc.collect(registry, now=after_grace())

        class OneRound:
            rounds = 0

            def wait(self, interval):
                self.rounds += 1
                return self.rounds > 1

        caplog.clear()
        gc._periodically(registry, 300, OneRound())
    finally:
        registry.attachment_store = served
    assert served.exists(key)
    (record,) = [r for r in caplog.records if r.name == "kinto_attachment.gc"]
    assert record.levelname == "ERROR" and "refused" in record.getMessage()
    assert record.exc_info is None


def test_referenced_files_missing_from_a_store_that_holds_others_refuse_the_orphan_pass(
    kinto_gc,
):
    """A store that lost most of what the records name yet holds other files: deleting those
    as orphans is no longer the safe guess; the operator looks first."""
    attached = kinto_gc.upload(kinto_gc.record_url("r1"), b"attached").json
    kinto_gc.registry.attachment_store.delete(kinto_gc.key_of(attached["location"]))
    other = orphan(kinto_gc)
    for dry_run in (True, False):
        with pytest.raises(store_check.Refused, match="0 are in the store"):
            gc.collect(kinto_gc.registry, now=after_grace(), dry_run=dry_run)
    assert kinto_gc.files() == [other]
    # Expired entries and replaced files are still collected on the rounds without orphans.
    assert gc.collect(kinto_gc.registry, now=after_grace(), orphans=False).orphans == []


def test_an_expired_data_file_is_read_once_under_its_lock(kinto_gc, monkeypatch):
    """Listed, then read again under its lock (a writer may have replaced it meanwhile), and
    deleted as read: one lookup by id, not a second one to delete it."""
    post_file(kinto_gc, "expired", b"short-lived", ttl=1)
    looked_up, find = [], paging.find

    def counting(storage, resource, parent_id, object_id):
        looked_up.append(object_id)
        return find(storage, resource, parent_id, object_id)

    monkeypatch.setattr(paging, "find", counting)
    report = gc.collect(kinto_gc.registry, now=after_grace())
    assert [entry["id"] for entry in report.expired_files] == ["expired"]
    assert looked_up == ["expired"]
    assert data_file_entries.get(kinto_gc.registry.storage, "expired") is None


def test_dry_run_removes_nothing_and_reports_the_same(kinto_gc):
    orphan(kinto_gc)
    post_file(kinto_gc, "expired", b"short-lived", ttl=1)
    kinto_gc.registry.attachment_store.stage("blog/x.bin", None).write(b"12345")
    if kinto_gc.bucket is not None:
        client = s3_client(kinto_gc.registry.attachment_store.client.meta.endpoint_url)
        big = f"blog/articles/{instance.random_name(kinto_gc.registry)}.bin"
        client.create_multipart_upload(Bucket=kinto_gc.bucket, Key=big)
    before = kinto_gc.files()
    now = after_grace()

    dry = gc.collect(kinto_gc.registry, now=now, dry_run=True)
    assert kinto_gc.files() == before
    assert data_file_entries.get(kinto_gc.registry.storage, "expired") is not None
    real = gc.collect(kinto_gc.registry, now=now)

    assert dry.dry_run and not real.dry_run
    assert [e["id"] for e in dry.expired_files] == [e["id"] for e in real.expired_files]
    assert keys(dry.orphans) == keys(real.orphans) and dry.orphans
    assert keys(dry.aborted) == keys(real.aborted)
    assert dry.total_bytes == real.total_bytes
    assert kinto_gc.files() == []


@pytest.mark.parametrize("ttl", [None, 1], ids=["live", "expired-too"])
def test_data_file_uploaded_again_after_the_listing_is_kept(kinto_gc, monkeypatch, ttl):
    first = post_file(kinto_gc, "f", b"old", ttl=1)
    listing = gc._expired_data_files

    def listing_then_upload_again(storage, now):
        found = listing(storage, now)
        post_file(kinto_gc, "f", b"new", ttl=ttl)
        return found

    monkeypatch.setattr(gc, "_expired_data_files", listing_then_upload_again)
    report = gc.collect(kinto_gc.registry, now=after_grace())

    assert report.expired_files == []
    entry = data_file_entries.get(kinto_gc.registry.storage, "f")
    with kinto_gc.registry.attachment_store.open(entry["key"]) as f:
        assert f.read() == b"new"
    assert kinto_gc.files() == [entry["key"]]  # The upload deleted the blob it replaced.
    assert first["key"] != entry["key"]


def test_upload_held_by_a_request_is_left_for_the_next_round(kinto_gc):
    url = start_tus(kinto_gc, 10, b"12345")
    upload_id = url.rsplit("/", 1)[-1]
    expired = data_file_entries.msec_time() + 86400 * 1000 + 1000
    before = kinto_gc.files()

    with held_elsewhere(kinto_gc.registry, ("uploads", upload_id)):
        report = gc.collect(kinto_gc.registry, now=expired)
    assert report.expired_uploads == [] and report.busy_uploads == [upload_id]
    assert tus_uploads.get(kinto_gc.registry.storage, upload_id) is not None
    assert kinto_gc.files() == before

    report = gc.collect(kinto_gc.registry, now=expired)
    assert [u["id"] for u in report.expired_uploads] == [upload_id]
    assert kinto_gc.files() == []


def test_store_listing_and_urls(tmp_path):
    store = LocalStore(str(tmp_path), base_url="https://cdn.example.com/files")
    blob = store.stage("a b/c.txt").commit()
    state = store.start_resumable("a b/d.txt")
    store.append(state, 0, [b"xyz"])
    listed = {item.key: item for item in store.iter_blobs()}
    assert sorted(listed) == sorted([blob, state["temp"]])
    assert listed[state["temp"]].temporary and not listed[blob].temporary
    assert listed[state["temp"]].size == 3
    assert list(store.iter_pending()) == []

    assert store.key_for_url(store.url("a b/c.txt")) == "a b/c.txt"
    assert store.key_for_url("https://elsewhere.example.com/a.txt") is None
    relative = LocalStore(str(tmp_path))
    assert relative.key_for_url(relative.url("a b/c.txt")) == "a b/c.txt"
    assert relative.key_for_url("https://cdn.example.com/files/a.txt") is None


def test_readers_page_through_everything(kinto_gc, monkeypatch):
    for number in range(5):
        post_file(kinto_gc, f"f{number}")
    storage = kinto_gc.registry.storage
    read = paging.every(storage, data_file_entries.RESOURCE, data_file_entries.EVERY, limit=2)
    assert [e["id"] for e in read] == ["f0", "f1", "f2", "f3", "f4"]

    monkeypatch.setattr(references, "RUN", 2)  # Several sorted runs, merged.
    with transaction.manager:
        index, pending = references.index(kinto_gc.registry)
    for number in range(5):
        assert data_file_entries.get(storage, f"f{number}")["key"] in index
    assert "nothing/there.txt" not in index
    assert "nothing" not in pending


def test_collector_thread_collects_orphans_at_their_own_interval(
    kinto_memory, tmp_path_factory, request, monkeypatch
):
    class Rounds:
        """Stands for the stop event: not set for three rounds, then set."""

        def __init__(self):
            self.rounds = 0

        def wait(self, interval):
            self.rounds += 1
            return self.rounds > 3

    calls = []
    monkeypatch.setattr(gc, "collect", lambda registry, **options: calls.append(options))
    gc._periodically(kinto_memory.registry, 300, Rounds())
    assert calls == [{"orphans": True}, {"orphans": False}, {"orphans": False}]

    clock = iter(range(0, 100_000, 3600))
    monkeypatch.setattr(gc, "monotonic", lambda: next(clock))
    calls.clear()
    gc._periodically(kinto_memory.registry, 300, Rounds())
    assert calls == [{"orphans": True}] * 3

    never = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.attachment.gc.orphans_interval_seconds": "0"},
    )
    calls.clear()
    gc._periodically(never.registry, 300, Rounds())
    assert calls == [{"orphans": False}] * 3


def parse(**values):
    return attachment_settings.parse(
        {"attachment.base_path": "/tmp/files", **{f"attachment.{k}": v for k, v in values.items()}}
    )


def test_gc_settings(monkeypatch):
    assert parse().gc == attachment_settings.GcOptions(86400, 3600)
    parsed = parse(**{"gc.orphans_grace_seconds": "600", "gc.orphans_interval_seconds": "0"})
    assert parsed.gc == attachment_settings.GcOptions(600, 0)
    monkeypatch.setenv("KINTO_ATTACHMENT_GC_ORPHANS_GRACE_SECONDS", "7200")
    assert parse().gc.orphans_grace_seconds == 7200


@pytest.mark.parametrize(
    "name,value",
    [
        ("gc.orphans_grace_seconds", "soon"),
        ("gc.orphans_grace_seconds", "-1"),
        ("gc.orphans_interval_seconds", "-1"),
        ("gc.orphans_grace", "600"),
    ],
)
def test_bad_gc_settings_name_themselves(name, value):
    with pytest.raises(ConfigurationError) as error:
        parse(**{name: value})
    assert f"`kinto.attachment.{name}`" in str(error.value)


def test_help_describes_everything_collected(capsys):
    with pytest.raises(SystemExit):
        command.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for collected in (
        "/data/files",
        "resumable (tus) uploads",
        ".upload-*.part",
        "incomplete S3 multipart uploads",
        "retained",
        "dangling",
        "orphans_grace_seconds",
        "--dry-run",
    ):
        assert collected in text


@pytest.mark.postgresql
def test_gc_command_reports_then_removes(tmp_path_factory, request, tmp_path, capsys):
    kinto = adopted(cached_app("postgresql", tmp_path_factory, request))
    kinto.create_collection()
    attached = kinto.upload(kinto.record_url("r1"), b"attached").json
    old = orphan(kinto, "blog/articles/old.txt", b"forgotten")
    two_days_ago = time.time() - 2 * 86400
    os.utime(os.path.join(kinto.base_path, old), (two_days_ago, two_days_ago))
    lost = post_file(kinto, "lost")
    kinto.registry.attachment_store.delete(lost["key"])
    ini = kinto.write_ini(tmp_path / "gc.ini")

    assert command.main(["--ini", str(ini), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Dry run: nothing was removed." in out
    assert f"  {old}  9 bytes" in out
    assert "Orphans (would be removed): 1, 0 of them temporary" in out
    assert f"  data-file lost -> {lost['key']}  missing" in out
    assert "Dangling references (left as they are): 1" in out
    assert "Total: 9 bytes would be removed" in out
    assert sorted(kinto.files()) == sorted([old, kinto.key_of(attached["location"])])

    assert command.main(["--ini", str(ini)]) == 0
    out = capsys.readouterr().out
    assert "Dry run" not in out and "Orphans (removed): 1" in out
    assert "Total: 9 bytes removed" in out
    assert kinto.files() == [kinto.key_of(attached["location"])]
    # The command collects once: loading the app started no collector that outlives it.
    for thread in threading.enumerate():
        if thread.name == "attachment-gc":
            thread.join(5)
            assert not thread.is_alive()


def test_gc_command_refuses_the_memory_backend_of_a_running_server(tmp_path):
    """The README's command, pointed at ``make serve``'s configuration, used to start with an
    empty memory storage of its own and delete every file of the running server older than
    the grace period: it now refuses, removes nothing, and says where collection happens."""
    with running_server(tmp_path) as server:
        auth = requests.auth.HTTPBasicAuth(*ALICE_LIVE)
        url = f"{server.url}/buckets/default/collections/notes/records/kept/attachment"
        answer = requests.post(url, files={"attachment": ("kept.txt", b"precious")}, auth=auth)
        assert answer.status_code == 201, answer.text
        (stored,) = [p for p in server.base_path.rglob("*") if p.is_file()]
        two_days_ago = time.time() - 2 * 86400
        os.utime(stored, (two_days_ago, two_days_ago))

        for dry_run in ([], ["--dry-run"]):
            command = [str(BIN / "kinto-attachment-gc"), "--ini", str(tmp_path / "kinto.ini")]
            done = subprocess.run(
                command + dry_run, capture_output=True, text=True, cwd=tmp_path, timeout=60
            )
            assert done.returncode == 2, done
            assert "refused" in done.stderr and "memory storage backend" in done.stderr
            assert "Orphans" not in done.stdout
        assert stored.read_bytes() == b"precious"
        assert requests.get(url, auth=auth).content == b"precious"


def test_gc_command_refuses_a_database_it_cannot_reach(tmp_path, capsys, caplog):
    """Kinto connects at the first query: the command probes before collecting, and refuses
    (exit code 2, nothing read nor removed) rather than crash in the middle of its work."""
    (tmp_path / "files").mkdir()
    kept = tmp_path / "files" / "kept.txt"
    kept.write_bytes(b"precious")
    url = "postgresql://postgres@127.0.0.1:1/nowhere"
    ini = tmp_path / "gc.ini"
    ini.write_text(postgresql_ini(url, tmp_path / "files"))
    assert command.main(["--ini", str(ini)]) == 2
    out, err = capsys.readouterr()
    assert "refused" in err and "cannot be" in err and "Nothing was read nor removed" in err
    # Said once, in a line: Kinto's client logged it with a traceback some ninety lines long.
    assert [r for r in caplog.records if r.exc_info] == []
    assert "Orphans" not in out and kept.read_bytes() == b"precious"


@pytest.mark.postgresql
def test_gc_command_losing_its_database_midway_fails_with_a_message(
    tmp_path_factory, request, tmp_path, capsys, monkeypatch
):
    kinto = cached_app("postgresql", tmp_path_factory, request)
    ini = kinto.write_ini(tmp_path / "gc.ini")

    def lost(registry, now=None, **kwargs):
        raise BackendError(message="OperationalError: server closed the connection")

    monkeypatch.setattr(command, "collect", lost)
    assert command.main(["--ini", str(ini)]) == 1
    err = capsys.readouterr().err
    assert "failed" in err and "server closed the connection" in err and "again" in err


@pytest.mark.postgresql
def test_gc_command_refuses_a_base_path_above_the_servers_one(pg_url, tmp_path, capsys):
    """The command's ini says ``/var/lib/kinto`` where the servers' says
    ``/var/lib/kinto/attachments``: no referenced file is where the records say, every file
    is under another key. Refused (exit code 2), the likely cause named, nothing removed."""
    from .conftest import Kinto, build_settings, flush, make_app

    served = str(tmp_path / "var" / "attachments")
    kinto = Kinto(make_app(build_settings("postgresql", served, pg=pg_url)), served)
    flush(kinto.app)
    kinto.create_collection()
    attached = kinto.upload(kinto.record_url("r1"), b"precious").json
    key = kinto.key_of(attached["location"])
    two_days_ago = time.time() - 2 * 86400
    os.utime(os.path.join(served, key), (two_days_ago, two_days_ago))
    ini = kinto.write_ini(tmp_path / "gc.ini")
    ini.write_text(
        ini.read_text().replace(f"base_path = {served}", f"base_path = {tmp_path / 'var'}")
    )

    for dry_run in (["--dry-run"], []):
        assert command.main(["--ini", str(ini), *dry_run]) == 2
        out, err = capsys.readouterr()
        assert "refused" in err and "base_path" in err and "Nothing was removed" in err
        assert "Orphans" not in out
    assert os.path.exists(os.path.join(served, key))


@pytest.mark.parametrize(
    "main,args", [(command.main, []), (events_command.main, ["list"])], ids=["gc", "events"]
)
def test_commands_with_a_missing_ini_file_refuse_rather_than_crash(tmp_path, capsys, main, args):
    """Found by review (2026-12-05).

    ``kinto-attachment-gc --ini missing.ini`` (a typo in a cron line), and
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
@pytest.mark.parametrize("main", [command.main, events_command.main], ids=["gc", "events"])
def test_commands_refuse_a_configuration_whose_app_does_not_load(pg_url, tmp_path, capsys, main):
    """Found by review (2026-12-05).

    ``kinto-attachment-gc --ini config/s3.ini`` without boto3 installed (or a setting the
    plugin refuses, or the metrics' extra missing) ended in a traceback, exit code 1, which
    says "the storage backend failed": a refusal naming what does not load, exit code 2."""
    ini = tmp_path / "gc.ini"
    text = postgresql_ini(pg_url, tmp_path / "files")
    ini.write_text(text + "kinto.attachment.gc.replaced_grace_seconds = soon\n")
    try:
        code = main(["--ini", str(ini), *([] if main is command.main else ["list"])])
    except Exception as error:  # noqa: BLE001
        pytest.fail(f"traceback instead of a refusal: {error!r}")
    err = capsys.readouterr().err
    assert code == 2 and "does not load" in err and "replaced_grace_seconds" in err, err


@pytest.mark.postgresql
def test_gc_command_with_an_ini_that_does_not_include_the_plugin_refuses(pg_url, tmp_path, capsys):
    """Found by review (2026-12-05).

    ``kinto-attachment-gc`` given a Kinto configuration whose ``kinto.includes``
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
    """Found by review (2026-12-05).

    ``kinto-attachment-gc`` whose ini names an S3 bucket that does not exist (or
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


@pytest.mark.parametrize(
    "backend", ["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)]
)
def test_a_deleted_files_name_stays_taken_until_its_quarantine_ends(
    tmp_path_factory, request, backend
):
    """``randomize = false``: a replaced file is kept ``replaced_grace_seconds`` (the collector
    leaves it before), then deleted; its name stays taken a while longer (the URLs that may
    name it, a download about to open it, a delete the store's client sends again), then is
    free (found by review, 2026-12-05: the next upload of that name, anyone's, took it)."""
    settings = {
        "kinto.attachment.randomize": "false",
        "kinto.attachment.gc.replaced_grace_seconds": "600",
    }
    kinto = cached_app(backend, tmp_path_factory, request, **settings)
    kinto.create_collection()
    url = kinto.record_url("r1")
    first = kinto.upload(url, b"first", "name.txt").json["location"]
    kinto.upload(url, b"second", "other.txt")
    now = data_file_entries.msec_time()
    assert gc.collect(kinto.registry, now=now + 599_000, orphans=False).replaced == []
    assert kinto.exists(first)
    [deleted] = gc.collect(kinto.registry, now=now + 601_000, orphans=False).replaced
    assert deleted["key"] == kinto.key_of(first) and not kinto.exists(first)
    elsewhere = kinto.upload(kinto.record_url("r2"), b"another", "name.txt").json["location"]
    assert elsewhere != first  # In quarantine.
    quarantine = replaced.QUARANTINE_SECONDS * 1000
    gc.collect(kinto.registry, now=now + 601_000 + quarantine + 1000, orphans=False)
    assert kinto.upload(kinto.record_url("r3"), b"third", "name.txt").json["location"] == first


def test_expired_data_files_whose_blobs_are_gone_do_not_block_the_collector(
    tmp_path_factory, request
):
    """Found by review (2026-12-05).

    ``/data/files`` entries expired, their blobs gone (a bucket's lifecycle rule): the store
    holds nothing. The refusal of an empty store counted them, before collecting them: every
    collection was refused, for good. Expired entries owe no file."""
    kinto = adopted(cached_app("memory", tmp_path_factory, request, **GRACE))
    store = kinto.registry.attachment_store
    for file_id in ("a", "b"):
        store.delete(post_file(kinto, file_id, ttl=1)["key"])
    for dry_run in (True, False):
        report = gc.collect(kinto.registry, now=after_grace(), dry_run=dry_run)
        assert sorted(entry["id"] for entry in report.expired_files) == ["a", "b"]


def replacing_app(tmp_path_factory, request):
    """An adopted app whose replaced files wait a second, with the blog/articles collection."""
    kinto = adopted(
        cached_app(
            "memory",
            tmp_path_factory,
            request,
            **GRACE,
            **{"kinto.attachment.gc.replaced_grace_seconds": "1"},
        )
    )
    kinto.create_collection()
    return kinto


def test_an_empty_store_where_only_replaced_entries_name_files_is_refused(
    tmp_path_factory, request
):
    """Found by review (2026-12-05).

    Every record deleted (their files recorded as replaced, waiting for their grace), then
    the collector given an empty store that is not the servers' (a ``base_path`` another
    command created): nothing else naming a file, nothing was sampled, and the collection
    claimed the servers' replaced entries, reporting their files removed from it. A store
    that holds no file while replaced files wait for the collector is refused."""
    kinto = replacing_app(tmp_path_factory, request)
    attached = kinto.upload(kinto.record_url("r1"), b"precious").json
    kinto.app.delete(kinto.record_url("r1"), headers=ALICE)
    key = kinto.key_of(attached["location"])
    registry, served = kinto.registry, kinto.registry.attachment_store
    empty = kinto.base_path + "-not-mounted"
    os.makedirs(empty, exist_ok=True)
    registry.attachment_store = LocalStore(empty, base_url=served.base_url)
    try:
        with pytest.raises(store_check.Refused, match="the store holds no file") as refused:
            gc.collect(registry, now=after_grace())
    finally:
        registry.attachment_store = served
    assert f"  replaced -> {key}" in str(refused.value)  # The missing files, named.
    with transaction.manager:
        assert [entry["key"] for entry in replaced.every(registry.storage)] == [key]
    assert served.exists(key)


def test_a_refusal_names_files_it_found_missing(kinto_gc):
    """Found by review (2026-12-05).

    The refusals sent the operator to ``--dry-run`` to list the missing files, which is
    refused alike: they name a few themselves."""
    attached = kinto_gc.upload(kinto_gc.record_url("r1"), b"lost").json
    key = kinto_gc.key_of(attached["location"])
    kinto_gc.registry.attachment_store.delete(key)
    for dry_run in (True, False):
        with pytest.raises(store_check.Refused) as refused:
            gc.collect(kinto_gc.registry, now=after_grace(), dry_run=dry_run)
        assert "--dry-run" not in str(refused.value)
        uri = "/buckets/blog/collections/articles/records/r1"
        assert f"Missing, among others:\n  {uri} -> {key}" in str(refused.value)


def test_deleting_the_records_of_lost_files_ends_the_refusal(tmp_path_factory, request):
    """Found by review (2026-12-05).

    A store lost 6 of 10 files: refused, naming them; the operator deletes their records.
    Each deletion records its missing file as replaced: when replaced entries were sampled
    as files the store owes, every later collection was refused (the check comes before
    their claim). They are not: the collection goes on and claims them."""
    kinto = replacing_app(tmp_path_factory, request)
    store = kinto.registry.attachment_store
    for i in range(4):
        kinto.upload(kinto.record_url(f"kept{i}"), b"kept %d" % i, f"kept{i}.txt")
    for i in range(6):
        meta = kinto.upload(kinto.record_url(f"lost{i}"), b"lost %d" % i, f"lost{i}.txt").json
        store.delete(kinto.key_of(meta["location"]))
    with pytest.raises(store_check.Refused):  # As before: most records' files are missing.
        gc.collect(kinto.registry, now=after_grace())
    for i in range(6):
        kinto.app.delete(kinto.record_url(f"lost{i}"), headers=ALICE)

    report = gc.collect(kinto.registry, now=after_grace())
    assert len(report.replaced) == 6
    with transaction.manager:
        assert [e for e in replaced.every(kinto.registry.storage) if not e.get("quarantine")] == []


def test_another_nodes_collector_deleting_due_replaced_files_refuses_nothing(
    tmp_path_factory, request, monkeypatch
):
    """Found by review (2026-12-05).

    One record, and 1,100 replaced files past their grace that another node's collector
    claims and deletes by batches while this one looks for its sample (one batch as each
    look-up begins): when replaced entries were sampled, it found 1 of 32, then 1 of 101,
    and refused its whole collection. Files a collector may delete at any time do not count
    against the store."""
    from kinto_attachment.gc.orphans import DELETE_BATCH
    from kinto_attachment.state import data_file_entries, instance, references

    kinto = adopted(cached_app("memory", tmp_path_factory, request, **GRACE))
    kinto.create_collection()
    registry, store = kinto.registry, kinto.registry.attachment_store
    kinto.upload(kinto.record_url("r1"), b"kept", "kept.txt")
    keys = []
    for _ in range(DELETE_BATCH + 100):
        key = f".data-files/{instance.random_name(registry)}.bin"
        staged = store.stage(key, "application/octet-stream", random=True)
        staged.write(b"x")
        keys.append(staged.commit())
    now = data_file_entries.msec_time()
    with transaction.manager:
        replaced.add(registry.storage, keys, until=now - 1000)

    looked_for = references._looked_for

    def node_b_batch_then_look(store_, sample):
        with transaction.manager:
            due = replaced.due(registry.storage, after_grace(), DELETE_BATCH)
            claimed = replaced.claim(registry.storage, due)
        store.delete_many([entry["key"] for entry in claimed])
        return looked_for(store_, sample)

    monkeypatch.setattr(references, "_looked_for", node_b_batch_then_look)
    assert store_check.check_store(registry) == 1  # The record's file, found.
