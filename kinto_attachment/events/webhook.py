"""The ``webhook`` destination: a ``POST`` of the event, signed as the Standard Webhooks
specification says (https://www.standardwebhooks.com/): ``webhook-id`` (the event id, the same
at every attempt), ``webhook-timestamp`` (epoch seconds of the attempt) and
``webhook-signature``, ``v1,`` and the base64 of the HMAC-SHA256 of ``{id}.{timestamp}.{body}``
with the secret. A 2xx answer is a delivery; anything else is retried, after the
``Retry-After`` the answer asks for, if any.

A redirect is not followed: it is a failed attempt, logged with its ``Location``. Followed, a
301, 302 or 303 turns the ``POST`` into a ``GET`` without the event, whose 200 would mark
delivered an event the endpoint never received; and a 307 or 308 would send the signed event
to a URL the operator never configured. The operator sets ``webhook.url`` to where it points.
"""

import base64
import email.utils
import hashlib
import hmac
import time

import requests

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
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (now or time.time()))


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

    def deliver(self, body, event):
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": CONTENT_TYPE,
            "webhook-id": event["id"],
            "webhook-timestamp": timestamp,
            "webhook-signature": sign(self._secret, event["id"], timestamp, body),
        }
        try:
            response = self._session.post(
                self._url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            )
        except requests.RequestException as e:
            raise Failed(f"webhook: {e}") from e
        response.close()
        if 300 <= response.status_code < 400:
            raise Failed(
                f"webhook: {response.status_code} redirect to"
                f" {response.headers.get('Location')!r}, not followed: set"
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
