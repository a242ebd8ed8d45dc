"""The small interface every blob backend implements, what backends share, and what a store
package tells the registry (:class:`StoreKind`).

A backend stores opaque bytes under a *key* (a relative, ``/``-separated path such as
``bucket/collection/5d1e….png``). Writing is two-phase: :meth:`IBlobStore.stage` returns a
:class:`IStaged` writer that receives the bytes as they arrive, and only ``commit()`` makes them
visible under a key. ``abort()`` (or a failed commit) leaves nothing behind. This is what lets a
refused or interrupted upload leave no file and never touch the attachment already there.
"""

import dataclasses
import importlib

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


class ISettlingStaged(IStaged):
    """A staged writer that can make its bytes visible before they are durable, so that its
    caller overlaps the wait for the disk with other work (the record's transaction)."""

    def commit_unsettled():
        """Make the bytes visible; return ``(key, settle)``: ``settle()`` returns once they
        are durable, or raises. Nothing may refer to the key durably before it returned."""


class IBlobStore(Interface):
    """Where attachment bytes live (local disk, S3...)."""

    def stage(key, content_type, random=False):
        """Start writing a blob meant to be stored under ``key``; return an :class:`IStaged`.

        ``random``: the key was just drawn at random, so it is almost surely free: a backend
        that would first look for a free name (S3) writes to it at once instead. Writes stay
        conditional either way: a taken key is never overwritten.
        """

    def open(key, start=0, end=None):
        """A binary file object reading the blob from ``start`` to ``end`` (inclusive, or the
        end of the blob when None); ``FileNotFoundError`` when there is no such blob, and
        may be when ``start`` is past its end (S3 and GCS refuse such a range; callers ask
        for ranges of the length they recorded: a blob shorter than that lost bytes)."""

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
        """Delete several blobs, in as few requests as the backend allows; ``keys`` may be
        any iterable (a listing, say), consumed as it goes."""

    def url(key):
        """Public URL of the blob: ``base_url`` joined with the key."""

    base_url = Attribute("Prefix of every blob URL, may be empty (relative locations).")
    reserved = Attribute(
        "``reserved(key)``: whether a name with no blob is named elsewhere (Kinto's storage), "
        "so never to be given to a new blob; set by the plugin (:meth:`.base.StoreBase.reserved`)."
    )
    temporary_name = Attribute(
        "``temporary_name()``: a random name for a working file that outlives its request; set "
        "by the plugin to carry the instance's tag (:meth:`.base.StoreBase.temporary_name`)."
    )

    def key_for_url(location):
        """The key whose :meth:`url` is ``location``, or None when ``location`` is not under
        this store's ``base_url`` (a file of another store, or of another configuration)."""


class IListableStore(Interface):
    """Optional capability: enumerate what the store holds, for garbage collection.

    A crash can leave objects that nothing references (staged files, the blob of a transaction
    that never committed, a replaced blob whose deletion never ran): only a listing of the
    store finds them. Listings are streamed page by page, so memory stays flat whatever the
    size of the store.
    """

    def iter_blobs():
        """Yield a :class:`Listed` for every object of the store: committed blobs, staged
        temporary files and the files of resumable uploads alike. A store whose keys may name
        an object it lists under another key has ``listed_key(key)``, that other key
        (:meth:`~kinto_attachment.storage.local.store.LocalStore.listed_key`)."""

    def iter_pending():
        """Yield a :class:`Pending` for every upload started and neither completed nor aborted
        (S3 multipart uploads: they hold parts, billed, yet are no object of the listing)."""

    def abort_pending(key, upload_id):
        """Abort a pending upload, dropping its parts; an unknown one is not an error."""


class IResumableStore(Interface):
    """Optional capability: blobs written over several requests (resumable uploads).

    The state returned is JSON-compatible and kept by the caller (in Kinto's storage) between
    requests, so that any process can go on with an upload. The caller's recorded offset is
    the truth: bytes a failed request wrote beyond it are overwritten by the next append.
    Every key the state names (and an S3 ``upload_id``) belongs to the upload while it is
    recorded: garbage collection leaves them alone until it is gone.

    ``append`` and ``finish`` raise ``FileNotFoundError`` when bytes recorded before
    ``offset`` are gone for good (no retry can bring them back: the client must start
    again), and :class:`StorageUnavailable` (or another ``OSError``) when the store fails.
    """

    def start_resumable(key, content_type, random=False):
        """Begin a blob meant for ``key`` (``random``: as :meth:`IBlobStore.stage`'s); return
        its state."""

    def append(state, offset, chunks):
        """Write ``chunks`` (bytes) from ``offset``; return a :class:`Progress`."""

    def finish(state):
        """Make the blob visible under its key (or a free variant); return a :class:`Progress`
        whose ``key`` is the blob's. The upload's own data stays until ``obsolete`` is deleted,
        so that the upload can be finished again from the same state when the transaction
        recording this finish fails (the same last chunk sent again).

        The blob's key is in ``created`` when the caller may delete the blob if that
        transaction fails, since finishing again makes it anew (local disk: a link to the
        upload's file). It is not when finishing again needs it (S3: a completed multipart
        upload cannot be sent again; the next ``finish`` takes the object it made, once it
        has verified that it holds exactly the upload's bytes): the blob then stays until
        the upload finishes, or until ``discard``.
        """

    def discard(state, holding):
        """Drop everything the upload wrote, and the blob of a ``finish`` whose key was not in
        ``created`` and whose transaction failed, or whose process was killed. (A blob in
        ``created`` that a killed process left is an orphan for garbage collection.) That
        blob's delete runs within ``holding([key])``, a context that keeps its name from
        being given to another file meanwhile."""


class IRereadingStore(IResumableStore):
    """Optional capability of an :class:`IResumableStore`: an append it was given unhashed can
    be read back cheaply, from a cache it keeps it in, to be hashed once the request that sent
    it was answered (:mod:`kinto_attachment.uploads.hash_behind`)."""

    REREAD_MAX = Attribute(
        "The largest append kept cached to be read back (larger ones would be read from the "
        "disk, which costs more than hashing them on their way in)."
    )

    def feed_resumable(state, start, end, digest):
        """Feed ``digest`` bytes ``start`` to ``end`` of the upload ``state``, read back;
        ``FileNotFoundError`` if it has fewer (its bytes are lost)."""


class IConcatenatingStore(Interface):
    """Optional capability of an :class:`IResumableStore`: one blob made of several resumable
    uploads (tus's concatenation: a client sends parts of a file in parallel).

    The uploads stay as they are recorded until the caller deletes ``obsolete``, once the
    transaction that consumes them commits: if it fails, or the process is killed while the
    blob is made, the same uploads are concatenated again. Whatever a killed concatenation
    leaves (a working file, a pending upload, the blob itself) is named by no state: garbage
    collection finds it.
    """

    def concatenate(parts, key, content_type, digest, random=False, holding=None):
        """Make a blob at ``key`` (or a free variant; ``random``: as :meth:`IBlobStore.stage`'s)
        of the ``parts``, in order: ``(state,
        length)`` of uploads that received their ``length`` bytes. ``digest`` (a hash with
        ``update``) has seen the bytes of the first part: the store feeds it those of the
        others, in order, as it copies them or by reading them back once; it may feed it a
        buffer of its own, reused once the next one was fed (``update`` waits for each before
        it takes the next).

        Return a :class:`Progress` whose ``key`` is the blob's, listed in ``created`` (a
        failed transaction deletes it: concatenating again makes it anew), and whose
        ``obsolete`` is everything the parts' uploads hold. ``FileNotFoundError`` when a
        part's bytes are gone; :class:`StorageUnavailable` when the store fails. A blob made
        before a failure is deleted within ``holding([key])`` when given (as
        :meth:`IResumableStore.discard`'s), a context that keeps its name from being given to
        another file meanwhile.
        """


@dataclasses.dataclass(frozen=True)
class Stat:
    size: int
    #: Changes when the blob is rewritten (local: size and mtime; S3: the ETag).
    version: str
    #: Last write, in milliseconds since the epoch (None where the store does not tell). An
    #: S3 ETag stays the same for the same bytes written again: this tells them apart.
    modified_ms: int | None = None


@dataclasses.dataclass(frozen=True)
class Listed:
    """An object of the store, as :meth:`IListableStore.iter_blobs` yields it."""

    key: str
    size: int
    #: Last write, in milliseconds since the epoch: how garbage collection tells a file being
    #: written, or committed moments ago, from one a crash left behind.
    modified_ms: int
    #: The store's own working file (a staged upload, the data of a resumable upload), never
    #: a committed blob.
    temporary: bool = False
    #: :attr:`Stat.version` of the object listed, or None where the listing does not tell:
    #: garbage collection deletes an orphan only while it is still the object it listed (its
    #: version, and its date to the second, S3's HEAD dating objects to the second).
    version: str | None = None


@dataclasses.dataclass(frozen=True)
class Pending:
    """An upload neither completed nor aborted, as :meth:`IListableStore.iter_pending` yields."""

    key: str
    upload_id: str
    initiated_ms: int


@dataclasses.dataclass
class Progress:
    """What a resumable step did: the state to record, keys it created (to delete if the
    state is not recorded), keys it made obsolete (to delete once it is), the blob's key
    (after ``finish``; listed in ``created`` only if it may be deleted on failure)."""

    state: dict
    created: list = dataclasses.field(default_factory=list)
    obsolete: list = dataclasses.field(default_factory=list)
    key: str | None = None


@dataclasses.dataclass(frozen=True)
class StoreKind:
    """A kind of store, as its package describes it to the registry (:mod:`.registry`) by
    exporting it as ``KIND``: the built-in ones (``local``, ``s3``, ``gcs``) and the one of
    another package, named by ``kinto.attachment.store``, alike.

    It stands here, beside the interfaces, rather than in the registry: the packages describe
    themselves with it, and the registry imports them.
    """

    #: What start-up errors call it: ``local folder``, ``S3 bucket``.
    description: str
    #: The setting (after ``kinto.attachment.``) whose value chooses this store.
    chosen_by: str
    #: The prefix of its settings (``aws.``), under which any name it does not know is refused;
    #: empty when they are global names instead (local: ``base_path``, ``serve_files``).
    section: str
    #: Its option table (a module, say): ``NAMES``, every name it accepts after ``section``;
    #: ``from_settings(values)``, the options of those settings (keyed by name after
    #: ``section``), None when the store is not configured, or ConfigurationError naming the
    #: setting that is wrong. The table never needs the store's SDK.
    table: object
    #: ``(module, class name)`` of the store, whose ``from_options(options, *, base_url,
    #: default_cache_control)`` builds it: imported when first used, so that its SDK is only
    #: needed where the store is.
    store: tuple

    @property
    def names(self):
        """Every setting it accepts, after ``kinto.attachment.``."""
        return tuple(self.section + name for name in self.table.NAMES)

    def owns(self, name):
        """Whether the setting ``name`` (after ``kinto.attachment.``) is one of its own."""
        return name.startswith(self.section) if self.section else name in self.table.NAMES

    def from_settings(self, values):
        return self.table.from_settings(values)

    def store_class(self):
        module, name = self.store
        return getattr(importlib.import_module(module), name)

    def build(self, options, base_url="", default_cache_control=""):
        """The store ``options`` describe; stored files get ``default_cache_control``
        (:mod:`kinto_attachment.downloads.caching`) unless its options name their own."""
        return self.store_class().from_options(
            options, base_url=base_url, default_cache_control=default_cache_control
        )

    def exported(self, name):
        """The module ``__getattr__`` of its package: the store class, imported (with its SDK)
        when first asked for, so that ``from kinto_attachment.storage.s3 import S3Store`` works
        while importing the package alone does not import boto3."""
        if name != self.store[1]:
            package = self.store[0].rpartition(".")[0]
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return self.store_class()


class StorageUnavailable(OSError):
    """The store cannot be reached or refuses to work (network, credentials, quota)."""
