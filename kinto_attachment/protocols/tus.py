"""The tus 1.0.0 protocol: its headers, checksums, dates, responses and refusals.

This is the protocol alone, as tusd keeps ``pkg/handler`` apart from its stores: it knows
nothing of records, permissions, Kinto's storage or the blob stores, so that it can be read
and tested on its own (``tests/protocols/test_tus_protocol.py``). The views
(:mod:`kinto_attachment.views.resumable`) bind it to those.

Parsers take header values and return what they mean, or raise the protocol's refusal: an
entry of the service's one catalogue (:mod:`kinto_attachment.errors`, Kinto's JSON error
format) that also carries ``Tus-Resumable``, as tus requires of every response.
"""

import base64
import email.utils
import hashlib

from pyramid.response import Response

from .. import errors
from ..errors import HTTPChecksumMismatch  # noqa: F401 (tus's own status, named here too)


VERSION = "1.0.0"
EXTENSIONS = (
    "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,"
    "concatenation"
)
#: ``Upload-Checksum`` algorithms: names as tus writes them, and their hashlib constructors.
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}
#: The only ``Content-Type`` of a chunk.
CHUNK_TYPE = "application/offset+octet-stream"
#: Headers a browser's client must read (``Access-Control-Expose-Headers``).
EXPOSED_HEADERS = (
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Expires",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
)
#: Headers a browser may send (``Access-Control-Allow-Headers`` of a preflight): tusd's,
#: ``X-Request-ID`` among them (tus-js-client's ``addRequestId``).
ALLOWED_HEADERS = (
    "Authorization, Content-Type, Tus-Resumable, Upload-Length, Upload-Metadata, "
    "Upload-Offset, Upload-Checksum, Upload-Defer-Length, Upload-Concat, X-HTTP-Method-Override, "
    "X-Requested-With, X-Request-ID"
)
ALLOWED_METHODS = "POST, HEAD, PATCH, DELETE, OPTIONS"
#: Seconds a browser may keep a preflight's answer.
PREFLIGHT_MAX_AGE = 86400
#: Digits of the largest offset or length accepted (10**18 bytes: an exabyte). Python refuses
#: to convert more than 4300 digits, and no store would take that many bytes anyway.
MAX_DIGITS = 18


def error(name, /, headers=None, **params):
    """The catalogue's refusal ``name`` (:data:`kinto_attachment.errors.REFUSALS`), with
    ``Tus-Resumable`` and ``headers``."""
    return errors.refuse(name, headers={"Tus-Resumable": VERSION, **(headers or {})}, **params)


def response(status, **headers):
    """A bodiless tus response; ``Upload_Offset=5`` is the header ``Upload-Offset: 5``."""
    result = Response(status=status)
    result.headers["Tus-Resumable"] = VERSION
    result.headers["Cache-Control"] = "no-store"
    for name, value in headers.items():
        result.headers[name.replace("_", "-")] = str(value)
    del result.content_type
    return result


def extensions(concatenation=True):
    """The extensions offered: all of them, or all but ``concatenation`` (a store that
    cannot concatenate uploads)."""
    offered = EXTENSIONS.split(",")
    return [name for name in offered if concatenation or name != "concatenation"]


def discovery(max_size=0, preflight=False, concatenation=True):
    """The answer to ``OPTIONS``: what the server supports, and a CORS preflight's answer
    (which origin may ask is for the caller: it knows Kinto's ``cors_origins``)."""
    result = response(
        204,
        Tus_Version=VERSION,
        Tus_Extension=",".join(extensions(concatenation)),
        Tus_Checksum_Algorithm=",".join(CHECKSUMS),
    )
    if max_size:
        result.headers["Tus-Max-Size"] = str(max_size)
    if preflight:
        result.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        result.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        result.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
    return result


def http_date(msec):
    """An HTTP date (RFC 9110 §5.6.7, as ``Upload-Expires`` is) of a time in milliseconds."""
    return email.utils.formatdate(msec / 1000, usegmt=True)


def progress(offset, expires=None):
    """``Upload-Offset`` and, while the upload is unfinished, ``Upload-Expires``."""
    headers = {"Upload-Offset": offset}
    if expires is not None:
        headers["Upload-Expires"] = http_date(expires)
    return headers


def method(request_method, override):
    """The method of a request: a ``POST`` with ``X-HTTP-Method-Override`` is what that header
    says, as tus requires, for clients behind proxies that let no ``PATCH`` or ``DELETE``
    through (tus-js-client's ``overridePatchMethod``)."""
    if request_method == "POST" and override:
        return override.strip().upper()
    return request_method


def require_version(value):
    """412 unless ``Tus-Resumable`` is the version we speak (named in ``Tus-Version``)."""
    if value != VERSION:
        raise error("tus_version", version=VERSION)


def too_large(max_size):
    return error("too_large", limit=max_size)


def integer(name, value, too_long=None):
    """The non-negative integer of header ``name``; 400 if it is none, ``too_long`` (or a 400)
    if it has more than :data:`MAX_DIGITS` digits."""
    if value is None or not value.isascii() or not value.isdigit():
        raise error("not_an_integer", name=name)
    digits = value.lstrip("0")
    if len(digits) > MAX_DIGITS:
        if too_long is not None:
            raise too_long
        raise error("integer_too_long", name=name)
    return int(digits or "0")  # Leading zeros too count towards Python's 4300 digits.


def upload_length(value, defer_length=None, max_size=0):
    """The length of a creation: ``Upload-Length``, or None with ``Upload-Defer-Length: 1``
    (creation-defer-length: a later ``PATCH`` tells it). 400 with both headers, or neither,
    or another ``Upload-Defer-Length``; 413 above ``max_size`` (0: no limit)."""
    if defer_length:
        if value is not None:
            raise error("defer_length_and_length")
        if defer_length != "1":
            raise error("defer_length")
        return None
    return _length(value, max_size)


def _length(value, max_size):
    too_long = too_large(max_size) if max_size else None
    length = integer("Upload-Length", value, too_long)
    if max_size and length > max_size:
        raise too_long
    return length


def declared_length(value, length, offset, max_size=0):
    """The length of an upload after a ``PATCH`` whose ``Upload-Length`` is ``value`` (None
    when absent): ``length`` when it is known already (400 if ``value`` differs: it is set
    once); ``value`` when it was deferred (400 below ``offset``, the bytes already received;
    413 above ``max_size``); still None when deferred and not told."""
    if value is None:
        return length
    declared = _length(value, max_size)
    if length is not None and declared != length:
        raise error("length_changed", length=length)
    if declared < offset:
        raise error("length_below_offset", offset=offset)
    return declared


def upload_offset(value):
    return integer("Upload-Offset", value)


#: The ``Upload-Metadata`` keys whose values are read, as UTF-8 text.
TEXT_METADATA = ("filename", "filetype", "data", "permissions")


def metadata(header, filename=True):
    """``Upload-Metadata``: ``key base64,key base64`` as ``{key: text}``; filename required.
    Keys are printable (tus: "SHOULD be ASCII"), values base64: no NUL reaches the upload's
    state, which keeps the header as sent (PostgreSQL cannot store a NUL).

    What the values mean beyond that (``data``, ``permissions``) is for the views to check.
    Without ``filename``, none is required (a partial upload of concatenation names no file).
    """
    values = {}
    # Spaces and tabs around pairs only (``str.strip`` would take control characters too,
    # and the header is kept, and answered by ``HEAD``, as sent).
    for pair in filter(None, (p.strip(" \t") for p in (header or "").split(","))):
        key, _, encoded = pair.partition(" ")
        if not key.isprintable():
            raise error("bad_metadata", key=ascii(key))
        if not encoded.isprintable():
            raise error("bad_metadata", key=key)
        try:
            raw = base64.b64decode(encoded, validate=True)
            # tus: values may be binary. Those read here must be text; others are kept as
            # they came in the header, which HEAD answers (tuspy's metadata_encoding).
            values[key] = raw.decode("utf-8", "strict" if key in TEXT_METADATA else "replace")
        except ValueError as e:  # binascii.Error, UnicodeDecodeError, a non-ASCII value.
            raise error("bad_metadata", key=key) from e
    if filename and not values.get("filename"):
        raise error("metadata_filename")
    return values


def invalid_metadata(name, description):
    """400: the value of ``name`` in ``Upload-Metadata`` is not what it should be."""
    return error("metadata_invalid", name=name, description=description)


def checksum(header):
    """``Upload-Checksum``: ``(hash object, expected digest)``, or ``(None, None)`` without."""
    if header is None:
        return None, None
    algorithm, _, encoded = header.partition(" ")
    if algorithm not in CHECKSUMS:
        raise error("checksum_algorithm", algorithm=algorithm)
    try:
        expected = base64.b64decode(encoded, validate=True)
    except ValueError as e:  # binascii.Error, or a non-ASCII value.
        raise error("checksum_base64") from e
    hasher = CHECKSUMS[algorithm]()
    # No chunk has a digest of another size (none, say): refused before its bytes are read.
    if len(expected) != hasher.digest_size:
        raise error("checksum_base64")
    return hasher, expected


def require_chunk_type(content_type):
    if content_type != CHUNK_TYPE:
        raise error("chunk_type", chunk_type=CHUNK_TYPE)


def require_offset(offset, current):
    """409 unless a chunk starts where the upload is (told in ``Upload-Offset``)."""
    if offset != current:
        raise error("offset_conflict", offset=offset, current=current)


def require_chunk_fits(content_length, offset, length):
    """413 if a chunk's ``Content-Length`` goes past the upload's ``length`` (a chunked body,
    of unknown length, is stopped as soon as it does)."""
    if content_length is not None and offset + content_length > length:
        raise error("chunk_too_large", excess=offset + content_length - length)


def completed(length):
    """409: the upload has all its ``length`` bytes (told in ``Upload-Offset``) and takes no
    more; a client that resumes it reads the same offset with ``HEAD`` and is done."""
    return error("upload_complete", length=length)


def checksum_mismatch():
    return error("checksum_mismatch")


def unknown_upload():
    return error("unknown_upload")


def locked():
    return error("upload_locked")


def gone():
    """410: the upload's bytes are lost for good; no retry brings them back."""
    return error("upload_gone")
