"""Resumable uploads of record attachments: the tus 1.0.0 endpoints bound to Kinto.

``{record-url}/attachment/uploads`` creates uploads (``POST``; ``OPTIONS`` tells what the
server supports) and ``{record-url}/attachment/uploads/{id}`` is one upload (``HEAD`` for its
offset, ``PATCH`` to append, ``DELETE`` to terminate; ``POST`` with ``X-HTTP-Method-Override``
for either of the last two: a method the URL does not serve is a 405). Extensions: creation,
creation-with-upload, creation-defer-length, termination, checksum (sha1, sha256, md5),
expiration and concatenation. Every response carries CORS headers for browsers.

The protocol itself (headers, checksums, responses, refusals) is
:mod:`kinto_attachment.protocols.tus`; this module binds it to records, permissions, the uploads'
state (:mod:`~kinto_attachment.state.tus_uploads`) and the blob store. Creating an upload needs
what a multipart ``POST`` needs, and only the same user may go on with it. When the last byte
arrives, the file becomes the record's attachment through the same step as a multipart upload
(:func:`~kinto_attachment.uploads.record.attach`). A finished upload still answers ``HEAD``
(done) until it would have expired, as tusd's do: a client that stored its URL to resume it then
knows it has nothing left to send.

Concatenation (partial and final uploads) is :mod:`.concatenation`.
"""

import logging

from kinto.core.authorization import DYNAMIC
from pyramid.security import NO_PERMISSION_REQUIRED

from .. import errors, routes
from ..protocols import tus, tus_concat
from ..routes import TUS_UPLOAD, TUS_UPLOADS
from ..state import instance, records, tus_uploads
from ..storage import IConcatenatingStore
from ..uploads import hash_behind, intake, lifecycle
from ..uploads.record import refuse_missing_parents, require_storable_ids
from ..web import cors, streams
from . import concatenation, tus_quota, tus_steps
from .factory import AttachmentFactory


#: The capability (:mod:`kinto_attachment`) reads it here, and :func:`extensions`.
TUS_VERSION = tus.VERSION

logger = logging.getLogger(__name__)


class UploadFactory(AttachmentFactory):
    """Every request on uploads needs what creating the attachment needs: ``write`` on the
    record, or ``create`` on the collection while the record does not exist."""

    def __init__(self, request):
        # On every response, Kinto's own refusals (401, 403, 404, 405...) too.
        request.add_response_callback(_speak_tus)
        # Before anything reads the method: the view, and the metrics of the request.
        request.method = _overridden(request)
        super().__init__(request)
        creating = self.current_object is None
        self.permission_object_id = self.collection_uri if creating else self.record_uri
        self.required_permission = "create" if creating else "write"


def _overridden(request):
    """The request's method, or the one ``X-HTTP-Method-Override`` names on a ``POST``: one
    the route serves (its ``methods`` in :mod:`~kinto_attachment.routes`), or 405. Any other
    value would become the method that views, logs and metrics see (each a new ``method``
    series of Kinto's metrics)."""
    override = request.headers.get("X-HTTP-Method-Override")
    method = tus.method(request.method, override)
    served = routes.of(request).methods
    if request.method == "POST" and override and method not in served:
        raise tus.error("method_override", allow=", ".join(served))
    return method


#: Each route's callback exposing its headers to pages.
_cors = {route.name: cors.exposing(*route.exposed_headers) for route in (TUS_UPLOADS, TUS_UPLOAD)}


def _speak_tus(request, response):
    """tus requires ``Tus-Resumable``; a browser's client must read the tus headers."""
    response.headers["Tus-Resumable"] = tus.VERSION
    _cors[request.matched_route.name](request, response)


def extensions(store):
    """The tus extensions offered with ``store``: concatenation only if it can concatenate."""
    return tus.extensions(concatenation=IConcatenatingStore.providedBy(store))


def options(request):
    """Discovery: no authentication needed, nothing revealed but the server's capabilities."""
    return tus.discovery(
        max_size=tus_steps.policy_of(request).max_size_bytes,
        preflight=bool(request.headers.get("Access-Control-Request-Method")),
        concatenation=IConcatenatingStore.providedBy(request.registry.attachment_store),
    )


def create(request):
    headers = request.headers
    tus.require_version(headers.get("Tus-Resumable"))
    concat = concatenation.requested(request)
    client = tus_quota.anonymous_client(request)
    if concat is not None and concat.final:
        return concatenation.create_final(request, concat, client)
    context = request.context
    policy = tus_steps.policy_of(request)
    length = tus.upload_length(
        headers.get("Upload-Length"), headers.get("Upload-Defer-Length"), policy.max_size_bytes
    )
    partial = concat is not None
    metadata = tus.metadata(headers.get("Upload-Metadata"), filename=not partial)
    fields = {} if partial else intake.record_fields(metadata, tus.invalid_metadata)
    require_storable_ids(context)
    refuse_missing_parents(request, context)
    records.check(request, context, fields.get("data"), fields.get("permissions"))
    tus_quota.refuse_too_many(request, client)
    ids = (context.bucket_id, context.collection_id, context.record_id)
    tag = instance.tag(request.registry)
    if partial:
        plan = concatenation.partial_plan(policy, tag, ids, metadata.get("filename", ""))
    else:
        plan = intake.plan_attachment(
            policy, tag, ids, metadata["filename"], metadata.get("filetype")
        )

    store = request.registry.attachment_store
    with errors.store_errors():
        state = store.start_resumable(plan.key, plan.mimetype, plan.random)
    lifecycle.unless_committed(request, lifecycle.let_upload_go, request.registry, store, state)
    upload = tus_uploads.new(
        ids,
        request.prefixed_userid,
        length,
        plan,
        fields,
        headers.get("Upload-Metadata"),
        state,
        client=client,
        concat=concat and concat.header,
    )
    location = routes.url_of(request, TUS_UPLOAD.name, upload_id=upload["id"], **request.matchdict)
    if request.content_type == tus.CHUNK_TYPE:
        upload, _ = tus_steps.append(request, upload, 0)  # creation-with-upload
    else:
        upload = tus_steps.record(request, upload)
    return tus.response(201, Location=location, **_progress(upload))


def _progress(upload):
    return tus.progress(upload["offset"], None if upload.get("completed") else upload["expires"])


def _own_upload(request):
    """The upload of this URL, unfinished or finished (``completed``), if it is this user's, on
    this record, and not expired."""
    upload_id = request.matchdict["upload_id"]
    upload = tus_uploads.get(request.registry.storage, upload_id)
    if upload is None:
        upload = tus_uploads.finished(request.registry.storage, request.registry.cache, upload_id)
    if upload is None or not tus_steps.is_mine(request, upload):
        raise tus.unknown_upload()
    return upload


def _locked_upload(request):
    """This user's upload, held for the request; ``423`` while another request holds it."""
    try:
        tus_uploads.lock(request.registry, request.matchdict["upload_id"])
    except tus_uploads.Locked:
        raise tus.locked() from None
    return _own_upload(request)


def head(request):
    tus.require_version(request.headers.get("Tus-Resumable"))
    upload = _own_upload(request)
    headers = _progress(upload)
    if upload["metadata"]:  # One pair at least, or no header (tus 1.0.0).
        headers["Upload-Metadata"] = upload["metadata"]
    if upload["length"] is None:
        headers["Upload-Defer-Length"] = 1
    else:
        headers["Upload-Length"] = upload["length"]
    if upload.get("concat"):
        headers["Upload-Concat"] = upload["concat"]
    return tus.response(200, **headers)


def patch(request):
    tus.require_version(request.headers.get("Tus-Resumable"))
    tus.require_chunk_type(request.content_type)
    offset = tus.upload_offset(request.headers.get("Upload-Offset"))
    upload = _locked_upload(request)
    if (upload.get("concat") or "").startswith("final"):
        raise tus_concat.final_is_read_only()
    if upload.get("completed") or upload["offset"] == upload["length"]:
        if offset == upload["length"] and streams.declared_length(request) == 0:
            # Nothing more, at its end: the last PATCH sent again after its answer was lost
            # (tuspy resumes from HEAD's offset). Done, as tusd answers it.
            return tus.response(204, **_progress(upload))
        raise tus.completed(upload["length"])
    tus.require_offset(offset, upload["offset"])
    upload, cut = tus_steps.append(request, upload, offset, keep_received=True)
    # Answered (if anyone listens), not raised: what arrived is kept. Unless it was all the
    # upload lacked (a chunked body cut after its last byte): then it is done, and said so.
    if cut is not None and not upload.get("completed"):
        progress = tus.progress(upload["offset"], upload["expires"])
        cut.headers.update({name: str(value) for name, value in progress.items()})
        return cut
    return tus.response(204, **_progress(upload))


def terminate(request):
    """Terminate an unfinished upload (its bytes go), or forget a finished one: its file is
    the record's attachment, which only ``DELETE {record-url}/attachment`` removes."""
    tus.require_version(request.headers.get("Tus-Resumable"))
    upload = _locked_upload(request)
    if upload.get("completed"):
        tus_uploads.forget_finished(request.registry.cache, upload["id"])
    else:
        tus_uploads.remove(request.registry.storage, upload)
        hash_behind.forget(upload["id"])  # Its hash kept by this process, and any job's.
        store = request.registry.attachment_store
        registry = request.registry
        lifecycle.after_commit(request, lifecycle.let_upload_go, registry, store, upload["store"])
    return tus.response(204)


def includeme(config):
    for route in (TUS_UPLOADS, TUS_UPLOAD):
        config.add_route(route.name, route.pattern, factory=UploadFactory)
        config.add_view(
            options,
            route_name=route.name,
            request_method="OPTIONS",
            permission=NO_PERMISSION_REQUIRED,
        )
        config.add_view(
            errors.not_allowed(route.methods, refusal=tus.error),
            route_name=route.name,
            permission=NO_PERMISSION_REQUIRED,
        )
    config.add_view(create, route_name=TUS_UPLOADS.name, request_method="POST", permission=DYNAMIC)
    for view, method in ((head, "HEAD"), (patch, "PATCH"), (terminate, "DELETE")):
        config.add_view(
            view, route_name=TUS_UPLOAD.name, request_method=method, permission=DYNAMIC
        )
