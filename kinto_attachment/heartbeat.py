"""Kinto's Dockerflow endpoints: ``GET /v1/__heartbeat__``'s entry ``attachments`` (can we
store a file right now?), and ``/v1/__version__`` where no ``version.json`` is deployed.

Kinto reads ``kinto.version_json_path`` (``version.json`` in the server's working directory
by default), which a deployment's build writes, and answers a ``500`` where there is none: with
every configuration this package ships, and with most written by hand, a monitor's probe of
``/__version__`` failed. Where the configured file does not exist, this package's own
(:data:`PACKAGED_VERSION`: its name and version) is read instead; a deployment's still wins.
"""

import logging
import os
from pathlib import Path

from .state import instance


logger = logging.getLogger(__name__)

PROBE = b'{"heartbeat": "attachments"}'
#: What ``/__version__`` answers without a deployment's file (``version`` is the package's).
PACKAGED_VERSION = Path(__file__).with_name("version.json")


def version_file_or_ours(settings):
    """Point Kinto's ``version_json_path`` at :data:`PACKAGED_VERSION` unless it names a file
    that exists (see the module's docstring)."""
    if not os.path.exists(settings.get("version_json_path") or ""):
        settings["version_json_path"] = str(PACKAGED_VERSION)


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
