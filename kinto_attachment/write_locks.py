"""Kinto's own writes lock what they change, as our views do: a record's ``PUT``, ``PATCH`` or
``DELETE``, a collection's or a bucket's ``DELETE``, ``__flush__``, and every write of a
``POST /batch``, before any of them runs. So no write of Kinto's interleaves with an upload or
a delete of the same record, collection or bucket (:mod:`~kinto_attachment.locks`)."""

from types import SimpleNamespace
from urllib.parse import unquote

from kinto.core.authorization import DYNAMIC
from kinto.core.storage.exceptions import ObjectNotFoundError
from kinto.core.utils import current_service
from kinto.views import object_exists_or_404
from pyramid import httpexceptions
from pyramid.interfaces import IRoutesMapper

from . import locks
from .state import timestamps
from .web import principals


def _lock_path(request):
    """The lock path a Kinto write takes before its view reads anything, or None."""
    route, method, match = request.matched_route.name, request.method, request.matchdict
    if route == "flush":
        return locks.ROOT if method == "POST" else None
    if route == "record-object" and method in ("PUT", "PATCH", "DELETE"):
        return locks.record_path(match["bucket_id"], match["collection_id"], match["id"])
    if method != "DELETE":
        return None
    return {
        "bucket-plural": lambda: ("buckets",),
        "bucket-object": lambda: locks.record_path(match["id"]),
        "collection-plural": lambda: locks.record_path(match["bucket_id"]),
        "collection-object": lambda: locks.record_path(match["bucket_id"], match["id"]),
        "record-plural": lambda: locks.record_path(match["bucket_id"], match["collection_id"]),
    }.get(route, lambda: None)()


#: The routes of Kinto's ``default`` bucket (``kinto.plugins.default_bucket``).
DEFAULT_BUCKET_ROUTES = ("default_bucket", "default_bucket_collection")


def lock_batch(request):
    """Lock, in order, what every write of a ``POST /batch`` will lock, before any of them
    runs: each sub-request locks its own record when it comes, and holds it until the
    batch's transaction ends; in the order clients send them, two batches writing ``r1, r2``
    and ``r2, r1`` would each wait for the other (PostgreSQL aborts one: a 503). Sorted,
    paths come root first, as every lock is taken (:mod:`~kinto_attachment.locks`). The
    sub-requests take their locks again: they hold them already. A body Kinto will refuse
    locks nothing."""
    try:
        body = request.json_body
    except (ValueError, RecursionError):
        return
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        return
    if len(body["requests"]) > int(request.registry.settings.get("batch_max_requests", 25)):
        return  # Kinto refuses it: nothing to match (the route table, for each).
    defaults = body.get("defaults") if isinstance(body.get("defaults"), dict) else {}
    writes = []
    for sub in body["requests"]:
        sub = {**defaults, **sub} if isinstance(sub, dict) else {}
        method, path = sub.get("method", "GET"), sub.get("path")
        if isinstance(method, str) and isinstance(path, str):
            writes.append((method.upper(), path.split("?", 1)[0]))
    _hold(request, writes)


def _hold(request, writes):
    """Take, in order, the locks of ``writes`` (``(method, path)`` as Kinto serves them),
    once the timestamps their resources read are made (:mod:`.state.timestamps`)."""
    mapper = request.registry.getUtility(IRoutesMapper)
    prefix = f"/{request.registry.route_prefix}"
    paths, read = set(), set()
    for method, path in writes:
        path = _as_kinto_reads(request, path, prefix)
        for route in mapper.get_routes():
            match = route.match(path)
            if match is not None:
                target = SimpleNamespace(matched_route=route, method=method, matchdict=match)
                paths.add(_lock_path(target))
                read.add(_timestamp_read(route.name, match))
                break
    timestamps.ensure(request.registry, [r for r in read if r is not None])
    for path in sorted(p for p in paths if p is not None):
        locks.hold(request.registry, path)


def _timestamp_read(route, match):
    """``(resource_name, parent_id)`` of the timestamp a resource's view reads, for the
    resources whose writes wait for our locks (:func:`_lock_path`), or None."""
    kind = {
        "bucket-object": "bucket",
        "bucket-plural": "bucket",
        "collection-object": "collection",
        "collection-plural": "collection",
        "record-object": "record",
        "record-plural": "record",
    }.get(route)
    if kind == "bucket":
        return ("bucket", "")
    if kind == "collection":
        return ("collection", f"/buckets/{match['bucket_id']}")
    if kind == "record":
        return ("record", f"/buckets/{match['bucket_id']}/collections/{match['collection_id']}")
    return None


def _as_kinto_reads(request, path, prefix):
    """A write's ``path`` (a batch sub-request's, or one of the ``default`` bucket's) as Kinto
    will serve it: under the API prefix, percent-escapes decoded (``r%31`` is ``r1``),
    without a trailing ``/`` (which Kinto redirects and the batch follows), and the
    ``default`` bucket as the user's own."""
    path = unquote(path).rstrip("/")
    path = path if path.startswith(prefix + "/") else prefix + path
    default = f"{prefix}/buckets/default"
    if path == default or path.startswith(default + "/"):
        request.authenticated_userid  # noqa: B018 (who the user is: the bucket's id)
        # Anonymous (Kinto refuses), or without the plugin: nothing to name.
        if request.prefixed_userid and hasattr(type(request), "default_bucket_id"):
            path = f"{prefix}/buckets/{request.default_bucket_id}" + path[len(default) :]
    return path


def lock_write(request):
    """Lock what the write will change, as our own views do, so that it cannot interleave
    with an upload (or a delete) of the same record, collection or bucket. A record's write
    then acts on the record as it is once locked (:func:`_read_again`)."""
    if request.matched_route.name in DEFAULT_BUCKET_ROUTES:
        # Kinto's view creates the bucket and the collection (or brings them back from their
        # tombstones: rows it holds then), then writes through a subrequest, which locks:
        # locked before, as that subrequest will lock, nothing it holds is waited for by
        # another write holding the lock (a delete of the bucket, ``__flush__``, a batch).
        if request.method in ("PUT", "PATCH", "DELETE"):
            _hold(request, [(request.method, request.path)])
        return
    path = _lock_path(request)
    if path is None:
        return
    route, match = request.matched_route.name, request.matchdict
    if route.endswith("-plural"):
        # Its view reads the timestamp of what it deletes once it holds the lock, where the
        # factory of an object's write reads it before (:mod:`.state.timestamps`).
        timestamps.ensure(request.registry, [_timestamp_read(route, match)])
    locks.hold(request.registry, path)
    if route == "record-object":
        _read_again(request)


def _read_again(request):
    """Kinto's route factory read the record, and decided what the write needs, before the
    lock: the view would act on that copy (a ``PATCH`` writing back an attachment replaced
    meanwhile), with that decision (a reader's ``DELETE`` of a missing record is let through,
    to be a 404: a record created while it waited would be deleted). It is read again, with
    its permissions as the factory reads it (a patch starts from them: without, it wrote
    the record's back empty), and a record created, changed or deleted meanwhile is
    authorised again, as if the write came after the one it waited for."""
    context, match = request.context, request.matchdict
    before = context.current_object
    try:
        record = context._resource.model.get_object(match["id"])
    except ObjectNotFoundError:
        record = None
    context.current_object = record
    if record is None:
        # Its collection too may have gone, or been made again, while the write waited (a
        # delete holds it): read again, where Kinto's record resource would take the copy
        # its factory kept (but the ``{}`` Kinto's ``default`` bucket view leaves there,
        # which validates nothing: as Kinto alone).
        bucket_id, collection_id = match["bucket_id"], match["collection_id"]
        collection = object_exists_or_404(
            request,
            resource_name="collection",
            parent_id=f"/buckets/{bucket_id}",
            object_id=collection_id,
        )
        kept = request.bound_data.setdefault("collections", {})
        uri = f"/buckets/{bucket_id}/collections/{collection_id}"
        if kept.get(uri):
            kept[uri] = collection
    if (before or {}).get("last_modified") == (record or {}).get("last_modified"):
        return
    principals.forget(request)  # Those of then: a group may have lost the user meanwhile.
    context.permission_object_id, context.required_permission = context._find_required_permission(
        request, current_service(request)
    )
    if not request.has_permission(DYNAMIC, context):
        raise httpexceptions.HTTPForbidden()
