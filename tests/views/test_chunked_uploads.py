"""Chunked multipart uploads (no ``Content-Length``; found by review, 2026-12-05): the default
bucket reads them as any bucket does, and a body that goes on after its form's end is
bounded."""

import hashlib
import io

import webob

from kinto_attachment.protocols import multipart
from kinto_attachment.web import streams

from ..conftest import ALICE, attachment_app, cached_app


URL = "/v1/buckets/blog/collections/articles/records/r1"
FILE_PART = (
    b'--B\r\nContent-Disposition: form-data; name="attachment"; filename="a.txt"\r\n\r\n'
    b"chunked!\r\n"
)
FORM = FILE_PART + b"--B--\r\n"


def chunked_request(url, stream):
    """A chunked request (no Content-Length) that the WSGI server ends, as waitress and
    gunicorn pass it (``wsgi.input_terminated``)."""
    wsgi_request = webob.Request.blank(
        url,
        method="POST",
        headers={**ALICE, "Content-Type": "multipart/form-data; boundary=B"},
    )
    wsgi_request.environ["wsgi.input"] = stream
    wsgi_request.environ.pop("CONTENT_LENGTH", None)
    wsgi_request.environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    wsgi_request.environ["wsgi.input_terminated"] = True
    return wsgi_request


def test_chunked_upload_to_the_default_bucket_is_not_411(tmp_path_factory, request):
    """Found by review (2026-12-05).

    ``views/default_bucket.py`` builds its subrequest's environ from
    ``wsgi.input``, ``CONTENT_LENGTH`` and ``CONTENT_TYPE`` only, dropping
    ``wsgi.input_terminated``: a chunked upload (no Content-Length, e.g. ``curl -T -`` or any
    client streaming a body of unknown size) that the same server accepts on
    ``/buckets/blog/...`` is answered ``411 Length Required`` on ``/buckets/default/...``.

    Expected: the default bucket's attachment URL reads a chunked body as the named bucket's
    URL does (201, with the file's hash)."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.includes": "kinto.plugins.default_bucket kinto.plugins.flush kinto_attachment"},
    )
    url = "/v1/buckets/default/collections/tasks/records/r1/attachment"
    response = chunked_request(url, io.BytesIO(FORM)).get_response(kinto.app.app)
    assert response.status_code == 201, response.body
    assert response.json["hash"] == hashlib.sha256(b"chunked!").hexdigest()


class EndlessEpilogue:
    """A form, complete, then an epilogue that does not end (here: 64 MiB), produced on
    demand; counts the bytes the server read."""

    EPILOGUE = 64 * 1024 * 1024
    PIECE = b"e" * (1024 * 1024)

    def __init__(self):
        self.pending = FORM
        self.epilogue = self.EPILOGUE
        self.read_bytes = 0

    def read(self, size=-1):
        if self.pending:
            chunk, self.pending = self.pending[:size], self.pending[size:]
        elif self.epilogue:
            chunk = self.PIECE[: min(size, self.epilogue, len(self.PIECE))]
            self.epilogue -= len(chunk)
        else:
            chunk = b""
        self.read_bytes += len(chunk)
        return chunk


def test_chunked_epilogue_is_bounded_by_max_size(tmp_path_factory, request):
    """Found by review (2026-12-05).

    After the closing delimiter, ``read_form`` (``protocols/multipart.py``,
    ``web/streams.pump``) keeps reading the body to its end, counting none of it. With a
    ``Content-Length`` the form is bounded (413 past ``max_size_bytes + FIELDS_LIMIT``), and
    parts before the file count against ``max_size_bytes``; a chunked body has no bound at
    all: its epilogue is read (and discarded) for as long as the client sends it, holding a
    worker and an open staged file, whatever ``max_size_bytes`` says.

    Expected: the body is not read much past what a form may hold (``max_size_bytes`` +
    ``FIELDS_LIMIT``, plus one read): either the epilogue is not read once the form is
    complete, or the request is refused with a 413; and nothing is left behind on a 413."""
    kinto = attachment_app(tmp_path_factory, request, max_size_bytes="10")
    body = EndlessEpilogue()
    response = chunked_request(URL + "/attachment", body).get_response(kinto.app.app)
    bound = 10 + multipart.FIELDS_LIMIT + streams.UPLOAD_CHUNK_SIZE + len(FORM)
    assert body.read_bytes <= bound, (response.status_code, body.read_bytes)
    assert response.status_code in (201, 413), response.body
    if response.status_code == 413:
        assert kinto.files() == []
