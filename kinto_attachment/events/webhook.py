"""The ``webhook`` destination: a ``POST`` of the event, signed as the Standard Webhooks
specification says (https://www.standardwebhooks.com/): ``webhook-id`` (the event id, the same
at every attempt), ``webhook-timestamp`` (epoch seconds of the attempt) and
``webhook-signature``, ``v1,`` and the base64 of the HMAC-SHA256 of ``{id}.{timestamp}.{body}``
with the secret. A 2xx answer is a delivery; anything else is retried, after the
``Retry-After`` the answer asks for, if any.

An attempt takes ``timeout_seconds`` at most, whole: requests' timeout bounds each connect
and each read, and an endpoint sending its answer a byte at a time held the attempt past its
lease, while another server sent the event again. The answer's body is read only while it is
short (64 KiB, to keep the connection), and an attempt still going at its deadline has its
socket shut down (:class:`Deadline`).

A redirect is not followed: it is a failed attempt, logged with its ``Location``. Followed, a
301, 302 or 303 turns the ``POST`` into a ``GET`` without the event, whose 200 would mark
delivered an event the endpoint never received; and a 307 or 308 would send the signed event
to a URL the operator never configured. The operator sets ``webhook.url`` to where it points.
"""

import base64
import contextlib
import email.utils
import hashlib
import hmac
import socket
import threading
import time

import requests
import urllib3
from requests.adapters import HTTPAdapter

from .cloudevents import CONTENT_TYPE
from .failures import Failed


def sign(secret, message_id, timestamp, body):
    """The ``webhook-signature`` of ``body`` (bytes) sent as ``message_id`` at ``timestamp``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def retry_after(value, now=None):
    """Seconds a ``Retry-After`` (seconds, or an HTTP date) asks to wait; None if unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # ``²`` is a digit to str, not to float().
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (now or time.time()))


#: Most bytes of an answer's body read (and ignored): a longer one closes the connection.
MAX_BODY = 65536

_current = threading.local()


class Deadline:
    """The end of an attempt: the sockets it uses (:class:`_Watched` connections register
    theirs) are shut down if it is still going then, which ends any connect, send or read
    in progress with an error."""

    def __init__(self, seconds):
        self.expired = False
        self._sockets = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self):
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info):
        self._timer.cancel()
        _current.deadline = None

    def watch(self, sock):
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut_down(sock)

    def _expire(self):
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut_down(sock)


def _shut_down(sock):
    # The plain socket's shutdown, under a TLS one too: the reading thread gets an error.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watched:
    """A connection that registers its socket with the current thread's deadline, when it
    connects and whenever a request reuses it."""

    def connect(self):
        super().connect()
        self._watch()

    def request(self, *args, **kwargs):
        if self.sock is not None:
            self._watch()
        return super().request(*args, **kwargs)

    def _watch(self):
        deadline = getattr(_current, "deadline", None)
        if deadline is not None and self.sock is not None:
            deadline.watch(self.sock)


class _HTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    """requests' adapter, its connections watched (proxied ones too)."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def proxy_manager_for(self, proxy, **kwargs):
        manager = super().proxy_manager_for(proxy, **kwargs)
        if isinstance(manager, urllib3.PoolManager):
            manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        return manager


class Webhook:
    name = "webhook"
    package = "requests"
    url_setting = "webhook.url"

    def __init__(self, options):
        # A URL that requests cannot send to (no host, a bad port) is refused here, at start-up.
        requests.Request("POST", options.webhook_url).prepare()
        self._url = options.webhook_url
        self._secret = options.webhook_secret
        self._timeout = options.timeout_seconds
        self._session = requests.Session()
        for scheme in ("http://", "https://"):
            self._session.mount(scheme, _Adapter())

    def deliver(self, body, event):
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": CONTENT_TYPE,
            "webhook-id": event["id"],
            "webhook-timestamp": timestamp,
            "webhook-signature": sign(self._secret, event["id"], timestamp, body),
        }
        with Deadline(self._timeout) as deadline:
            try:
                response = self._session.post(
                    self._url,
                    data=body,
                    headers=headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                    stream=True,
                )
            except requests.RequestException as e:
                if deadline.expired:
                    raise Failed(f"webhook: no answer within {self._timeout}s") from e
                raise Failed(f"webhook: {_failure(e, self._url)}") from e
            _skim(response)
        if 300 <= response.status_code < 400:
            raise Failed(
                f"webhook: {response.status_code} redirect to"
                f" {_origin(response.headers.get('Location') or '')!r}, not followed: set"
                " kinto.attachment.events.webhook.url to the URL that takes the POST",
                retry_after(response.headers.get("Retry-After")),
            )
        if not 200 <= response.status_code < 300:
            raise Failed(
                f"webhook: {response.status_code}",
                retry_after(response.headers.get("Retry-After")),
            )

    def close(self):
        self._session.close()


def _failure(error, url):
    """What a request that failed says, but the URL's path and query, where endpoints often
    take their token (requests quotes them: "Max retries exceeded with url: /hook?token=..."):
    the error's kind, its first cause's words (``Connection refused``), and the origin."""
    cause, seen = error, set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror
            break
        nested = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
        cause = cause.__cause__ or nested or cause.__context__
    else:
        reason = None
    return f"{type(error).__name__}" + (f" ({reason})" if reason else "") + f" to {_origin(url)}"


def _origin(url):
    """``scheme://host:port`` of ``url``: never its path and query, where a token may be."""
    try:
        parts = urllib3.util.parse_url(url)
    except ValueError:  # urllib3's LocationParseError: a Location that is no URL.
        return "an unreadable URL"
    if not parts.host:
        return "a path of the same origin"
    return f"{parts.scheme or 'http'}://{parts.host}" + (f":{parts.port}" if parts.port else "")


def _skim(response):
    """Read a short body (the connection is then kept for the next event), or close the
    connection: the status is the answer; a long or slow body is not waited for."""
    read = 0
    with contextlib.suppress(requests.RequestException, OSError):
        for chunk in response.iter_content(MAX_BODY):
            read += len(chunk)
            if read > MAX_BODY:
                break
    response.close()
