"""Metrics of attachments, reported through Kinto's metrics service.

With a metrics plugin of Kinto (``kinto.plugins.prometheus``, ``kinto.plugins.statsd``), this
measures uploads and downloads (a tween, by the transfer traits of
:mod:`~kinto_attachment.routes`), the blob store's operations (timed as Kinto times its own
backends), garbage collections (:func:`collected`, which :func:`kinto_attachment.gc.collect`
calls), the waits for the ``/data/files`` transfer budget and the delivery of events
(:class:`EventMeasures`). Without one, Kinto's default
service measures nothing, yet its calls would still cost: then the tween leaves itself out of
the chain and nothing is wrapped.
"""

import io
import os
import time

from kinto.core import metrics as core_metrics
from kinto.core.utils import classname
from kinto.plugins.statsd import StatsDService
from pyramid.events import ApplicationCreated, ContextFound
from pyramid.tweens import INGRESS

from . import routes
from .data_files.limiter import Busy
from .web import streams


def _service(registry):
    """Kinto's metrics service, or None when no plugin enabled one."""
    service = registry.queryUtility(core_metrics.IMetricsService)
    return None if isinstance(service, core_metrics.NoOpMetricsService) else service


def _count(service, key, value, labels=()):
    if isinstance(service, StatsDService):
        # Kinto's StatsD service keeps labelled counts as sets of unique values, which would
        # lose the counts: the labels go in the key instead, as that service does for timers.
        key = ".".join([key, *(f"{name}.{label}" for name, label in labels)])
        labels = ()
    service.count(key, value, unique=list(labels) or None)


def _transfer(request):
    """``(direction, route label)`` of an upload or a download (the route's ``transfer``
    traits in :mod:`~kinto_attachment.routes`); None for anything else."""
    route = routes.of(request)
    return None if route is None else route.transferred(request.method)


def _transferred(service, direction, labels, size, started):
    seconds = time.perf_counter() - started
    service.timer(f"attachment.{direction}.seconds", value=seconds, labels=labels)
    _count(service, f"attachment.{direction}.bytes", size, labels)


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
    service = _service(registry)
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


def _watch_store(service, store):
    """Time the store's operations as Kinto times its backends (``backend.{class}.seconds``
    by ``method``), and as kinto-attachment its storage; the staged blobs' ``write``,
    ``commit`` and ``abort`` too, since that is where an upload spends its time."""
    name = classname(store)
    core_metrics.watch_execution_time(service, store, prefix="backend", classname=name)
    stage = store.stage

    def watched_stage(*args, **kwargs):
        staged = stage(*args, **kwargs)
        core_metrics.watch_execution_time(service, staged, prefix="backend", classname=name)
        return staged

    store.stage = watched_stage


def _timed_acquire(service, acquire):
    """The limiter's ``acquire``, recording how long it waited and for what outcome:
    ``acquired``, or ``busy`` (no budget in time: a 503)."""

    def waited(started, outcome):
        seconds = time.perf_counter() - started
        service.timer(
            "attachment.limiter.wait_seconds", value=seconds, labels=[("outcome", outcome)]
        )

    def timed_acquire(*args, **kwargs):
        started = time.perf_counter()
        try:
            hold = acquire(*args, **kwargs)
        except Busy:
            waited(started, "busy")
            raise
        waited(started, "acquired")
        return hold

    return timed_acquire


def watch(event):
    """On application start, when metrics are enabled: wrap the store and the limiter, and
    have the events' dispatcher report."""
    registry = event.app.registry
    service = _service(registry)
    if service is None:
        return
    _watch_store(service, registry.attachment_store)
    limiter = registry.transfer_limiter
    limiter.acquire = _timed_acquire(service, limiter.acquire)
    if hasattr(registry, "attachment_dispatcher"):
        registry.attachment_dispatcher.measures = EventMeasures(service)


def collected(registry, report):
    """Count a garbage collection and what it removed (a dry run removes nothing)."""
    service = _service(registry)
    if service is None or report.dry_run:
        return
    _count(service, "attachment.gc.runs", 1)
    removed = {
        "expired_files": report.expired_files,
        "expired_uploads": report.expired_uploads,
        "replaced": report.replaced,
        "orphans": report.orphans,
        "aborted_uploads": report.aborted,
    }
    for kind, items in removed.items():
        _count(service, "attachment.gc.removed", len(items), [("kind", kind)])
    _count(service, "attachment.gc.removed_bytes", report.total_bytes)


def _unlabelled_preflights(event):
    """A preflight (``OPTIONS``) of our routes answers for any ids its URL names, existing or
    not, without credentials, and Kinto labels its request metrics with the URL's bucket,
    collection and object ids (on NewResponse, after the response callbacks): an anonymous
    client would make series for every id it invents. Its ids are forgotten first."""
    request = event.request
    route = request.matched_route
    if request.method == "OPTIONS" and route is not None and route.name in routes.BY_NAME:
        request.add_response_callback(_forget_ids)


def _forget_ids(request, response):
    request.matchdict = {}


def includeme(config):
    """Whether metrics are enabled is known once every plugin is included: when the app is
    created, where the tween factory and :func:`watch` look."""
    config.add_tween("kinto_attachment.metrics.transfers_tween_factory", under=INGRESS)
    config.add_subscriber(watch, ApplicationCreated)
    config.add_subscriber(_unlabelled_preflights, ContextFound)


class EventMeasures:
    """What the events' dispatcher reports (:attr:`~kinto_attachment.events.dispatcher.
    Dispatcher.measures`), by destination: events delivered and their latency from commit,
    failed deliveries (``retried`` or ``dead``), events pending."""

    def __init__(self, service):
        self._service = service

    def delivered(self, destination, latency_seconds):
        labels = [("destination", destination)]
        _count(self._service, "attachment.events.delivered", 1, labels)
        self._service.timer(
            "attachment.events.latency_seconds", value=latency_seconds, labels=labels
        )

    def failed(self, destination, dead):
        outcome = "dead" if dead else "retried"
        _count(self._service, f"attachment.events.{outcome}", 1, [("destination", destination)])

    def pending(self, destination, count):
        labels = [("destination", destination)]
        self._service.observe("attachment.events.pending", count, labels=labels)
