"""Write-behind of local files: windows flushed as they fill, dropped from the page cache once
on the disk, the bytes intact, and failures reported."""

import ctypes
import hashlib
import mmap
import os

import pytest

from kinto_attachment.storage.local import LocalStore, writebehind
from kinto_attachment.storage.local.writebehind import SHORT_WINDOW, WINDOW, WriteBehind


PAGE = mmap.PAGESIZE


@pytest.fixture
def store(tmp_path):
    store = LocalStore(str(tmp_path / "files"))
    store.prepare()
    store.prepare()
    return store


@pytest.fixture
def calls(monkeypatch):
    """What write-behind asks of the kernel, still carried out."""
    recorded = []
    real_sync, real_fadvise = writebehind._sync_file_range, os.posix_fadvise

    def sync(fd, offset, length, flags):
        recorded.append(("sync", offset, length, flags))
        return real_sync(fd, offset, length, flags)

    def fadvise(fd, offset, length, advice):
        recorded.append(("drop", offset, length, advice))
        return real_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(writebehind, "_sync_file_range", sync)
    monkeypatch.setattr(writebehind.os, "posix_fadvise", fadvise)
    return recorded


def chunks(total, size=1024 * 1024 + 17):
    """Deterministic chunks whose size does not divide the window."""
    seed = hashlib.sha256(b"seed").digest() * (size // 32 + 1)
    sent = 0
    while sent < total:
        count = min(size, total - sent)
        yield seed[:count]
        sent += count


def resident_pages(path):
    """How many pages of ``path`` are in the page cache, per window (mincore)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = os.path.getsize(path)
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), size) as mapped:
        pages = (size + PAGE - 1) // PAGE
        vector = (ctypes.c_ubyte * pages)()
        anchor = ctypes.c_char.from_buffer(mapped)
        try:
            assert libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), size, vector) == 0
        finally:
            del anchor
    per_window = WINDOW // PAGE
    return [sum(v & 1 for v in vector[i : i + per_window]) for i in range(0, pages, per_window)]


def test_large_files_are_flushed_window_by_window_and_dropped_behind(store, calls):
    total = 4 * WINDOW + 1000
    staged = store.stage("big.bin")
    digest = hashlib.sha256()
    for chunk in chunks(total):
        staged.write(chunk)
        digest.update(chunk)
    key = staged.commit()

    write, wait, drop = 2, 1 | 2 | 4, os.POSIX_FADV_DONTNEED
    assert calls == [
        ("sync", 0, WINDOW, write),
        ("sync", WINDOW, WINDOW, write),
        ("sync", 0, WINDOW, wait),
        ("drop", 0, WINDOW, drop),
        ("sync", 2 * WINDOW, WINDOW, write),
        ("sync", WINDOW, WINDOW, wait),
        ("drop", WINDOW, WINDOW, drop),
        ("sync", 3 * WINDOW, WINDOW, write),
        ("sync", 2 * WINDOW, WINDOW, wait),
        ("drop", 2 * WINDOW, WINDOW, drop),
    ]
    with store.open(key) as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest.hexdigest()


def test_a_resumable_chunk_is_flushed_mib_by_mib_from_its_offset_then_read_back(store, calls):
    """Each tus chunk ends with an fsync: each MiB goes to the disk as soon as it is written,
    nothing is waited for before the fsync (a chunk of up to 8 MiB), and the chunk stays in
    the page cache until it is read back to be hashed, which drops it."""
    state = store.start_resumable("big.bin")
    offset = 3 * SHORT_WINDOW + 5
    store.append(state, 0, chunks(offset))
    store.feed_resumable(state, 0, offset, hashlib.sha256())
    calls.clear()
    length = 3 * SHORT_WINDOW + 7
    store.append(state, offset, chunks(length))

    write = 2
    assert calls == [
        ("sync", offset, SHORT_WINDOW, write),
        ("sync", offset + SHORT_WINDOW, SHORT_WINDOW, write),
        ("sync", offset + 2 * SHORT_WINDOW, SHORT_WINDOW, write),
    ]
    temp = store.path(state["temp"])
    assert sum(resident_pages(temp)) >= length // PAGE
    store.feed_resumable(state, offset, offset + length, hashlib.sha256())
    # Windows start at the request's offset: what earlier requests wrote is theirs.
    key = store.finish(state).key
    assert os.path.getsize(store.path(key)) == offset + length
    # Nothing stays cached but the page that the two chunks share (it is not the second's only).
    assert sum(resident_pages(store.path(key))) <= 1


def test_a_large_resumable_chunk_waits_for_what_is_more_than_its_lag_behind(store, calls):
    """A chunk larger than the lag (8 MiB) holds no more than that in the page cache."""
    state = store.start_resumable("big.bin")
    total = WINDOW + 2 * SHORT_WINDOW
    store.append(state, 0, chunks(total))

    write, wait = 2, 1 | 2 | 4
    windows = total // SHORT_WINDOW
    flushed = [("sync", i * SHORT_WINDOW, SHORT_WINDOW, write) for i in range(windows)]
    assert [call for call in calls if call[3] == write] == flushed
    assert [call[:3] for call in calls if call[0] == "drop"] == [
        ("drop", 0, SHORT_WINDOW),
        ("drop", SHORT_WINDOW, SHORT_WINDOW),
        ("drop", 2 * SHORT_WINDOW, total - 2 * SHORT_WINDOW),  # After the fsync.
    ]
    waited = [call[1] for call in calls if call[0] == "sync" and call[3] == wait]
    assert waited == [0, SHORT_WINDOW]
    # Each window is waited for once it is more than the lag behind what was flushed.
    assert calls.index(("sync", 0, SHORT_WINDOW, wait)) == calls.index(flushed[8]) + 1


def test_dropped_windows_leave_the_page_cache(store):
    staged = store.stage("big.bin")
    for chunk in chunks(4 * WINDOW):
        staged.write(chunk)
    path = store.path(staged.commit())
    resident = resident_pages(path)
    assert resident[:3] == [0, 0, 0]  # Written, on the disk, dropped.
    assert resident[3] == WINDOW // PAGE  # The last one stays for the downloads that follow.


def test_small_files_and_unsynced_stores_are_left_alone(tmp_path, calls):
    store = LocalStore(str(tmp_path / "files"))
    store.prepare()
    staged = store.stage("small.bin")
    for chunk in chunks(2 * WINDOW - 1):
        staged.write(chunk)
    staged.commit()
    assert [call for call in calls if call[0] == "drop"] == []

    unsynced = LocalStore(str(tmp_path / "unsynced"), fsync=False)
    unsynced.prepare()
    calls.clear()
    staged = unsynced.stage("big.bin")
    for chunk in chunks(3 * WINDOW):
        staged.write(chunk)
    staged.commit()
    assert calls == []


def test_failures_are_reported(tmp_path):
    read_end, write_end = os.pipe()
    try:
        behind = WriteBehind(write_end)
        behind.wrote(WINDOW - 1)  # Nothing asked yet.
        with pytest.raises(OSError) as failure:
            behind.wrote(1)
        assert "sync_file_range" in str(failure.value)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_without_sync_file_range_files_are_written_plainly(store, monkeypatch):
    monkeypatch.setattr(writebehind, "_sync_file_range", None)
    staged = store.stage("plain.bin")
    for chunk in chunks(3 * WINDOW):
        staged.write(chunk)
    key = staged.commit()
    assert os.path.getsize(store.path(key)) == 3 * WINDOW
