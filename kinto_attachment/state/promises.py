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

So every server records, when it starts (and after a ``__flush__``), the settings a
collection must honour (:func:`promised`); the command compares them with its own and
refuses to collect where they differ (:func:`broken_by`), naming the settings to fix. A
storage no server recorded anything in (servers older than this, a database never served)
is collected as the command's settings say.
"""

import logging

import transaction
from kinto.core.storage.exceptions import ObjectNotFoundError
from pyramid.events import ApplicationCreated

from .shared import in_command, on_its_own, quiet_client, shares_state


logger = logging.getLogger(__name__)

OBJECT = {"resource_name": "attachment-promises", "parent_id": "attachment-promises"}
OBJECT_ID = "collection"


def promised(registry):
    """The settings of this process that decide what a collection may do: where the events
    of ``/data/files`` go (their expiry's ``deleted``) and with which ``source``, and how long
    the URLs handed out for a file live (events', signed redirections': a name stays taken
    as long)."""
    attachment, settings = registry.attachment_settings, registry.settings
    events = attachment.events
    return {
        "events.destinations": sorted(attachment.default.event_destinations),
        "events (anywhere)": events.enabled,
        "events.url_expires_seconds": events.url_expires_seconds if events.enabled else None,
        "redirect_expires": attachment.redirect_expires,
        "http_host": settings.get("http_host") or None,
        "http_scheme": settings.get("http_scheme") or None,
    }


def record(registry):
    """Write this server's :func:`promised` settings (in a transaction of its own)."""

    def write():
        with transaction.manager:
            registry.storage.update(
                **OBJECT, object_id=OBJECT_ID, obj={"settings": promised(registry)}
            )

    on_its_own(write)


def record_at_start(event):
    """Record them when a server starts: not a command (whose settings may be a cron job's),
    nor on the memory backend (no command sees it). A storage not ready yet (``kinto
    migrate`` not run) records nothing: the command then goes by its own settings."""
    registry = event.app.registry
    if in_command(registry) or not shares_state(registry):
        return
    try:
        with quiet_client():
            record(registry)
    except Exception as e:  # noqa: BLE001 (any backend's failure: nothing recorded)
        logger.info("Settings not recorded for the collector: %s", str(e).splitlines()[0])


def broken_by(registry):
    """``{setting: (the servers' value, this process's)}`` where they differ; empty when
    they agree or no server recorded any."""
    with transaction.manager:
        try:
            found = registry.storage.get(**OBJECT, object_id=OBJECT_ID)
        except ObjectNotFoundError:
            return {}
    theirs, mine = found.get("settings") or {}, promised(registry)
    return {
        name: (theirs.get(name), mine.get(name))
        for name in sorted(set(theirs) | set(mine))
        if theirs.get(name) != mine.get(name)
    }


def includeme(config):
    config.add_subscriber(record_at_start, ApplicationCreated)
