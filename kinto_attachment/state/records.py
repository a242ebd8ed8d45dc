"""Writing the ``attachment`` field onto records, through Kinto's own record resource.

The record is written (``PATCH`` of an existing record, ``PUT`` with ``If-None-Match: *`` of a
new one) in the same transaction as the upload, by Kinto's ``Record`` resource and the
validators of its service: Kinto therefore does everything it does for any record write,
JSON-schema validation, timestamps, permissions of the new record, ``ResourceChanged`` events
for history, quotas or signing plugins. What it is spared is what the upload's request has
done already: routing, authentication, and the route factory's permission check and reads
(the upload's own factory is the same check, :class:`~kinto_attachment.views.factory.
AttachmentFactory`, and the record has been read again under its lock). A subrequest through
Pyramid's router would do all of these a second time, which cost as much as the rest of a
small upload on PostgreSQL. The write is flagged so that our listener lets this one edit of
the ``attachment`` field through.
"""

import re

from kinto.core.cornice.errors import Errors
from kinto.core.storage.exceptions import ObjectNotFoundError
from kinto.core.utils import build_request, current_service
from pyramid import httpexceptions
from pyramid.interfaces import IRoutesMapper

from .. import errors


#: Environ flag set on our own writes (see :mod:`kinto_attachment.listeners`).
INTERNAL_WRITE = "kinto_attachment.internal_write"

#: Kinto's route of a record.
RECORD_ROUTE = "record-object"

#: A precondition a record write takes: a version (a quoted timestamp), or ``*``.
_PRECONDITION = re.compile(r'\*|"[0-9]+"')


def require_readable_preconditions(request):
    """400 for an ``If-Match`` or ``If-None-Match`` that is no version nor ``*``, before the
    body of a write comes: Kinto's own check of these headers lets ``*, "1"`` or ``*x``
    through, then fails on them (a 500, once the whole file was received)."""
    for name in ("If-Match", "If-None-Match"):
        value = request.headers.get(name)
        if value is not None and _PRECONDITION.fullmatch(value.strip()) is None:
            raise errors.refuse(
                "invalid_parameter",
                location="header",
                name=name,
                description='a version ("1700000000000", quoted) or *',
            )


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


def attachment_of(record):
    """The record's ``attachment`` if it is an object, else None: kinto-attachment let any
    client write any value there (a string, a list), which must neither stop a migration nor
    make a 500."""
    attachment = (record or {}).get("attachment")
    return attachment if isinstance(attachment, dict) else None


def location_of(record):
    """The ``location`` of the record's attachment if it is a string, else None."""
    location = (attachment_of(record) or {}).get("location")
    return location if isinstance(location, str) else None


def is_internal_write(request):
    return bool(request.environ.get(INTERNAL_WRITE))


def write(request, context, data, permissions=None, create=False):
    """Merge ``data`` (and ``permissions``) into the record of ``context`` (the upload's
    :class:`~kinto_attachment.views.factory.AttachmentFactory`, its ``current_object`` read
    under the record's lock); raise Kinto's error."""
    write_request = _record_request(request, context, _body(data, permissions), create)
    view, args = _record_view(write_request)
    _validate(write_request, args)
    resource = args["klass"](request=write_request, context=context)
    written = view.make_bound_view(resource)()
    _as_attachment_events(request, context.record_uri)
    return written["data"]


def check(request, context, data=None, permissions=None):
    """Refuse now, as :func:`write` would, ``data`` and ``permissions`` that no write of the
    record can take: refused by the body's schema (permissions that are no lists of
    principals...), or naming another record's id.

    A resumable upload carries them from its creation to its last byte and cannot change
    them: refused only then, it could never finish, and would hold its user's quota until it
    expired. What may change meanwhile (the collection's JSON schema, who may write the
    record) is the write's to check, when the last byte comes."""
    write_request = _record_request(request, context, _body(data or {}, permissions), False)
    foreign_id = (data or {}).get("id", context.record_id) != context.record_id
    # Kinto's resource refuses it after its validators, in the same terms.
    mismatch = [("body", "id", "Object id does not match existing object")] if foreign_id else []
    _validate(write_request, _record_view(write_request)[1], also=mismatch)


def _body(data, permissions):
    body = {"data": data}
    if permissions is not None:
        body["permissions"] = permissions
    return body


def _validate(write_request, args, also=()):
    """What cornice does around a resource's view: run its validators (the body's schema),
    answer their errors (and those of ``also``: ``(location, name, description)``) in Kinto's
    format; before the resource reads anything."""
    write_request.validated, write_request.errors, write_request.info = {}, Errors(), {}
    for validator in args["validators"]:
        validator(write_request, **args)
    for location, name, description in also:
        write_request.errors.add(location, name, description)
    if write_request.errors:
        raise args["error_handler"](write_request)  # Kinto's, an HTTPException.


def _record_request(request, context, body, create):
    """A request for Kinto's record resource (``PUT`` with ``If-None-Match: *`` to create,
    ``PATCH`` otherwise), as its route would have matched it; it shares the upload's
    ``bound_data`` (events, the collection already read)."""
    # The whole record back, whatever the client asked of Kinto's answers (``Response-Behavior:
    # light`` or ``diff`` leave out what the upload answers with: its version, its attachment).
    headers = {"Response-Behavior": "full"}
    if create:
        headers["If-None-Match"] = "*"
    write_request = build_request(
        request,
        {
            "method": "PUT" if create else "PATCH",
            "path": f"/{request.registry.route_prefix}{context.record_uri}",
            "body": body,
            "headers": headers,
        },
    )
    write_request.bound_data = request.bound_data
    write_request.environ[INTERNAL_WRITE] = True
    write_request.matched_route = request.registry.getUtility(IRoutesMapper).get_route(
        RECORD_ROUTE
    )
    write_request.matchdict = {
        "bucket_id": context.bucket_id,
        "collection_id": context.collection_id,
        "id": context.record_id,
    }
    # Authenticated as the upload was (same headers), before Kinto reads who writes: the
    # record's creator gets ``write`` on it, events and history name the user.
    write_request.authenticated_userid  # noqa: B018 (a property that authenticates)
    return write_request


def _record_view(write_request):
    """The view of Kinto's record service for the request's method and a JSON body, and its
    arguments; 405 when Kinto's settings disabled it (``object_record_put_enabled = false``)."""
    for method, view, args in current_service(write_request).definitions:
        types = args.get("content_type", ())
        types = [types] if isinstance(types, str) else types
        if method == write_request.method and "application/json" in types:
            return view, args
    raise httpexceptions.HTTPMethodNotAllowed()


def _as_attachment_events(request, uri):
    """Give the record write's events the ``uri`` kinto-attachment's have: the record's URI
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
