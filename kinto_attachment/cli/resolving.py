"""Which records the names and ids given to ``download`` and ``rm`` designate: a command
never deletes, nor downloads, a record the user did not name."""

from . import downloads
from .answers import Failure
from .names import argument_path, key, local_names, record_id_of
from .progress import report


def resolve(remote, names, ids):
    """``([(argument, record, path or None)], failed)``: the record each NAME and ``--id``
    designates, once each (``path``: the file name it was designated by).

    A NAME may designate a record three ways: the record its upload gave that name
    (:func:`record_id_of`), the record of that id, and the record whose file ``download``
    names so (the collection's catalogue). Two that disagree are refused (give ``--id``),
    and so is a name the catalogue has only in another case or form: the command never
    deletes, nor downloads, a record the user did not name."""
    found, failed, catalogue = {}, False, None
    for text in names:
        path = argument_path(text) if text else None
        by_name = remote.record(record_id_of(path)) if path else None
        by_id = (
            remote.record(text) if text and "/" not in text and text not in (".", "..") else None
        )
        listed_as = None
        if path is not None:
            if catalogue is None:
                catalogue = _catalogue(remote)
            name, listed_as = catalogue.get(key(path), (None, None))
            if listed_as is not None and name != path:  # Only folded: another file's name.
                if by_name is None and by_id is None:
                    failed = report(text, f"no such file or record (did you mean {name}?)")
                    continue
                listed_as = None
        designated = {r["id"]: r for r in (by_name, listed_as, by_id) if r is not None}
        if len(designated) > 1:
            failed = report(
                text,
                f"names several records ({', '.join(sorted(designated))}): give the record "
                f"with --id",
            )
        elif not designated:
            failed = report(text or "''", "no such file or record")
        else:
            [record] = designated.values()
            found.setdefault(record["id"], (text, record, None if record is by_id else path))
    for text in ids:
        record = remote.record(text) if text else None
        if record is None:
            failed = report(text, "no such record")
        else:
            found.setdefault(record["id"], (text, record, None))
    return list(found.values()), failed


def _catalogue(remote):
    """``{key(name): record}``: the records of the collection by the name download gives
    their files."""
    records = {r["id"]: r for r in listed(remote) if downloads.check(r.get("attachment")) is None}
    names = local_names(records.values())
    return {key(name): (name, records[rid]) for rid, name in names.items()}


def listed(remote):
    """The records of the collection that are objects with a string id."""
    for record in remote.records():
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            yield record


def claimed(remote):
    """Whether a record still claims the file a download wrote for it: unless the server says
    there is no such record (404, or 400: no record can have that id). A record the user may
    not read (403) still exists. Some records downloaded alone get names that are not the
    whole folder's (another record may have it there): that record's file is not theirs to
    replace."""

    def exists(record_id):
        try:
            url = remote.record_url(record_id)
        except Failure:  # No record can have that id.
            return False
        answer = remote.request("GET", url, expected=(200, 400, 403, 404))
        return answer.status_code not in (400, 404)

    return exists
