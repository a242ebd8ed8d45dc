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
from kinto_attachment.views import tus_steps
from kinto_attachment.web import streams

from ..conftest import ALICE, UNHELD, cached_app
from ..views.test_resumable import RECORD, create, head, patch


KiB = 1024
EMPTY = base64.b64encode(ResumableSha256().state()).decode("ascii")


@pytest.fixture
def kinto_tus(backend, tmp_path_factory, request):
    """Each storage backend, local files (S3 cannot read a chunk back: hashed on its way)."""
    kinto = cached_app(backend, tmp_path_factory, request)
    kinto.create_collection()
    return kinto


def saved(kinto, url):
    return tus_uploads.get(kinto.registry.storage, url.rsplit("/", 1)[-1])


def hashed(kinto, url):
    """How many of its bytes the upload's saved state hashes."""
    return hash_behind.saved(saved(kinto, url))[0]


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
    assert hash_behind.saved(first)[0] == 0 and first["offset"] == 32 * KiB
    assert first["sha256"] is None  # A server of an earlier release fails on it: no wrong hash.
    hash_behind.caught_up(kinto_tus.registry.attachment_store, first)  # The thread done.
    patch(kinto_tus.app, url, content[32 * KiB : 64 * KiB], 32 * KiB)
    second = saved(kinto_tus, url)
    # The checkpoint moved on to what the thread hashed by then: the first chunk.
    done, state = hash_behind.saved(second)
    assert done == 32 * KiB
    assert sha256_of(state).hexdigest() == hashlib.sha256(content[: 32 * KiB]).hexdigest()

    patch(kinto_tus.app, url, content[64 * KiB :], 64 * KiB)

    assert attachment(kinto_tus)["hash"] == hashlib.sha256(content).hexdigest()
    assert saved(kinto_tus, url) is None


def test_a_store_that_cannot_read_back_hashes_every_chunk_on_its_way(kinto):
    kinto.create_collection()
    _, url = create(kinto.app, 64 * KiB)
    patch(kinto.app, url, os.urandom(8 * KiB), 0)
    expected = 0 if kinto.bucket is None else 8 * KiB
    assert hashed(kinto, url) == expected


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
    """An upload in progress across the upgrade: no ``checkpoint``, its ``sha256`` covers it
    all."""
    kinto_memory.create_collection()
    content = os.urandom(40 * KiB)
    _, url = create(kinto_memory.app, len(content))
    patch(kinto_memory.app, url, content[: 20 * KiB], 0)
    upload = saved(kinto_memory, url)
    store = kinto_memory.registry.attachment_store
    whole = hash_behind.caught_up(store, upload)
    older = {**upload, "sha256": base64.b64encode(whole.state()).decode("ascii")}
    del older["checkpoint"]
    tus_uploads.save(kinto_memory.registry.storage, older)
    hash_behind.forget(upload["id"])

    patch(kinto_memory.app, url, content[20 * KiB :], 20 * KiB)

    assert attachment(kinto_memory)["hash"] == hashlib.sha256(content).hexdigest()


def previous_append():
    """``tus_steps.append`` of the release before hashes were deferred (6d1f395), as a server
    not upgraded yet would run it: it hashes every chunk from the saved ``sha256``, saves it
    whole, and keeps the fields it does not know."""

    def append(request, upload, offset, keep_received=False):  # Kept nothing of a cut body.
        stream, length = streams.request_body(request)
        sha256 = ResumableSha256(base64.b64decode(upload["sha256"]))
        store = request.registry.attachment_store
        body = []
        for chunk in streams.read_chunks(stream, length):
            sha256.update(chunk)
            body.append(chunk)
        progress = store.append(upload["store"], offset, body)
        state = base64.b64encode(sha256.state()).decode("ascii")
        upload = {**upload, "offset": offset + sum(map(len, body)), "sha256": state}
        return tus_steps.record(request, {**upload, "store": progress.state}), None

    return append


def test_a_chunk_a_server_of_the_previous_release_appended_is_hashed_once(
    kinto_memory, monkeypatch
):
    """Found by review (2026-12-05).

    A rolling upgrade: a server of the previous release takes a chunk of an upload whose
    chunk before it this release hashed on its way. It saves ``sha256`` whole and keeps the
    ``checkpoint`` it does not know (at another offset, then): not taken."""
    kinto_memory.create_collection()
    content = os.urandom(48 * KiB)
    _, url = create(kinto_memory.app, len(content))
    monkeypatch.setattr(hash_behind, "PENDING_MAX", 0)  # This release hashes on the way...
    patch(kinto_memory.app, url, content[: 8 * KiB], 0)
    monkeypatch.undo()
    patch(kinto_memory.app, url, content[8 * KiB : 16 * KiB], 8 * KiB)  # ...then behind.
    hash_behind.caught_up(kinto_memory.registry.attachment_store, saved(kinto_memory, url))
    patch(kinto_memory.app, url, content[16 * KiB : 24 * KiB], 16 * KiB)  # A checkpoint.
    assert saved(kinto_memory, url)["checkpoint"] is not None
    with monkeypatch.context() as m:
        m.setattr(tus_steps, "append", previous_append())
        # The previous release fails on a state whose sha256 is not whole (no wrong hash)...
        patch(kinto_memory.app, url, content[24 * KiB : 32 * KiB], 24 * KiB, status=500)
    # ...and takes a chunk of an upload whose last chunk was hashed on its way.
    monkeypatch.setattr(hash_behind, "PENDING_MAX", 0)
    patch(kinto_memory.app, url, content[24 * KiB : 32 * KiB], 24 * KiB)
    monkeypatch.undo()
    with monkeypatch.context() as m:
        m.setattr(tus_steps, "append", previous_append())
        patch(kinto_memory.app, url, content[32 * KiB : 40 * KiB], 32 * KiB)
    assert saved(kinto_memory, url)["checkpoint"] is None

    patch(kinto_memory.app, url, content[40 * KiB :], 40 * KiB)

    assert attachment(kinto_memory)["hash"] == hashlib.sha256(content).hexdigest()


def test_a_checkpoint_saved_at_another_offset_is_not_taken(kinto_memory):
    """Found by review (2026-12-05): a checkpoint a server of the previous release carried
    over while it moved the offset and the whole ``sha256`` on."""
    upload = {
        "offset": 30,
        "sha256": "whole",
        "checkpoint": {"hashed": 10, "sha256": "c", "offset": 20},
    }
    assert hash_behind.saved(upload) == (30, "whole")
    upload["checkpoint"]["offset"] = 30
    assert hash_behind.saved(upload) == (10, "c")
    assert hash_behind.saved({"offset": 30, "sha256": None, "checkpoint": None})[0] == 0


def test_a_chunk_larger_than_the_cache_keeps_is_hashed_on_its_way(kinto_memory, monkeypatch):
    """Read back past what the write-behind keeps cached, it would come from the disk."""
    kinto_memory.create_collection()
    store = kinto_memory.registry.attachment_store
    monkeypatch.setattr(store, "REREAD_MAX", 16 * KiB)
    _, url = create(kinto_memory.app, 64 * KiB)
    patch(kinto_memory.app, url, os.urandom(16 * KiB + 1), 0)
    assert hashed(kinto_memory, url) == 16 * KiB + 1


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
    assert hashed(kinto_memory, url) == 0


def test_the_thread_going_behind_is_bounded(kinto_memory, monkeypatch):
    """Beyond ``PENDING_MAX`` chunks waiting for the thread, chunks are hashed on their way
    in again: the waits, and the pages kept cached for the thread, stay bounded. On a
    thread of its own: jobs of the tests before, still pending in the process's, counted
    (once in four runs of the suite, the second chunk was hashed on its way)."""
    monkeypatch.setattr(hash_behind, "_memory", hash_behind._Memory())
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
        done = [hashed(kinto_memory, url) for url in urls]
    finally:
        release.set()
    assert done == [0, 0, 8 * KiB]


def test_an_upload_gone_under_the_thread_is_no_error(kinto_memory):
    """Terminated (or expired) before the thread reads its bytes: nothing to remember, and
    the next requests find no upload."""
    kinto_memory.create_collection()
    store = kinto_memory.registry.attachment_store
    _, url = create(kinto_memory.app, 64 * KiB)
    patch(kinto_memory.app, url, os.urandom(8 * KiB), 0)
    upload = saved(kinto_memory, url)
    hash_behind._memory.wait(upload["id"])  # The PATCH's own job, done.
    store.discard(upload["store"], UNHELD)
    hash_behind.forget(upload["id"])
    hash_behind.hash_later(store, upload)
    hash_behind._memory.wait(upload["id"])
    assert hash_behind.checkpoint(upload) == hash_behind.saved(upload) == (0, EMPTY)
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


def test_an_upload_forgotten_while_its_bytes_are_hashed_is_not_remembered_again():
    """Found by review (2026-12-06): an upload terminated (or completed) right after a chunk,
    while the process's thread hashed that chunk, was forgotten, then remembered again by the
    job's end: its state stayed among the remembered ones (bounded by ``REMEMBERED``, but
    stale). A job whose upload was forgotten meanwhile keeps nothing."""
    started, release = threading.Event(), threading.Event()

    class SlowStore:
        def feed_resumable(self, state, start, end, digest):
            started.set()
            release.wait(10)
            digest.update(b"x" * (end - start))

    upload = {"id": "forgotten-meanwhile", "offset": 3, "store": {}}
    hash_behind.hash_later(SlowStore(), upload)
    assert started.wait(10)
    hash_behind.forget(upload["id"])
    release.set()
    hash_behind._memory.wait(upload["id"])  # Forgotten: not waited for...
    hash_behind.hash_later(SlowStore(), {**upload, "id": "after"})  # ...one thread: in order.
    hash_behind._memory.wait("after")
    assert hash_behind._memory.get(upload) is None
    hash_behind.forget("after")


def test_a_terminated_upload_is_forgotten_by_the_process(kinto_tus):
    """Found by a review of a fix (2026-12-06): a terminated upload's hash, as this process's
    thread had moved it on, stayed among those remembered (bounded, but stale): forgotten
    with the upload."""
    _, url = create(kinto_tus.app, 96 * KiB)
    patch(kinto_tus.app, url, os.urandom(32 * KiB), 0)
    upload = saved(kinto_tus, url)
    hash_behind._memory.wait(upload["id"])
    assert hash_behind._memory.get(upload) is not None  # Hashed behind, remembered.
    kinto_tus.app.delete(url, headers={**ALICE, "Tus-Resumable": "1.0.0"}, status=204)
    assert hash_behind._memory.get(upload) is None
