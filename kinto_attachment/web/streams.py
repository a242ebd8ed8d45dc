"""Bodies read and written by chunks: what every upload and every download streams through.

One chunk at a time, never the whole body: memory stays flat whatever the file's size.
"""

import io
import logging
import os
import re
import sys

from .. import errors


logger = logging.getLogger(__name__)

#: Bytes read from a request body, or from a store, at a time.
CHUNK_SIZE = 1024 * 1024
#: Bytes read at a time from the body of an upload stored whole (multipart, ``/data/files``):
#: larger blocks mean fewer hand-overs to the parser, the hashing thread and the store, and
#: gunicorn reads them for less CPU (a 1 GiB upload under gunicorn: 1.33 s against 2.18 s
#: multipart, 1.39 s against 2.08 s to ``/data/files``; ``bench/README.rst``). A tus chunk
#: reads by :data:`CHUNK_SIZE`: its fsync waits for what is still on its way to the disk,
#: which smaller blocks send sooner.
UPLOAD_CHUNK_SIZE = 4 * CHUNK_SIZE
#: Seconds uWSGI waits for the next part of a chunked body: 0 is uWSGI's own,
#: ``chunked-input-timeout`` or else ``socket-timeout`` (``config/uwsgi.ini``), which bounds
#: every other wait for the client.
UWSGI_CHUNK_TIMEOUT = 0


#: The largest body of one of Kinto's own requests (JSON) that arrives chunked to a server
#: that does not end it (uWSGI hands such bodies over only through ``uwsgi.chunked_read()``):
#: read whole into memory (:func:`receive_whole`), so bounded.
CHUNKED_WHOLE_MAX = 8 * 1024 * 1024

#: A ``Content-Length``: digits, fewer than 20 (beyond any body, and any ``int()``).
_LENGTH = re.compile(r"[0-9]{1,19}")


def declared_length(request):
    """The request's ``Content-Length``, None without one, or a 400 for anything but a number
    of bytes. WebOb reads ``-1`` as minus one and ``abc`` as no length at all: either made
    the body an empty one, which replaced the file already there (waitress and gunicorn
    refuse such headers themselves; a proxy or another server may not)."""
    value = request.environ.get("CONTENT_LENGTH", "")
    if value == "":
        return None
    if _LENGTH.fullmatch(value) is None:
        raise errors.refuse(
            "invalid_parameter",
            location="header",
            name="Content-Length",
            description="must be a number of bytes",
        )
    return int(value)


#: Where the stream of :func:`request_body` counts the bytes read of the body, in the
#: request's environ: what an upload's metrics count (a ``Content-Length`` may announce more
#: than arrives, or a chunked body none).
BODY_READ = "kinto_attachment.body_read"


class _Counted:
    """A request body whose reads are counted in ``environ[BODY_READ]``."""

    def __init__(self, stream, environ):
        self._stream = stream
        self._environ = environ
        environ.setdefault(BODY_READ, 0)

    def read(self, size):
        chunk = self._stream.read(size)
        self._environ[BODY_READ] += len(chunk)
        return chunk


def body_read(request):
    """Bytes read of the request's body through :func:`request_body`."""
    return request.environ.get(BODY_READ, 0)


def request_body(request):
    """``(stream, length)`` of the request's body, as the WSGI server hands it, its reads
    counted (:func:`body_read`).

    ``length`` is the ``Content-Length``, or None for a chunked body the server ends itself:
    waitress and gunicorn say so with ``wsgi.input_terminated`` (PEP 3333 does not let an app
    read past ``Content-Length`` otherwise); uWSGI does not, but hands chunked bodies through
    ``uwsgi.chunked_read()``. A chunked body that no reader can end is refused (411) rather
    than read as empty: an empty file must never stand for the one that was sent.
    """
    stream, length = _body(request)
    return _Counted(stream, request.environ), length


def receive_whole(request):
    """Receive the whole body of a request that Kinto reads whole (its JSON), before anything
    is locked for it: a client sending it slowly then holds no lock that others wait for
    (:mod:`~kinto_attachment.write_locks`), only its own thread. A body cut or stalled is a
    400 rather than the view's 500; a chunked body that uWSGI leaves to the app is read
    (:data:`CHUNKED_WHOLE_MAX` at most: 413), where WebOb would read none (an empty ``PUT``
    replacing a record's data); one that no reader can end is a 411 (:func:`request_body`)."""
    environ = request.environ
    if declared_length(request) is None and not _chunked(environ):
        return  # No body.
    stream, length = _body(request)
    received = io.BytesIO()
    for chunk in read_chunks(stream, length):
        if length is None and received.tell() + len(chunk) > CHUNKED_WHOLE_MAX:
            raise errors.refuse("body_too_large", limit=CHUNKED_WHOLE_MAX)
        received.write(chunk)
    # As a body of that length, read from the start: Kinto's sub-requests (a batch's, the
    # default bucket's) copy the headers, where a chunked framing would then be a second one.
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ["CONTENT_LENGTH"] = str(received.tell())
    received.seek(0)
    environ["wsgi.input"] = received
    request.is_body_seekable = True


def _chunked(environ):
    """Whether the body is chunked; 501 for any other transfer coding (``gzip, chunked``:
    gunicorn ends such a body and hands over its bytes still compressed, which an upload
    would store as the file), as waitress answers it."""
    coding = environ.get("HTTP_TRANSFER_ENCODING", "").strip().lower()
    if coding and coding != "chunked":
        raise errors.refuse("transfer_coding", coding=coding[:64])
    return bool(coding)


def _body(request):
    environ = request.environ
    length = declared_length(request)
    if length is not None and _chunked(environ):
        # A server that passes both (uWSGI) leaves the app to pick how the body ends: the one
        # a proxy did not pick makes another body of it (RFC 9112 §6.3: request smuggling).
        raise errors.refuse(
            "invalid_parameter",
            location="header",
            name="Transfer-Encoding",
            description="a body has one framing: chunked or Content-Length, not both",
        )
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is not None:
        continue_under_uwsgi(uwsgi, environ)
    if length is not None:
        return request.body_file_raw, length
    if not _chunked(environ):
        return request.body_file_raw, 0  # HTTP/1.1: no length, no chunks, no body.
    if environ.get("wsgi.input_terminated"):
        return request.body_file_raw, None
    if uwsgi is not None and hasattr(uwsgi, "chunked_read"):
        return UwsgiChunks(uwsgi), None
    raise errors.refuse("length_required")


def continue_under_uwsgi(uwsgi, environ):
    """Answer ``Expect: 100-continue``, which uWSGI's ``http-socket`` leaves unanswered: curl
    then waits a second before sending any body over 1 MiB. Sent here, once the request was
    authorised and checked and its body is wanted: a refused request gets its final answer
    without the client sending a byte of it."""
    expects = environ.get("HTTP_EXPECT", "").lower() == "100-continue"
    # An HTTP/1.0 client's Expect is ignored (RFC 9110 §10.1.1): it may not read a 100.
    if (
        expects
        and environ.get("SERVER_PROTOCOL") != "HTTP/1.0"
        and hasattr(uwsgi, "connection_fd")
    ):
        del environ["HTTP_EXPECT"]  # Answered once.
        os.write(uwsgi.connection_fd(), b"HTTP/1.1 100 Continue\r\n\r\n")


class UwsgiChunks:
    """A chunked body read through uWSGI's ``chunked_read()``, as a stream of ``read(size)``.

    uWSGI bounds each part it reads by ``chunked-input-limit`` (see ``config/uwsgi.ini``);
    what exceeds ``size`` is kept for the next read.
    """

    def __init__(self, uwsgi):
        self._uwsgi = uwsgi
        self._pending = b""

    def read(self, size):
        if not self._pending:
            self._pending = self._uwsgi.chunked_read(UWSGI_CHUNK_TIMEOUT) or b""
        chunk, self._pending = self._pending[:size], self._pending[size:]
        return chunk


def read_chunks(stream, length, chunk_size=CHUNK_SIZE):
    """The body by chunks: ``length`` bytes, or until EOF when ``length`` is None.

    A body that ends before its ``Content-Length`` (a client that went away, a proxy that cut
    it) is refused with a 400 where it ends, before the last chunk is used: no upload may take
    a truncated file for a complete one.
    """
    remaining = length
    while remaining is None or remaining > 0:
        size = chunk_size if remaining is None else min(chunk_size, remaining)
        try:
            chunk = stream.read(size)
        except Exception as e:  # noqa: BLE001 (whatever the server raises: the body is unreadable)
            # The server could not read on: the client went away, stalled past the server's
            # read timeout (uWSGI's socket-timeout raises OSError here), or framed its
            # chunks wrongly (gunicorn raises its own ParseException: InvalidChunkSize...).
            if not isinstance(e, OSError):  # Said: a server's own failure would be a 400.
                logger.warning("The request body could not be read: %r", e)
            chunk = b""
            if remaining is None:
                raise errors.refuse("body_interrupted") from None
        if not chunk:
            if remaining is not None:
                raise errors.refuse("short_body", read=length - remaining, length=length)
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def pump(stream, length, write):
    """Hand the body of an upload stored whole to ``write`` by chunks of
    :data:`UPLOAD_CHUNK_SIZE` (see :func:`read_chunks`)."""
    for chunk in read_chunks(stream, length, UPLOAD_CHUNK_SIZE):
        write(chunk)


class Chunks:
    """A stored blob's content by chunks, closing it at the end, or when closed (a download's
    body: a WSGI server closes a body it never iterated, when its client went away first; a
    generator would not close the stream then, nor give back what it holds, as the transfer
    limiter's file)."""

    def __init__(self, stream, chunk_size=CHUNK_SIZE):
        self._stream = stream
        self._size = chunk_size

    def __iter__(self):
        return self

    def __next__(self):
        try:
            chunk = self._stream.read(self._size)
        except BaseException:
            self.close()
            raise
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self):
        self._stream.close()


class WatchedFile:
    """A download's file, whose reads, seeks and close a subclass watches; everything else is
    the file's. What a server's ``wsgi.file_wrapper`` is given in place of the file (waitress
    sends it from its own loop, after the view's thread is done: a wrapped iterator would
    hold a thread for the whole download)."""

    def __init__(self, file):
        self._file = file

    def read(self, size=-1):
        return self._file.read(size)

    def seekable(self):
        return self._file.seekable()

    def seek(self, offset, whence=0):
        return self._file.seek(offset, whence)

    def tell(self):
        return self._file.tell()

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def file_body(request, stream):
    """The body of a download from ``stream``: the WSGI server's ``wsgi.file_wrapper`` when it
    has one (``sendfile`` for local files), else :class:`Chunks`."""
    wrapper = request.environ.get("wsgi.file_wrapper")
    return wrapper(stream, CHUNK_SIZE) if wrapper else Chunks(stream)


def wrapped_body(request, stream):
    """The body of a download from a file of ours, which has no descriptor (the transfer
    limiter's): the server's ``wsgi.file_wrapper`` (waitress sends a file from its own loop,
    where a client that reads nothing holds no thread), except uWSGI's, which reads such a
    file by small blocks (a tenth of the speed): by chunks there."""
    if sys.modules.get("uwsgi") is not None:
        return Chunks(stream)
    return file_body(request, stream)
