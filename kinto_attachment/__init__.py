"""Attach files to Kinto records: ``kinto.includes = kinto_attachment``."""

import logging
from importlib.metadata import PackageNotFoundError, version

from . import locks, routes
from . import settings as attachment_settings
from .adoption.migration import Migration
from .data_files.limiter import TransferLimiter
from .events.options import TYPES as EVENT_TYPES
from .heartbeat import attachments_ping, version_file_or_ours
from .state import instance, links, permissions, shared
from .storage import IBlobStore
from .views import resumable


logger = logging.getLogger(__name__)

try:
    __version__ = version("kinto-attachment-streaming")
except PackageNotFoundError:  # pragma: no cover (running from a source tree)
    __version__ = "0.0.0"


def _warn_of_a_base_url_without_slash(store):
    """Locations are made as kinto-attachment makes them (``urljoin``): a ``base_url``
    without a trailing slash loses its last segment. Right for its users' existing files,
    surprising for anyone else: say what a location will look like."""
    if store.base_url and not store.base_url.endswith("/"):
        logger.warning(
            "kinto.attachment.base_url %r has no trailing slash: files are located at %r "
            "(as kinto-attachment does); end it with '/' to keep its last segment",
            store.base_url,
            store.url("KEY"),
        )


def includeme(config):
    settings = attachment_settings.parse(config.get_settings())
    # The store's SDK is imported now, and only for the store the settings chose.
    store = settings.store.build(settings.base_url, settings.caching.files)
    # Optional (storage.base.StoreBase.prepare); not in our commands, which take it as it is.
    prepare = getattr(store, "prepare", None)
    if prepare is not None and not shared.in_our_command(config.registry):
        prepare()
    _warn_of_a_base_url_without_slash(store)
    config.registry.attachment_settings = settings
    config.registry.attachment_store = store
    # A free name is one no record names either (:func:`.state.links.held`), and no name an
    # instance drew at random (:func:`.state.instance.drawn`: a client's copy of a deleted
    # one, ``randomize = false``, was served by the URLs handed out for that file). Working
    # files that outlive a request say whose they are (:class:`.state.instance.Sorting`).
    store.reserved = lambda key: instance.drawn(key) or links.held(config.registry.storage, key)
    store.temporary_name = lambda: instance.random_name(config.registry)
    config.registry.attachment_locks = locks.for_storage(config.registry.storage)
    permissions.guard(config.registry.permission)
    config.registry.transfer_limiter = TransferLimiter(
        settings.data_files.transfer_budget_bytes,
        wait_seconds=settings.data_files.transfer_wait_seconds,
        idle_seconds=settings.data_files.transfer_idle_seconds,
        min_rate=settings.data_files.transfer_min_bytes_per_second,
    )
    config.registry.registerUtility(store, IBlobStore)

    config.add_api_capability(
        "attachments",
        version=__version__,
        description="Add file attachments to records",
        url="https://kinto.readthedocs.io/",
        base_url=settings.capability_base_url,
        resumable={
            "protocol": "tus",
            "version": resumable.TUS_VERSION,
            "extensions": resumable.extensions(store),
            "url": routes.TUS_UPLOADS.pattern.replace(routes.RECORD_PATH, "{record-url}"),
        },
        # The types of the events sent when some bucket or collection has destinations.
        events=list(EVENT_TYPES) if settings.events.enabled else [],
    )
    config.registry.heartbeats["attachments"] = attachments_ping
    version_file_or_ours(config.get_settings())
    if settings.serve_files:
        config.include("kinto_attachment.views.files")

    config.include("kinto_attachment.request_log")
    config.include("kinto_attachment.listeners")
    config.include("kinto_attachment.views.attachment")
    config.include("kinto_attachment.views.default_bucket")
    config.include("kinto_attachment.data_files.views")
    config.include("kinto_attachment.views.resumable")
    config.include("kinto_attachment.state.instance")
    config.include("kinto_attachment.state.promises")
    config.include("kinto_attachment.state.long_transactions")
    config.include("kinto_attachment.gc")
    config.include("kinto_attachment.events")
    config.include("kinto_attachment.metrics")
    config.include("kinto_attachment.openapi")
    config.add_migration(Migration(config.registry))
