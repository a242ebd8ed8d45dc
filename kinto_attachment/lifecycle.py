"""Deleting blobs only once the transaction has decided.

A blob that a record stops referencing is deleted after the transaction commits: if it is
rolled back, the record still points at the old file, which must then still be there. A blob
written for a transaction that does not commit is deleted, since nothing will reference it.
"""

import logging

from .state import links


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
    """Delete ``keys`` once the current transaction has committed successfully."""
    if keys:
        after_commit(request, store.delete_many, keys)


def on_failure(request, undo, *args):
    """Call ``undo(*args)`` if the current transaction fails to commit or is aborted."""

    def after_commit(success):
        if not success:
            _safely(undo, *args)

    transaction = request.tm.get()
    transaction.addAfterCommitHook(after_commit)
    transaction.addAfterAbortHook(_safely, args=(undo, *args))


def delete_unless_committed(request, store, keys):
    """Delete ``keys`` if the current transaction fails to commit or is aborted."""
    if keys:
        on_failure(request, store.delete_many, keys)


def discard(request, unlinked):
    """Delete the blobs of links just removed, after commit; under ``keep_old_files``, record
    them as retained instead, so that garbage collection never takes them for orphans."""
    settings = request.registry.attachment_settings
    kept, deleted = [], []
    for link in unlinked:
        keep = settings.policy(link["bucket_id"], link["collection_id"]).keep_old_files
        (kept if keep else deleted).append(link["key"])
    links.retain(request.registry.storage, kept)
    delete_after_commit(request, request.registry.attachment_store, deleted)
