"""Media types: those clients declare, parsed strictly, and those we let browsers show.

A declared type is only ever stored as parsed (:func:`parse_media_type`), and a download is
only shown inline by a browser when its type is one of :data:`INLINE_TYPES`: the rest is
saved, never rendered in the API's origin. :func:`content_disposition` says so to the
client: responses and the stores' signed URLs (S3, GCS) both use it.
"""

import posixpath
import re
import unicodedata
from urllib.parse import quote


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
#: RFC 9110 §8.3.1: ``type "/" subtype *( OWS ";" OWS [ parameter ] )``, written so that
#: each space has one place to go: the OWS after a ``;`` is read with its parameter only, else
#: by the next ``;``'s (a regex that could read it either way backtracked exponentially on
#: ``a/b; ; ; ...`` followed by a stray character: 55 bytes held a worker for seconds).
_MEDIA_TYPE = re.compile(
    rf"(?P<type>{_TOKEN})/(?P<subtype>{_TOKEN})"
    rf"(?:[ \t]*;(?:[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))?)*[ \t]*"
)


def parse_media_type(value):
    """``type/subtype`` (lowercase, without parameters) of a media type written as RFC 9110
    says (§8.3.1: tokens, then ``;`` parameters); None for anything else.

    Lists (``text/plain,text/html``), control characters and stray characters make a value
    invalid as a whole: a browser could read another type in it than the one we would check.
    """
    match = _MEDIA_TYPE.fullmatch((value or "").strip(" \t"))
    if match is None:
        return None
    return f"{match['type']}/{match['subtype']}".lower()


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


#: The longest parameters kept with a declared type (a ``charset``, a ``boundary``...).
MAX_PARAMETERS = 256


def with_parameters(value):
    """A declared media type as stored for ``/data/files``: ``type/subtype`` lowercase and
    its parameters as written (``multipart/mixed; boundary=XyZ``: without them such a file
    cannot be read back), when the whole value is valid (:func:`parse_media_type`); without
    parameters past :data:`MAX_PARAMETERS` characters or not ASCII; None when it is not
    valid."""
    essence = parse_media_type(value)
    if essence is None:
        return None
    _, _, parameters = value.strip(" \t").partition(";")
    parameters = parameters.strip(" \t")
    # ASCII only: S3 signs a header as UTF-8 and sends it as Latin-1 (a refusal, a 503).
    if not parameters or len(parameters) > MAX_PARAMETERS or not parameters.isascii():
        return essence
    return f"{essence}; {parameters}"


def served_type(mimetype):
    """The ``Content-Type`` to send for a stored type: as stored (with the parameters
    :func:`with_parameters` keeps) when it is a valid media type, else
    ``application/octet-stream`` (invalid types stored by older versions)."""
    return with_parameters(mimetype) or "application/octet-stream"


def is_inline(mimetype):
    """Whether ``mimetype`` is one of :data:`INLINE_TYPES`."""
    essence = parse_media_type(mimetype)
    if essence is None:
        return False
    return essence in INLINE_TYPES or f"{essence.split('/')[0]}/*" in INLINE_TYPES


#: UTF-8 bytes of the name a ``Content-Disposition`` gives: a longer one is shortened in its
#: stem. Percent-encoded (up to 3 bytes a byte), then again in a signed URL's query, a name of
#: 1,000 letters made a head of 7 KiB to 200 KiB, past what proxies read (nginx's
#: ``proxy_buffer_size``, 4 KiB: a ``502`` for every reader).
DISPOSITION_NAME_BYTES = 200
#: The longest extension kept whole when a name is shortened.
DISPOSITION_EXTENSION_BYTES = 16


#: The same in a signed URL (``response-content-disposition``), where it is percent-encoded
#: once more, beside the credentials' session token.
SIGNED_NAME_BYTES = 100


def content_disposition(filename, mimetype, inline=True, name_bytes=DISPOSITION_NAME_BYTES):
    """RFC 6266: an ASCII ``filename`` for old clients, the exact one in ``filename*``
    (shortened past ``name_bytes``).

    ``attachment`` unless ``inline`` is asked and the type is one of :data:`INLINE_TYPES`.
    """
    kind = "inline" if inline and is_inline(mimetype) else "attachment"
    # A lone surrogate (a name some JSON parsers let through) has no UTF-8: a "?" instead.
    filename = _shortened(filename.encode("utf-8", "replace").decode("utf-8"), name_bytes)
    fallback = re.sub(r'[^\x20-\x7e]|["\\%]', "_", filename) or "file"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _shortened(filename, name_bytes=DISPOSITION_NAME_BYTES):
    """``filename`` within ``name_bytes``, its stem cut (between characters, never between a
    letter and its accents, nor inside an emoji sequence), its extension kept (unless longer
    than :data:`DISPOSITION_EXTENSION_BYTES`)."""
    if _utf8_size(filename) <= name_bytes:
        return filename
    stem, extension = posixpath.splitext(filename)
    if _utf8_size(extension) > DISPOSITION_EXTENSION_BYTES:
        stem, extension = filename, ""
    budget, kept = name_bytes - _utf8_size(extension), 0
    for character in stem:
        budget -= _utf8_size(character)
        if budget < 0:
            break
        kept += 1
    # The next character belongs to the last one kept (or a joiner ends it): both go.
    while kept and (_joins(stem[kept : kept + 1]) or stem[kept - 1] == "\u200d"):
        kept -= 1
    return stem[:kept] + extension


def _utf8_size(text):
    return len(text.encode("utf-8"))


def _joins(character):
    """Whether ``character`` belongs with the one before it: a combining mark (an accent of
    a decomposed letter), a zero-width joiner, a variation selector."""
    return bool(character) and (
        unicodedata.combining(character) > 0 or character in "\u200d\ufe0e\ufe0f"
    )
