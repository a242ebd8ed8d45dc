"""What the built-in stores share: :class:`StoreBase` (what follows from a store's ``stat()``,
and the names it must not give), the conditional write to a free name of the remote stores,
the hashing of a stream, and :class:`Window`, the files they hand over.
"""

import contextlib
import io
import secrets
from urllib.parse import unquote, urljoin

from . import StorageUnavailable
from .keys import key_variants


def chunks_of(stream, size=1 << 20):
    """What ``stream`` reads, by ``size`` bytes (memory stays flat); closed at its end."""
    with stream:
        while chunk := stream.read(size):
            yield chunk


#: Object metadata of the remote stores naming the write that made an object (its token): a
#: write whose answer was lost finds its object by it (S3's completed resumable upload, a GCS
#: write sent again and answered 412, its name taken by itself).
UPLOAD_METADATA = "kinto-attachment-upload"


def feed(digest, stream, size=1 << 20):
    """Feed ``digest`` what ``stream`` reads, by ``size`` bytes: memory stays flat."""
    for chunk in chunks_of(stream, size):
        digest.update(chunk)


def read_back(store, key, first, total, digest, holding=None):
    """Feed ``digest`` the blob ``key`` that a remote store's concatenation made (``total``
    bytes), after its first part's ``first`` (already hashed). A failure deletes the blob
    and is raised; the delete runs within ``holding([key])`` when given: the store's client
    sends a delete again when its answer is lost, and a name that may be given again could
    be another upload's file by then (see :meth:`~kinto_attachment.storage.
    IConcatenatingStore.concatenate`)."""
    try:
        if total > first:
            feed(digest, store.open(key, first))
    except BaseException:
        with holding([key]) if holding is not None else contextlib.nullcontext():
            store.delete(key)
        raise


def object_size(content_range, content_length):
    """The whole object's length, from a download's ``Content-Range`` (``bytes 0-9/25``: 25)
    or, without one, its ``Content-Length``; None when neither says (a download compares it
    with the length it announces: :func:`kinto_attachment.downloads.respond`)."""
    total = (content_range or "").rpartition("/")[2]
    if total.isascii() and total.isdigit():  # ``²`` is a digit to ``str``, not to int().
        return int(total)
    if content_range:
        return None  # ``*``: unknown.
    try:
        return int(content_length)
    except (TypeError, ValueError):
        return None


class StoreBase:
    """What every store derives from its ``stat()``, and the names it must not give."""

    @staticmethod
    def reserved(key):
        """Whether ``key``, a name the store holds no blob under, is named elsewhere all the
        same: the plugin replaces this with a look in Kinto's storage (a record whose file is
        lost still names it: a new blob there would be served as that record's, and deleted
        with it). Asked only of names that are not random."""
        return False

    @staticmethod
    def temporary_name():
        """A random name for a working file that outlives its request (a resumable upload's
        bytes between requests): the plugin replaces this with names that carry the
        instance's tag, so that another instance's collector sharing the store keeps them."""
        return secrets.token_hex(16)

    def prepare(self):
        """Make what a server needs before it serves (a local store's folder), and ``kinto
        migrate``. The plugin's commands do not call it: they must find the servers' store as
        it is, and refuse one that is not there rather than make an empty one and act on it."""

    def variants(self, key, random=False):
        """``key``, ``name-1.ext``... (:func:`.keys.key_variants`) to try in turn, but the
        reserved ones; ``key`` itself is not asked about when it was drawn at random, nor is
        a name the store holds (skipped: its write would fail anyway). For a store whose
        ``exists`` is cheap (local disk) and whose write to a name fails when it is taken."""
        variants = key_variants(key)
        if random:
            yield next(variants)
        yield from (k for k in variants if self._free(k))

    def _free(self, key):
        """Whether no blob has the name ``key`` nor may take it; one the store cannot hold
        (a local path that a link leads out of the store, ``ValueError``) is not free."""
        try:
            return not self.exists(key) and not self.reserved(key)
        except ValueError:
            return False

    def exists(self, key):
        return self.stat(key) is not None

    def size(self, key):
        stat = self.stat(key)
        return None if stat is None else stat.size

    def key_for_url(self, location):
        prefix = urljoin(self.base_url, ".") if self.base_url else ""
        if not location.startswith(prefix):
            return None
        quoted = location[len(prefix) :]
        # ``url()`` quotes ``:``: without a base URL, an absolute URL is not one of ours.
        if not prefix and (":" in quoted or quoted.startswith("/")):
            return None
        key = unquote(quoted)
        # A NUL (``%00``) is in no key: no store nor Kinto's PostgreSQL storage holds one.
        return key if key and "\x00" not in key else None


#: Conditional writes of one blob, each to the first free name found, before giving up (503):
#: only requests racing for the same names make it try again.
WRITE_ATTEMPTS = 5


def write_to_free_name(key, random, free_key, write):
    """``write(name)`` to the first free name (``free_key(key)``), or at once to ``key`` when
    it was drawn at random; again with the next free name while ``write`` returns False (a
    conditional write refused: a concurrent upload took that name meanwhile). The name used."""
    for attempt in range(WRITE_ATTEMPTS):
        name = key if random and attempt == 0 else free_key(key)
        if write(name):
            return name
    raise StorageUnavailable(f"no free name for {key!r} after {WRITE_ATTEMPTS} attempts")


class NameReserved(StorageUnavailable):
    """A name chosen as a long write began that it must not be completed under: reserved
    since (:meth:`StoreBase.reserved`: a file deleted meanwhile under that name, whose signed
    URLs may still be in use, another node's upload of it). A retry chooses another name."""


def require_unreserved(store, key, random):
    """:class:`NameReserved` unless ``key``, chosen when a write began (an upload of several
    parts, a resumable upload), may still be completed under: a conditional write only sees
    objects, not a name in quarantine, whose signed URLs would serve the new file."""
    if not random and store.reserved(key):
        raise NameReserved(f"{key!r} was reserved while its upload was under way: try again")


class Window(io.RawIOBase):
    """A readable, seekable file of :meth:`_size` bytes whose position is its own, kept
    within them by ``seek``: a range of a local file (a ranged download), a part in a buffer
    (an S3 or GCS upload's request body)."""

    _position = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._position

    def seek(self, offset, whence=io.SEEK_SET):
        size = self._size()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: size}[whence]
        self._position = min(max(base + offset, 0), size)
        self._moved()
        return self._position

    def _size(self):
        raise NotImplementedError

    def _moved(self):
        """Follow a move of the position (what the window reads from)."""
