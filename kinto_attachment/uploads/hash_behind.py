"""The sha256 of a resumable upload hashed behind its answers, where the store can read the
upload's bytes back (local disk: :meth:`~kinto_attachment.storage.local.store.LocalStore.
feed_resumable`).

A tus client sends a chunk, waits for its answer, then sends the next: hashing each chunk on its
way in (5 ms for 8 MiB on this project's machines, the longest step of a ``PATCH``) delayed
every answer, while a core sat idle as the next chunk arrived. So a chunk that cannot complete
its upload is only counted on its way in; once its request has committed, a thread of the
process hashes the upload's bytes from its saved hash state up to the new offset, reading them
back from the file as the client sends the next chunk. The upload's saved state then has no
``sha256`` (the hash of all its bytes, which a server of an earlier release reads it as: such a
server, during a rolling upgrade, fails on the upload instead of recording a wrong hash) but a
``checkpoint``: the hash state of the bytes before ``hashed``, saved at ``offset``, which each
request moves to what this process has hashed by then. The request that may complete the
upload (the last chunk, a partial upload's end, a body of unknown length) catches up, waiting
for the thread, reading back what is left, and hashes its own bytes on their way in: the
upload's hash is whole before the attachment is recorded.

Nothing here is needed for the hash to be right: a checkpoint only ever covers bytes on the
disk that a committed request acknowledged, which no later request rewrites; whatever this
process did not hash (another node took the previous chunks, the server restarted) is read back
when the upload completes; and a checkpoint saved at another offset than the upload's (a
server of an earlier release appended since, keeping it as it was) is not taken: its
``sha256``, whole, is.
"""

import base64
import collections
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from ..state.hashstate import ResumableSha256
from ..storage import IRereadingStore, StorageUnavailable


logger = logging.getLogger(__name__)

#: Uploads whose hash this process remembers (the most recent): an abandoned upload's goes
#: once this many others came after it.
REMEMBERED = 1024
#: Chunks waiting for the thread beyond which the next ones are hashed on their way in again:
#: under more bytes than one thread hashes (a fast client, many uploads at once), the wait
#: (and the pages kept cached for it) stays bounded.
PENDING_MAX = 4


def saved(upload):
    """``(hashed, sha256 state)`` of the upload's saved state: its ``checkpoint`` if saved at
    its offset, else its whole ``sha256`` (what a server of an earlier release saves, or one
    that hashed every byte on the way), else nothing hashed."""
    mark = upload.get("checkpoint")
    if mark is not None and mark["offset"] == upload["offset"]:
        return mark["hashed"], mark["sha256"]
    if upload.get("sha256"):
        return upload["offset"], upload["sha256"]
    return 0, base64.b64encode(ResumableSha256().state()).decode("ascii")  # No byte yet.


def hashed_state(upload, hashed, state):
    """The fields of a saved state whose bytes before ``hashed`` (of ``offset``) ``state``
    hashes."""
    if hashed == upload["offset"]:
        return {"sha256": state, "checkpoint": None}
    mark = {"hashed": hashed, "sha256": state, "offset": upload["offset"]}
    return {"sha256": None, "checkpoint": mark}


def deferrable(store, upload, offset, length):
    """Whether a request appending ``length`` bytes (None: unknown) at ``offset`` may leave
    them unhashed: the store can read them back from its cache (:class:`IRereadingStore`, no
    more than its ``REREAD_MAX``), and they cannot complete the upload."""
    return (
        length is not None
        and IRereadingStore.providedBy(store)
        and length <= store.REREAD_MAX
        and upload["length"] is not None
        and offset + length < upload["length"]
        and _memory.pending() < PENDING_MAX
    )


def checkpoint(upload):
    """``(hashed, sha256 state)``: the farthest hash of the upload known now, without waiting
    (what this process hashed since its state was saved, or the saved one)."""
    found = saved(upload)
    known = _memory.get(upload)
    return known if known is not None and known[0] > found[0] else found


def caught_up(store, upload):
    """A :class:`ResumableSha256` of every byte of the upload (up to ``offset``), waiting for
    this process's thread and reading back what is left."""
    _memory.wait(upload["id"])
    done, state = checkpoint(upload)
    sha256 = ResumableSha256(base64.b64decode(state))
    if done < upload["offset"]:
        if not IRereadingStore.providedBy(store):  # The upload began on one that can.
            raise StorageUnavailable("this store cannot read back the upload to hash it")
        store.feed_resumable(upload["store"], done, upload["offset"], sha256)
    return sha256


def hash_later(store, upload):
    """Hash the upload's bytes up to its ``offset`` on the process's thread (once the request
    that appended them has committed): :func:`checkpoint` then finds them."""
    _memory.submit(store, upload)


def forget(upload_id):
    """Forget an upload that completed or went."""
    _memory.forget(upload_id)


class _Memory:
    """What this process hashed of each upload: ``(offset, saved state)``, and the job hashing
    it further. One thread for all: jobs of an upload run in order, each going on from the
    previous one's."""

    def __init__(self):
        self._lock = threading.Lock()
        self._known = collections.OrderedDict()  # id -> (offset, state)
        self._jobs = {}  # id -> the last job's future
        self._pending = 0  # Jobs submitted and not done.
        self._thread = None

    def get(self, upload):
        with self._lock:
            known = self._known.get(upload["id"])
        if known is None or known[0] > upload["offset"]:
            return None  # Not this upload's bytes (an offset it never reached here).
        return known

    def pending(self):
        return self._pending

    def wait(self, upload_id):
        with self._lock:
            job = self._jobs.get(upload_id)
        if job is not None:
            job.exception()  # Waits; a failed job only leaves more to read back.

    def submit(self, store, upload):
        with self._lock:
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="attachment-hash-behind")
            # Only jobs under way are waited for: the others' are forgotten (an abandoned
            # upload's with them).
            self._jobs = {key: job for key, job in self._jobs.items() if not job.done()}
            self._pending += 1
            self._jobs[upload["id"]] = self._thread.submit(self._hash, store, upload)

    def forget(self, upload_id):
        with self._lock:
            self._known.pop(upload_id, None)
            self._jobs.pop(upload_id, None)

    def _hash(self, store, upload):
        try:
            self._hash_further(store, upload)
        finally:
            with self._lock:
                self._pending -= 1

    def _hash_further(self, store, upload):
        done, state = checkpoint(upload)
        if done >= upload["offset"]:
            return
        sha256 = ResumableSha256(base64.b64decode(state))
        try:
            store.feed_resumable(upload["store"], done, upload["offset"], sha256)
        except OSError as e:  # Gone meanwhile (terminated, expired): nothing to remember.
            logger.debug("Upload %s not hashed behind: %s", upload["id"], e)
            return
        state = base64.b64encode(sha256.state()).decode("ascii")
        with self._lock:
            if upload["id"] not in self._jobs:  # Forgotten meanwhile (completed, gone).
                return
            self._known[upload["id"]] = (upload["offset"], state)
            self._known.move_to_end(upload["id"])
            while len(self._known) > REMEMBERED:
                self._known.popitem(last=False)


_memory = _Memory()


def _reset():
    """A forked child has no thread of its parent's, and none of its uploads."""
    global _memory
    _memory = _Memory()


os.register_at_fork(after_in_child=_reset)
