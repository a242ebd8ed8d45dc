"""The events' settings (``kinto.attachment.events.*``): names, defaults and validation.

``events.destinations`` is a policy setting (:mod:`kinto_attachment.uploads.policies`): a
bucket or collection may send its events elsewhere, or nowhere
(``resources.{bid}[.{cid}].events.destinations``). Everything else is global, and parsed here,
once the destinations used anywhere are known: a destination named without the settings it
needs stops start-up, naming the setting.

``url_secret`` signs the fetch URLs the plugin serves itself (stores that presign none: local
disk, another package's store). It is required, never derived nor generated: every node of a
cluster must sign and verify alike, and a secret made up by each process at start-up would
give URLs that the other nodes (or the same node after a restart) refuse.
"""

import base64
import dataclasses
import re
from urllib.parse import urlsplit

from ..setting_values import MAX_SECONDS, as_number, as_text, fail


#: Where our names live, after Kinto's ``kinto.`` (which error messages add).
PREFIX = "attachment.events."
DESTINATIONS = ("webhook", "redis", "amqp")
#: The types of the events we emit, as the ``attachments`` capability lists them.
STORED = "org.kinto.attachment.stored"
DELETED = "org.kinto.attachment.deleted"
TYPES = (STORED, DELETED)
#: Shortest ``url_secret``, in characters.
MIN_SECRET = 16
#: Longest life of a presigned URL: S3's and GCS's (V4 signatures), a week.
MAX_PRESIGNED_SECONDS = 7 * 86400


@dataclasses.dataclass(frozen=True)
class EventsOptions:
    """The global events settings (``kinto.attachment.events.*``)."""

    #: Every destination some bucket or collection sends its events to; empty: events off.
    used: tuple = ()
    #: Lifetime of the ``url`` of a ``stored`` event, from its delivery.
    url_expires_seconds: int = 86400
    #: Secret of the signed fetch URLs served by the plugin ("" : none, see the module).
    url_secret: str = ""
    #: How long a ``stored`` event's blob stays fetchable after the event's delivery,
    #: replaced or not (or until its URL expires, whichever is first).
    fetch_grace_seconds: int = 3600
    #: Attempts of a delivery before the event is dead.
    max_attempts: int = 20
    #: Age of an event after which it is dead, whatever its attempts.
    max_age_seconds: int = 7 * 86400
    #: First delay of the retries, doubled at each attempt (up to an hour).
    retry_seconds: float = 1.0
    #: Seconds between looks at the outbox when no commit woke the dispatcher.
    poll_seconds: float = 5.0
    #: Longest attempt of a delivery, whole: connect, send, and the answer or confirm.
    timeout_seconds: float = 10.0
    webhook_url: str = ""
    #: Standard Webhooks secret (``whsec_`` + base64), decoded.
    webhook_secret: bytes = b""
    redis_url: str = ""
    redis_stream: str = "kinto-attachment-events"
    #: ``XADD ... MAXLEN ~`` bound; 0: unbounded.
    redis_maxlen: int = 100000
    amqp_url: str = ""
    amqp_exchange: str = ""
    amqp_routing_key: str = "kinto-attachment-events"

    @property
    def enabled(self):
        return bool(self.used)


def as_destinations(name, value):
    """Space-separated destination names, in order, without repeats; empty: no events."""
    words = tuple(dict.fromkeys(str(value).split()))
    for word in words:
        if word not in DESTINATIONS:
            fail(name, f"unknown destination {word!r}; expected some of {', '.join(DESTINATIONS)}")
    return words


#: A query parameter whose value is a secret (redis-py takes ``?password=``).
_SECRET_PARAMETER = re.compile(r"([?&][^=&#]*(?:password|secret|token)[^=&#]*=)[^&#]*", re.I)


#: The schemes whose paths say nothing secret (a database number, a socket, a vhost).
_PATHS_SHOWN = ("redis", "rediss", "unix", "amqp", "amqps")


def redacted(url):
    """``url`` as an error message may show it: the password of its user info (everything
    before the last ``@`` of its authority) replaced by ``***``, or the whole user info if
    it has no ``:`` (a Redis URL may give the password alone), the value of any query
    parameter named for a password, a secret or a token, and the path and query of any URL
    but a broker's (a webhook's often hold its token, as Slack's and Azure's do). Start-up
    errors go to logs and terminals that a password must not reach."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0] or [len(rest)])
    authority, tail = rest[:end], _SECRET_PARAMETER.sub(r"\1***", rest[end:])
    if scheme.lower() not in _PATHS_SHOWN and tail.strip("/"):
        tail = "/***"
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:***@{host}" if colon else f"***@{host}"
    return f"{scheme}{separator}{authority}{tail}"


def refuse_url(name, url, message):
    """Stop start-up naming the setting ``name``; ``url``, its value, is redacted wherever
    ``message`` quotes it (a client's error may)."""
    fail(name, message.replace(url, redacted(url)) if url else message)


def _as_url(*schemes):
    def parse(name, value):
        url = as_text(name, value)
        if not url:
            return url
        if not re.match(rf"({'|'.join(schemes)})://", url):
            refuse_url(name, url, f"expected a {' or '.join(schemes)} URL, got {url!r}")
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError as e:  # An unclosed ``[`` of an IPv6 address, a port not a number.
            refuse_url(name, url, f"unreadable URL {url!r}: {e}")
        if url.startswith("unix://"):
            if not parts.path.strip("/"):
                refuse_url(name, url, f"no socket path in {url!r}")
        # A client library reads no host as localhost: events would go to whatever runs there.
        elif not host:
            refuse_url(name, url, f"no host in {url!r}")
        return url

    return parse


def _as_secret(name, value):
    secret = as_text(name, value)
    if secret and len(secret) < MIN_SECRET:
        fail(name, f"must have {MIN_SECRET} characters at least")
    return secret


def _as_webhook_secret(name, value):
    """Standard Webhooks' form: ``whsec_`` and the base64 of the key."""
    text = as_text(name, value)
    if not text:
        return b""
    try:
        key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except ValueError:
        key = b""
    if len(key) < 24 or len(key) > 64:
        fail(name, "expected whsec_ and the base64 of 24 to 64 random bytes")
    return key


#: ``NAME`` (after ``events.``) → (EventsOptions field, parser); ``destinations`` aside.
SETTINGS = {
    "url_expires_seconds": ("url_expires_seconds", as_number(int, 1, MAX_SECONDS)),
    "url_secret": ("url_secret", _as_secret),
    "fetch_grace_seconds": ("fetch_grace_seconds", as_number(int, 0, MAX_SECONDS)),
    "max_attempts": ("max_attempts", as_number(int, 1)),
    "max_age_seconds": ("max_age_seconds", as_number(int, 1, MAX_SECONDS)),
    "retry_seconds": ("retry_seconds", as_number(float, 0, MAX_SECONDS)),
    "poll_seconds": ("poll_seconds", as_number(float, 0.01, MAX_SECONDS)),
    "timeout_seconds": ("timeout_seconds", as_number(float, 0.1, MAX_SECONDS)),
    "webhook.url": ("webhook_url", _as_url("http", "https")),
    "webhook.secret": ("webhook_secret", _as_webhook_secret),
    "redis.url": ("redis_url", _as_url("redis", "rediss", "unix")),
    "redis.stream": ("redis_stream", as_text),
    "redis.maxlen": ("redis_maxlen", as_number(int, 0)),
    "amqp.url": ("amqp_url", _as_url("amqp", "amqps")),
    "amqp.exchange": ("amqp_exchange", as_text),
    "amqp.routing_key": ("amqp_routing_key", as_text),
}
#: What each destination needs.
REQUIRED = {
    "webhook": ("webhook.url", "webhook.secret"),
    "redis": ("redis.url",),
    "amqp": ("amqp.url",),
}


def from_settings(values, used):
    """:class:`EventsOptions` from the ``events.*`` settings (keyed by name without
    ``events.``), for the destinations ``used`` by any bucket or collection."""
    options = {"used": tuple(used)}
    for name, (field, parse) in SETTINGS.items():
        if name in values:
            options[field] = parse(PREFIX + name, values[name])
    events = EventsOptions(**options)
    for destination in events.used:
        for name in REQUIRED[destination]:
            if not getattr(events, SETTINGS[name][0]):
                fail(PREFIX + name, f"required by the {destination!r} destination")
    # Empty (a template whose variable was not set), a name replaces the default: Redis takes
    # ``XADD ""`` as any key, which no worker reads; the default exchange routes by queue
    # name, and no queue has the empty one.
    if "redis" in events.used and not events.redis_stream:
        fail(PREFIX + "redis.stream", "must not be empty")
    if "amqp" in events.used and not events.amqp_exchange and not events.amqp_routing_key:
        fail(PREFIX + "amqp.routing_key", "must name a queue with the default exchange")
    return events


def check_store(events, store):
    """With events on, a store that presigns no URLs needs ``url_secret``; one that does
    cannot sign for more than a week."""
    presigning = hasattr(store, "presigned_url")
    if events.enabled and presigning and events.url_expires_seconds > MAX_PRESIGNED_SECONDS:
        fail(
            PREFIX + "url_expires_seconds",
            f"presigned URLs live {MAX_PRESIGNED_SECONDS} seconds at most",
        )
    if events.enabled and not presigning and not events.url_secret:
        fail(
            PREFIX + "url_secret",
            "required with events on a store that presigns no URLs (local disk): it signs "
            "the fetch URLs of stored events; give every node the same one",
        )


def check_host(events, store, http_host):
    """With events on, a store that presigns no URLs (local disk) names the fetch URLs
    workers follow after the server's address, which only Kinto's ``http_host`` gives: the
    request's ``Host`` header is the client's choice, and workers would fetch from any
    address an uploader names. Refused at start-up rather than guessed."""
    if events.enabled and not hasattr(store, "presigned_url") and not http_host:
        fail(
            "http_host",
            "required with events on a store that presigns no URLs (local disk): the fetch "
            "URLs of stored events are under this address (with kinto.http_scheme), the one "
            "workers fetch from; a request's Host header, which its client chooses, is not "
            "used",
        )
