"""Bytes on their way to GCS: the writer :meth:`GCSStore.stage` returns.

A file smaller than one chunk is sent at commit in a single request (a multipart upload, with
its CRC32C for GCS to verify). A larger one goes through a resumable upload session, chunk by
chunk as it arrives: the store's thread pool sends one chunk while the next fills, so memory
stays within two chunk buffers (:mod:`..parts`) per upload whatever the file size. The last
chunk carries the CRC32C of the whole file (``X-Goog-Hash``): GCS refuses to finalize the
object (400) if it received anything else.

Writes are conditional (``ifGenerationMatch=0``): an object is never overwritten. A chosen name
is looked up first and the next free variant taken (``name-1.ext``...); a single request whose
name was taken meanwhile goes to the next free one, while a session refused at its last chunk
fails (503), its bytes being gone, as a completed S3 multipart upload does. Nothing is visible
under the key before the last chunk; ``abort()`` cancels the session.
"""

import base64
import logging
import secrets

import google_crc32c
from zope.interface import implementer

from .. import IStaged, StorageUnavailable
from ..base import UPLOAD_METADATA, require_unreserved, write_to_free_name
from ..parts import PartBody, PartBuffers
from .client import checked, made_by, status_of, unavailable


logger = logging.getLogger(__name__)
#: What GCS answers to a chunk that is not the last one ("Resume Incomplete").
INCOMPLETE = 308
#: What GCS answers to a cancelled session ("Client Closed Request").
CANCELLED = 499
#: Bytes of a chunk that is not ``bytes`` copied at a time to update the CRC32C.
CRC_SLICE = 1024 * 1024


def _update(checksum, chunk):
    """Add ``chunk`` to a CRC32C: bytes as they are, anything else by copies of a bounded
    size (the C extension only reads immutable bytes)."""
    if isinstance(chunk, bytes):
        checksum.update(chunk)
        return
    view = memoryview(chunk).cast("B")
    for start in range(0, len(view), CRC_SLICE):
        checksum.update(bytes(view[start : start + CRC_SLICE]))


@implementer(IStaged)
class GCSStaged:
    """Bytes on their way to GCS. ``content_type`` None: one of the store's own objects (the
    part of a resumable upload), stored plain; else an attachment, stored with our headers."""

    def __init__(self, store, key, content_type, random=False):
        self._store = store
        self._key = key
        #: Whether the key is random, hence written at once (conditionally) without a probe.
        self._random = random
        self._content_type = content_type
        #: Two buffers per upload: the chunk in flight, the one filling.
        self._chunks = PartBuffers(store.chunk_size, self._send_chunk)
        #: Of the bytes written so far.
        self._crc32c = google_crc32c.Checksum()
        #: The resumable upload's URI, once a whole chunk has come.
        self._session = None
        #: Marks the object this upload makes (:meth:`_finalised`, :meth:`_upload_whole`).
        self._token = secrets.token_hex(16)
        self._sent = 0
        self._in_flight = None

    def write(self, chunk):
        _update(self._crc32c, chunk)
        self._chunks.write(chunk)

    def _send_chunk(self, buffer, size):
        if self._session is None:
            if not self._random:
                self._key = self._store.free_key(self._key)
            blob = self._store.new_blob(self._key, self._content_type)
            blob.metadata = {UPLOAD_METADATA: self._token}
            with unavailable("resumable upload start"):
                self._session = blob.create_resumable_upload_session(
                    content_type=blob.content_type,
                    predefined_acl=self._store.acl_for(self._content_type, self._key),
                    if_generation_match=0,
                    checksum=None,
                    timeout=self._store.timeout,
                    retry=self._store.retry,
                )
        self._wait()  # Blocks while the previous chunk is in flight: bounded memory.
        start, self._sent = self._sent, self._sent + size
        self._in_flight = self._store.executor.submit(self._send_part, buffer, start, size)

    def _send_part(self, buffer, start, size):
        try:
            self._put(memoryview(buffer)[:size], start)
        finally:
            self._chunks.recycle(buffer)

    def _wait(self):
        """Wait for the chunk in flight; raise its error."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def _put(self, view, start, total=None):
        """Send ``view`` at ``start`` of the session; with ``total``, as its last chunk, with
        the CRC32C of everything (then an empty ``view`` is allowed)."""
        end = f"{start}-{start + len(view) - 1}" if view else "*"
        headers = {"Content-Range": f"bytes {end}/{'*' if total is None else total}"}
        if total is not None:
            digest = base64.b64encode(self._crc32c.digest()).decode("ascii")
            headers["X-Goog-Hash"] = f"crc32c={digest}"
        with unavailable("resumable upload"):
            response = self._store.session.put(
                self._session,
                data=PartBody(view),
                headers=headers,
                timeout=self._store.timeout,
                allow_redirects=False,
            )
            if total is not None:
                checked(response, 200, 201)
                return
            checked(response, INCOMPLETE)
        kept = response.headers.get("Range", "")
        if kept != f"bytes=0-{start + len(view) - 1}":
            raise StorageUnavailable(f"GCS kept {kept or 'nothing'} of {start + len(view)} bytes")

    def commit(self):
        try:
            if self._session is None:
                return self._upload_whole()
            self._wait()
            require_unreserved(self._store, self._key, self._random)  # Chosen at the start.
            buffer, size = self._chunks.take()
            total = self._sent + size
            try:
                self._put(memoryview(buffer)[:size], self._sent, total=total)
            except StorageUnavailable:
                if not self._finalised(total):
                    raise
            self._session = None
            return self._key
        except BaseException:
            self.abort()
            raise

    def _finalised(self, total):
        """Whether the session made its object: ``total`` bytes, whose CRC32C is the one
        sent with the last chunk (which GCS checked), marked with this upload's token. That
        chunk's answer may be lost once the object exists under its name, which cancelling
        the session would not remove. False when GCS cannot say."""
        try:
            made = self._store.blob(self._key)
        except StorageUnavailable:
            return False
        crc32c = base64.b64encode(self._crc32c.digest()).decode("ascii")
        return made_by(made, self._token) and made.size == total and made.crc32c == crc32c

    def _upload_whole(self):
        """One conditional upload to the first free name (found without sending the body);
        again only if a concurrent upload took that name meanwhile."""
        buffer, size = self._chunks.take()  # Smaller than one chunk.
        view = memoryview(buffer)[:size]

        def upload(key):
            blob = self._store.new_blob(key, self._content_type)
            blob.metadata = {UPLOAD_METADATA: self._token}
            try:
                with unavailable("upload"):
                    blob.upload_from_file(
                        PartBody(view),
                        size=size,
                        content_type=blob.content_type,
                        predefined_acl=self._store.acl_for(self._content_type, key),
                        if_generation_match=0,
                        checksum="crc32c",
                        timeout=self._store.timeout,
                        retry=self._store.retry,
                    )
            except StorageUnavailable as e:
                if status_of(e.__cause__) == 412:  # Taken meanwhile, unless by this very
                    return made_by(self._store.blob(key), self._token)  # upload, sent again.
                raise
            return True

        return write_to_free_name(self._key, self._random, self._store.free_key, upload)

    def abort(self):
        self._chunks.take()
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.exception()  # Wait for it, not for its error, before cancelling.
        session, self._session = self._session, None
        if session is not None:
            self._cancel(session)

    def _cancel(self, session):
        """Cancel the session; if GCS cannot be told, its bytes stay in no object, and GCS
        drops the session after a week."""
        try:
            with unavailable("resumable upload cancel"):
                checked(
                    self._store.session.delete(session, timeout=self._store.timeout),
                    CANCELLED,
                    204,
                )
        except StorageUnavailable as e:
            logger.warning("Could not cancel the GCS upload of %r: %s", self._key, e)
