"""The local blob store: atomic placement, no overwrite, nothing outside base_path."""

import ctypes
import errno
import hashlib
import io
import os
import sys
import threading
import time

import pytest

from kinto_attachment.storage.local import TEMP_PREFIX, LocalStore, placing
from kinto_attachment.storage.local import resumable as local_resumable
from kinto_attachment.uploads.meter import HASH_BEHIND_MIN, Meter


@pytest.fixture
def store(tmp_path):
    store = LocalStore(str(tmp_path / "files"), base_url="https://cdn.example.com/files")
    store.prepare()
    return store


def listing(store):
    return sorted(
        os.path.relpath(os.path.join(root, name), store.base_path)
        for root, _, names in os.walk(store.base_path)
        for name in names
    )


def test_a_committed_file_is_in_place_and_readable_by_all(store):
    """What every store guarantees is tests/storage/test_store_contract.py; this is disk's own."""
    staged = store.stage("a/b.txt")
    staged.write(b"hello")
    assert [os.path.basename(p)[: len(TEMP_PREFIX)] for p in listing(store)] == [TEMP_PREFIX]
    assert staged.commit() == "a/b.txt"
    assert listing(store) == ["a/b.txt"]
    assert oct(os.stat(store.path("a/b.txt")).st_mode & 0o777) == "0o644"


def test_an_unsettled_commit_is_visible_at_once_and_durable_once_settled(store, monkeypatch):
    """Uploads commit without waiting for the disk: the file is in place at once, and
    ``settle()`` returns once it and its folder are fsynced, on a thread of the store."""
    released, synced = threading.Event(), []
    fsync = os.fsync

    def slow_fsync(fd):
        released.wait(10)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    staged = store.stage("a/b.txt")
    staged.write(b"hello")
    key, settle = staged.commit_unsettled()
    assert key == "a/b.txt" and listing(store) == ["a/b.txt"]
    waiting = threading.Thread(target=settle)
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive() and synced == []
    released.set()
    waiting.join(10)
    assert synced == [store.path("a/b.txt"), os.path.dirname(store.path("a/b.txt"))]


def test_failed_commit_cleans_up(store, monkeypatch):
    staged = store.stage("x.txt")
    staged.write(b"data")

    def no_rename(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(placing, "rename_unless_taken", no_rename)
    with pytest.raises(OSError):
        staged.commit()
    monkeypatch.undo()
    assert [p for p in listing(store) if TEMP_PREFIX in p] == []


def _fails(errno_value):
    """A ``renameat2`` that fails with ``errno_value``."""

    def renameat2(*args):
        ctypes.set_errno(errno_value)
        return -1

    return renameat2


#: How a file is renamed: the C library's renameat2 (this machine's), a file system refusing
#: its flag, a C library without it.
PLACINGS = {
    "renameat2": lambda monkeypatch: None,
    "refused": lambda m: m.setattr(placing, "_RENAMEAT2", _fails(errno.EINVAL)),
    "placeholder": lambda monkeypatch: monkeypatch.setattr(placing, "_RENAMEAT2", None),
}


@pytest.mark.parametrize("how", sorted(PLACINGS))
def test_a_file_is_renamed_onto_a_free_name_only(tmp_path, monkeypatch, how):
    PLACINGS[how](monkeypatch)
    (tmp_path / "new").write_bytes(b"new")
    (tmp_path / "taken").write_bytes(b"there")
    assert placing.rename_unless_taken(tmp_path / "new", tmp_path / "taken") is False
    assert (tmp_path / "taken").read_bytes() == b"there" and (tmp_path / "new").exists()
    assert placing.rename_unless_taken(tmp_path / "new", tmp_path / "free") is True
    assert (tmp_path / "free").read_bytes() == b"new" and not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["free", "taken"]


def test_renaming_fails_as_the_system_says(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        placing.rename_unless_taken(tmp_path / "missing", tmp_path / "free")
    monkeypatch.setattr(placing, "_RENAMEAT2", _fails(errno.EACCES))
    (tmp_path / "new").write_bytes(b"new")
    with pytest.raises(PermissionError):
        placing.rename_unless_taken(tmp_path / "new", tmp_path / "free")
    assert not (tmp_path / "free").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="renameat2 is Linux's")
def test_on_linux_no_placeholder_is_made(store, monkeypatch):
    """One inode per stored file: the name is not reserved by an empty file first."""
    assert placing._RENAMEAT2 is not None

    def placeholder(source, destination):
        raise AssertionError("a placeholder was made")

    monkeypatch.setattr(placing, "_through_placeholder", placeholder)
    keys = []
    for content in (b"first", b"second"):
        staged = store.stage("x.txt")
        staged.write(content)
        keys.append(staged.commit())
    assert keys == ["x.txt", "x-1.txt"] and listing(store) == sorted(keys)
    for key, content in zip(keys, (b"first", b"second"), strict=True):
        with store.open(key) as stream:
            assert stream.read() == content


def test_keys_cannot_escape(store, tmp_path):
    for key in ("../outside.txt", "a/../../outside.txt", "", "."):
        with pytest.raises(ValueError):
            store.path(key)
    assert store.path("/etc/passwd") == os.path.join(store.base_path, "etc", "passwd")
    os.symlink(tmp_path, os.path.join(store.base_path, "link"))
    with pytest.raises(ValueError, match="outside"):
        store.path("link/escaped.txt")


def test_url(store):
    # As kinto-attachment joins them (urljoin): without a trailing slash, the base's last
    # segment is replaced by the key. ``key_for_url`` reads both back.
    assert store.url("a b/é.txt") == "https://cdn.example.com/a%20b/%C3%A9.txt"
    assert store.key_for_url("https://cdn.example.com/a%20b/%C3%A9.txt") == "a b/é.txt"


# Concatenation (tus): what every store does is in the contract; here, disk's own way.


def finished_parts(store, contents):
    parts = []
    for number, content in enumerate(contents):
        state = store.start_resumable(f"part{number}.bin")
        store.append(state, 0, [content])
        parts.append((state, len(content)))
    return parts


class Digest:
    """What the digest is fed; fails once it has seen ``fail_after`` bytes."""

    def __init__(self, fail_after=None):
        self.fed, self.fail_after = b"", fail_after

    def update(self, chunk):
        self.fed += bytes(chunk)
        if self.fail_after is not None and len(self.fed) > self.fail_after:
            raise InterruptedError


CONTENTS = [b"first part " * 1000, b"second " * 500, b"third"]


def test_the_first_upload_becomes_the_blob_without_a_copy(store):
    """The blob is a second name of the first upload's file, grown by the others: its bytes
    are neither read nor written again."""
    parts = finished_parts(store, CONTENTS)
    first = store.path(parts[0][0]["temp"])
    digest = Digest()
    progress = store.concatenate(parts, "whole.bin", None, digest)
    assert digest.fed == b"".join(CONTENTS[1:])
    blob = store.path(progress.key)
    assert os.stat(blob).st_ino == os.stat(first).st_ino
    assert oct(os.stat(blob).st_mode & 0o777) == "0o644"
    store.delete_many(progress.obsolete)  # Once the transaction has committed.
    with open(blob, "rb") as f:
        assert f.read() == b"".join(CONTENTS)
    assert listing(store) == ["whole.bin"]


class SlowHash:
    """A hash that reads each chunk a while after it is handed it, as a busy hashing thread
    does: it sees a buffer reused too soon."""

    def __init__(self):
        self.fed = b""

    def update(self, chunk):
        time.sleep(0.01)
        self.fed += bytes(chunk)


def test_parts_are_hashed_behind_from_buffers_reused_only_once_hashed(store, monkeypatch):
    """The parts after the first are read into two buffers in turn, each hashed on a hashing
    thread while the other is read and written: what is hashed is what the parts hold."""
    monkeypatch.setattr(local_resumable, "COPY_SIZE", HASH_BEHIND_MIN)
    contents = [os.urandom(100), *(os.urandom(5 * HASH_BEHIND_MIN + n) for n in (0, 7))]
    parts = finished_parts(store, contents)
    slow = SlowHash()
    meter = Meter(also=[slow])
    progress = store.concatenate(parts, "whole.bin", None, meter)
    meter.settle()
    expected = hashlib.sha256(b"".join(contents[1:])).hexdigest()
    assert (
        hashlib.sha256(slow.fed).hexdigest() == expected
    )  # (Hashes: pytest would diff the bytes.)
    assert meter.sha256.hexdigest() == expected
    with open(store.path(progress.key), "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(b"".join(contents)).digest()


def test_a_failed_concatenation_gives_the_first_upload_back_as_it_was(store):
    parts = finished_parts(store, CONTENTS)
    first = store.path(parts[0][0]["temp"])
    with pytest.raises(InterruptedError):
        store.concatenate(parts, "whole.bin", None, Digest(fail_after=100))
    with open(first, "rb") as f:
        assert f.read() == CONTENTS[0]
    assert sorted(listing(store)) == sorted(state["temp"] for state, _ in parts)


def test_bytes_beyond_the_first_uploads_length_are_not_in_the_blob(store):
    """A request that failed after writing past the recorded offset, or a killed
    concatenation, leaves bytes beyond it: the blob starts with the recorded ones only."""
    parts = finished_parts(store, CONTENTS)
    with open(store.path(parts[0][0]["temp"]), "ab") as f:
        f.write(b"written by a request that failed")
    progress = store.concatenate(parts, "whole.bin", None, Digest())
    with open(store.path(progress.key), "rb") as f:
        assert f.read() == b"".join(CONTENTS)


def test_a_first_upload_shorter_than_recorded_is_lost(store):
    parts = finished_parts(store, CONTENTS)
    os.truncate(store.path(parts[0][0]["temp"]), 10)
    with pytest.raises(FileNotFoundError):
        store.concatenate(parts, "whole.bin", None, Digest())
    assert os.path.getsize(store.path(parts[0][0]["temp"])) == 10
    assert sorted(listing(store)) == sorted(state["temp"] for state, _ in parts)


@pytest.mark.parametrize("error", [errno.EXDEV, errno.EPERM, errno.ENOTSUP])
def test_where_files_cannot_be_linked_the_first_upload_is_copied(store, monkeypatch, error):
    parts = finished_parts(store, CONTENTS)

    def refuse(source, destination):
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "link", refuse)
    progress = store.concatenate(parts, "whole.bin", None, Digest())
    assert os.stat(store.path(progress.key)).st_nlink == 1
    with open(store.path(progress.key), "rb") as f:
        assert f.read() == b"".join(CONTENTS)


def test_other_link_failures_are_the_stores(store, monkeypatch):
    parts = finished_parts(store, CONTENTS)

    def fail(source, destination):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "link", fail)
    with pytest.raises(OSError, match="I/O error"):
        store.concatenate(parts, "whole.bin", None, Digest())
    assert sorted(listing(store)) == sorted(state["temp"] for state, _ in parts)


def test_a_staged_file_that_grows_an_old_upload_is_dated_now(store):
    """The garbage collector takes temporary files older than its grace for a killed
    process's: one being concatenated must not look as old as the upload it grows."""
    parts = finished_parts(store, CONTENTS)
    first = store.path(parts[0][0]["temp"])
    day_ago = os.stat(first).st_mtime - 86400
    os.utime(first, (day_ago, day_ago))
    staged = store.stage("whole.bin")
    assert staged.grow(first, len(CONTENTS[0]))
    staged_files = [b for b in store.iter_blobs() if b.temporary and "/" not in b.key]
    assert len(staged_files) == 1
    assert staged_files[0].modified_ms > (day_ago + 3600) * 1000
    staged.abort()
    with open(first, "rb") as f:
        assert f.read() == CONTENTS[0]


def test_a_failed_commit_gives_the_first_upload_back_as_it_was(store, monkeypatch):
    """The rename onto the blob's name fails (the file is closed by then): the staged file
    goes, and the upload's file is cut back, with its mode."""
    parts = finished_parts(store, CONTENTS)
    first = store.path(parts[0][0]["temp"])
    mode = os.stat(first).st_mode

    def refuse(source, destination):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(placing, "rename_unless_taken", refuse)
    with pytest.raises(OSError, match="I/O error"):
        store.concatenate(parts, "whole.bin", None, Digest())
    assert os.stat(first).st_mode == mode
    with open(first, "rb") as f:
        assert f.read() == CONTENTS[0]
    assert sorted(listing(store)) == sorted(state["temp"] for state, _ in parts)


def test_a_range_is_a_file_of_its_own(store):
    """A range reads as a seekable file of its bytes alone (found by review, 2026-12-05:
    waitress sends such a file from its event loop, where a client that reads nothing is
    timed out, instead of holding a thread): positions, the end and reads are the range's,
    never past it."""
    staged = store.stage("r/k.bin")
    staged.write(b"0123456789")
    key = staged.commit()
    with store.open(key, 2, 6) as window:
        assert window.seekable() and window.tell() == 0
        assert window.seek(0, io.SEEK_END) == 5  # What waitress asks to know the size.
        assert window.seek(1) == 1 and window.read(2) == b"34"
        assert window.seek(-1, io.SEEK_CUR) == 2 and window.read() == b"456"
        assert window.read() == b"" and window.seek(100) == 5 and window.read(3) == b""
        assert window.seek(-100, io.SEEK_CUR) == 0 and window.read(100) == b"23456"


@pytest.mark.parametrize("key", ["a/file.txt/under-a-file.txt", "a/" + "n" * 300 + ".txt"])
def test_a_key_no_file_can_have_is_a_missing_blob(store, key):
    """Found by review (2026-12-05).

    A record's ``location`` may name a key no file can have (kinto-attachment took any
    client's ``attachment``): a name longer than the file system takes, or a file where the
    key has a folder. ``stat`` raised (``ENAMETOOLONG``, ``ENOTDIR``), which stopped adoption
    and every round of the collector for good, and was a 503 where a download should say the
    file is missing: such a key is a missing blob, for every operation."""
    staged = store.stage("a/file.txt")
    staged.write(b"a file where the key wants a folder")
    assert staged.commit() == "a/file.txt"
    assert store.stat(key) is None and not store.exists(key)
    with pytest.raises(FileNotFoundError):
        store.open(key)
    store.delete(key)  # Nothing to delete: no error.
    assert store.exists("a/file.txt")
