"""``{record-url}/attachment`` and its resumable uploads in the ``default`` bucket, streamed.

Kinto's ``default_bucket`` plugin serves ``/buckets/default/...`` by copying the request body
into a subrequest, which would hold a whole upload in memory, and takes a body for JSON: a tus
chunk that parses as JSON was rewritten, its type made ``application/json``. For attachment
URLs we register more specific views on its route: they create the user's bucket and
collection as the plugin does, then hand the untouched body stream to the real URL.
"""

from kinto.plugins.default_bucket import create_bucket, create_collection
from pyramid.request import Request
from pyramid.security import NO_PERMISSION_REQUIRED

from .. import errors
from ..routes import ATTACHMENT, DEFAULT_BUCKET_ROUTE, TUS_UPLOAD, TUS_UPLOADS
from ..web import streams


PLUGIN = "kinto.plugins.default_bucket"


def default_bucket_attachment(request):
    if request.authenticated_userid is None:
        raise errors.refuse("unauthenticated")  # Kinto's forbidden view answers 401.
    bucket_id = request.default_bucket_id
    create_bucket(request, bucket_id)
    create_collection(request, bucket_id)

    path = request.path.replace("/buckets/default/", f"/buckets/{bucket_id}/", 1)
    environ = {
        key: request.environ[key]
        # ``wsgi.input_terminated``: the server ends a chunked body (without it, a 411); the
        # scheme and server: the URLs events and answers name (``https``, behind a proxy);
        # ``tm.*``: the request's transaction (an explicit manager of its own would have none).
        for key in (
            "wsgi.input",
            "wsgi.input_terminated",
            "tm.active",
            "tm.manager",
            "wsgi.url_scheme",
            "SERVER_NAME",
            "SERVER_PORT",
            "CONTENT_LENGTH",
            "CONTENT_TYPE",
        )
        if key in request.environ
    }
    subrequest = Request.blank(path, environ, headers=dict(request.headers))
    subrequest.method = request.method
    subrequest.bound_data = request.bound_data
    subrequest.parent = request
    try:
        return request.invoke_subrequest(subrequest)
    finally:  # What the subrequest read of the body is this request's (its metrics).
        if streams.BODY_READ in subrequest.environ:
            request.environ[streams.BODY_READ] = subrequest.environ[streams.BODY_READ]


def includeme(config):
    """Only when the default_bucket plugin is included (before us), since we use its route."""
    if PLUGIN not in config.get_settings().get("includes", ""):
        return
    for route in (ATTACHMENT, TUS_UPLOADS, TUS_UPLOAD):
        [shared] = [s for s in route.shared if s.route == DEFAULT_BUCKET_ROUTE]
        # Those the plugin's own view cannot pass on untouched (downloads and preflights it
        # can), POST too: it carries X-HTTP-Method-Override (tus-js-client's
        # ``overridePatchMethod``), which the route's own views take.
        methods = sorted({*route.methods, "POST"} - {"GET", "OPTIONS"})
        config.add_view(
            default_bucket_attachment,
            route_name=DEFAULT_BUCKET_ROUTE,
            path_info=shared.path,
            request_method=methods,
            permission=NO_PERMISSION_REQUIRED,
        )
