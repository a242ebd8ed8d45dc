"""Events of stored and deleted files, delivered after commit to webhooks, Redis streams and
RabbitMQ exchanges, at least once and in order per subject and destination.

- :mod:`.options`: the ``events.*`` settings;
- :mod:`.cloudevents`: the events' format (CloudEvents 1.0, structured JSON);
- :mod:`.recording`: rows of the outbox (:mod:`kinto_attachment.state.outbox`) written in the
  transaction of each change, by the write paths;
- :mod:`.dispatcher` and :mod:`.claims`: their delivery, by a thread of each server;
- :mod:`.webhook`, :mod:`.redis`, :mod:`.amqp`: the destinations;
- :mod:`.urls`: the fetch URL of a stored version; :mod:`.retention`: the blobs events hold;
- :mod:`.command`: ``kinto-attachment-events list|retry|purge``.
"""

from pyramid.events import ApplicationCreated

from ..setting_values import fail
from ..state import shared
from .options import PREFIX, check_host, check_store, refuse_url


def start_dispatcher(event):
    """On application start: deliver in a daemon thread (``attachment_dispatcher.stop()``);
    not in a command, nor on a read-only server, which has no event to send and claims none
    (:func:`~kinto_attachment.state.shared.writes_by_itself`)."""
    registry = event.app.registry
    dispatcher = getattr(registry, "attachment_dispatcher", None)
    if dispatcher is None or not shared.writes_by_itself(registry):
        return
    dispatcher.start()


def check_destinations(options):
    """Build the client of each destination used, without connecting, and close it: one whose
    package is not installed (an optional extra) or whose client cannot read its URL stops
    start-up naming the setting. Found at the first delivery instead, every event failed,
    was retried and died, on a server that had started as if all was well."""
    from .dispatcher import KINDS

    for name in options.used:
        kind = KINDS[name]
        try:
            destination = kind(options)
        except ImportError:
            fail(
                PREFIX + "destinations",
                f"the {name!r} destination needs the {kind.package} package: "
                f"pip install {kind.package} (or install the release with its "
                f"events-{name} extra: docs/install.rst)",
            )
        # TypeError: an option the client has not; OSError: a file an option names (a CA).
        except (ValueError, TypeError, OSError) as e:
            url = getattr(options, kind.url_setting.replace(".", "_"))
            refuse_url(PREFIX + kind.url_setting, url, f"{url!r} unusable: {e}")
        destination.close()


def includeme(config):
    from .dispatcher import Dispatcher

    registry = config.registry
    options = registry.attachment_settings.events
    check_store(options, registry.attachment_store)
    check_destinations(options)
    check_host(options, registry.attachment_store, registry.settings.get("http_host"))
    if options.url_secret:
        config.include("kinto_attachment.downloads.signed")
    if options.enabled:
        registry.attachment_dispatcher = Dispatcher(registry)
        config.add_subscriber(start_dispatcher, ApplicationCreated)
