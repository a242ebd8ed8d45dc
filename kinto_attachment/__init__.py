"""Attach files to Kinto records: ``kinto.includes = kinto_attachment``."""

from importlib.metadata import PackageNotFoundError, version

from . import locks
from . import settings as attachment_settings
from .heartbeat import attachments_ping
from .limiter import TransferLimiter
from .storage import IBlobStore
from .storage.local import LocalStore
from .views import resumable


try:
    __version__ = version("kinto-attachment-streaming")
except PackageNotFoundError:  # pragma: no cover (running from a source tree)
    __version__ = "0.0.0"


def _make_store(settings):
    if settings.s3 is None:
        return LocalStore(settings.base_path, settings.base_url)
    from .storage.s3 import S3Store  # boto3 is only needed by S3 users.

    return S3Store.from_options(settings.s3, base_url=settings.base_url)


def includeme(config):
    settings = attachment_settings.parse(config.get_settings())
    store = _make_store(settings)
    config.registry.attachment_settings = settings
    config.registry.attachment_store = store
    config.registry.attachment_locks = locks.for_storage(config.registry.storage)
    config.registry.transfer_limiter = TransferLimiter(
        settings.data_files.transfer_budget_bytes,
        wait_seconds=settings.data_files.transfer_wait_seconds,
        idle_seconds=settings.data_files.transfer_idle_seconds,
    )
    config.registry.registerUtility(store, IBlobStore)

    config.add_api_capability(
        "attachments",
        version=__version__,
        description="Add file attachments to records",
        url="https://github.com/Kinto/kinto-attachment/",
        base_url=settings.capability_base_url,
        resumable={
            "protocol": "tus",
            "version": resumable.TUS_VERSION,
            "extensions": resumable.EXTENSIONS.split(","),
            "url": "{record-url}/attachment/uploads",
        },
    )
    config.registry.heartbeats["attachments"] = attachments_ping
    if settings.serve_files:
        config.include("kinto_attachment.views.files")

    config.include("kinto_attachment.listeners")
    config.scan("kinto_attachment.views")
    config.include("kinto_attachment.views.default_bucket")
    config.include("kinto_attachment.views.data_files")
    config.include("kinto_attachment.views.resumable")
    config.include("kinto_attachment.gc")
