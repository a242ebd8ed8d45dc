"""Files of a folder, reached through a descriptor of their directory (``openat`` and
friends), one name at a time, never through a symbolic link: what :mod:`.folder` and
:mod:`.downloads` build on.
"""

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


def link_unless_taken(name, source, target, directory):
    """Give the file ``name`` of ``source`` the name ``target`` in ``directory``, unless
    something has it (``FileExistsError``): a second name (``link``), atomically, where the
    file system has them; else a ``rename`` once nothing is seen there."""
    try:
        os.link(name, target, src_dir_fd=source, dst_dir_fd=directory, follow_symlinks=False)
    except OSError as e:
        if e.errno not in NO_LINKS:
            raise
        if entry(target, directory) is not None:
            raise FileExistsError(errno.EEXIST, "taken", target) from None
        os.rename(name, target, src_dir_fd=source, dst_dir_fd=directory)


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
