"""``serve_files = true``: the stored files at ``/v1/attachments/{key}``, for development.

Like a CDN would serve them: public, streamed, typed from their name. Since they come from the
API's own origin, types a browser would execute are sent as attachments, with ``nosniff``.
Production deployments serve ``base_path`` with a web server or a CDN instead.
"""

import mimetypes
import posixpath

from pyramid.security import NO_PERMISSION_REQUIRED

from .. import downloads, errors
from ..intake import CHUNK_SIZE, store_errors


ROUTE = "attachment-files"


def serve_file(request):
    key = "/".join(request.matchdict["key"])
    store = request.registry.attachment_store
    try:
        with store_errors():
            size = store.size(key)
    except ValueError:  # A key climbing out of the store.
        size = None
    # Hidden segments are ours, never attachments: /data/files blobs, staged and tus files.
    if size is None or any(segment.startswith(".") for segment in key.split("/")):
        raise errors.refuse("missing", resource_name="file", id=key)
    # Opened for HEAD too: a directory has a size, but no content.
    with store_errors():
        try:
            stream = store.open(key)
        except (IsADirectoryError, FileNotFoundError):
            raise errors.refuse("missing", resource_name="file", id=key) from None
    mimetype = mimetypes.guess_type(key, strict=False)[0] or "application/octet-stream"
    response = downloads.StreamedResponse(content_type=mimetype, charset=None)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Disposition"] = downloads.content_disposition(
        posixpath.basename(key), mimetype
    )
    if request.method == "GET" and size:
        wrapper = request.environ.get("wsgi.file_wrapper")
        response.app_iter = wrapper(stream, CHUNK_SIZE) if wrapper else downloads.chunks(stream)
    else:
        stream.close()
    response.content_length = size  # After the body: WebOb forgets it when app_iter is set.
    return response


def includeme(config):
    config.add_route(ROUTE, "/attachments/*key")
    config.add_view(
        serve_file, route_name=ROUTE, request_method="GET", permission=NO_PERMISSION_REQUIRED
    )
