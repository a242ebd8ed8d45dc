"""The small interface every blob backend implements, and what backends share.

A backend stores opaque bytes under a *key* (a relative, ``/``-separated path such as
``bucket/collection/5d1e….png``). Writing is two-phase: :meth:`IBlobStore.stage` returns a
:class:`IStaged` writer that receives the bytes as they arrive, and only ``commit()`` makes them
visible under a key. ``abort()`` (or a failed commit) leaves nothing behind. This is what lets a
refused or interrupted upload leave no file and never touch the attachment already there.
"""

import dataclasses
import itertools
import posixpath
import re
import unicodedata
from urllib.parse import quote

from zope.interface import Attribute, Interface


class IStaged(Interface):
    """Bytes on their way to the store, not yet visible under any key."""

    def write(chunk):
        """Append ``chunk`` (bytes or memoryview)."""

    def commit():
        """Make the bytes durable and visible; return the key actually used.

        The key is the one asked for at :meth:`IBlobStore.stage`, or, when that one is taken
        and the backend does not overwrite, a variant of it (``name-1.ext``...).
        """

    def abort():
        """Drop what was written. Safe to call twice, or after ``commit()`` failed."""


class IBlobStore(Interface):
    """Where attachment bytes live (local disk, S3...)."""

    def stage(key, content_type):
        """Start writing a blob meant to be stored under ``key``; return an :class:`IStaged`."""

    def open(key, start=0, end=None):
        """A binary file object reading the blob from ``start`` to ``end`` (inclusive, or the
        end of the blob when None); ``FileNotFoundError`` when there is no such blob."""

    def exists(key):
        """Whether a blob is stored under ``key``."""

    def size(key):
        """Size in bytes of the blob, or None when there is none."""

    def stat(key):
        """:class:`Stat` of the blob (size, and a version that changes when it is
        rewritten), or None when there is none."""

    def delete(key):
        """Delete the blob; a missing one is not an error (deletion is idempotent)."""

    def delete_many(keys):
        """Delete several blobs, in as few requests as the backend allows."""

    def url(key):
        """Public URL of the blob: ``base_url`` joined with the key."""

    base_url = Attribute("Prefix of every blob URL, may be empty (relative locations).")


class IResumableStore(Interface):
    """Optional capability: blobs written over several requests (resumable uploads).

    The state returned is JSON-compatible and kept by the caller (in Kinto's storage) between
    requests, so that any process can go on with an upload. The caller's recorded offset is
    the truth: bytes a failed request wrote beyond it are overwritten by the next append.
    """

    def start_resumable(key, content_type):
        """Begin a blob meant for ``key``; return its state."""

    def append(state, offset, chunks):
        """Write ``chunks`` (bytes) from ``offset``; return a :class:`Progress`."""

    def finish(state):
        """Make the blob visible under its key (or a free variant); return a :class:`Progress`
        whose ``key`` is the blob's. The upload's own data stays until ``obsolete`` is deleted,
        so that a finished blob whose record is refused can be deleted and the upload retried.
        """

    def discard(state):
        """Drop everything the upload wrote."""


@dataclasses.dataclass(frozen=True)
class Stat:
    size: int
    #: Changes when the blob is rewritten (local: size and mtime; S3: the ETag).
    version: str


@dataclasses.dataclass
class Progress:
    """What a resumable step did: the state to record, keys it created (to delete if the
    state is not recorded), keys it made obsolete (to delete once it is), the blob's key."""

    state: dict
    created: list = dataclasses.field(default_factory=list)
    obsolete: list = dataclasses.field(default_factory=list)
    key: str | None = None


class StoreBase:
    """What every store derives from its ``stat()``."""

    def exists(self, key):
        return self.stat(key) is not None

    def size(self, key):
        stat = self.stat(key)
        return None if stat is None else stat.size


class StorageUnavailable(OSError):
    """The store cannot be reached or refuses to work (network, credentials, quota)."""


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name, fallback="file"):
    """A single path segment made only of ``[A-Za-z0-9._-]``, derived from a client filename.

    Unicode is normalised (NFKD) and reduced to ASCII, path separators of any OS dropped (only
    the last segment is kept), runs of anything else collapsed to ``_``, and leading dots
    stripped so that the result is never hidden, ``.`` or ``..``.
    """
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    name = _UNSAFE.sub("_", name).strip("._")
    return name[:200] or fallback


def join_key(*segments):
    """Join key segments with ``/``, refusing anything that would climb out of the store."""
    key = posixpath.normpath("/".join(s.strip("/") for s in segments if s))
    if key.startswith(("../", "/")) or key in ("..", ".", ""):
        raise ValueError(f"unsafe blob key {key!r}")
    return key


def blob_url(base_url, key):
    """``base_url`` + key; a relative location when ``base_url`` is empty."""
    if base_url and not base_url.endswith("/"):
        base_url += "/"
    return base_url + quote(key)


def key_variants(key):
    """``a/b.txt``, then ``a/b-1.txt``, ``a/b-2.txt``...: where to go when a key is taken."""
    yield key
    stem, ext = posixpath.splitext(key)
    for counter in itertools.count(1):
        yield f"{stem}-{counter}{ext}"
