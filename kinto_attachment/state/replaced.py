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

Once a blob is deleted, a name that can be given again (``randomize = false``: the file's
name; a random name never comes back) stays reserved a while longer by a quarantine entry
(:func:`quarantine`): until the URLs that may still name it have expired (a ``307``'s signed
URL, an event's fetch URL), and for a minute at least (a download that read a record naming
it opens it within). Without it, the next upload of that name, by anyone, in any bucket, took
it at once: such a URL, or such a download, served that other file; and a delete sent again
by the store's client after a lost answer deleted it. A quarantine entry never deletes
anything: the collector removes it once it is due (:func:`end_quarantines`).

``keep_old_files`` is unchanged: the blobs it keeps are retained (:func:`.links.retain`),
never recorded here.
"""

import hashlib

from kinto.core.storage import Filter
from kinto.core.utils import COMPARISON

from . import instance, paging


RESOURCE = "attachment-replaced"
PARENT_ID = "attachment-replaced"
#: Every entry: each under a parent of its own (:func:`.paging.own_parent`), and those
#: written before under ``PARENT_ID`` itself.
EVERY = PARENT_ID + "*"


#: The least a name stays reserved once its blob is deleted (:func:`quarantine`), seconds.
QUARANTINE_SECONDS = 60
#: The field of a quarantine entry (its blob is gone: nothing to delete).
QUARANTINED = "quarantine"


def _entry_id(key, prefix=""):
    # Deterministic: recording a key twice leaves one entry (and one quarantine entry).
    return hashlib.sha256((prefix + key).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _quarantine_id(key):
    return _entry_id(key, prefix="quarantine:")


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


def reusable(keys):
    """The names among ``keys`` that can be given again once their blobs are deleted: every
    name but those drawn at random (:func:`.instance.drawn`, which no chosen name takes; a
    chosen name may hold one, ``{rid}-`` and a random name a client copied)."""
    return [key for key in keys if not instance.drawn(key)]


def quarantine(registry, keys, now, seconds=None):
    """Keep the names among ``keys`` that can be given again (:func:`reusable`) reserved once
    their blobs are deleted. Written in the transaction that lets them go, before they are
    deleted. Until the longest of the signed URLs downloads (``307``) and events hand out may
    still be used, and :data:`QUARANTINE_SECONDS` at least; or ``seconds``, for names no URL
    was handed out for (blobs of uploads that did not commit)."""
    names = reusable(keys)
    if not names:
        return
    if seconds is None:
        settings = registry.attachment_settings
        events = settings.events.url_expires_seconds if settings.events.enabled else 0
        seconds = max(QUARANTINE_SECONDS, settings.redirect_expires or 0, events)
    for key in names:
        entry_id = _quarantine_id(key)
        registry.storage.update(
            resource_name=RESOURCE,
            parent_id=paging.own_parent(PARENT_ID, entry_id),
            object_id=entry_id,
            obj={"key": key, "until": now + seconds * 1000, QUARANTINED: True},
        )


def names(storage, key):
    """Whether an entry names ``key``, or keeps its name in quarantine (one lookup by id)."""
    found = storage.list_all(
        resource_name=RESOURCE,
        parent_id=EVERY,
        filters=[Filter("id", [_entry_id(key), _quarantine_id(key)], COMPARISON.IN)],
    )
    return any(entry["key"] == key for entry in found)


def every(storage):
    """Every entry (``{"id", "key", "until"}``), by pages."""
    return paging.every(storage, RESOURCE, EVERY)


def _due(now):
    """Filters of the entries whose blobs are due (quarantine entries have none)."""
    # HAS first: Kinto's memory backend lets a HAS filter decide alone over the filters
    # before it (kinto 26's ``apply_filters``), not over those after.
    return [Filter(QUARANTINED, False, COMPARISON.HAS), Filter("until", now, COMPARISON.MAX)]


def end_quarantines(storage, now):
    """Remove the quarantine entries due at ``now``: their names may be given again."""
    filters = [Filter(QUARANTINED, True, COMPARISON.EQ), Filter("until", now, COMPARISON.MAX)]
    # Kinto's storage deletes ``storage_max_fetch_size`` objects at most a call.
    while storage.delete_all(
        resource_name=RESOURCE, parent_id=EVERY, filters=filters, with_deleted=False
    ):
        pass


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
