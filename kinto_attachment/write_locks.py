"""Kinto's own writes lock what they change, as our views do: a record's ``PUT``, ``PATCH`` or
``DELETE``, a collection's or a bucket's ``DELETE``, ``__flush__``, and every write of a
``POST /batch``, before any of them runs. So no write of Kinto's interleaves with an upload or
a delete of the same record, collection or bucket (:mod:`~kinto_attachment.locks`)."""

import contextlib
from types import SimpleNamespace
from urllib.parse import unquote

from kinto.core.authorization import DYNAMIC
from kinto.core.storage.exceptions import ObjectNotFoundError
from kinto.core.utils import current_service
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
    mapper = request.registry.getUtility(IRoutesMapper)
    prefix = f"/{request.registry.route_prefix}"
    paths, read, implicit = set(), set(), set()
    for sub in body["requests"]:
        sub = {**defaults, **sub} if isinstance(sub, dict) else {}
        method, path = sub.get("method", "GET"), sub.get("path")
        if not isinstance(method, str) or not isinstance(path, str):
            continue
        path, default = _as_kinto_reads(request, path.split("?", 1)[0], prefix)
        for route in mapper.get_routes():
            match = route.match(path)
            if match is not None:
                target = SimpleNamespace(
                    matched_route=route, method=method.upper(), matchdict=match
                )
                paths.add(_lock_path(target))
                read.add(_timestamp_read(route.name, match))
                if default and route.name.startswith("record-"):
                    implicit.add((match["bucket_id"], match["collection_id"]))
                break
    _create_implicitly(request, implicit)
    # The timestamps the sub-requests' resources read, made first (:mod:`.state.timestamps`).
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
    """A batch sub-request's ``path`` as Kinto will serve it: under the API prefix,
    percent-escapes decoded (``r%31`` is ``r1``), without a trailing ``/`` (which Kinto
    redirects and the batch follows), and the ``default`` bucket as the user's own; and
    whether it was the ``default`` bucket's."""
    path = unquote(path).rstrip("/")
    path = path if path.startswith(prefix + "/") else prefix + path
    default = f"{prefix}/buckets/default"
    if path == default or path.startswith(default + "/"):
        request.authenticated_userid  # noqa: B018 (who the user is: the bucket's id)
        # Anonymous (Kinto refuses), or without the plugin: nothing to name.
        if request.prefixed_userid and hasattr(type(request), "default_bucket_id"):
            path = f"{prefix}/buckets/{request.default_bucket_id}" + path[len(default) :]
            return path, True
    return path, False


def _create_implicitly(request, implicit):
    """Create, before the batch locks anything, the user's ``default`` bucket and the
    collections that its sub-requests' records are in, as Kinto's ``default_bucket`` view
    does for each (it creates them when missing, whatever the request): it would do so under
    the batch's locks, where another request of the user, which created them first
    (uncommitted), waits for one of those locks: each would wait for the other. The view
    then finds them made."""
    if not implicit:
        return
    from kinto.core.utils import instance_uri
    from kinto.plugins.default_bucket import create_bucket, resource_create_object
    from kinto.views.collections import Collection

    created = request.bound_data.setdefault("collections", {})
    for bucket_id, collection_id in sorted(implicit):
        create_bucket(request, bucket_id)
        uri = instance_uri(request, "collection", bucket_id=bucket_id, id=collection_id)
        if uri not in created:
            with contextlib.suppress(httpexceptions.HTTPException):  # The view says it.
                resource_create_object(request=request, resource_cls=Collection, uri=uri)


def lock_write(request):
    """Lock what the write will change, as our own views do, so that it cannot interleave
    with an upload (or a delete) of the same record, collection or bucket. A record's write
    then acts on the record as it is once locked (:func:`_read_again`)."""
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
        # Its collection too may have gone while the write waited (its delete holds it):
        # Kinto's record resource reads it again, rather than what the factory kept of it.
        collection = f"/buckets/{match['bucket_id']}/collections/{match['collection_id']}"
        request.bound_data.get("collections", {}).pop(collection, None)
    if (before or {}).get("last_modified") == (record or {}).get("last_modified"):
        return
    principals.forget(request)  # Those of then: a group may have lost the user meanwhile.
    context.permission_object_id, context.required_permission = context._find_required_permission(
        request, current_service(request)
    )
    if not request.has_permission(DYNAMIC, context):
        raise httpexceptions.HTTPForbidden()
