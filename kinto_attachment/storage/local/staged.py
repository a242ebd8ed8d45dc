"""A blob on its way to a local folder (:class:`LocalStaged`).

Bytes go to a hidden temporary file in the destination folder (so the final rename never
crosses a filesystem), are fsynced, then renamed onto a free name (:mod:`.placing`): an
existing file is never overwritten, and a crash at any point leaves either nothing visible or a
complete file. Temporary files are named ``.upload-*.part`` so that garbage collection can
recognise the ones a killed process left behind.

Uploads commit their file without waiting (:meth:`LocalStaged.commit_unsettled`): renamed at
once, fsynced (file, then folder) on a thread of the store while the record is written, and
waited for before the record's transaction commits. The two flushes of the disk then cost an
upload of a small file little more than the slower of them and the database's work, where they
came on top of it; a crash before they end can leave a file incomplete under its name, but no
record names it (the transaction had not committed): an orphan, for the garbage collector.
"""

import contextlib
import errno
import os
import secrets
import tempfile

from zope.interface import implementer

from .. import ISettlingStaged, StorageUnavailable
from . import placing
from .writebehind import WriteBehind


#: What ``link()`` fails with where a file system cannot give a file a second name.
NO_LINKS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}
TEMP_PREFIX = ".upload-"
TEMP_SUFFIX = ".part"


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(file, chunk, behind):
    """Write all of ``chunk`` to an unbuffered file (a raw write may take part of it)."""
    view = memoryview(chunk).cast("B")
    count = len(view)
    while view:
        view = view[file.write(view) :]
    if behind is not None:
        behind.wrote(count)


@implementer(ISettlingStaged)
class LocalStaged:
    def __init__(self, store, key, random=False):
        self._store = store
        self._key = key = store.make_folder(key)
        self._random = random
        folder = store.folder_of(key)
        fd, self._temp_path = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
        # Unbuffered: chunks are large already, and an extra buffer would be another copy.
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._behind = WriteBehind(fd) if store.fsync else None
        self._grown = None  # ``(path, length, mode)`` of the file it grows (:meth:`grow`).
        self._placed = None  # Its path once renamed onto its name (:meth:`_place`).

    def write(self, chunk):
        write_all(self._file, chunk, self._behind)

    def commit(self):
        try:
            if self._store.fsync:
                os.fsync(self._file.fileno())
            self._file.close()
            key, folder = self._place()
            if self._store.fsync:
                fsync_dir(folder)
        except BaseException:
            self.abort()
            raise
        return key

    def commit_unsettled(self):
        try:
            key, folder = self._place()
        except BaseException:
            self.abort()
            raise
        if not self._store.fsync:
            self._file.close()
            return key, _settled
        syncing = self._store.syncing().submit(self._sync, folder)
        return key, syncing.result

    def _sync(self, folder):
        try:
            os.fsync(self._file.fileno())
        finally:
            self._file.close()
        fsync_dir(folder)

    def _place(self):
        """Rename the file onto the first free name of its key's variants: ``(key, folder)``.
        Until the commit is over, a failure lets that name go too (:meth:`abort`)."""
        os.chmod(self._temp_path, placing.file_mode())
        for key in self._store.variants(self._key, self._random):
            path = self._store.path(key)
            if placing.rename_unless_taken(self._temp_path, path):
                self._placed = path
                return key, os.path.dirname(path)

    def grow(self, path, length):
        """Make the staged file the first ``length`` bytes of the file at ``path``, without
        copying them: a second name of that file (a hard link), cut to ``length``, written
        after them. Until the staged file is committed, the file at ``path`` grows with it;
        :meth:`abort` cuts it back. False where the file system cannot link it (another file
        system, or no hard links: nothing else done, then, but dating the file now), or
        where the file has another name already (another final upload's, which writing it
        would change: nothing done)."""
        folder = os.path.dirname(self._temp_path)
        link = os.path.join(folder, f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}")
        found = os.stat(path)
        if found.st_nlink > 1:  # Another's already (a final upload joining it): copied.
            return False
        mode = found.st_mode
        # Dated now before it gets a temporary name: the GC takes old temporary files for a
        # killed process's (the upload's file was last written maybe hours ago).
        os.utime(path)
        try:
            os.link(path, link)
        except OSError as error:
            if error.errno in NO_LINKS:
                return False
            raise
        # The link takes the empty file's name; a crash in between leaves a second
        # temporary file for the GC (a name of the upload's file: the upload keeps it).
        os.replace(link, self._temp_path)
        self._file.close()
        self._file = open(self._temp_path, "r+b", buffering=0)  # noqa: SIM115 (kept)
        grown = os.fstat(self._file.fileno())
        if grown.st_nlink > 2:  # Another final upload linked it meanwhile: neither writes.
            raise StorageUnavailable(f"{path} is being joined by another final upload")
        if grown.st_size < length:
            raise FileNotFoundError(f"{path} is shorter than its upload")
        self._grown = (path, length, mode)
        self._file.truncate(length)
        self._file.seek(length)
        self._behind = WriteBehind(self._file.fileno(), length) if self._store.fsync else None
        return True

    def abort(self):
        # A close may report an earlier write's error (NFS, FUSE): the file goes all the same.
        with contextlib.suppress(OSError):
            self._file.close()
        if self._grown is not None:  # The upload's file back as it was (the commit's chmod too).
            path, length, mode = self._grown
            with contextlib.suppress(OSError):
                os.truncate(path, length)
                os.chmod(path, mode)
        # Renamed onto its name, then failed (the folder's fsync): the name is let go too,
        # once (a second abort must not delete what another upload has placed there since).
        placed, self._placed = self._placed, None
        for path in (self._temp_path, placed):
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def _settled():
    """Nothing to wait for (``fsync`` off)."""
