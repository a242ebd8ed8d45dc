"""Files of a folder, reached through a descriptor of their directory (``openat`` and
friends), one name at a time, never through a symbolic link: what :mod:`.folder` and
:mod:`.downloads` build on.
"""

import ctypes
import errno
import os
import stat

from .pace import CHUNK


#: Opening something that must be no link (nor a FIFO that would block the open).
NO_FOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | NO_FOLLOW


def hash_of(fd, digest):
    """``digest`` fed the whole file ``fd``, read from its start."""
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, CHUNK):
        digest.update(chunk)
    return digest


def open_regular(name, directory, flags=os.O_RDONLY):
    """A descriptor of the plain file ``name`` in ``directory`` (for reading, or ``flags``),
    or None when there is none there (a link, a folder, a FIFO, a file with other names are
    none: a download never writes through them)."""
    return _open_regular(name, flags, directory)


def open_file(name, directory):
    """:func:`open_regular`, a file with other names too (hard links) included: a file of
    the folder that may not be replaced, though it must never be written through."""
    return _open_regular(name, os.O_RDONLY, directory, links=True)


def stamp(status):
    """What tells whether a file changed (its inode, size and date), from its ``stat``."""
    return status.st_ino, status.st_size, status.st_mtime_ns


def stamp_at(name, directory):
    fd = open_file(name, directory)
    if fd is None:
        return None
    try:
        return stamp(os.fstat(fd))
    finally:
        os.close(fd)


def entry(name, directory):
    """The ``lstat`` of ``name`` in ``directory``, or None when nothing has that name."""
    try:
        return os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return None


#: What ``link()`` fails with where a file system cannot give a file a second name.
NO_LINKS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


class NoNamingWithoutReplacing(OSError):
    """The file system can neither give a file a second name nor rename it without replacing
    what has the name: no name is given (a check before a ``rename`` would let a file written
    meanwhile be replaced)."""

    WHY = "the file system can name a file only by replacing what is there"

    def __init__(self, target):
        super().__init__(errno.ENOTSUP, self.WHY, target)


def link_unless_taken(name, source, target, directory):
    """Give the file ``name`` of ``source`` the name ``target`` in ``directory``, unless
    something has it (``FileExistsError``), atomically: a second name (``link``), where the
    file system has them; else a ``rename`` that never replaces (Linux's ``renameat2`` with
    ``RENAME_NOREPLACE``, macOS's ``renameatx_np`` with ``RENAME_EXCL``: FAT, SMB and FUSE
    mounts without hard links); else :class:`NoNamingWithoutReplacing`."""
    try:
        os.link(name, target, src_dir_fd=source, dst_dir_fd=directory, follow_symlinks=False)
    except OSError as e:
        if e.errno not in NO_LINKS:
            raise
        rename_unless_taken(name, source, target, directory)


#: The system's rename that never replaces, and its flag, where the C library has one.
_NOREPLACE = [("renameat2", 1), ("renameatx_np", 4)]


def _system_rename():
    """``(function, flag)``: the first of :data:`_NOREPLACE` the C library has, or None."""
    libc = ctypes.CDLL(None, use_errno=True)
    for name, flag in _NOREPLACE:
        function = getattr(libc, name, None)
        if function is not None:
            path, directory = ctypes.c_char_p, ctypes.c_int
            function.argtypes = [directory, path, directory, path, ctypes.c_uint]
            return function, flag
    return None


#: Looked up once (a download names its files through it).
_RENAME_NOREPLACE = _system_rename()


def rename_unless_taken(name, source, target, directory):
    """``rename`` of ``name`` in ``source`` to ``target`` in ``directory``, unless something
    has that name (``FileExistsError``); :class:`NoNamingWithoutReplacing` where the system
    or the file system cannot tell."""
    if _RENAME_NOREPLACE is None:
        raise NoNamingWithoutReplacing(target)
    rename, flag = _RENAME_NOREPLACE
    if rename(source, os.fsencode(name), directory, os.fsencode(target), flag) == 0:
        return
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        raise NoNamingWithoutReplacing(target)  # The file system does not know the flag.
    raise OSError(code, os.strerror(code), target)


def _open_regular(name, flags, directory, links=False):
    try:
        fd = os.open(name, flags | NO_FOLLOW, dir_fd=directory)
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            return None
        raise
    status = os.fstat(fd)
    if stat.S_ISREG(status.st_mode) and (links or status.st_nlink == 1):
        return fd
    os.close(fd)
    return None
