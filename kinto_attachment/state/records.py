"""Writing the ``attachment`` field onto records, through Kinto's own record view.

The record is updated with an internal subrequest (``PATCH`` of an existing record, ``PUT`` with
``If-None-Match: *`` of a new one) in the same transaction as the upload. Kinto therefore does
everything it does for any record write: JSON-schema validation, permission checks, timestamps,
``ResourceChanged`` events for history, quotas or signing plugins. The subrequest is flagged so
that our listener lets this one edit of the ``attachment`` field through.
"""

from kinto.core.storage.exceptions import ObjectNotFoundError
from kinto.core.utils import build_request
from pyramid import httpexceptions


#: Environ flag set on our own subrequests (see :mod:`kinto_attachment.listeners`).
INTERNAL_WRITE = "kinto_attachment.internal_write"


def stored(storage, bucket_id, collection_id, record_id):
    """The record as it is stored now, or None."""
    try:
        return storage.get(
            resource_name="record",
            parent_id=f"/buckets/{bucket_id}/collections/{collection_id}",
            object_id=record_id,
        )
    except ObjectNotFoundError:
        return None


def is_internal_write(request):
    return bool(request.environ.get(INTERNAL_WRITE))


def write(request, uri, data, permissions=None, create=False):
    """Merge ``data`` (and ``permissions``) into the record at ``uri``; raise Kinto's error."""
    body = {"data": data}
    if permissions is not None:
        body["permissions"] = permissions
    headers = {"If-None-Match": "*"} if create else {}
    subrequest = build_request(
        request,
        {
            "method": "PUT" if create else "PATCH",
            "path": f"/{request.registry.route_prefix}{uri}",
            "body": body,
            "headers": headers,
        },
    )
    subrequest.bound_data = request.bound_data
    subrequest.environ[INTERNAL_WRITE] = True
    response = request.invoke_subrequest(subrequest, use_tweens=False)
    if response.status_code >= 400:
        # Cornice returns (rather than raises) validation errors, already in Kinto's format.
        raise httpexceptions.exception_response(
            response.status_code, body=response.body, headers=response.headers
        )
    _as_attachment_events(request, uri)
    return response.json["data"]


def _as_attachment_events(request, uri):
    """Give the subrequest's events the ``uri`` kinto-attachment's have: the record's URI
    followed by ``/attachment``, which listeners (notifications, signing, webhooks) may filter
    on. Kinto stacks events in the request's collector and sends them at commit, so they can
    still be changed here."""
    collector = request.bound_data.get("resource_events")
    for payload, _, _ in getattr(collector, "event_dict", {}).values():
        if payload.get("uri") == uri:
            payload["uri"] = f"{uri}/attachment"


def in_batch(request):
    """Whether ``request`` is (or descends from) a sub-request of ``POST /batch``.

    Kinto sets ``parent`` on every sub-request it builds, and so do our own (the default
    bucket's streaming view): only the batch route says where a request came from.
    """
    parent = getattr(request, "parent", None)
    while parent is not None:
        route = getattr(parent, "matched_route", None)
        if route is not None and route.name == "batch":
            return True
        parent = getattr(parent, "parent", None)
    return False
