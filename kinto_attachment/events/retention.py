"""Blobs that events hold: never deleted while a ``stored`` event naming them is undelivered
(dead included), nor before ``min(fetch_grace_seconds, url_expires_seconds)`` after its
delivery (:mod:`kinto_attachment.state.outbox`).

Rather than a mechanism of its own, a held blob goes where every unreferenced blob goes, the
replaced blobs of :mod:`kinto_attachment.state.replaced`: the garbage collector deletes each
once it is due *and* no event holds it any more (:func:`held`).
"""

from kinto.core.utils import msec_time

from ..state import outbox


def held(registry, keys, now=None):
    """The ``keys`` that events hold now (none when events are off)."""
    if not keys or not registry.attachment_settings.events.enabled:
        return set()
    return outbox.held(registry.storage, keys, now or msec_time())
