"""Every refusal of the plugin, in Kinto's JSON error format (``code``, ``errno``, ``error``,
``message``, ``details``).

:data:`REFUSALS` is the errno table, as kinto.core's ``ERRORS`` and tusd's error list: one
named entry per refusal (status, errno, message template, extra headers). The errors table
of ``docs/api.rst`` lists the same status/errno pairs (``tests/test_errors.py`` checks it).
:func:`refuse` builds the exception of an entry, so that call sites read
``raise errors.refuse("too_large", limit=max_size)``; :mod:`~kinto_attachment.protocols.tus` adds
``Tus-Resumable`` to its own through :func:`kinto_attachment.protocols.tus.error`.

Templates are ``str.format`` strings of the parameters given to :func:`refuse`; in
``details``, a value that is exactly ``"{name}"`` is the parameter itself, untouched.
"""

import contextlib
import dataclasses
import logging
import string
from collections.abc import Mapping
from typing import Any

from kinto.core.errors import ERRORS, http_error
from pyramid import httpexceptions


__all__ = ["ERRORS", "REFUSALS", "Refusal", "refuse", "store_errors"]

logger = logging.getLogger(__name__)


class HTTPChecksumMismatch(httpexceptions.HTTPClientError):
    """The tus checksum extension's own status (Pyramid has no 460)."""

    code = 460
    title = "Checksum Mismatch"
    explanation = "The chunk does not match its Upload-Checksum."


#: Pyramid's exception of each status, and ours.
EXCEPTIONS = {**httpexceptions.status_map, HTTPChecksumMismatch.code: HTTPChecksumMismatch}


@dataclasses.dataclass(frozen=True)
class Refusal:
    """One refusal: what the client receives."""

    status: int
    errno: ERRORS
    #: ``str.format`` template of the message; None: no message.
    message: str | None = None
    #: Extra headers, values being templates too (``Retry-After``, ``Content-Range``...).
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Template of Kinto's ``details``.
    details: Any = None
    #: Raised bare, without a body: Kinto's own exception view for this class then answers,
    #: with the status, errno and message written here (as for any unknown route, or any
    #: request lacking authentication).
    bare: type[httpexceptions.HTTPException] | None = None
    #: The ``error`` title, where it is not the status's own.
    title: str | None = None

    def parameters(self):
        """The names of the parameters the templates use."""
        texts = [self.message or "", *self.headers.values(), *_strings(self.details)]
        return {
            field for text in texts for _, field, _, _ in string.Formatter().parse(text) if field
        }


def _strings(template):
    if isinstance(template, str):
        yield template
    elif isinstance(template, Mapping):
        for value in template.values():
            yield from _strings(value)
    elif isinstance(template, list | tuple):
        for value in template:
            yield from _strings(value)


def _fill(template, params):
    if isinstance(template, str):
        field = template[1:-1]
        if template == f"{{{field}}}" and field.isidentifier():
            return params[field]
        return template.format(**params)
    if isinstance(template, Mapping):
        return {key: _fill(value, params) for key, value in template.items()}
    if isinstance(template, list | tuple):
        return [_fill(value, params) for value in template]
    return template


_INVALID = "{name} in {location}: {description}"
_INVALID_DETAILS = [{"location": "{location}", "name": "{name}", "description": "{description}"}]
_BODY = "body: {description}"
_MISSING_DETAILS = {"id": "{id}", "resource_name": "{resource_name}"}
_TUS_400 = {"status": 400, "errno": ERRORS.INVALID_PARAMETERS}

#: The errno table: every refusal of the plugin, by name.
REFUSALS = {
    # 400: the request itself.
    # The form's refusals are kinto-attachment's, word for word.
    "invalid_body": Refusal(
        400,
        ERRORS.INVALID_PARAMETERS,
        _BODY,
        details=[{"location": "body", "name": None, "description": "{description}"}],
        # Kinto's ``raise_invalid``, which kinto-attachment refused these files with.
        title="Invalid parameters",
    ),
    "invalid_posted_data": Refusal(
        400,
        ERRORS.INVALID_POSTED_DATA,
        _BODY,
        details=[{"location": "body", "name": "{name}", "description": "{description}"}],
    ),
    "attachment_missing": Refusal(400, ERRORS.INVALID_POSTED_DATA, "Attachment missing."),
    "not_multipart": Refusal(
        400, ERRORS.INVALID_PARAMETERS, "Content-Type should be multipart/form-data"
    ),
    "invalid_boundary": Refusal(
        400, ERRORS.INVALID_PARAMETERS, "Invalid boundary in multipart form: {boundary}"
    ),
    "invalid_parameter": Refusal(
        400, ERRORS.INVALID_PARAMETERS, _INVALID, details=_INVALID_DETAILS
    ),
    "attachment_edit": Refusal(
        400,
        ERRORS.INVALID_POSTED_DATA,
        "Attachment metadata cannot be modified: upload with POST "
        "{{record}}/attachment, remove with DELETE {{record}}/attachment.",
    ),
    "short_body": Refusal(
        400,
        ERRORS.INVALID_PARAMETERS,
        "The body ended after {read} of the {length} bytes of its Content-Length.",
    ),
    "body_interrupted": Refusal(
        400,
        ERRORS.INVALID_PARAMETERS,
        "The body could not be read to its end: the connection failed or stalled, or its "
        "chunked framing is invalid.",
    ),
    "in_batch": Refusal(
        400,
        ERRORS.INVALID_PARAMETERS,
        "{method} {path} cannot be part of a batch: send it as a request of its own.",
    ),
    "ids_too_long": Refusal(
        400,
        ERRORS.INVALID_PARAMETERS,
        "The record's URI has {length} bytes: a record with an attachment has {limit} at most "
        "(/buckets/{{bid}}/collections/{{cid}}/records/{{rid}}, its ids with their 31 bytes "
        "of path).",
    ),
    # 400 of the tus headers.
    "not_an_integer": Refusal(**_TUS_400, message="{name} must be a non-negative integer."),
    "integer_too_long": Refusal(**_TUS_400, message="{name} is too large."),
    "defer_length": Refusal(**_TUS_400, message="Upload-Defer-Length must be 1."),
    "defer_length_and_length": Refusal(
        **_TUS_400, message="Send Upload-Length or Upload-Defer-Length, not both."
    ),
    "length_changed": Refusal(
        **_TUS_400, message="Upload-Length is {length} already: it cannot change."
    ),
    "length_below_offset": Refusal(
        **_TUS_400, message="Upload-Length is less than the {offset} bytes received."
    ),
    "concat_header": Refusal(
        **_TUS_400,
        message="Upload-Concat must be partial, or final;URL URL... (one URL at least).",
    ),
    "concat_unsupported": Refusal(
        **_TUS_400, message="Upload-Concat: this server's store cannot concatenate uploads."
    ),
    "concat_too_many": Refusal(
        **_TUS_400, message="Upload-Concat names more than {limit} partial uploads."
    ),
    "concat_url": Refusal(**_TUS_400, message="Upload-Concat: {url} is no upload of this record."),
    "concat_final_length": Refusal(
        **_TUS_400,
        message="A final upload has no Upload-Length nor Upload-Defer-Length: its partial "
        "uploads make its length.",
    ),
    "concat_final_body": Refusal(
        **_TUS_400, message="A final upload carries no bytes: its partial uploads are its bytes."
    ),
    "concat_not_partial": Refusal(
        **_TUS_400, message="Upload-Concat: {url} is not a partial upload."
    ),
    "concat_unfinished": Refusal(
        **_TUS_400, message="Upload-Concat: the partial upload {url} is not finished."
    ),
    "bad_metadata": Refusal(**_TUS_400, message="Upload-Metadata: bad {key}"),
    "metadata_filename": Refusal(**_TUS_400, message="Upload-Metadata: filename is required."),
    "metadata_invalid": Refusal(**_TUS_400, message="Upload-Metadata: {name} {description}"),
    "checksum_algorithm": Refusal(
        **_TUS_400, message="Upload-Checksum: unsupported algorithm {algorithm}."
    ),
    "checksum_base64": Refusal(
        **_TUS_400, message="Upload-Checksum: not the base64 of a digest of its algorithm."
    ),
    # 401, 403: answered by Kinto's forbidden view (401 when the request is anonymous).
    "unauthenticated": Refusal(
        401,
        ERRORS.MISSING_AUTH_TOKEN,
        "Please authenticate yourself to use this endpoint.",
        bare=httpexceptions.HTTPForbidden,
    ),
    "forbidden": Refusal(
        403,
        ERRORS.FORBIDDEN,
        "This user cannot access this resource.",
        bare=httpexceptions.HTTPForbidden,
    ),
    "concat_final_patch": Refusal(
        403, ERRORS.FORBIDDEN, "A final upload takes no PATCH: its partial uploads made it."
    ),
    "bad_signature": Refusal(
        403, ERRORS.FORBIDDEN, "This URL's signature is invalid or has expired."
    ),
    # 404, 410: nothing there.
    "missing": Refusal(404, ERRORS.MISSING_RESOURCE, details=_MISSING_DETAILS),
    "hidden": Refusal(
        404,
        ERRORS.MISSING_RESOURCE,
        "The resource you are looking for could not be found.",
        bare=httpexceptions.HTTPNotFound,
    ),
    "unknown_upload": Refusal(404, ERRORS.MISSING_RESOURCE, "Unknown upload."),
    "concat_unknown": Refusal(
        404,
        ERRORS.MISSING_RESOURCE,
        "Upload-Concat: unknown partial upload {url} (expired, or made into a final upload "
        "already?).",
    ),
    "upload_gone": Refusal(
        410, ERRORS.MISSING_RESOURCE, "The bytes of this upload are lost: start a new upload."
    ),
    # 409, 412, 423: the state on the server.
    "offset_conflict": Refusal(
        409,
        ERRORS.INVALID_PARAMETERS,
        "Upload-Offset is {offset}, the upload is at {current}.",
        headers={"Upload-Offset": "{current}"},
    ),
    "upload_complete": Refusal(
        409,
        ERRORS.INVALID_PARAMETERS,
        "The upload is complete: it takes no more bytes.",
        headers={"Upload-Offset": "{length}"},
    ),
    "modified_meanwhile": Refusal(
        412,
        ERRORS.MODIFIED_MEANWHILE,
        "The record was created meanwhile by another request: retry.",
    ),
    "download_precondition": Refusal(
        412,
        ERRORS.MODIFIED_MEANWHILE,
        "The file is not the version If-Match (or If-Unmodified-Since) names: it changed.",
    ),
    "write_precondition": Refusal(
        412,
        ERRORS.MODIFIED_MEANWHILE,
        "The file is not the version If-Match, If-None-Match or If-Unmodified-Since names: "
        "it changed.",
    ),
    "tus_version": Refusal(
        412,
        ERRORS.INVALID_PARAMETERS,
        "Tus-Resumable: {version} is required.",
        headers={"Tus-Version": "{version}"},
    ),
    "upload_locked": Refusal(
        423, ERRORS.CONSTRAINT_VIOLATED, "Another request is writing to this upload."
    ),
    # 411, 413, 415, 416, 460: the body.
    "length_required": Refusal(411, ERRORS.MISSING_CONTENT_LENGTH, "Content-Length is required."),
    "transfer_coding": Refusal(
        501,
        ERRORS.INVALID_PARAMETERS,
        "Transfer-Encoding: {coding} is not supported: a body is chunked, or not coded at all.",
    ),
    "too_large": Refusal(
        413, ERRORS.REQUEST_TOO_LARGE, "File size exceeds the limit ({limit} bytes)."
    ),
    "body_too_large": Refusal(
        413,
        ERRORS.REQUEST_TOO_LARGE,
        "A chunked request body is read whole up to {limit} bytes: send it with its "
        "Content-Length.",
    ),
    "chunk_too_large": Refusal(
        413, ERRORS.REQUEST_TOO_LARGE, "The chunk goes {excess} bytes past Upload-Length."
    ),
    "chunk_type": Refusal(415, ERRORS.INVALID_PARAMETERS, "Content-Type must be {chunk_type}."),
    "range_not_satisfiable": Refusal(
        416,
        ERRORS.INVALID_PARAMETERS,
        "Range not satisfiable: the content has {size} bytes.",
        headers={"Content-Range": "bytes */{size}"},
    ),
    "checksum_mismatch": Refusal(
        460, ERRORS.INVALID_PARAMETERS, "Upload-Checksum does not match the chunk."
    ),
    # 429, 503: retry later.
    "too_many_uploads": Refusal(
        429,
        ERRORS.CLIENT_REACHED_CAPACITY,
        "Too many unfinished uploads ({count}, at most {limit} per user): finish or "
        "terminate (DELETE) one, or wait for one to expire.",
        headers={"Retry-After": "{retry_after}"},
    ),
    "storage_failed": Refusal(
        503,
        ERRORS.BACKEND,
        "Attachment storage is unavailable, retry later.",
        headers={"Retry-After": "30"},
    ),
    # Kinto's view of 503s adds its Retry-After (``retry_after_seconds``).
    "replaced_meanwhile": Refusal(
        503,
        ERRORS.BACKEND,
        "The file was replaced again and again while it was being opened: retry.",
    ),
    "transfers_busy": Refusal(
        503,
        ERRORS.BACKEND,
        "Too many transfers in progress, retry later.",
        headers={"Retry-After": "{retry_after}"},
    ),
    # 403, 405: what a web page made a browser send; a method the route does not serve.
    "foreign_host": Refusal(
        403,
        ERRORS.FORBIDDEN,
        "Host {host} is not a name of this server: /data/files answers the names of "
        "kinto.attachment.data_files.allowed_hosts (and IP addresses) only.",
    ),
    "cross_site": Refusal(
        403,
        ERRORS.FORBIDDEN,
        "/data/files refuses what web pages of other origins send (Origin: {origin}): "
        "list the page's origin in kinto.attachment.data_files.allowed_origins.",
    ),
    "method_override": Refusal(
        405,
        ERRORS.METHOD_NOT_ALLOWED,
        "X-HTTP-Method-Override must be one of {allow}.",
        headers={"Allow": "{allow}"},
    ),
    "method_not_allowed": Refusal(
        405,
        ERRORS.METHOD_NOT_ALLOWED,
        "Method not allowed on this endpoint.",
        headers={"Allow": "{allow}"},
    ),
    # 401: anonymous resumable uploads (kinto.attachment.resumable.allow_anonymous).
    "anonymous_upload": Refusal(
        401,
        ERRORS.MISSING_AUTH_TOKEN,
        "Resumable uploads need authentication on this server: authenticate, or send the "
        "file in one multipart POST {{record}}/attachment.",
    ),
}


def not_allowed(methods, before=None, refusal=None):
    """A view for the methods a route does not serve: Kinto's ``405`` with ``Allow``
    (``methods``, ``HEAD`` with ``GET``). Pyramid answers a method that no view of a route
    takes with a ``404``, as if the URL named nothing; this view, which has no method to
    match, is tried after the others. ``before(request)`` runs first (a hidden route's
    ``404``); ``refusal`` builds the error (:func:`refuse` by default; tus adds its header)."""
    allow = ", ".join(dict.fromkeys(m for method in methods for m in _with_head(method)))
    refusal = refusal or refuse

    def refused(request):
        if before is not None:
            before(request)
        raise refusal("method_not_allowed", allow=allow)

    return refused


def _with_head(method):
    return (method, "HEAD") if method == "GET" else (method,)


def refuse(name, /, *, headers=None, **params):
    """The exception of refusal ``name``, its templates filled with ``params``.

    ``headers`` are set before the refusal's own (tus puts its ``Tus-Resumable`` there).
    """
    refusal = REFUSALS[name]
    if refusal.bare is not None:
        return refusal.bare()
    error = http_error(
        EXCEPTIONS[refusal.status](),
        errno=refusal.errno,
        error=refusal.title,
        message=None if refusal.message is None else refusal.message.format(**params),
        details=_fill(refusal.details, params),
    )
    error.headers.update(headers or {})
    for header, template in refusal.headers.items():
        error.headers[header] = template.format(**params)
    return error


@contextlib.contextmanager
def store_errors():
    """Report a failing store (disk full, permissions, network) as a 503, not a 500."""
    try:
        yield
    except OSError as e:
        logger.exception("Attachment storage failed")
        raise refuse("storage_failed") from e
