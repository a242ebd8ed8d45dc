"""What the servers' settings promise about their files, kept in Kinto's storage for the
commands that collect them.

``kinto-attachment-gc`` reads the servers' database and store, but its settings are those of
the configuration it is given, and a cron job's often lacks some of the servers' (events
whose destinations come from the servers' environment, ``KINTO_ATTACHMENT_EVENTS_*``). A
collector that believed its own then broke what the servers promised: without events, it
deleted a file that a dead event still names (its retry would hand out a URL to nothing),
gave a name back before the URLs that events handed out for it had expired (they served
another record's file), and expired ``/data/files`` entries without the ``deleted`` event
that processing services wait for.

So every server records, once it serves (its first request, again after a ``__flush__``),
the settings a collection must honour (:func:`promised`); the command compares them with its
own and refuses to collect where its own would keep less (:func:`broken_by`), naming the
settings to fix. Only a serving process records: not a command (whose configuration may be a
cron job's: ``kinto purge-deleted`` loads the application as a server would), nor a read-only
server (it uploads nothing). A storage no server recorded anything in (servers older than
this, a database never served) is collected as the command's settings say.
"""

import logging
import threading
import time

import transaction
from kinto.core.storage.exceptions import ObjectNotFoundError
from pyramid.events import NewRequest

from .replaced import QUARANTINE_SECONDS
from .shared import on_its_own, quiet_client, shares_state, writes_by_itself


logger = logging.getLogger(__name__)

OBJECT = {"resource_name": "attachment-promises", "parent_id": "attachment-promises"}
OBJECT_ID = "collection"


#: The format of what servers record: a command that finds another refuses (it cannot tell
#: what the servers promised: a command and servers of different versions).
VERSION = 2
#: Each promise, by its key in the storage: the settings behind it, as a refusal names them.
SETTINGS = {
    "destinations": "kinto.attachment.events.destinations",
    "events": (
        "events of any bucket or collection (kinto.attachment.events.destinations, "
        "kinto.attachment.resources.*.events.destinations)"
    ),
    "quarantine": (
        "seconds a deleted file's name stays taken: the longest lifetime of the URLs handed "
        "out (kinto.attachment.events.url_expires_seconds, the store's signed downloads: "
        "kinto.attachment.aws.presigned_expires, kinto.attachment.gcloud.signed_expires), "
        "60 at least"
    ),
    "replaced_grace": (
        "kinto.attachment.gc.replaced_grace_seconds (how long a replaced, deleted or expired "
        "file is kept for the downloads reading it)"
    ),
    "http_host": "kinto.http_host (events' source)",
    "http_scheme": "kinto.http_scheme (events' source)",
}
#: Promises a command may exceed (a longer quarantine keeps more), not fall short of.
AT_LEAST = {"quarantine", "replaced_grace"}
#: How a refusal names a recording of another format.
FORMAT = "the format of the servers' record (their kinto-attachment's: run the same version)"
#: Seconds before a server that could not record tries again (a database not migrated yet).
RETRY_SECONDS = 60


def promised(registry):
    """The settings of this process that decide what a collection may do: where the events
    of ``/data/files`` go (their expiry's ``deleted``) and with which ``source``, whether
    events hold files at all, how long a deleted file's name stays taken (the URLs handed
    out for it: events', signed redirections'), and how long a file a record or entry let go
    of (an expired ``/data/files`` entry's, which the collector finds) is kept for the
    downloads reading it."""
    attachment, settings = registry.attachment_settings, registry.settings
    events = attachment.events
    urls = events.url_expires_seconds if events.enabled else 0
    return {
        "destinations": sorted(attachment.default.event_destinations),
        "events": events.enabled,
        "quarantine": max(QUARANTINE_SECONDS, attachment.redirect_expires or 0, urls),
        "replaced_grace": attachment.gc.replaced_grace_seconds,
        "http_host": (settings.get("http_host") or None) if events.enabled else None,
        "http_scheme": (settings.get("http_scheme") or None) if events.enabled else None,
    }


def record(registry):
    """Write this server's :func:`promised` settings, in a thread of its own (so in a
    transaction of its own: a flush records them once it has committed)."""
    on_its_own(_write, registry)


def _write(registry):
    with transaction.manager:
        registry.storage.update(
            **OBJECT,
            object_id=OBJECT_ID,
            obj={"version": VERSION, "settings": promised(registry)},
        )


_recording = threading.Lock()


def record_when_serving(event):
    """Record them once a serving process has a request (see the module's docstring), in a
    thread of its own that the request does not wait for (a database slow to answer, a row
    another node's flush holds, must not hold a first request, a load balancer's heartbeat
    among them); should the storage refuse (not migrated yet), at a request a while later."""
    registry = event.request.registry
    if getattr(registry, "attachment_promised", False):
        return
    if time.monotonic() < getattr(registry, "attachment_promise_retry", 0):
        return
    if not _recording.acquire(blocking=False):  # Another request is at it.
        return
    registry.attachment_promise_retry = time.monotonic() + RETRY_SECONDS
    threading.Thread(
        target=_record_aside, args=(registry,), name="attachment-promises", daemon=True
    ).start()


def _record_aside(registry):
    try:
        with quiet_client():
            _write(registry)  # This thread is the request's aside: a transaction of its own.
        registry.attachment_promised = True
    except Exception as e:  # noqa: BLE001 (any backend's failure: later)
        logger.info("Settings not recorded for the collector yet: %s", str(e).splitlines()[0])
    finally:
        _recording.release()


def broken_by(registry):
    """``{what: (the servers' value, this process's)}`` where this process would keep less
    than the servers promised, ``what`` naming the settings behind it; where the servers'
    record is of another format, that; empty when it would keep as much, or no server
    recorded any."""
    with transaction.manager:
        try:
            found = registry.storage.get(**OBJECT, object_id=OBJECT_ID)
        except ObjectNotFoundError:
            return {}
    theirs, mine = found.get("settings"), promised(registry)
    if found.get("version") != VERSION or not isinstance(theirs, dict) or set(theirs) != set(mine):
        return {FORMAT: (found.get("version"), VERSION)}
    return {
        SETTINGS[name]: (theirs[name], mine[name])
        for name in mine
        if not _keeps(name, theirs[name], mine[name])
    }


def _keeps(name, theirs, mine):
    if name in AT_LEAST:
        return mine >= theirs
    return mine == theirs


def includeme(config):
    """Servers record their promises, unless they are read-only; commands (and the memory
    backend, which no command sees) never do."""
    registry = config.registry
    if not writes_by_itself(registry) or not shares_state(registry):
        return
    config.add_subscriber(record_when_serving, NewRequest)
