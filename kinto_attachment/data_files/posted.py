"""What a ``POST /data/files`` declares besides its body: the id (``?id=``), the lifetime
(``?ttl=``), the name (``Content-Disposition``), the type (``Content-Type``) and the length
to hold in the transfer budget; each checked, or refused with a Kinto JSON error."""

import email.message
import email.utils
import logging
import posixpath

from .. import errors
from ..state import data_file_entries, instance
from ..storage.keys import safe_name
from ..uploads import intake
from ..web import media_types, streams


logger = logging.getLogger(__name__)

#: What an upload of unknown length reserves in the transfer budget (as SlimFaas does).
UNKNOWN_LENGTH_RESERVATION = 20 * 1024 * 1024
#: What ``curl --data-binary`` sends when not told a type: it says nothing of the content.
CURL_DEFAULT_TYPE = "application/x-www-form-urlencoded"
#: The largest 64-bit integer, what SlimFaas's ``long`` holds: the largest ``ttl`` (19 digits
#: at most), and what it clamps an expiry to.
INT64_MAX = 2**63 - 1
#: A ``ttl`` past a century is none (SlimFaas clamps what overflows its expiry to "never";
#: clients pass ``Number.MAX_SAFE_INTEGER`` or ``long.MaxValue`` to mean that).
FOREVER_TTL = 100 * 365 * 86400 * 1000


def _invalid(name, description):
    return errors.refuse(
        "invalid_parameter", location="querystring", name=name, description=description
    )


def requested_id(request):
    file_id = request.GET.get("id") or data_file_entries.new_id()
    if not data_file_entries.valid_id(file_id):
        raise _invalid("id", "letters, digits, '.', '_' and '-' only, 128 at most.")
    return file_id


def ttl(request):
    """The lifetime asked for, in milliseconds (None: no end, or over :data:`FOREVER_TTL`).
    It starts once the file is stored, not when its request began: a body slower to come
    than its ``ttl`` would be acknowledged already expired."""
    ttl = request.GET.get("ttl")
    if ttl is None:
        return None
    # Bounded before int(): Python refuses to convert more than 4300 digits (a 500).
    if not ttl.isascii() or not ttl.isdigit() or len(ttl) > 19 or not 0 < int(ttl) <= INT64_MAX:
        raise _invalid("ttl", f"a positive number of milliseconds, {INT64_MAX} at most.")
    return None if int(ttl) > FOREVER_TTL else int(ttl)


#: The longest ``Content-Disposition`` read: a filename of 255 bytes takes 765 characters
#: percent-encoded; the email package's parsing of a longer one takes time that grows with
#: its square (seconds of CPU for 120 KB, the whole process stalled meanwhile).
MAX_DISPOSITION = 8192


def filename_of(request, file_id):
    """The filename of ``Content-Disposition`` (RFC 6266, ``filename*`` too), or the id."""
    header = request.headers.get("Content-Disposition")
    if not header:
        return file_id
    if len(header) > MAX_DISPOSITION:
        raise errors.refuse(
            "invalid_parameter",
            location="headers",
            name="Content-Disposition",
            description=f"{MAX_DISPOSITION} characters at most.",
        )
    message = email.message.Message()
    message["Content-Disposition"] = header
    names = [v for k, v in message.get_params([], header="content-disposition") if k == "filename"]
    # ``filename*`` (decoded by the email package into a tuple) wins over ``filename``.
    names.sort(key=lambda value: not isinstance(value, tuple))
    for value in names:
        try:
            name = email.utils.collapse_rfc2231_value(value)
        except (LookupError, UnicodeError, ValueError, TypeError):
            continue  # A charset that is unknown or cannot decode it: try the next one.
        # Control characters (NUL: PostgreSQL refuses it in JSON) are no part of a name.
        name = "".join(c for c in name if c.isprintable() or c == " ")
        name = posixpath.basename(name.replace("\\", "/"))
        if name:
            return name
    return file_id


def reservation(request, max_size):
    length = streams.declared_length(request)
    if length is None:
        if request.registry.attachment_settings.data_files.require_content_length:
            raise errors.refuse("length_required")
        logger.warning("Upload of unknown length: reserving %s bytes", UNKNOWN_LENGTH_RESERVATION)
        return UNKNOWN_LENGTH_RESERVATION
    if max_size and length > max_size:
        raise errors.refuse("too_large", limit=max_size)
    return length


def plan(request, file_id, max_size):
    """The :class:`~kinto_attachment.uploads.intake.Plan` of a raw body: a random key under
    :data:`~kinto_attachment.state.data_file_entries.KEY_FOLDER` with the name's extension,
    and the declared type as parsed, parameters kept (an invalid type is no type; curl's
    default says nothing either)."""
    filename = filename_of(request, file_id)
    declared = request.headers.get("Content-Type")
    mimetype = media_types.with_parameters(declared)
    if media_types.parse_media_type(declared) in (None, CURL_DEFAULT_TYPE):
        mimetype = "application/octet-stream"
    extension = posixpath.splitext(safe_name(filename))[1]
    key = f"{data_file_entries.KEY_FOLDER}/{instance.random_name(request.registry)}{extension}"
    return intake.Plan(key, filename, mimetype, max_size, random=True)
