"""What a download asks for besides the blob: one byte range (``Range``), whether it still
applies (``If-Range``), whether the version is the one the client asks for (``If-Match``,
``If-Unmodified-Since``), and whether the client's copy is current (``If-None-Match``,
``If-Modified-Since``); decided here rather than by WebOb (see :mod:`kinto_attachment.downloads`).
"""

import email.utils
import re

from .. import errors


#: One range, as RFC 9110 writes it (WebOb's parser takes the first of several, and ignores
#: what follows it). Positions of more digits are beyond any content, and beyond what
#: ``int()`` converts (4300 digits): they are read as :data:`_BEYOND`. Spaces around it, as
#: around a list's items, but none within it: ``bytes=1 0-2 0`` is no ``bytes=10-20`` (a
#: proxy in front would read another range in it, or none).
_ONE_RANGE = re.compile(r"[ \t]*bytes=[ \t]*([0-9]*)-([0-9]*)[ \t]*")
_MAX_DIGITS = 19
_BEYOND = "9" * _MAX_DIGITS


def requested_range(request, size):
    """``(start, end)`` inclusive of one satisfiable range; None to serve it all; or a 416.

    Call it on a response that has its validators (ETag, Last-Modified), for ``If-Range``.
    Several ranges, a malformed header, or an ``If-Range`` that does not match are answered
    with the whole content, as RFC 9110 allows.
    """
    match = _ONE_RANGE.fullmatch(request.headers.get("Range") or "")
    if match is None or match.groups() == ("", ""):
        return None
    first, last = (_position(digits) for digits in match.groups())
    if first is None:  # bytes=-N: the last N bytes.
        if last == 0:
            raise errors.refuse("range_not_satisfiable", size=size)
        # Of an empty file, the one satisfiable range (RFC 9110 §14.1.1): all of it, a 200.
        return None if size == 0 else (max(0, size - last), size - 1)
    if last is not None and last < first:
        return None
    if first >= size:
        raise errors.refuse("range_not_satisfiable", size=size)
    return first, size - 1 if last is None else min(last, size - 1)


def _position(digits):
    """The position ``digits`` write (None for none); any beyond :data:`_MAX_DIGITS` digits
    is :data:`_BEYOND`."""
    if not digits:
        return None
    digits = digits.lstrip("0") or "0"
    return int(digits if len(digits) <= _MAX_DIGITS else _BEYOND)


def http_date(value):
    """Seconds since the epoch of an HTTP-date, or None."""
    try:
        parsed = email.utils.parsedate_tz(value)
        return None if parsed is None else email.utils.mktime_tz(parsed)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def range_applies(request, download):
    """Whether the ``Range`` of ``request`` applies to ``download``, as ``If-Range`` decides
    (RFC 9110 §13.1.5); if not, the whole content is sent.

    An entity-tag must be the ``ETag``, compared strongly. A date must be exactly the
    ``Last-Modified`` and a strong validator (§8.8.2.2): the server must know that the
    content did not change twice within that second, since two versions made in one second
    have one ``Last-Modified`` (a client holding the first would get bytes of the second). It
    knows when every version with a ``Last-Modified`` from that second on had this content:
    :attr:`Download.unchanged_since` is not later than the second's start.
    """
    value = (request.headers.get("If-Range") or "").strip()
    if not value:
        return True
    if value.startswith(('"', "W/")):
        return download.hash is not None and value == f'"{download.hash}"'
    seconds = http_date(value)
    if seconds is None or download.last_modified is None:
        return False
    return seconds == download.last_modified // 1000 and _strong(download, seconds)


def _strong(download, second):
    """Whether every version of ``download`` whose ``Last-Modified`` is of ``second`` (epoch
    seconds) had its content: it has had it since that second began at the latest."""
    since = download.unchanged_since
    return since is not None and since <= second * 1000


def require_preconditions(request, download):
    """412 unless ``If-Match`` names the ``ETag`` (compared strongly; ``*``: any), or
    without it, unless ``If-Unmodified-Since`` is not before ``Last-Modified`` (RFC 9110
    §13.2.2): a client resuming a download with ``Range`` and ``If-Match`` must not get bytes
    of another version to append to those it has."""
    if_match = request.headers.get("If-Match")
    if if_match is not None:
        tags = entity_tags(if_match)
        if "*" not in tags and (download.hash is None or f'"{download.hash}"' not in tags):
            raise errors.refuse("download_precondition")
        return
    since = http_date(request.headers.get("If-Unmodified-Since") or "")
    modified = download.last_modified
    if since is None or modified is None:
        return
    if modified // 1000 > since or replaced_within(download.previous_modified, since):
        raise errors.refuse("download_precondition")
    # A client resuming with the date: as for If-Range, only a strong one (another content
    # may have had that second: its bytes would be appended to those the client has).
    if request.headers.get("Range") and modified // 1000 == since and not _strong(download, since):
        raise errors.refuse("download_precondition")


def entity_tags(value):
    """The entity-tags of an ``If-Match`` or ``If-None-Match`` value (``*`` one of them)."""
    return {tag.strip() for tag in value.split(",")}


def replaced_within(previous, second):
    """Whether the content changed within ``second`` (epoch seconds) or after it, its
    previous content's last version being ``previous`` (epoch ms, None: none): a date of that
    second (HTTP dates have whole seconds) may be either content's. A client holding the
    previous one must not be told it is current (``304``), nor get the new one's bytes to
    append to its own (``206``), nor write over the new one (a write's
    ``If-Unmodified-Since``)."""
    return previous is not None and previous // 1000 >= second


def not_modified(request, download):
    """``If-None-Match`` (weak comparison; ``*``: the file exists, so it matches), or
    without it ``If-Modified-Since``."""
    if (request.headers.get("If-None-Match") or "").strip() == "*":
        return True  # WebOb's "any ETag" is falsy: it would read as no header at all.
    if request.if_none_match:
        return download.hash is not None and download.hash in request.if_none_match
    # Read here: WebOb raises on a date it cannot represent (a year past 9999).
    since = http_date(request.headers.get("If-Modified-Since") or "")
    if since is None or download.last_modified is None:
        return False
    # HTTP dates have whole seconds.
    return download.last_modified // 1000 <= since and not replaced_within(
        download.previous_modified, since
    )
