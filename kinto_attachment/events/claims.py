"""Claiming outbox rows for delivery: the oldest pending row of each subject and destination
whose attempt is due, leased to one dispatcher for a while (``claimed_until``).

The lease is taken in a short transaction of its own, then the delivery runs without one: a
dispatcher killed meanwhile leaves a lease that runs out, and another dispatcher (of any node)
delivers the row again. The rows delivered in a round are marked together, in one statement
on PostgreSQL (:meth:`PostgreSQLClaims.delivered`): the dispatcher shares its process with the
server's requests, and a transaction per event cost uploads a third of their throughput.

Whatever a delivery leads to (delivered, retried or dead, released) is written only while
the row is still pending under the lease the attempt took (its ``claimed_until``, greater at
each claim): an attempt that outlived its lease can neither mark delivered nor put back to
pending a row that another dispatcher claimed meanwhile, and that other one's result stands.

A row waits while an earlier row of its subject and destination is pending (leased or not):
order holds across nodes and retries, and a dead row lets the next one go.

On PostgreSQL the heads are read with ``FOR UPDATE SKIP LOCKED`` on Kinto's ``objects``
table: two dispatchers claiming at once each take other rows, neither waits. On the memory
backend, which lives in one process, a lock does it.
"""

import json
import threading

import transaction

from ..state import outbox


CLAIM = """
WITH heads AS (
    SELECT o.id, o.parent_id FROM objects o
    WHERE o.resource_name = :resource AND o.parent_id LIKE :parents
      AND o.data->>'state' = 'pending'
      AND (o.data->>'next_attempt_at')::bigint <= :now
      AND (o.data->>'claimed_until')::bigint <= :now
      AND NOT EXISTS (
          SELECT 1 FROM objects p
          WHERE p.resource_name = o.resource_name AND p.parent_id = o.parent_id
            AND p.data->>'state' = 'pending'
            AND (p.data->>'seq')::bigint < (o.data->>'seq')::bigint
      )
    ORDER BY (o.data->>'next_attempt_at')::bigint
    LIMIT :limit
    FOR UPDATE OF o SKIP LOCKED
)
UPDATE objects SET data = objects.data || jsonb_build_object('claimed_until', :until)
FROM heads
WHERE objects.resource_name = :resource AND objects.id = heads.id
  AND objects.parent_id = heads.parent_id
RETURNING objects.id, objects.parent_id, objects.data
"""


DELIVERED = """
UPDATE objects SET data = objects.data || jsonb_build_object(
    'state', 'delivered',
    'attempts', (objects.data->>'attempts')::bigint + 1,
    'delivered_at', CAST(:now AS bigint),
    'hold_until', CASE WHEN objects.data ? 'key' THEN CAST(:held AS bigint)
                       ELSE CAST(:now AS bigint) END,
    'claimed_until', 0)
FROM unnest(CAST(:parents AS text[]), CAST(:ids AS text[]), CAST(:claims AS bigint[]))
    AS done(parent_id, id, claimed_until)
WHERE objects.resource_name = :resource
  AND objects.parent_id = done.parent_id AND objects.id = done.id
  AND objects.data->>'state' = 'pending'
  AND (objects.data->>'claimed_until')::bigint = done.claimed_until
RETURNING objects.id
"""


#: Changes of one row, while it is pending under the lease ``:claimed``.
CHANGE = """
UPDATE objects SET data = objects.data || CAST(:changes AS jsonb)
WHERE resource_name = :resource AND parent_id = :parent AND id = :id
  AND data->>'state' = 'pending' AND (data->>'claimed_until')::bigint = :claimed
RETURNING id
"""


#: A dead row made pending again, or removed, only while it is still dead (two operators'
#: commands at once: one would revive a row the other's retry had delivered meanwhile).
REVIVE = """
UPDATE objects SET data = objects.data || CAST(:changes AS jsonb)
WHERE resource_name = :resource AND parent_id = :parent AND id = :id
  AND data->>'state' = 'dead'
RETURNING id
"""
PURGE = """
DELETE FROM objects
WHERE resource_name = :resource AND parent_id = :parent AND id = :id
  AND data->>'state' = 'dead'
RETURNING id
"""


#: The pending rows alone, which claims read (``kinto migrate`` creates it): delivered rows,
#: kept while they hold their blob, and every other object are not scanned at each claim.
PENDING_INDEX = f"""
CREATE INDEX IF NOT EXISTS idx_attachment_events_pending
    ON objects (((data->>'next_attempt_at')::bigint))
    WHERE resource_name = '{outbox.RESOURCE}' AND data->>'state' = 'pending'
"""


def create_index(client):
    """Index the pending rows of the outbox (PostgreSQL; ``client``: Kinto's storage client)."""
    import sqlalchemy

    with client.connect(force_commit=True) as session:
        session.execute(sqlalchemy.text(PENDING_INDEX))


#: The dispatcher's own transactions (claims, marks) do not wait for their commit to reach the
#: disk: one lost with a crash of PostgreSQL only makes an event delivered again, which at
#: least once allows; the uploads' transactions keep waiting, and keep their events.
UNSYNCED = "SET LOCAL synchronous_commit TO OFF"


class PostgreSQLClaims:
    def __init__(self, storage):
        self._storage = storage

    def unsynced(self):
        """Let the current transaction commit without waiting for its WAL flush."""
        import sqlalchemy

        with self._storage.client.connect() as session:
            session.execute(sqlalchemy.text(UNSYNCED))

    def claim(self, now, until, limit, destination=None):
        """Lease up to ``limit`` due heads (of ``destination``'s rows, or every one's) until
        ``until``; return them."""
        import sqlalchemy

        placeholders = {
            "resource": outbox.RESOURCE,
            "parents": _parents(destination).replace("*", "%"),
            "now": now,
            "until": until,
            "limit": limit,
        }
        with transaction.manager, self._storage.client.connect() as session:
            session.execute(sqlalchemy.text(UNSYNCED))
            found = session.execute(sqlalchemy.text(CLAIM), placeholders).fetchall()
        return [{**data, "id": id_, "parent": parent} for id_, parent, data in found]

    def delivered(self, rows, now, hold):
        """Mark ``rows`` delivered at ``now``, the blobs of their ``stored`` events held
        ``hold`` milliseconds, in the current transaction; return the ids of those marked.
        A row purged meanwhile, or claimed again, is not."""
        import sqlalchemy

        placeholders = {
            "resource": outbox.RESOURCE,
            "parents": [row["parent"] for row in rows],
            "ids": [row["id"] for row in rows],
            "claims": [row["claimed_until"] for row in rows],
            "now": now,
            "held": now + hold,
        }
        with self._storage.client.connect() as session:
            found = session.execute(sqlalchemy.text(DELIVERED), placeholders).fetchall()
        return {id_ for (id_,) in found}

    def change(self, row, **changes):
        """Apply ``changes`` to ``row`` if it is still pending under the lease it was claimed
        with, in the current transaction; return whether it was."""
        changes = json.dumps(changes)
        return self._if_still(CHANGE, row, claimed=row["claimed_until"], changes=changes)

    def revive(self, row, **changes):
        """Apply ``changes`` to ``row`` if it is still dead; return whether it was."""
        return self._if_still(REVIVE, row, changes=json.dumps(changes))

    def purge(self, row):
        """Remove ``row`` if it is still dead; return whether it was."""
        return self._if_still(PURGE, row)

    def _if_still(self, statement, row, **more):
        """Run ``statement``, conditional on the row's state, on ``row``: whether it applied."""
        import sqlalchemy

        placeholders = {"resource": outbox.RESOURCE, "parent": row["parent"], "id": row["id"]}
        with self._storage.client.connect() as session:
            found = session.execute(sqlalchemy.text(statement), {**placeholders, **more})
            return bool(found.fetchall())


class MemoryClaims:
    def __init__(self, storage):
        self._storage = storage
        self._lock = threading.Lock()

    def unsynced(self):
        """Nothing to flush in memory."""

    def claim(self, now, until, limit, destination=None):
        """As on PostgreSQL; a subject whose head is still ``uncommitted`` waits for it: its
        transaction committed and let go of the record's lock, but the hook that makes its
        row pending runs after the lock's, and the record's next change may come between."""
        with self._lock:
            heads = {}
            for row in self._storage.list_all(
                resource_name=outbox.RESOURCE, parent_id=_parents(destination)
            ):
                row = outbox.with_parent(row)
                if row["state"] in (outbox.PENDING, outbox.UNCOMMITTED):
                    head = heads.get(row["parent"])
                    if head is None or row["seq"] < head["seq"]:
                        heads[row["parent"]] = row
            due = [
                row
                for row in heads.values()
                if row["state"] == outbox.PENDING
                and row["next_attempt_at"] <= now
                and row["claimed_until"] <= now
            ]
            due.sort(key=lambda row: row["next_attempt_at"])
            return [outbox.change(self._storage, row, claimed_until=until) for row in due[:limit]]

    def delivered(self, rows, now, hold):
        marked = set()
        for row in rows:
            if self.change(
                row,
                state=outbox.DELIVERED,
                attempts=row["attempts"] + 1,
                delivered_at=now,
                hold_until=now + hold if row.get("key") else now,
                claimed_until=0,
            ):
                marked.add(row["id"])
        return marked

    def change(self, row, **changes):
        with self._lock:
            if not self._is(row, outbox.PENDING, claimed_until=row["claimed_until"]):
                return False
            return outbox.change(self._storage, row, **changes) is not None

    def revive(self, row, **changes):
        with self._lock:
            if not self._is(row, outbox.DEAD):
                return False
            return outbox.change(self._storage, row, **changes) is not None

    def purge(self, row):
        with self._lock:
            if not self._is(row, outbox.DEAD):
                return False
            outbox.delete(self._storage, row)
            return True

    def _is(self, row, state, **fields):
        """Whether ``row`` is stored in ``state`` (with ``fields``), under the lock."""
        current = outbox.get(self._storage, row)
        return (
            current is not None
            and current["state"] == state
            and all(current.get(name) == value for name, value in fields.items())
        )


def _parents(destination):
    """The parent ids (a pattern) of the rows of ``destination``, or of every one's."""
    return outbox.of_destination(destination) if destination else outbox.EVERY


def for_storage(storage):
    """The claims matching Kinto's storage backend."""
    if getattr(storage, "client", None) is None:
        return MemoryClaims(storage)
    return PostgreSQLClaims(storage)
