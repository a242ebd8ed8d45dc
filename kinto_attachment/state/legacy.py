"""What kinto-attachment (6.x to 9.x) left in Kinto's storage, read as our own links.

kinto-attachment links each file to its record with an object under ``__attachments__``:
``resource_name`` ``""`` (6.x to 8.x) or ``"attachments"`` (9.x, after its own migration),
with the file's store-relative key in ``location`` and the record's, collection's and bucket's
URIs. A server that switches plugins keeps those rows until they are adopted
(:mod:`kinto_attachment.adoption`); until then, every lookup of our links also reads them,
so that replacing, deleting or downloading such a record works as it did.

They are returned shaped as our links (``key``, ``bucket_id``, ``collection_id``,
``record_id``) with a ``legacy`` entry saying which row they are, for :func:`forget`.
"""

import itertools

from kinto.core.storage import Filter
from kinto.core.utils import COMPARISON

from . import paging


PARENT_ID = "__attachments__"
#: kinto-attachment 6.x to 8.x, then 9.x.
RESOURCES = ("", "attachments")


def _as_link(resource, row):
    """Our shape of a row; ids are None when its ``record_uri`` is not a record's URI."""
    parts = row.get("record_uri", "").split("/")
    # "/buckets/{b}/collections/{c}/records/{r}"
    readable = len(parts) == 7 and parts[1::2] == ["buckets", "collections", "records"]
    bucket_id, collection_id, record_id = parts[2::2] if readable else (None, None, None)
    return {
        "id": row["id"],
        "key": row.get("location") or "",
        "bucket_id": bucket_id,
        "collection_id": collection_id,
        "record_id": record_id,
        "legacy": resource,
    }


def _scope(bucket_id, collection_id, record_id):
    """kinto-attachment's filter for a record, a collection, a bucket, or everything."""
    uri = f"/buckets/{bucket_id}"
    field = "bucket_uri"
    if collection_id is not None:
        uri, field = f"{uri}/collections/{collection_id}", "collection_uri"
    if record_id is not None:
        uri, field = f"{uri}/records/{record_id}", "record_uri"
    return None if bucket_id is None else [Filter(field, uri, COMPARISON.EQ)]


def links(storage, bucket_id=None, collection_id=None, record_id=None):
    """kinto-attachment's links of a record, a collection, a bucket or everything (``None``
    for a trailing id means all of them), by pages, as our links. Rows that name no record
    are left to :func:`every` (adoption keeps their files)."""
    filters = _scope(bucket_id, collection_id, record_id)
    for link in every(storage, filters):
        if link["record_id"] is not None and link["key"]:
            yield link


def links_of_records(storage, bucket_id, collection_id, record_ids):
    """kinto-attachment's links of these records of a collection (one query per row kind)."""
    uris = [f"/buckets/{bucket_id}/collections/{collection_id}/records/{r}" for r in record_ids]
    for link in every(storage, [Filter("record_uri", uris, COMPARISON.IN)]):
        if link["record_id"] is not None and link["key"]:
            yield link


def every(storage, filters=None):
    """Every row of kinto-attachment (matching ``filters``), by pages, as our links."""
    for resource in RESOURCES:
        for row in paging.every(storage, resource, PARENT_ID, filters=filters):
            yield _as_link(resource, row)


def names(storage, key, more_than=0):
    """Whether more than ``more_than`` rows of kinto-attachment link a record to ``key``."""
    rows = every(storage, [Filter("location", key, COMPARISON.EQ)])
    return next(itertools.islice(rows, more_than, None), None) is not None


def naming(storage, keys, batch=1000):
    """The ``keys`` that a row of kinto-attachment still links a record to (one query per
    ``batch`` of keys and row kind)."""
    keys, found = list(keys), set()
    for start in range(0, len(keys), batch):
        filters = [Filter("location", keys[start : start + batch], COMPARISON.IN)]
        found |= {link["key"] for link in every(storage, filters)}
    return found


def still_there(storage, link):
    """Whether the row of ``link`` is still stored (read again once its record is locked: a
    replacement, or another node's adoption, may have removed it meanwhile)."""
    return bool(
        storage.list_all(
            resource_name=link["legacy"],
            parent_id=PARENT_ID,
            filters=[Filter("id", link["id"], COMPARISON.EQ)],
            limit=1,
        )
    )


def forget(storage, legacy_links):
    """Delete the rows of these links (from :func:`links`)."""
    for link in legacy_links:
        storage.delete_all(
            resource_name=link["legacy"],
            parent_id=PARENT_ID,
            filters=[Filter("id", link["id"], COMPARISON.EQ)],
            with_deleted=False,
        )
