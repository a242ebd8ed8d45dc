"""``/data/files``: SlimFaas's temporary-file API on top of our pipeline, stores and Kinto.

==========  ====================================  ============================================
POST        ``/data/files?id={id?}&ttl={ms?}``    raw body streamed to the store; 200, the id
GET         ``/data/files/{id}``                  the content (404: unknown, expired, corrupt)
DELETE      ``/data/files/{id}``                  204
GET         ``/data/files``                       JSON list of the live files
OPTIONS     both                                  ``Allow``; CORS preflights
==========  ====================================  ============================================

Mounted at ``/v1/data/files`` and at the server root. Private by default: callers that are
neither on a trusted network nor one of the configured principals get a 404, as if the route
did not exist, and web pages get a 403 (:mod:`~kinto_attachment.data_files.cross_site`). Every
transfer holds its size in the process's transfer budget while it runs.
"""

import contextlib
import logging
import math

from kinto.core.utils import msec_time
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from .. import downloads, errors
from ..downloads import caching
from ..events import recording
from ..routes import DATA_FILE, DATA_FILES
from ..state import data_file_entries, long_transactions, shared
from ..uploads import intake, lifecycle
from ..web import streams
from . import posted, preconditions
from .limiter import Busy
from .visibility import VisiblePredicate, allowed_origin, is_preflight, require_visible


logger = logging.getLogger(__name__)

#: Visibility is checked by the views themselves (a 404 for whoever may not see the route).
_PUBLIC = {"permission": NO_PERMISSION_REQUIRED}
PREFLIGHT_MAX_AGE = 86400


def upload(request):
    require_visible(request)
    file_id = posted.requested_id(request)
    ttl = posted.ttl(request)
    max_size = request.registry.attachment_settings.default.max_size_bytes
    reservation = posted.reservation(request, max_size)
    store = request.registry.attachment_store
    plan = posted.plan(request, file_id, max_size)
    registry = request.registry
    # Before the body: a write that cannot happen is not sent for nothing (only when asked:
    # a read less). Checked again under the id's lock once the body is in.
    if preconditions.asked(request):
        preconditions.require(request, data_file_entries.get(registry.storage, file_id))
    long_transactions.end_before_body(request)

    with (
        _reserved(request, reservation) as hold,
        intake.Intake(store, plan, intake.settling_transaction(request)) as received,
    ):

        def write(chunk):  # The body is coming: its budget is not idle.
            hold.touch(len(chunk))
            received.write(chunk)

        streams.pump(*streams.request_body(request), write)
    blob = received.blob
    lifecycle.delete_unless_committed(request, store, [blob.key])

    with errors.store_errors():
        # The bytes were hashed on their way in: this version of the blob is verified.
        stored = store.stat(blob.key)
    data_file_entries.lock(registry, file_id)
    previous = data_file_entries.get(registry.storage, file_id)
    preconditions.require(request, previous)
    entry = {
        "key": blob.key,
        "filename": blob.filename,
        "mimetype": blob.mimetype,
        "size": blob.size,
        "hash": blob.hash,
        "expiration": None if ttl is None else msec_time() + ttl,
        "verified": stored.version,
        # Every version of the entry after ``previous`` has this blob (``If-Range``).
        "since": None if previous is None else previous["last_modified"] + 1,
    }
    data_file_entries.put(registry.storage, file_id, entry, previous)
    if previous is not None:
        lifecycle.retire(request, [previous["key"]])
    recording.stored(
        registry,
        {"file_id": file_id},
        data_file_entries.metadata(store, entry),
        blob.key,
        replaced_hash=None if previous is None else previous["hash"],
        request=request,
    )
    return Response(file_id, content_type="text/plain", charset="utf-8")


def _acquire(request, size, idle_release=False):
    """Hold ``size`` bytes of the transfer budget, or 503 after a bounded wait."""
    try:
        return request.registry.transfer_limiter.acquire(size, idle_release=idle_release)
    except Busy:
        wait = request.registry.attachment_settings.data_files.transfer_wait_seconds
        retry_after = max(1, math.ceil(wait))
        raise errors.refuse("transfers_busy", retry_after=retry_after) from None


@contextlib.contextmanager
def _reserved(request, size):
    """An upload's hold of the budget. Given back if its client sends nothing for
    ``transfer_idle_seconds``, or too little (``transfer_min_bytes_per_second``), as a
    download's: under a server that hands the body over as it comes (gunicorn, uWSGI), a
    client declaring the whole budget and sending a byte now and then would otherwise make
    every other transfer wait, then fail, for as long as it likes."""
    hold = _acquire(request, size, idle_release=True)
    try:
        yield hold
    finally:
        hold.release()


def _live_entry(request, file_id):
    entry = None
    # An id no upload accepts was never stored: not looked up (PostgreSQL fails on a NUL).
    if data_file_entries.valid_id(file_id):
        entry = data_file_entries.get(request.registry.storage, file_id)
    if entry is None or not data_file_entries.is_live(entry):
        raise errors.refuse("missing", resource_name="data-file", id=file_id)
    return entry


def download(request, file_id):
    """The content of a live entry, whole: an id uploaded again (or deleted) while it is read
    serves the new content (or a ``404``), see :func:`~kinto_attachment.downloads.serve`."""
    require_visible(request)
    store = request.registry.attachment_store

    def current(_again):  # The entry is read each time.
        entry = _live_entry(request, file_id)
        served = downloads.Download(
            key=entry["key"],
            size=entry["size"],
            mimetype=entry["mimetype"],
            filename=entry["filename"],
            hash=entry["hash"],
            last_modified=entry["last_modified"],
            unchanged_since=entry.get("since"),
            previous_modified=data_file_entries.previous_modified(entry),
            inline=False,
            # Who may see the route depends on the caller; an id is given new content by a
            # new upload: revalidated by the caller's own cache only.
            cache_control=caching.PRIVATE,
            vary=caching.PER_CALLER,
        )
        _require_intact(request, store, entry, served)
        return served

    def budgeted(stream, length):
        """The body's file, holding its length of the transfer budget while it is sent."""
        hold = _acquire(request, length, idle_release=True)
        return request.registry.transfer_limiter.holding(hold, stream)

    def lost(download):
        return errors.refuse("missing", resource_name="data-file", id=file_id)

    return downloads.serve(request, store, current, lost=lost, wrap=budgeted)


def _require_intact(request, store, entry, served):
    """404 unless the blob has the recorded size and sha256; :class:`~kinto_attachment.
    downloads.Missing` if it is gone (the entry may have been uploaded again meanwhile).

    The content was hashed as it was uploaded, and the blob's version then (size and mtime,
    or S3's ETag) recorded with the entry: downloads only compare versions, so a large file is
    not read twice each time it is served. A blob rewritten since is hashed again, once.
    """
    stat = downloads.stat_of(store, served.key)
    if stat is None:
        raise downloads.Missing(served)
    if stat.version == entry.get("verified"):
        return
    if stat.size != served.size or not downloads.matches(store, served):
        logger.error(
            "Data file %r: blob %r does not match its size and sha256", entry["id"], served.key
        )
        raise errors.refuse("missing", resource_name="data-file", id=entry["id"])
    # Remember the verification, unless the entry changed since it was read (re-uploaded,
    # deleted): that one is not the entry that was verified. Not on a read-only node (a
    # replica's database refuses writes): it verifies again next time.
    if shared.read_only(request.registry):
        return
    data_file_entries.lock(request.registry, entry["id"])
    storage = request.registry.storage
    current = data_file_entries.get(storage, entry["id"])
    if current is not None and current["last_modified"] == entry["last_modified"]:
        data_file_entries.put(storage, entry["id"], {**entry, "verified": stat.version}, current)


def delete(request, file_id):
    require_visible(request)
    if not data_file_entries.valid_id(file_id):  # Never stored (see ``_live_entry``).
        preconditions.require(request, None)
        return Response(status=204)
    data_file_entries.lock(request.registry, file_id)
    storage = request.registry.storage
    preconditions.require(request, data_file_entries.get(storage, file_id))
    entry = data_file_entries.remove(storage, file_id)
    if entry is not None:
        lifecycle.retire(request, [entry["key"]])
        recording.deleted(
            request.registry,
            {"file_id": file_id},
            data_file_entries.metadata(request.registry.attachment_store, entry),
            request=request,
        )
    return Response(status=204)


#: .NET's ticks (100 ns since 0001-01-01 UTC) of the Unix epoch.
UNIX_EPOCH_TICKS = 621_355_968_000_000_000


def _ticks(expiration):
    """SlimFaas's ``expireAtUtcTicks`` of an entry expiring at ``expiration`` (epoch
    milliseconds): .NET ticks, ``-1`` for none; at most a 64-bit integer's largest, as
    SlimFaas clamps it (an entry 1.0.0 stored with a 15-digit ttl would be past it)."""
    if expiration is None:
        return -1
    return min(expiration * 10_000 + UNIX_EPOCH_TICKS, posted.INT64_MAX)


def listing(request):
    require_visible(request)
    now = msec_time()
    files = [
        {
            "id": entry["id"],
            "expiration": entry.get("expiration"),
            "expireAtUtcTicks": _ticks(entry.get("expiration")),
            "filename": entry["filename"],
            "size": entry["size"],
            "mimetype": entry["mimetype"],
            "hash": entry["hash"],
        }
        for entry in data_file_entries.entries(request.registry.storage)
        if data_file_entries.is_live(entry, now)
    ]
    return Response(json=files)


def options_of(route, methods):
    """The ``OPTIONS`` view of ``route``, serving ``methods``: ``Allow``, and a preflight's
    answer for the origins of ``data_files.allowed_origins`` (the others get none: their
    pages may not use the route)."""
    allow = ", ".join((*methods, "HEAD", "OPTIONS"))
    allowed_headers = ", ".join(route.allowed_headers)

    def options(request):
        require_visible(request)
        response = Response(status=204, headers={"Allow": allow})
        if is_preflight(request) and allowed_origin(request) is not None:
            response.headers.update(
                {
                    "Access-Control-Allow-Methods": allow,
                    "Access-Control-Allow-Headers": allowed_headers,
                    "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE),
                }
            )
        return response

    return options


def files_view(request):
    """``/data/files``: list or upload."""
    return upload(request) if request.method == "POST" else listing(request)


def file_view(request):
    """``/data/files/{id}``: download or delete."""
    file_id = request.path_info.rstrip("/").rsplit("/", 1)[-1]
    if request.method == "DELETE":
        return delete(request, file_id)
    return download(request, file_id)


def includeme(config):
    """Routes under the API prefix, and the same at the server root.

    At the root, Kinto's catch-all route redirects to the API prefix (a 307 that ``curl -X
    POST`` would not follow): there our views are added to that route with a path predicate,
    which Pyramid prefers to the redirection. Without it, plain root routes are added.
    """
    config.add_tween("kinto_attachment.data_files.cross_site.sent_host_tween_factory")
    config.add_view_predicate("attachment_visible", VisiblePredicate)
    settings = config.get_settings()
    redirecting = str(settings.get("version_prefix_redirect_enabled", True)).lower() == "true"
    for route, view in ((DATA_FILES, files_view), (DATA_FILE, file_view)):
        config.add_route(route.name, route.pattern)
        if not redirecting:
            prefix, config.route_prefix = config.route_prefix, None
            config.add_route(route.root_name, route.pattern)
            config.route_prefix = prefix
        methods = tuple(method for method in route.methods if method != "OPTIONS")
        refused = errors.not_allowed(route.methods, before=require_visible)
        handlers = ((view, methods), (options_of(route, methods), "OPTIONS"), (refused, None))
        for handler, handled in handlers:
            config.add_view(handler, route_name=route.name, request_method=handled, **_PUBLIC)
            if redirecting:
                for shared in route.shared:
                    config.add_view(
                        handler,
                        route_name=shared.route,
                        path_info=shared.path,
                        attachment_visible=True,
                        request_method=handled,
                        **_PUBLIC,
                    )
            else:
                config.add_view(
                    handler, route_name=route.root_name, request_method=handled, **_PUBLIC
                )
