"""Parts of S3 multipart uploads: their digests as S3 has them.

S3 describes each part by its MD5 (the ETag) and our SHA-256 checksum, and the completed object
by digests of those: computing them here lets a retried resumable upload recognise an object
completed earlier without sending its parts again. (Part buffers are :mod:`..parts`.)
"""

import base64
import hashlib
import zlib


#: The checksums S3 verifies parts against, as the API names them.
CHECKSUM_KEYS = ("ChecksumSHA256", "ChecksumCRC32")


def checksum(data):
    """The SHA-256 checksum S3 verifies a request body against (base64)."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def crc32(data):
    """The CRC32 checksum S3 verifies a request body against (base64 of 4 big-endian bytes):
    what the parts of uploads that need no SHA-256 carry, at a fraction of its cost here and on
    the S3 side."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")


def local_part(number, view, sha256):
    """A part of a multipart upload that is no longer open, described as S3 would have:
    its ETag is the MD5 of its bytes."""
    etag = hashlib.md5(view, usedforsecurity=False).hexdigest()
    return {
        "PartNumber": number,
        "ETag": f'"{etag}"',
        "ChecksumSHA256": sha256,
        "Size": len(view),
    }


def completed(part):
    """A part as CompleteMultipartUpload takes it (without our ``Size``)."""
    return {k: v for k, v in part.items() if k in ("PartNumber", "ETag", *CHECKSUM_KEYS)}


def multipart_etag(parts):
    """The ETag S3 gives the object completed from ``parts``: the MD5 of their MD5s, ``-N``."""
    try:
        digests = b"".join(bytes.fromhex(part["ETag"].strip('"')) for part in parts)
    except ValueError:  # Not MD5s (SSE-KMS...): nothing to compare with.
        return None
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(parts)}"


def composite_checksum(parts):
    """The SHA-256 checksum S3 gives the object completed from ``parts`` (without ``-N``)."""
    digests = b"".join(base64.b64decode(part["ChecksumSHA256"]) for part in parts)
    return checksum(digests)
