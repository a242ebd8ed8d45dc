"""Step 2: the file of each record with an attachment but no link is retained (a copy, often:
deleting it must not delete the original's file), unless it is one of our uploads' (its name
tagged, or an upload's link naming it); a location outside ``base_url`` is reported, never
guessed (see :mod:`kinto_attachment.adoption`)."""

import transaction
from kinto.core.storage import Filter
from kinto.core.utils import COMPARISON

from ..state import instance, legacy, links, paging, records, references
from .locations import linked_keys, names
from .report import BATCH


def _collections(storage):
    for bucket in paging.every(storage, "bucket", ""):
        for collection in paging.every(storage, "collection", f"/buckets/{bucket['id']}"):
            yield bucket["id"], collection["id"]


def keep_unlinked_files(registry, report):
    storage = registry.storage
    with transaction.manager:
        collections = list(_collections(storage))
    with_attachment = [Filter("attachment", True, COMPARISON.HAS)]
    would_retain = report.would_retain  # A dry run's, step 1's included.
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
        if any(names(store, location, key) for key in pretended.get(record["id"], ())):
            continue
        key = store.key_for_url(location)
        if key is not None and _accounted(storage, key, would_retain):
            continue  # A later run: kept already, or ours (no file lookup, no listing).
        keys = _named(storage, store, location, key, report.dry_run)
        if not keys:
            report.foreign.append((links.record_uri(*ids, record["id"]), location))
            continue
        # ``key`` was looked at above: only the keys links named are left to look at.
        keys = {k for k in keys if k == key or not _accounted(storage, k, would_retain)}
        if not keys:
            continue
        report.unlinked += 1
        if report.dry_run:
            would_retain.update(keys)
        else:
            links.retain(storage, sorted(keys))


def _named(storage, store, location, key, dry_run):
    """The keys a copy's ``location`` names (``key``: the one ``base_url`` reads in it).

    That key if the store holds it; else those a link names by step 1's rule: a location
    written under an older base URL than ours may read as a key under ours too
    (``https://cdn/attachments/K`` once ``base_url`` is ``https://cdn/``: ``attachments/K``,
    no such file), and name the file ``K`` the original's link now owns, which deleting the
    original would delete; else that key all the same, a file lost already, whose name stays
    taken (a later upload of that name would be served through the copy)."""
    if key is not None and references.in_store(store, key):
        return {key}
    linked = linked_keys(storage, location, dry_run)
    return linked or ({key} if key is not None else set())


def _accounted(storage, key, would_retain):
    """Whether step 2 need not keep ``key``: retained already (or counted so by a dry run),
    or one of our uploads' (its name tagged, or an upload's link naming it: a copy of a
    record made since the switch, whose file deleting the original deletes, as between two
    ``kinto migrate``: docs)."""
    return (
        instance.tag_of(key) is not None
        or key in would_retain
        or links.is_retained(storage, key)
        or bool(links.uploaded_among(storage, [key]))
    )


def _legacy_keys(storage, bucket_id, collection_id):
    keys = {}
    for link in legacy.links(storage, bucket_id, collection_id):
        keys.setdefault(link["record_id"], []).append(link["key"])
    return keys
