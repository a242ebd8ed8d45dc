"""Kinto events that concern attachments.

- A deleted record, collection or bucket takes its blobs with it (after commit).
- ``POST /__flush__`` takes every blob with it (kinto-attachment leaves them on disk): once
  it has committed, every blob it referenced is deleted, with the orphans the garbage
  collector would take; uploads under way on any node keep theirs.
- The ``attachment`` field of a record is ours: a ``PUT``/``PATCH``/``POST`` of the record that
  sets or changes it is refused, so that a record can never point at a file it does not own
  (plugins that copy records, as Remote Settings' signer does, are trusted as
  kinto-attachment trusts them: :func:`on_records_written`).
  The ``ResourceChanged`` listener sees every write whatever its path (batch, plugins) and
  its refusal rolls the transaction back; since the memory backend cannot roll back, the
  record views' JSON bodies are also checked before the view runs: a JSON-Patch is applied
  to a copy of the stored record, so that no form of path (``/data``, ``""``, ``move`` or
  ``copy`` from, ``~1`` escapes) can slip an ``attachment`` through.
- Our routes stream bodies (uploads, downloads, empty 204s), which a ``POST /batch``
  sub-request can neither send nor carry back: those the route table marks ``streamed``
  (:mod:`~kinto_attachment.routes`) are refused there, before any write.
- Kinto's own writes lock what they change first (:mod:`~kinto_attachment.write_locks`), once
  Kinto's permission check has let them through and their body has arrived whole
  (:func:`kinto_writes`, :func:`~kinto_attachment.web.streams.receive_whole`): a refused
  request locks nothing, and a client that sends its body slowly holds no lock meanwhile.
"""

import copy

from kinto.core.events import ACTIONS, ResourceChanged
from kinto.core.utils import apply_json_patch, msec_time
from pyramid.events import ContextFound

from . import errors, locks, routes, write_locks
from .events import recording
from .state import instance, links, promises, records, references, shared
from .uploads import lifecycle
from .web import streams


FIELD = "attachment"
WRITES = ("PUT", "PATCH", "POST")
RECORD_ROUTES = ("record-object", "record-plural")


def on_resources_deleted(event):
    """Unlink and delete the blobs of deleted records, collections or buckets; record the
    events of their files."""
    storage = event.request.registry.storage
    payload = event.payload
    popped, files = [], {}
    changes = [(_deleted_ids(payload, change), change) for change in event.impacted_objects]
    # Already held when the delete came through Kinto's views (write_locks.lock_write); taken
    # in the order every path takes them (sorted) when a plugin deletes several at once.
    # (Nothing more taken where their parent is held: a plural delete's collection.)
    for path in sorted({locks.record_path(*ids) for ids, _ in changes}):
        locks.hold(event.request.registry, path)
    if payload["resource_name"] == "record":
        # Their links popped by pages: a plural delete may take thousands of records.
        popped = links.pop_records(
            storage,
            payload["bucket_id"],
            payload["collection_id"],
            [ids[2] for ids, _ in changes],
        )
        for ids, change in changes:
            if attachment := records.attachment_of(change["old"]):  # Not a string of old.
                files[ids] = attachment
    else:
        for ids, _ in changes:
            unlinked = links.pop(storage, *ids)
            popped += unlinked
            # Its records are gone: their links tell where their files were.
            files.update(_deleted_files(event.request.registry.attachment_store, unlinked))
    lifecycle.discard(event.request, popped)
    for (bucket_id, collection_id, record_id), attachment in files.items():
        ids = {"bucket_id": bucket_id, "collection_id": collection_id, "record_id": record_id}
        recording.deleted(event.request.registry, ids, attachment, request=event.request)


def _deleted_ids(payload, change):
    """The ids of the record, collection or bucket a deletion ``change`` removed."""
    object_id = change["old"]["id"]
    if payload["resource_name"] == "record":
        return payload["bucket_id"], payload["collection_id"], object_id
    if payload["resource_name"] == "collection":
        return payload["bucket_id"], object_id
    return (object_id,)


def _deleted_files(store, unlinked):
    """``{(bid, cid, rid): attachment}`` of links removed with their collection or bucket:
    only the ``location`` is known."""
    return {
        (link["bucket_id"], link["collection_id"], link["record_id"]): {
            "location": store.url(link["key"])
        }
        for link in unlinked
    }


def _refuse_edit(before, after):
    if before != after:
        raise errors.refuse("attachment_edit")


def on_records_written(event):
    """Refuse edits of ``attachment`` that do not come from our own views.

    A client's write (a record view's, in a batch or not) may not change it at all: its body
    was checked before the view ran (:func:`_check_record_body`), and this refusal rolls back
    whatever got past. Plugins that write records themselves and announce them are trusted as
    kinto-attachment trusts them, so that they keep working: any write flagged
    ``_attachment_auto_save`` (Remote Settings' signer flags its copies of records whose
    attachment changed), and any other write but one that changes an attachment into another
    (the signer creates the records it publishes, their attachments with them). Such a copy
    names the original's file without owning it (no link): deleting the copy deletes no file,
    and the garbage collector keeps every file a record names."""
    request = event.request
    if records.is_internal_write(request) or getattr(request, "_attachment_auto_save", False):
        return
    client = _is_record_write(request)
    for change in event.impacted_objects:
        before, after = (change.get("old") or {}).get(FIELD), change["new"].get(FIELD)
        if client or (before and after):
            _refuse_edit(before, after)


def _is_record_write(request):
    """Whether ``request`` is a client's write through Kinto's record views."""
    route = getattr(request, "matched_route", None)
    return route is not None and route.name in RECORD_ROUTES and request.method in WRITES


def _stored_attachment(request):
    return (request.context.current_object or {}).get(FIELD)


def _patched_attachment(request, ops):
    """The ``attachment`` the stored record would have once ``ops`` (JSON-Patch) applied, or
    the stored one when they do not apply (Kinto then refuses the request itself)."""
    stored = request.context.current_object or {}
    try:
        patched = apply_json_patch(copy.deepcopy(stored), copy.deepcopy(ops))
    except (ValueError, TypeError, KeyError, AttributeError):
        return stored.get(FIELD)
    data = patched.get("data")
    return data.get(FIELD) if isinstance(data, dict) else None


def _check_record_body(request):
    """Refuse, before the view writes, a record body that would change ``attachment``: the
    stored record is the one :func:`.write_locks.lock_write` read again under the record's lock.

    A write Kinto will refuse as made on another version (``412``) says nothing of the
    attachment: Kinto Admin sends back the record it loaded, whose file another user may have
    replaced since; that user must read "modified meanwhile", not that he edited a file."""
    if _modified_meanwhile(request):
        return
    try:
        body = request.json_body
    except (ValueError, RecursionError):
        return  # Kinto answers malformed JSON itself.
    if request.content_type == "application/json-patch+json":
        if isinstance(body, list) and request.method == "PATCH":
            _refuse_edit(_stored_attachment(request), _patched_attachment(request, body))
        return
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return
    if request.method == "POST":
        _refuse_edit(None, data.get(FIELD))
    elif FIELD in data or request.method == "PUT":
        _refuse_edit(_stored_attachment(request), data.get(FIELD))


def _modified_meanwhile(request):
    """Whether Kinto will answer the write ``412`` (its resource's precondition check): an
    ``If-Match`` of another version than the stored record's, or ``If-None-Match: *`` on a
    stored record. The stored record is the one read under the record's lock, which Kinto's
    view checks too."""
    stored = request.context.current_object
    if stored is None:
        return False
    if request.headers.get("If-None-Match", "").strip() == "*":
        return True
    expected = request.headers.get("If-Match", "").strip()
    if not expected or expected == "*":
        return False
    try:
        return int(expected.strip('"')) != stored.get("last_modified")
    except ValueError:  # Kinto refuses the header itself.
        return False


def _refuse_in_batch(request):
    if records.in_batch(request):
        raise errors.refuse("in_batch", method=request.method, path=request.path)


def on_context_found(event):
    """Our streamed routes are refused in a batch, before anything is read."""
    request = event.request
    route = request.matched_route
    if route is None or records.is_internal_write(request):
        return
    # By name: on Kinto's ``default`` bucket route, the subrequest to ours is the one refused.
    ours = routes.BY_NAME.get(route.name)
    if ours is not None and ours.streamed:
        _refuse_in_batch(request)


def kinto_writes(view, info):
    """A view deriver: before a view of Kinto's runs, once the request is authorised (Pyramid
    checks permissions first, ``secured_view``), its body is received whole, what it will
    change is locked (:mod:`.write_locks`), and a record's body checked
    (:func:`_check_record_body`); ``__flush__`` prepares the store's wipe. After the
    authorisation: a request Kinto refuses (an anonymous ``PUT`` of someone's record) reads
    no body and locks nothing, as Kinto alone would; before the lock: a body sent slowly
    holds no lock that other writes would wait for."""
    if info.exception_only:
        return view

    def guarded(context, request):
        # Not when the view renders an error (a batch's failed sub-request goes through
        # Kinto's error view with the exception as its context): prepared already, or never.
        if not isinstance(context, BaseException):
            _before_kinto_view(request)
        return view(context, request)

    return guarded


def _before_kinto_view(request):
    route = request.matched_route
    if route is None or records.is_internal_write(request) or routes.of(request) is not None:
        return
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        streams.receive_whole(request)
    if route.name == "batch" and request.method == "POST":
        write_locks.lock_batch(request)
    write_locks.lock_write(request)
    if route.name == "flush" and request.method == "POST":
        on_flush(request)
    elif _is_record_write(request):
        _check_record_body(request)


def on_flush(request):
    """``POST /__flush__`` wipes Kinto's storage: once it has committed, wipe the store too.

    What goes is what the flush makes unreferenced: every blob or pending S3 upload that a
    record, a link, a ``/data/files`` entry, a resumable upload or a retained old file names,
    read under the root lock (exclusive: no write runs meanwhile), as the store holds them
    then (each blob's version: a name referenced without a file, in quarantine or a resumable
    upload's final one, is free once the flush has committed, and another node's upload may
    take it before the store is wiped: its file is not the one the flush saw, and stays),
    and whatever the garbage collector would take as an orphan (unreferenced, older than
    ``gc.orphans_grace_seconds``, this instance's:
    :class:`~kinto_attachment.state.instance.Sorting`). A younger unreferenced blob is an
    upload under way, possibly on another node: stored, waiting for the lock the flush holds,
    about to link its record once the flush has committed.
    Deleting it would leave that record with a missing file; it is left to the garbage
    collector, which takes it after the grace period if nothing claims it.

    The flush empties the storage, the instance's tag with it: it is written back, the
    instance's still (:func:`~kinto_attachment.state.instance.keep`), and so are the settings
    the servers promise the collector (:mod:`~kinto_attachment.state.promises`).
    """
    registry = request.registry
    referenced, pending = references.index(registry)
    store = registry.attachment_store
    listing = getattr(store, "iter_blobs", None)  # IListableStore is optional.
    held = (
        {blob.key: blob.version for blob in listing() if blob.key in referenced} if listing else {}
    )
    grace_ms = registry.attachment_settings.gc.orphans_grace_seconds * 1000
    kept = instance.tag(registry)
    links.pop(registry.storage)
    lifecycle.after_commit(request, instance.keep, registry, kept)
    lifecycle.after_commit(request, promises.record, registry)
    lifecycle.after_commit(request, wipe_store, registry, referenced, held, pending, grace_ms)


def wipe_store(registry, referenced, held, pending, grace_ms):
    """Delete the blobs of the store that were referenced and ``held`` (``{key: version}``)
    when the flush read them, if still those versions, and the orphans; abort the pending
    uploads likewise."""
    store = registry.attachment_store
    sorting = instance.Sorting(registry, msec_time() - grace_ms, store.iter_pending())
    flushed = []

    def was_referenced(key):
        if not referenced.see(key):
            return False
        if sorting.may_be_mine(key) and key in held:  # Another's is kept, referenced or not.
            flushed.append(key)
        return True

    orphans = list(sorting.orphans(store.iter_blobs(), was_referenced))
    flushed = [key for key in flushed if _version(store, key) == held[key]]
    store.delete_many(flushed)
    # As the collector deletes them: names quarantined, each looked at again (the listing
    # may be old by now: another node's collector may have deleted one, and an upload taken
    # its name for a record).
    shared.on_its_own(lifecycle.delete_orphans, registry, orphans, msec_time())
    for upload in [u for u in sorting.uploads if u.upload_id in pending]:
        store.abort_pending(upload.key, upload.upload_id)
    for upload in list(sorting.abandoned(pending)):
        store.abort_pending(upload.key, upload.upload_id)


def _version(store, key):
    stat = store.stat(key)
    return None if stat is None else stat.version


def includeme(config):
    config.add_subscriber(
        on_resources_deleted,
        ResourceChanged,
        for_resources=("record", "collection", "bucket"),
        for_actions=(ACTIONS.DELETE,),
    )
    config.add_subscriber(
        on_records_written,
        ResourceChanged,
        for_resources=("record",),
        for_actions=(ACTIONS.CREATE, ACTIONS.UPDATE),
    )
    config.add_subscriber(on_context_found, ContextFound)
    config.add_view_deriver(kinto_writes)
