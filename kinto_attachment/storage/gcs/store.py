"""Blobs as objects in a Google Cloud Storage bucket.

Bytes go to GCS as they arrive, through the writer of :mod:`.staged` (a single request for a
file smaller than one chunk, a resumable upload session for a larger one); nothing is visible
under the key until the upload completes. Resumable (tus) uploads are in :mod:`.resumable`.

Objects are never overwritten: writes are conditional (``ifGenerationMatch=0``); a taken key
gets the next ``name-N.ext`` variant, as on local disk and S3. GCS verifies each upload against
its CRC32C, sent with it.

This module holds the store itself: naming, reading (ranges streamed from one request),
deleting (batches of 100), signing download URLs and listing objects.
"""

import datetime
import io
import itertools
import secrets
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

from google.auth.credentials import Signing
from google.auth.transport.requests import Request
from zope.interface import implementer

from ...setting_values import fail
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
    Stat,
)
from ..base import UPLOAD_METADATA, StoreBase, object_size
from ..keys import blob_url, free_variant, in_own_folder, is_working_object
from .batch import BATCH_SIZE, delete_batch
from .client import (
    can_sign,
    checked,
    made_by,
    make_client,
    retry_policy,
    unavailable,
)
from .options import PREFIX
from .resumable import PART_SUFFIX, GCSResumable
from .staged import GCSStaged


#: The client's property of each field of :meth:`GCSStore.attributes`.
BLOB_PROPERTIES = {
    "contentType": "content_type",
    "contentDisposition": "content_disposition",
    "cacheControl": "cache_control",
}


class Download(io.RawIOBase):
    """A blob's bytes as GCS streams them: one response read as it goes, closed with it."""

    def __init__(self, response):
        self._response = response
        headers = response.headers
        #: The whole object's length, as GCS said (None: unknown).
        self.stored_size = object_size(
            headers.get("Content-Range"),
            headers.get("x-goog-stored-content-length") or headers.get("Content-Length"),
        )

    def readable(self):
        return True

    def readinto(self, buffer):
        with unavailable("download"):
            return self._response.raw.readinto(buffer)

    def close(self):
        self._response.close()
        super().close()


@implementer(IBlobStore, IResumableStore, IConcatenatingStore, IListableStore)
class GCSStore(GCSResumable, StoreBase):
    def __init__(
        self,
        client,
        session,
        bucket,
        *,
        chunk_size,
        base_url="",
        acl="",
        cache_control="",
        timeout=(5.0, 60.0),
        retry=None,
    ):
        self.client = client
        #: The client's authorised HTTP session, for the requests sent without the client.
        self.session = session
        self.bucket = client.bucket(bucket)
        self.chunk_size = chunk_size
        self.base_url = base_url
        self.acl = acl
        self.cache_control = cache_control
        #: ``(connect, read)`` seconds of every request.
        self.timeout = timeout
        self.retry = retry
        self.executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="attachment-gcs")

    @classmethod
    def from_options(cls, options, *, base_url="", default_cache_control=""):
        """The store :class:`~.options.GCSOptions` describe, with its own client; new
        objects get ``default_cache_control`` unless the options name their own."""
        client, session = make_client(options)
        if options.signed_downloads and not can_sign(session.credentials):
            fail(
                PREFIX + "signed_downloads",
                "these credentials cannot sign URLs: give a service-account key "
                f"(`kinto.{PREFIX}credentials`)",
            )
        return cls(
            client,
            session,
            options.bucket_name,
            chunk_size=options.chunk_size,
            base_url=base_url,
            acl=options.acl,
            cache_control=options.cache_control or default_cache_control,
            timeout=(options.connect_timeout, options.read_timeout),
            retry=retry_policy(options.retry_seconds),
        )

    def stage(self, key, content_type=None, random=False):
        return GCSStaged(self, key, content_type or "application/octet-stream", random=random)

    def attributes(self, content_type):
        """The JSON API fields of a new object: an attachment's, with our headers (a type not
        served inline is stored with ``Content-Disposition: attachment``, so that the bucket's
        own URL does not render it either); or with none of them, for the store's own objects
        (``content_type`` None)."""
        if content_type is None:
            return {"contentType": "application/octet-stream"}
        fields = {"contentType": served_type(content_type)}
        if not is_inline(content_type):
            fields["contentDisposition"] = "attachment"
        if self.cache_control:
            fields["cacheControl"] = self.cache_control
        return fields

    def new_blob(self, name, content_type=None):
        """The client's object to create at ``name``, with :meth:`attributes`."""
        blob = self.bucket.blob(name)
        for field, value in self.attributes(content_type).items():
            setattr(blob, BLOB_PROPERTIES[field], value)
        return blob

    def acl_for(self, content_type, key):
        """The predefined ACL of the new object ``key``: ``acl`` for an attachment, none for
        the store's own objects nor the plugin's (``/data/files``' are served through the API
        only, within their time to live): the bucket's default."""
        if content_type is None or in_own_folder(key):
            return None
        return self.acl or None

    def free_key(self, key):
        """The first of ``key``, ``name-1.ext``... not taken yet (by pages of 1000 names)."""
        return free_variant(key, self.exists, self._names, self.reserved)

    def _names(self, prefix):
        listing = self.client.list_blobs(
            self.bucket, prefix=prefix, fields="items(name),nextPageToken", **self._call
        )
        with unavailable("list"):
            yield from (blob.name for blob in listing)

    @property
    def _call(self):
        return {"timeout": self.timeout, "retry": self.retry}

    def object_url(self, name, api="storage/v1"):
        bucket = quote(self.bucket.name, safe="")
        return f"{self.client.api_endpoint}/{api}/b/{bucket}/o/{quote(name, safe='')}"

    def open(self, key, start=0, end=None):
        headers = {"Accept-Encoding": "identity"}  # The bytes as stored, never transcoded.
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        with unavailable("download"):
            response = self.session.get(
                self.object_url(key, "download/storage/v1"),
                params={"alt": "media"},
                headers=headers,
                stream=True,
                timeout=self.timeout,
            )
            if response.status_code in (404, 416):  # 416: a start past its end (IStore.open).
                response.close()
                raise FileNotFoundError(key)
            checked(response, 200, 206)
        return Download(response)

    def blob(self, key):
        """The object ``key`` as GCS describes it (a ``Blob``), or None when there is none."""
        with unavailable("get"):
            return self.bucket.get_blob(key, **self._call)

    def stat(self, key):
        blob = self.blob(key)
        if blob is None:
            return None
        modified_ms = None if blob.updated is None else int(blob.updated.timestamp() * 1000)
        return Stat(blob.size, str(blob.generation), modified_ms)

    def component_count(self, key):
        """How many objects GCS composed ``key`` of (1: not a composite object, or gone)."""
        blob = self.blob(key)
        return (blob.component_count or 1) if blob is not None else 1

    def delete(self, key):
        self.delete_many([key])

    def delete_many(self, keys):
        """Any iterable of keys, consumed by batch requests of GCS's limit: memory stays
        flat."""
        keys = iter(keys)
        while batch := list(itertools.islice(keys, BATCH_SIZE)):
            delete_batch(self, batch)

    def url(self, key):
        return blob_url(self.base_url, key)

    def presigned_url(self, key, expires, filename, mimetype):
        """A V4 signed URL of the object, downloaded with our headers; signed with the key of
        the credentials, or by IAM (``signBlob``) for credentials without one (GCE...)."""
        credentials = self.session.credentials
        signer = {"credentials": credentials}
        with unavailable("sign"):
            if not isinstance(credentials, Signing):
                if not credentials.valid:
                    credentials.refresh(Request(self.session))
                signer = {
                    "service_account_email": credentials.service_account_email,
                    "access_token": credentials.token,
                }
            return self.bucket.blob(key).generate_signed_url(
                version="v4",
                expiration=datetime.timedelta(seconds=expires),
                method="GET",
                response_type=served_type(mimetype),
                response_disposition=content_disposition(
                    filename, mimetype, name_bytes=SIGNED_NAME_BYTES
                ),
                **signer,
            )

    def compose(self, sources, name, content_type=None):
        """Concatenate the objects ``sources`` into a new object ``name`` (GCS copies no data),
        conditionally: False when ``name`` is taken. ``content_type`` as for
        :meth:`attributes`."""
        params = {"ifGenerationMatch": "0"}
        if acl := self.acl_for(content_type, name):
            params["destinationPredefinedAcl"] = acl
        token = secrets.token_hex(16)  # A 412 to a retry whose first answer was lost: ours.
        body = {
            "sourceObjects": [{"name": source} for source in sources],
            "destination": {**self.attributes(content_type), "metadata": {UPLOAD_METADATA: token}},
        }

        def post():
            response = self.session.post(
                self.object_url(name) + "/compose", params=params, json=body, timeout=self.timeout
            )
            if checked(response, 200, 412).status_code == 200:
                return True
            return made_by(self.blob(name), token)

        with unavailable("compose"):
            return self.retried(post)

    def retried(self, request):
        """``request()``, a request sent without the client, retried as the client's are."""
        return self.retry(request)() if self.retry else request()

    # Listing, for garbage collection.

    def iter_blobs(self):
        """Every object of the bucket, by pages of 1000."""
        listing = self.client.list_blobs(
            self.bucket,
            fields="items(name,size,updated,generation),nextPageToken",
            **self._call,
        )
        with unavailable("list"):
            for blob in listing:
                yield Listed(
                    blob.name,
                    blob.size,
                    int(blob.updated.timestamp() * 1000),
                    temporary=is_working_object(blob.name, PART_SUFFIX),
                    version=None if blob.generation is None else str(blob.generation),
                )

    def iter_pending(self):
        """Nothing: GCS does not list resumable upload sessions. A session never finished holds
        no object (and GCS drops it after a week); those of tus uploads are objects, listed by
        :meth:`iter_blobs`."""
        return iter(())

    def abort_pending(self, key, upload_id):
        """Nothing to abort (see :meth:`iter_pending`)."""
