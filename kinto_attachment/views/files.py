"""``serve_files = true``: the stored files at ``/v1/attachments/{key}``, for development.

Like a CDN would serve them: public, streamed, typed from their name, to pages of any origin that
Kinto's ``cors_origins`` allows (a ``location`` is meant to be fetched), with the ``Cache-Control``
of stored files (:attr:`~kinto_attachment.downloads.caching.Caching.files`) and the validators a
web server derives from the file system (``ETag`` from its modification time and size,
``Last-Modified``), for conditional requests. Since they come from the API's own origin, types a
browser would execute are sent as attachments, with ``nosniff``. Production deployments serve
``base_path`` with a web server or a CDN instead (``config/nginx.conf``).
"""

import errno
import os
from stat import S_ISREG

from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from .. import downloads, errors
from ..routes import SERVED_FILES
from ..web import cors


#: What a page may send to fetch a file: conditional and range requests need a preflight.
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET, HEAD",
    "Access-Control-Allow-Headers": ", ".join(SERVED_FILES.allowed_headers),
    "Access-Control-Max-Age": "86400",
}

_cors = cors.exposing(*SERVED_FILES.exposed_headers)


def preflight(request):
    request.add_response_callback(_cors)
    return Response(status=204, headers=PREFLIGHT_HEADERS)


def serve_file(request):
    """The file, or a ``404`` (never a logged error: a file deleted between its ``stat`` and
    its opening is just gone, as for a web server)."""
    request.add_response_callback(_cors)  # Its 404 too: a page tells it from a network error.
    key = "/".join(request.matchdict["key"])
    store = request.registry.attachment_store

    def missing(_download=None):
        return errors.refuse("missing", resource_name="file", id=key)

    def current(_again):  # The file is looked at each time.
        stat = _file_stat(store, key)
        # Hidden segments are ours, never attachments: /data/files blobs, staged, tus files.
        if stat is None or any(segment.startswith(".") for segment in key.split("/")):
            raise missing()
        # A name reused after a delete (randomize = false) is a new file: another mtime.
        return downloads.of_key(
            key,
            stat.st_size,
            f"{stat.st_mtime_ns:x}-{stat.st_size:x}",
            last_modified=stat.st_mtime_ns // 1_000_000,
            cache_control=request.registry.attachment_settings.caching.files,
        )

    # Its stat found it: a HEAD need not look again.
    return downloads.serve(request, store, current, lost=missing, found=True)


def _file_stat(store, key):
    """The ``os.stat`` of a regular file under ``base_path`` (``serve_files`` is for local
    storage only: it reads the file system, as a web server would), or None."""
    try:
        path = store.path(key)
    except ValueError:  # A key climbing out of the store.
        return None
    with errors.store_errors():
        try:
            stat = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            # A name no file can have (over NAME_MAX), or a link loop: no file, not a store
            # that fails (a 503 would ask the client to come back for it).
            if e.errno in (errno.ENAMETOOLONG, errno.ELOOP):
                return None
            raise
    return stat if S_ISREG(stat.st_mode) else None


def includeme(config):
    config.add_route(SERVED_FILES.name, SERVED_FILES.pattern)
    config.add_view(
        errors.not_allowed(SERVED_FILES.methods),
        route_name=SERVED_FILES.name,
        permission=NO_PERMISSION_REQUIRED,
    )
    for view, method in ((serve_file, "GET"), (preflight, "OPTIONS")):
        config.add_view(
            view,
            route_name=SERVED_FILES.name,
            request_method=method,
            permission=NO_PERMISSION_REQUIRED,
        )
