"""Deleting blobs only once the transaction has decided, and once no download needs them.

A blob that a record stops referencing is deleted after the transaction commits: if it is
rolled back, the record still points at the old file, which must then still be there. And not
at once: downloads that read the record just before may still be opening or reading it, on
this node or another, so the transaction records it as replaced, for the garbage collector to
delete ``gc.replaced_grace_seconds`` later (:mod:`kinto_attachment.state.replaced`), or later
still if an event holds it (:mod:`kinto_attachment.events.retention`). A blob written for a
transaction that does not commit is deleted, since nothing will reference it; one written
for a transaction whose commit may have happened (its answer lost) is left to the collector.
"""

import contextlib
import functools
import logging

import transaction
from kinto.core.utils import msec_time

from .. import locks
from ..events import retention
from ..state import data_file_entries, legacy, links, replaced, shared


logger = logging.getLogger(__name__)


def _safely(cleanup, *args):
    try:
        cleanup(*args)
    except Exception:  # What is left behind is for garbage collection, not an error to raise.
        logger.exception("Cleanup failed: %s%r", cleanup.__name__, args)


def after_commit(request, then, *args):
    """Call ``then(*args)`` once the current transaction has committed successfully."""

    def hook(success):
        if success:
            _safely(then, *args)

    request.tm.get().addAfterCommitHook(hook)


def delete_after_commit(request, store, keys):
    """Delete ``keys`` once the current transaction has committed successfully (each once:
    a partial upload joined twice is obsolete twice)."""
    if keys:
        after_commit(request, store.delete_many, list(dict.fromkeys(keys)))


def on_failure(request, undo, *args):
    """Call ``undo(*args)`` if the current transaction fails to commit or is aborted."""

    def after_commit(success):
        if not success:
            _safely(undo, *args)

    txn = request.tm.get()
    txn.addAfterCommitHook(after_commit)
    txn.addAfterAbortHook(_safely, args=(undo, *args))


class _Votes:
    """A data manager that does nothing but note when the transaction's commit reaches its
    votes. It votes first (:meth:`sortKey`), before Kinto's storage, which sends ``COMMIT``
    to PostgreSQL in its own vote (zope.sqlalchemy's, sorted last): a failure before this
    vote leaves the database's transaction uncommitted for sure, one after it may come after a
    commit whose answer was lost."""

    transaction_manager = None

    def __init__(self):
        self.started = False

    def tpc_vote(self, txn):
        self.started = True

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_finish = tpc_abort = abort

    def sortKey(self):
        return "kinto_attachment.votes"

    def savepoint(self):
        """Nothing to roll back to (a listener may take savepoints: every data manager
        joined must support them)."""
        return _NothingToRollBack()

    @classmethod
    def of(cls, txn):
        """The one of ``txn``, joined to it once."""
        try:
            return txn.data(cls)
        except KeyError:
            votes = cls()
            txn.join(votes)
            txn.set_data(cls, votes)
            return votes


class _NothingToRollBack:
    def rollback(self):
        pass


def unless_committed(request, undo, *args):
    """Call ``undo(*args)``, once, if the current transaction is aborted or fails before the
    database is asked to commit it. Not once it was asked (:class:`_Votes`): a ``COMMIT``
    whose answer is lost may have committed, and what it writes may name what ``undo``
    removes; that is left to the garbage collector, which removes it if nothing does."""
    txn = request.tm.get()
    votes = _Votes.of(txn)
    done = []

    def maybe(success=False):
        if not success and not votes.started and not done:
            done.append(True)
            _safely(undo, *args)

    txn.addAfterCommitHook(maybe)
    txn.addAfterAbortHook(maybe)


def delete_unless_committed(request, store, keys):
    """Delete ``keys`` if the current transaction is known not to have committed
    (:func:`unless_committed`), their names in quarantine meanwhile (:func:`_let_go`)."""
    if keys:
        unless_committed(request, _let_go, request.registry, store, keys)


#: How long the name of a blob being deleted after its upload failed is held, should the
#: process die before its delete returns (then it has no retry left to send), seconds.
HELD_WHILE_DELETED = 3600


def _let_go(registry, store, keys):
    """Delete the blobs of ``keys``, which no committed write named, their names held
    meanwhile (:func:`_holding`)."""
    keys = _unnamed(registry, keys)
    if keys:
        with _holding(registry, keys):
            store.delete_many(keys)


def let_upload_go(registry, store, state):
    """Drop what the resumable upload ``state`` wrote (``store.discard``), which may be the
    blob of its ``key`` (a finish whose transaction failed): that name held while the store
    deletes it (:func:`_holding`), not otherwise: another upload may be on its way to it.
    Not where that blob is named (:func:`_unnamed`): what else the upload wrote is then left
    to the collector."""
    if _unnamed(registry, [state["key"]]):
        store.discard(state, name_holder(registry))


def name_holder(registry):
    """``holding(keys)``: the context within which a store deletes blobs whose names it may
    give again (:func:`_holding`)."""
    return functools.partial(_holding, registry)


def _unnamed(registry, keys):
    """``keys``, but those a link or a ``/data/files`` entry names on a storage that cannot
    roll back (Kinto's memory backend writes at once: a failed transaction's record is kept,
    naming its file); all of them on one that can (nothing the transaction wrote is kept)."""
    storage = registry.storage
    if shared.rolls_back(storage):
        return keys
    named = links.linked_among(storage, keys)
    named |= {entry["key"] for entry in data_file_entries.every(storage)}
    return [key for key in keys if key not in named]


@contextlib.contextmanager
def _holding(registry, keys):
    """Within it, the blobs of ``keys`` are deleted. A store's client sends a delete again
    when its answer is lost, and an upload that took a name meanwhile would lose its file to
    it: the names that can be given again (:func:`.replaced.reusable`) are held in
    quarantine (:func:`.replaced.quarantine`) while the delete may be sent, and a minute
    after, each time in a transaction of its own, committed. Without the quarantine (Kinto's
    storage unreachable), nothing is deleted: the collector will."""
    reusable = replaced.reusable(keys)
    if not reusable:
        yield
        return

    def hold(seconds):
        with transaction.manager:
            replaced.quarantine(registry, reusable, msec_time(), seconds)

    shared.on_its_own(hold, HELD_WHILE_DELETED)
    try:
        yield
    finally:
        shared.on_its_own(hold, replaced.QUARANTINE_SECONDS)


def retire(request, keys):
    """Delete ``keys``, which the current transaction stops referencing, once no download
    can be reading them (:func:`unreferenced`), after the transaction has committed."""
    if keys:
        doomed = unreferenced(request.registry, keys, msec_time())
        delete_after_commit(request, request.registry.attachment_store, doomed)


def unreferenced(registry, keys, now):
    """The ``keys`` to delete once the current transaction, which stops referencing them,
    has committed; the others are recorded as replaced, in it (a rollback leaves them
    referenced, a crash leaves them to the collector): all of them, due
    ``gc.replaced_grace_seconds`` from ``now``, while a download may be reading them; with no
    grace, those an event holds, due at once, for the collector to delete once none does.
    The names of those deleted stay taken a while (:func:`.replaced.quarantine`).

    A retained blob (:func:`.links.retain`) is never deleted: something this transaction
    does not see may still need it (a copy of the record that names it without a link, found
    by adoption; a file ``keep_old_files`` keeps). The collector leaves the retained among
    the replaced blobs; deleted at once, they are looked for here (one query, only then)."""
    grace = registry.attachment_settings.gc.replaced_grace_seconds
    if grace:
        replaced.add(registry.storage, keys, until=now + grace * 1000)
        return []
    retained = links.retained_among(registry.storage, keys)
    keys = [key for key in keys if key not in retained]
    held = retention.held(registry, keys, now)
    replaced.add(registry.storage, held, until=now)
    doomed = [key for key in keys if key not in held]
    replaced.quarantine(registry, doomed, now)
    return doomed


def _named_elsewhere(storage, keys):
    """The ``keys`` a row of kinto-attachment or one of our links names."""
    if not keys:
        return set()
    return legacy.naming(storage, keys) | links.linked_among(storage, keys)


def discard(request, unlinked):
    """Retire the blobs of links just removed (:func:`retire`); under ``keep_old_files``,
    record them as retained instead, so that garbage collection never takes them for
    orphans.

    A blob of kinto-attachment's rows that another of its rows, or one of our links, still
    names stays: kinto-attachment could give two records one file (``randomize = false``, a
    record that lost its file, the next upload of that name), and until adoption has read
    its rows (:mod:`kinto_attachment.adoption`, which retains such a file) deleting or
    replacing one record's deleted the file the other still names. Two such records deleted
    at once would each see the other's row, not yet removed, and keep the file for good: a
    shared file is looked at again under a lock of its name (``("legacy-files", key)``), which
    the other waits for, and then sees the first's removal committed. Only shared files are
    locked: a bucket's deletion may unlink thousands of files, never shared."""
    settings = request.registry.attachment_settings
    storage = request.registry.storage
    kept, deleted = [], []
    for link in unlinked:
        keep = settings.policy(link["bucket_id"], link["collection_id"]).keep_old_files
        (kept if keep else deleted).append(link["key"])
    inherited = {link["key"] for link in unlinked if "legacy" in link}.intersection(deleted)
    shared = _named_elsewhere(storage, inherited)
    if shared:
        for key in sorted(shared):
            locks.hold(request.registry, ("legacy-files", key))
        shared = _named_elsewhere(storage, shared)
        deleted = [key for key in deleted if key not in shared]
    links.retain(storage, kept)
    retire(request, deleted)


def delete_orphans(registry, orphans, now):
    """Delete ``orphans`` (blobs a listing found that nothing referenced: the collector's, a
    flush's), the names of committed ones kept in quarantine first
    (:func:`.replaced.quarantine`: a delete the store's client sends again must find no new
    file under a name; temporary files have names nobody asks for).

    Only those still the object listed are deleted (:func:`_still_listed`): a listing may be
    minutes old when its orphans go (a large store's; the orphans whose names say nobody's
    wait for its end), and meanwhile another collector may have deleted one, its name's
    quarantine ended, and an upload taken the name for a record. The names are quarantined
    before the objects are looked at again: no upload takes one after the look."""
    if not orphans:
        return
    with transaction.manager:
        names = [orphan.key for orphan in orphans if not orphan.temporary]
        replaced.quarantine(registry, names, now)
    store = registry.attachment_store
    store.delete_many([orphan.key for orphan in orphans if _still_listed(store, orphan)])


def _still_listed(store, orphan):
    """Whether the store still holds ``orphan`` as it was listed: same version (where the
    listing gave one), same date to the second (where the store tells it)."""
    current = store.stat(orphan.key)
    if current is None:
        return False  # Deleted meanwhile (another collector): nothing to do.
    changed = orphan.version is not None and current.version != orphan.version
    if current.modified_ms is not None:
        changed |= current.modified_ms // 1000 != orphan.modified_ms // 1000
    if changed:
        logger.info("Keeping %r: written again since it was listed", orphan.key)
    return not changed
