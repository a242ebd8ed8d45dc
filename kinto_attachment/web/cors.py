"""CORS for the plain Pyramid routes: tus uploads, ``serve_files`` and ``/data/files``.

Cornice applies CORS to Kinto's services only (``kinto.core.cornice.cors``). For other routes
Kinto's fallback, ``kinto.core.utils.reapply_cors``, runs on error responses alone, answers
``*`` rather than the origin and exposes Kinto's default headers only: a page could then read
neither tus's ``Upload-Offset`` nor a download's ``Content-Disposition``. :func:`exposing`
makes the response callback these routes register first thing, so that every response they
give, Kinto's refusals included, names the origin and the headers a script needs.
``/data/files`` answers the origins of its own setting (``data_files.allowed_origins``), not
Kinto's: see :mod:`kinto_attachment.data_files.cross_site`.
"""

import fnmatch

from kinto.core import Service
from pyramid.settings import aslist


#: Headers of a download that a page may read: what it is, its version, which part of it.
DOWNLOAD_HEADERS = (
    "Content-Disposition",
    "ETag",
    "Last-Modified",
    "Content-Range",
    "Accept-Ranges",
)


def allowed_origin(request):
    """The request's ``Origin`` if Kinto's ``cors_origins`` setting allows it, else None.

    The setting is read as Cornice reads it for Kinto's own services (``fnmatch`` patterns),
    and the origin is echoed rather than ``*``, as Cornice does.
    """
    origin = request.headers.get("Origin")
    if not origin:
        return None
    patterns = aslist(request.registry.settings.get("cors_origins", "*"))
    return origin if any(fnmatch.fnmatchcase(origin, p) for p in patterns) else None


def exposing(*headers, allowed=allowed_origin):
    """A response callback: echo the ``Origin`` that ``allowed(request)`` returns (Kinto's
    ``cors_origins`` by default) and expose ``headers`` with Kinto's defaults
    (``Retry-After``, ``Backoff``, ``Content-Length``...)."""
    exposed = ", ".join(dict.fromkeys((*Service.default_cors_headers, *headers)))

    def callback(request, response):
        origin = allowed(request)
        if origin is None:
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = exposed
        # The answer depends on the Origin: caches must not give it to another page.
        if "Origin" not in (response.vary or ()):
            response.vary = (*(response.vary or ()), "Origin")

    return callback
