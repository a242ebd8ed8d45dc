"""Step 1: kinto-attachment's rows become our links when their record still names their file;
a file no record names any more is retained (see :mod:`kinto_attachment.adoption`)."""

import itertools

import transaction

from .. import locks
from ..state import legacy, links, records
from .locations import names
from .report import BATCH


def adopt_rows(registry, report):
    storage, store = registry.storage, registry.attachment_store
    if report.dry_run:
        with transaction.manager:
            for link in legacy.every(storage):
                _adopt_row(registry, store, link, report)
        return
    while True:
        # Adopted rows are removed: each batch is the first rows left.
        with transaction.manager:
            batch = list(itertools.islice(legacy.every(storage), BATCH))
            # The batch's record locks are held until it commits: taken in the order every
            # path takes them (a batch of record writes sorts its own), lest they deadlock.
            for link in sorted(batch, key=_lock_path):
                _adopt_row(registry, store, link, report)
            legacy.forget(storage, batch)
        if len(batch) < BATCH:
            return


def _lock_path(link):
    return locks.record_path(link["bucket_id"], link["collection_id"], link["record_id"])


def _adopt_row(registry, store, link, report):
    ids = (link["bucket_id"], link["collection_id"], link["record_id"])
    record = None
    if link["record_id"] is not None:
        if not report.dry_run:
            locks.hold(registry, _lock_path(link))
            if not legacy.still_there(registry.storage, link):
                return  # Replaced (its old file went with the replacement), or adopted.
        record = records.stored(registry.storage, *ids)
    location = records.location_of(record)
    named = link["key"] and names(store, location, link["key"])
    if named and len(links.record_uri(*ids).encode("utf-8")) > links.MAX_RECORD_URI:
        # PostgreSQL could not index its link (uploads refuse such ids): its file is kept
        # instead, rather than a failure at every run (``kinto migrate``, the collector).
        report.long_ids.append(links.record_uri(*ids))
        named = False
    if named:
        report.linked += 1
        if not report.dry_run:
            _shared_kept(registry.storage, link["key"])
            digest = (records.attachment_of(record) or {}).get("hash")
            links.add(registry.storage, *ids, link["key"], digest=digest)
    elif link["key"]:
        report.retained += 1
        if report.dry_run:
            report.would_retain.add(link["key"])
        else:
            links.retain(registry.storage, [link["key"]])


def _shared_kept(storage, key):
    """Retain ``key`` if another record's row or link names it too: kinto-attachment could
    leave two rows naming one file (``randomize = false``: a record whose file was lost
    keeps its row, and the next upload of that name takes the name). Both become links, and
    deleting one record must not delete the file the other names: a retained file never is
    (our own uploads never share a name, so the replacement path need not look for links)."""
    if legacy.names(storage, key, more_than=1) or links.linked_among(storage, [key]):
        links.retain(storage, [key])
