"""The ``url`` of a ``stored`` event: exactly that version of the file, fetched without Kinto
credentials, for ``url_expires_seconds`` from the delivery.

A store that presigns its downloads (S3, GCS) makes it, for the exact key; any other (local
disk) gets a URL of the plugin's own ``attachment-fetch`` route, signed with ``url_secret``
(:mod:`kinto_attachment.web.signed_urls`), under the server's ``/v1/`` URL that the event
names as its ``source``.
"""

import time

from ..web import signed_urls


def fetch_url(store, options, event, key, now=None):
    """The URL of ``key``, the blob of ``event``, valid ``url_expires_seconds`` from ``now``."""
    expires = options.url_expires_seconds
    attachment = event["data"]["attachment"]
    if hasattr(store, "presigned_url"):
        return store.presigned_url(key, expires, attachment["filename"], attachment["mimetype"])
    until = int(now or time.time()) + expires
    path = signed_urls.PATH.lstrip("/")
    return event["source"] + path + signed_urls.signed_path(options.url_secret, key, until)
