"""The measures of uploads and downloads: a tween, by the transfer traits of
:mod:`~kinto_attachment.routes`, times each one and counts its bytes, as read of the request's
body or as sent of the response's (through the server's ``wsgi.file_wrapper`` too, which
gunicorn and uWSGI ``sendfile``)."""

import io
import os
import time

from .. import routes
from ..web import streams
from .service import count, service_of


def _transfer(request):
    """``(direction, route label)`` of an upload or a download (the route's ``transfer``
    traits in :mod:`~kinto_attachment.routes`); None for anything else."""
    route = routes.of(request)
    return None if route is None else route.transferred(request.method)


def _transferred(service, direction, labels, size, started):
    seconds = time.perf_counter() - started
    service.timer(f"attachment.{direction}.seconds", value=seconds, labels=labels)
    count(service, f"attachment.{direction}.bytes", size, labels)


class _SentBody:
    """A download's body as the server pulls it, counting the bytes handed over. The server
    closes it once it is sent or when the client went away (PEP 3333): that is the end."""

    def __init__(self, app_iter, sent):
        self._app_iter = app_iter
        self._iterator = iter(app_iter)
        self._sent = sent
        self._size = 0

    def __iter__(self):
        return self

    def __next__(self):
        chunk = next(self._iterator)
        self._size += len(chunk)
        return chunk

    def close(self):
        try:
            if hasattr(self._app_iter, "close"):
                self._app_iter.close()
        finally:
            sent, self._sent = self._sent, None
            if sent is not None:
                sent(self._size)


class _SentFile(streams.WatchedFile):
    """A blob's stream behind the server's ``wsgi.file_wrapper``.

    Waitress sends such a body from its own loop, after the view's thread is done, and closes
    the file once it is sent or when the client went away: that is the end. Its position
    tells what was sent: waitress reads ahead, then seeks back to what the socket took.
    """

    def __init__(self, file):
        super().__init__(file)
        self._start = self._position = file.tell() if file.seekable() else 0
        #: ``sent(size)``, once the tween knows the file is the response's body.
        self.sent = None
        self._descriptor = None

    def fileno(self):
        """The file's descriptor, where it has one: gunicorn and uWSGI then ``sendfile`` it
        (without, they read it through Python, for more CPU). Their ``sendfile`` leaves the
        position where it was: such a file counts as sent from there to its end
        (:meth:`close`), a download cut short too."""
        try:
            self._descriptor = self._file.fileno()
        except AttributeError:
            raise io.UnsupportedOperation("fileno") from None
        return self._descriptor

    def read(self, size=-1):
        data = super().read(size)
        self._position += len(data)
        return data

    def seek(self, offset, whence=0):
        self._position = super().seek(offset, whence)
        return self._position

    def close(self):
        size = self._position - self._start
        if not size and self._descriptor is not None:  # Sent by ``sendfile``.
            size = max(0, os.fstat(self._descriptor).st_size - self._start)
        try:
            super().close()
        finally:
            sent, self.sent = self.sent, None
            if sent is not None:
                sent(size)


class _FileWrapper:
    """The server's ``wsgi.file_wrapper`` for one request, reading through a :class:`_SentFile`."""

    def __init__(self, file_wrapper):
        self.server_wrapper = file_wrapper
        self.file = self.body = None

    def __call__(self, file, block_size=8192):
        self.file = _SentFile(file)
        self.body = self.server_wrapper(self.file, block_size)
        return self.body


def _wrap_file_wrapper(request):
    """For a ``GET`` (a download, maybe), put a :class:`_FileWrapper` in the environment."""
    file_wrapper = request.environ.get("wsgi.file_wrapper")
    if request.method != "GET" or file_wrapper is None:
        return None
    wrapper = request.environ["wsgi.file_wrapper"] = _FileWrapper(file_wrapper)
    return wrapper


def _when_sent(response, file_wrapper, sent):
    """Call ``sent(size)`` once the body of ``response`` has been sent."""
    app_iter = response.app_iter
    if isinstance(app_iter, list):  # In memory: handed over whole.
        sent(sum(len(chunk) for chunk in app_iter))
    elif file_wrapper is not None and app_iter is file_wrapper.body:
        file_wrapper.file.sent = sent
    else:
        length = response.content_length  # Setting app_iter forgets it.
        response.app_iter = _SentBody(app_iter, sent)
        response.content_length = length


def transfers_tween_factory(handler, registry):
    """Time each upload and download and count its bytes, by route and status.

    An upload runs from its request reaching Kinto (waitress has received the whole body by
    then) to its response, and its bytes are those read of the request body
    (:func:`~kinto_attachment.web.streams.body_read`: not what a ``Content-Length``
    announces). A download runs until its body has been sent, and its bytes are those sent.
    """
    service = service_of(registry)
    if service is None:
        return handler

    def tween(request):
        started = time.perf_counter()
        file_wrapper = _wrap_file_wrapper(request)
        try:
            response = handler(request)
        finally:
            if file_wrapper is not None:  # The server's own again: gunicorn takes it for a
                # class once the app has answered (``isinstance(body, file_wrapper)``).
                request.environ["wsgi.file_wrapper"] = file_wrapper.server_wrapper
        transfer = _transfer(request)
        if transfer is None:
            return response
        direction, route = transfer
        labels = [("route", route), ("status", str(response.status_code))]
        if direction == "upload":
            _transferred(service, "upload", labels, streams.body_read(request), started)
        else:
            _when_sent(
                response,
                file_wrapper,
                lambda size: _transferred(service, "download", labels, size, started),
            )
        return response

    return tween
