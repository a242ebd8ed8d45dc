"""Kinto events that concern attachments.

- A deleted record, collection or bucket takes its blobs with it (after commit).
- ``POST /__flush__`` takes every blob with it (kinto-attachment leaves them on disk).
- The ``attachment`` field of a record is ours: a ``PUT``/``PATCH``/``POST`` of the record that
  sets or changes it is refused, so that a record can never point at a file it does not own.
  The ``ResourceChanged`` listener sees every write whatever its path (batch, plugins) and
  its refusal rolls the transaction back; since the memory backend cannot roll back, the
  record views' JSON bodies are also checked before the view runs.
"""

from kinto.core.errors import ERRORS, http_error
from kinto.core.events import ACTIONS, ResourceChanged
from kinto.core.storage.exceptions import ObjectNotFoundError
from pyramid.events import ContextFound
from pyramid.httpexceptions import HTTPBadRequest

from . import lifecycle, links, locks, records


FIELD = "attachment"
WRITES = ("PUT", "PATCH", "POST")


def on_resources_deleted(event):
    """Unlink and delete the blobs of deleted records, collections or buckets."""
    storage = event.request.registry.storage
    payload = event.payload
    popped = []
    for change in event.impacted_objects:
        object_id = change["old"]["id"]
        if payload["resource_name"] == "record":
            ids = (payload["bucket_id"], payload["collection_id"], object_id)
        elif payload["resource_name"] == "collection":
            ids = (payload["bucket_id"], object_id)
        else:
            ids = (object_id,)
        # Already held when the delete came through Kinto's views (see ``_lock_write``).
        locks.hold(event.request.registry, locks.record_path(*ids))
        popped += links.pop(storage, *ids)
    lifecycle.discard(event.request, popped)


def _refuse_edit(before, after):
    if before != after:
        raise http_error(
            HTTPBadRequest(),
            errno=ERRORS.INVALID_POSTED_DATA,
            message=(
                "Attachment metadata cannot be modified: upload with POST "
                "{record}/attachment, remove with DELETE {record}/attachment."
            ),
        )


def on_records_written(event):
    """Refuse edits of ``attachment`` that do not come from our own views."""
    if records.is_internal_write(event.request):
        return
    for change in event.impacted_objects:
        _refuse_edit((change.get("old") or {}).get(FIELD), change["new"].get(FIELD))


def _stored_record(request):
    match = request.matchdict
    try:
        return request.registry.storage.get(
            resource_name="record",
            parent_id=f"/buckets/{match['bucket_id']}/collections/{match['collection_id']}",
            object_id=match["id"],
        )
    except ObjectNotFoundError:
        return None


def _stored_attachment(request):
    return (_stored_record(request) or {}).get(FIELD)


def _check_record_body(request):
    """Refuse, before the view writes, a record body that would change ``attachment``."""
    try:
        body = request.json_body
    except ValueError:
        return  # Kinto answers malformed JSON itself.
    if request.content_type == "application/json-patch+json":
        paths = [op.get("path", "") for op in body if isinstance(op, dict)]
        if any(p == "/data/" + FIELD or p.startswith(f"/data/{FIELD}/") for p in paths):
            _refuse_edit(None, "patched")
        return
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return
    if request.method == "POST":
        _refuse_edit(None, data.get(FIELD))
    elif FIELD in data or request.method == "PUT":
        _refuse_edit(_stored_attachment(request), data.get(FIELD))


def _write_lock(request):
    """The lock path a Kinto write takes before its view reads anything, or None."""
    route, method, match = request.matched_route.name, request.method, request.matchdict
    if route == "flush":
        return locks.ROOT if method == "POST" else None
    if route == "record-object" and method in ("PUT", "PATCH", "DELETE"):
        return locks.record_path(match["bucket_id"], match["collection_id"], match["id"])
    if method != "DELETE":
        return None
    return {
        "bucket-plural": lambda: ("buckets",),
        "bucket-object": lambda: locks.record_path(match["id"]),
        "collection-plural": lambda: locks.record_path(match["bucket_id"]),
        "collection-object": lambda: locks.record_path(match["bucket_id"], match["id"]),
        "record-plural": lambda: locks.record_path(match["bucket_id"], match["collection_id"]),
    }.get(route, lambda: None)()


def _lock_write(request):
    """Lock what the write will change, as our own views do, so that it cannot interleave
    with an upload (or a delete) of the same record, collection or bucket.

    Kinto's route factory read the record before the lock: the view would act on that copy
    (and a ``PATCH`` write back an attachment replaced meanwhile), so it is read again.
    """
    path = _write_lock(request)
    if path is None:
        return
    locks.hold(request.registry, path)
    if request.matched_route.name == "record-object":
        request.context.current_object = _stored_record(request)


def on_context_found(event):
    request = event.request
    route = request.matched_route
    if route is None or records.is_internal_write(request):
        return
    _lock_write(request)
    if route.name == "flush" and request.method == "POST":
        on_flush(request)
    elif route.name in ("record-object", "record-plural") and request.method in WRITES:
        _check_record_body(request)


def on_flush(request):
    """Before ``POST /__flush__`` wipes the storage, collect every link to delete its blob."""
    lifecycle.discard(request, links.pop(request.registry.storage))


def includeme(config):
    config.add_subscriber(
        on_resources_deleted,
        ResourceChanged,
        for_resources=("record", "collection", "bucket"),
        for_actions=(ACTIONS.DELETE,),
    )
    config.add_subscriber(
        on_records_written,
        ResourceChanged,
        for_resources=("record",),
        for_actions=(ACTIONS.CREATE, ACTIONS.UPDATE),
    )
    config.add_subscriber(on_context_found, ContextFound)
