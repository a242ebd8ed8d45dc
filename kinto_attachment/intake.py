"""The upload pipeline shared by every entry point: a byte stream in, a stored blob out.

An :class:`Intake` sees each byte of a file once: it counts it, hashes it and hands it to the
backend's staged writer, refusing as soon as the size limit is crossed. Nothing here holds more
than the chunk it is given. The blob only becomes visible under a key on :meth:`Intake.commit`;
any error before that calls :meth:`Intake.abort`, which leaves nothing behind.
"""

import contextlib
import dataclasses
import hashlib
import logging
import mimetypes
import posixpath
import re
import uuid
from datetime import UTC, datetime

from . import errors
from .storage import join_key, safe_name


GENERIC_TYPES = ("", "application/octet-stream")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
#: RFC 9110 §8.3.1: ``type "/" subtype *( OWS ";" OWS [ parameter ] )``.
_MEDIA_TYPE = re.compile(
    rf"(?P<type>{_TOKEN})/(?P<subtype>{_TOKEN})"
    rf"(?:[ \t]*;[ \t]*(?:{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))?)*"
)
#: Bytes read from a request body at a time.
CHUNK_SIZE = 1024 * 1024

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def store_errors():
    """Report a failing store (disk full, permissions, network) as a 503, not a 500."""
    try:
        yield
    except OSError as e:
        logger.exception("Attachment storage failed")
        raise errors.refuse("storage_failed") from e


@dataclasses.dataclass(frozen=True)
class Blob:
    """A committed file and the metadata written onto its record."""

    key: str
    filename: str
    hash: str
    size: int
    mimetype: str

    def attachment(self, location):
        """The record's ``attachment`` field, as kinto-attachment writes it."""
        return {
            "filename": self.filename,
            "hash": self.hash,
            "location": location,
            "mimetype": self.mimetype,
            "size": self.size,
        }


def extension_of(filename):
    return posixpath.splitext(filename)[1].lower()


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


def resolve_mimetype(policy, filename, declared):
    """Configured type for the extension, else the client's, else a guess from the name.

    A declared type that is not a valid media type is ignored, as if none had been sent
    (guessed from the name: friendlier than a 400 for clients that send junk); it is never
    stored as sent.
    """
    extension = extension_of(filename)
    if extension in policy.mimetypes:
        return policy.mimetypes[extension]
    declared = parse_media_type(declared) or ""
    if declared not in GENERIC_TYPES:
        return declared
    return mimetypes.guess_type(filename, strict=False)[0] or "application/octet-stream"


def blob_key(policy, bucket_id, collection_id, record_id, filename):
    """Where a new file goes: ``folder/`` + a random name or ``filename_pattern``.

    400 unless the stored name's extension is allowed too: it is the one a web server or a
    bucket types the file by, and it may differ from the client's (sanitised, shortened).
    """
    if policy.randomize:
        name = uuid.uuid4().hex + extension_of(safe_name(filename))
    else:
        name = policy.filename_pattern.format(
            datetime=datetime.now(UTC).strftime("%Y%m%d%H%M%S%f"),
            rid=record_id,
            filename=safe_name(filename),
        )
    name = safe_name(name)
    _check_extension(policy, name)
    return join_key(policy.folder_for(bucket_id, collection_id), name)


class Intake:
    """One file's bytes on their way into the store."""

    def __init__(self, store, key, filename, mimetype, max_size=0, random=False):
        self.filename = filename
        self.mimetype = mimetype
        self.max_size = max_size
        self.size = 0
        self._sha256 = hashlib.sha256()
        with store_errors():
            self._staged = store.stage(key, mimetype, random=random)

    def write(self, chunk):
        self.size += len(chunk)
        if self.max_size and self.size > self.max_size:
            raise errors.refuse("too_large", limit=self.max_size)
        self._sha256.update(chunk)
        with store_errors():
            self._staged.write(chunk)

    def commit(self):
        with store_errors():
            key = self._staged.commit()
        return Blob(key, self.filename, self._sha256.hexdigest(), self.size, self.mimetype)

    def abort(self):
        self._staged.abort()


def check_name(policy, filename):
    """400 unless an attachment may have this name under the collection's policy."""
    if not filename:
        raise errors.refuse(
            "invalid_posted_data", name="attachment", description="Filename is required."
        )
    _check_extension(policy, filename)
    _check_extension(policy, safe_name(filename))


def _check_extension(policy, name):
    if not policy.allows_extension(extension_of(name).lstrip(".")):
        raise errors.refuse(
            "invalid_posted_data", name="attachment", description="File extension is not allowed."
        )


def for_attachment(store, policy, ids, filename, declared_type=None):
    """An Intake for a record's attachment, once its name passes the collection's policy."""
    check_name(policy, filename)
    key = blob_key(policy, *ids, filename)
    mimetype = resolve_mimetype(policy, filename, declared_type)
    return Intake(store, key, filename, mimetype, policy.max_size_bytes, policy.randomize)


def read_chunks(stream, length, chunk_size=CHUNK_SIZE):
    """The body by chunks: ``length`` bytes, or until EOF when None (or the stream ends)."""
    remaining = length
    while remaining is None or remaining > 0:
        size = chunk_size if remaining is None else min(chunk_size, remaining)
        chunk = stream.read(size)
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def pump(stream, length, write, chunk_size=CHUNK_SIZE):
    """Hand the body to ``write`` by chunks; return how many bytes were read (fewer than
    ``length`` if the stream ended early)."""
    total = 0
    for chunk in read_chunks(stream, length, chunk_size):
        total += len(chunk)
        write(chunk)
    return total
