"""Step 3, at the first adoption only: every file of the store that nothing references is
retained, and listed, provided the store is the servers' own (see
:mod:`kinto_attachment.adoption`)."""

import logging

import transaction

from ..state import instance, legacy, links, references
from .report import BATCH


logger = logging.getLogger(__name__)


#: Why the first adoption stops before it lists the store (formatted with the counts).
STORE_MISMATCH = """\
Adoption is not complete: of {sampled} files that records and links name, {found} are in the
store. It is not the servers' own (kinto.attachment.base_path not mounted, or another folder or
bucket): listed, it would keep none of the files the previous plugin left there on purpose
(keep_old_files), which the first orphan pass would then delete. Nothing of the store was
read; run kinto migrate again where the servers' store is (the servers' collector does it too,
before its first orphan pass)."""


def store_mismatch(registry):
    """Why the store is not the servers' own, or None: before the first adoption lists it
    (step 3) and says it is done, most of the files references name must be there, as for
    the collector's orphan pass (:func:`~kinto_attachment.gc.store_check.check_store`): an
    empty store included, whose listing would keep nothing, for good."""
    sampled, found, _ = references.sample_in_store(registry)
    if sampled and 2 * found < sampled:
        return STORE_MISMATCH.format(sampled=sampled, found=found)
    return None


def keep_unreferenced_files(registry, report):
    """Retain every committed file of the store that nothing references (step 3 of the
    module docstring), by batches of :data:`BATCH`, each in its own transaction.

    The references are read before the store is listed, as the garbage collector reads them
    (:mod:`.state.references`): a file an upload commits meanwhile is found unreferenced and
    retained too, which only keeps it longer (never deleted), the safe direction. A dry run
    has not made kinto-attachment's rows ours: the files they name count as referenced.

    A file whose name carries an instance's tag is left out: an instance of this plugin wrote
    it (this one's upload meanwhile; another's, or an earlier process of a memory backend's,
    which their own collectors judge), never kinto-attachment. Retained, an earlier ``make
    serve``'s files were kept for good at each restart."""
    store = registry.attachment_store
    if not hasattr(store, "iter_blobs"):  # Not an IListableStore: its files are unknown.
        return
    with transaction.manager:
        referenced, _ = references.index(registry)
        pretended = set()
        if report.dry_run:
            rows = legacy.every(registry.storage)
            pretended = {references.key_hash(row["key"]) for row in rows}
    batch = []
    for listed in store.iter_blobs():
        if listed.temporary or listed.key in referenced:
            continue
        if instance.tag_of(listed.key) is not None:  # Ours, or another instance's of ours.
            continue
        if references.key_hash(listed.key) in pretended:
            continue
        if report.dry_run:
            _kept(report, listed.key)
        else:
            batch.append(listed.key)
        if len(batch) >= BATCH:
            _retain(registry.storage, batch, report)
            batch = []
    _retain(registry.storage, batch, report)


def _retain(storage, keys, report):
    """Retain ``keys``, but those a link names now: an upload that committed after the
    references were read, under a name of its client's (``randomize = false``: no tag), is
    ours, and its file goes with its record as any other's."""
    if not keys:
        return
    with transaction.manager:
        linked = links.linked_among(storage, keys)
        kept = [key for key in keys if key not in linked]
        links.retain(storage, kept, reason=links.UNREFERENCED_AT_ADOPTION)
    for key in kept:
        _kept(report, key)


def _kept(report, key):
    report.unreferenced.append(key)
    logger.info(
        "%s %r, which nothing references: kinto-attachment left it (keep_old_files...)",
        "Would keep" if report.dry_run else "Keeping",
        key,
    )
