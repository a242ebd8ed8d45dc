"""Concatenation of resumable uploads on S3: one object made of others, without re-uploading
their bytes.

Each upload is first finished (:meth:`S3Resumable.finish`: its multipart upload completed into
an object at its own key; a retry finds it completed, as a retried last chunk does). A new
multipart upload then copies them in order, S3 side (``UploadPartCopy``). Every part but the
last must have 5 MiB at least: bytes of objects smaller than that (or the ends of larger
ones) are read and sent as parts of their own, joined with the start of the next object until
they make 5 MiB. A part copied from an object has 5 GiB at most: a larger object is copied in
ranges.

The uploads' objects stay until the caller deletes them (``obsolete``) once its transaction has
committed: until then the uploads' states name them and garbage collection leaves them alone.
A process killed while composing leaves a multipart upload that no state names, which garbage
collection aborts; killed after completing, an object that no record names: an orphan.
"""

import itertools

from .. import Progress, StorageUnavailable
from ..base import read_back, require_unreserved
from .client import unavailable
from .options import MIN_PART_SIZE
from .parts import checksum


#: The largest part ``UploadPartCopy`` copies.
MAX_COPY = 5 * 1024**3


def ranges(sources, min_size=MIN_PART_SIZE, max_copy=MAX_COPY):
    """The parts of the concatenation of ``sources`` (``(key, size)``): lists of ``(key,
    start, end)`` ranges (``end`` exclusive), and whether the part is copied (one range, S3
    side) or sent (its ranges read and sent). Every part but the last has ``min_size`` bytes
    at least, a copied one ``max_copy`` at most."""
    sent, sent_size = [], 0
    sources = [(key, size) for key, size in sources if size]
    for number, (key, size) in enumerate(sources):
        last = number == len(sources) - 1
        start = 0
        if sent:  # Bytes waiting for a part of 5 MiB: take what they lack from this one.
            start = min(size, min_size - sent_size)
            sent.append((key, 0, start))
            sent_size += start
            if sent_size < min_size and not last:
                continue
            yield sent, False
            sent, sent_size = [], 0
        rest = size - start
        if not rest:
            continue
        if rest >= min_size or last:
            count = -(-rest // max_copy)
            bounds = [start + rest * n // count for n in range(count + 1)]
            for begin, end in itertools.pairwise(bounds):
                yield [(key, begin, end)], True
        else:
            sent, sent_size = [(key, start, size)], rest
    if sent:
        yield sent, False


class S3Concatenating:
    """The :class:`~kinto_attachment.storage.IConcatenatingStore` method of :class:`S3Store`,
    over its resumable uploads (``finish``), ``client``, ``bucket``, ``free_key``,
    ``object_args``, ``open``, ``stage``, ``delete`` and ``abort_upload``."""

    def concatenate(self, parts, key, content_type, digest, random=False, holding=None):
        sources, obsolete = [], []
        for state, length in parts:
            finished = self.finish(state)
            sources.append((finished.key, length))
            obsolete += [*finished.obsolete, finished.key]
        total = sum(length for _, length in parts)
        if total:
            key = self._compose(
                sources, key if random else self.free_key(key), content_type, random
            )
        else:
            key = self.stage(key, content_type, random).commit()
        read_back(self, key, parts[0][1], total, digest, holding)
        return Progress(None, created=[key], obsolete=obsolete, key=key)

    def _compose(self, sources, key, content_type, random):
        """The object ``key`` (free: completed with ``If-None-Match``, unless reserved since
        it was chosen: :func:`~kinto_attachment.storage.base.require_unreserved`) made of
        ``sources``."""
        with unavailable("CreateMultipartUpload"):
            upload_id = self.client.create_multipart_upload(
                Key=key, ChecksumAlgorithm="SHA256", **self.object_args(content_type, key)
            )["UploadId"]
        copies = []
        try:
            completed = []
            for number, (part, copied) in enumerate(ranges(sources), 1):
                target = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id}
                target["PartNumber"] = number
                if copied:  # S3 copies: the store's threads only wait for it.
                    copies.append(self.executor.submit(self._copy, target, *part[0]))
                else:  # Read and sent at once: one part's bytes in memory at most.
                    data = b"".join(self._read(*source_range) for source_range in part)
                    completed.append(self._send(target, data))
            completed += [future.result() for future in copies]
            require_unreserved(self, key, random)
            with unavailable("CompleteMultipartUpload"):
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": sorted(completed, key=lambda p: p["PartNumber"])},
                    IfNoneMatch="*",
                )
        except BaseException:
            for future in copies:
                future.cancel()
            for future in copies:
                if not future.cancelled():
                    future.exception()  # Wait for copies in flight before aborting.
            self.abort_upload(key, upload_id)
            raise
        return key

    def _read(self, source, start, end):
        with self.open(source, start, end - 1) as stream:
            data = stream.read()
        if len(data) != end - start:
            raise StorageUnavailable(f"S3 GetObject of {source} ended early")
        return data

    def _copy(self, target, source, start, end):
        with unavailable("UploadPartCopy"):
            result = self.client.upload_part_copy(
                CopySource={"Bucket": self.bucket, "Key": source},
                CopySourceRange=f"bytes={start}-{end - 1}",
                **target,
            )["CopyPartResult"]
        return _completed(target["PartNumber"], result)

    def _send(self, target, data):
        with unavailable("UploadPart"):
            result = self.client.upload_part(
                Body=data, ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum(data), **target
            )
        return _completed(target["PartNumber"], result)


def _completed(number, result):
    """A part as CompleteMultipartUpload takes it."""
    part = {"PartNumber": number, "ETag": result["ETag"]}
    if result.get("ChecksumSHA256"):
        part["ChecksumSHA256"] = result["ChecksumSHA256"]
    return part
