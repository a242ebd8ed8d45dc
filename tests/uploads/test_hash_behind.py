"""Resumable uploads hashed behind their answers (:mod:`kinto_attachment.uploads.hash_behind`):
the attachment's sha256 is the hash of every byte whichever process hashed which chunk, and a
chunk that may complete its upload is hashed on its way in."""

import base64
import hashlib
import os
import threading

import pytest

from kinto_attachment.state import tus_uploads
from kinto_attachment.state.hashstate import ResumableSha256
from kinto_attachment.uploads import hash_behind

from ..conftest import ALICE, cached_app
from ..views.test_resumable import RECORD, create, head, patch


KiB = 1024


@pytest.fixture
def kinto_tus(backend, tmp_path_factory, request):
    """Each storage backend, local files (S3 cannot read a chunk back: hashed on its way)."""
    kinto = cached_app(backend, tmp_path_factory, request)
    kinto.create_collection()
    return kinto


def saved(kinto, url):
    return tus_uploads.get(kinto.registry.storage, url.rsplit("/", 1)[-1])


def attachment(kinto):
    return kinto.app.get(RECORD, headers=ALICE).json["data"]["attachment"]


def sha256_of(state):
    return ResumableSha256(base64.b64decode(state))


def test_chunks_before_the_last_are_hashed_once_answered(kinto_tus):
    """A chunk that cannot complete the upload is saved with the hash of the bytes before it
    at most; this process's thread moves it on, and the last chunk, hashed on its way in,
    makes the hash of them all."""
    content = os.urandom(96 * KiB + 5)
    _, url = create(kinto_tus.app, len(content))
    patch(kinto_tus.app, url, content[: 32 * KiB], 0)
    first = saved(kinto_tus, url)
    assert first["hashed"] == 0 and first["offset"] == 32 * KiB
    hash_behind.caught_up(kinto_tus.registry.attachment_store, first)  # The thread done.
    patch(kinto_tus.app, url, content[32 * KiB : 64 * KiB], 32 * KiB)
    second = saved(kinto_tus, url)
    # The checkpoint moved on to what the thread hashed by then: the first chunk.
    assert second["hashed"] == 32 * KiB
    hashed = sha256_of(second["sha256"]).hexdigest()
    assert hashed == hashlib.sha256(content[: 32 * KiB]).hexdigest()

    patch(kinto_tus.app, url, content[64 * KiB :], 64 * KiB)

    assert attachment(kinto_tus)["hash"] == hashlib.sha256(content).hexdigest()
    assert saved(kinto_tus, url) is None


def test_a_store_that_cannot_read_back_hashes_every_chunk_on_its_way(kinto):
    kinto.create_collection()
    _, url = create(kinto.app, 64 * KiB)
    patch(kinto.app, url, os.urandom(8 * KiB), 0)
    expected = 0 if kinto.bucket is None else 8 * KiB
    assert saved(kinto, url)["hashed"] == expected


def test_another_process_reads_back_what_this_one_did_not_hash(kinto_tus):
    """Chunks taken by another node, or before a restart: nothing of them in this process,
    the completing request reads them back."""
    content = os.urandom(80 * KiB)
    _, url = create(kinto_tus.app, len(content))
    for offset in range(0, 64 * KiB, 16 * KiB):
        patch(kinto_tus.app, url, content[offset : offset + 16 * KiB], offset)
        hash_behind.forget(url.rsplit("/", 1)[-1])  # As if each had gone to another process.

    patch(kinto_tus.app, url, content[64 * KiB :], 64 * KiB)

    assert attachment(kinto_tus)["hash"] == hashlib.sha256(content).hexdigest()


def test_a_state_saved_before_hashes_were_deferred_hashes_all_its_bytes(kinto_memory):
    """An upload in progress across the upgrade: no ``hashed``, its ``sha256`` covers it all."""
    kinto_memory.create_collection()
    content = os.urandom(40 * KiB)
    _, url = create(kinto_memory.app, len(content))
    patch(kinto_memory.app, url, content[: 20 * KiB], 0)
    upload = saved(kinto_memory, url)
    store = kinto_memory.registry.attachment_store
    whole = hash_behind.caught_up(store, upload)
    older = {**upload, "sha256": base64.b64encode(whole.state()).decode("ascii")}
    del older["hashed"]
    tus_uploads.save(kinto_memory.registry.storage, older)
    hash_behind.forget(upload["id"])

    patch(kinto_memory.app, url, content[20 * KiB :], 20 * KiB)

    assert attachment(kinto_memory)["hash"] == hashlib.sha256(content).hexdigest()


def test_a_chunk_larger_than_the_cache_keeps_is_hashed_on_its_way(kinto_memory, monkeypatch):
    """Read back past what the write-behind keeps cached, it would come from the disk."""
    kinto_memory.create_collection()
    store = kinto_memory.registry.attachment_store
    monkeypatch.setattr(store, "REREAD_MAX", 16 * KiB)
    _, url = create(kinto_memory.app, 64 * KiB)
    patch(kinto_memory.app, url, os.urandom(16 * KiB + 1), 0)
    assert saved(kinto_memory, url)["hashed"] == 16 * KiB + 1


def test_a_wrong_checksum_of_a_deferred_chunk_is_refused(kinto_memory):
    """``Upload-Checksum`` is checked on the way in, whether the sha256 waits or not."""
    kinto_memory.create_collection()
    _, url = create(kinto_memory.app, 64 * KiB)
    chunk = os.urandom(16 * KiB)
    wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    patch(kinto_memory.app, url, chunk, 0, status=460, **{"Upload-Checksum": f"sha1 {wrong}"})
    assert head(kinto_memory.app, url).headers["Upload-Offset"] == "0"
    right = base64.b64encode(hashlib.sha1(chunk).digest()).decode()
    patch(kinto_memory.app, url, chunk, 0, **{"Upload-Checksum": f"sha1 {right}"})
    assert saved(kinto_memory, url)["hashed"] == 0


def test_the_thread_going_behind_is_bounded(kinto_memory, monkeypatch):
    """Beyond ``PENDING_MAX`` chunks waiting for the thread, chunks are hashed on their way
    in again: the waits, and the pages kept cached for the thread, stay bounded."""
    kinto_memory.create_collection()
    store = kinto_memory.registry.attachment_store
    release = threading.Event()
    feed = store.feed_resumable

    def slow_feed(*args):
        release.wait(10)
        return feed(*args)

    monkeypatch.setattr(store, "feed_resumable", slow_feed)
    monkeypatch.setattr(hash_behind, "PENDING_MAX", 2)
    urls = [create(kinto_memory.app, 64 * KiB)[1] for _ in range(3)]
    try:
        for url in urls:
            patch(kinto_memory.app, url, os.urandom(8 * KiB), 0)
        hashed = [saved(kinto_memory, url)["hashed"] for url in urls]
    finally:
        release.set()
    assert hashed == [0, 0, 8 * KiB]


def test_an_upload_gone_under_the_thread_is_no_error(kinto_memory):
    """Terminated (or expired) before the thread reads its bytes: nothing to remember, and
    the next requests find no upload."""
    kinto_memory.create_collection()
    store = kinto_memory.registry.attachment_store
    _, url = create(kinto_memory.app, 64 * KiB)
    patch(kinto_memory.app, url, os.urandom(8 * KiB), 0)
    upload = saved(kinto_memory, url)
    store.discard(upload["store"])
    hash_behind.forget(upload["id"])
    hash_behind.hash_later(store, upload)
    hash_behind._memory.wait(upload["id"])
    assert hash_behind.checkpoint(upload) == (0, upload["sha256"])
    with pytest.raises(FileNotFoundError):
        hash_behind.caught_up(store, upload)


def test_what_a_process_remembers_is_bounded(kinto_memory, monkeypatch):
    kinto_memory.create_collection()
    monkeypatch.setattr(hash_behind, "REMEMBERED", 2)
    urls = [create(kinto_memory.app, 64 * KiB)[1] for _ in range(3)]
    uploads = []
    for url in urls:
        patch(kinto_memory.app, url, os.urandom(8 * KiB), 0)
        upload = saved(kinto_memory, url)
        hash_behind._memory.wait(upload["id"])
        uploads.append(upload)
    assert [hash_behind.checkpoint(u)[0] for u in uploads] == [0, 8 * KiB, 8 * KiB]


def test_a_reused_buffer_is_hashed_as_bytes_are():
    buffer = bytearray(os.urandom(1000))
    sha256 = ResumableSha256()
    sha256.update(memoryview(buffer)[10:500])
    sha256.update(b"")
    sha256.update(memoryview(buffer)[:0])
    assert sha256.hexdigest() == hashlib.sha256(bytes(buffer[10:500])).hexdigest()
