"""Metadata of ``/data/files`` entries, kept in Kinto's storage backend.

With PostgreSQL every node of a cluster sees the same files; the bytes are in the configured
blob store. Entries live outside of any bucket, so that no Kinto cascade touches them, each
under a parent of its own (:func:`.paging.own_parent`: uploads of distinct ids at once never
collide); entries written by earlier versions, all under ``PARENT_ID``, are read where they
are, and move to a parent of their own when they are written (:func:`put`).
"""

import re
import secrets

from kinto.core.utils import msec_time

from .. import locks
from . import paging


RESOURCE = "data-file"
PARENT_ID = "data-files"
#: Every entry, under its own parent or under ``PARENT_ID``.
EVERY = PARENT_ID + "*"
ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: Folder of the blobs of new entries. Its leading dot keeps it out of the attachments' key
#: space (``safe_name`` strips leading dots): an attachment named ``data-files`` once blocked
#: every upload here. Entries stored under ``data-files/`` before keep their recorded key.
KEY_FOLDER = ".data-files"


def new_id():
    """A URL-safe random id, for uploads that do not name theirs."""
    return secrets.token_urlsafe(16)


def valid_id(file_id):
    # Whole: ``$`` would let a final newline through (``abc%0A``).
    return bool(ID_PATTERN.fullmatch(file_id)) and file_id.strip(".") != ""


def is_live(entry, now=None):
    """Not expired."""
    expiration = entry.get("expiration")
    return expiration is None or expiration > (now or msec_time())


def previous_modified(entry):
    """The last version of the id's previous content (epoch ms), where the entry's upload saw
    one: its ``since`` is that, plus one; None otherwise."""
    since = entry.get("since")
    return None if since is None else since - 1


def lock(registry, file_id):
    """Hold ``file_id`` until the transaction ends: writers and the garbage collector take it
    before reading the entry they will replace or delete."""
    locks.hold(registry, (PARENT_ID, file_id))


def get(storage, file_id):
    """The entry, or None when unknown (expired entries are returned: callers decide)."""
    return paging.find(storage, RESOURCE, PARENT_ID, file_id)


def put(storage, file_id, entry, previous=None):
    """Create or replace the entry of ``file_id`` (``previous``: as read under the lock) under
    a parent of its own, which the entry names. An entry an earlier version wrote under
    ``PARENT_ID`` moves there: written back where it was, two such ids uploaded at once
    collided (Kinto's 409, the client's file refused)."""
    parent_id = paging.own_parent(PARENT_ID, file_id)
    if previous is not None and paging.parent_of(previous, PARENT_ID) != parent_id:
        delete(storage, previous)  # Leaves no tombstone, so no timestamp under PARENT_ID.
    return storage.update(
        resource_name=RESOURCE,
        parent_id=parent_id,
        object_id=file_id,
        obj={**entry, "parent": parent_id},
    )


def remove(storage, file_id):
    """Delete the entry; return it, or None if there was none."""
    entry = get(storage, file_id)
    if entry is not None:
        delete(storage, entry)
    return entry


def delete(storage, entry):
    """Delete ``entry``, read in this transaction."""
    paging.delete(storage, RESOURCE, PARENT_ID, entry)


def entries(storage):
    """Every entry (expired ones included), oldest first (read by pages: PostgreSQL's
    backend returns at most ``storage_max_fetch_size`` objects a query)."""
    return sorted(every(storage), key=lambda entry: entry["last_modified"])


def metadata(store, entry):
    """The entry's file, as an attachment's metadata (``location``: the store's URL)."""
    return {
        "location": store.url(entry["key"]),
        **{name: entry.get(name) for name in ("hash", "size", "mimetype", "filename")},
    }


def every(storage):
    """Every entry (expired ones included), by pages: for walks over all of them."""
    return paging.every(storage, RESOURCE, EVERY)
