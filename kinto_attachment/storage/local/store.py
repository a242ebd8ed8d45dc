"""Blobs as files under ``base_path``.

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

import concurrent.futures
import contextlib
import errno
import io
import os
import secrets
import tempfile
from stat import S_ISREG

from zope.interface import implementer

from .. import (
    IBlobStore,
    IConcatenatingStore,
    IListableStore,
    IResumableStore,
    ISettlingStaged,
    Listed,
    Progress,
    Stat,
    StorageUnavailable,
    StoreBase,
    blob_url,
    join_key,
    key_variants,
)
from . import placing
from .writebehind import SHORT_WINDOW, WriteBehind


#: What ``link()`` fails with where a file system cannot give a file a second name.
NO_LINKS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}
TEMP_PREFIX = ".upload-"
TEMP_SUFFIX = ".part"
#: Folder of the files of resumable uploads in progress.
RESUMABLE_FOLDER = ".uploads"


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(file, chunk, behind):
    """Write all of ``chunk`` to an unbuffered file (a raw write may take part of it)."""
    view = memoryview(chunk).cast("B")
    count = len(view)
    while view:
        view = view[file.write(view) :]
    if behind is not None:
        behind.wrote(count)


class LimitedReader(io.RawIOBase):
    """The next ``length`` bytes of a file, for byte ranges (not seekable, on purpose: a WSGI
    server must not look past them)."""

    def __init__(self, stream, length):
        self._stream = stream
        self._remaining = length

    def readable(self):
        return True

    def readinto(self, buffer):
        view = memoryview(buffer)[: self._remaining]
        count = self._stream.readinto(view)
        self._remaining -= count
        return count

    def close(self):
        self._stream.close()
        super().close()


@implementer(ISettlingStaged)
class LocalStaged:
    def __init__(self, store, key):
        self._store = store
        self._key = key
        folder = os.path.dirname(store.path(key))
        os.makedirs(folder, exist_ok=True)
        fd, self._temp_path = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
        # Unbuffered: chunks are large already, and an extra buffer would be another copy.
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._behind = WriteBehind(fd) if store.fsync else None
        self._grown = None  # ``(path, length, mode)`` of the file it grows (:meth:`grow`).

    def write(self, chunk):
        _write_all(self._file, chunk, self._behind)

    def commit(self):
        try:
            if self._store.fsync:
                os.fsync(self._file.fileno())
            self._file.close()
            key, folder = self._place()
            if self._store.fsync:
                _fsync_dir(folder)
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
        _fsync_dir(folder)

    def _place(self):
        """Rename the file onto the first free name of its key's variants: ``(key, folder)``."""
        os.chmod(self._temp_path, 0o644)
        for key in key_variants(self._key):
            path = self._store.path(key)
            if placing.rename_unless_taken(self._temp_path, path):
                return key, os.path.dirname(path)

    def grow(self, path, length):
        """Make the staged file the first ``length`` bytes of the file at ``path``, without
        copying them: a second name of that file (a hard link), cut to ``length``, written
        after them. Until the staged file is committed, the file at ``path`` grows with it;
        :meth:`abort` cuts it back. False where the file system cannot link it (another file
        system, or no hard links): nothing else done, then, but dating the file now."""
        folder = os.path.dirname(self._temp_path)
        link = os.path.join(folder, f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}")
        mode = os.stat(path).st_mode
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
        if os.fstat(self._file.fileno()).st_size < length:
            raise FileNotFoundError(f"{path} is shorter than its upload")
        self._grown = (path, length, mode)
        self._file.truncate(length)
        self._file.seek(length)
        self._behind = WriteBehind(self._file.fileno(), length) if self._store.fsync else None
        return True

    def abort(self):
        self._file.close()
        if self._grown is not None:  # The upload's file back as it was (the commit's chmod too).
            path, length, mode = self._grown
            with contextlib.suppress(OSError):
                os.truncate(path, length)
                os.chmod(path, mode)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp_path)


def _settled():
    """Nothing to wait for (``fsync`` off)."""


def _is_temporary(name):
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


#: Files fsynced at once, each on a thread of its own (the threads wait for the disk).
SYNC_THREADS = 16
#: Bytes copied at a time when concatenating resumable uploads.
COPY_SIZE = 1 << 20
#: Whether the system lets a process drop what it read from the page cache.
DROP_READ = hasattr(os, "posix_fadvise")


@implementer(IBlobStore, IResumableStore, IConcatenatingStore, IListableStore)
class LocalStore(StoreBase):
    def __init__(self, base_path, base_url="", fsync=True):
        self.base_path = os.path.realpath(base_path)
        self.base_url = base_url
        self.fsync = fsync
        os.makedirs(self.base_path, exist_ok=True)
        self._syncing = None

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
        """Absolute path of ``key``, which can never be outside ``base_path``."""
        path = os.path.realpath(os.path.join(self.base_path, join_key(key)))
        if os.path.commonpath([path, self.base_path]) != self.base_path:
            raise ValueError(f"blob key {key!r} resolves outside of the storage folder")
        return path

    def stage(self, key, content_type=None, random=False):
        # Names are reserved with O_EXCL at commit: there is nothing to look up first.
        return LocalStaged(self, key)

    def open(self, key, start=0, end=None):
        stream = open(self.path(key), "rb")  # noqa: SIM115 (returned to the caller)
        stream.seek(start)
        return stream if end is None else LimitedReader(stream, end - start + 1)

    def stat(self, key):
        try:
            result = os.stat(self.path(key))
        except FileNotFoundError:
            return None
        if not S_ISREG(result.st_mode):  # A folder of blobs is no blob.
            return None
        return Stat(result.st_size, f"{result.st_size}:{result.st_mtime_ns}:{result.st_ino}")

    def delete(self, key):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(key))

    def delete_many(self, keys):
        for key in keys:
            self.delete(key)

    def url(self, key):
        return blob_url(self.base_url, key)

    def start_resumable(self, key, content_type=None):
        folder = self.path(RESUMABLE_FOLDER)
        os.makedirs(folder, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
        os.close(fd)
        return {"key": key, "temp": os.path.relpath(path, self.base_path)}

    def append(self, state, offset, chunks):
        with open(self.path(state["temp"]), "r+b", buffering=0) as f:
            if os.fstat(f.fileno()).st_size < offset:
                raise StorageUnavailable(f"{state['temp']} is shorter than its offset {offset}")
            f.truncate(offset)  # Whatever a failed request wrote beyond it.
            f.seek(offset)
            behind = WriteBehind(f.fileno(), offset, SHORT_WINDOW) if self.fsync else None
            for chunk in chunks:
                _write_all(f, chunk, behind)
            if behind is not None:
                os.fsync(f.fileno())
                behind.forget()  # On the disk now; the next chunks need the page cache more.
        return Progress(state)

    def finish(self, state):
        temp = self.path(state["temp"])
        os.makedirs(os.path.dirname(self.path(state["key"])), exist_ok=True)
        for key in key_variants(state["key"]):
            try:
                os.link(temp, self.path(key))  # Atomic, never overwrites; keeps the upload.
            except FileExistsError:
                continue
            os.chmod(self.path(key), 0o644)
            if self.fsync:
                _fsync_dir(os.path.dirname(self.path(key)))
            return Progress(state, created=[key], obsolete=[state["temp"]], key=key)

    def discard(self, state):
        self.delete(state["temp"])

    def concatenate(self, parts, key, content_type, digest):
        """The first upload's file, grown by copies of the others (hashed as they go), is
        committed as any blob: fsynced, renamed onto a reserved name. Its bytes are neither
        read nor copied: the staged file is a second name of it (:meth:`LocalStaged.grow`),
        unless the file system cannot link it, then it is copied too. A failure drops the
        staged file, and what it added to the first upload's; a killed process leaves the
        staged file as a temporary file for the GC."""
        (first, first_length), *others = parts
        staged = self.stage(key, content_type)
        try:
            if not staged.grow(self.path(first["temp"]), first_length):
                self._copy(first["temp"], first_length, staged, None)
            for state, length in others:
                self._copy(state["temp"], length, staged, digest)
        except BaseException:
            staged.abort()
            raise
        key = staged.commit()
        return Progress(None, created=[key], obsolete=[s["temp"] for s, _ in parts], key=key)

    def _copy(self, temp, length, staged, digest):
        """The first ``length`` bytes of the upload file ``temp`` into ``staged``;
        ``FileNotFoundError`` if it has fewer (its bytes are lost)."""
        with open(self.path(temp), "rb", buffering=0) as f:
            offset = 0
            while offset < length:
                chunk = f.read(min(length - offset, COPY_SIZE))
                if not chunk:
                    raise FileNotFoundError(f"{temp} is shorter than its upload")
                staged.write(chunk)
                if digest is not None:
                    digest.update(chunk)
                if DROP_READ:
                    # Read once, deleted after the commit: its pages serve the next reads
                    # (new pages cost this project's machines more than reused ones).
                    with contextlib.suppress(OSError):
                        os.posix_fadvise(f.fileno(), offset, len(chunk), os.POSIX_FADV_DONTNEED)
                offset += len(chunk)

    def iter_blobs(self):
        """Every regular file under ``base_path``, depth first.

        Only the open directory iterators of the current branch are held, never the tree.
        Symbolic links are neither followed nor listed: ``path()`` resolves them, so deleting
        one by its key would delete its target. Files removed while walking are skipped.
        """
        branches = [("", os.scandir(self.base_path))]
        try:
            while branches:
                prefix, entries = branches[-1]
                entry = next(entries, None)
                if entry is None:
                    branches.pop()[1].close()
                    continue
                try:
                    listed = self._listed(prefix, entry, branches)
                except FileNotFoundError:
                    continue
                if listed is not None:
                    yield listed
        finally:
            for _, entries in branches:
                entries.close()

    @staticmethod
    def _listed(prefix, entry, branches):
        """The :class:`Listed` of a file; a directory is pushed onto ``branches`` instead."""
        key = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            branches.append((key + "/", os.scandir(entry.path)))
        elif entry.is_file(follow_symlinks=False):
            stat = entry.stat(follow_symlinks=False)
            modified_ms = stat.st_mtime_ns // 1_000_000
            return Listed(key, stat.st_size, modified_ms, _is_temporary(entry.name))
        return None

    def iter_pending(self):
        """Nothing: a local upload in progress is a staged file, which ``iter_blobs`` lists."""
        return iter(())

    def abort_pending(self, key, upload_id):
        """Nothing to abort (see :meth:`iter_pending`)."""
