"""The local store's listing (:meth:`LocalStore.iter_blobs
<kinto_attachment.storage.local.store.LocalStore.iter_blobs>`): a walk of ``base_path``, for
the garbage collector and adoption."""

import os
import unicodedata

from .. import Listed
from .staged import TEMP_PREFIX, TEMP_SUFFIX


#: What ``mkfs`` makes at the root of ext2/3/4 file systems (root's, mode 0700).
LOST_AND_FOUND = "lost+found"


def folded(key):
    """``key`` as a disk that ignores case and Unicode normalisation in names sees it (macOS's
    APFS and HFS+, Windows' NTFS, a casefolded ext4): keys of one folded form may be one file
    there, listed under the name its first folder or file was created with (buckets
    ``Photos`` and ``photos`` share the folder ``Photos/``)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", key).casefold())


def folds_names(base_path):
    """Whether the disk of ``base_path`` takes names that differ by case for one name: the
    first entry of ``base_path`` with a letter in its name, looked up with its case swapped
    (nothing is written). None when that cannot tell (no such entry: nothing to fold yet;
    ``base_path`` not there, or unreadable)."""
    try:
        with os.scandir(base_path) as entries:
            for entry in entries:
                swapped = entry.name.swapcase()
                if swapped == entry.name:
                    continue
                try:
                    itself = entry.stat(follow_symlinks=False)
                    other = os.lstat(os.path.join(base_path, swapped))
                except FileNotFoundError:
                    if os.path.lexists(entry.path):
                        return False
                    continue  # Gone meanwhile (a file deleted): ask the next one.
                except OSError:  # Its swapped name is too long ("ŉ" is "ʼN"): the next one.
                    continue
                return os.path.samestat(itself, other)
    except OSError:
        return None
    return None


def version(stat):
    """:attr:`Stat.version` of a file: another file under its name, or the file rewritten,
    has another."""
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"


def walk(base_path):
    """Every regular file under ``base_path``, depth first, as :class:`Listed`.

    Only the open directory iterators of the current branch are held, never the tree.
    Symbolic links are neither followed nor listed: ``path()`` resolves them, so deleting
    one by its key would delete its target. Files removed while walking are skipped, and
    so is the file system's ``lost+found`` at the root (a ``base_path`` that is a mount
    point): no key is in it (ids have no ``+``). Any other folder this process may not
    read stops the listing (``PermissionError``): skipped, its files would be neither kept
    by adoption nor known to the collector, which would take them for orphans once the
    folder is readable again.
    """
    branches = [("", os.scandir(base_path))]
    try:
        while branches:
            prefix, entries = branches[-1]
            entry = next(entries, None)
            if entry is None:
                branches.pop()[1].close()
                continue
            lost_and_found = not prefix and entry.name == LOST_AND_FOUND
            if lost_and_found and entry.is_dir(follow_symlinks=False):
                continue  # A file of that name may be a key's (``randomize = false``).
            try:
                listed = _listed(prefix, entry, branches)
            except FileNotFoundError:
                continue
            if listed is not None:
                yield listed
    finally:
        for _, entries in branches:
            entries.close()


def _listed(prefix, entry, branches):
    """The :class:`Listed` of a file; a directory is pushed onto ``branches`` instead."""
    key = prefix + entry.name
    if entry.is_dir(follow_symlinks=False):
        branches.append((key + "/", os.scandir(entry.path)))
    elif entry.is_file(follow_symlinks=False):
        stat = entry.stat(follow_symlinks=False)
        modified_ms = stat.st_mtime_ns // 1_000_000
        temporary = entry.name.startswith(TEMP_PREFIX) and entry.name.endswith(TEMP_SUFFIX)
        return Listed(key, stat.st_size, modified_ms, temporary, version(stat))
    return None
