"""The local store on a disk that ignores case and Unicode normalisation in names (macOS's
APFS and HFS+, Windows' NTFS, a casefolded ext4), case-preserving: two names that differ by
case only are one file, and a folder is listed under the name it was created with.

Buckets ``Photos`` and ``photos`` (Kinto ids are case-sensitive) then share one folder under
``folder = {bucket_id}/{collection_id}``, listed as ``Photos/``: the listing names the files of
``photos`` ``Photos/...``, which no record of ``photos`` names as such. Run on a real such file
system (:mod:`tests.support.foldingfs`, mounted with FUSE).
"""

import os
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest
import transaction

from kinto_attachment import adoption, gc
from kinto_attachment.state import data_file_entries, instance, links
from kinto_attachment.storage.local import listing

from ..conftest import ALICE, IN_CI, Kinto, build_settings, make_app


ROOT = Path(__file__).resolve().parents[2]


GRACE_SECONDS = 60
FOLDERS = {
    "kinto.attachment.folder": "{bucket_id}/{collection_id}",
    "kinto.attachment.gc.orphans_grace_seconds": str(GRACE_SECONDS),
}


@pytest.fixture(scope="module")
def folding_disk(tmp_path_factory):
    """A mount point of :mod:`tests.support.foldingfs` (FUSE); skipped where FUSE cannot
    mount (no ``/dev/fuse``, no right to mount), but under ``CI=true``, where it fails."""
    source, mountpoint = tmp_path_factory.mktemp("folding-source"), tmp_path_factory.mktemp("mnt")
    command = [sys.executable, "-m", "tests.support.foldingfs", str(source), str(mountpoint)]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not os.path.ismount(mountpoint) and process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            break
        time.sleep(0.05)
    if not os.path.ismount(mountpoint):
        message = f"FUSE cannot mount here: {process.communicate()[1][-500:]}"
        if IN_CI:
            pytest.fail(message + " (CI=true: the test must run)", pytrace=False)
        pytest.skip(message)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover (a stuck FUSE process)
            process.kill()


def app_on(folding_disk, tmp_path, **settings):
    """An app whose ``base_path`` is on the folding disk (a folder of its own per test)."""
    base_path = folding_disk / tmp_path.name
    base_path.mkdir()
    settings = build_settings("memory", str(base_path), **FOLDERS, **settings)
    kinto = Kinto(make_app(settings), str(base_path))
    kinto.registry.attachment_adopted = False
    adoption.adopt(kinto.registry)
    return kinto


@pytest.fixture
def kinto(folding_disk, tmp_path):
    return app_on(folding_disk, tmp_path)


def after_grace():
    return data_file_entries.msec_time() + (GRACE_SECONDS + 60) * 1000


def attach(kinto, bucket, content, filename="file.txt"):
    """A record of ``bucket``/``c`` with ``content`` attached: its location."""
    kinto.app.put_json(f"/v1/buckets/{bucket}", {}, headers=ALICE)
    kinto.app.put_json(f"/v1/buckets/{bucket}/collections/c", {}, headers=ALICE)
    url = f"/v1/buckets/{bucket}/collections/c/records/r"
    return kinto.upload(url, content, filename).json["location"]


def test_the_disk_folds_names(folding_disk):
    """What the other tests rely on: the mount point is such a disk."""
    (folding_disk / "Probe").mkdir()
    (folding_disk / "probe" / "caf\u00e9").write_bytes(b"x")
    decomposed = unicodedata.normalize("NFD", "CAF\u00c9")
    assert (folding_disk / "PROBE" / decomposed).read_bytes() == b"x"
    assert os.listdir(folding_disk / "probe") == ["caf\u00e9"]
    assert "Probe" in os.listdir(folding_disk)


def test_the_collector_keeps_the_files_of_buckets_whose_ids_differ_by_case(kinto):
    """The files of ``photos``, listed under ``Photos/``, are referenced: never orphans."""
    upper = attach(kinto, "Photos", b"upper")
    lower = attach(kinto, "photos", b"lower")
    assert sorted(os.listdir(kinto.base_path)) == ["Photos"]

    report = gc.collect(kinto.registry, now=after_grace())

    assert report.orphans == [] and report.dangling == []
    assert kinto.read(upper) == b"upper" and kinto.read(lower) == b"lower"


def test_names_of_clients_differing_by_case_are_two_files_and_kept(folding_disk, tmp_path):
    """``randomize = false``: ``Photos`` and ``photos`` each attach ``report.txt``; the
    second name is taken on this disk (the first's file), so the second upload takes another
    (never writing over the first's), and the collector keeps both."""
    kinto = app_on(folding_disk, tmp_path, **{"kinto.attachment.randomize": "false"})
    upper = attach(kinto, "Photos", b"upper", "report.txt")
    lower = attach(kinto, "photos", b"lower", "report.txt")
    assert kinto.key_of(upper).lower() != kinto.key_of(lower).lower()

    report = gc.collect(kinto.registry, now=after_grace())

    assert report.orphans == [] and report.dangling == []
    assert kinto.read(upper) == b"upper" and kinto.read(lower) == b"lower"


def test_a_real_orphan_of_such_a_folder_still_goes(kinto):
    """A file that no record names, beside referenced ones in a folder listed under
    another case, is still an orphan."""
    lower = attach(kinto, "photos", b"lower")
    attach(kinto, "Photos", b"upper")
    staged = kinto.registry.attachment_store.stage(
        f"photos/c/{instance.random_name(kinto.registry)}.bin"
    )
    staged.write(b"stray")
    stray = staged.commit()

    report = gc.collect(kinto.registry, now=after_grace())

    assert [listed.key.lower() for listed in report.orphans] == [stray.lower()]
    assert kinto.read(lower) == b"lower"


def _plain_app(tmp_path, **settings):
    base_path = tmp_path / "files"
    base_path.mkdir()
    full = build_settings(
        "memory",
        str(base_path),
        **{"kinto.attachment.folder": "{bucket_id}/{collection_id}"},
        **settings,
    )
    kinto = Kinto(make_app(full), str(base_path))
    return kinto


def _aged(kinto, key):
    two_days_ago = time.time() - 2 * 86400
    os.utime(os.path.join(kinto.base_path, key), (two_days_ago, two_days_ago))


def test_plain_disk_adoption_retains_a_kept_file_whose_name_folds_as_a_referenced_one(tmp_path):
    """Found by a review of the fix (2026-12-05).

    It was: the index held the folded form of every key on every disk, so on an ordinary
    (case-sensitive) disk the first adoption did not retain ``blog/c/Report.txt``, a file
    kinto-attachment kept on purpose, beside the referenced ``blog/c/report.txt``: it went
    as an orphan once the record moved on. Fixed: names fold only where the disk does (a
    probe of ``base_path``)."""
    kinto = _plain_app(tmp_path, **{"kinto.attachment.randomize": "false"})
    kinto.app.put_json("/v1/buckets/blog", {}, headers=ALICE)
    kinto.app.put_json("/v1/buckets/blog/collections/c", {}, headers=ALICE)
    store = kinto.registry.attachment_store
    staged = store.stage("blog/c/Report.txt", "text/plain")
    staged.write(b"version 1, kept on purpose by keep_old_files")
    kept = staged.commit()
    assert kept == "blog/c/Report.txt"
    current = kinto.upload("/v1/buckets/blog/collections/c/records/r", b"v2", "report.txt")
    assert kinto.key_of(current.json["location"]) == "blog/c/report.txt"
    # Another record keeps a file named: the store is the servers' (untagged names judged).
    kinto.upload("/v1/buckets/blog/collections/c/records/other", b"other", "other.txt")
    _aged(kinto, kept)
    kinto.registry.attachment_adopted = False

    report = gc.collect(kinto.registry)
    with transaction.manager:
        retained = [r["key"] for r in links.retained(kinto.registry.storage)]
    # The record moves on: its old file goes (replaced), and nothing names "report.txt".
    kinto.app.delete("/v1/buckets/blog/collections/c/records/r", headers=ALICE)
    day = 86400 * 1000
    first = gc.collect(kinto.registry, now=gc.data_file_entries.msec_time() + 3 * day)
    later = gc.collect(kinto.registry, now=gc.data_file_entries.msec_time() + 4 * day)
    deleted = [o.key for o in first.orphans + later.orphans]

    assert store.exists(kept) and kept in retained, (
        f"adoption kept {report.kept_at_adoption}, retained {retained}, not {kept!r}; "
        f"deleted as orphans since: {deleted}"
    )


def test_an_ordinary_disk_does_not_fold_names(tmp_path):
    """The probe looks an entry of ``base_path`` up with its case swapped: on an ordinary disk
    ``A`` and ``a`` are two files (no folding); an empty folder tells nothing (None: asked
    again)."""
    assert listing.folds_names(str(tmp_path)) is None
    (tmp_path / "A").write_bytes(b"upper")
    (tmp_path / "a").write_bytes(b"lower")
    assert listing.folds_names(str(tmp_path)) is False


def test_an_entry_deleted_while_the_probe_looks_at_it_is_passed_over(
    folding_disk, tmp_path, monkeypatch
):
    """Found by a review of a fix (2026-12-05).

    It was: the entry the probe looked up with its case swapped, deleted meanwhile, made it
    answer "no folding", for good, on a disk that folds. Fixed: the next entry is asked."""
    base_path = folding_disk / tmp_path.name
    base_path.mkdir()
    (base_path / "gone").write_bytes(b"x")
    (base_path / "bucket").mkdir()
    lstat, asked = os.lstat, []

    def deleted_while_looked_at(path, *args, **kwargs):
        if not asked and os.path.basename(path) in ("GONE", "BUCKET"):
            asked.append(path)
            first = os.path.join(os.path.dirname(path), os.path.basename(path).lower())
            (os.rmdir if os.path.isdir(first) else os.unlink)(first)
        return lstat(path, *args, **kwargs)

    monkeypatch.setattr(listing.os, "lstat", deleted_while_looked_at)
    assert listing.folds_names(str(base_path)) is True
    assert len(asked) == 1
