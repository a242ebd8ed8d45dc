"""Every route the plugin registers, declared once: its name, pattern and methods, and the
traits other modules act on.

The views register their routes from this table; :mod:`~kinto_attachment.metrics` reads which
requests are transfers here, :mod:`~kinto_attachment.listeners` which are streamed. Some of our
views also sit on routes of Kinto's, told apart by a path predicate (:class:`Shared`): the
server root's redirection to the API prefix (``/data/files`` at the root) and the ``default``
bucket's route. :func:`of` tells which of our routes a request stands for, on either.
``tests/test_routes.py`` checks the table against what a built app registers, both ways.
"""

import dataclasses
import re
from urllib.parse import quote

from pyramid.interfaces import IRoutesMapper
from pyramid.traversal import PATH_SAFE

from .protocols import tus
from .web import signed_urls
from .web.cors import DOWNLOAD_HEADERS


#: A record's URL, under which attachments and their tus uploads live.
RECORD_PATH = "/buckets/{bucket_id}/collections/{collection_id}/records/{id}"
#: Kinto's route redirecting the server root to the API prefix (``version_prefix_redirect``).
ROOT_REDIRECT = "redirect_to_version"


@dataclasses.dataclass(frozen=True)
class Shared:
    """Views of one of our routes added to a route of Kinto's: ``route``, for the paths that
    ``path`` (a ``path_info`` predicate: matched at the start, as Pyramid matches it) selects."""

    route: str
    path: str

    def serves(self, path_info):
        return re.match(self.path, path_info) is not None


@dataclasses.dataclass(frozen=True)
class Route:
    """One route of ours.

    ``methods`` are those its views answer (``HEAD`` comes with ``GET``). ``streamed``: its
    requests and responses are streams, not JSON, which a ``POST /batch`` cannot carry, so it
    is refused there. ``transfer``: the ``route`` label of its uploads (``uploads`` methods)
    and downloads (``downloads`` methods) in the metrics. ``exposed_headers``: the response
    headers a page may read; ``allowed_headers``: the request headers its preflight allows,
    where the view answers the preflight itself. ``at_root``: also served at the server root,
    as ``{name}-root`` when Kinto does not redirect the root, else by ``shared`` views on
    Kinto's redirection.
    """

    name: str
    pattern: str
    methods: tuple[str, ...]
    streamed: bool = False
    transfer: str | None = None
    uploads: tuple[str, ...] = ()
    downloads: tuple[str, ...] = ()
    exposed_headers: tuple[str, ...] = ()
    allowed_headers: tuple[str, ...] = ()
    shared: tuple[Shared, ...] = ()
    at_root: bool = False

    @property
    def root_name(self):
        return f"{self.name}-root"

    def transferred(self, method):
        """``(direction, route label)`` of a request with ``method``, or None."""
        if method in self.uploads:
            return "upload", self.transfer
        if method in self.downloads:
            return "download", self.transfer
        return None


#: Kinto's route of the ``default`` bucket, where our views stream ``{record-url}/attachment``
#: and its resumable uploads (``views.default_bucket``), which Kinto's ``default_bucket``
#: plugin would otherwise parse as JSON and copy into a subrequest.
DEFAULT_BUCKET_ROUTE = "default_bucket_collection"

ATTACHMENT = Route(
    "attachment",
    RECORD_PATH + "/attachment",
    ("POST", "DELETE", "GET"),
    streamed=True,
    transfer="attachment",
    uploads=("POST",),
    downloads=("GET",),
    exposed_headers=(*DOWNLOAD_HEADERS, "Location"),
    shared=(Shared(DEFAULT_BUCKET_ROUTE, r".*/records/[^/]+/attachment$"),),
)
TUS_UPLOADS = Route(
    "attachment-uploads",
    RECORD_PATH + "/attachment/uploads",
    ("POST", "OPTIONS"),
    streamed=True,
    transfer="tus",
    uploads=("POST",),
    exposed_headers=tus.EXPOSED_HEADERS,
    shared=(Shared(DEFAULT_BUCKET_ROUTE, r".*/records/[^/]+/attachment/uploads$"),),
)
TUS_UPLOAD = Route(
    "attachment-upload",
    RECORD_PATH + "/attachment/uploads/{upload_id}",
    ("HEAD", "PATCH", "DELETE", "OPTIONS"),
    streamed=True,
    transfer="tus",
    uploads=("PATCH",),
    exposed_headers=tus.EXPOSED_HEADERS,
    shared=(Shared(DEFAULT_BUCKET_ROUTE, r".*/records/[^/]+/attachment/uploads/[^/]+$"),),
)
#: What a page may send to download: conditional and range requests need a preflight (every
#: condition a download honours, docs/api.rst).
_DOWNLOAD_REQUEST_HEADERS = (
    "Range",
    "If-Range",
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
)
DATA_FILES = Route(
    "attachment-files_view",
    "/data/files",
    ("GET", "POST", "OPTIONS"),
    transfer="data_files",
    uploads=("POST",),
    allowed_headers=(
        "Authorization",
        "Content-Type",
        "Content-Disposition",
        *_DOWNLOAD_REQUEST_HEADERS,
    ),
    shared=(Shared(ROOT_REDIRECT, r"^/data/files/?$"),),
    at_root=True,
)
DATA_FILE = Route(
    "attachment-file_view",
    "/data/files/{id}",
    ("GET", "DELETE", "OPTIONS"),
    transfer="data_files",
    downloads=("GET",),
    allowed_headers=DATA_FILES.allowed_headers,
    shared=(Shared(ROOT_REDIRECT, r"^/data/files/[^/]+/?$"),),
    at_root=True,
)
SERVED_FILES = Route(
    "attachment-files",
    "/attachments/*key",
    ("GET", "OPTIONS"),
    transfer="files",
    downloads=("GET",),
    exposed_headers=DOWNLOAD_HEADERS,
    allowed_headers=_DOWNLOAD_REQUEST_HEADERS,
)
#: A blob fetched with the signed URL of a ``stored`` event, without Kinto credentials
#: (:mod:`kinto_attachment.downloads.signed`); registered when ``events.url_secret`` is set.
ATTACHMENT_FETCH = Route(
    "attachment-fetch",
    signed_urls.PATH + "*key",
    ("GET",),
    transfer="fetch",
    downloads=("GET",),
)

ROUTES = (
    ATTACHMENT,
    TUS_UPLOADS,
    TUS_UPLOAD,
    DATA_FILES,
    DATA_FILE,
    SERVED_FILES,
    ATTACHMENT_FETCH,
)
#: Every route name we may register, root twins included.
BY_NAME = {
    name: route
    for route in ROUTES
    for name in (route.name, *((route.root_name,) if route.at_root else ()))
}


def of(request):
    """The route of ours that ``request`` stands for (its matched route, its root twin, or a
    route of Kinto's where the path selects our views), or None."""
    matched = request.matched_route
    if matched is None:
        return None
    if matched.name in BY_NAME:
        return BY_NAME[matched.name]
    for route in BY_NAME.values():
        if any(s.route == matched.name and s.serves(request.path_info) for s in route.shared):
            return route
    return None


def url_of(request, name, **ids):
    """The URL of the route ``name`` (ours or Kinto's) for ``ids``, as ``request.route_url``
    makes it, but for Pyramid's cache of every path segment it ever quoted
    (``pyramid.traversal._segment_cache``, never emptied): the ``Location`` of each
    attachment and tus upload kept its client-chosen ids and its random upload id in every
    process for good, a few KiB per request, without bound."""
    return request.application_url + _path(request, name, ids)


def path_of(request, name, **ids):
    """The path of :func:`url_of`, as ``request.route_path`` makes it."""
    return request.script_name + _path(request, name, ids)


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _path(request, name, ids):
    pattern = request.registry.getUtility(IRoutesMapper).get_route(name).pattern
    path = _PLACEHOLDER.sub(lambda m: quote(str(ids[m.group(1)]), safe=PATH_SAFE), pattern)
    return path if path.startswith("/") else "/" + path
