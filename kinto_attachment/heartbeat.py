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
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from .state import instance, shared


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

    One probe at a time (:class:`_OneAtATime`): a store that hangs (S3 accepting
    connections and answering nothing) held a thread and a connection per probe for minutes,
    and every call of anyone, or a load balancer's every few seconds, started one more.
    A read-only server does not write, so it reports ``True`` without probing.
    """
    registry = request.registry
    if shared.read_only(registry):
        return True
    timeout = float(registry.settings.get("heartbeat_timeout_seconds") or 10)
    probes = registry.__dict__.setdefault("attachment_probes", _OneAtATime())
    return probes.result(lambda: _probe(registry), timeout)


class _OneAtATime:
    """The result of one call at a time: a caller while one runs waits for its result (as
    long as Kinto waits for a heartbeat: then false), rather than starting another."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running = None

    def result(self, call, timeout):
        with self._lock:
            running = self._running
            mine = running is None or running.done()
            if mine:
                running = self._running = Future()
        if mine:
            try:
                running.set_result(call())
            except BaseException as e:  # Its waiters fail alike; the next call runs anew.
                running.set_exception(e)
                raise
        try:
            return running.result(timeout)
        except FutureTimeout:
            return False


def _probe(registry):
    store = registry.attachment_store
    key = f"__heartbeat__-{instance.random_name(registry)}.json"
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
        if hasattr(store, "delete_versions"):  # A bucket that keeps versions keeps none.
            try:
                store.delete_versions(key)
            except Exception as e:  # noqa: BLE001 (no permission to list versions: said)
                logger.debug("Heartbeat probe %s: its versions stay: %s", key, e)
