"""Bytes on their way to S3: the writer :meth:`S3Store.stage` returns.

A file smaller than one part is sent with a single ``PutObject`` at commit; a larger one through
a multipart upload whose parts are sent by the store's thread pool, at most ``concurrency``
parts of an upload in flight. Parts are gathered in the buffers of :mod:`..parts`: memory stays
within ``part_size × (concurrency + 1)`` per upload whatever the file size. (S3 takes at most
10,000 parts: settings cap the size of files accordingly.)
Nothing is visible under the key until the upload completes; ``abort()`` aborts the multipart
upload so that no object and no parts remain.

The same writer continues the multipart upload of a resumable upload (see
:mod:`.resumable`).
"""

import threading

from zope.interface import implementer

from .. import IStaged, StorageUnavailable
from ..base import require_unreserved, write_to_free_name
from ..parts import PartBody, PartBuffers
from .client import error_code, lost, unavailable
from .parts import checksum, completed, crc32, local_part


@implementer(IStaged)
class S3Staged:
    """Bytes on their way to S3; with ``resumed`` (the state of a resumable upload), the
    continuation of its multipart upload, which ``abort()`` then leaves alone.

    When a part of a continuation fails and the object at its key carries the upload's
    token, an earlier request completed the multipart upload (a finish whose transaction
    failed): the continuation is then ``closed`` (or starts so, from a state that says it
    is), and its parts are only hashed as S3 would have (MD5, SHA-256), for
    :meth:`S3Store.finish` to recognise that object, instead of being sent.
    """

    def __init__(self, store, key, content_type, resumed=None, random=False):
        self._store = store
        self._key = key
        #: Whether the key is random, hence written at once (conditionally) without a probe.
        self._random = random
        self._content_type = content_type or "application/octet-stream"
        #: At most ``concurrency + 1`` buffers per upload: those in flight, the one filling.
        self._parts = PartBuffers(store.part_size, self._send_part)
        self._resumed = resumed
        #: A resumable upload's parts carry SHA-256: a retried finish recognises the object
        #: it completed by the composite SHA-256 of its parts (:mod:`.resumable`). Other
        #: uploads' carry CRC32, which costs a fraction of it here and on the S3 side.
        self._algorithm = "SHA256" if resumed else "CRC32"
        self._upload_id = resumed["upload_id"] if resumed else None
        self._previous_parts = list(resumed["parts"]) if resumed else []
        self._futures = []
        self._slots = threading.BoundedSemaphore(store.concurrency)
        self.closed = bool(resumed and resumed.get("closed"))
        #: Why the object at the key is not the upload's, once a failed part made us look.
        self._not_ours = None
        self._looking = threading.Lock()

    def write(self, chunk):
        self._parts.write(chunk)

    def _send_part(self, buffer, size):
        if self._upload_id is None:
            if not self._random:
                self._key = self._store.free_key(self._key)
            self._upload_id = self._store.create_upload(
                self._key, self._content_type, checksum=self._algorithm
            )
        self._raise_failed_parts()
        # Blocks while `concurrency` parts of this upload are in flight: bounded memory.
        self._slots.acquire()
        number = len(self._previous_parts) + len(self._futures) + 1
        future = self._store.executor.submit(self._upload_part, number, memoryview(buffer)[:size])

        def done(_):
            self._parts.recycle(buffer)
            self._slots.release()

        future.add_done_callback(done)
        self._futures.append(future)

    def _upload_part(self, number, view):
        value = checksum(view) if self._algorithm == "SHA256" else crc32(view)
        if self.closed:  # Only continuations close: their parts carry SHA-256.
            return local_part(number, view, value)
        field = f"Checksum{self._algorithm}"
        try:
            with unavailable("UploadPart"):
                response = self._store.client.upload_part(
                    Bucket=self._store.bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=PartBody(view),
                    ContentLength=len(view),
                    ChecksumAlgorithm=self._algorithm,
                    **{field: value},
                )
        except StorageUnavailable as e:
            if not self.completed_before(e):
                raise
            return local_part(number, view, value)
        return {"PartNumber": number, "ETag": response["ETag"], field: value, "Size": len(view)}

    def completed_before(self, error):
        """After ``error`` on the multipart upload of a continuation: whether an earlier
        request completed it (the object at the key carries the upload's token), which
        closes this continuation. ``FileNotFoundError`` when S3 says there is no such upload
        and no such object: aborted, the bytes it had are lost. One HeadObject at most."""
        if self._resumed is None:
            return False
        with self._looking:  # Parts in flight may fail together.
            if not self.closed and self._not_ours is None:
                self._not_ours = self._store.not_ours(self._resumed)
                self.closed = self._not_ours is None
        if self.closed:
            return True
        if error_code(error.__cause__) == "NoSuchUpload":
            raise lost(self._resumed, self._not_ours) from error
        return False

    def _raise_failed_parts(self):
        for future in self._futures:
            if future.done() and future.exception():
                raise future.exception()

    def flush(self):
        """Wait for the parts sent; return all the upload's parts and the unsent bytes."""
        parts = self._previous_parts + [future.result() for future in self._futures]
        buffer, size = self._parts.take()
        return parts, bytes(memoryview(buffer)[:size])

    def commit(self):
        try:
            if self._upload_id is None:
                return self._put_whole()
            return self.complete(self.send_rest())
        except BaseException:
            self.abort()
            raise

    def send_rest(self):
        """Send what is left as the last part, wait for all; return all the upload's parts."""
        if self._parts.filled or not (self._futures or self._previous_parts):
            self._send_part(*self._parts.take())
        parts, _ = self.flush()
        return parts

    def complete(self, parts):
        """Complete the multipart upload from ``parts``; return the key
        (:class:`~kinto_attachment.storage.base.NameReserved` if its name was reserved since
        the upload began)."""
        require_unreserved(self._store, self._key, self._random)
        with unavailable("CompleteMultipartUpload"):
            self._store.client.complete_multipart_upload(
                Bucket=self._store.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": [completed(part) for part in parts]},
                IfNoneMatch="*",
            )
        return self._key

    def _put_whole(self):
        """One conditional PutObject to the first free name (found without sending the
        body); again only if a concurrent upload took that name meanwhile."""
        buffer, size = self._parts.take()  # Smaller than one part.
        data = memoryview(buffer)[:size]

        def put(key):
            try:
                with unavailable("PutObject"):
                    self._store.client.put_object(
                        Key=key,
                        Body=PartBody(data),
                        ContentLength=size,
                        ChecksumSHA256=checksum(data),
                        IfNoneMatch="*",
                        **self._store.object_args(self._content_type, key),
                    )
            except StorageUnavailable as e:
                if error_code(e.__cause__) == "PreconditionFailed":
                    return False  # Taken meanwhile.
                raise
            return True

        return write_to_free_name(self._key, self._random, self._store.free_key, put)

    def abort(self):
        self._parts.take()
        for future in self._futures:
            future.cancel()
        for future in self._futures:
            if not future.cancelled():
                future.exception()  # Wait for parts in flight before aborting.
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None and self._resumed is None:
            self._store.abort_upload(self._key, upload_id)
