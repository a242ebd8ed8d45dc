"""Resumable uploads of record attachments: the tus 1.0.0 protocol.

``{record-url}/attachment/uploads`` creates uploads (``POST``; ``OPTIONS`` tells what the
server supports) and ``{record-url}/attachment/uploads/{id}`` is one upload (``HEAD`` for its
offset, ``PATCH`` to append, ``DELETE`` to terminate). Extensions: creation,
creation-with-upload, termination, checksum (sha1, sha256, md5) and expiration.

Creating an upload needs what a multipart ``POST`` needs, and only the same user may go on
with it. When the last byte arrives, the file becomes the record's attachment through the
same step as a multipart upload (:func:`~kinto_attachment.views.attachment.attach`).
"""

import base64
import binascii
import contextlib
import datetime
import hashlib
import json
import logging

from kinto.core.authorization import DYNAMIC
from kinto.core.errors import ERRORS, http_error
from kinto.core.utils import msec_time
from pyramid import httpexceptions
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from .. import intake, lifecycle, uploads
from ..hashstate import ResumableSha256
from .attachment import RECORD_PATH, AttachmentFactory, attach, require_record_parents


TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}
CHUNK_TYPE = "application/offset+octet-stream"
EXPOSED = (
    "Location, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, Tus-Resumable, "
    "Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm"
)
ALLOWED = (
    "Authorization, Content-Type, Tus-Resumable, Upload-Length, Upload-Metadata, "
    "Upload-Offset, Upload-Checksum, Upload-Defer-Length, X-HTTP-Method-Override, X-Requested-With"
)
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


class HTTPTooManyUploads(httpexceptions.HTTPClientError):
    code = 429
    title = "Too Many Requests"
    explanation = "Too many unfinished uploads."


class HTTPChecksumMismatch(httpexceptions.HTTPClientError):
    code = 460
    title = "Checksum Mismatch"
    explanation = "The chunk does not match its Upload-Checksum."


def _tus_error(exception_class, message, errno=ERRORS.INVALID_PARAMETERS, headers=None):
    error = http_error(exception_class(), errno=errno, message=message)
    error.headers["Tus-Resumable"] = TUS_VERSION
    error.headers.update(headers or {})
    return error


def _tus_response(request, status, **headers):
    response = Response(status=status)
    response.headers["Tus-Resumable"] = TUS_VERSION
    response.headers["Cache-Control"] = "no-store"
    for name, value in headers.items():
        response.headers[name.replace("_", "-")] = str(value)
    origin = request.headers.get("Origin")
    if origin and _allowed_origin(request, origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED
    del response.content_type
    return response


def _allowed_origin(request, origin):
    origins = str(request.registry.settings.get("cors_origins", "*")).split()
    return "*" in origins or origin in origins


def _require_tus(request):
    if request.headers.get("Tus-Resumable") != TUS_VERSION:
        raise _tus_error(
            httpexceptions.HTTPPreconditionFailed,
            f"Tus-Resumable: {TUS_VERSION} is required.",
            headers={"Tus-Version": TUS_VERSION},
        )


def _policy(request):
    match = request.matchdict
    return request.registry.attachment_settings.policy(match["bucket_id"], match["collection_id"])


def _http_date(msec):
    moment = datetime.datetime.fromtimestamp(msec / 1000, datetime.UTC)
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")


def options(request):
    """Discovery: no authentication needed, nothing revealed but the server's capabilities."""
    response = _tus_response(
        request,
        204,
        Tus_Version=TUS_VERSION,
        Tus_Extension=EXTENSIONS,
        Tus_Checksum_Algorithm=",".join(CHECKSUMS),
    )
    max_size = _policy(request).max_size_bytes
    if max_size:
        response.headers["Tus-Max-Size"] = str(max_size)
    if request.headers.get("Access-Control-Request-Method"):
        response.headers["Access-Control-Allow-Methods"] = "POST, HEAD, PATCH, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = ALLOWED
        response.headers["Access-Control-Max-Age"] = "86400"
    return response


#: Digits of the largest offset or length accepted (10**18 bytes: an exabyte). Python refuses
#: to convert more than 4300 digits, and no store would take that many bytes anyway.
MAX_DIGITS = 18


def _integer_header(request, name, too_large=None):
    """The non-negative integer of header ``name``; 400 if it is none, ``too_large`` (or a
    400) if it has more than :data:`MAX_DIGITS` digits."""
    value = request.headers.get(name)
    if value is None or not value.isascii() or not value.isdigit():
        raise _tus_error(httpexceptions.HTTPBadRequest, f"{name} must be a non-negative integer.")
    if len(value.lstrip("0")) > MAX_DIGITS:
        if too_large is not None:
            raise too_large
        raise _tus_error(httpexceptions.HTTPBadRequest, f"{name} is too large.")
    return int(value)


def _too_large(max_size):
    return _tus_error(
        httpexceptions.HTTPRequestEntityTooLarge,
        f"File size exceeds the limit ({max_size} bytes).",
        errno=ERRORS.REQUEST_TOO_LARGE,
    )


def _metadata(header):
    """``Upload-Metadata``: ``key base64,key base64``; filename required, data/permissions
    JSON objects as in the multipart form."""
    values = {}
    for pair in filter(None, (p.strip() for p in (header or "").split(","))):
        key, _, encoded = pair.partition(" ")
        try:
            values[key] = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as e:
            raise _tus_error(httpexceptions.HTTPBadRequest, f"Upload-Metadata: bad {key}") from e
    if not values.get("filename"):
        raise _tus_error(httpexceptions.HTTPBadRequest, "Upload-Metadata: filename is required.")
    for name in ("data", "permissions"):
        if name in values:
            try:
                values[name] = json.loads(values[name])
            except (ValueError, RecursionError) as e:
                raise _tus_error(
                    httpexceptions.HTTPBadRequest, f"Upload-Metadata: {name} is not JSON."
                ) from e
            if not isinstance(values[name], dict):
                raise _tus_error(
                    httpexceptions.HTTPBadRequest, f"Upload-Metadata: {name} is not an object."
                )
    return values


def create(request):
    _require_tus(request)
    context = request.context
    policy = _policy(request)
    if request.headers.get("Upload-Defer-Length"):
        raise _tus_error(httpexceptions.HTTPBadRequest, "Upload-Defer-Length is not supported.")
    too_large = _too_large(policy.max_size_bytes) if policy.max_size_bytes else None
    length = _integer_header(request, "Upload-Length", too_large)
    if policy.max_size_bytes and length > policy.max_size_bytes:
        raise too_large
    metadata = _metadata(request.headers.get("Upload-Metadata"))
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
        "metadata": request.headers.get("Upload-Metadata", ""),
        "sha256": base64.b64encode(ResumableSha256().state()).decode("ascii"),
        "store": state,
    }
    location = request.route_url(UPLOAD_ROUTE, upload_id=upload["id"], **request.matchdict)
    if request.content_type == CHUNK_TYPE:
        upload = _append(request, upload, 0)  # creation-with-upload
    else:
        upload = _record(request, upload)
    return _tus_response(request, 201, Location=location, **_progress_headers(upload))


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
    raise _tus_error(
        HTTPTooManyUploads,
        f"Too many unfinished uploads ({count}, at most {limit} per user): finish or "
        "terminate (DELETE) one, or wait for one to expire.",
        errno=ERRORS.CLIENT_REACHED_CAPACITY,
        headers={"Retry-After": str(retry_after)},
    )


def _record(request, upload):
    """Record the upload with a new expiration, or complete it if it has all its bytes."""
    if upload["offset"] == upload["length"]:
        _complete(request, upload)
        return {**upload, "completed": True}
    seconds = request.registry.attachment_settings.resumable_expires_seconds
    upload = {**upload, "expires": msec_time() + seconds * 1000}
    uploads.save(request.registry.storage, upload)
    return upload


@contextlib.contextmanager
def _store_errors():
    """A failing store is a 503 (retry later); an upload whose stored bytes are gone (the
    store's ``FileNotFoundError``) a 410: no retry can bring them back, start a new upload."""
    with intake.store_errors():
        try:
            yield
        except FileNotFoundError as e:
            logger.warning("Resumable upload lost: %s", e)
            raise _tus_error(
                httpexceptions.HTTPGone,
                "The bytes of this upload are lost: start a new upload.",
                errno=ERRORS.MISSING_RESOURCE,
            ) from e


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


def _progress_headers(upload):
    headers = {"Upload-Offset": upload["offset"]}
    if not upload.get("completed"):
        headers["Upload-Expires"] = _http_date(upload["expires"])
    return headers


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
        raise _tus_error(
            httpexceptions.HTTPNotFound, "Unknown upload.", errno=ERRORS.MISSING_RESOURCE
        )
    return upload


def head(request):
    _require_tus(request)
    upload = _own_upload(request)
    return _tus_response(
        request,
        200,
        Upload_Offset=upload["offset"],
        Upload_Length=upload["length"],
        Upload_Metadata=upload["metadata"],
        Upload_Expires=_http_date(upload["expires"]),
    )


class HTTPLocked(httpexceptions.HTTPClientError):
    code = 423
    title = "Locked"


def patch(request):
    _require_tus(request)
    if request.content_type != CHUNK_TYPE:
        raise _tus_error(
            httpexceptions.HTTPUnsupportedMediaType, f"Content-Type must be {CHUNK_TYPE}."
        )
    offset = _integer_header(request, "Upload-Offset")
    upload = _locked_upload(request)
    if offset != upload["offset"]:
        raise _tus_error(
            httpexceptions.HTTPConflict,
            f"Upload-Offset is {offset}, the upload is at {upload['offset']}.",
            headers={"Upload-Offset": str(upload["offset"])},
        )
    upload = _append(request, upload, offset)
    return _tus_response(request, 204, **_progress_headers(upload))


def _locked_upload(request):
    """This user's upload, held for the request; ``423`` while another request holds it."""
    try:
        uploads.lock(request.registry, request.matchdict["upload_id"])
    except uploads.Locked:
        raise _tus_error(
            HTTPLocked,
            "Another request is writing to this upload.",
            errno=ERRORS.CONSTRAINT_VIOLATED,
        ) from None
    return _own_upload(request)


def terminate(request):
    _require_tus(request)
    upload = _locked_upload(request)
    uploads.remove(request.registry.storage, upload["id"])
    store = request.registry.attachment_store
    lifecycle.after_commit(request, store.discard, upload["store"])
    return _tus_response(request, 204)


def _checksum(request):
    header = request.headers.get("Upload-Checksum")
    if header is None:
        return None, None
    algorithm, _, encoded = header.partition(" ")
    if algorithm not in CHECKSUMS:
        raise _tus_error(
            httpexceptions.HTTPBadRequest, f"Upload-Checksum: unsupported algorithm {algorithm}."
        )
    try:
        expected = base64.b64decode(encoded, validate=True)
    except binascii.Error as e:
        raise _tus_error(httpexceptions.HTTPBadRequest, "Upload-Checksum: bad base64.") from e
    return CHECKSUMS[algorithm](), expected


def _append(request, upload, offset):
    """Append the request body at ``offset``; record the new state (or complete)."""
    length = request.content_length
    if length is None:
        raise http_error(
            httpexceptions.HTTPLengthRequired(),
            errno=ERRORS.MISSING_CONTENT_LENGTH,
            message="Content-Length is required.",
        )
    if offset + length > upload["length"]:
        raise _tus_error(
            httpexceptions.HTTPRequestEntityTooLarge,
            f"The chunk goes {offset + length - upload['length']} bytes past Upload-Length.",
            errno=ERRORS.REQUEST_TOO_LARGE,
        )
    checksum, expected = _checksum(request)
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
        raise _tus_error(HTTPChecksumMismatch, "Upload-Checksum does not match the chunk.")
    if sum(received) != length:
        store.delete_many(progress.created)
        raise _tus_error(httpexceptions.HTTPBadRequest, "The body is shorter than Content-Length.")
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
