"""A folder against a collection: what to upload, what is unchanged, what to delete.

Files are compared by sha256 with their records' attachments, never by date. Each file's
record id is derived from its path in the folder (:func:`~.remote.record_id_of`), so the same
file always lands on the same record, from any machine.
"""

import dataclasses
import os

from .remote import record_id_of, sha256_of


@dataclasses.dataclass
class Plan:
    #: ``(path in the folder, record id)`` of files without a record, or with another file.
    new: list = dataclasses.field(default_factory=list)
    changed: list = dataclasses.field(default_factory=list)
    unchanged: list = dataclasses.field(default_factory=list)
    #: Ids of records with an attachment that no file of the folder has.
    gone: list = dataclasses.field(default_factory=list)

    def lines(self, delete):
        yield from (f"new        {name}" for name, _ in self.new)
        yield from (f"changed    {name}" for name, _ in self.changed)
        yield from (f"unchanged  {name}" for name, _ in self.unchanged)
        verb = "delete    " if delete else "extra     "
        yield from (f"{verb} record {record_id}" for record_id in self.gone)


def files_of(folder):
    """Paths of the regular files under ``folder``, relative to it, with ``/``, sorted.
    Hidden files and folders (``.git``, editors' files) are left out."""
    found = []
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in names:
            path = os.path.join(root, name)
            if not name.startswith(".") and os.path.isfile(path):
                found.append(os.path.relpath(path, folder).replace(os.sep, "/"))
    return sorted(found)


def plan(remote, folder):
    hashes = {
        record["id"]: (record.get("attachment") or {}).get("hash") for record in remote.records()
    }
    result = Plan()
    mine = set()
    for name in files_of(folder):
        record_id = record_id_of(name)
        mine.add(record_id)
        stored = hashes.get(record_id)
        if stored is None:
            result.new.append((name, record_id))
        elif stored == sha256_of(os.path.join(folder, name)):
            result.unchanged.append((name, record_id))
        else:
            result.changed.append((name, record_id))
    result.gone = sorted(rid for rid, stored in hashes.items() if stored and rid not in mine)
    return result
