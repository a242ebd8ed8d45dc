"""tus's concatenation extension, the protocol alone (as :mod:`.tus`): ``Upload-Concat``
of a partial or a final upload, the partial uploads a final one names, and the refusals of
both. The views (:mod:`kinto_attachment.views.concatenation`) bind it to uploads and stores."""

import dataclasses
from urllib.parse import urlsplit

from .tus import CHUNK_TYPE, error


@dataclasses.dataclass(frozen=True)
class Concat:
    """``Upload-Concat``: a ``partial`` upload, or the ``final`` one made of ``urls``."""

    final: bool
    urls: tuple = ()

    @property
    def header(self):
        return "final;" + " ".join(self.urls) if self.final else "partial"


#: Partial uploads a final one may join: tus clients send a few (tus-js-client's
#: ``parallelUploads``); each is locked in the final's transaction (PostgreSQL's lock table
#: holds some 6,400), and S3 composes 10,000 parts at most.
MAX_PARTS = 1000


def concat(header):
    """``Upload-Concat`` of a creation: a :class:`Concat`, or None without the header; 400
    for anything but ``partial`` or ``final;URL URL...`` (one URL at least, and at most
    :data:`MAX_PARTS`; each upload once is checked on their ids, :func:`upload_ids`)."""
    if header is None:
        return None
    if header == "partial":
        return Concat(final=False)
    kind, _, listed = header.partition(";")
    urls = tuple(listed.split())
    if kind != "final" or not urls:
        raise error("concat_header")
    if len(urls) > MAX_PARTS:
        raise error("concat_too_many", limit=MAX_PARTS)
    return Concat(final=True, urls=urls)


def upload_ids(urls, *uploads_paths):
    """The upload ids of ``urls`` (absolute, or paths) under one of ``uploads_paths``, the
    paths of the uploads of the record (``…/attachment/uploads``; in the ``default`` bucket,
    under its id and under ``default``); 400 for a URL that is not one of them (of another
    record, no upload's, or no URL at all). An upload may be named more than once ("The same
    partial upload MAY be present multiple times"): its bytes are joined as often."""
    prefixes = [uploads_path.rstrip("/") + "/" for uploads_path in uploads_paths]
    ids = []
    for url in urls:
        try:
            path = urlsplit(url).path
        except ValueError:  # "http://[::1/x": not a URL.
            path = ""
        prefix = next((prefix for prefix in prefixes if path.startswith(prefix)), None)
        upload_id = path[len(prefix) :] if prefix is not None else ""
        if not upload_id or "/" in upload_id:
            raise error("concat_url", url=url)
        ids.append(upload_id)
    return ids


def require_creation_of_final(length, defer_length, content_type):
    """400 if a final upload's creation says its length, or carries bytes: the partial
    uploads are its bytes and make its length."""
    if length is not None or defer_length is not None:
        raise error("concat_final_length")
    if content_type == CHUNK_TYPE:
        raise error("concat_final_body")


def final_is_read_only():
    """403: a final upload takes no ``PATCH``; its partial uploads made it whole."""
    return error("concat_final_patch")


def concat_refusal(name, url):
    """A partial upload of a final one that cannot be used: ``unknown`` (or not the user's,
    expired, or already consumed by another final upload), ``not_partial``, ``unfinished``."""
    return error(f"concat_{name}", url=url)
