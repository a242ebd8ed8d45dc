"""The local store's resumable uploads (tus): each upload a file of its own under
:data:`RESUMABLE_FOLDER`, appended to by its requests, given its key's name by a hard link
when it finishes, and joined by a final upload (concatenation) without copying its first
part. :class:`LocalResumable` is a part of :class:`~.store.LocalStore`, over its ``path``,
``folder_of``, ``variants``, ``stage``, ``delete``, ``fsync`` and ``temporary_name``.

Requests of one upload are kept apart by its lock in Kinto's storage; the file is held too
(``flock``) while a request writes or finishes it, should that lock be lost (a database
failing over under a request), and a file that has another name (a finish's) is never written
again: the upload goes on in a copy of its bytes.
"""

import contextlib
import errno
import fcntl
import os

from .. import Progress, StorageUnavailable
from . import placing
from .staged import TEMP_PREFIX, TEMP_SUFFIX, fsync_dir, write_all
from .writebehind import SHORT_WINDOW, WINDOW, WriteBehind


#: Folder of the files of resumable uploads in progress.
RESUMABLE_FOLDER = ".uploads"
#: Bytes copied at a time when concatenating resumable uploads.
COPY_SIZE = 1 << 20
#: Whether the system lets a process drop what it read from the page cache.
DROP_READ = hasattr(os, "posix_fadvise")


class LocalResumable:
    def start_resumable(self, key, content_type=None, random=False):
        folder = self.path(RESUMABLE_FOLDER)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{TEMP_PREFIX}{self.temporary_name()}{TEMP_SUFFIX}")
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return {"key": key, "temp": os.path.relpath(path, self.base_path), "random": random}

    def append(self, state, offset, chunks):
        with open(self.path(state["temp"]), "r+b", buffering=0) as f:
            _writing_alone(f, state["temp"])
            found = os.fstat(f.fileno())
            if found.st_size < offset:  # Its bytes are lost (a 410).
                raise FileNotFoundError(f"{state['temp']} is shorter than its offset {offset}")
            if found.st_nlink > 1:
                # Its file has another name: a finish's (an attachment, or an orphan a killed
                # finish left, which the collector takes). Never written again: the upload
                # goes on in a copy of its bytes, deleted unless this request commits.
                copy = self._copied(state, f, offset)
                try:
                    progress = self.append(copy, offset, chunks)
                except BaseException:  # A body cut, a full disk: the copy goes with it.
                    with contextlib.suppress(OSError):
                        os.unlink(self.path(copy["temp"]))
                    raise
                return Progress(progress.state, created=[copy["temp"]])
            f.truncate(offset)  # Whatever a failed request wrote beyond it.
            f.seek(offset)
            behind = WriteBehind(f.fileno(), offset, SHORT_WINDOW) if self.fsync else None
            for chunk in chunks:
                write_all(f, chunk, behind)
            if behind is not None:
                os.fsync(f.fileno())
                # An append no larger than :data:`REREAD_MAX` stays cached, to be read back
                # and hashed (:meth:`feed_resumable` drops it then), or kept as a small
                # file's pages are; a larger one goes (the next chunks need the cache more).
                if f.tell() - offset > self.REREAD_MAX:
                    behind.forget()
            written = _stamp(os.fstat(f.fileno()))
        return Progress({**state, "written": written})

    def _copied(self, state, f, offset):
        """``state`` of a new file of the upload holding its first ``offset`` bytes of ``f``
        (fsynced)."""
        copy = self.start_resumable(state["key"], random=state.get("random", False))
        try:
            with open(self.path(copy["temp"]), "r+b", buffering=0) as target:
                f.seek(0)
                left = offset
                while left:
                    chunk = f.read(min(left, COPY_SIZE))
                    if not chunk:
                        raise FileNotFoundError(f"{state['temp']} is shorter than its offset")
                    write_all(target, chunk, None)
                    left -= len(chunk)
                if self.fsync:
                    os.fsync(target.fileno())
        except BaseException:  # A full disk: nothing of the copy stays.
            with contextlib.suppress(OSError):
                os.unlink(self.path(copy["temp"]))
            raise
        # The old name stays: the upload's saved state names it until this request commits
        # (should it fail, the next one copies again); unnamed then, the collector takes it.
        return {**state, "temp": copy["temp"]}

    def finish(self, state):
        temp = self.path(state["temp"])
        with open(temp, "rb") as held:  # No append meanwhile (one whose lock was lost).
            _writing_alone(held, state["temp"])
            written = state.get("written")  # As the last append left it (none: 1.0's state).
            if written is not None and _stamp(os.fstat(held.fileno())) != written:
                raise StorageUnavailable(f"{state['temp']} was written since its last append")
            return self._finish(state, temp)

    def _finish(self, state, temp):
        for key in self.variants(self.make_folder(state["key"]), state.get("random", False)):
            path = self.path(key)
            try:
                os.link(temp, path)  # Atomic, never overwrites; keeps the upload.
            except FileExistsError:
                continue
            try:
                os.chmod(path, placing.file_mode())
                if self.fsync:
                    fsync_dir(os.path.dirname(path))
            except BaseException:
                # Not finished: the name is let go (it was a second name of the upload's
                # file, which its next append would change).
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                raise
            return Progress(state, created=[key], obsolete=[state["temp"]], key=key)

    def discard(self, state, holding):
        self.delete(state["temp"])

    def concatenate(self, parts, key, content_type, digest, random=False, holding=None):
        """The first upload's file, grown by copies of the others (hashed as they go), is
        committed as any blob: fsynced, renamed onto a reserved name. Its bytes are neither
        read nor copied: the staged file is a second name of it (:meth:`LocalStaged.grow`),
        unless the file system cannot link it, then it is copied too. A failure drops the
        staged file, and what it added to the first upload's; a killed process leaves the
        staged file as a temporary file for the GC."""
        (first, first_length), *others = parts
        staged = self.stage(key, content_type, random)
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

    #: The largest append kept in the page cache once it is done (the write-behind's lag):
    #: larger ones would be read back from the disk, which costs more than hashing them on
    #: their way in (:func:`~kinto_attachment.uploads.hash_behind.deferrable`).
    REREAD_MAX = WINDOW

    def feed_resumable(self, state, start, end, digest):
        """Feed ``digest`` bytes ``start`` to ``end`` of the resumable upload ``state``, read
        back from its file into one reused buffer, and dropped from the page cache behind
        (:mod:`~kinto_attachment.uploads.hash_behind`); ``FileNotFoundError`` if it has fewer
        (its bytes are lost)."""
        buffer = memoryview(bytearray(COPY_SIZE))
        with open(self.path(state["temp"]), "rb", buffering=0) as f:
            f.seek(start)
            offset = start
            while offset < end:
                read = f.readinto(buffer[: min(end - offset, COPY_SIZE)])
                if not read:
                    raise FileNotFoundError(f"{state['temp']} is shorter than its offset")
                digest.update(buffer[:read])
                offset += read
            if DROP_READ:
                with contextlib.suppress(OSError):
                    os.posix_fadvise(f.fileno(), start, end - start, os.POSIX_FADV_DONTNEED)

    def _copy(self, temp, length, staged, digest):
        """The first ``length`` bytes of the upload file ``temp`` into ``staged``;
        ``FileNotFoundError`` if it has fewer (its bytes are lost).

        Read into two buffers in turn: ``digest`` hashes one (on a hashing thread) while the
        other is read and written. A new ``bytes`` per read took new memory pages each time,
        which made reading and hashing 768 MiB take 0.6 to 2.1 s on this project's machines,
        against 0.58 s steadily with reused buffers (``bench/README.rst``)."""
        buffers = [memoryview(bytearray(COPY_SIZE)) for _ in range(2)]
        with open(self.path(temp), "rb", buffering=0) as f:
            offset = 0
            while offset < length:
                buffer = buffers[0]
                buffers.reverse()
                read = f.readinto(buffer[: min(length - offset, COPY_SIZE)])
                if not read:
                    raise FileNotFoundError(f"{temp} is shorter than its upload")
                chunk = buffer[:read]
                staged.write(chunk)
                if digest is not None:
                    digest.update(chunk)  # Waits for the other buffer's hash first.
                if DROP_READ:
                    # Read once, deleted after the commit: its pages serve the next reads
                    # (new pages cost this project's machines more than reused ones).
                    with contextlib.suppress(OSError):
                        os.posix_fadvise(f.fileno(), offset, len(chunk), os.POSIX_FADV_DONTNEED)
                offset += len(chunk)


def _stamp(stat):
    """The size and modification time of an upload's file: another append changes them."""
    return f"{stat.st_size}:{stat.st_mtime_ns}"


#: What ``flock`` fails with where a file system has no locks (NFS without its lock manager).
NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


def _writing_alone(f, temp):
    """Hold the upload's file ``f`` while this request writes or finishes it (``flock``,
    released when it closes).

    Requests of one upload are kept apart by its lock in Kinto's storage, which a database
    failing over or a session cut from it may drop while a request still writes: then
    another request is refused (``StorageUnavailable``, a 503 its client retries) rather
    than write beside it. A file system without locks leaves that to Kinto's lock alone."""
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StorageUnavailable(f"{temp} is being written by another request") from None
    except OSError as e:
        if e.errno not in NO_LOCKS:
            raise
