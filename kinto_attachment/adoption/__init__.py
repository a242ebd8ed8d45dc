"""Adopting what kinto-attachment left, so that its files are ours to serve, replace and delete.

A server that switches from kinto-attachment keeps its records (their ``attachment`` field
names each file by URL) and kinto-attachment's links (:mod:`kinto_attachment.state.legacy`).
Adoption turns both into our links:

1. each kinto-attachment link becomes our link when its record still names that file; a file
   its record no longer names (kept by ``keep_old_files``, or a record gone) is recorded as
   retained, never deleted; the row is then removed;
2. the file of each record with an attachment but no link (the key its ``location`` names
   under our ``base_url``) is recorded as retained: served, never deleted, by us or by the
   garbage collector. Such records are often copies (kinto-signer copies records between
   collections): a link would let deleting the copy delete the original's file, which
   kinto-attachment never did for a record it had no link for. A location outside
   ``base_url`` is reported (its download is a 404), never guessed;
3. at the first adoption only, every file the store holds that nothing references (no record,
   link, entry, upload nor retained file) is recorded as retained too, and listed: the
   previous plugin left it there, and we cannot know why. kinto-attachment with
   ``keep_old_files = true`` (Remote Settings' setting) removes the row of a replaced file
   and keeps the file, on purpose: it has no row nor record left, and without this the first
   orphan pass would delete what the setting was set to keep. Staged temporary files are no
   such file (a crash left them) and stay the collector's. A store that lacks most of the
   files references name is not the servers' (a volume not mounted where ``kinto migrate``
   runs): it is not listed, and adoption does not end, until it is run with the right one.

It runs by batches, each in its own transaction with what it changes locked, so that it can
run while the server serves, be interrupted and run again: every step is idempotent. It runs
from ``kinto migrate`` (a Kinto plugin migration, on PostgreSQL) and, once, from the garbage
collector before its first orphan pass: a file only a record's ``location`` names must never be
taken for an orphan. When it is done, a marker says so and neither runs it again.
"""

import logging

import transaction
from kinto.core.storage.exceptions import ObjectNotFoundError

from .copies import keep_unlinked_files
from .report import Report
from .rows import adopt_rows
from .unreferenced import keep_unreferenced_files, store_mismatch


logger = logging.getLogger(__name__)

MARKER = {"resource_name": "attachment-adoption", "parent_id": "attachment-adoption"}
MARKER_ID = "kinto-attachment"


def done(registry):
    """Whether adoption has completed (remembered by the process once it has)."""
    if getattr(registry, "attachment_adopted", False):
        return True
    with transaction.manager:
        try:
            registry.storage.get(**MARKER, object_id=MARKER_ID)
        except ObjectNotFoundError:
            return False
    registry.attachment_adopted = True
    return True


def adopt(registry, dry_run=False):
    """Adopt everything kinto-attachment left; return the :class:`Report`."""
    report = Report(dry_run=dry_run)
    first = not done(registry)
    adopt_rows(registry, report)
    keep_unlinked_files(registry, report)
    if first:
        report.store_mismatch = store_mismatch(registry)
    if first and report.store_mismatch is None:
        keep_unreferenced_files(registry, report)
        if not dry_run:
            with transaction.manager:
                registry.storage.update(**MARKER, object_id=MARKER_ID, obj={"done": True})
            registry.attachment_adopted = True
    log = logger.error if report.store_mismatch else logger.info
    log("Adoption of kinto-attachment data:\n%s", report.describe())
    return report
