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
import uuid
from datetime import UTC, datetime

from . import errors
from .storage import join_key, safe_name


GENERIC_TYPES = ("", "application/octet-stream")
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
        raise errors.storage_failed() from e


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


def resolve_mimetype(policy, filename, declared):
    """Configured type for the extension, else the client's, else a guess from the name."""
    extension = extension_of(filename)
    if extension in policy.mimetypes:
        return policy.mimetypes[extension]
    declared = (declared or "").split(";")[0].strip().lower()
    if declared not in GENERIC_TYPES:
        return declared
    return mimetypes.guess_type(filename, strict=False)[0] or "application/octet-stream"


def blob_key(policy, bucket_id, collection_id, record_id, filename):
    """Where a new file goes: ``folder/`` + a random name or ``filename_pattern``."""
    if policy.randomize:
        name = uuid.uuid4().hex + extension_of(safe_name(filename))
    else:
        name = policy.filename_pattern.format(
            datetime=datetime.now(UTC).strftime("%Y%m%d%H%M%S%f"),
            rid=record_id,
            filename=safe_name(filename),
        )
    return join_key(policy.folder_for(bucket_id, collection_id), safe_name(name))


class Intake:
    """One file's bytes on their way into the store."""

    def __init__(self, store, key, filename, mimetype, max_size=0):
        self.filename = filename
        self.mimetype = mimetype
        self.max_size = max_size
        self.size = 0
        self._sha256 = hashlib.sha256()
        with store_errors():
            self._staged = store.stage(key, mimetype)

    def write(self, chunk):
        self.size += len(chunk)
        if self.max_size and self.size > self.max_size:
            raise errors.too_large(self.max_size)
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
        raise errors.invalid("attachment", "Filename is required.")
    if not policy.allows_extension(extension_of(filename).lstrip(".")):
        raise errors.invalid("attachment", "File extension is not allowed.")


def for_attachment(store, policy, ids, filename, declared_type=None):
    """An Intake for a record's attachment, once its name passes the collection's policy."""
    check_name(policy, filename)
    key = blob_key(policy, *ids, filename)
    mimetype = resolve_mimetype(policy, filename, declared_type)
    return Intake(store, key, filename, mimetype, policy.max_size_bytes)


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
