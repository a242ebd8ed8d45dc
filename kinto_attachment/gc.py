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
whose blob is missing (*dangling*) are reported, never touched.

Runs in every server (expired entries every ``data_files.gc_interval_seconds``, orphans every
``gc.orphans_interval_seconds``) and as a command::

    kinto-attachment-gc --ini config/postgresql.ini [--dry-run]

Several nodes may collect at once: deleting what another node just deleted is harmless.
The store (``base_path``, the S3 or the GCS bucket) must hold nothing but attachments.

The command judges the store by what *its own* storage backend holds, so it refuses a
configuration whose storage lives in a server's process (Kinto's memory backend): it would see
no record, and take every file of the running server for an orphan. There, the server's own
thread collects, since it sees the records.
"""

import argparse
import dataclasses
import logging
import sys
import threading
from time import monotonic

import transaction
from kinto.core.storage.exceptions import BackendError
from pyramid.events import ApplicationCreated

from . import adoption, metrics
from .events import recording, retention
from .state import data_file_entries, links, references, replaced, shared, tus_uploads


logger = logging.getLogger(__name__)

#: Orphans deleted per request (S3's DeleteObjects takes 1000 keys).
DELETE_BATCH = 1000
#: Files that references name, looked for in the store before an orphan pass
#: (:func:`check_store`).
SAMPLE = 32


class Refused(Exception):
    """An orphan pass that would act on the wrong store: nothing is removed (the message
    says why and what to fix)."""


DESCRIPTION = """\
Collect what Kinto attachments no longer need: /data/files entries past their expiration,
resumable (tus) uploads abandoned past theirs, and, older than
kinto.attachment.gc.orphans_grace_seconds, whatever nothing references: staged temporary files
(.upload-*.part, S3 upload tails), incomplete S3 multipart uploads, and blobs named by no record
attachment, link, data file, resumable upload or retained old file; and replaced or deleted
files once kinto.attachment.gc.replaced_grace_seconds have passed. References to missing
blobs (dangling) are reported, never changed. The store (base_path, the S3 or the GCS bucket)
must hold nothing but attachments."""


@dataclasses.dataclass
class Report:
    """What one collection found, and removed unless ``dry_run``."""

    dry_run: bool = False
    #: ``/data/files`` entries that had expired.
    expired_files: list = dataclasses.field(default_factory=list)
    #: Resumable uploads abandoned past their expiration.
    expired_uploads: list = dataclasses.field(default_factory=list)
    #: Ids of expired uploads a request was working on: left for the next round.
    busy_uploads: list = dataclasses.field(default_factory=list)
    #: Entries (``{"key", "until"}``) of replaced blobs past their grace.
    replaced: list = dataclasses.field(default_factory=list)
    #: :class:`~kinto_attachment.storage.Listed` objects nothing referenced.
    orphans: list = dataclasses.field(default_factory=list)
    #: :class:`~kinto_attachment.storage.Pending` uploads nothing referenced.
    aborted: list = dataclasses.field(default_factory=list)
    #: ``(where, key)`` of references to blobs that do not exist.
    dangling: list = dataclasses.field(default_factory=list)
    #: Orphans were not looked for: kinto-attachment's data is not adopted yet, and a dry run
    #: does not adopt it (:mod:`kinto_attachment.adoption`).
    adoption_pending: bool = False
    #: Keys of the files that nothing referenced when this collection adopted (the previous
    #: plugin left them, ``keep_old_files`` for instance): retained, never removed.
    kept_at_adoption: list = dataclasses.field(default_factory=list)

    @property
    def temporary(self):
        """The orphans that were staged or resumable-upload files, not committed blobs."""
        return [orphan for orphan in self.orphans if orphan.temporary]

    @property
    def total_bytes(self):
        """Bytes freed (multipart uploads and replaced files aside: S3 does not list the
        size of the former, and the latter are deleted without a look)."""
        return (
            sum(entry["size"] for entry in self.expired_files)
            + sum(upload["offset"] for upload in self.expired_uploads)
            + sum(orphan.size for orphan in self.orphans)
        )

    def describe(self):
        """The report as text, one line per item."""
        verb = "would be removed" if self.dry_run else "removed"
        lines = ["Dry run: nothing was removed."] if self.dry_run else []
        lines.append(f"Expired data files ({verb}): {len(self.expired_files)}")
        lines += [f"  {e['id']}  {e['key']}  {e['size']} bytes" for e in self.expired_files]
        lines.append(f"Expired resumable uploads ({verb}): {len(self.expired_uploads)}")
        lines += [f"  {u['id']}  {u['offset']} bytes" for u in self.expired_uploads]
        lines += [f"  {i}  busy, left for the next round" for i in self.busy_uploads]
        lines.append(f"Replaced files past their grace ({verb}): {len(self.replaced)}")
        lines += [f"  {entry['key']}" for entry in self.replaced]
        temporary = len(self.temporary)
        lines.append(f"Orphans ({verb}): {len(self.orphans)}, {temporary} of them temporary")
        lines += [
            f"  {o.key}  {o.size} bytes{'  (temporary)' if o.temporary else ''}"
            for o in self.orphans
        ]
        lines.append(f"Incomplete multipart uploads ({verb}): {len(self.aborted)}")
        lines += [f"  {p.key}  upload {p.upload_id}" for p in self.aborted]
        if self.adoption_pending:
            lines.append("Orphans not looked for: kinto-attachment's data is not adopted yet.")
        if self.kept_at_adoption:
            kept = "would be kept" if self.dry_run else "kept"
            lines.append(
                "Files nothing references, left by the previous plugin (keep_old_files for "
                f"instance), {kept} and never removed: {len(self.kept_at_adoption)}"
            )
            lines += [f"  {key}" for key in self.kept_at_adoption]
        lines.append(f"Dangling references (left as they are): {len(self.dangling)}")
        lines += [f"  {where} -> {key}  missing" for where, key in self.dangling]
        lines.append(f"Total: {self.total_bytes} bytes {verb}")
        return "\n".join(lines)


def collect(registry, now=None, dry_run=False, orphans=True):
    """Collect expired entries and, with ``orphans``, orphans; return a :class:`Report`.

    ``now`` is in milliseconds since the epoch. With ``dry_run``, nothing is removed.
    """
    now = now or data_file_entries.msec_time()
    report = Report(dry_run=dry_run)
    if orphans:
        check_store(registry)  # Before anything is removed (or adopted from a listing).
    _collect_data_files(registry, now, report)
    _collect_uploads(registry, now, report)
    _collect_replaced(registry, now, report)
    if orphans and not adoption.done(registry):
        # Files that only records or kinto-attachment's links name are no orphans: adopt
        # them first (a dry run only looks, and looks for no orphans if there are some).
        adopted = adoption.adopt(registry, dry_run=dry_run)
        report.adoption_pending = dry_run and adopted.changes > 0
        report.kept_at_adoption = adopted.unreferenced
    if orphans and not report.adoption_pending:
        _collect_orphans(registry, now, report)
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
            # Held by an event: deleted by a later round, once released.
            held = retention.held(registry, [entry["key"]], now)
            replaced.add(storage, held, until=now)
        report.expired_files.append(entry)
        if not held:
            keys.append(entry["key"])
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
        store.discard(upload["store"])
    if report.expired_uploads and not report.dry_run:
        logger.info("Collected %d abandoned uploads", len(report.expired_uploads))


def _collect_replaced(registry, now, report):
    """Delete the replaced blobs due at ``now`` that no event holds, by batches: each batch's
    entries claimed in a transaction, then their blobs deleted once it has committed.

    A blob that is also retained (:func:`.links.retained_among`: a record without a link
    may still name it, or ``keep_old_files`` keeps it) is never deleted: its entry is
    claimed, the blob stays. Retiring records a retained blob as replaced like any other
    (uploads are spared a query: ``uploads.lifecycle.retire``): deleting the record that had
    its link does so, while a copy without a link may still name it."""
    storage = registry.storage
    if report.dry_run:
        with transaction.manager:
            due = list(replaced.every_due(storage, now))
            keys = [entry["key"] for entry in due]
            kept = retention.held(registry, keys, now) | links.retained_among(storage, keys)
        report.replaced += [entry for entry in due if entry["key"] not in kept]
        return
    after = None
    while True:
        with transaction.manager:
            due = replaced.due(storage, now, DELETE_BATCH, after=after)
            held = retention.held(registry, [entry["key"] for entry in due], now)
            claimed = replaced.claim(storage, [e for e in due if e["key"] not in held])
            retained = links.retained_among(storage, [entry["key"] for entry in claimed])
            after = due[-1]["id"] if due else None
        claimed = [entry for entry in claimed if entry["key"] not in retained]
        report.replaced += claimed
        registry.attachment_store.delete_many([entry["key"] for entry in claimed])
        if len(due) < DELETE_BATCH:
            break
    if report.replaced:
        logger.info("Deleted %d replaced files past their grace", len(report.replaced))


def _collect_orphans(registry, now, report):
    """Delete what nothing references and is older than the grace period; report the
    references whose blob the listing did not find and that do not exist."""
    store = registry.attachment_store
    cutoff = now - registry.attachment_settings.gc.orphans_grace_seconds * 1000
    with transaction.manager:
        keys, pending = references.index(registry)
    doomed = []
    for listed in store.iter_blobs():
        if keys.see(listed.key) or listed.modified_ms >= cutoff:
            continue
        report.orphans.append(listed)
        if not report.dry_run:
            logger.info("Deleting orphan %r (%d bytes)", listed.key, listed.size)
            doomed.append(listed.key)
        if len(doomed) >= DELETE_BATCH:
            store.delete_many(doomed)
            doomed = []
    store.delete_many(doomed)
    for upload in store.iter_pending():
        if upload.upload_id in pending or upload.initiated_ms >= cutoff:
            continue
        report.aborted.append(upload)
        if not report.dry_run:
            logger.info("Aborting incomplete upload %s of %r", upload.upload_id, upload.key)
            store.abort_pending(upload.key, upload.upload_id)
    with transaction.manager:
        for reference in references.required(registry):
            if keys.unseen(reference.key) and not _exists(store, reference.key):
                logger.warning("Dangling reference: %s -> %r", reference.where, reference.key)
                report.dangling.append((reference.where, reference.key))
    if (report.orphans or report.aborted) and not report.dry_run:
        logger.info(
            "Collected %d orphans (%d bytes) and %d incomplete uploads",
            len(report.orphans),
            sum(orphan.size for orphan in report.orphans),
            len(report.aborted),
        )


#: Why an orphan pass is refused on a store that lacks the files the records name.
MISMATCH = """\
refused to look for orphans: of {sampled} files that records, links or /data/files entries
name, {found} are in the store, which holds other files ({example!r} for one). Every file
the store holds would be taken for an orphan: kinto.attachment.base_path (or the S3 or GCS
bucket and prefix) is probably not the servers' own (a parent folder of theirs, or another
folder), or this configuration reads another database than theirs. Nothing was removed.
Fix the configuration; if the store did lose these files (a restore from an old backup),
an operator must look at them first (kinto-attachment-gc --dry-run lists them)."""


def check_store(registry):
    """Raise :class:`Refused` when the store does not hold the files the references name.

    An orphan is what the store holds and nothing references: pointed at the wrong place (a
    ``base_path`` one folder too high lists every file under another key), every file is
    one. So before an orphan pass, up to :data:`SAMPLE` files that records, links and
    ``/data/files`` entries name are looked for. Fewer than half found, while the store holds
    some committed file: refused. Missing files in a store that holds nothing else are only
    dangling references (reported by the pass, which would remove nothing)."""
    store = registry.attachment_store
    with transaction.manager:
        sample = []
        for reference in references.required(registry):
            if reference.key not in sample:
                sample.append(reference.key)
            if len(sample) >= SAMPLE:
                break
    found = sum(1 for key in sample if _exists(store, key))
    if not sample or 2 * found >= len(sample):
        return
    example = next((listed.key for listed in store.iter_blobs() if not listed.temporary), None)
    if example is not None:
        raise Refused(MISMATCH.format(sampled=len(sample), found=found, example=example))


def _exists(store, key):
    try:
        return store.exists(key)
    except ValueError:  # A key that cannot be in the store (it would climb out of it).
        return False


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
    """On application start: collect in a daemon thread (stopped with ``gc_stop.set()``)."""
    registry = event.app.registry
    interval = registry.attachment_settings.data_files.gc_interval_seconds
    if not interval:
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


#: Why the command refuses a storage backend that only a server's process can see.
UNSHARED = """\
kinto-attachment-gc: refused: {ini} keeps its records in Kinto's memory storage backend, which
lives inside each server's process. This command would start with an empty storage of its own,
see no record, and take every file under the store for an orphan. Servers running this
configuration collect by themselves (see kinto.attachment.gc.orphans_interval_seconds and
data_files.gc_interval_seconds); run this command against a shared storage backend
(PostgreSQL) only."""


#: Why the command refuses a storage backend it cannot reach.
UNREACHABLE = """\
kinto-attachment-gc: refused: Kinto's storage backend, as {ini} configures it, cannot be
reached ({error}). Nothing was read nor removed: start the database, or fix its URL in {ini},
and run again."""
#: A storage backend lost while collecting: what was removed before is logged.
INTERRUPTED = """\
kinto-attachment-gc: failed: Kinto's storage backend was lost while collecting ({error}).
What was removed before is logged; nothing referenced was removed. Run the command again."""


def main(argv=None):
    """``kinto-attachment-gc --ini FILE [--dry-run]``: collect once, print the report.

    Exit codes: ``0`` collected; ``2`` refused (a wrong command line, a configuration whose
    records this process cannot see, a storage backend it cannot reach, or a store that does
    not hold the files the records name: nothing is removed); ``1`` the storage backend
    failed in the middle of a collection (every step removes only what it has just proved
    unreferenced, so running again is safe)."""
    parser = argparse.ArgumentParser(prog="kinto-attachment-gc", description=DESCRIPTION)
    parser.add_argument("--ini", required=True, help="the Kinto configuration file")
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would be removed; remove nothing"
    )
    args = parser.parse_args(argv)
    with shared.registry_of(args.ini, UNSHARED, UNREACHABLE) as registry:
        if registry is None:
            return 2
        try:
            report = collect(registry, dry_run=args.dry_run)
        except Refused as refusal:
            print(f"kinto-attachment-gc: {refusal}", file=sys.stderr)
            return 2
        except BackendError as error:
            print(INTERRUPTED.format(error=str(error).splitlines()[0]), file=sys.stderr)
            return 1
    print(report.describe())
    return 0
