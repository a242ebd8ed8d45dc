"""Transaction-long locks that serialise the writes of one record, collection, bucket or file.

Two requests that change the same record (two uploads, an upload and a delete, a ``PATCH`` of
the record and an upload) must not interleave their reads and writes: with PostgreSQL's READ
COMMITTED isolation, each would act on what it read before the other committed, and a link, a
blob or a whole record would be lost or leaked. So every write path takes a lock *before* it
reads what it will change, and holds it until its transaction ends.

Locks are named by paths, from the root down: ``("buckets", bid, cid, rid)`` for a record,
``("buckets", bid, cid)`` for a collection, ``("data-files", id)`` for a ``/data/files``
entry, ``("uploads", id)`` for a resumable upload, ``("legacy-files", key)`` for a file two of
kinto-attachment's records share (taken last, once its record's or collection's lock is held:
:func:`kinto_attachment.uploads.lifecycle.discard`). Holding a path exclusively also holds each
of its ancestors shared, always from the root down, so that:

- two uploads into one collection run side by side (the collection is shared by both),
- deleting the collection waits for them, and they wait for it (exclusive on the collection),
- ``__flush__`` (exclusive on the root) waits for everything.

Since every path is locked in the same order, and before any row it protects is written, our
locks cannot deadlock with one another nor with the row locks Kinto takes after them. The one
row Kinto may lock before (a resource's timestamp, inserted by the first read of a new
collection's records) is read before the locks by every transaction that reads it under them
(:mod:`kinto_attachment.state.timestamps`). A
transaction that holds several paths takes them in order too: a ``POST /batch`` locks every
path its writes will lock, sorted (ancestors first), before the first runs
(:func:`kinto_attachment.write_locks.lock_batch`).

On PostgreSQL these are advisory transaction locks (``pg_advisory_xact_lock``): every node of
a cluster sees them, PostgreSQL releases them at commit, rollback or when a killed process's
connection drops, and they take no row (no table or timestamp contention). On the memory
backend, which lives in one process, they are an in-process table released by transaction
hooks.
"""

import hashlib
import threading

import transaction


ROOT = ()


class Busy(Exception):
    """The lock is held by another transaction (only raised when not waiting)."""


def _ancestors(path):
    return [tuple(path[:depth]) for depth in range(len(path))]


def record_path(bucket_id, collection_id=None, record_id=None):
    """The lock path of a bucket, a collection or a record (trailing ``None`` ids omitted)."""
    ids = [i for i in (bucket_id, collection_id, record_id) if i is not None]
    return ("buckets", *ids)


class PostgreSQLLocks:
    """Advisory locks in the current transaction of Kinto's PostgreSQL storage."""

    def __init__(self, client):
        self._client = client

    @staticmethod
    def _key(path):
        # A signed 64-bit integer, the key space of advisory locks.
        digest = hashlib.blake2b("\x1f".join(("kinto-attachment", *path)).encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big", signed=True)

    def hold(self, path, exclusive=True, wait=True):
        import sqlalchemy

        levels = [(ancestor, False) for ancestor in _ancestors(path)] + [(path, exclusive)]
        prefix = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
        calls = [
            f"{prefix if level_exclusive else prefix + '_shared'}({self._key(level)})"
            for level, level_exclusive in levels
        ]
        with self._client.connect() as session:
            if wait:
                # Every level in one round trip, in order (root first: what prevents
                # deadlocks), which the statements of a block keep, and the expressions of one
                # select list need not.
                block = "".join(f"PERFORM {call}; " for call in calls)
                session.execute(sqlalchemy.text(f"DO $$ BEGIN {block}END $$"))
                return
            for call in calls:
                if not session.execute(sqlalchemy.text(f"SELECT {call}")).scalar():
                    raise Busy(path)


class MemoryLocks:
    """The same semantics in one process: shared/exclusive locks owned by transactions."""

    def __init__(self):
        self._condition = threading.Condition()
        #: path -> {transaction: exclusive?}
        self._holders = {}

    def _grantable(self, path, owner, exclusive):
        others = {t: x for t, x in self._holders.get(path, {}).items() if t is not owner}
        return not others if exclusive else not any(others.values())

    def _take(self, path, owner, exclusive, wait):
        with self._condition:
            while not self._grantable(path, owner, exclusive):
                if not wait:
                    raise Busy(path)
                self._condition.wait()
            holders = self._holders.setdefault(path, {})
            first = owner not in holders
            holders[owner] = holders.get(owner, False) or exclusive
        return first

    def _release(self, owner, paths):
        with self._condition:
            for path in paths:
                holders = self._holders.get(path, {})
                holders.pop(owner, None)
                if not holders:
                    self._holders.pop(path, None)
            self._condition.notify_all()

    def hold(self, path, exclusive=True, wait=True):
        owner = transaction.get()
        taken = []
        try:
            for ancestor in _ancestors(path):
                if self._take(ancestor, owner, False, wait):
                    taken.append(ancestor)
            if self._take(tuple(path), owner, exclusive, wait):
                taken.append(tuple(path))
        except Busy:
            self._release(owner, taken)
            raise
        if taken:
            owner.addAfterCommitHook(lambda _success: self._release(owner, taken))
            owner.addAfterAbortHook(self._release, args=(owner, taken))


def for_storage(storage):
    """The lock table matching Kinto's storage backend."""
    client = getattr(storage, "client", None)
    if client is None:
        return MemoryLocks()
    if client.commit_manually:
        from pyramid.exceptions import ConfigurationError

        raise ConfigurationError(
            "kinto_attachment needs kinto.transaction_per_request = true with PostgreSQL"
        )
    return PostgreSQLLocks(client)


def hold(registry, path, exclusive=True, wait=True):
    """Lock ``path`` (and share its ancestors) until the current transaction ends: nothing
    more when the transaction holds it, or one of its ancestors, exclusively already, which
    no other transaction can then hold, nor any path under it. A plural ``DELETE`` of 10,000
    records, its collection held, took a lock per record: PostgreSQL's lock table, shared by
    every database of the server (``max_locks_per_transaction`` × connections), ran out
    with two of them at once ("out of shared memory": any transaction of the server then
    failed)."""
    table, path = registry.attachment_locks, tuple(path)
    held = _Held.of(transaction.get()).paths(table)
    if any(path[:depth] in held for depth in range(len(path) + 1)):
        return
    table.hold(path, exclusive=exclusive, wait=wait)
    if exclusive:
        held.add(path)


class _Held:
    """What the transaction holds exclusively, by lock table: a data manager joined to it,
    so that it holds nothing once the transaction ends (an after-commit hook included) and
    rolling back to a savepoint lets go of what was held since, as PostgreSQL does of the
    locks themselves."""

    transaction_manager = None

    def __init__(self):
        self._paths = {}  # id of the lock table -> {path}

    def paths(self, table):
        return self._paths.setdefault(id(table), set())

    def _forget(self, txn=None):
        self._paths = {}

    abort = tpc_finish = tpc_abort = _forget

    def tpc_begin(self, txn):
        pass

    commit = tpc_vote = tpc_begin

    def sortKey(self):
        return "kinto_attachment.held"

    def savepoint(self):
        return _HeldThen(self, {table: set(paths) for table, paths in self._paths.items()})

    @classmethod
    def of(cls, txn):
        """The one of ``txn``, joined to it once."""
        try:
            return txn.data(cls)
        except KeyError:
            held = cls()
            txn.join(held)
            txn.set_data(cls, held)
            return held


class _HeldThen:
    def __init__(self, held, paths):
        self._held, self._paths = held, paths

    def rollback(self):
        self._held._paths = {table: set(paths) for table, paths in self._paths.items()}
