"""Who may see ``/data/files``: trusted networks, configured principals, or everyone.

The route is private by default. Whoever may not see it gets what an unknown path gets,
before anything is read or written: the 404 of an unknown route under the API prefix, and at
the server root Kinto's own redirection to the prefix (:class:`VisiblePredicate`: the views
sharing that route do not match), where a 404 would tell the route from a missing one.
Behind a reverse proxy, the client's address is the one the trusted proxies vouch for
(:mod:`~kinto_attachment.web.client_address`). Private means private to programs: a web
page cannot lend itself the address of the browser that opened it
(:mod:`~kinto_attachment.data_files.cross_site`: 403).
"""

from .. import errors
from ..state import records
from ..web import cors
from ..web.client_address import client_address, in_networks
from . import cross_site


def allowed_origin(request):
    """The ``Origin`` of a page that ``data_files.allowed_origins`` lets use the route."""
    return cross_site.allowed_origin(request, request.registry.attachment_settings.data_files)


#: Every answer of the route (refusals too) to a page of ``data_files.allowed_origins``.
_cors = cors.exposing(*cors.DOWNLOAD_HEADERS, allowed=allowed_origin)


def _visible(request, options):
    address = client_address(request, options.trusted_proxies)
    if address is not None and in_networks(address, options.trusted_networks):
        return True
    return bool(options.principals & set(request.prefixed_principals))


def is_preflight(request):
    """A browser's CORS preflight: ``OPTIONS`` asking for a method, without credentials."""
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _may_see(request, options):
    """Whether the request may see the route (batch aside): a public route, a preflight of
    an allowed origin, or a caller on a trusted network or with a configured principal."""
    if options.visibility == "public":
        return True
    allowed_preflight = is_preflight(request) and allowed_origin(request) is not None
    return allowed_preflight or _visible(request, options)


class VisiblePredicate:
    """View predicate ``attachment_visible``: the views of the route at the server root
    match only requests that may see it; the others go to Kinto's redirection, whose route
    they share (:func:`~kinto_attachment.data_files.views.includeme`), as any unknown path."""

    def __init__(self, value, config):
        self.value = value

    def text(self):
        return f"attachment_visible = {self.value}"

    phash = text

    def __call__(self, context, request):
        return sees(request) == self.value


def sees(request):
    """Whether ``request`` may see the route (what :func:`require_visible` lets through, the
    check against pages aside): neither the views nor the API's description show it to
    others."""
    options = request.registry.attachment_settings.data_files
    return not records.in_batch(request) and _may_see(request, options)


def require_visible(request):
    """404, as for an unknown route, unless the caller may see the files; then 403 for a
    request a web page made
    (:func:`~kinto_attachment.data_files.cross_site.require_not_from_pages`).

    Never through ``POST /batch``: a sub-request would carry headers of its own choosing, and
    its writes would outlive a failed batch. Checked before anything is read or written.
    A preflight of an allowed origin carries no credentials: it is answered whoever sends it
    (it reads and writes nothing), so that pages of principals work too.
    """
    if records.in_batch(request):
        raise errors.refuse("hidden")
    options = request.registry.attachment_settings.data_files
    if not _may_see(request, options):
        # As an unknown path: none of the route's CORS headers, whatever Origin says.
        raise errors.refuse("hidden")
    request.add_response_callback(_cors)
    if options.visibility != "public":
        cross_site.require_not_from_pages(request, options)
