"""Blobs nothing references any more, kept for the downloads that started before.

A download reads a record (or a ``/data/files`` entry), then opens the blob it names. Between
the two, on any node, the record can be replaced and its transaction commit; if the old blob
were deleted then, the download would find nothing, or lose it in the middle: an S3 or GCS
object is read by one response as the client takes it, and S3-compatible stores do not all
promise to finish a read of an object deleted meanwhile (nor does a shared file system: on
NFS, a file deleted by another node is a stale handle to this one). Nor would a signed URL
handed out just before (``307``) lead anywhere, nor a ``location`` a client read with the
record.

So a blob that a transaction stops referencing (a replaced or deleted attachment, a record,
collection or bucket deleted, a ``/data/files`` id uploaded again or deleted) is not deleted
when it commits, unless ``gc.replaced_grace_seconds`` is 0: the transaction records it here,
in the same storage as the records, with the time it is due (``until``). The reference moves
from the record, link or entry to this one atomically: a rollback leaves the blob referenced
where it was, a crash after the commit leaves it here. The garbage collector deletes the
blobs that are due: it first claims their entries (removes them in a transaction of its own:
of two collectors, only one gets each), then deletes the blobs; a crash between the two
leaves an unreferenced blob, which the next orphan pass removes. Nothing can reference a
blob here again: stored names are never reused while their blob exists, nor while an entry
here names them (a file lost before: :func:`.links.held`), so a claimed key names no live
blob.

``keep_old_files`` is unchanged: the blobs it keeps are retained (:func:`.links.retain`),
never recorded here.
"""

import hashlib

from kinto.core.storage import Filter
from kinto.core.utils import COMPARISON

from . import paging


RESOURCE = "attachment-replaced"
PARENT_ID = "attachment-replaced"
#: Every entry: each under a parent of its own (:func:`.paging.own_parent`), and those
#: written before under ``PARENT_ID`` itself.
EVERY = PARENT_ID + "*"


def _entry_id(key):
    # Deterministic: recording a key twice leaves one entry.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def add(storage, keys, until):
    """Record ``keys`` as unreferenced, to be deleted once ``until`` (epoch ms) has passed."""
    for key in keys:
        entry_id = _entry_id(key)
        storage.update(
            resource_name=RESOURCE,
            parent_id=paging.own_parent(PARENT_ID, entry_id),
            object_id=entry_id,
            obj={"key": key, "until": until},
        )


def names(storage, key):
    """Whether an entry names ``key`` (one lookup by id)."""
    found = storage.list_all(
        resource_name=RESOURCE,
        parent_id=EVERY,
        filters=[Filter("id", _entry_id(key), COMPARISON.EQ)],
    )
    return any(entry["key"] == key for entry in found)


def every(storage):
    """Every entry (``{"id", "key", "until"}``), by pages."""
    return paging.every(storage, RESOURCE, EVERY)


def _due(now):
    return [Filter("until", now, COMPARISON.MAX)]


def every_due(storage, now):
    """Every entry due at ``now`` (epoch ms), by pages."""
    return paging.every(storage, RESOURCE, EVERY, _due(now))


def due(storage, now, limit, after=None):
    """Up to ``limit`` entries due at ``now``, in id order, with ids after ``after``."""
    return paging.page(storage, RESOURCE, EVERY, _due(now), after, limit=limit)


def claim(storage, entries):
    """Remove ``entries``; return those this call removed (not another collector)."""
    if not entries:
        return []
    removed = storage.delete_all(
        resource_name=RESOURCE,
        parent_id=EVERY,
        filters=[Filter("id", [entry["id"] for entry in entries], COMPARISON.IN)],
        with_deleted=False,
    )
    ids = {entry["id"] for entry in removed}
    return [entry for entry in entries if entry["id"] in ids]
