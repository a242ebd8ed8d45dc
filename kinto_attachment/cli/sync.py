"""A folder against a collection: what to upload, what is unchanged, what to delete.

Files are compared by sha256 with their records' attachments, never by date. Each file's
record id is derived from its path in the folder (:func:`~.names.record_id_of`), so the same
file always lands on the same record, from any machine; a path written in another Unicode
form than the one a record's mark names (composed on Linux, decomposed from macOS HFS+) is
the same file, on the same record, never taken for a gone one.

Each record a sync attaches a file to is marked with :data:`~.names.MARK`: the folder's name
(the last part of its path, or ``--as NAME``), the file's path and its sha256. ``--delete``
deletes only records marked with this folder's name that still hold the file the sync
attached (the mark's sha256 is the attachment's) and whose path holds nothing in the folder
any more; a record attached any other way is never deleted, nor overwritten when another
folder's sync marked it, nor when its attachment was replaced since this folder's sync (the
mark's sha256 is not the attachment's: someone else's newer version). Uploads are
conditional: a record created or changed after the listing is not overwritten (``412``). A
record of an unchanged file that has no mark (uploaded by
``upload``, or by a sync older than the marks) gets this folder's.
"""

import collections
import dataclasses
import os
import unicodedata

from .answers import Failure
from .names import MARK, PARTS, aside_of, mark_of, record_id_of, shown
from .pace import sha256_of


@dataclasses.dataclass
class Entry:
    #: The file's path in the folder (``/``-separated).
    path: str
    record_id: str
    #: The record as listed (None: none yet).
    record: dict = None
    #: Why it is skipped, or the folder whose sync marked its record.
    note: str = None
    #: The file's sha256 (when it was read).
    sha256: str = None
    #: The path the record's mark names when it is the file's in another Unicode form
    #: (``café`` composed on Linux, decomposed as macOS HFS+ lists it): kept in the mark.
    marked_as: str = None

    @property
    def marked_path(self):
        """The path a mark of this entry's record names the file by."""
        return self.marked_as or self.path

    def __str__(self):
        return f"{shown(self.path)} ({shown(self.record_id)})"


@dataclasses.dataclass
class Plan:
    """What a sync does, each list of :class:`Entry`, sorted by path."""

    new: list = dataclasses.field(default_factory=list)
    changed: list = dataclasses.field(default_factory=list)
    unchanged: list = dataclasses.field(default_factory=list)
    #: Unchanged files whose record gets this folder's mark.
    adopted: list = dataclasses.field(default_factory=list)
    #: Changed files whose record another folder's sync marked: left alone.
    conflicts: list = dataclasses.field(default_factory=list)
    #: Files whose record's attachment was replaced by someone else since this folder's sync
    #: attached it (the mark's sha256 is not the attachment's): left alone, never reverted.
    diverged: list = dataclasses.field(default_factory=list)
    #: Files not synced: links out of the folder, names that are no UTF-8...
    skipped: list = dataclasses.field(default_factory=list)
    #: Records of this folder whose file is gone.
    gone: list = dataclasses.field(default_factory=list)
    #: Records of this folder whose file is gone, but whose attachment is another file now.
    kept: list = dataclasses.field(default_factory=list)

    def lines(self, delete):
        yield from (f"new        {e}" for e in self.new)
        yield from (f"changed    {e}" for e in self.changed)
        yield from (f"unchanged  {e}" for e in self.unchanged)
        yield from (f"mark       {e}" for e in self.adopted)
        yield from (f"conflict   {e} {conflict(e)}" for e in self.conflicts)
        yield from (f"conflict   {e} {diverged(e)}" for e in self.diverged)
        yield from (f"skipped    {shown(e.path)}: {e.note}" for e in self.skipped)
        for entry in self.gone:
            yield f"delete     {entry}" if delete else f"gone       {entry} {WOULD_DELETE}"
        yield from (f"kept       {e} {REPLACED}" for e in self.kept)


WOULD_DELETE = "would delete with --delete"


def diverged(entry):
    """Why ``entry`` (of :attr:`Plan.diverged`) is left alone, and how to replace it: by its
    record's id (``upload`` would take the record of the file's name alone)."""
    return (
        "its attachment was replaced on the server since this folder's sync attached it; "
        "left as it is (download it, or replace it with kinto-attachment upload --force "
        f"--id {shown(entry.record_id)} FILE)"
    )


REPLACED = "its attachment is no longer the file this folder's sync attached"


def conflict(entry):
    folder = shown(entry.note)
    return f"synced from folder {folder!r}, left as it is (--as {folder!r} to sync it)"


def mark(folder, path, sha256):
    """The record field that says the record's file is ``path`` of the folder named
    ``folder``, as it was when its sha256 was ``sha256``."""
    return {MARK: {"folder": folder, "path": path, "sha256": sha256}}


def hash_of(record):
    """The sha256 of the record's attachment, or None."""
    attachment = (record or {}).get("attachment")
    return attachment.get("hash") if isinstance(attachment, dict) else None


def files_of(folder, follow_symlinks=False):
    """``(paths, skipped)``: the regular files under ``folder``, relative, with ``/``, sorted;
    and the :class:`Entry` of what is not synced. Hidden files and folders (``.git``,
    editors' files) are left out. Symbolic links are followed inside ``folder``; those
    that leave it are skipped unless ``follow_symlinks``; a link to a folder it is in is
    skipped (it would never end)."""
    root = os.path.realpath(folder)
    found, skipped = [], []

    def visit(directory, prefix, above):
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as e:
            if not prefix:  # Nothing of the folder could be seen: nothing may be deleted.
                raise Failure(f"{folder}: {e.strerror}") from e
            skipped.append(Entry(prefix.rstrip("/"), None, note=e.strerror))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = prefix + entry.name
            why = _unsynced(entry, root, follow_symlinks)
            if why is None and entry.is_dir():
                real = os.path.realpath(entry.path)
                if real in above:
                    why = "a link to a folder it is in"
                else:
                    visit(entry.path, path + "/", above | {real})
                    continue
            if why is None and not entry.is_file():
                why = "not a regular file"
            if why is None:
                found.append(path)
            else:
                skipped.append(Entry(path, None, note=why))

    visit(folder, "", {root})
    return sorted(found), skipped


def _unsynced(entry, root, follow_symlinks):
    """Why a directory entry is not synced, or None."""
    try:
        entry.name.encode()
    except UnicodeEncodeError:
        return "its name is not UTF-8"
    if not entry.is_symlink():
        return None
    real = os.path.realpath(entry.path)
    if not os.path.exists(real):
        return "a broken symbolic link"
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep) and not follow_symlinks:
        return "a symbolic link out of the folder (--follow-symlinks to follow it)"
    return None


def _form(path):
    """``path`` in one Unicode form (NFC): one name for a user, however a system writes it."""
    return unicodedata.normalize("NFC", path)


def _own(record, name, path):
    """Whether ``record`` is the one the sync of the folder ``name`` made for ``path``."""
    owner = mark_of(record) if record is not None else None
    return owner is not None and owner[0] == name and owner[1] == path


def there(folder, path, skipped):
    """Whether anything is at ``path`` in ``folder``, or under a skipped part of it (a skipped
    part compared in any Unicode form: a file that could not be read may be the one its
    record names), or set aside by a ``download`` that was killed before it gave the file its
    name again (the next download of it does)."""
    parts = _form(path).split("/")
    ancestors = {"/".join(parts[:n]) for n in range(1, len(parts) + 1)}
    if any(_form(entry.path) in ancestors for entry in skipped):
        return True
    # The file first, then its copy set aside: a download sets the file aside before its new
    # version takes the name, and drops the copy after, so one of the two is seen whenever
    # the other is looked at (the other order could see neither).
    if os.path.lexists(os.path.join(folder, *path.split("/"))):
        return True
    return os.path.lexists(os.path.join(folder, PARTS, aside_of(path)))


def plan(remote, folder, name, follow_symlinks=False):
    """The plan of syncing ``folder`` under the name ``name`` (what its records' marks say)."""
    paths, skipped = files_of(folder, follow_symlinks)
    records = {
        r["id"]: r
        for r in remote.records()
        if isinstance(r, dict) and isinstance(r.get("id"), str)
    }
    result = Plan(skipped=skipped)
    marked = {}  # This folder's records by the form of their mark's path.
    for record in records.values():
        owner = mark_of(record)
        if owner is not None and owner[0] == name:
            marked.setdefault(_form(owner[1]), (owner[1], record))
    forms = collections.Counter(_form(path) for path in paths)
    taken = set()  # The records of the folder's files: not gone, whatever their marks say.
    for path in paths:
        record_id, form = record_id_of(path), _form(path)
        entry = Entry(path, record_id, records.get(record_id))
        # Its name in another form, unless the folder has two files of that name (Linux
        # keeps both forms apart): each then has its own record. The record of its exact
        # name, unless this folder's sync made it for it, is someone else's (the file
        # uploaded from a Mac by ``upload``): the file stays on the one its sync gave it.
        if form in marked and forms[form] == 1 and not _own(entry.record, name, path):
            entry.marked_as, entry.record = marked[form]
            entry.record_id = entry.record["id"]
        taken.add(entry.record_id)
        try:
            entry.sha256 = sha256_of(os.path.join(folder, path))
        except OSError as e:
            result.skipped.append(Entry(path, None, note=e.strerror))
            continue
        stored = hash_of(entry.record)
        owner = mark_of(entry.record) if entry.record else None
        mine = owner is not None and owner[0] == name
        if owner is not None and not mine and stored != entry.sha256:
            entry.note = owner[0]
            result.conflicts.append(entry)
        elif stored is None:
            result.new.append(entry)
        elif stored != entry.sha256 and mine and owner[2] not in (None, stored):
            result.diverged.append(entry)
        elif stored != entry.sha256:
            result.changed.append(entry)
        elif owner is None or (mine and owner[2] != stored):
            result.adopted.append(entry)
        else:
            result.unchanged.append(entry)
    for record_id, record in records.items():
        owner = mark_of(record)
        if owner is None or owner[0] != name or record_id in taken:
            continue
        if not there(folder, owner[1], skipped):
            entry = Entry(owner[1], record_id, record)
            (result.gone if owner[2] == hash_of(record) else result.kept).append(entry)
    result.gone.sort(key=lambda e: e.path)
    result.kept.sort(key=lambda e: e.path)
    result.skipped.sort(key=lambda e: e.path)
    return result
