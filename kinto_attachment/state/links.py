"""Which blob belongs to which record, kept in Kinto's storage backend.

The record's ``attachment`` field says where its current file is, but once a bucket or a
collection is deleted its records are gone without an event each; these links are how we still
find every blob to delete. They live in the same storage (and the same transaction) as the
records, so with PostgreSQL every node shares them.

Each link is an object of resource ``attachment-blob`` whose parent is the record URI prefixed
with ``attachment:``. The prefix keeps links out of Kinto's own cascades (which wipe every object
under ``/buckets/{id}/*``) so that our listener still finds them, and lets one ``LIKE`` on the
indexed parent id select a bucket or a collection. Since ``_`` is a ``LIKE`` wildcard and ids may
contain it, the exact bucket and collection ids are also stored and used as filters.
"""

import contextlib
import hashlib

from kinto.core.storage import Filter
from kinto.core.storage.exceptions import ObjectNotFoundError
from kinto.core.utils import COMPARISON

from . import legacy, paging, replaced


RESOURCE = "attachment-blob"
PARENT_PREFIX = "attachment:"
#: Longest record URI (``/buckets/…/records/…``, in bytes) that uploads accept. A link's
#: parent id holds it, and PostgreSQL indexes it with the link's id: past 2704 bytes for
#: the index row, PostgreSQL refuses the write (as it refuses Kinto's own write of such a
#: record, a 503). Kinto's ids have no limit; this one is the same on every backend.
MAX_RECORD_URI = 2048


def record_uri(bucket_id, collection_id, record_id):
    return f"/buckets/{bucket_id}/collections/{collection_id}/records/{record_id}"


def _link_id(key):
    # Deterministic, so that linking the same key twice cannot make two links.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def add(storage, bucket_id, collection_id, record_id, key, since=None, previous=None, digest=None):
    """Link ``key`` to the record (again: linking twice leaves one link).

    ``since``: epoch ms from which every version of the record has had this blob, when known
    (:attr:`kinto_attachment.downloads.Download.unchanged_since`); ``previous``: that of the
    record's last version with another file, if it had one (``previous_modified``);
    ``digest``: the sha256 the record's ``attachment`` has with it, if any (a download tells
    its link from a replacement's: :func:`names_file_of`).
    """
    link = {
        "key": key,
        "bucket_id": bucket_id,
        "collection_id": collection_id,
        "record_id": record_id,
    }
    if since is not None:
        link["since"] = since
    if previous is not None:
        link["previous"] = previous
    if digest is not None:
        link["hash"] = digest
    storage.update(
        resource_name=RESOURCE,
        parent_id=PARENT_PREFIX + record_uri(bucket_id, collection_id, record_id),
        object_id=_link_id(key),
        obj=link,
    )


def of_record(storage, bucket_id, collection_id, record_id, location=None, url=None):
    """The links of one record (normally one, more while a replacement is being committed),
    kinto-attachment's included (:mod:`.legacy`).

    With ``url`` (the store's key-to-URL function), ``location`` is the URL of the record's
    file (None: it has none), and kinto-attachment's links are only read when the record has
    a file that none of ours names: a record that kinto-attachment stored, not adopted yet.
    Other records have no file of kinto-attachment's to find, and on PostgreSQL the lookup
    costs every upload and download two queries.
    """
    parent_id = PARENT_PREFIX + record_uri(bucket_id, collection_id, record_id)
    ours = storage.list_all(resource_name=RESOURCE, parent_id=parent_id)
    if url is not None and (not location or any(url(link["key"]) == location for link in ours)):
        return ours
    return ours + list(legacy.links(storage, bucket_id, collection_id, record_id))


def names_file_of(link, digest):
    """Whether ``link`` may be that of the record's file whose sha256 is ``digest``: a link
    made with another one is a replacement's (links made before they kept it, and
    kinto-attachment's, may be any)."""
    return not (digest and link.get("hash") and link["hash"] != digest)


def held(storage, key):
    """Whether Kinto's storage names ``key``: a record's link (kinto-attachment's row, or
    ours), a retained file, or one that replaced files wait in (:mod:`.replaced`). Asked of a
    name the store holds no blob under, before a new blob takes it
    (:meth:`~kinto_attachment.storage.base.StoreBase.reserved`): a record naming it lost its
    file (kinto-attachment deleted it before its refused replacement, or someone did by hand),
    and a new blob there would be served as that record's, and deleted with it, or by the
    collector once its entry is due. Three lookups by id (indexed), and kinto-attachment's
    rows until they are adopted: those first, since adoption moves a row to a link."""
    return (
        legacy.names(storage, key)
        or key in linked_among(storage, [key])
        or is_retained(storage, key)
        or replaced.names(storage, key)
    )


def linked_records(storage, bucket_id, collection_id, record_ids):
    """The ids among ``record_ids`` (of one collection) that have one of our links."""
    found = storage.list_all(
        resource_name=RESOURCE,
        parent_id=PARENT_PREFIX + record_uri(bucket_id, collection_id, "*"),
        filters=[
            Filter("bucket_id", bucket_id, COMPARISON.EQ),
            Filter("collection_id", collection_id, COMPARISON.EQ),
            Filter("record_id", list(record_ids), COMPARISON.IN),
        ],
    )
    return {link["record_id"] for link in found}


def forget(storage, record_links):
    """Remove these links (the blobs are not touched)."""
    legacy.forget(storage, [link for link in record_links if "legacy" in link])
    for link in (link for link in record_links if "legacy" not in link):
        parent_id = PARENT_PREFIX + record_uri(
            link["bucket_id"], link["collection_id"], link["record_id"]
        )
        # Callers hold the record's lock: a link already gone was never ours to remove.
        with contextlib.suppress(ObjectNotFoundError):
            storage.delete(
                resource_name=RESOURCE,
                parent_id=parent_id,
                object_id=link["id"],
                with_deleted=False,
            )


def pop(storage, bucket_id=None, collection_id=None, record_id=None):
    """Remove the links of a record, a collection, a bucket or everything, and return them
    (kinto-attachment's too).

    ``None`` for a trailing id means "all of them": ``pop(s, "b")`` pops a whole bucket.
    """
    if record_id is not None:
        parent_id = PARENT_PREFIX + record_uri(bucket_id, collection_id, record_id)
    elif collection_id is not None:
        parent_id = PARENT_PREFIX + record_uri(bucket_id, collection_id, "*")
    elif bucket_id is not None:
        parent_id = PARENT_PREFIX + f"/buckets/{bucket_id}/*"
    else:
        parent_id = PARENT_PREFIX + "*"
    exact = {"bucket_id": bucket_id, "collection_id": collection_id, "record_id": record_id}
    filters = [Filter(f, v, COMPARISON.EQ) for f, v in exact.items() if v is not None]
    popped = _popped(storage, parent_id, filters)
    kept_by_kinto_attachment = list(legacy.links(storage, bucket_id, collection_id, record_id))
    legacy.forget(storage, kept_by_kinto_attachment)
    return popped + kept_by_kinto_attachment


def _popped(storage, parent_id, filters):
    """Remove our links under ``parent_id`` matching ``filters``, and return them."""
    popped = []
    # Deleting returns only tombstones, so read the links first. Storage backends cap how
    # many objects one call returns: repeat until none is left.
    while batch := storage.list_all(resource_name=RESOURCE, parent_id=parent_id, filters=filters):
        ids = [link["id"] for link in batch]
        storage.delete_all(
            resource_name=RESOURCE,
            parent_id=parent_id,
            filters=[*filters, Filter("id", ids, COMPARISON.IN)],
            with_deleted=False,
        )
        popped += batch
    return popped


def pop_records(storage, bucket_id, collection_id, record_ids, batch=1000):
    """:func:`pop` of several records of a collection, ``batch`` records a query: a plural
    ``DELETE`` of 10,000 records sent some 40,000 statements, its collection locked
    meanwhile."""
    record_ids, popped = list(record_ids), []
    parent_id = PARENT_PREFIX + record_uri(bucket_id, collection_id, "*")
    for start in range(0, len(record_ids), batch):
        some = record_ids[start : start + batch]
        filters = [
            Filter("bucket_id", bucket_id, COMPARISON.EQ),
            Filter("collection_id", collection_id, COMPARISON.EQ),
            Filter("record_id", some, COMPARISON.IN),
        ]
        popped += _popped(storage, parent_id, filters)
        kept_by_kinto_attachment = list(
            legacy.links_of_records(storage, bucket_id, collection_id, some)
        )
        legacy.forget(storage, kept_by_kinto_attachment)
        popped += kept_by_kinto_attachment
    return popped


#: Blobs that ``keep_old_files`` keeps after their record stopped referencing them: no record
#: points at them any more, but garbage collection must not take them for orphans. Each is
#: under a parent of its own (:func:`.paging.own_parent`); earlier versions wrote them all
#: under ``RETAINED_PARENT``.
RETAINED = "attachment-retained"
RETAINED_PARENT = "attachment-retained"


#: ``reason`` of the files adoption found in the store with nothing referencing them.
UNREFERENCED_AT_ADOPTION = "unreferenced at adoption"


def retain(storage, keys, reason=None):
    """Record ``keys`` as kept on purpose (in the transaction that unlinks them); ``reason``
    says why when it is not the usual one (a record stopped naming the file)."""
    for key in keys:
        retained_id = _link_id(key)
        obj = {"key": key} if reason is None else {"key": key, "reason": reason}
        storage.update(
            resource_name=RETAINED,
            parent_id=paging.own_parent(RETAINED_PARENT, retained_id),
            object_id=retained_id,
            obj=obj,
        )


def is_retained(storage, key):
    return key in retained_among(storage, [key])


def retained_among(storage, keys):
    """The ``keys`` recorded as retained: whoever is about to delete blobs that something
    stopped referencing keeps these, since a retained blob may still be named by a record
    without a link (a copy that adoption found) or be kept by ``keep_old_files``."""
    return _among(storage, RETAINED, RETAINED_PARENT + "*", keys)


def linked_among(storage, keys):
    """The ``keys`` one of our links names: the collector keeps these whatever else names
    them (a name a record took again while its old file waited to be deleted)."""
    return _among(storage, RESOURCE, PARENT_PREFIX + "*", keys)


def uploaded_among(storage, keys):
    """The ``keys`` a link made by one of our uploads names (it says ``since`` when; those
    adoption makes of kinto-attachment's rows do not): files of ours, whatever their names."""
    return _among(storage, RESOURCE, PARENT_PREFIX + "*", keys, lambda link: "since" in link)


def _among(storage, resource, parent_id, keys, which=None, batch=1000):
    """The ``keys`` an object of ``resource`` (whose id is the key's :func:`_link_id`)
    names (and ``which(object)`` says yes to), one query per ``batch`` of keys."""
    ids = {_link_id(key): key for key in keys}
    found, every_id = set(), list(ids)
    for start in range(0, len(every_id), batch):
        objects = storage.list_all(
            resource_name=resource,
            parent_id=parent_id,
            filters=[Filter("id", every_id[start : start + batch], COMPARISON.IN)],
        )
        found |= {
            ids[obj["id"]]
            for obj in objects
            if ids.get(obj["id"]) == obj["key"] and (which is None or which(obj))
        }
    return found


def all_links(storage):
    """Every link, by pages (memory stays flat)."""
    return paging.every(storage, RESOURCE, PARENT_PREFIX + "*")


def retained(storage):
    """Every retained blob record (``{"id", "key"}``), by pages."""
    return paging.every(storage, RETAINED, RETAINED_PARENT + "*")
