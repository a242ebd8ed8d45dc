"""State of resumable (tus) uploads, kept in Kinto's storage backend.

The offset, the metadata, the hash state and the store's own state (a staged file, or an S3
multipart upload) are recorded after every request, in its transaction: any process of the
cluster can go on with the upload, after a restart too, and what is recorded is the truth.

Requests on one upload are serialised by a lock held until the request's transaction ends
(:mod:`kinto_attachment.locks`): a second request is refused at once with ``423 Locked``, as
tusd does.

Each upload is under a parent of its own (:func:`.paging.own_parent`), named in its state
(``parent``): uploads created or written to at once never collide. Those of earlier versions,
all under ``PARENT_ID`` (and naming none), stay there.
"""

import base64
import contextlib
import secrets

from kinto.core.storage import Filter, Sort
from kinto.core.storage.exceptions import ObjectNotFoundError
from kinto.core.utils import COMPARISON, msec_time

from .. import locks
from . import paging, records, storable
from .hashstate import ResumableSha256


RESOURCE = "attachment-upload"
PARENT_ID = "attachment-uploads"
#: Every upload, under its own parent or under ``PARENT_ID``.
EVERY = PARENT_ID + "*"
#: What a finished upload keeps: whose it is, where, and what ``HEAD`` tells.
FINISHED_FIELDS = (
    "id",
    "userid",
    "bucket_id",
    "collection_id",
    "record_id",
    "length",
    "metadata",
    "concat",
)


class Locked(Exception):
    """Another request is working on this upload."""


def new_id():
    return secrets.token_hex(16)


def new(ids, userid, length, plan, fields, metadata, state, client=None, concat=None):
    """The state of a new upload of ``length`` bytes (None: deferred) by ``userid`` to the
    record of ``ids`` (bucket, collection, record): its
    :class:`~kinto_attachment.uploads.intake.Plan`, the record's ``fields`` (data,
    permissions), ``Upload-Metadata`` as sent, the store's ``state``; ``client`` names an
    anonymous creator (``userid`` None) for its quota; ``concat`` is ``Upload-Concat`` of a
    partial or final upload (concatenation), None for others."""
    bucket_id, collection_id, record_id = ids
    upload_id = new_id()
    return {
        "id": upload_id,
        "parent": paging.own_parent(PARENT_ID, upload_id),
        "bucket_id": bucket_id,
        "collection_id": collection_id,
        "record_id": record_id,
        "userid": userid,
        "client": client,
        "length": length,
        "offset": 0,
        "filename": plan.filename,
        "mimetype": plan.mimetype,
        "data": fields.get("data"),
        "permissions": fields.get("permissions"),
        "metadata": metadata or "",
        "sha256": base64.b64encode(ResumableSha256().state()).decode("ascii"),
        "store": state,
        "concat": concat,
    }


def get(storage, upload_id):
    if not storable.is_storable(upload_id):  # From a URL; PostgreSQL fails on a NUL.
        return None
    return paging.find(storage, RESOURCE, PARENT_ID, upload_id)


def save(storage, upload):
    storage.update(
        resource_name=RESOURCE,
        parent_id=paging.parent_of(upload, PARENT_ID),
        object_id=upload["id"],
        obj=upload,
    )


def remove(storage, upload):
    with contextlib.suppress(ObjectNotFoundError):
        paging.delete(storage, RESOURCE, PARENT_ID, upload)


def entries(storage):
    return storage.list_all(resource_name=RESOURCE, parent_id=EVERY)


def active_of(storage, userid, now, client=None):
    """``(count, first_expiry)`` of the unexpired uploads of ``userid``, or of the anonymous
    ``client`` when ``userid`` is None (completed and terminated ones are gone):
    ``first_expiry`` (msec) is when the soonest expires, or None."""
    filters = [
        Filter("userid", userid, COMPARISON.EQ),
        Filter("expires", now, COMPARISON.GT),
    ]
    if userid is None:
        filters.append(Filter("client", client, COMPARISON.EQ))
    count = storage.count_all(resource_name=RESOURCE, parent_id=EVERY, filters=filters)
    if not count:
        return 0, None
    first = storage.list_all(
        resource_name=RESOURCE,
        parent_id=EVERY,
        filters=filters,
        sorting=[Sort("expires", 1)],
        limit=1,
    )
    return count, (first[0]["expires"] if first else None)


def every(storage):
    """Every upload, by pages: for walks over all of them."""
    return paging.every(storage, RESOURCE, EVERY)


def lock(registry, upload_id):
    """Hold the upload until the transaction ends; :class:`Locked` if another one holds it.

    Writers (``PATCH``, ``DELETE``) and the garbage collector take this lock before reading the
    upload's state, so that none of them acts on a state another is changing.
    """
    try:
        locks.hold(registry, ("uploads", upload_id), wait=False)
    except locks.Busy as e:
        raise Locked(upload_id) from e


def _finished_key(upload_id):
    return f"attachment-upload-finished:{upload_id}"


def remember_finished(cache, upload, seconds, location):
    """Keep what ``HEAD`` tells of a finished upload (its final offset) in Kinto's cache, as
    long as the upload would have lived. The cache forgets it by itself: no garbage to collect,
    and no unfinished upload for the quota. A cache that loses it early (``__flush__``,
    eviction) makes the URL a 404 again.

    Kept before the transaction that records the attachment commits (a ``HEAD`` in between
    must find it), and Kinto's cache is not part of that transaction: a process killed then
    leaves it, for an upload that made no attachment. So it names the attachment's
    ``location`` and is ``confirmed`` once the transaction has committed
    (:func:`confirm_finished`); one that is not is only taken while the record's attachment
    is that ``location`` (:func:`finished`)."""
    finished = {name: upload.get(name) for name in FINISHED_FIELDS}
    expires = msec_time() + seconds * 1000
    finished.update(
        offset=upload["length"],
        completed=True,
        expires=expires,
        location=location,
        confirmed=False,
    )
    cache.set(_finished_key(upload["id"]), finished, seconds)


def confirm_finished(cache, upload_id):
    """The transaction that recorded the attachment of the finished upload committed."""
    found = cache.get(_finished_key(upload_id))
    if found is not None:
        seconds = max(1, (found["expires"] - msec_time()) // 1000)
        cache.set(_finished_key(upload_id), {**found, "confirmed": True}, seconds)


def finished(storage, cache, upload_id):
    """What :func:`remember_finished` kept, or None; not confirmed, only while the record's
    attachment is the one the upload made."""
    if not storable.is_storable(upload_id):
        return None
    found = cache.get(_finished_key(upload_id))
    if found is None or found.get("confirmed", True):  # Kept by an earlier release: as is.
        return found
    record = records.stored(
        storage, found["bucket_id"], found["collection_id"], found["record_id"]
    )
    return found if records.location_of(record) == found.get("location") else None


def forget_finished(cache, upload_id):
    cache.delete(_finished_key(upload_id))
