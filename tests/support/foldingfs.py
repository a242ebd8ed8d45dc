"""A file system that ignores case and Unicode normalisation in names, and keeps them as
written (as macOS's APFS and HFS+, Windows' NTFS, a casefolded ext4): a FUSE passthrough to a
folder, for the tests of the local store on such disks.

    python -m tests.support.foldingfs SOURCE MOUNTPOINT

runs in the foreground until the mount point is unmounted. A name is looked up as itself, else
as the first entry of its folder equal to it once case-folded and NFC-normalised; a new name is
created as given. Single-threaded: correct, not fast.
"""

import errno
import os
import sys
import unicodedata

from fuse import FUSE, FuseOSError, Operations


def folded(name):
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


_STAT = ("st_atime", "st_ctime", "st_gid", "st_ino", "st_mode", "st_mtime", "st_nlink", "st_size",
         "st_uid")  # fmt: skip
_STATVFS = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files",
            "f_flag", "f_frsize", "f_namemax")  # fmt: skip


class Folding(Operations):
    def __init__(self, source):
        self.source = source

    def _real(self, path):
        real = self.source
        for name in path.split("/"):
            if not name:
                continue
            try:
                names = os.listdir(real)
            except (FileNotFoundError, NotADirectoryError):
                names = []
            if name not in names:
                name = next((n for n in names if folded(n) == folded(name)), name)
            real = os.path.join(real, name)
        return real

    def access(self, path, mode):
        if not os.access(self._real(path), mode):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        os.chmod(self._real(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._real(path), uid, gid)

    def getattr(self, path, fh=None):
        found = os.lstat(self._real(path))
        return {key: getattr(found, key) for key in _STAT}

    def readdir(self, path, fh):
        return [".", "..", *os.listdir(self._real(path))]

    def readlink(self, path):
        return os.readlink(self._real(path))

    def mkdir(self, path, mode):
        os.mkdir(self._real(path), mode)

    def rmdir(self, path):
        os.rmdir(self._real(path))

    def statfs(self, path):
        found = os.statvfs(self._real(path))
        return {key: getattr(found, key) for key in _STATVFS}

    def unlink(self, path):
        os.unlink(self._real(path))

    def symlink(self, name, target):
        os.symlink(target, self._real(name))

    def rename(self, old, new):
        os.rename(self._real(old), self._real(new))

    def link(self, name, target):
        os.link(self._real(target), self._real(name))

    def utimens(self, path, times=None):
        os.utime(self._real(path), times)

    def open(self, path, flags):
        return os.open(self._real(path), flags)

    def create(self, path, mode, fi=None):
        return os.open(self._real(path), os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)

    def read(self, path, length, offset, fh):
        return os.pread(fh, length, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        if fh is None:
            os.truncate(self._real(path), length)
        else:
            os.ftruncate(fh, length)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)

    def fsync(self, path, datasync, fh):
        os.fsync(fh)

    def fsyncdir(self, path, datasync, fh):
        return 0


if __name__ == "__main__":
    source, mountpoint = sys.argv[1:]
    # use_ino: a file's inode number is its source's, whatever name it is looked up by.
    FUSE(Folding(source), mountpoint, foreground=True, nothreads=True, use_ino=True)
