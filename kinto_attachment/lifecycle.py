"""Deleting blobs only once the transaction has decided.

A blob that a record stops referencing is deleted after the transaction commits: if it is
rolled back, the record still points at the old file, which must then still be there. A blob
written for a transaction that does not commit is deleted, since nothing will reference it.
"""

import logging


logger = logging.getLogger(__name__)


def _delete(store, keys):
    try:
        store.delete_many(keys)
    except Exception:  # A leftover blob is for garbage collection, not an error to raise.
        logger.exception("Could not delete attachment blobs %r", keys)


def delete_after_commit(request, store, keys):
    """Delete ``keys`` once the current transaction has committed successfully."""
    if not keys:
        return

    def hook(success):
        if success:
            _delete(store, keys)

    request.tm.get().addAfterCommitHook(hook)


def delete_unless_committed(request, store, keys):
    """Delete ``keys`` if the current transaction fails to commit or is aborted."""

    def after_commit(success):
        if not success:
            _delete(store, keys)

    transaction = request.tm.get()
    transaction.addAfterCommitHook(after_commit)
    transaction.addAfterAbortHook(_delete, args=(store, keys))


def discard(request, unlinked):
    """Delete the blobs of links just removed, after commit, unless ``keep_old_files`` applies."""
    settings = request.registry.attachment_settings
    keys = [
        link["key"]
        for link in unlinked
        if not settings.policy(link["bucket_id"], link["collection_id"]).keep_old_files
    ]
    delete_after_commit(request, request.registry.attachment_store, keys)
