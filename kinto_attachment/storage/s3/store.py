"""Blobs as objects in an S3 bucket (AWS, MinIO, Ceph, R2... any S3-compatible store).

Bytes go to S3 as they arrive, through the writer of :mod:`.staged` (a single ``PutObject``
for a file smaller than one part, a multipart upload for a larger one); nothing is visible under
the key until the upload completes. Resumable uploads are in :mod:`.resumable`, their
concatenation in :mod:`.concatenate`.

Objects are never overwritten: writes are conditional (``If-None-Match: *``); a taken key gets
the next ``name-N.ext`` variant, as on local disk. S3 verifies each request body against its
SHA-256 checksum, sent with every part and every single-request upload.

This module holds the store itself: naming, reading, deleting and listing objects, and the
bookkeeping of multipart uploads to abort.
"""

import itertools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import BotoCoreError, ClientError
from zope.interface import implementer

from ...web.media_types import (
    SIGNED_NAME_BYTES,
    content_disposition,
    is_inline,
    served_type,
)
from .. import (
    IBlobStore,
    IConcatenatingStore,
    IListableStore,
    IResumableStore,
    Listed,
    Pending,
    Stat,
    StorageUnavailable,
)
from ..base import StoreBase, object_size
from ..keys import blob_url, free_variant, in_own_folder, is_working_object
from .client import Body, error_code, make_client, unavailable
from .concatenate import S3Concatenating
from .options import MIN_PART_SIZE
from .resumable import TAIL_SUFFIX, S3Resumable
from .staged import S3Staged


logger = logging.getLogger(__name__)

#: S3 accepts at most 1000 keys per DeleteObjects request.
DELETE_BATCH = 1000


#: Failed aborts remembered at most (:meth:`S3Store._retry_aborts`).
MAX_UNABORTED = 1000


@implementer(IBlobStore, IResumableStore, IConcatenatingStore, IListableStore)
class S3Store(S3Concatenating, S3Resumable, StoreBase):
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
        #: Multipart uploads whose abort failed (S3 unreachable), retried after the next
        #: stage(), in the background (:meth:`_retry_aborts`).
        self._unaborted = set()
        self._retrying = False
        self._lock = threading.Lock()

    @classmethod
    def from_options(cls, options, *, base_url="", default_cache_control=""):
        """The store :class:`~.options.S3Options` describe, with its own client; new
        objects get ``default_cache_control`` (:mod:`kinto_attachment.downloads.caching`) unless
        the options name their own."""
        return cls(
            make_client(options),
            options.bucket_name,
            base_url=base_url,
            acl=options.acl,
            cache_control=options.cache_control or default_cache_control,
            part_size=options.part_size,
            concurrency=options.concurrency,
        )

    def stage(self, key, content_type=None, random=False):
        self._retry_aborts()
        return S3Staged(self, key, content_type, random=random)

    def object_args(self, content_type, key):
        """Arguments of every request creating the object ``key``. A type not served inline
        is stored with ``Content-Disposition: attachment``, so that the bucket's own URL does
        not render it either; the ACL is not given to the plugin's own objects
        (``/data/files``' are served through the API only, within their time to live)."""
        args = {"Bucket": self.bucket, "ContentType": served_type(content_type)}
        if not is_inline(content_type):
            args["ContentDisposition"] = "attachment"
        if self.acl and not in_own_folder(key):
            args["ACL"] = self.acl
        if self.cache_control:
            args["CacheControl"] = self.cache_control
        return args

    def create_upload(self, key, content_type, metadata=None, checksum="SHA256"):
        """A new multipart upload whose parts carry ``checksum`` (``SHA256``, ``CRC32``)."""
        args = self.object_args(content_type, key)
        if metadata:
            args["Metadata"] = metadata
        with unavailable("CreateMultipartUpload"):
            return self.client.create_multipart_upload(
                Key=key, ChecksumAlgorithm=checksum, **args
            )["UploadId"]

    def abort_upload(self, key, upload_id):
        """Abort a multipart upload; if S3 cannot be reached, remember to retry later.
        False when S3 has no such upload (aborted or completed already)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (BotoCoreError, ClientError) as e:
            if error_code(e) == "NoSuchUpload":
                return False
            logger.warning("Could not abort S3 upload %s of %r yet: %s", upload_id, key, e)
            with self._lock:
                if len(self._unaborted) < MAX_UNABORTED:  # The collector aborts the others.
                    self._unaborted.add((key, upload_id))
        return True

    def _retry_aborts(self):
        """Abort again, in a thread of their own, the uploads whose abort failed: each may
        take a request's whole timeouts against an S3 that does not answer, which must not
        fall on the request that stages next. One round at a time; those failing again wait
        for the next round, and garbage collection aborts whatever is left
        (:meth:`iter_pending`)."""
        with self._lock:
            if not self._unaborted or self._retrying:
                return
            pending, self._unaborted, self._retrying = self._unaborted, set(), True

        def retry():
            try:
                for key, upload_id in pending:
                    self.abort_upload(key, upload_id)
            finally:
                with self._lock:
                    self._retrying = False

        threading.Thread(target=retry, name="attachment-s3-aborts", daemon=True).start()

    def free_key(self, key):
        """The first of ``key``, ``name-1.ext``... not taken yet (by pages of 1000 keys)."""
        return free_variant(key, self.exists, self._listed, self.reserved)

    def _listed(self, prefix):
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        with unavailable("ListObjectsV2"):
            for page in pages:
                yield from (listed["Key"] for listed in page.get("Contents", ()))

    def open(self, key, start=0, end=None):
        # No range for the whole blob: S3 refuses ``bytes=0-`` of an empty one (416).
        span = {}
        if start or end is not None:
            span["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            with unavailable("GetObject"):
                got = self.client.get_object(Bucket=self.bucket, Key=key, **span)
                size = object_size(got.get("ContentRange"), got.get("ContentLength"))
                return Body(got["Body"], size, got.get("ContentLength"))
        except StorageUnavailable as e:
            # InvalidRange: a start past the object's end (see IStore.open).
            if error_code(e.__cause__) in ("NoSuchKey", "404", "InvalidRange", "416"):
                raise FileNotFoundError(key) from e
            raise

    def stat(self, key):
        try:
            with unavailable("HeadObject"):
                head = self.client.head_object(Bucket=self.bucket, Key=key)
        except StorageUnavailable as e:
            if error_code(e.__cause__) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        modified_ms = int(head["LastModified"].timestamp() * 1000)
        return Stat(head["ContentLength"], head["ETag"], modified_ms)

    def delete(self, key):
        self.delete_many([key])

    def delete_many(self, keys):
        """Any iterable of keys, consumed by batches of S3's limit: memory stays flat."""
        keys = iter(keys)
        while batch := [{"Key": k} for k in itertools.islice(keys, DELETE_BATCH)]:
            self._delete_objects(batch)

    def _delete_objects(self, objects):
        """``DeleteObjects`` of ``objects`` (S3's limit at most); StorageUnavailable for any
        it could not delete (its answer is a 200 that lists them)."""
        with unavailable("DeleteObjects"):
            response = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
            )
        if response.get("Errors"):
            raise StorageUnavailable(f"S3 DeleteObjects failed: {response['Errors'][:3]}")

    def delete_versions(self, key):
        """Delete what versions of ``key`` (a name no file shares: the heartbeat's probe) a
        bucket with versioning keeps, and their delete markers: a delete there only adds a
        marker, and each probe would leave two objects for ever."""
        with unavailable("ListObjectVersions"):
            listed = self.client.list_object_versions(Bucket=self.bucket, Prefix=key)
        versions = [
            {"Key": key, "VersionId": version["VersionId"]}
            for version in (*listed.get("Versions", ()), *listed.get("DeleteMarkers", ()))
            if version["Key"] == key and version.get("VersionId") not in (None, "null")
        ]
        if versions:
            self._delete_objects(versions)

    def url(self, key):
        return blob_url(self.base_url, key)

    def presigned_url(self, key, expires, filename, mimetype):
        """A short-lived URL of the object, downloaded with our headers."""
        with unavailable("presign"):
            return self.client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "ResponseContentType": served_type(mimetype),
                    "ResponseContentDisposition": content_disposition(
                        filename, mimetype, name_bytes=SIGNED_NAME_BYTES
                    ),
                },
                ExpiresIn=expires,
            )

    # Listing, for garbage collection.

    def iter_blobs(self):
        """Every object of the bucket, by pages of ``ListObjectsV2`` (1000 keys a request)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        with unavailable("ListObjectsV2"):
            for page in pages:
                for listed in page.get("Contents", ()):
                    yield Listed(
                        listed["Key"],
                        listed["Size"],
                        int(listed["LastModified"].timestamp() * 1000),
                        temporary=is_working_object(listed["Key"], TAIL_SUFFIX),
                        version=listed.get("ETag"),
                    )

    def iter_pending(self):
        """Every multipart upload in progress, by pages of ``ListMultipartUploads``."""
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket)
        with unavailable("ListMultipartUploads"):
            for page in pages:
                for upload in page.get("Uploads", ()):
                    initiated_ms = int(upload["Initiated"].timestamp() * 1000)
                    yield Pending(upload["Key"], upload["UploadId"], initiated_ms)

    def abort_pending(self, key, upload_id):
        """The collector's abort: a failure raises (:class:`StorageUnavailable`), for the
        collector to report (its next run tries again), where a request's
        (:meth:`abort_upload`) is retried behind it."""
        try:
            with unavailable("AbortMultipartUpload"):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except StorageUnavailable as e:
            if error_code(e.__cause__) != "NoSuchUpload":
                raise
