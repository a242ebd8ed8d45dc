"""The events outbox: one row per event and destination, in Kinto's storage backend.

A row is written in the transaction of the change it tells of, so that every node of a cluster
sees it once, and only once, that transaction has committed (on the memory backend, which
cannot roll back, rows are written ``uncommitted`` and made ``pending`` by the commit, or
removed by its failure). Rows of one subject and destination share a parent id,
``attachment-events:{destination}:{subject}``, and are numbered (``seq``) under the lock that
the change holds on its record or ``/data/files`` id: the dispatcher delivers them in that
order (:mod:`kinto_attachment.events.claims`).

A row is ``pending`` (``attempts``, ``next_attempt_at``, ``claimed_until`` while a
dispatcher delivers it), then ``delivered`` or ``dead``. The row of a ``stored`` event names
its blob (``key``), which stays referenced while the row is undelivered (dead included), and
``hold_until`` once delivered: the garbage collector and replacements leave it alone till then
(:func:`held`, :func:`every_held`). Delivered rows are removed once their hold is over.
"""

import json

from kinto.core.storage import Filter, Sort
from kinto.core.storage.exceptions import ObjectNotFoundError
from kinto.core.utils import COMPARISON

from . import paging


RESOURCE = "attachment-event"
PREFIX = "attachment-events:"
EVERY = PREFIX + "*"
UNCOMMITTED, PENDING, DELIVERED, DEAD = "uncommitted", "pending", "delivered", "dead"


def parent_id(destination, subject):
    return f"{PREFIX}{destination}:{subject}"


def of_destination(destination):
    return f"{PREFIX}{destination}:*"


def _next_seq(storage, parent):
    last = storage.list_all(
        resource_name=RESOURCE, parent_id=parent, sorting=[Sort("seq", -1)], limit=1
    )
    return last[0]["seq"] + 1 if last else 1


#: A row and its number in one statement (PostgreSQL), where Kinto's ``create`` and a query of
#: the last number take three: recording is on the path of every upload.
#:
#: Its ``last_modified`` is its number (milliseconds after the epoch: nothing reads it), not
#: the clock Kinto's trigger would give it. Kinto's index makes timestamps unique per parent,
#: and the trigger gives the clock (or the parent's latest plus one) to a new object and to
#: the latest one when its data change: a dispatcher marking the previous row of a record (its
#: lease, its delivery) and an upload of that record adding the next one, in the same
#: millisecond, took one timestamp, and the later was refused (a ``409`` for the upload, its
#: file thrown away; or the round's marks lost, their events sent again). Numbers are unique
#: per parent (taken under the subject's lock) and far below any clock: the trigger keeps a
#: given timestamp that is not the parent's latest, and a clock it gives never meets them.
INSERT = """
INSERT INTO objects (id, parent_id, resource_name, data, last_modified, deleted)
SELECT :id, :parent, :resource,
       CAST(:data AS jsonb) || jsonb_build_object('seq', next.seq),
       from_epoch(next.seq), FALSE
FROM (
    SELECT COALESCE(MAX((data->>'seq')::bigint), 0) + 1 AS seq
    FROM objects WHERE resource_name = :resource AND parent_id = :parent
) AS next
"""


def add(storage, destination, event, key, now, committed=True):
    """Write the row of ``event`` for ``destination``; ``key``: the blob a ``stored`` event
    names (None for others). Its number is the next of its subject and destination: the
    caller holds the lock of the subject."""
    parent = parent_id(destination, event["subject"])
    row = {
        "event": event,
        "destination": destination,
        "state": PENDING if committed else UNCOMMITTED,
        "attempts": 0,
        "created": now,
        "next_attempt_at": now,
        "claimed_until": 0,
    }
    if key is not None:
        row["key"] = key
    row_id = f"{destination}-{event['id']}"
    client = getattr(storage, "client", None)
    if client is None:  # The memory backend.
        row = {**row, "id": row_id, "seq": _next_seq(storage, parent)}
        return storage.create(resource_name=RESOURCE, parent_id=parent, obj=row)
    import sqlalchemy

    placeholders = {
        "id": row_id,
        "parent": parent,
        "resource": RESOURCE,
        "data": json.dumps(row),
    }
    with client.connect() as session:
        session.execute(sqlalchemy.text(INSERT), placeholders)
    return {**row, "id": row_id}


def get(storage, row):
    try:
        return storage.get(resource_name=RESOURCE, parent_id=row["parent"], object_id=row["id"])
    except ObjectNotFoundError:
        return None


def change(storage, row, **changes):
    """Update ``row`` (as stored now) with ``changes``; None when it is gone (purged)."""
    current = get(storage, row)
    if current is None:
        return None
    updated = {**current, **changes}
    updated.pop("parent", None)
    stored = storage.update(
        resource_name=RESOURCE, parent_id=row["parent"], object_id=row["id"], obj=updated
    )
    return {**stored, "parent": row["parent"]}


def delete(storage, row):
    storage.delete(
        resource_name=RESOURCE, parent_id=row["parent"], object_id=row["id"], with_deleted=False
    )


def with_parent(row):
    """A row as read from the storage, with the parent id it was written under (which
    Kinto's storage does not return: rebuilt from its destination and subject)."""
    return {**row, "parent": parent_id(row["destination"], row["event"]["subject"])}


def rows(storage, state=None, destination=None):
    """Every row (of ``state``, of ``destination``), by pages."""
    filters = [Filter("state", state, COMPARISON.EQ)] if state else None
    parent = of_destination(destination) if destination else EVERY
    for found in paging.every(storage, RESOURCE, parent, filters):
        yield with_parent(found)


def count(storage, destination, state):
    return storage.count_all(
        resource_name=RESOURCE,
        parent_id=of_destination(destination),
        filters=[Filter("state", state, COMPARISON.EQ)],
    )


def _holds(row, now):
    return row["state"] != DELIVERED or (row.get("hold_until") or 0) > now


def held(storage, keys, now):
    """The ``keys`` that an event still holds (undelivered, or within its hold)."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return set()
    found = paging.every(storage, RESOURCE, EVERY, [Filter("key", keys, COMPARISON.IN)])
    return {row["key"] for row in found if _holds(row, now)}


def every_held(storage, now):
    """Every key an event holds, for garbage collection."""
    with_key = [Filter("key", True, COMPARISON.HAS)]
    for row in paging.every(storage, RESOURCE, EVERY, with_key):
        if _holds(row, now):
            yield row["key"]


def remove(storage, state, before=None, destination=None):
    """Delete the rows of ``state`` (delivered ones whose hold ended ``before``); return
    them."""
    filters = [Filter("state", state, COMPARISON.EQ)]
    if before is not None:
        filters.append(Filter("hold_until", before, COMPARISON.LT))
    parent = of_destination(destination) if destination else EVERY
    removed = []
    # Kinto's storage deletes ``storage_max_fetch_size`` objects at most a call.
    while batch := storage.delete_all(
        resource_name=RESOURCE, parent_id=parent, filters=filters, with_deleted=False
    ):
        removed += batch
    return removed
