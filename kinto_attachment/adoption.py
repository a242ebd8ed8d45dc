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

import dataclasses
import itertools
import logging
from urllib.parse import unquote, urlsplit

import transaction
from kinto.core.storage import Filter
from kinto.core.storage.exceptions import ObjectNotFoundError
from kinto.core.storage.postgresql import PostgreSQLPluginMigration
from kinto.core.utils import COMPARISON

from . import locks
from .events import claims
from .state import instance, legacy, links, paging, records, references


logger = logging.getLogger(__name__)

#: Objects changed per transaction.
BATCH = 100
#: Unreferenced files the report lists (all of them are logged).
LISTED = 100
MARKER = {"resource_name": "attachment-adoption", "parent_id": "attachment-adoption"}
MARKER_ID = "kinto-attachment"


@dataclasses.dataclass
class Report:
    dry_run: bool = False
    #: kinto-attachment links now ours.
    linked: int = 0
    #: Files that kinto-attachment links named but no record does: kept, never deleted.
    retained: int = 0
    #: Files of records without a link, now kept (retained), never deleted.
    unlinked: int = 0
    #: ``(record URI, location)`` of records whose location is not under our ``base_url``.
    foreign: list = dataclasses.field(default_factory=list)
    #: Keys of the files the store held that nothing referenced at the first adoption: kept.
    unreferenced: list = dataclasses.field(default_factory=list)
    #: Why the first adoption did not list the store (step 3) nor end: it is not the
    #: servers' own (:func:`_store_mismatch`); None when it is.
    store_mismatch: str = None

    @property
    def changes(self):
        """How many objects adoption changes (0: there is nothing to adopt)."""
        return self.linked + self.retained + self.unlinked + len(self.unreferenced)

    def describe(self):
        verb = "would be" if self.dry_run else "were"
        lines = [
            f"kinto-attachment links that {verb} made ours: {self.linked}",
            f"Files of kinto-attachment links no record names, that {verb} kept: {self.retained}",
            f"Records without a link whose files {verb} kept: {self.unlinked}",
            f"Records whose location is not under base_url (downloads are 404): "
            f"{len(self.foreign)}",
        ]
        lines += [f"  {uri} -> {location}" for uri, location in self.foreign]
        lines.append(
            f"Files in the store that nothing names (left by the previous plugin, kept "
            f"on purpose by keep_old_files for instance), that {verb} kept: "
            f"{len(self.unreferenced)}"
        )
        lines += [f"  {key}" for key in self.unreferenced[:LISTED]]
        if len(self.unreferenced) > LISTED:
            lines.append(f"  ... and {len(self.unreferenced) - LISTED} more (in the log)")
        if self.store_mismatch:
            lines.append(self.store_mismatch)
        return "\n".join(lines)


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
    _adopt_legacy_links(registry, report)
    _keep_unlinked_files(registry, report)
    if first:
        report.store_mismatch = _store_mismatch(registry)
    if first and report.store_mismatch is None:
        _keep_unreferenced_files(registry, report)
        if not dry_run:
            with transaction.manager:
                registry.storage.update(**MARKER, object_id=MARKER_ID, obj={"done": True})
            registry.attachment_adopted = True
    log = logger.error if report.store_mismatch else logger.info
    log("Adoption of kinto-attachment data:\n%s", report.describe())
    return report


#: Why the first adoption stops before it lists the store (formatted with the counts).
STORE_MISMATCH = """\
Adoption is not complete: of {sampled} files that records and links name, {found} are in the
store. It is not the servers' own (kinto.attachment.base_path not mounted, or another folder or
bucket): listed, it would keep none of the files the previous plugin left there on purpose
(keep_old_files), which the first orphan pass would then delete. Nothing of the store was
read; run kinto migrate again where the servers' store is (the servers' collector does it too,
before its first orphan pass)."""


def _store_mismatch(registry):
    """Why the store is not the servers' own, or None: before the first adoption lists it
    (step 3) and says it is done, most of the files references name must be there. Stricter
    than the collector's check, which lets an empty store be (an orphan pass would remove
    nothing from it): listing an empty store keeps nothing, for good."""
    sampled, found = references.sample_in_store(registry)
    if sampled and 2 * found < sampled:
        return STORE_MISMATCH.format(sampled=sampled, found=found)
    return None


def _names(store, location, key):
    """Whether the record's ``location`` names ``key``, which a kinto-attachment row links
    to the record: its URL, or one under another base URL than ours (written before the CDN
    moved: the path ends with the key). The row links them whatever the URL; adoption keeps
    that link (the download, and the deletion with the record)."""
    if not location:
        return False
    if store.url(key) == location or store.key_for_url(location) == key:
        return True
    return key in _path_keys(location)


def _path_keys(location):
    """The keys a location names under any base URL: its path, and each end of it after a
    ``/`` (``a/b.txt`` and ``b.txt`` for ``https://cdn/a/b.txt``). A bare key (what
    kinto-attachment wrote with its default, empty, ``base_url``) is its own path."""
    try:
        path = unquote(urlsplit(location).path)
    except ValueError:  # "https://[cdn/x": no URL (kinto-attachment let clients write any).
        return set()
    if "\x00" in path:  # No key holds one (see ``key_for_url``).
        return set()
    parts = path.split("/")
    return {"/".join(parts[i:]) for i in range(len(parts)) if parts[i]}


def _adopt_legacy_links(registry, report):
    storage, store = registry.storage, registry.attachment_store
    if report.dry_run:
        with transaction.manager:
            for link in legacy.every(storage):
                _adopt_legacy_link(registry, store, link, report)
        return
    while True:
        # Adopted rows are removed: each batch is the first rows left.
        with transaction.manager:
            batch = list(itertools.islice(legacy.every(storage), BATCH))
            for link in batch:
                _adopt_legacy_link(registry, store, link, report)
            legacy.forget(storage, batch)
        if len(batch) < BATCH:
            return


def _adopt_legacy_link(registry, store, link, report):
    ids = (link["bucket_id"], link["collection_id"], link["record_id"])
    record = None
    if link["record_id"] is not None:
        if not report.dry_run:
            locks.hold(registry, locks.record_path(*ids))
            if not legacy.still_there(registry.storage, link):
                return  # Replaced (its old file went with the replacement), or adopted.
        record = records.stored(registry.storage, *ids)
    location = records.location_of(record)
    if link["key"] and _names(store, location, link["key"]):
        report.linked += 1
        if not report.dry_run:
            _shared_kept(registry.storage, link["key"])
            links.add(registry.storage, *ids, link["key"])
    elif link["key"]:
        report.retained += 1
        if not report.dry_run:
            links.retain(registry.storage, [link["key"]])


def _shared_kept(storage, key):
    """Retain ``key`` if another record's row or link names it too: kinto-attachment could
    leave two rows naming one file (``randomize = false``: a record whose file was lost
    keeps its row, and the next upload of that name takes the name). Both become links, and
    deleting one record must not delete the file the other names: a retained file never is
    (our own uploads never share a name, so the replacement path need not look for links)."""
    if legacy.names(storage, key, more_than=1) or links.linked_among(storage, [key]):
        links.retain(storage, [key])


def _collections(storage):
    for bucket in paging.every(storage, "bucket", ""):
        for collection in paging.every(storage, "collection", f"/buckets/{bucket['id']}"):
            yield bucket["id"], collection["id"]


def _keep_unlinked_files(registry, report):
    storage = registry.storage
    with transaction.manager:
        collections = list(_collections(storage))
    with_attachment = [Filter("attachment", True, COMPARISON.HAS)]
    would_retain = set()
    for ids in collections:
        parent_id = "/buckets/{}/collections/{}".format(*ids)
        # A dry run counted kinto-attachment's links without making them ours, and retains
        # nothing: the files it would retain are remembered, counted once (copies).
        pretended = {}
        if report.dry_run:
            with transaction.manager:
                pretended = _legacy_keys(storage, *ids)
        last = None
        while True:
            with transaction.manager:
                page = paging.page(storage, "record", parent_id, with_attachment, last, BATCH)
                _keep_files_of(registry, ids, page, pretended, report, would_retain)
            if len(page) < BATCH:
                break
            last = page[-1]["id"]


def _keep_files_of(registry, ids, page, pretended, report, would_retain):
    storage, store = registry.storage, registry.attachment_store
    linked = links.linked_records(storage, *ids, [r["id"] for r in page])
    for record in page:
        location = records.location_of(record)
        if not location or record["id"] in linked:
            continue
        if any(_names(store, location, key) for key in pretended.get(record["id"], ())):
            continue
        key = store.key_for_url(location)
        keys = {key} if key is not None else _linked_keys(storage, location, report.dry_run)
        if not keys:
            report.foreign.append((links.record_uri(*ids, record["id"]), location))
            continue
        keys = {k for k in keys if k not in would_retain and not links.is_retained(storage, k)}
        if not keys:
            continue
        report.unlinked += 1
        if report.dry_run:
            would_retain.update(keys)
        else:
            links.retain(storage, sorted(keys))


def _linked_keys(storage, location, dry_run):
    """The keys a location outside ``base_url`` names by the rule of :func:`_names` that a
    link (or, in a dry run, a kinto-attachment row) names: the record is a copy of an adopted
    one (kinto-signer's), naming its file by a URL written before the CDN moved, and deleting
    the original must not delete the file the copy names. Empty otherwise: a location no link
    vouches for is never guessed."""
    candidates = _path_keys(location)
    linked = links.linked_among(storage, candidates)
    if dry_run:  # Step 1 only counted the rows it would make links.
        linked |= {key for key in candidates if legacy.names(storage, key)}
    return linked


def _keep_unreferenced_files(registry, report):
    """Retain every committed file of the store that nothing references (step 3 of the
    module docstring), by batches of :data:`BATCH`, each in its own transaction.

    The references are read before the store is listed, as the garbage collector reads them
    (:mod:`.state.references`): a file an upload commits meanwhile is found unreferenced and
    retained too, which only keeps it longer (never deleted), the safe direction. A dry run
    has not made kinto-attachment's rows ours: the files they name count as referenced."""
    store = registry.attachment_store
    if not hasattr(store, "iter_blobs"):  # Not an IListableStore: its files are unknown.
        return
    with transaction.manager:
        referenced, _ = references.index(registry)
        pretended = set()
        if report.dry_run:
            rows = legacy.every(registry.storage)
            pretended = {references.key_hash(row["key"]) for row in rows}
    own = instance.tag(registry, make=not report.dry_run)  # None: it named no file yet.
    batch = []
    for listed in store.iter_blobs():
        if listed.temporary or listed.key in referenced:
            continue
        if own is not None and instance.tag_of(listed.key) == own:  # An upload meanwhile.
            continue
        if references.key_hash(listed.key) in pretended:
            continue
        report.unreferenced.append(listed.key)
        logger.info(
            "Keeping %r, which nothing references: the previous plugin left it", listed.key
        )
        if not report.dry_run:
            batch.append(listed.key)
        if len(batch) >= BATCH:
            _retain(registry.storage, batch)
            batch = []
    _retain(registry.storage, batch)


def _retain(storage, keys):
    if keys:
        with transaction.manager:
            links.retain(storage, keys, reason=links.UNREFERENCED_AT_ADOPTION)


def _legacy_keys(storage, bucket_id, collection_id):
    keys = {}
    for link in legacy.links(storage, bucket_id, collection_id):
        keys.setdefault(link["record_id"], []).append(link["key"])
    return keys


class Migration(PostgreSQLPluginMigration):
    """``kinto migrate``: the index of the events' outbox (:mod:`.events.claims`), and adopt
    kinto-attachment's data (Kinto runs plugin migrations on PostgreSQL only; on the memory
    backend nothing outlives the process to adopt).

    Not a schema version: adoption runs at every ``kinto migrate`` (``--dry-run`` reports
    what it would do), and does nothing once everything is ours. Its report is logged by
    :func:`adopt`, like Kinto's own migration messages (``kinto migrate -q`` silences both).
    """

    name = "kinto_attachment_streaming"

    def __init__(self, registry):
        self.registry = registry

    def initialize_schema(self, client, dry_run=False):
        if client is not None and dry_run and not _has_tables(self.registry.storage):
            # Kinto's own dry run created no table: adoption would query tables that are
            # not there. A fresh database holds nothing of kinto-attachment's either.
            logger.info("Adoption of kinto-attachment data: Kinto's tables are not created yet")
            return
        if client is not None and not dry_run:
            claims.create_index(client)
            instance.tag(self.registry)  # Made here, read by the servers as they start.
        adopt(self.registry, dry_run=dry_run)


def _has_tables(storage):
    """Whether Kinto's PostgreSQL storage schema exists (a backend that does not say: yes)."""
    installed_version = getattr(storage, "get_installed_version", None)
    return installed_version is None or installed_version() is not None
