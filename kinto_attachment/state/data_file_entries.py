"""Metadata of ``/data/files`` entries, kept in Kinto's storage backend.

With PostgreSQL every node of a cluster sees the same files; the bytes are in the configured
blob store. Entries live outside of any bucket, so that no Kinto cascade touches them, each
under a parent of its own (:func:`.paging.own_parent`: uploads of distinct ids at once never
collide); entries written by earlier versions, all under ``PARENT_ID``, are read and updated
where they are.
"""

import re
import secrets

from kinto.core.storage import Sort
from kinto.core.utils import msec_time

from .. import locks
from . import paging


RESOURCE = "data-file"
PARENT_ID = "data-files"
#: Every entry, under its own parent or under ``PARENT_ID``.
EVERY = PARENT_ID + "*"
ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
#: Folder of the blobs of new entries. Its leading dot keeps it out of the attachments' key
#: space (``safe_name`` strips leading dots): an attachment named ``data-files`` once blocked
#: every upload here. Entries stored under ``data-files/`` before keep their recorded key.
KEY_FOLDER = ".data-files"


def new_id():
    """A URL-safe random id, for uploads that do not name theirs."""
    return secrets.token_urlsafe(16)


def valid_id(file_id):
    return bool(ID_PATTERN.match(file_id)) and file_id.strip(".") != ""


def is_live(entry, now=None):
    """Not expired."""
    expiration = entry.get("expiration")
    return expiration is None or expiration > (now or msec_time())


def lock(registry, file_id):
    """Hold ``file_id`` until the transaction ends: writers and the garbage collector take it
    before reading the entry they will replace or delete."""
    locks.hold(registry, (PARENT_ID, file_id))


def find(storage, file_id):
    """``(parent, entry)``: the entry of ``file_id`` (None when unknown; expired entries are
    returned, callers decide) and the parent to :func:`put` it back under."""
    return paging.find(storage, RESOURCE, PARENT_ID, file_id)


def get(storage, file_id):
    """The entry, or None when unknown (expired entries are returned: callers decide)."""
    return find(storage, file_id)[1]


def put(storage, parent_id, file_id, entry):
    """Create or replace the entry of ``file_id`` under ``parent_id`` (from :func:`find`)."""
    return storage.update(
        resource_name=RESOURCE, parent_id=parent_id, object_id=file_id, obj=entry
    )


def remove(storage, file_id):
    """Delete the entry; return it, or None if there was none."""
    parent_id, entry = find(storage, file_id)
    if entry is not None:
        storage.delete(
            resource_name=RESOURCE, parent_id=parent_id, object_id=file_id, with_deleted=False
        )
    return entry


def entries(storage):
    """Every entry (expired ones included), oldest first."""
    return storage.list_all(
        resource_name=RESOURCE, parent_id=EVERY, sorting=[Sort("last_modified", 1)]
    )


def metadata(store, entry):
    """The entry's file, as an attachment's metadata (``location``: the store's URL)."""
    return {
        "location": store.url(entry["key"]),
        **{name: entry.get(name) for name in ("hash", "size", "mimetype", "filename")},
    }


def every(storage):
    """Every entry (expired ones included), by pages: for walks over all of them."""
    return paging.every(storage, RESOURCE, EVERY)
