"""The last step of every upload to a record (multipart ``POST`` and tus alike): the record
locked and read again, then written with the committed blob as its attachment, and linked to it.

What can be refused before reading a byte of the body is refused here too
(:func:`require_storable_ids`, :func:`refuse_missing_parents`): the views call these first, and
the record step reads the collection again under the lock, since it may have gone meanwhile.
"""

import time

from kinto.core.authorization import DYNAMIC
from kinto.core.errors import raise_invalid
from kinto.views import object_exists_or_404, raise_404_if_invalid_id
from pyramid import httpexceptions

from .. import errors, locks
from ..events import recording
from ..state import links, records, timestamps
from ..web import principals
from . import lifecycle


#: The record field holding the attachment's metadata.
FILE_FIELD = "attachment"


def require_record_parents(request, context):
    """404 for an invalid id or a missing collection, before reading any of the body; the
    collection otherwise."""
    raise_404_if_invalid_id(request, "record", context.record_id)
    return _collection(request, context)


def _collection(request, context):
    return object_exists_or_404(
        request,
        resource_name="collection",
        parent_id=f"/buckets/{context.bucket_id}",
        object_id=context.collection_id,
    )


def refuse_missing_parents(request, context):
    """404 for a missing collection, then 400 for a record id Kinto's id generator refuses,
    as Kinto's ``PUT`` of the record answers (an upload writes it; a 404 told a client to
    make the collection and try again, for ever), before reading any of the body.

    A record that the route factory found says that its collection exists: Kinto deletes a
    collection's records in the transaction that deletes it. Only a new record's collection is
    read (an upload replacing a file sends one statement fewer); either is read again under
    the record's lock."""
    if context.current_object is None:
        _collection(request, context)
    id_generators = request.registry.id_generators
    if not id_generators.get("record", id_generators[""]).match(context.record_id):
        raise_invalid(request, location="path", description="Invalid object id")


def require_storable_ids(context):
    """400 when the record's ids are too long for its link to be stored
    (:data:`~kinto_attachment.state.links.MAX_RECORD_URI`), before reading any of the body."""
    length = len(context.record_uri.encode("utf-8"))
    if length > links.MAX_RECORD_URI:
        raise errors.refuse("ids_too_long", length=length, limit=links.MAX_RECORD_URI)


def attach(request, context, blob, data=None, permissions=None, discard_on_failure=True):
    """Make a committed blob the record's attachment (the last step of every upload); return
    the record as written.

    In the request's transaction, with the record locked: the record is written (created if
    needed), and the link of the blob replaces those of the previous one, whose blob is
    deleted after commit. If the transaction does not commit, the new blob is deleted instead
    (unless ``discard_on_failure`` is false: a resumable upload keeps it to finish again).
    """
    store = request.registry.attachment_store
    if discard_on_failure:
        lifecycle.delete_unless_committed(request, store, [blob.key])
    existing = lock_record(request, context)
    storage = request.registry.storage
    ids = (context.bucket_id, context.collection_id, context.record_id)
    previous = records.attachment_of(existing) or {}
    # A record that does not exist has no links: its deletion, or its collection's or its
    # bucket's, removed them in its transaction (:mod:`kinto_attachment.listeners`).
    replaced = []
    if existing is not None:
        location = records.location_of(existing)
        replaced = links.of_record(storage, *ids, location=location, url=store.url)
    metadata = blob.attachment(store.url(blob.key))
    written = records.write(
        request,
        context,
        {**(data or {}), FILE_FIELD: metadata},
        permissions=permissions,
        create=existing is None,
    )
    links.forget(storage, replaced)
    # Every version of the record from the one after ``existing`` on has this blob.
    since = written["last_modified"] if existing is None else existing["last_modified"] + 1
    # The version before had another file, or none after one (its attachment deleted, which
    # leaves the field, null): a date of its second may be of another content. A record that
    # never had a file (made by a PUT) had no other content to serve.
    had_file = previous or (existing is not None and FILE_FIELD in existing)
    before = existing["last_modified"] if had_file else None
    links.add(storage, *ids, blob.key, since=since, previous=before, digest=metadata["hash"])
    lifecycle.discard(request, replaced)
    recording.stored(
        request.registry,
        record_ids(context),
        metadata,
        blob.key,
        replaced_hash=previous.get("hash"),
        request=request,
    )
    return written


def record_ids(context):
    """The ids of the record, as events tell them."""
    return {
        "bucket_id": context.bucket_id,
        "collection_id": context.collection_id,
        "record_id": context.record_id,
    }


#: An upload whose permission was checked longer ago than this, in seconds, when it comes
#: to write the record, is checked again (:func:`lock_record`).
RECHECK_SECONDS = 0.1


def lock_record(request, context):
    """Lock the record until the transaction ends, then read it again: the record as it is
    now (or None), or the answer for a request that raced with another one.

    Permissions were checked on what the record was before the lock: a record deleted since
    is a 404, a record created since (the check was ``create`` on the collection, not
    ``write`` on it) a 412, as for a ``PUT`` with ``If-None-Match: *``. A record changed
    since (deleted and made again without the uploader, say), or a check older than
    :data:`RECHECK_SECONDS` (the body took its time: minutes, for a large file, in which its
    ``write`` may have been taken away), is checked again, on the record as it is: streaming
    must not make Kinto's check-then-write a window as long as an upload, through which the
    uploader would replace the file, and write its own permissions onto the record.
    """
    if context.current_object is None:
        # A new record: its collection's records may have no timestamp row yet, which the
        # write reads; made first (:mod:`~..state.timestamps`). A stored record's write made it.
        timestamps.ensure(request.registry, [("record", context.collection_uri)])
    locks.hold(
        request.registry,
        locks.record_path(context.bucket_id, context.collection_id, context.record_id),
    )
    collection = require_record_parents(request, context)
    # Where Kinto's record view looks for it first (as in a batch): the record's write, a
    # subrequest sharing this request's ``bound_data``, does not read it a second time.
    request.bound_data.setdefault("collections", {})[context.collection_uri] = collection
    ids = (context.bucket_id, context.collection_id, context.record_id)
    record = records.stored(request.registry.storage, *ids)
    if record is None and context.current_object is not None:
        raise errors.refuse("missing", resource_name="record", id=context.record_id)
    if record is not None and context.current_object is None:
        raise errors.refuse("modified_meanwhile")
    changed = record is not None and record["last_modified"] != context.current_object.get(
        "last_modified"
    )
    context.current_object = record
    if changed or time.monotonic() - context.checked_at > RECHECK_SECONDS:
        _require_permission(request, context, record)
    return record


def _require_permission(request, context, record):
    """403 unless the request may still write ``record`` (create it, if None), as the route
    factory decided before the body came: with the principals the user has now (a group that
    gave the permission may have lost the user meanwhile)."""
    principals.forget(request)
    context.permission_object_id = context.record_uri if record else context.collection_uri
    context.required_permission = "write" if record else "create"
    if not request.has_permission(DYNAMIC, context):
        raise httpexceptions.HTTPForbidden()
