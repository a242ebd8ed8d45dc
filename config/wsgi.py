"""WSGI entry of Kinto with kinto_attachment, for servers that take a module (gunicorn, uWSGI).

``KINTO_INI`` names the configuration (default: ``kinto.ini`` beside this file); its
``[server:main]`` section is waitress's and is not read here: each server has its own
configuration (``gunicorn.conf.py``, ``uwsgi.ini``). Logging is set up from the same file.
"""

import os

from kinto.core.storage import memory
from pyramid.paster import get_app, setup_logging


CONFIG = os.environ.get("KINTO_INI") or os.path.join(os.path.dirname(__file__), "kinto.ini")
#: Why several processes cannot serve the memory backend.
SEVERAL_PROCESSES = (
    "{config} keeps its records in Kinto's memory storage backend, in each process: served by "
    "{count} processes, each would have records of its own and take the files of the others "
    "for orphans (its garbage collector deletes them). Serve it with one process, or use "
    "PostgreSQL (config/postgresql.ini)."
)


def processes():
    """How many processes serve the app: uWSGI's ``processes``, or the number of workers
    ``gunicorn.conf.py`` passes on (``KINTO_PROCESSES``)."""
    try:
        import uwsgi
    except ImportError:
        return int(os.environ.get("KINTO_PROCESSES", "1"))
    return uwsgi.numproc


setup_logging(CONFIG)
application = get_app(CONFIG, "main")
if isinstance(application.registry.storage, memory.Storage) and processes() > 1:
    raise RuntimeError(SEVERAL_PROCESSES.format(config=CONFIG, count=processes()))
