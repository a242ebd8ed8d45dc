"""Blobs as objects in an S3 bucket (AWS, MinIO, Ceph, R2... any S3-compatible store).

Bytes go to S3 as they arrive. A file smaller than one part is sent with a single ``PutObject``
at commit; a larger one through a multipart upload whose parts are sent by a process-wide
thread pool, at most ``concurrency`` parts of an upload in flight. Parts are gathered in
anonymous memory maps, reused from part to part and unmapped with the upload: memory stays
within ``part_size × (concurrency + 1)`` per upload whatever the file size, and goes back to the
system afterwards instead of fragmenting the heap. (S3 takes at most 10,000 parts: settings
cap the size of files accordingly.)
Nothing is visible under the key until the upload completes; ``abort()`` aborts the multipart
upload so that no object and no parts remain.

Objects are never overwritten: writes are conditional (``If-None-Match: *``); a taken key gets
the next ``name-N.ext`` variant, as on local disk. S3 verifies each request body against its
SHA-256 checksum, sent with every part and every single-request upload.
"""

import base64
import contextlib
import hashlib
import io
import itertools
import logging
import mmap
import posixpath
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from zope.interface import implementer

from ..downloads import content_disposition, is_inline, served_type
from . import (
    IBlobStore,
    IListableStore,
    IResumableStore,
    IStaged,
    Listed,
    Pending,
    Progress,
    Stat,
    StorageUnavailable,
    StoreBase,
    blob_url,
    key_variants,
)
from .s3_options import MIN_PART_SIZE


logger = logging.getLogger(__name__)

#: S3 accepts at most 1000 keys per DeleteObjects request.
DELETE_BATCH = 1000
#: Prefix of the tails of resumable uploads in progress.
RESUMABLE_FOLDER = "__uploads__"
#: Object metadata naming the resumable upload an object was completed from (its token).
UPLOAD_METADATA = "kinto-attachment-upload"
#: Conditional PutObjects of one small blob, each to the first free name found, before giving
#: up (503): only requests racing for the same names make it retry.
PUT_ATTEMPTS = 5


def _checksum(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _local_part(number, view, checksum):
    """A part of a multipart upload that is no longer open, described as S3 would have:
    its ETag is the MD5 of its bytes."""
    etag = hashlib.md5(view, usedforsecurity=False).hexdigest()
    return {
        "PartNumber": number,
        "ETag": f'"{etag}"',
        "ChecksumSHA256": checksum,
        "Size": len(view),
    }


def _multipart_etag(parts):
    """The ETag S3 gives the object completed from ``parts``: the MD5 of their MD5s, ``-N``."""
    try:
        digests = b"".join(bytes.fromhex(part["ETag"].strip('"')) for part in parts)
    except ValueError:  # Not MD5s (SSE-KMS...): nothing to compare with.
        return None
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(parts)}"


def _composite_checksum(parts):
    """The SHA-256 checksum S3 gives the object completed from ``parts`` (without ``-N``)."""
    digests = b"".join(base64.b64decode(part["ChecksumSHA256"]) for part in parts)
    return _checksum(digests)


class PartBody(io.RawIOBase):
    """A seekable file over a view of a part buffer: sent without a copy into bytes.

    botocore reads request bodies as files (and rewinds them to retry), so a part is handed over
    as a view of the buffer it was gathered in.
    """

    def __init__(self, view):
        self._view = view
        self._position = 0

    def __len__(self):
        return len(self._view)

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._position

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self)}[whence]
        self._position = min(max(0, base + offset), len(self))
        return self._position

    def readinto(self, buffer):
        target = memoryview(buffer).cast("B")
        count = min(len(target), len(self) - self._position)
        target[:count] = self._view[self._position : self._position + count]
        self._position += count
        return count


def _error_code(error):
    return error.response.get("Error", {}).get("Code") if isinstance(error, ClientError) else None


@contextlib.contextmanager
def _unavailable(action):
    """Turn boto errors into :class:`StorageUnavailable`, which the views answer with a 503."""
    try:
        yield
    except (BotoCoreError, ClientError) as error:
        code = _error_code(error)
        raise StorageUnavailable(f"S3 {action} failed: {code or error}") from error


def make_client(options):
    """The process's one S3 client (boto3 clients are thread-safe)."""
    config = Config(
        signature_version="s3v4",  # Presigned URLs too (botocore may still pick SigV2).
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        retries={"max_attempts": options.max_attempts, "mode": "standard"},
        s3={"addressing_style": "path" if options.use_path_style else "auto"},
        max_pool_connections=max(10, options.concurrency * 4),
        # Checksums are ours (SHA-256); botocore's default CRC32 would compute a second one.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=options.endpoint_url or None,
        region_name=options.region or None,
        aws_access_key_id=options.access_key or None,
        aws_secret_access_key=options.secret_key or None,
        config=config,
    )


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
        #: The part being filled, and how much of it is.
        self._buffer = None
        self._filled = 0
        #: Buffers of parts sent, to fill again: at most ``concurrency + 1`` per upload.
        self._spare = []
        self._resumed = resumed
        self._upload_id = resumed["upload_id"] if resumed else None
        self._previous_parts = list(resumed["parts"]) if resumed else []
        self._futures = []
        self._slots = threading.BoundedSemaphore(store.concurrency)
        self.closed = bool(resumed and resumed.get("closed"))
        #: Why the object at the key is not the upload's, once a failed part made us look.
        self._not_ours = None
        self._looking = threading.Lock()

    def write(self, chunk):
        """Copy ``chunk`` into part buffers. One copy buys a fixed footprint: keeping views on
        the chunks instead would hold every chunk a part straddles, and leave the heap to
        recycle them."""
        view = memoryview(chunk).cast("B")
        part_size = self._store.part_size
        while view:
            if self._buffer is None:
                self._buffer = self._spare.pop() if self._spare else mmap.mmap(-1, part_size)
            count = min(part_size - self._filled, len(view))
            self._buffer[self._filled : self._filled + count] = view[:count]
            self._filled += count
            view = view[count:]
            if self._filled == part_size:
                self._send_part(*self._take_pending())

    def _take_pending(self):
        """The buffer being filled and its size; the next write starts a new part."""
        taken = (self._buffer or bytearray(), self._filled)
        self._buffer, self._filled = None, 0
        return taken

    def _send_part(self, buffer, size):
        if self._upload_id is None:
            if not self._random:
                self._key = self._store.free_key(self._key)
            with _unavailable("CreateMultipartUpload"):
                self._upload_id = self._store.create_upload(self._key, self._content_type)
        self._raise_failed_parts()
        # Blocks while `concurrency` parts of this upload are in flight: bounded memory.
        self._slots.acquire()
        number = len(self._previous_parts) + len(self._futures) + 1
        future = self._store.executor.submit(self._upload_part, number, memoryview(buffer)[:size])

        def done(_):
            self._spare.append(buffer)
            self._slots.release()

        future.add_done_callback(done)
        self._futures.append(future)

    def _upload_part(self, number, view):
        checksum = _checksum(view)
        if self.closed:
            return _local_part(number, view, checksum)
        try:
            with _unavailable("UploadPart"):
                response = self._store.client.upload_part(
                    Bucket=self._store.bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=PartBody(view),
                    ContentLength=len(view),
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )
        except StorageUnavailable as e:
            if not self.completed_before(e):
                raise
            return _local_part(number, view, checksum)
        return {
            "PartNumber": number,
            "ETag": response["ETag"],
            "ChecksumSHA256": checksum,
            "Size": len(view),
        }

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
        if _error_code(error.__cause__) == "NoSuchUpload":
            raise _lost(self._resumed, self._not_ours) from error
        return False

    def _raise_failed_parts(self):
        for future in self._futures:
            if future.done() and future.exception():
                raise future.exception()

    def flush(self):
        """Wait for the parts sent; return all the upload's parts and the unsent bytes."""
        parts = self._previous_parts + [future.result() for future in self._futures]
        buffer, size = self._take_pending()
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
        if self._filled or not (self._futures or self._previous_parts):
            self._send_part(*self._take_pending())
        parts, _ = self.flush()
        return parts

    def complete(self, parts):
        """Complete the multipart upload from ``parts``; return the key."""
        with _unavailable("CompleteMultipartUpload"):
            self._store.client.complete_multipart_upload(
                Bucket=self._store.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": [_completed(part) for part in parts]},
                IfNoneMatch="*",
            )
        return self._key

    def _put_whole(self):
        """One conditional PutObject to the first free name (found without sending the
        body); again only if a concurrent upload took that name meanwhile."""
        buffer, size = self._take_pending()  # Smaller than one part.
        data = memoryview(buffer)[:size]
        for attempt in range(PUT_ATTEMPTS):
            # A random key is tried as it is; a taken one (or a chosen name) looks first.
            fresh = self._random and attempt == 0
            key = self._key if fresh else self._store.free_key(self._key)
            try:
                with _unavailable("PutObject"):
                    self._store.client.put_object(
                        Key=key,
                        Body=PartBody(data),
                        ContentLength=size,
                        ChecksumSHA256=_checksum(data),
                        IfNoneMatch="*",
                        **self._store.object_args(self._content_type),
                    )
            except StorageUnavailable as e:
                if _error_code(e.__cause__) == "PreconditionFailed":
                    continue  # Taken meanwhile: look for a free name again.
                raise
            return key
        raise StorageUnavailable(f"S3 PutObject failed: no free name for {self._key!r}")

    def abort(self):
        self._take_pending()
        for future in self._futures:
            future.cancel()
        for future in self._futures:
            if not future.cancelled():
                future.exception()  # Wait for parts in flight before aborting.
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None and self._resumed is None:
            self._store.abort_upload(self._key, upload_id)


def _lost(state, why):
    return FileNotFoundError(
        f"S3 upload {state['upload_id']} of {state['key']} is lost: its object is {why}"
    )


def _completed(part):
    """A part as CompleteMultipartUpload takes it (without our ``Size``)."""
    return {k: part[k] for k in ("PartNumber", "ETag", "ChecksumSHA256")}


@implementer(IBlobStore, IResumableStore, IListableStore)
class S3Store(StoreBase):
    def __init__(
        self,
        client,
        bucket,
        *,
        part_size,
        concurrency,
        base_url="",
        acl="",
        cache_control="",
    ):
        self.client = client
        self.bucket = bucket
        self.base_url = base_url
        self.acl = acl
        self.cache_control = cache_control
        self.part_size = max(part_size, MIN_PART_SIZE)
        self.concurrency = concurrency
        self.executor = ThreadPoolExecutor(
            max_workers=max(8, concurrency * 4), thread_name_prefix="attachment-s3"
        )
        #: Multipart uploads whose abort failed (S3 unreachable), retried at the next stage().
        self._unaborted = set()
        self._lock = threading.Lock()

    @classmethod
    def from_options(cls, options, *, base_url=""):
        """The store :class:`~.s3_options.S3Options` describe, with its own client."""
        return cls(
            make_client(options),
            options.bucket_name,
            base_url=base_url,
            acl=options.acl,
            cache_control=options.cache_control,
            part_size=options.part_size,
            concurrency=options.concurrency,
        )

    def stage(self, key, content_type=None, random=False):
        self._retry_aborts()
        return S3Staged(self, key, content_type, random=random)

    def object_args(self, content_type):
        """Arguments of every request creating an object. A type not served inline is
        stored with ``Content-Disposition: attachment``, so that the bucket's own URL does
        not render it either."""
        args = {"Bucket": self.bucket, "ContentType": served_type(content_type)}
        if not is_inline(content_type):
            args["ContentDisposition"] = "attachment"
        if self.acl:
            args["ACL"] = self.acl
        if self.cache_control:
            args["CacheControl"] = self.cache_control
        return args

    def create_upload(self, key, content_type, metadata=None):
        args = self.object_args(content_type)
        if metadata:
            args["Metadata"] = metadata
        with _unavailable("CreateMultipartUpload"):
            return self.client.create_multipart_upload(
                Key=key, ChecksumAlgorithm="SHA256", **args
            )["UploadId"]

    # Resumable uploads: a multipart upload, plus the bytes not yet making a whole part (the
    # tail) in an object of their own, a new one after each request so that the recorded
    # state always names a tail with exactly the bytes it expects.
    #
    # Finishing completes the multipart upload before the caller's transaction commits, and a
    # completed upload cannot be reopened. So the object is not deleted if that transaction
    # fails (``Progress.created`` does not list it): the upload is still recorded as before,
    # and its retried last chunk finds its multipart upload gone (S3: ``NoSuchUpload``; moto:
    # a 500). The object at the key then carries the upload's token (object metadata given
    # at its start): the retry hashes its parts instead of sending them, and takes the object
    # as the blob only if it has the ETag (and the SHA-256 checksum, if S3 tells it) of
    # exactly these parts. Until then the object is protected by the upload's state, which
    # names its key; ``discard`` deletes it with the upload, and garbage collection collects
    # it if even that fails. None of this costs a request until a part or a completion fails.

    def start_resumable(self, key, content_type=None):
        key = self.free_key(key)
        token = uuid.uuid4().hex
        upload_id = self.create_upload(key, content_type, {UPLOAD_METADATA: token})
        return {
            "key": key,
            "upload_id": upload_id,
            "token": token,
            "parts": [],
            "tail": None,
            "tail_size": 0,
        }

    def _continue(self, state):
        staged = S3Staged(self, state["key"], None, resumed=state)
        if state["tail_size"]:
            with self.open(state["tail"], 0, state["tail_size"] - 1) as tail:
                staged.write(tail.read())
        return staged

    def append(self, state, offset, chunks):
        staged = self._continue(state)
        for chunk in chunks:
            staged.write(chunk)
        parts, tail = staged.flush()
        new_tail = None
        if tail:
            new_tail = f"{RESUMABLE_FOLDER}/{uuid.uuid4().hex}.tail"
            with _unavailable("PutObject"):
                self.client.put_object(Bucket=self.bucket, Key=new_tail, Body=tail)
        return Progress(
            {
                **state,
                "parts": parts,
                "tail": new_tail,
                "tail_size": len(tail),
                **({"closed": True} if staged.closed else {}),
            },
            created=[new_tail] if new_tail else [],
            obsolete=[state["tail"]] if state["tail"] else [],
        )

    def finish(self, state):
        """Complete the multipart upload; or, when an earlier finish completed it, check
        that the object it made holds exactly these parts (``FileNotFoundError`` if not).

        The key is not in ``created``: the object stays if the caller's transaction fails,
        for the retry to find it.
        """
        staged = self._continue(state)
        try:
            parts = staged.send_rest()
            if not staged.closed:
                try:
                    staged.complete(parts)
                except StorageUnavailable as e:
                    if not staged.completed_before(e):
                        raise
            if staged.closed:
                self._adopt(state, parts)
        except BaseException:
            staged.abort()
            raise
        obsolete = [state["tail"]] if state["tail"] else []
        return Progress(state, obsolete=obsolete, key=state["key"])

    def _object_of(self, state):
        """HeadObject of the object at the state's key, and why it is not this upload's
        (None when it carries the upload's token: it was completed from this upload)."""
        try:
            with _unavailable("HeadObject"):
                head = self.client.head_object(
                    Bucket=self.bucket, Key=state["key"], ChecksumMode="ENABLED"
                )
        except StorageUnavailable as e:
            if _error_code(e.__cause__) in ("404", "NoSuchKey", "NotFound"):
                return None, "missing"
            raise
        token = state.get("token")
        if not token or head.get("Metadata", {}).get(UPLOAD_METADATA) != token:
            return head, "from another upload"
        return head, None

    def not_ours(self, state):
        """Why the object at the state's key was not completed from this upload, or None."""
        return self._object_of(state)[1]

    def _adopt(self, state, parts):
        """Take the object an earlier finish completed as this upload's blob, if it holds
        exactly ``parts``: same token, size, ETag and (when S3 tells it) SHA-256 checksum.

        Anything else means that the bytes recorded before the last chunk are gone (the
        multipart upload was aborted, or completed with a last chunk other than this one):
        no retry can bring them back, so the upload is lost (``FileNotFoundError``, a 4xx
        for the client to start again) rather than unavailable (a 503, retried in vain).
        """
        head, why = self._object_of(state)
        if why:
            raise _lost(state, why)
        checksum = head.get("ChecksumSHA256")
        same = (
            head["ContentLength"] == sum(part["Size"] for part in parts)
            and head["ETag"].strip('"') == _multipart_etag(parts)
            and (not checksum or checksum.split("-")[0] == _composite_checksum(parts))
        )
        if not same:
            raise _lost(state, "not made of these parts")

    def discard(self, state):
        """Abort the multipart upload and delete the tail; if the upload was completed (a
        finish whose transaction failed), delete the object it made."""
        gone = not self.abort_upload(state["key"], state["upload_id"])
        if gone and self.not_ours(state) is None:
            self.delete(state["key"])
        if state["tail"]:
            self.delete(state["tail"])

    def abort_upload(self, key, upload_id):
        """Abort a multipart upload; if S3 cannot be reached, remember to retry later.
        False when S3 has no such upload (aborted or completed already)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (BotoCoreError, ClientError) as e:
            if _error_code(e) == "NoSuchUpload":
                return False
            logger.warning("Could not abort S3 upload %s of %r yet: %s", upload_id, key, e)
            with self._lock:
                self._unaborted.add((key, upload_id))
        return True

    def _retry_aborts(self):
        with self._lock:
            pending, self._unaborted = self._unaborted, set()
        for key, upload_id in pending:
            self.abort_upload(key, upload_id)

    def free_key(self, key):
        """The first of ``key``, ``name-1.ext``... not taken yet: a HeadObject, and when
        ``key`` is taken, one listing of its ``name-`` prefix (by pages of 1000 keys), not a
        request per variant."""
        if not self.exists(key):
            return key
        stem, _ = posixpath.splitext(key)
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{stem}-"
        )
        taken = {key}
        with _unavailable("ListObjectsV2"):
            for page in pages:
                taken.update(listed["Key"] for listed in page.get("Contents", ()))
        return next(k for k in key_variants(key) if k not in taken)

    def open(self, key, start=0, end=None):
        span = f"bytes={start}-{'' if end is None else end}"
        try:
            with _unavailable("GetObject"):
                return self.client.get_object(Bucket=self.bucket, Key=key, Range=span)["Body"]
        except StorageUnavailable as e:
            if _error_code(e.__cause__) in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from e
            raise

    def stat(self, key):
        try:
            with _unavailable("HeadObject"):
                head = self.client.head_object(Bucket=self.bucket, Key=key)
        except StorageUnavailable as e:
            if _error_code(e.__cause__) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return Stat(head["ContentLength"], head["ETag"])

    def delete(self, key):
        self.delete_many([key])

    def delete_many(self, keys):
        """Any iterable of keys, consumed by batches of S3's limit: memory stays flat."""
        keys = iter(keys)
        while batch := [{"Key": k} for k in itertools.islice(keys, DELETE_BATCH)]:
            with _unavailable("DeleteObjects"):
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            if response.get("Errors"):
                raise StorageUnavailable(f"S3 DeleteObjects failed: {response['Errors'][:3]}")

    def url(self, key):
        return blob_url(self.base_url, key)

    def presigned_url(self, key, expires, filename, mimetype):
        """A short-lived URL of the object, downloaded with our headers."""
        with _unavailable("presign"):
            return self.client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "ResponseContentType": served_type(mimetype),
                    "ResponseContentDisposition": content_disposition(filename, mimetype),
                },
                ExpiresIn=expires,
            )

    # Listing, for garbage collection.

    def iter_blobs(self):
        """Every object of the bucket, by pages of ``ListObjectsV2`` (1000 keys a request)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        with _unavailable("ListObjectsV2"):
            for page in pages:
                for listed in page.get("Contents", ()):
                    yield Listed(
                        listed["Key"],
                        listed["Size"],
                        int(listed["LastModified"].timestamp() * 1000),
                        temporary=listed["Key"].startswith(RESUMABLE_FOLDER + "/"),
                    )

    def iter_pending(self):
        """Every multipart upload in progress, by pages of ``ListMultipartUploads``."""
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket)
        with _unavailable("ListMultipartUploads"):
            for page in pages:
                for upload in page.get("Uploads", ()):
                    initiated_ms = int(upload["Initiated"].timestamp() * 1000)
                    yield Pending(upload["Key"], upload["UploadId"], initiated_ms)

    def abort_pending(self, key, upload_id):
        self.abort_upload(key, upload_id)
