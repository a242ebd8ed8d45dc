"""Who may see ``/data/files``: trusted networks, configured principals, or everyone.

The route is private by default. Whoever may not see it gets the 404 of an unknown route,
before anything is read or written. Behind a reverse proxy, the client's address is the one
the trusted proxies vouch for (``X-Forwarded-For``), never what the client says of itself.
Private means private to programs: a web page cannot lend itself the address of the browser
that opened it (:mod:`~kinto_attachment.views.cross_site`: 403).
"""

import ipaddress

from .. import errors
from ..state import records
from . import cors, cross_site


def _client_address(request, options):
    """The WSGI server's peer, or what trusted proxies say of the client before them.

    ``X-Forwarded-For`` is only read when the peer is one of ``trusted_proxies``, and then from
    the right: each proxy appends the address it received from, so the right-most entry that
    is not itself a trusted proxy is the first one that no trusted party vouches for.
    """
    address = _parse_address(request.environ.get("REMOTE_ADDR", ""))
    forwarded = request.environ.get("HTTP_X_FORWARDED_FOR", "")
    if address is None or not forwarded or not _in(address, options.trusted_proxies):
        return address
    for entry in reversed(forwarded.split(",")):
        address = _parse_address(entry)
        if address is None or not _in(address, options.trusted_proxies):
            return address
    return address  # Proxies all the way: the left-most one.


def _parse_address(text):
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:port"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:port"
        text = text.split(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4-mapped IPv6 peer (dual-stack sockets) is its IPv4 address.
    return getattr(address, "ipv4_mapped", None) or address


def _in(address, networks):
    return any(address in net for net in networks)


def allowed_origin(request):
    """The ``Origin`` of a page that ``data_files.allowed_origins`` lets use the route."""
    return cross_site.allowed_origin(request, request.registry.attachment_settings.data_files)


#: Every answer of the route (refusals too) to a page of ``data_files.allowed_origins``.
_cors = cors.exposing(*cors.DOWNLOAD_HEADERS, allowed=allowed_origin)


def _visible(request, options):
    address = _client_address(request, options)
    if address is not None and _in(address, options.trusted_networks):
        return True
    return bool(options.principals & set(request.prefixed_principals))


def is_preflight(request):
    """A browser's CORS preflight: ``OPTIONS`` asking for a method, without credentials."""
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def require_visible(request):
    """404, as for an unknown route, unless the caller may see the files; then 403 for a
    request a web page made (:func:`~kinto_attachment.views.cross_site.require_not_from_pages`).

    Never through ``POST /batch``: a sub-request would carry headers of its own choosing, and
    its writes would outlive a failed batch. Checked before anything is read or written.
    A preflight of an allowed origin carries no credentials: it is answered whoever sends it
    (it reads and writes nothing), so that pages of principals work too.
    """
    if records.in_batch(request):
        raise errors.refuse("hidden")
    request.add_response_callback(_cors)
    options = request.registry.attachment_settings.data_files
    if options.visibility == "public":
        return
    allowed_preflight = is_preflight(request) and allowed_origin(request) is not None
    if not allowed_preflight and not _visible(request, options):
        raise errors.refuse("hidden")
    cross_site.require_not_from_pages(request, options)
