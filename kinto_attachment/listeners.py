"""Kinto events that concern attachments.

- A deleted record, collection or bucket takes its blobs with it (after commit).
- ``POST /__flush__`` takes every blob with it (kinto-attachment leaves them on disk).
- The ``attachment`` field of a record is ours: a ``PUT``/``PATCH``/``POST`` of the record that
  sets or changes it is refused, so that a record can never point at a file it does not own.
"""

from kinto.core.errors import ERRORS, http_error
from kinto.core.events import ACTIONS, ResourceChanged
from pyramid.events import ContextFound
from pyramid.httpexceptions import HTTPBadRequest

from . import lifecycle, links, records


FIELD = "attachment"


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
        popped += links.pop(storage, *ids)
    lifecycle.discard(event.request, popped)


def on_records_written(event):
    """Refuse edits of ``attachment`` that do not come from our own views."""
    if records.is_internal_write(event.request):
        return
    for change in event.impacted_objects:
        before = (change.get("old") or {}).get(FIELD)
        after = change["new"].get(FIELD)
        if before != after:
            raise http_error(
                HTTPBadRequest(),
                errno=ERRORS.INVALID_POSTED_DATA,
                message=(
                    "Attachment metadata cannot be modified: upload with POST "
                    "{record}/attachment, remove with DELETE {record}/attachment."
                ),
            )


def on_flush(event):
    """Before ``POST /__flush__`` wipes the storage, collect every link to delete its blob."""
    request = event.request
    route = request.matched_route
    if route is None or route.name != "flush" or request.method != "POST":
        return
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
    config.add_subscriber(on_flush, ContextFound)
