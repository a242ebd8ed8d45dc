"""Everything that references a blob or a pending upload, for garbage collection.

References are read from their sources in this order:

1. resumable uploads: the keys of their state (``key``, ``temp``, ``tail``) and their S3
   multipart ``upload_id``;
2. record attachments (each ``attachment.location`` mapped back to a key), then links;
3. ``/data/files`` entries;
4. retained keys (old blobs that ``keep_old_files`` keeps on purpose);
5. replaced keys (blobs nothing references any more, kept for the downloads that started
   before: :mod:`.replaced`);
6. keys held by events (:mod:`.outbox`: named by an undelivered ``stored`` event, or
   delivered within its hold), which reference them besides their record or entry.

The order matters because references move from one source to another, each in one transaction:
a finishing resumable upload removes its state where the record gets its attachment (1 → 2),
a replacement under ``keep_old_files`` retains the key its record stops referencing (2 → 4),
any other replacement or deletion records it as replaced (2 → 5, 3 → 5).
Since a source is always read before the destinations of its references, a reference that
moved away before its source was read had arrived before its destination was read: a reader
sees every moving reference at least once. No reference moves the other way, and a new one
only ever names a blob written moments before, which the grace period of the collector keeps.

Keys are kept as 64-bit hashes in sorted arrays (:class:`Index`): about 8 bytes a reference
whatever the length of keys. Two keys sharing a hash only keep an orphan, the safe direction.
"""

import bisect
import dataclasses
import hashlib
import heapq
import random
from array import array

import transaction
from kinto.core.storage import Filter
from kinto.core.utils import COMPARISON, msec_time

from . import data_file_entries, links, outbox, paging, records, replaced, tus_uploads


#: Keys of a resumable upload's store state that name objects of the store.
STATE_KEYS = ("key", "temp", "tail")
#: Hashes sorted at once while an index is built; runs are then merged.
RUN = 1 << 16
WITH_ATTACHMENT = [Filter("attachment", True, COMPARISON.HAS)]
#: Files that references name, looked for in the store to tell whether it is the servers' own
#: (:func:`sample_in_store`): the first read, then, if most are missing, a spread sample.
SAMPLE = 32
SPREAD = 256


@dataclasses.dataclass(frozen=True)
class Reference:
    #: Who references: a record URI, ``link of {record URI}``, ``upload {id}``...
    where: str
    key: str
    #: ``key`` is the id of a pending (multipart) upload, not the key of an object.
    pending: bool = False


def read(registry):
    """Every reference, in the order of the module docstring."""
    storage = registry.storage
    yield from _uploads(storage)
    yield from _attached(storage, registry.attachment_store)
    yield from _data_files(storage)
    for retained in links.retained(storage):
        yield Reference("retained", retained["key"])
    for entry in replaced.every(storage):
        yield Reference("replaced", entry["key"])
    for key in outbox.every_held(storage, msec_time()):
        yield Reference("event", key)


def required(registry):
    """The references whose blob must exist: attachments, links and data files."""
    yield from _attached(registry.storage, registry.attachment_store)
    yield from _data_files(registry.storage)


def owed(registry, now=None):
    """The references whose blob the store must hold at ``now`` (ms; the present by default),
    to tell whether it is the servers' (:func:`sample_in_store`): :func:`required` but
    ``/data/files`` entries expired then (collected first, their blobs may be gone)."""
    yield from _attached(registry.storage, registry.attachment_store)
    yield from _data_files(registry.storage, live_at=now or msec_time())


def waiting(registry, limit):
    """Up to ``limit`` of the references of blobs replaced entries wait to delete (not their
    quarantine entries): the servers' files until a collector claims them, which a store that
    holds no file cannot be (:func:`~kinto_attachment.gc.store_check.check_store`). Not
    sampled with :func:`owed`: a collector deletes them at any time, and the records of lost
    files, deleted, leave some whose blobs were gone before."""
    with transaction.manager:
        found = []
        for entry in replaced.every(registry.storage):
            if not entry.get(replaced.QUARANTINED):
                found.append(Reference("replaced", entry["key"]))
            if len(found) >= limit:
                break
        return found


def sample_in_store(registry, size=SAMPLE, now=None):
    """``(sampled, found, missing)``: distinct keys the references owe (:func:`owed`), how
    many of them the store holds, and the references of a few of those it lacks
    (:data:`MISSING_EXAMPLES`, for a refusal to name): whether it is the servers' own store
    (pointed at another folder or bucket, it holds few or none of them). Read in
    transactions of their own. ``now``: the collector's (:func:`owed`).

    The first ``size`` keys read come first (a quick look). When fewer than half of them are
    in the store, a sample spread over every reference (:data:`SPREAD`, a reservoir) decides
    instead: files lost for real cluster (those of one old collection, a folder removed by
    hand), and when they sort first they made a store that holds nearly every file look like
    another one, which refused every orphan pass for as long as their records lived."""
    with transaction.manager:
        sample = {}
        for reference in owed(registry, now):
            sample.setdefault(reference.key, reference)
            if len(sample) >= size:
                break
    sampled, found, missing = _looked_for(registry.attachment_store, sample.values())
    if 2 * found >= sampled:
        return sampled, found, missing
    with transaction.manager:
        spread = _reservoir(owed(registry, now), SPREAD)
    return _looked_for(registry.attachment_store, spread)


#: Keys a store lacks that :func:`sample_in_store` names, at most.
MISSING_EXAMPLES = 5


def _looked_for(store, sample):
    """``(sampled, found, missing)`` of the references ``sample``, each looked for in
    ``store``."""
    found, missing = 0, []
    for reference in sample:
        if in_store(store, reference.key):
            found += 1
        elif len(missing) < MISSING_EXAMPLES:
            missing.append(reference)
    return len(sample), found, missing


def _reservoir(references, size):
    """Up to ``size`` references of distinct keys drawn evenly from ``references`` (read
    once)."""
    chosen, members, seen, draw = [], set(), 0, random.Random()
    for reference in references:
        if reference.key in members:  # Named twice in a row (a record and its link): one file.
            continue
        seen += 1
        if len(chosen) < size:
            chosen.append(reference)
            members.add(reference.key)
        elif (position := draw.randrange(seen)) < size:
            members.discard(chosen[position].key)
            chosen[position] = reference
            members.add(reference.key)
    return chosen


def in_store(store, key):
    """Whether the store holds ``key`` (False for a key that cannot be in it)."""
    try:
        return store.exists(key)
    except ValueError:  # A key that cannot be in the store (it would climb out of it).
        return False


def _uploads(storage):
    for upload in tus_uploads.every(storage):
        where = f"upload {upload['id']}"
        state = upload.get("store") or {}
        for name in STATE_KEYS:
            if isinstance(state.get(name), str):
                yield Reference(where, state[name])
        if isinstance(state.get("upload_id"), str):
            yield Reference(where, state["upload_id"], pending=True)


def _attached(storage, store):
    for bucket in paging.every(storage, "bucket", ""):
        bucket_uri = f"/buckets/{bucket['id']}"
        for collection in paging.every(storage, "collection", bucket_uri):
            collection_uri = f"{bucket_uri}/collections/{collection['id']}"
            for record in paging.every(storage, "record", collection_uri, WITH_ATTACHMENT):
                location = records.location_of(record)
                key = store.key_for_url(location) if location is not None else None
                if key is not None:
                    yield Reference(f"{collection_uri}/records/{record['id']}", key)
    for link in links.all_links(storage):
        uri = links.record_uri(link["bucket_id"], link["collection_id"], link["record_id"])
        yield Reference(f"link of {uri}", link["key"])


def _data_files(storage, live_at=None):
    """The references of ``/data/files`` entries; with ``live_at`` (epoch ms), of those not
    expired then only."""
    for entry in data_file_entries.every(storage):
        if live_at is None or data_file_entries.is_live(entry, live_at):
            yield Reference(f"data-file {entry['id']}", entry["key"])


def key_hash(key):
    """A signed 64-bit hash of ``key`` (keys listed from a disk may hold surrogates)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Index:
    """A set of keys as sorted hashes, remembering which keys the store was seen to hold.

    With ``folded`` (a function of a key), a key not in the set is looked up again as its
    folded form: the set holds the folded forms of its keys too (:func:`index`)."""

    def __init__(self, hashes, folded=None):
        self._hashes = hashes
        self._seen = bytearray(len(hashes))
        self._folded = folded

    def _position(self, key):
        position = self._find(key_hash(key))
        if position is None and self._folded is not None:
            position = self._find(key_hash(self._folded(key)))
        return position

    def _find(self, value):
        position = bisect.bisect_left(self._hashes, value)
        found = position < len(self._hashes) and self._hashes[position] == value
        return position if found else None

    def __contains__(self, key):
        return self._position(key) is not None

    def see(self, key):
        """Note that the store holds ``key``; return whether it is referenced."""
        position = self._position(key)
        if position is None:
            return False
        self._seen[position] = 1
        return True

    def unseen(self, key):
        """``key`` was referenced when the index was built, yet the store did not hold it."""
        position = self._position(key)
        return position is not None and not self._seen[position]


class _SortedRuns:
    """Hashes sorted by runs, then merged without duplicates into one array.

    ``array`` cannot sort itself, and a list of Python integers would take five times its
    memory: only one run at a time is a list.
    """

    def __init__(self):
        self._runs = []
        self._run = []

    def add(self, value):
        self._run.append(value)
        if len(self._run) >= RUN:
            self._close_run()

    def _close_run(self):
        if self._run:
            self._runs.append(array("q", sorted(self._run)))
            self._run = []

    def merged(self):
        self._close_run()
        merged, previous = array("q"), None
        for value in heapq.merge(*self._runs):
            if value != previous:
                merged.append(value)
                previous = value
        self._runs = []
        return merged


def index(registry):
    """An :class:`Index` of the referenced keys and one of the referenced pending uploads.

    A key is indexed under the name the store's listing gives its object too, where the
    two differ (:meth:`~kinto_attachment.storage.local.store.LocalStore.listed_key`: a
    folder an operator moved and left a symbolic link in its place): the file a record
    names through the link is listed under its real name, which must read as referenced.
    And under its folded form, for stores on disks that ignore case in names
    (:meth:`~kinto_attachment.storage.local.store.LocalStore.name_folding`), which the index
    looks a listed name up as when the name itself is not referenced."""
    keys, pending = _SortedRuns(), _SortedRuns()
    store = registry.attachment_store
    listed_key = getattr(store, "listed_key", None)
    folding = getattr(store, "name_folding", None)
    folded_key = folding() if folding is not None else None
    for reference in read(registry):
        if reference.pending:
            pending.add(key_hash(reference.key))
            continue
        names = {reference.key}
        if listed_key is not None:
            names.add(listed_key(reference.key))
        if folded_key is not None:
            names |= {folded_key(name) for name in names}
        for name in names:
            keys.add(key_hash(name))
    return Index(keys.merged(), folded_key), Index(pending.merged())
