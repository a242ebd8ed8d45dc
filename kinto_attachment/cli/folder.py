"""Writing into a folder, and nowhere else: the download side's file system.

Every operation is relative to a descriptor of the folder (``openat`` and friends), one path
component at a time, never through a symbolic link: a subfolder, a temporary file or a final
name that turns out to be a link is refused or replaced, never followed. Temporary files are
created with ``O_EXCL``; a file becomes visible under its name by a ``rename`` inside the
folder, after ``fsync``.

A folder remembers what its downloads wrote (:data:`~.names.DOWNLOADED`: each path, the
sha256 of the file written there, or found there with the record's sha256, and that record's
id): a download replaces a file that differs from the record's only when that file is still
what a download left, never one changed or put there by someone else, nor, when it downloads
only some records, another record's download (``--overwrite`` says otherwise).
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import stat
import sys

from . import files
from .answers import Failure
from .names import DOWNLOADED, PARTS, aside_of


#: Why a download did not replace the file it found (which is kept).
CHANGED = "the file there changed during the download: kept (run it again)"
#: The longest record of downloads read (~300,000 files); a longer one is none.
MAX_DOWNLOADED = 32 << 20


class Folder:
    """The folder at ``path`` (created if needed; the folder itself may be a link, as the
    user named it): :meth:`directory`, :meth:`part` and :meth:`publish` work inside it."""

    def __init__(self, path):
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._parts = None
        #: Whether names can be given without replacing (see _names_without_replacing()).
        self._naming = None
        #: What earlier downloads wrote (read when first needed), and what this one did.
        self._downloaded, self._written = None, {}

    def close(self):
        try:
            if self._written:
                self._save()
        except OSError as e:  # A folder one may read, not write: the files are there.
            print(
                f"kinto-attachment: {DOWNLOADED} not written ({e}): files that change on "
                "the server will not replace these",
                file=sys.stderr,
            )
        finally:
            if self._parts is not None:
                self._remove_parts_if_unused()
                os.close(self._parts)
            os.close(self.fd)

    def _remove_parts_if_unused(self):
        """Remove :data:`~.names.PARTS` if it is empty and no other run uses it: each run
        holds it shared (:meth:`parts`); removed under another's feet, its next part or
        record of downloads would go to a folder that no longer is."""
        try:
            fcntl.flock(self._parts, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rmdir(PARTS, dir_fd=self.fd)
        except OSError:  # In use, or not empty: parts to resume.
            pass

    def downloaded(self, path):
        """``(sha256, record id)`` of the file a download wrote (or found) at ``path`` last,
        ``(None, None)`` when none did; the record id is None where the folder remembers a
        sha256 alone (as 1.0.0 did)."""
        if self._downloaded is None:
            self._downloaded = self._read_downloaded()
        return self._written.get(path) or self._downloaded.get(path) or (None, None)

    def remember(self, path, sha256, record_id):
        """The file at ``path`` is the download of ``sha256`` for the record ``record_id``
        (saved when the folder closes, if that is news: a run killed before leaves files
        unremembered, which later runs keep, never replace)."""
        if self.downloaded(path) != (sha256, record_id):
            self._written[path] = (sha256, record_id)

    def _read_downloaded(self):
        """:data:`~.names.DOWNLOADED`, or nothing remembered when it is missing or unreadable
        (then no file that differs from its record is replaced)."""
        fd = files.open_regular(DOWNLOADED, self.fd)
        if fd is None:
            return {}
        with os.fdopen(fd, "rb") as f:
            text = f.read(MAX_DOWNLOADED + 1)
        try:
            found = json.loads(text)
        except (ValueError, RecursionError):
            return {}
        if not isinstance(found, dict):
            return {}
        return {k: entry for k, v in found.items() if isinstance(k, str) and (entry := _entry(v))}

    def _save(self):
        """Write what the downloads wrote, this run's added to what is there now (another
        run may have written it meanwhile): a temporary file, fsynced, renamed, durably. The
        folder is locked (``flock``) from the read to the rename: two runs ending at once
        would each write what it read, and the first one's entries would be lost."""
        parts = self.parts()
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            downloaded = {  # What 1.0.0 remembered stays as it wrote it.
                path: sha256 if record_id is None else {"sha256": sha256, "record": record_id}
                for path, (sha256, record_id) in {
                    **self._read_downloaded(),
                    **self._written,
                }.items()
            }
            temporary = f"{DOWNLOADED}.{secrets.token_hex(8)}"  # Pids repeat (containers).
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | files.NO_FOLLOW
            fd = os.open(temporary, flags, 0o644, dir_fd=parts)
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(downloaded, sort_keys=True).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, DOWNLOADED, src_dir_fd=parts, dst_dir_fd=self.fd)
            os.fsync(self.fd)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def directory(self, parts, create=True):
        """A descriptor of the subfolder ``parts`` (components), created as needed (None
        when one is missing, without ``create``); each component must be a real folder, not
        a link."""
        fd = os.dup(self.fd)
        try:
            for part in parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=fd)
                try:
                    inner = os.open(part, files.FOLDER_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if create:
                        raise
                    os.close(fd)
                    return None
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise Failure(f"{part}: not a folder (a link?): not followed") from e
                    raise
                os.close(fd)
                fd = inner
        except BaseException:
            os.close(fd)
            raise
        return fd

    def parts(self):
        """The descriptor of :data:`~.names.PARTS`, where downloads wait to be verified,
        held shared (``flock``) until the folder closes: the run that ends last removes it
        when empty (:meth:`_remove_parts_if_unused`). One removed between its opening and its
        lock is made anew."""
        while self._parts is None:
            fd = self.directory([PARTS])
            fcntl.flock(fd, fcntl.LOCK_SH)
            entry = files.entry(PARTS, self.fd)
            if entry is not None and os.path.samestat(entry, os.fstat(fd)):
                self._parts = fd
            else:
                os.close(fd)
        return self._parts

    def part(self, name, limit):
        """``(file descriptor, bytes in it)`` of the part ``name``, open to append: the one
        an interrupted run left when it is a plain file of at most ``limit`` bytes, else a new
        one (whatever had the name, a link included, is removed, never written through)."""
        parts = self.parts()
        fd = files.open_regular(name, parts, os.O_RDWR | os.O_APPEND)
        if fd is not None:
            _lock(fd, name)
            size = os.fstat(fd).st_size
            if size <= limit:
                return fd, size
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parts)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | files.NO_FOLLOW
        fd = os.open(name, flags, 0o666, dir_fd=parts)
        _lock(fd, name)
        return fd, 0

    def discard(self, name):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.parts())

    def publish(self, name, directory, target, replaced, path):
        """Give the part ``name`` the name ``target`` in ``directory`` (a descriptor; ``path``
        in the folder), durably, never losing a file written there meanwhile: where
        ``replaced`` is None (no plain file was there), only while none is (a symbolic link
        there is removed, never followed); else only while the file there is still the one
        of that :func:`stamp`, set aside first (:meth:`recover` gives back what a killed run
        set aside), and dropped once the part has its name. Both by names that never replace
        (``link``), where a file system has them."""
        parts = self.parts()
        aside = aside_of(path)
        if replaced is not None:
            if not self._names_without_replacing():
                raise Failure(f"{files.NoNamingWithoutReplacing.WHY}: the file there is kept")
            os.rename(target, aside, src_dir_fd=directory, dst_dir_fd=parts)
            try:
                if files.stamp_at(aside, parts) != replaced:
                    raise Failure(CHANGED)
                self._keep_mode(name, aside)
                files.link_unless_taken(name, parts, target, directory)
            except FileExistsError:  # Another file came meanwhile: it stays; this one was a
                os.unlink(aside, dir_fd=parts)  # download's, unchanged.
                raise Failure("a file was written there during the download: kept") from None
            except BaseException:
                self._put_back(aside, directory, target)
                raise
            os.unlink(aside, dir_fd=parts)
        else:
            entry = files.entry(target, directory)
            if entry is not None and stat.S_ISLNK(entry.st_mode):
                os.unlink(target, dir_fd=directory)
            try:
                files.link_unless_taken(name, parts, target, directory)
            except FileExistsError:
                raise Failure("a file was written there during the download: kept") from None
        with contextlib.suppress(FileNotFoundError):  # Gone where a rename gave the name.
            os.unlink(name, dir_fd=parts)
        os.fsync(directory)

    def _keep_mode(self, name, replaced):
        """Give the part ``name`` the permissions of the file it replaces (set aside as
        ``replaced``), as editors and ``rsync`` keep them: a file its user made private
        (``chmod 600``) must not come back readable by all, nor a script without its ``x``."""
        parts = self.parts()
        mode = os.stat(replaced, dir_fd=parts, follow_symlinks=False).st_mode & 0o777
        fd = os.open(name, os.O_RDONLY | files.NO_FOLLOW, dir_fd=parts)
        try:
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _names_without_replacing(self):
        """Whether files of this folder's file system can be given a name that never replaces
        (:func:`~.files.link_unless_taken`): tried once, on a file of the parts folder, before
        a file is set aside for a download (else it could not be given its name back)."""
        if self._naming is None:
            # A name of its own: another run may probe the same folder (pids repeat, across
            # containers sharing it).
            parts, probe = self.parts(), f"naming.{secrets.token_hex(8)}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | files.NO_FOLLOW
            os.close(os.open(probe, flags, 0o600, dir_fd=parts))
            try:
                files.link_unless_taken(probe, parts, f"{probe}.named", parts)
                self._naming = True
            except files.NoNamingWithoutReplacing:
                self._naming = False
            finally:
                for name in (probe, f"{probe}.named"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=parts)
        return self._naming

    def set_aside(self, path):
        """Whether a killed run left the file of ``path`` set aside (:meth:`publish`)."""
        if files.entry(PARTS, self.fd) is None:
            return False
        return files.entry(aside_of(path), self.parts()) is not None

    def recover(self, path, directory, target):
        """Give back the file of ``path`` that a killed run set aside (:meth:`publish`): its
        name again if it is free; dropped if the name is taken and the file was what a
        download wrote there (the run was killed once the new file had its name); else kept
        in :data:`~.names.PARTS`, and said (a :class:`Failure`)."""
        if not self.set_aside(path):
            return
        aside, parts = aside_of(path), self.parts()
        if files.entry(target, directory) is None:
            self._put_back(aside, directory, target)
            return
        fd = files.open_file(aside, parts)
        if fd is not None:
            try:
                digest = files.hash_of(fd, hashlib.sha256()).hexdigest()
            finally:
                os.close(fd)
            if digest == self.downloaded(path)[0]:
                os.unlink(aside, dir_fd=parts)
                return
        raise Failure(f"an earlier run set a file aside: kept as {PARTS}/{aside}")

    def _put_back(self, aside, directory, target):
        """Give the file set aside its name again, or leave it in :data:`~.names.PARTS` (and
        say so) should another have taken the name."""
        try:
            files.link_unless_taken(aside, self.parts(), target, directory)
        except FileExistsError:
            raise Failure(
                f"the file there changed during the download, then another came: the first is "
                f"kept as {PARTS}/{aside}"
            ) from None
        except files.NoNamingWithoutReplacing as e:
            raise Failure(f"{e.strerror}: the file there is kept as {PARTS}/{aside}") from None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside, dir_fd=self.parts())


def _entry(value):
    """``(sha256, record id)`` of a remembered download: an object, or a sha256 alone (as
    1.0.0 wrote them: no record id); None when it is neither."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict):
        sha256, record_id = value.get("sha256"), value.get("record")
        if isinstance(sha256, str) and (record_id is None or isinstance(record_id, str)):
            return sha256, record_id
    return None


def _lock(fd, name):
    """Hold the part for this run: another download into the same folder that needs the same
    file fails instead of appending to it too."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Failure(f"{PARTS}/{name} is being written by another download") from None
