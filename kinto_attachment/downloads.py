"""Serving a stored blob over HTTP, for every download route.

Streams from the store (``wsgi.file_wrapper`` for local files, S3's body otherwise), answers
conditional requests (``If-None-Match`` → 304) and one byte range (206, 416), and never lets a
browser execute what it downloads: ``nosniff``, and types a browser would run (HTML, SVG, XML,
JavaScript) served as attachments, never inline.
"""

import dataclasses
import hashlib
import logging
import re
from urllib.parse import quote

from kinto.core.errors import ERRORS, http_error
from pyramid import httpexceptions
from pyramid.response import Response

from .intake import CHUNK_SIZE, store_errors


logger = logging.getLogger(__name__)

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_EXECUTABLE = re.compile(
    r"^(text/html|application/xhtml\+xml|image/svg\+xml|text/xml|application/xml"
    r"|[a-z]+/[\w.-]+\+xml|(text|application)/(x-)?(java|ecma)script|text/xsl)$"
)


@dataclasses.dataclass(frozen=True)
class Download:
    """What is served: a blob and the metadata that describes it."""

    key: str
    size: int
    mimetype: str
    filename: str
    hash: str
    #: Epoch milliseconds, or None.
    last_modified: int | None = None


def content_disposition(filename, mimetype, inline=True):
    """RFC 6266: an ASCII ``filename`` for old clients, the exact one in ``filename*``."""
    kind = "inline" if inline and not _EXECUTABLE.match(mimetype or "") else "attachment"
    fallback = re.sub(r'[^\x20-\x7e]|["\\%]', "_", filename) or "file"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _etag_matches(header, etag):
    tokens = {token.strip().removeprefix("W/") for token in header.split(",")}
    return "*" in tokens or f'"{etag}"' in tokens


def requested_range(request, size, etag):
    """``(start, end)`` inclusive of one satisfiable range; None to serve it all; or a 416.

    Several ranges, a malformed header, or an ``If-Range`` that does not match are answered
    with the whole content, as RFC 9110 allows.
    """
    header = request.headers.get("Range")
    if not header or not _etag_matches(request.headers.get("If-Range", "*"), etag):
        return None
    match = _RANGE.match(header.replace(" ", ""))
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None
    else:
        start, end = max(0, size - int(last)), size - 1
    if start >= size or end < start:
        error = http_error(
            httpexceptions.HTTPRequestRangeNotSatisfiable(),
            errno=ERRORS.INVALID_PARAMETERS,
            message=f"Range not satisfiable: the content has {size} bytes.",
        )
        error.headers["Content-Range"] = f"bytes */{size}"
        raise error
    return start, end


def missing(resource_name, object_id):
    return http_error(
        httpexceptions.HTTPNotFound(),
        errno=ERRORS.MISSING_RESOURCE,
        details={"id": object_id, "resource_name": resource_name},
    )


class _Length:
    """Stands for a body that is not read: it only has a length (and is truthy if not empty)."""

    def __init__(self, length):
        self._length = length

    def __len__(self):
        return self._length


class StreamedResponse(Response):
    """A response whose body streams from the store.

    Kinto's metrics read ``response.body`` of every response to observe its size; on a WebOb
    response that joins the whole body in memory, a whole file for a download. Here ``body``
    only has the length of the content: the stream is left for the WSGI server to send.
    """

    @property
    def body(self):
        if isinstance(self.app_iter, list):
            return Response.body.fget(self)
        return _Length(self.content_length or 0)

    @body.setter
    def body(self, value):
        Response.body.fset(self, value)


def respond(request, store, download, redirect_url=None, inline=True):
    """The response serving ``download``: 200, 206, 304, 307 (``redirect_url``) or 416.

    ``inline=False`` asks browsers to save the file rather than show it, whatever its type.
    """
    response = StreamedResponse(content_type=download.mimetype, charset=None)
    response.headers["ETag"] = f'"{download.hash}"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Disposition"] = content_disposition(
        download.filename, download.mimetype, inline=inline
    )
    response.headers["Accept-Ranges"] = "bytes"
    if download.last_modified is not None:
        response.last_modified = download.last_modified / 1000
    if _etag_matches(request.headers.get("If-None-Match", ""), download.hash):
        response.status = 304
        del response.content_type
        return response
    if redirect_url is not None:
        response.status = 307
        response.location = redirect_url
        return response

    span = requested_range(request, download.size, download.hash)
    start, end = span or (0, download.size - 1)
    if span is not None:
        response.status = 206
        response.headers["Content-Range"] = f"bytes {start}-{end}/{download.size}"
    length = end - start + 1
    if request.method == "GET" and length:
        try:
            with store_errors():
                stream = store.open(download.key, start, end if span else None)
        except httpexceptions.HTTPServiceUnavailable as error:
            if isinstance(error.__cause__, FileNotFoundError):
                logger.error("Attachment blob %r is missing from the store", download.key)
                raise missing("attachment", download.filename) from None
            raise
        wrapper = request.environ.get("wsgi.file_wrapper")
        response.app_iter = wrapper(stream, CHUNK_SIZE) if wrapper else chunks(stream)
    # After the body: WebOb forgets Content-Length when app_iter is set.
    response.content_length = length
    return response


def chunks(stream):
    """The stream's content by chunks, closing it at the end."""
    with stream:
        while chunk := stream.read(CHUNK_SIZE):
            yield chunk


def matches(store, download):
    """Whether the stored blob has exactly the size and sha256 ``download`` expects."""
    digest = hashlib.sha256()
    size = 0
    with store_errors():
        for chunk in chunks(store.open(download.key)):
            digest.update(chunk)
            size += len(chunk)
    return size == download.size and digest.hexdigest() == download.hash
