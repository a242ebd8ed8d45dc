"""Blobs as files under ``base_path``: written through :class:`~.staged.LocalStaged` (a
hidden temporary file, fsynced, renamed onto a free name), resumable uploads as files under
``.uploads/``, concatenated by growing the first one's file.
"""

import concurrent.futures
import contextlib
import errno
import os
import posixpath
from stat import S_ISREG

from zope.interface import implementer

from .. import (
    IBlobStore,
    IConcatenatingStore,
    IListableStore,
    IRereadingStore,
    Stat,
    StorageUnavailable,
)
from ..base import StoreBase
from ..keys import blob_url, join_key, key_variants
from . import listing
from .ranges import RangeFile
from .resumable import LocalResumable
from .staged import LocalStaged


#: Files fsynced at once, each on a thread of its own (the threads wait for the disk).
SYNC_THREADS = 16


#: What the file system answers for a key that names no file, nor ever can: a name longer than
#: it takes, a file where the key has a folder (a record's ``location`` written by hand, or
#: by kinto-attachment from any client's data). Such a key is a missing blob: the collector
#: and adoption, which look for the files records name, stopped at it for good.
NO_SUCH_FILE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG})


class Outside(OSError, ValueError):
    """A key whose path leads out of ``base_path`` (a link planted in it): a store failure
    to a write (a ``503``, logged), no blob to a read (``ValueError``: a lost blob)."""


@contextlib.contextmanager
def _missing_is_not_found():
    """Any of :data:`NO_SUCH_FILE` raised as ``FileNotFoundError``."""
    try:
        yield
    except OSError as error:
        if error.errno in NO_SUCH_FILE and not isinstance(error, FileNotFoundError):
            raise FileNotFoundError(error.errno, error.strerror, error.filename) from None
        raise


#: Looks for free folder names (:meth:`LocalStore.make_folder`) before giving up: each
#: fails only when a file took a name between the look and the folder's creation.
FOLDER_ATTEMPTS = 5


@implementer(IBlobStore, IRereadingStore, IConcatenatingStore, IListableStore)
class LocalStore(LocalResumable, StoreBase):
    def __init__(self, base_path, base_url="", fsync=True):
        self.base_path = os.path.realpath(base_path)
        self.base_url = base_url
        self.fsync = fsync
        self._folding = None  # Whether the disk ignores case in names, once probed.
        self._syncing = None

    def prepare(self):
        os.makedirs(self.base_path, exist_ok=True)

    def syncing(self):
        """The threads that fsync committed files (:meth:`LocalStaged.commit_unsettled`),
        started with the first."""
        if self._syncing is None:
            self._syncing = concurrent.futures.ThreadPoolExecutor(
                max_workers=SYNC_THREADS, thread_name_prefix="attachment-fsync"
            )
        return self._syncing

    @classmethod
    def from_options(cls, options, *, base_url="", default_cache_control=""):
        """The store :class:`~.options.LocalOptions` describe. Files get no
        ``default_cache_control`` of their own: whoever serves them sends it (the web server,
        or ``serve_files``)."""
        return cls(options.base_path, base_url)

    def path(self, key):
        """Absolute path of ``key``, which can never be outside ``base_path``
        (:class:`Outside`)."""
        path = os.path.realpath(os.path.join(self.base_path, join_key(key)))
        if os.path.commonpath([path, self.base_path]) != self.base_path:
            raise Outside(f"blob key {key!r} resolves outside of the storage folder")
        return path

    def folder_of(self, key):
        """Absolute path of the folder of ``key``: never its own path, which a link planted
        under that name could lead out of ``base_path`` (the name is then taken, not the
        folder refused)."""
        parent = posixpath.dirname(key)
        return self.path(parent) if parent else self.base_path

    def make_folder(self, key):
        """Make the folder of ``key``, and return ``key``; or, where a file has the name of
        one of its folders, the key under the first variant of that folder's name that is a
        folder or free (``assets`` then ``assets-1``...), made. A name a client chose
        (``randomize = false`` with ``extensions = any``) may be the name of another
        collection's folder: the file stays, and that folder's uploads go beside it rather
        than fail (a ``503`` for each, for as long as the file is there)."""
        for _attempt in range(FOLDER_ATTEMPTS):
            parts = key.split("/")
            for depth in range(len(parts) - 1):
                parent = os.path.join(self.base_path, *parts[:depth])
                for variant in key_variants(parts[depth]):
                    path = os.path.join(parent, variant)
                    if os.path.isdir(path) or not os.path.lexists(path):
                        break
                parts[depth] = variant
            try:
                os.makedirs(self.folder_of("/".join(parts)), exist_ok=True)
                return "/".join(parts)
            except (FileExistsError, NotADirectoryError):  # A file took a name meanwhile.
                continue
        raise StorageUnavailable(f"no folder could be made for {key!r}")

    def listed_key(self, key):
        """The key :meth:`iter_blobs` lists the file of ``key`` under: ``key`` itself, unless a
        symbolic link on its way leads elsewhere under ``base_path`` (the listing follows no
        link, and lists the file under its real path). ``key`` for a key that cannot be
        in the store."""
        try:
            return os.path.relpath(self.path(key), self.base_path).replace(os.sep, "/")
        except ValueError:
            return key

    def name_folding(self):
        """:func:`.listing.folded` where the disk of ``base_path`` ignores case in names
        (:func:`.listing.folds_names`, probed until it could be once): the listing may give
        the file of a key any name of its folded form there. None on any other disk, where
        such names are other files (the collector must not keep, nor adoption leave, one for
        another's)."""
        if self._folding is None:
            self._folding = listing.folds_names(self.base_path)
        return listing.folded if self._folding else None

    def stage(self, key, content_type=None, random=False):
        # Names are reserved with O_EXCL at commit: there is nothing to look up first.
        return LocalStaged(self, key, random)

    def open(self, key, start=0, end=None):
        with _missing_is_not_found():
            stream = open(self.path(key), "rb")  # noqa: SIM115 (returned to the caller)
        if end is not None:
            return RangeFile(stream, start, end - start + 1)
        stream.seek(start)
        return stream

    def stat(self, key):
        try:
            with _missing_is_not_found():
                result = os.stat(self.path(key))
        except FileNotFoundError:
            return None
        if not S_ISREG(result.st_mode):  # A folder of blobs is no blob.
            return None
        return Stat(result.st_size, listing.version(result), result.st_mtime_ns // 1_000_000)

    def delete(self, key):
        try:
            path = self.path(key)
        except Outside:  # No blob of the store has that name: nothing to delete.
            return
        with contextlib.suppress(FileNotFoundError), _missing_is_not_found():
            os.unlink(path)

    def delete_many(self, keys):
        for key in keys:
            self.delete(key)

    def url(self, key):
        return blob_url(self.base_url, key)

    def iter_blobs(self):
        """Every regular file under ``base_path``, depth first (:func:`.listing.walk`)."""
        return listing.walk(self.base_path)

    def iter_pending(self):
        """Nothing: a local upload in progress is a staged file, which ``iter_blobs`` lists."""
        return iter(())

    def abort_pending(self, key, upload_id):
        """Nothing to abort (see :meth:`iter_pending`)."""
