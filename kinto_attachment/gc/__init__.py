"""Garbage collection: what expired, and what a crash left behind.

*Expired*: ``/data/files`` entries past their expiration, and resumable uploads abandoned past
theirs. Each is removed by compare-and-delete: under the lock its writers take, and only if it
is still the entry found expired (same ``last_modified``), so that an id uploaded again
meanwhile keeps its new content, and an upload a request is writing to is left for the next
round. The metadata goes in a transaction, the bytes once it has committed.

*Replaced*: blobs that records and entries stopped referencing, once
``gc.replaced_grace_seconds`` have passed (:mod:`kinto_attachment.state.replaced`): each entry
is claimed in a transaction (of two collectors, one only gets it), then its blob deleted. An
entry whose blob an event still holds (:mod:`kinto_attachment.events.retention`) waits.

*Orphans*: a crash (``kill -9``) can leave staged files, S3 multipart uploads never completed
nor aborted, and committed blobs that nothing references (stored for a transaction that never
committed, or replaced and never deleted). The references are indexed first (see
:mod:`kinto_attachment.state.references`), then the store is listed: an object no reference names
and older than ``gc.orphans_grace_seconds`` is deleted, and so is an unreferenced pending
upload. The grace period protects whatever requests are writing, on any node. References
whose blob is missing (*dangling*) are reported, never touched. Only this instance's orphans
are deleted: a name carrying another instance's tag (:mod:`kinto_attachment.state.instance`)
is that instance's, kept; so is a name carrying none while another's is in sight.

Runs in every server (expired entries every ``data_files.gc_interval_seconds``, orphans every
``gc.orphans_interval_seconds``) and as a command (:mod:`.command`)::

    kinto-attachment-gc --ini config/postgresql.ini [--dry-run]

Several nodes may collect at once: deleting what another node just deleted is harmless.
The store (``base_path``, the S3 or the GCS bucket) must hold nothing but attachments.

The command judges the store by what *its own* storage backend holds, so it refuses a
configuration whose storage lives in a server's process (Kinto's memory backend): it would see
no record, and take every file of the running server for an orphan. There, the server's own
thread collects, since it sees the records.
"""

import logging
import threading
from time import monotonic

import transaction
from pyramid.events import ApplicationCreated

from .. import adoption, metrics
from ..events import recording, retention
from ..state import data_file_entries, links, replaced, shared, tus_uploads
from ..uploads import lifecycle
from . import orphans as orphans_pass
from .orphans import DELETE_BATCH
from .report import Report
from .store_check import Refused, check_store


logger = logging.getLogger(__name__)


def collect(registry, now=None, dry_run=False, orphans=True):
    """Collect expired entries and, with ``orphans``, orphans; return a :class:`Report`.

    ``now`` is in milliseconds since the epoch. With ``dry_run``, nothing is removed.
    """
    now = now or data_file_entries.msec_time()
    report = Report(dry_run=dry_run)
    named = 0
    if orphans:
        # Before anything is removed (or adopted from a listing).
        named = check_store(registry, now)
    _collect_data_files(registry, now, report)
    _collect_uploads(registry, now, report)
    _collect_replaced(registry, now, report)
    if orphans and not adoption.done(registry):
        # Files that only records or kinto-attachment's links name are no orphans: adopt
        # them first (a dry run only looks, and looks for no orphans if there are some).
        adopted = adoption.adopt(registry, dry_run=dry_run)
        if adopted.store_mismatch:
            raise Refused(adopted.store_mismatch)
        report.adoption_pending = dry_run and adopted.changes > 0
        report.kept_at_adoption = adopted.unreferenced
    if orphans and not report.adoption_pending:
        orphans_pass.collect(registry, now, report, untagged_ours=named > 0)
    metrics.collected(registry, report)
    return report


def _unchanged(current, found):
    return current is not None and current["last_modified"] == found["last_modified"]


def _expired_data_files(storage, now):
    with transaction.manager:
        return [
            e for e in data_file_entries.every(storage) if not data_file_entries.is_live(e, now)
        ]


def _collect_data_files(registry, now, report):
    """Expired entries go at once; their blobs as a deleted entry's do
    (:func:`~kinto_attachment.uploads.lifecycle.unreferenced`): ``gc.replaced_grace_seconds``
    later, since a download that began while the file was live may still be reading it."""
    storage, keys = registry.storage, []
    for found in _expired_data_files(storage, now):
        if report.dry_run:
            report.expired_files.append(found)
            continue
        with transaction.manager:
            # Waits for a writer of this id: then finds its entry, changed.
            data_file_entries.lock(registry, found["id"])
            entry = data_file_entries.get(storage, found["id"])
            if not _unchanged(entry, found) or data_file_entries.is_live(entry, now):
                continue
            data_file_entries.delete(storage, entry)
            metadata = data_file_entries.metadata(registry.attachment_store, entry)
            recording.deleted(registry, {"file_id": entry["id"]}, metadata)
            doomed = lifecycle.unreferenced(registry, [entry["key"]], now)
        report.expired_files.append(entry)
        keys += doomed
    if keys:
        registry.attachment_store.delete_many(keys)
        logger.info("Collected %d expired data files", len(keys))


def _expired_uploads(storage, now):
    with transaction.manager:
        return [u for u in tus_uploads.every(storage) if u["expires"] <= now]


def _collect_uploads(registry, now, report):
    storage, store = registry.storage, registry.attachment_store
    for found in _expired_uploads(storage, now):
        if report.dry_run:
            report.expired_uploads.append(found)
            continue
        with transaction.manager:
            try:
                tus_uploads.lock(registry, found["id"])
            except tus_uploads.Locked:  # A request is writing to it: its expiration may move.
                report.busy_uploads.append(found["id"])
                continue
            upload = tus_uploads.get(storage, found["id"])
            if not _unchanged(upload, found) or upload["expires"] > now:
                continue
            tus_uploads.remove(storage, upload)
        report.expired_uploads.append(upload)
        lifecycle.let_upload_go(registry, store, upload["store"])
    if report.expired_uploads and not report.dry_run:
        logger.info("Collected %d abandoned uploads", len(report.expired_uploads))


def _collect_replaced(registry, now, report):
    """Delete the replaced blobs due at ``now`` that no event holds, by batches: each batch's
    entries claimed in a transaction, then their blobs deleted once it has committed.

    A blob that is also retained (:func:`.links.retained_among`: a record without a link
    may still name it, or ``keep_old_files`` keeps it) is never deleted: its entry is
    claimed, the blob stays. Retiring records a retained blob as replaced like any other
    (uploads are spared a query: ``uploads.lifecycle.retire``): deleting the record that had
    its link does so, while a copy without a link may still name it. Nor is one that a link
    names (:func:`.links.linked_among`): uploads never take a name an entry holds
    (:func:`.links.held`), but an entry written before they looked stays in the way."""
    storage = registry.storage
    if report.dry_run:
        with transaction.manager:
            due = list(replaced.every_due(storage, now))
            keys = [entry["key"] for entry in due]
            kept = retention.held(registry, keys, now) | links.retained_among(storage, keys)
            kept |= links.linked_among(storage, keys)
        report.replaced += [entry for entry in due if entry["key"] not in kept]
        return
    after = None
    while True:
        with transaction.manager:
            due = replaced.due(storage, now, DELETE_BATCH, after=after)
            held = retention.held(registry, [entry["key"] for entry in due], now)
            claimed = replaced.claim(storage, [e for e in due if e["key"] not in held])
            claimed_keys = [entry["key"] for entry in claimed]
            kept = links.retained_among(storage, claimed_keys)
            kept |= links.linked_among(storage, claimed_keys)
            claimed = [entry for entry in claimed if entry["key"] not in kept]
            replaced.quarantine(registry, [entry["key"] for entry in claimed], now)
            after = due[-1]["id"] if due else None
        report.replaced += claimed
        registry.attachment_store.delete_many([entry["key"] for entry in claimed])
        if len(due) < DELETE_BATCH:
            break
    with transaction.manager:
        replaced.end_quarantines(storage, now)
    if report.replaced:
        logger.info("Deleted %d replaced files past their grace", len(report.replaced))


def _periodically(registry, interval, stopped):
    """Collect expired entries every ``interval`` seconds, and orphans at the first round then
    at the first round ``gc.orphans_interval_seconds`` after the previous orphan collection
    (listing a whole store is much more work than reading expired entries)."""
    orphans_interval = registry.attachment_settings.gc.orphans_interval_seconds
    last_orphans = None
    while not stopped.wait(interval):
        started = monotonic()
        orphans = orphans_interval > 0 and (
            last_orphans is None or started - last_orphans >= orphans_interval
        )
        if orphans:
            last_orphans = started
        try:
            collect(registry, orphans=orphans)
        except Refused as refusal:  # Not a crash: a configuration an operator must fix.
            logger.error("Garbage collection %s", refusal)
        except Exception:  # The next round will try again.
            logger.exception("Garbage collection failed")


def start_collector(event):
    """On application start: collect in a daemon thread (stopped with ``gc_stop.set()``);
    not in a command, nor on a read-only server
    (:func:`~kinto_attachment.state.shared.writes_by_itself`)."""
    registry = event.app.registry
    interval = registry.attachment_settings.data_files.gc_interval_seconds
    if not interval or not shared.writes_by_itself(registry):
        return
    registry.attachment_gc_stop = threading.Event()
    threading.Thread(
        target=_periodically,
        args=(registry, interval, registry.attachment_gc_stop),
        name="attachment-gc",
        daemon=True,
    ).start()


def includeme(config):
    config.add_subscriber(start_collector, ApplicationCreated)
