"""What web pages may make a browser send to a private ``/data/files``.

The route trusts its callers' network address (:mod:`~kinto_attachment.data_files.visibility`).
A browser on a trusted machine lends that address to every page it opens, two ways:

- a page of another site sends requests to the route (a form, or ``fetch`` in ``no-cors``
  mode: ``POST`` with ``text/plain`` needs no preflight), and writes without reading the
  answer. The browser says where a request comes from: ``Sec-Fetch-Site`` (every current
  browser) or ``Origin`` (older ones; every ``POST``). Such a request is refused unless its
  origin is in ``data_files.allowed_origins``.
- DNS rebinding: a page of ``evil.example`` has its name resolve to the server, and its
  requests are then same-origin: it reads the answers too. Only ``Host`` tells: it is the
  attacker's name. A request whose ``Host`` is not in ``data_files.allowed_hosts`` is refused.
  An IP address is always accepted: no name was resolved, nothing rebound.

Programs (curl, requests, other services) send neither ``Origin`` nor ``Sec-Fetch-Site``,
and reach the server by one of its names or addresses: nothing changes for them.
"""

import fnmatch
import ipaddress
import urllib.parse

from .. import errors
from .options import host_name


#: Where :func:`sent_host_tween_factory` keeps the ``Host`` the client sent.
SENT_HOST = "kinto_attachment.sent_host"
#: ``Sec-Fetch-Site`` of requests a page of another origin did not make: the page's own
#: (``same-origin``) and the user's own (``none``: typed URL, bookmark).
OWN_SITES = ("same-origin", "none")
DEFAULT_PORTS = {"http": 80, "https": 443}


def _is_address(name):
    try:
        ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


def sent_host_tween_factory(handler, registry):
    """Keep the ``Host`` the client sent: with its ``http_host`` setting, Kinto replaces it
    with that name when a request starts (``NewRequest``, which tweens run before)."""
    if not registry.settings.get("http_host"):
        return handler

    def tween(request):
        request.environ[SENT_HOST] = request.environ.get("HTTP_HOST", "")
        return handler(request)

    return tween


def _sent_host(request):
    environ = request.environ
    return environ.get(SENT_HOST, environ.get("HTTP_HOST", "")).strip()


def allowed_host(request, options):
    """Whether ``Host`` is absent (no browser omits it), an IP address, or a configured name."""
    host = _sent_host(request)
    if not host:
        return True
    name = host_name(host)
    return _is_address(name) or any(fnmatch.fnmatchcase(name, p) for p in options.allowed_hosts)


def allowed_origin(request, options):
    """The request's ``Origin`` if ``data_files.allowed_origins`` names it, else None."""
    origin = request.headers.get("Origin")
    if origin and any(fnmatch.fnmatchcase(origin.lower(), p) for p in options.allowed_origins):
        return origin
    return None


def _authority(scheme, host):
    """``(name, port)`` of ``host`` (``name[:port]``), the default port from ``scheme``; None
    when it is no authority (``[::1``: urlsplit refuses it, ``.port`` a bad port)."""
    try:
        parsed = urllib.parse.urlsplit(f"//{host}")
        port = parsed.port
    except ValueError:
        return None
    return parsed.hostname, port or DEFAULT_PORTS.get(scheme)


def _same_origin(origin, host):
    """Whether ``Origin`` names the server the request was sent to (its ``Host``).

    The scheme is not compared: behind a proxy that ends TLS, the server speaks HTTP to a
    page of ``https://`` its own name. Both default ports follow the page's scheme.
    """
    scheme, separator, rest = origin.partition("://")
    if not separator or not host:
        return False
    page = _authority(scheme, rest)
    return page is not None and page == _authority(scheme, host)


def cross_site(request):
    """Whether a page of another origin made the browser send this request.

    ``Sec-Fetch-Site`` is the browser's own verdict (no page can set it); without it,
    ``Origin`` is compared with ``Host``. Neither: not a page's cross-origin request.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.strip().lower() not in OWN_SITES
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    return not _same_origin(origin.strip(), _sent_host(request))


def require_not_from_pages(request, options):
    """403 for a foreign ``Host`` (rebinding), then for a page of another, unlisted origin."""
    if not allowed_host(request, options):
        raise errors.refuse("foreign_host", host=_sent_host(request))
    if cross_site(request) and allowed_origin(request, options) is None:
        raise errors.refuse("cross_site", origin=request.headers.get("Origin") or "none")
