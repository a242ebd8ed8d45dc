"""Metrics of attachments, reported through Kinto's metrics service.

With a metrics plugin of Kinto (``kinto.plugins.prometheus``, ``kinto.plugins.statsd``), this
measures uploads and downloads (:mod:`.transfers`), the blob store's operations, the waits for
the ``/data/files`` transfer budget, garbage collections (:func:`collected`, which
:func:`kinto_attachment.gc.collect` calls) and the delivery of events (:class:`EventMeasures`):
:mod:`.operations`. Without one, Kinto's default service measures nothing, yet its calls would
still cost: then the tween leaves itself out of the chain and nothing is wrapped.
"""

from pyramid.events import ApplicationCreated, ContextFound
from pyramid.tweens import INGRESS

from .. import routes
from .operations import EventMeasures, collected, timed_acquire, watch_store
from .service import service_of


__all__ = ["EventMeasures", "collected", "includeme"]


def watch(event):
    """On application start, when metrics are enabled: wrap the store and the limiter, and
    have the events' dispatcher report."""
    registry = event.app.registry
    service = service_of(registry)
    if service is None:
        return
    watch_store(service, registry.attachment_store)
    limiter = registry.transfer_limiter
    limiter.acquire = timed_acquire(service, limiter.acquire)
    if hasattr(registry, "attachment_dispatcher"):
        registry.attachment_dispatcher.measures = EventMeasures(service)


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
    config.add_tween("kinto_attachment.metrics.transfers.transfers_tween_factory", under=INGRESS)
    config.add_subscriber(watch, ApplicationCreated)
    config.add_subscriber(_unlabelled_preflights, ContextFound)
