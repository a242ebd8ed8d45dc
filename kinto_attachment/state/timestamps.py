"""Kinto's timestamp rows, made before our locks are taken, so that no write waits for a lock
while holding a row that the lock's holder will wait for.

On PostgreSQL, reading the timestamp of a resource (a collection's records, a bucket's
collections) inserts its row in the ``timestamps`` table when there is none, uncommitted until
the transaction ends: another transaction reading it meanwhile waits for that one to end.
Kinto's route factory reads it for a write of an object, before the write waits for the
object's lock (:mod:`~kinto_attachment.write_locks`); if the lock's holder then reads it (its
write of the same resource), each waits for the other: a deadlock, which PostgreSQL ends by
aborting one of them (a 503). It happens to the first writes of a new collection only: a
committed row is never waited for. So every transaction that reads a timestamp under our
locks reads it before it takes them, as Kinto's factory does: an upload creating a record,
a ``POST /batch``, a ``DELETE`` of all of a resource's objects (whose factory reads none), a
write through the ``default`` bucket (:mod:`~kinto_attachment.write_locks`). Whoever then
waits for such a row holds none of our locks yet, and the row's holder waits for nobody who
waits for it.
"""

from . import shared


_EXISTS = (
    "SELECT 1 FROM timestamps WHERE parent_id = :parent_id AND resource_name = :resource_name"
)


def ensure(registry, resources):
    """Read (so make, if missing) the timestamp row of each ``(resource_name, parent_id)`` of
    ``resources`` that has none, in the request's transaction, before it takes a lock: one
    statement when they all exist; nothing on the memory backend, whose reads lock nothing."""
    storage = registry.storage
    if not shared.rolls_back(storage):
        return
    import sqlalchemy  # With PostgreSQL only (the ``postgresql`` extra).

    exists = sqlalchemy.text(_EXISTS)
    with storage.client.connect() as session:
        missing = [
            (name, parent)
            for name, parent in sorted(set(resources))
            if session.execute(exists, {"parent_id": parent, "resource_name": name}).first()
            is None
        ]
    for name, parent in missing:
        storage.resource_timestamp(resource_name=name, parent_id=parent)
