"""Resumable uploads of record attachments: the tus 1.0.0 endpoints bound to Kinto.

``{record-url}/attachment/uploads`` creates uploads (``POST``; ``OPTIONS`` tells what the
server supports) and ``{record-url}/attachment/uploads/{id}`` is one upload (``HEAD`` for its
offset, ``PATCH`` to append, ``DELETE`` to terminate). Extensions: creation,
creation-with-upload, termination, checksum (sha1, sha256, md5) and expiration.

The protocol itself (headers, checksums, responses, refusals) is :mod:`kinto_attachment.tus`;
this module binds it to records, permissions, the uploads' state
(:mod:`~kinto_attachment.uploads`) and the blob store. Creating an upload needs what a
multipart ``POST`` needs, and only the same user may go on with it. When the last byte
arrives, the file becomes the record's attachment through the same step as a multipart
upload (:func:`~kinto_attachment.views.attachment.attach`).
"""

import base64
import contextlib
import logging

from kinto.core.authorization import DYNAMIC
from kinto.core.utils import msec_time
from pyramid.security import NO_PERMISSION_REQUIRED
from pyramid.settings import aslist

from .. import intake, lifecycle, tus, uploads
from ..hashstate import ResumableSha256
from .attachment import RECORD_PATH, AttachmentFactory, attach, require_record_parents


#: The capability (:mod:`kinto_attachment`) reads these here.
TUS_VERSION, EXTENSIONS = tus.VERSION, tus.EXTENSIONS
UPLOADS_ROUTE = "attachment-uploads"
UPLOAD_ROUTE = "attachment-upload"

logger = logging.getLogger(__name__)


class UploadFactory(AttachmentFactory):
    """Every request on uploads needs what creating the attachment needs: ``write`` on the
    record, or ``create`` on the collection while the record does not exist."""

    def __init__(self, request):
        super().__init__(request)
        creating = self.current_object is None
        self.permission_object_id = self.collection_uri if creating else self.record_uri
        self.required_permission = "create" if creating else "write"


def _allowed_origin(request):
    """The request's ``Origin`` if Kinto's ``cors_origins`` setting allows it, else None.

    Cornice applies CORS to Kinto's services only (``cornice.cors``); these are plain Pyramid
    routes. Kinto's fallback for those, ``kinto.core.utils.reapply_cors``, answers ``*``
    rather than the origin when every origin is allowed and exposes Kinto's default headers
    rather than tus's, which a browser's tus client must read. So this reads the same
    setting the same way (``aslist``) and echoes the origin, with tus's exposed headers.
    (Refusals go through Kinto's error views, which call ``reapply_cors`` themselves.)
    """
    origin = request.headers.get("Origin")
    if not origin:
        return None
    origins = aslist(request.registry.settings.get("cors_origins", "*"))
    return origin if "*" in origins or origin in origins else None


def _respond(request, status, **headers):
    return tus.response(status, _allowed_origin(request), **headers)


def _policy(request):
    match = request.matchdict
    return request.registry.attachment_settings.policy(match["bucket_id"], match["collection_id"])


def options(request):
    """Discovery: no authentication needed, nothing revealed but the server's capabilities."""
    return tus.discovery(
        max_size=_policy(request).max_size_bytes,
        preflight=bool(request.headers.get("Access-Control-Request-Method")),
        origin=_allowed_origin(request),
    )


def create(request):
    headers = request.headers
    tus.require_version(headers.get("Tus-Resumable"))
    context = request.context
    policy = _policy(request)
    length = tus.upload_length(
        headers.get("Upload-Length"), headers.get("Upload-Defer-Length"), policy.max_size_bytes
    )
    metadata = tus.metadata(headers.get("Upload-Metadata"))
    require_record_parents(request, context)
    _refuse_too_many(request)
    filename = metadata["filename"]
    intake.check_name(policy, filename)
    mimetype = intake.resolve_mimetype(policy, filename, metadata.get("filetype"))
    key = intake.blob_key(
        policy, context.bucket_id, context.collection_id, context.record_id, filename
    )

    store = request.registry.attachment_store
    with intake.store_errors():
        state = store.start_resumable(key, mimetype)
    lifecycle.on_failure(request, store.discard, state)
    upload = {
        "id": uploads.new_id(),
        "bucket_id": context.bucket_id,
        "collection_id": context.collection_id,
        "record_id": context.record_id,
        "userid": request.prefixed_userid,
        "length": length,
        "offset": 0,
        "filename": filename,
        "mimetype": mimetype,
        "data": metadata.get("data"),
        "permissions": metadata.get("permissions"),
        "metadata": headers.get("Upload-Metadata", ""),
        "sha256": base64.b64encode(ResumableSha256().state()).decode("ascii"),
        "store": state,
    }
    location = request.route_url(UPLOAD_ROUTE, upload_id=upload["id"], **request.matchdict)
    if request.content_type == tus.CHUNK_TYPE:
        upload = _append(request, upload, 0)  # creation-with-upload
    else:
        upload = _record(request, upload)
    return _respond(request, 201, Location=location, **_progress(upload))


def _refuse_too_many(request):
    """429 when the user already holds ``resumable.max_uploads_per_user`` unfinished uploads.

    A quota, not a rate: a slot frees when one of them completes, is terminated (``DELETE``)
    or expires. ``Retry-After`` says when the soonest expires. Concurrent creations by one
    user are not serialised (a creation may stream its first chunk): each may pass the
    count, so the quota can be overshot by as many requests as the user sends at once.
    """
    limit = request.registry.attachment_settings.resumable_max_uploads_per_user
    if not limit:
        return
    now = msec_time()
    count, first_expiry = uploads.active_of(request.registry.storage, request.prefixed_userid, now)
    if count < limit:
        return
    retry_after = max(1, -(-((first_expiry or now) - now) // 1000))
    raise tus.error("too_many_uploads", count=count, limit=limit, retry_after=retry_after)


def _record(request, upload):
    """Record the upload with a new expiration, or complete it if it has all its bytes."""
    if upload["offset"] == upload["length"]:
        _complete(request, upload)
        return {**upload, "completed": True}
    seconds = request.registry.attachment_settings.resumable_expires_seconds
    upload = {**upload, "expires": msec_time() + seconds * 1000}
    uploads.save(request.registry.storage, upload)
    return upload


def _progress(upload):
    return tus.progress(upload["offset"], None if upload.get("completed") else upload["expires"])


@contextlib.contextmanager
def _store_errors():
    """A failing store is a 503 (retry later); an upload whose stored bytes are gone (the
    store's ``FileNotFoundError``) a 410: no retry can bring them back, start a new upload."""
    with intake.store_errors():
        try:
            yield
        except FileNotFoundError as e:
            logger.warning("Resumable upload lost: %s", e)
            raise tus.gone() from e


def _complete(request, upload):
    """The last byte arrived: the file becomes the record's attachment, the upload goes.

    If the transaction fails after ``finish``, the upload stays as it was recorded and the
    client may send its last chunk again. The blob is deleted with the failure only if the
    store lists it in ``created`` (local disk: a new link, made again by the retry). An S3
    object stays, since the retry cannot make it again: the retry's ``finish`` verifies it and
    takes it; while the upload lives its state names the key, which garbage collection leaves
    alone, and ``discard`` (termination, expiry) deletes the object with the upload.
    """
    store = request.registry.attachment_store
    with _store_errors():
        progress = store.finish(upload["store"])
    blob = intake.Blob(
        key=progress.key,
        filename=upload["filename"],
        hash=ResumableSha256(base64.b64decode(upload["sha256"])).hexdigest(),
        size=upload["length"],
        mimetype=upload["mimetype"],
    )
    created = progress.key in progress.created
    attach(
        request,
        request.context,
        blob,
        upload["data"],
        upload["permissions"],
        discard_on_failure=created,
    )
    others = [key for key in progress.created if key != progress.key]
    lifecycle.delete_unless_committed(request, store, others)
    lifecycle.delete_after_commit(request, store, progress.obsolete)
    uploads.remove(request.registry.storage, upload["id"])


def _own_upload(request):
    """The upload of this URL, if it is this user's, on this record, and not expired."""
    context = request.context
    upload = uploads.get(request.registry.storage, request.matchdict["upload_id"])
    mine = upload is not None and (
        upload["userid"] == request.prefixed_userid
        and (upload["bucket_id"], upload["collection_id"], upload["record_id"])
        == (context.bucket_id, context.collection_id, context.record_id)
        and upload["expires"] > msec_time()
    )
    if not mine:
        raise tus.unknown_upload()
    return upload


def _locked_upload(request):
    """This user's upload, held for the request; ``423`` while another request holds it."""
    try:
        uploads.lock(request.registry, request.matchdict["upload_id"])
    except uploads.Locked:
        raise tus.locked() from None
    return _own_upload(request)


def head(request):
    tus.require_version(request.headers.get("Tus-Resumable"))
    upload = _own_upload(request)
    return _respond(
        request,
        200,
        Upload_Offset=upload["offset"],
        Upload_Length=upload["length"],
        Upload_Metadata=upload["metadata"],
        Upload_Expires=tus.http_date(upload["expires"]),
    )


def patch(request):
    tus.require_version(request.headers.get("Tus-Resumable"))
    tus.require_chunk_type(request.content_type)
    offset = tus.upload_offset(request.headers.get("Upload-Offset"))
    upload = _locked_upload(request)
    tus.require_offset(offset, upload["offset"])
    upload = _append(request, upload, offset)
    return _respond(request, 204, **_progress(upload))


def terminate(request):
    tus.require_version(request.headers.get("Tus-Resumable"))
    upload = _locked_upload(request)
    uploads.remove(request.registry.storage, upload["id"])
    store = request.registry.attachment_store
    lifecycle.after_commit(request, store.discard, upload["store"])
    return _respond(request, 204)


def _append(request, upload, offset):
    """Append the request body at ``offset``; record the new state (or complete)."""
    length = tus.chunk_length(request.content_length, offset, upload["length"])
    checksum, expected = tus.checksum(request.headers.get("Upload-Checksum"))
    sha256 = ResumableSha256(base64.b64decode(upload["sha256"]))
    received = []

    def body():
        for chunk in intake.read_chunks(request.body_file_raw, length):
            sha256.update(chunk)
            if checksum is not None:
                checksum.update(chunk)
            received.append(len(chunk))
            yield chunk

    store = request.registry.attachment_store
    with _store_errors():
        progress = store.append(upload["store"], offset, body())
    if checksum is not None and checksum.digest() != expected:
        store.delete_many(progress.created)
        raise tus.checksum_mismatch()
    if sum(received) != length:
        store.delete_many(progress.created)
        raise tus.short_body()
    lifecycle.delete_unless_committed(request, store, progress.created)
    lifecycle.delete_after_commit(request, store, progress.obsolete)
    upload = {
        **upload,
        "offset": offset + length,
        "store": progress.state,
        "sha256": base64.b64encode(sha256.state()).decode("ascii"),
    }
    return _record(request, upload)


def includeme(config):
    config.add_route(UPLOADS_ROUTE, RECORD_PATH + "/attachment/uploads", factory=UploadFactory)
    config.add_route(
        UPLOAD_ROUTE, RECORD_PATH + "/attachment/uploads/{upload_id}", factory=UploadFactory
    )
    for route in (UPLOADS_ROUTE, UPLOAD_ROUTE):
        config.add_view(
            options, route_name=route, request_method="OPTIONS", permission=NO_PERMISSION_REQUIRED
        )
    config.add_view(create, route_name=UPLOADS_ROUTE, request_method="POST", permission=DYNAMIC)
    for view, method in ((head, "HEAD"), (patch, "PATCH"), (terminate, "DELETE")):
        config.add_view(view, route_name=UPLOAD_ROUTE, request_method=method, permission=DYNAMIC)
