"""Renaming a finished file onto its name, never over a file already there.

``renameat2`` with ``RENAME_NOREPLACE`` (Linux, glibc 2.28 and later; ext4, XFS, Btrfs, tmpfs)
does it in one step, refused with ``EEXIST`` when the name is taken. Where there is no such call
(another C library, another system) or the file system refuses the flag (``EINVAL``: NFS,
some FUSE mounts), the name is first reserved with ``O_EXCL``, then the file renamed onto that
empty placeholder. That costs an inode created and freed for every file, and ext4 without a
journal skips an inode freed in the last seconds when it allocates one, with a lookup in the
inode table each: at a hundred small uploads a second, every new file went past hundreds of
them (a tenth of the server's kernel time).
"""

import contextlib
import ctypes
import errno
import os


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
#: What a file system or a kernel that cannot rename without replacing answers.
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


def _renameat2():
    """The C library's ``renameat2``, or None."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    path, directory = ctypes.c_char_p, ctypes.c_int
    function.argtypes = [directory, path, directory, path, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _renameat2()


def rename_unless_taken(source, destination):
    """Rename the file ``source`` to ``destination`` (same file system) unless something is
    there already: whether it was renamed."""
    if _RENAMEAT2 is not None:
        status = _RENAMEAT2(
            _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(destination), _RENAME_NOREPLACE
        )
        if status == 0:
            return True
        error = ctypes.get_errno()
        if error == errno.EEXIST:
            return False
        if error not in _UNSUPPORTED:
            raise OSError(error, os.strerror(error), source, None, destination)
    return _through_placeholder(source, destination)


def _through_placeholder(source, destination):
    try:
        os.close(os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    try:
        os.replace(source, destination)
    except BaseException:
        # The empty placeholder is ours (made with ``O_EXCL``): the name is let go.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(destination)
        raise
    return True


def file_mode():
    """The mode of the files the store makes: what ``open`` gives a new file (``0o666`` less
    the process's umask: ``0o644`` under the usual ``022``; ``027`` keeps them from other
    users), read once, from ``/proc`` (or set and put back at once where there is none)."""
    global _FILE_MODE
    if _FILE_MODE is None:
        _FILE_MODE = 0o666 & ~_umask()
    return _FILE_MODE


_FILE_MODE = None


def _umask():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask
