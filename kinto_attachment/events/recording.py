"""Recording events in the transaction of their change: the write paths call :func:`stored`
and :func:`deleted`, once their record (or ``/data/files`` entry) is written, under its lock.

A row is written per destination of the bucket or collection (``events.destinations`` and its
overrides; ``/data/files`` follows the global setting), and the dispatcher is woken once the
transaction commits. Nothing is recorded when the transaction does not commit: its rows are
rolled back with it on PostgreSQL; on the memory backend, which cannot roll back, they are
written ``uncommitted``, made ``pending`` by the commit and removed by a failure.
"""

import logging

import transaction
from kinto.core.utils import msec_time

from ..state import outbox, shared
from . import cloudevents
from .options import DELETED, STORED


logger = logging.getLogger(__name__)


def _destinations(registry, ids):
    settings = registry.attachment_settings
    if "file_id" in ids:
        return settings.default.event_destinations
    return settings.policy(ids["bucket_id"], ids["collection_id"]).event_destinations


def _subject(ids):
    if "file_id" in ids:
        return cloudevents.file_subject(ids["file_id"])
    return cloudevents.record_subject(ids["bucket_id"], ids["collection_id"], ids["record_id"])


def source(registry, request=None):
    """The server's ``/v1/`` URL at Kinto's ``http_host``: the request's (Kinto sets its host
    to ``http_host``, its scheme to ``http_scheme`` if set, else the server's), or for events
    that no request makes (expiry) the one of the settings. A path alone without
    ``http_host`` (a URI-reference, as CloudEvents allows): never a request's ``Host`` header,
    its client's choice, where a worker writing back to ``source`` would send its
    credentials."""
    settings = registry.settings
    host = settings.get("http_host")
    if not host:
        return f"/{registry.route_prefix}/"
    if request is not None:
        return request.route_url("hello")
    return f"{settings.get('http_scheme') or 'http'}://{host}/{registry.route_prefix}/"


def stored(registry, ids, attachment, key, replaced_hash=None, request=None):
    """Record that ``key`` (with ``attachment``, its metadata) is now the version of the
    record (``ids``: ``bucket_id``, ``collection_id``, ``record_id``) or data file
    (``file_id``)."""
    _record(registry, request, STORED, ids, attachment, key, replaced_hash)


def deleted(registry, ids, attachment, request=None):
    """Record that the file of the record or data file (``ids``) is deleted."""
    _record(registry, request, DELETED, ids, attachment, None, None)


def _record(registry, request, event_type, ids, attachment, key, replaced_hash):
    destinations = _destinations(registry, ids)
    if not destinations:
        return
    storage = registry.storage
    event = cloudevents.make(
        source(registry, request), event_type, _subject(ids), ids, attachment, replaced_hash
    )
    committed = shared.rolls_back(storage)  # Else: written now, made pending by the commit.
    now = msec_time()
    rows = [outbox.add(storage, d, event, key, now, committed) for d in destinations]
    txn = request.tm.get() if request is not None else transaction.get()
    txn.addAfterCommitHook(_after_commit, args=(registry, storage, rows, committed))
    if not committed:
        txn.addAfterAbortHook(_forget, args=(storage, rows))


def _after_commit(success, registry, storage, rows, committed):
    if not committed:
        try:
            if success:
                for row in rows:
                    outbox.change(storage, outbox.with_parent(row), state=outbox.PENDING)
            else:
                _forget(storage, rows)
        except Exception:  # In one process's memory: nothing else to do.
            logger.exception("Events: after-commit bookkeeping failed")
    dispatcher = getattr(registry, "attachment_dispatcher", None)
    if success and dispatcher is not None:
        dispatcher.wake()


def _forget(storage, rows):
    for row in rows:
        outbox.delete(storage, outbox.with_parent(row))
