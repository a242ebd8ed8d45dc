"""Serving a stored blob over HTTP: the one response builder of every download route.

:func:`respond` streams from the store (``wsgi.file_wrapper`` for local files, the store's
stream otherwise) and answers conditional requests and one byte range: ``If-None-Match``, or else
``If-Modified-Since`` (304); ``Range`` with ``If-Range`` (206, 416). Ranges and ``If-Range`` are
decided by :mod:`.conditions`: WebOb's own range fallback reads the skipped bytes and its 416 is
not Kinto's JSON error, and it takes any ``If-Range`` date up to ``Last-Modified`` for a match,
where RFC 9110 wants that very date, and a strong one. It never lets a browser execute what it
downloads: ``nosniff`` always, and only :data:`~kinto_attachment.web.media_types.INLINE_TYPES`
inline. What caches may keep of the answer is the route's decision
(:mod:`kinto_attachment.downloads.caching`), carried by the :class:`Download`.

Routes call it through :func:`serve`. A download reads its record (or entry), then opens the
blob the record names, and a replacement can commit in between, on any node. Two things keep
such a download whole, either version but never a ``404`` nor a mix:

- the replaced blob is kept ``gc.replaced_grace_seconds`` before it is deleted
  (:mod:`kinto_attachment.state.replaced`): the download opens it, and reads it to the end
  even where the store reads lazily, as S3 and GCS do (one response, streamed as the client
  takes it), or where a signed URL (``307``) leads the client to it later;
- if it is gone all the same (no grace, or a read slower than the grace), :func:`serve` reads
  the record again and serves its new version, whole, to a caller who may still read it.

A record read again that still names the missing blob is a lost blob: a ``404``, and an error
logged for the operator.
"""

import dataclasses
import hashlib
import logging
import mimetypes
import os
import posixpath

from pyramid.response import Response

from .. import errors
from ..errors import store_errors
from ..web.media_types import content_disposition, served_type
from ..web.streams import Chunks, file_body, wrapped_body
from . import conditions


logger = logging.getLogger(__name__)

#: How many times :func:`serve` reads a record again when the blob it named is gone: each time
#: means that one more replacement committed between the read and the opening.
ATTEMPTS = 5


@dataclasses.dataclass(frozen=True)
class Download:
    """What is served: a blob and the metadata that describes it."""

    key: str
    size: int
    mimetype: str
    filename: str
    #: A strong validator of the content, its ETag: the sha256 (records, ``/data/files``), or
    #: the stored file's version (files served by their key); None: no ETag.
    hash: str | None = None
    #: Epoch milliseconds, or None.
    last_modified: int | None = None
    #: Epoch milliseconds from which every version of the resource has had this content:
    #: the version before it is older. A ``Last-Modified`` of a second that starts after it
    #: is then a strong validator (``If-Range``); None: unknown.
    unchanged_since: int | None = None
    #: Epoch milliseconds of the last version that had another content (a file replaced), when
    #: known: a date of that second cannot tell the two contents apart (``If-Modified-Since``,
    #: ``If-Unmodified-Since``). None: no earlier content known.
    previous_modified: int | None = None
    #: False: browsers are asked to save it, whatever its type.
    inline: bool = True
    #: ``Cache-Control`` of every answer (304 and 307 included); None: none.
    cache_control: str | None = None
    #: Request headers the answer depends on (``Vary``): ``Authorization`` when another
    #: caller may get another answer.
    vary: tuple = ()


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


def of_key(key, size, version, **options):
    """The :class:`Download` of a blob served by its key, not by a record: typed from its
    name, named by its last segment, ``version`` (of the stored file) as its ETag."""
    return Download(
        key=key,
        size=size,
        mimetype=mimetypes.guess_type(key, strict=False)[0] or "application/octet-stream",
        filename=posixpath.basename(key),
        hash=version,
        **options,
    )


class Missing(Exception):
    """The blob of :attr:`download` is not in the store; nothing was sent."""

    def __init__(self, download):
        super().__init__(download.key)
        self.download = download


def serve(request, store, current, lost=None, **options):
    """:func:`respond` with the :class:`Download` that ``current(again)`` returns: the
    record's (or entry's) as it is, read again when ``again`` is true; or it raises the
    route's own answer (the ``404`` of a record deleted meanwhile, a ``403``...).

    A blob gone when it is opened (or checked: ``current`` may raise :class:`Missing` too)
    means that its record moved on after it was read: the download is served from the record
    read again. A blob that is still named after it was found missing is lost: an error is
    logged, and the answer is ``lost(download)`` (default: the ``404`` of an attachment). A
    record that moves on at every attempt is a ``503``.
    """
    failed = None
    for attempt in range(ATTEMPTS):
        try:
            return respond(request, store, current(attempt > 0), **options)
        except Missing as missing:
            if missing.download.key == failed:
                logger.error("Blob %r is missing from the store", failed)
                raise (lost or _lost_attachment)(missing.download) from None
            failed = missing.download.key
    raise errors.refuse("replaced_meanwhile")


def respond(request, store, download, redirect=None, wrap=None, found=False):
    """The response serving ``download``: 200, 206, 304, 307 (to ``redirect(download)``, if
    a URL) or 416; :class:`Missing` when its blob is not in the store.

    ``wrap(stream, length)`` may replace the body's file (the transfer limiter of
    ``/data/files``); if it raises, the stream is closed. ``found``: the
    caller has just seen the blob in the store, so a ``HEAD`` need not look for it again.
    """
    response = StreamedResponse(content_type=served_type(download.mimetype), charset=None)
    if download.hash is not None:
        response.headers["ETag"] = f'"{download.hash}"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Disposition"] = content_disposition(
        download.filename, download.mimetype, inline=download.inline
    )
    response.headers["Accept-Ranges"] = "bytes"
    if download.last_modified is not None:
        response.last_modified = download.last_modified / 1000
    if download.cache_control is not None:
        response.headers["Cache-Control"] = download.cache_control
    # The answer names the request's Origin (CORS, echoed by Cornice or ``web.cors``) when it
    # has one: a cache must not give one page's answer to another's, nor one made without.
    # Where it may redirect, a conditional request is streamed instead: a cache must not give
    # it the redirect it keeps for the others.
    conditions_vary = _CONDITIONS if redirect is not None else ()
    response.vary = tuple(dict.fromkeys((*(download.vary or ()), "Origin", *conditions_vary)))
    conditions.require_preconditions(request, download)
    if conditions.not_modified(request, download):
        response.status = 304
        del response.content_type
        # Not the empty body's 0 (RFC 9110 §8.6): caches update what they keep from a 304.
        response.content_length = None
        return response
    redirect_url = redirect(download) if _redirected(request, redirect) else None
    if redirect_url is not None:
        return _redirect(response, redirect_url)

    span = None
    if request.headers.get("Range") and conditions.range_applies(request, download):
        span = conditions.requested_range(request, download.size)
    start, end = span or (0, download.size - 1)
    if span is not None:
        response.status = 206
        response.headers["Content-Range"] = f"bytes {start}-{end}/{download.size}"
    length = end - start + 1
    if request.method == "HEAD" or not length:
        # Nothing to send: the blob is looked for all the same (a lost one is no 200).
        if not found:
            _require_blob(store, download)
    else:
        stream = _open(store, download, start, end if span else None)
        if wrap is None:
            app_iter = file_body(request, stream)
        else:
            try:
                wrapped = wrap(stream, length)
            except BaseException:
                stream.close()
                raise
            app_iter = wrapped_body(request, wrapped)
        response.app_iter = app_iter
    # After the body: WebOb forgets Content-Length when app_iter is set.
    response.content_length = length
    return response


#: Conditions a store would evaluate against its own validators (an S3 ETag is an MD5, its
#: ``Last-Modified`` the object's write, or an older object's), never ours: the answer has
#: checked them, and streams the content rather than send the client, with them, to the store
#: (a resumed download refused, ``412``, or sent whole; a changed file answered ``304``).
_CONDITIONS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range")


def _redirected(request, redirect):
    """Whether the content is left to ``redirect``'s signed URL (which a client follows with
    the same headers): not for a conditional request (:data:`_CONDITIONS`), nor for a
    ``HEAD``, which has no content to leave, and which the URL, signed for a ``GET`` (S3's
    and GCS's signatures cover the method), would refuse (``403``): it is answered here."""
    return (
        redirect is not None
        and request.method != "HEAD"
        and not any(request.headers.get(h) for h in _CONDITIONS)
    )


def _redirect(response, url):
    """The 307 to ``url``, without the content's validators nor its disposition: a cache that
    kept it would revalidate it with them, and the ``304`` would keep serving a signed URL
    that expired (the ``304`` a client gets for the content it has is not affected)."""
    response.status = 307
    response.location = url
    response.etag = None
    response.last_modified = None
    # The signed URL names the file itself: a second name here would only make the answer's
    # head larger (past what a proxy reads, with a long name and a session token).
    del response.headers["Content-Disposition"]
    return response


def _lost_attachment(download):
    return errors.refuse("missing", resource_name="attachment", id=download.filename)


def stat_of(store, key):
    """The blob's :class:`~kinto_attachment.storage.Stat`, or None when there is none, or
    when its key cannot be in the store (``ValueError``: a location that climbs out of it, a
    link leading out of a local store); a failing store is a ``503``."""
    with store_errors():
        try:
            return store.stat(key)
        except ValueError:
            return None


def _require_blob(store, download):
    """:class:`Missing` for ``HEAD`` too (``GET`` finds it out by opening the blob), and for
    a blob of another length than the one described (as ``GET`` finds a local file's)."""
    stat = stat_of(store, download.key)
    if stat is None or stat.size != download.size:
        raise Missing(download)


def _open(store, download, start, end):
    """The blob's stream; :class:`Missing` when the blob is not in the store, when its key
    cannot be in the store (a location that climbs out of it), or when its length is not the
    one described."""
    with store_errors():
        try:
            stream = store.open(download.key, start, end)
        except (FileNotFoundError, IsADirectoryError, ValueError):
            raise Missing(download) from None
        if _stored_length(stream) not in (None, download.size):
            # A file cut short (or an object written over) by hand: not the one described,
            # whose length the answer announces. Lost, as a missing one.
            stream.close()
            raise Missing(download)
        return stream


def _stored_length(stream):
    """The length of the object ``stream`` reads (a range of it too): as the remote store
    said (``stored_size``), or the local file's; None when unknown."""
    stored_size = getattr(stream, "stored_size", None)
    if stored_size is not None:
        return stored_size
    source = getattr(stream, "source", stream)
    try:
        return os.fstat(source.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError.
        return None


def matches(store, download):
    """Whether the stored blob has exactly the size and sha256 ``download`` expects;
    :class:`Missing` if it is not in the store."""
    digest = hashlib.sha256()
    size = 0
    stream = _open(store, download, 0, None)
    with store_errors():
        for chunk in Chunks(stream):
            digest.update(chunk)
            size += len(chunk)
    return size == download.size and digest.hexdigest() == download.hash
