"""Garbage collection: ``/data/files`` entries that expired, and resumable uploads abandoned
past their expiration.

Runs in every server every ``data_files.gc_interval_seconds`` and as a command::

    kinto-attachment-gc --ini config/kinto.ini

Several nodes may collect at once: deleting what another node just deleted is harmless.
Metadata goes first, in a transaction; the blobs once it has committed.
"""

import argparse
import logging
import threading

import transaction
from kinto.core.storage.exceptions import ObjectNotFoundError
from pyramid.events import ApplicationCreated

from . import data_files, uploads


logger = logging.getLogger(__name__)


def collect(registry, now=None):
    """Collect expired data files and abandoned uploads; return how many."""
    return _collect_data_files(registry, now) + _collect_uploads(registry, now)


def _collect_uploads(registry, now=None):
    now = now or data_files.msec_time()
    with transaction.manager:
        expired = [u for u in uploads.entries(registry.storage) if u["expires"] <= now]
        for upload in expired:
            uploads.remove(registry.storage, upload["id"])
    for upload in expired:
        registry.attachment_store.discard(upload["store"])
    if expired:
        logger.info("Collected %d abandoned uploads", len(expired))
    return len(expired)


def _collect_data_files(registry, now=None):
    storage = registry.storage
    with transaction.manager:
        keys = []
        for entry in data_files.entries(storage):
            if data_files.is_live(entry, now):
                continue
            try:
                storage.delete(
                    resource_name=data_files.RESOURCE,
                    parent_id=data_files.PARENT_ID,
                    object_id=entry["id"],
                    with_deleted=False,
                )
            except ObjectNotFoundError:  # Collected by another node meanwhile.
                continue
            keys.append(entry["key"])
    if keys:
        registry.attachment_store.delete_many(keys)
        logger.info("Collected %d expired data files", len(keys))
    return len(keys)


def _periodically(registry, interval, stopped):
    while not stopped.wait(interval):
        try:
            collect(registry)
        except Exception:  # The next round will try again.
            logger.exception("Garbage collection of data files failed")


def start_collector(event):
    """On application start: collect in a daemon thread (stopped with ``gc_stop.set()``)."""
    registry = event.app.registry
    interval = registry.attachment_settings.data_files.gc_interval_seconds
    if not interval:
        return
    registry.attachment_gc_stop = threading.Event()
    threading.Thread(
        target=_periodically,
        args=(registry, interval, registry.attachment_gc_stop),
        name="attachment-gc",
        daemon=True,
    ).start()


def includeme(config):
    config.add_subscriber(start_collector, ApplicationCreated)


def main(argv=None):
    """``kinto-attachment-gc --ini FILE``: collect once and exit."""
    from pyramid.paster import bootstrap, setup_logging

    parser = argparse.ArgumentParser(description="Delete expired /data/files entries.")
    parser.add_argument("--ini", required=True, help="the Kinto configuration file")
    args = parser.parse_args(argv)
    setup_logging(args.ini)
    with bootstrap(args.ini) as env:
        count = collect(env["registry"])
    print(f"{count} expired data files and abandoned uploads collected")
    return 0
