"""The URLs of unfinished tus uploads, kept in a JSON file (``--state``, under
``~/.cache`` by default) until they complete: a new run resumes them.

Runs at once share the file (one per user): each change is read, made and written under an
exclusive lock of ``<file>.lock`` (``flock``), so that none drops the entry another wrote
between its read and its write. Where no lock can be had (NFS without a lock manager:
``ENOLCK``), changes are made unlocked, as before there was a lock: the file only holds URLs
to resume from, and a lost one costs a whole upload sent again, never a file."""

import contextlib
import errno
import fcntl
import json
import os


#: What ``flock`` fails with where the file system has no locks to give (see the module's
#: docstring).
NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


class State:
    """URLs of unfinished tus uploads, in a JSON file, so that a new run resumes them."""

    def __init__(self, path):
        self.path = path

    def _read(self):
        """The entries kept: ``{key: url}``. A file that is no such object (``null``, ``[]``,
        not JSON: written by hand, or by something else) keeps nothing, rather than
        failing every upload: it only ever held URLs to resume from, and an upload not
        resumed is sent again whole."""
        try:
            with open(self.path) as f:
                entries = json.load(f)
        except (FileNotFoundError, ValueError, RecursionError):
            return {}
        if not isinstance(entries, dict):
            return {}
        return {k: url for k, url in entries.items() if isinstance(url, str)}

    def _write(self, entries):
        """A temporary file of this process's, fsynced, renamed: a crash leaves the old
        entries or the new ones."""
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w") as f:
            json.dump(entries, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)

    def get(self, key):
        return self._read().get(key)

    @contextlib.contextmanager
    def _changing(self):
        """The entries, to change, under the lock (see the module's docstring)."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        # Open to write: NFS emulates flock with a POSIX lock, which needs it.
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in NO_LOCKS:
                os.close(fd)
                raise
        try:
            yield self._read()
        finally:
            os.close(fd)

    def put(self, key, url):
        """Keep ``url`` for ``key``; drop the entries of files changed or gone since (their
        key names the file's size and time: no run can resume them)."""
        with self._changing() as entries:
            kept = {k: u for k, u in entries.items() if _resumable(k)}
            self._write({**kept, key: url})

    def superseded(self, key):
        """The URLs of the uploads kept for the same record and file as ``key`` but created
        with other options or content, forgotten: this run starts its own."""
        with self._changing() as entries:
            file = _file_of(key)
            gone = [k for k in entries if k != key and _file_of(k) == file]
            if gone:
                self._write({k: u for k, u in entries.items() if k not in gone})
        return [entries[k] for k in gone]

    def remove(self, key):
        with self._changing() as entries:
            if entries.pop(key, None) is not None:
                self._write(entries)


def _file_of(key):
    """The record URL and path an entry's ``key`` names (None for a key that is none)."""
    try:
        record_url, path, *_ = json.loads(key)
    except (ValueError, TypeError, RecursionError):
        return None
    return record_url, path


def _resumable(key):
    """Whether the file of an entry's ``key`` (``[record URL, path, size, mtime, created
    with]``, as :func:`~.uploads.upload` makes it) is still as it was: else no run can
    resume it."""
    try:
        _, path, size, mtime, _ = json.loads(key)
        found = os.stat(path)
    except (ValueError, TypeError, RecursionError, OSError):
        return False
    return (found.st_size, found.st_mtime_ns) == (size, mtime)
