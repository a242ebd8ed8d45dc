"""``GET /v1/__heartbeat__`` entry ``attachments``: can we store a file right now?"""

import logging

from .state import instance


logger = logging.getLogger(__name__)

PROBE = b'{"heartbeat": "attachments"}'


def attachments_ping(request):
    """``True`` when a probe blob can be written, read back and deleted.

    A read-only server does not write, so it reports ``True`` without probing.
    """
    if request.registry.settings.get("readonly"):
        return True
    store = request.registry.attachment_store
    key = f"__heartbeat__-{instance.random_name(request.registry)}.json"
    staged = store.stage(key, "application/json", random=True)
    try:
        staged.write(PROBE)
        key = staged.commit()
        with store.open(key) as f:
            return f.read() == PROBE
    except Exception:
        staged.abort()
        logger.exception("Attachment storage heartbeat failed")
        return False
    finally:
        store.delete(key)
