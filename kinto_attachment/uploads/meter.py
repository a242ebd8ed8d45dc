"""Each byte of an upload counted and hashed once on its way in, off the thread that reads
and writes it where that pays (:class:`Meter`)."""

import functools
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

from .. import errors


class Meter:
    """Counts and hashes each byte once; 413 as soon as the count passes ``max_size``.

    ``sha256`` may be a resumable hash (tus) and ``size`` start at an upload's offset;
    ``also`` are more hashes fed the same bytes (a tus chunk's ``Upload-Checksum``). Without
    ``hashing``, no ``sha256`` (a tus chunk hashed once answered: :mod:`.hash_behind`).

    Large chunks are hashed by one of the process's hashing threads while the caller writes
    them and reads the next (hashlib and OpenSSL let go of the GIL while they hash), one at a
    time and in order. Reading :attr:`sha256`, or :meth:`settle`, waits for the last.
    SHA-256 is the costliest thing done to each byte (about 1.6 GB/s on a core). Handing
    chunks over costs CPU too (0.2 s more per GiB on the project's 2-core machines), and pays
    wherever a core would otherwise wait: for a tus chunk's fsync and round trip, or while the
    client (curl) leaves a core idle (``bench/README.rst``).
    """

    def __init__(self, max_size=0, sha256=None, size=0, also=(), hashing=True):
        self.max_size = max_size
        self.size = size
        self._sha256 = (sha256 or hashlib.sha256()) if hashing else None
        self._hashes = (self._sha256, *also) if hashing else tuple(also)
        self._hashing = None  # The chunk being hashed, as a future.

    @property
    def sha256(self):
        """The hash of every byte fed."""
        self.settle()
        return self._sha256

    def feed(self, chunk, held=False):
        """Count and hash ``chunk``. ``held``: the caller leaves it unchanged until its next
        ``feed`` or ``settle`` (each waits for it first), so that it is hashed behind even
        if it is a buffer the caller reuses."""
        self.size += len(chunk)
        if self.max_size and self.size > self.max_size:
            raise errors.refuse("too_large", limit=self.max_size)
        self.settle()
        if not self._hashes:
            return
        if len(chunk) >= HASH_BEHIND_MIN and (held or _immutable(chunk)):
            self._hashing = _hashers().submit(self._update, chunk)
        else:
            self._update(chunk)

    def update(self, chunk):
        """:meth:`feed` of a held chunk, under the name of a hash's: for a store that reads
        what it hashes into buffers of its own, and reuses each once the next was fed
        (:meth:`~kinto_attachment.storage.IConcatenatingStore.concatenate`)."""
        self.feed(chunk, held=True)

    def settle(self):
        """Wait until every byte fed has been hashed, by ``sha256`` and by ``also``."""
        hashing, self._hashing = self._hashing, None
        if hashing is not None:
            hashing.result()

    def measured(self, chunks):
        """``chunks``, fed through the meter on their way (for stores that pull them). The
        last may still be hashing when they end (the store can meanwhile fsync)."""
        for chunk in chunks:
            self.feed(chunk)
            yield chunk

    def _update(self, chunk):
        for digest in self._hashes:
            digest.update(chunk)


#: Chunks smaller than this are hashed by the thread that feeds them: handing them over
#: would cost more than it saves.
HASH_BEHIND_MIN = 64 * 1024


def _immutable(chunk):
    """Whether nobody can change ``chunk`` while a hashing thread reads it (a reader may
    reuse its ``bytearray``; a ``bytes`` object, or a view of one, cannot change)."""
    return isinstance(chunk, bytes) or (
        isinstance(chunk, memoryview) and isinstance(chunk.obj, bytes)
    )


@functools.cache
def _hashers():
    """The process's hashing threads, made on first use: in a forking server, in the worker
    (a forked child inherits the executor but none of its threads, hence the reset)."""
    return ThreadPoolExecutor(
        max_workers=os.cpu_count() or 2, thread_name_prefix="attachment-hash"
    )


os.register_at_fork(after_in_child=_hashers.cache_clear)
