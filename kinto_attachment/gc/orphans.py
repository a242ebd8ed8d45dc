"""The orphan pass of garbage collection (see :mod:`kinto_attachment.gc`): what the store
holds that nothing references, older than the grace period, and this instance's."""

import logging

import transaction

from ..state import instance, references
from ..storage import StorageUnavailable
from ..uploads import lifecycle


logger = logging.getLogger(__name__)

#: Orphans deleted per request (S3's DeleteObjects takes 1000 keys).
DELETE_BATCH = 1000


def collect(registry, now, report, untagged_ours=True):
    """Delete what nothing references, is older than the grace period and this instance
    wrote (:class:`~kinto_attachment.state.instance.Sorting`: another instance's is kept);
    report the references whose blob the listing did not find and that do not exist.

    Without ``untagged_ours`` (no record, link or ``/data/files`` entry names any file), the
    names that say nobody's are kept: nothing tells that this storage is the servers' (a
    command's ``kinto.ini`` reading another, empty, database would take every file they
    name without a tag, ``randomize = false``, for an orphan)."""
    store = registry.attachment_store
    cutoff = now - registry.attachment_settings.gc.orphans_grace_seconds * 1000
    with transaction.manager:
        keys, pending = references.index(registry)
    sorting = instance.Sorting(
        registry, cutoff, store.iter_pending(), make=not report.dry_run, untagged=untagged_ours
    )
    doomed = []
    for listed in sorting.orphans(store.iter_blobs(), keys.see):
        missing = _named_under_another_base(store, keys, listed.key)
        if missing is not None:
            logger.error(
                "Kept %r: it ends with %r, a file the references name and the store lacks "
                "(kinto.attachment.base_path, or the bucket's prefix, moved?)",
                listed.key,
                missing,
            )
            report.moved.append((listed.key, missing))
            continue
        report.orphans.append(listed)
        if not report.dry_run:
            logger.info("Deleting orphan %r (%d bytes)", listed.key, listed.size)
            doomed.append(listed)
        if len(doomed) >= DELETE_BATCH:
            lifecycle.delete_orphans(registry, doomed, now)
            doomed = []
    lifecycle.delete_orphans(registry, doomed, now)
    unaborted = []  # Failures, said once the others are done (the next run tries again).
    for upload in sorting.abandoned(pending):
        if not report.dry_run:
            logger.info("Aborting incomplete upload %s of %r", upload.upload_id, upload.key)
            try:
                store.abort_pending(upload.key, upload.upload_id)
            except StorageUnavailable as e:
                logger.warning(
                    "Incomplete upload %s of %r not aborted: %s", upload.upload_id, upload.key, e
                )
                unaborted.append(e)
                continue
        report.aborted.append(upload)
    report.others, report.other_examples = sorting.others, sorting.other_examples
    report.unowned = sorting.unowned
    with transaction.manager:
        for reference in references.required(registry):
            if keys.unseen(reference.key) and not references.in_store(store, reference.key):
                logger.warning("Dangling reference: %s -> %r", reference.where, reference.key)
                report.dangling.append((reference.where, reference.key))
    if report.others:
        logger.warning(
            "This store holds %d files or uploads that another Kinto instance wrote (%r for "
            "one): kept, with %d orphans whose names do not say whose they are. Another "
            "database given this store, or an earlier process of a memory backend: each "
            "instance needs a store of its own.",
            report.others,
            report.other_examples[0],
            len(report.unowned),
        )
    elif report.unowned:
        logger.warning(
            "No record, link or /data/files entry of this database names a file, and the "
            "store holds %d that nothing references whose names do not say whose they are "
            "(%r for one): kept. If the servers use another database than this "
            "configuration, fix it; if these are this instance's, delete them by hand.",
            len(report.unowned),
            report.unowned[0],
        )
    if report.moved:
        logger.error(
            "%d orphans kept whose keys end with the keys of missing referenced files: the "
            "store holds the servers' files under other keys (kinto.attachment.base_path, or "
            "the bucket's prefix, is not theirs). Fix the configuration.",
            len(report.moved),
        )
    if (report.orphans or report.aborted) and not report.dry_run:
        logger.info(
            "Collected %d orphans (%d bytes) and %d incomplete uploads",
            len(report.orphans),
            sum(orphan.size for orphan in report.orphans),
            len(report.aborted),
        )
    if unaborted:
        raise StorageUnavailable(
            f"{len(unaborted)} incomplete uploads could not be aborted: {unaborted[0]}"
        )


def _named_under_another_base(store, keys, key):
    """The referenced key that ``key`` ends with (after a ``/``) while the store lacks it, or
    None. The sample of :mod:`.store_check` refuses a store that lacks most referenced files;
    one moved under the servers' files (``base_path`` one folder too high: ``attachments/K``
    for ``K``) that holds files uploaded since passes it, and would take the older ones for
    orphans: each such file is kept instead (one look in the store for each, rare)."""
    parts = key.split("/")
    for depth in range(1, len(parts)):
        tail = "/".join(parts[depth:])
        if tail in keys and not references.in_store(store, tail):
            return tail
    return None
