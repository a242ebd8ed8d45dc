"""Serving a stored blob over HTTP, for every download route.

Streams from the store (``wsgi.file_wrapper`` for local files, S3's body otherwise), answers
conditional requests (``If-None-Match`` → 304) and one byte range (206, 416), and never lets a
browser execute what it downloads: ``nosniff`` always, and only the types of
:data:`INLINE_TYPES` served inline; every other type is sent as an attachment.
"""

import dataclasses
import hashlib
import logging
import re
from urllib.parse import quote

from pyramid import httpexceptions
from pyramid.response import Response

from . import errors
from .intake import CHUNK_SIZE, parse_media_type, store_errors


logger = logging.getLogger(__name__)

_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
#: Positions with more digits are beyond any content (and beyond ``int()``'s digit limit).
_MAX_DIGITS = 19

INLINE_TYPES = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/apng",
    "image/bmp",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "application/pdf",
    "text/plain",
    "application/json",
    "audio/*",
    "video/*",
)
"""The only media types ever served ``inline`` (shown by the browser); ``type/*`` stands for
every subtype. Everything else (HTML, SVG and any XML, JavaScript, CSS, unknown and invalid
types...) is sent with ``Content-Disposition: attachment`` and, like every download,
``X-Content-Type-Options: nosniff``: a browser saves it instead of rendering it in the API's
origin (or the bucket's). These are types browsers display without running scripts of the
file: raster images (not SVG), PDF, plain text, JSON, audio and video. Matched on the parsed
``type/subtype`` of the stored type, lowercase, parameters ignored."""


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


def served_type(mimetype):
    """The ``Content-Type`` to send for a stored type: its ``type/subtype``, or
    ``application/octet-stream`` when it is not a valid media type (stored by older versions)."""
    return parse_media_type(mimetype) or "application/octet-stream"


def is_inline(mimetype):
    """Whether ``mimetype`` is one of :data:`INLINE_TYPES`."""
    essence = parse_media_type(mimetype)
    if essence is None:
        return False
    return essence in INLINE_TYPES or f"{essence.split('/')[0]}/*" in INLINE_TYPES


def content_disposition(filename, mimetype, inline=True):
    """RFC 6266: an ASCII ``filename`` for old clients, the exact one in ``filename*``.

    ``attachment`` unless ``inline`` is asked and the type is one of :data:`INLINE_TYPES`.
    """
    kind = "inline" if inline and is_inline(mimetype) else "attachment"
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
    first, last = (_position(group) for group in match.groups())
    if first is not None:
        start, end = first, min(last, size - 1) if last is not None else size - 1
        if last is not None and last < start:
            return None
    else:
        start, end = max(0, size - last), size - 1
    if start >= size or end < start:
        raise errors.refuse("range_not_satisfiable", size=size)
    return start, end


def _position(digits):
    """A position of a Range header (None if empty); one too long to be read is taken as
    beyond any content, instead of raising (``int()`` refuses over 4300 digits)."""
    if not digits:
        return None
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


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
    response = StreamedResponse(content_type=served_type(download.mimetype), charset=None)
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
                raise errors.refuse(
                    "missing", resource_name="attachment", id=download.filename
                ) from None
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
