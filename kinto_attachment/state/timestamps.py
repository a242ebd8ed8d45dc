"""Kinto's timestamp rows, made before our locks are taken, so that no write waits for a lock
while holding one that a lock's holder will wait for.

On PostgreSQL, reading the timestamp of a resource (a collection's records, a bucket's
collections) inserts its row in the ``timestamps`` table when there is none, uncommitted until
the transaction ends. Kinto's route factory reads it for a write of an object, before the write
waits for the object's lock (:mod:`~kinto_attachment.write_locks`); the lock's holder, writing
the same resource, reads it too, and waits for that row: a deadlock, which PostgreSQL ends by
aborting one of the two (a 503). It happens to the first writes of a new collection only, once:
the row, once committed, is never locked by a read again. So the writes that take a lock
before Kinto's resource reads the timestamp (an upload's record step, a ``POST /batch``) first
make sure the rows they will read exist, committed in a transaction of their own (as any
``GET`` of the resource would have made them): Kinto's factory then waits for nobody, or for
a transaction that holds none of our locks.
"""

import transaction

from . import shared


_EXISTS = (
    "SELECT 1 FROM timestamps WHERE parent_id = :parent_id AND resource_name = :resource_name"
)


def ensure(registry, resources):
    """Make the timestamp row of each ``(resource_name, parent_id)`` of ``resources`` that has
    none, and commit it, before the caller takes a lock; nothing on the memory backend, whose
    reads lock nothing."""
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
    if missing:
        shared.on_its_own(_make, storage, missing)


def _make(storage, missing):
    with transaction.manager:
        for name, parent in missing:
            storage.resource_timestamp(resource_name=name, parent_id=parent)
