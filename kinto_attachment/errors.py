"""Our refusals, in Kinto's JSON error format (``code``, ``errno``, ``error``, ``message``).

Functions return the exception so that call sites read ``raise errors.too_large(...)``.
"""

from kinto.core.errors import ERRORS, http_error
from pyramid import httpexceptions


def invalid(name, description, errno=ERRORS.INVALID_POSTED_DATA):
    """400 on a part of the request body, with Kinto's ``details`` entry for the field."""
    return http_error(
        httpexceptions.HTTPBadRequest(),
        errno=errno,
        message=f"{name} in body: {description}",
        details=[{"location": "body", "name": name, "description": description}],
    )


def too_large(limit):
    return http_error(
        httpexceptions.HTTPRequestEntityTooLarge(),
        errno=ERRORS.REQUEST_TOO_LARGE,
        message=f"File size exceeds the limit ({limit} bytes).",
    )


def record_not_found(record_id):
    return http_error(
        httpexceptions.HTTPNotFound(),
        errno=ERRORS.MISSING_RESOURCE,
        details={"id": record_id, "resource_name": "record"},
    )


def storage_failed(retry_after=30):
    """503: the blob store failed (disk full, network...); the client may retry later."""
    error = http_error(
        httpexceptions.HTTPServiceUnavailable(),
        errno=ERRORS.BACKEND,
        message="Attachment storage is unavailable, retry later.",
    )
    error.headers["Retry-After"] = str(retry_after)
    return error


def modified_meanwhile():
    """412: another request changed the record between the permission check and the write."""
    return http_error(
        httpexceptions.HTTPPreconditionFailed(),
        errno=ERRORS.MODIFIED_MEANWHILE,
        message="The record was created meanwhile by another request: retry.",
    )
