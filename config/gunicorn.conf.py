# gunicorn for Kinto + kinto_attachment: `.venv/bin/gunicorn -c config/gunicorn.conf.py`
# (KINTO_INI=config/postgresql.ini for another configuration). gunicorn streams request bodies
# from the socket: an upload is hashed and stored while it arrives, and a request refused
# before its body (authentication, permissions, Content-Length over max_size_bytes) reads none
# of it. See docs/production.rst.
import os
import sys


# This folder's modules, whatever --pythonpath says: config/wsgi.py and the worker below.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gunicorn_worker import StallBoundWorker  # noqa: E402


wsgi_app = "wsgi:application"
bind = os.environ.get("KINTO_BIND", "localhost:8888")

# Threads: uploads and downloads wait on the network and the disk, not on Python. With the
# memory backend (config/kinto.ini) keep one worker: each worker would have its own data.
# With PostgreSQL, add workers up to the number of cores.
workers = int(os.environ.get("KINTO_WORKERS", "1"))


def on_starting(server):
    """wsgi.py refuses to serve the memory backend from several processes (each would delete
    the files of the others): tell it how many, as finally configured (--workers included)."""
    os.environ["KINTO_PROCESSES"] = str(server.cfg.workers)


def nworkers_changed(server, new_value, old_value):
    """Workers added while gunicorn runs (``kill -TTIN``): never a second one on the memory
    backend, which would serve a data set of its own (an upload seen by one worker only);
    the count is put back to one, and said. (A new worker told the count would refuse to
    boot, and gunicorn would stop: the running one is kept instead.)"""
    if old_value is not None and new_value > 1 and _memory_backend():
        server.log.error(
            "The memory backend runs in one worker (each would have its own data): "
            "%s workers refused, 1 kept. Use PostgreSQL to run several.",
            new_value,
        )
        server._num_workers = 1  # The property would call this hook again.


def _memory_backend():
    """Whether the served configuration (``KINTO_INI``, Kinto's variables) keeps its records
    in Kinto's memory backend."""
    from pyramid.paster import get_appsettings

    ini = os.environ.get("KINTO_INI") or os.path.join(os.path.dirname(__file__), "kinto.ini")
    backend = os.environ.get("KINTO_STORAGE_BACKEND") or get_appsettings(ini, "main").get(
        "kinto.storage_backend", ""
    )
    return backend.strip() in ("", MEMORY)  # Kinto's default: the memory backend.


MEMORY = "kinto.core.storage.memory"


# A request holds a thread from its whole head to its answer (idle connections and slow heads
# hold none: see below); 32 leave room for that many uploads at once.
threads = 32
# Slow and idle clients (docs/security.rst): gthread made to withstand them
# (config/gunicorn_worker.py). Request heads are gathered without a thread and must arrive whole
# within stall_timeout seconds; a body read that waits stall_timeout seconds for a byte ends the
# request (400, nothing stored), and so does an answer the client stops taking for as long. No
# request is bounded as a whole: a 2 GiB upload goes through at any speed while it makes
# progress. KINTO_STALL_TIMEOUT sets it.
stall_timeout = int(os.environ.get("KINTO_STALL_TIMEOUT", "30"))
worker_class = StallBoundWorker.configured(stall_timeout)
# Connections at once per worker, idle ones included (gunicorn's default, written to be seen).
worker_connections = 1000
# Seconds a kept-alive connection may wait for its next request.
keepalive = 5
# Seconds the worker's event loop may stay silent before the master restarts the worker: it
# bounds no request (gthread's requests run in threads the master does not watch).
timeout = 30
graceful_timeout = 30
# Request line and headers only: bodies are bounded by kinto.attachment.max_size_bytes.
limit_request_line = 8190
limit_request_field_size = 16380
# The per-request log is Kinto's own (request.summary); gunicorn's access log would repeat it.
accesslog = None
errorlog = "-"
