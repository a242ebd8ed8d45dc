"""The S3 store's boto3 client, and the translation of boto errors into the store's own.

Every module of the S3 store sends requests; this one holds what they share about boto3, so
that views only ever see :class:`StorageUnavailable` (a 503) or ``FileNotFoundError`` (a 4xx),
never a botocore exception.
"""

import contextlib
import io

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError

from .. import StorageUnavailable


def make_client(options):
    """The process's one S3 client (boto3 clients are thread-safe)."""
    config = Config(
        signature_version="s3v4",  # Presigned URLs too (botocore may still pick SigV2).
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        # total_max_attempts counts the first attempt (botocore's max_attempts does not).
        retries={"total_max_attempts": options.max_attempts, "mode": "standard"},
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


def error_code(error):
    return error.response.get("Error", {}).get("Code") if isinstance(error, ClientError) else None


@contextlib.contextmanager
def unavailable(action):
    """Turn boto errors into :class:`StorageUnavailable`, which the views answer with a 503."""
    try:
        yield
    except (BotoCoreError, ClientError, HTTPError) as error:
        code = error_code(error)
        raise StorageUnavailable(f"S3 {action} failed: {code or error}") from error


class Body(io.RawIOBase):
    """An object's body as S3 sends it, whose reads fail as the store's other calls do
    (:class:`StorageUnavailable`): botocore's stream, and urllib3's under it (which ``with``
    gives), raise errors of their own when the connection breaks mid-body, which no view
    would take for a store's (a 500 instead of a 503). A body that ends before its
    ``Content-Length`` is such a failure too: botocore opens urllib3's stream without
    enforcing the length (its own ``StreamingBody`` checks it, which this bypasses), and a
    connection cut mid-body would otherwise end it quietly, short (a download served cut, a
    concatenation's sha256 of a prefix)."""

    def __init__(self, streaming_body, stored_size=None, length=None):
        self._raw = streaming_body._raw_stream
        #: The whole object's length, as S3 said (None: unknown).
        self.stored_size = stored_size
        #: Bytes of this body still to come (None: unknown).
        self._left = length

    def readable(self):
        return True

    def read(self, size=-1):
        with unavailable("GetObject"):
            data = self._raw.read(None if size is None or size < 0 else size)
        self._count(len(data), size is None or size < 0 or size > 0)
        return data

    def readinto(self, buffer):
        with unavailable("GetObject"):
            read = self._raw.readinto(buffer)
        self._count(read, len(buffer) > 0)
        return read

    def _count(self, read, asked):
        if self._left is None:
            return
        self._left -= read
        if (asked and not read and self._left > 0) or self._left < 0:
            raise StorageUnavailable(
                f"S3 GetObject failed: its body ended {self._left} bytes off its Content-Length"
            )

    def close(self):
        self._raw.close()
        super().close()


def lost(state, why):
    """The error of a resumable upload whose recorded bytes are gone from S3."""
    return FileNotFoundError(
        f"S3 upload {state['upload_id']} of {state['key']} is lost: its object is {why}"
    )
