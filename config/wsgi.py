"""WSGI entry of Kinto with kinto_attachment, for servers that take a module (gunicorn, uWSGI).

``KINTO_INI`` names the configuration (default: ``kinto.ini`` beside this file); its
``[server:main]`` section is waitress's and is not read here: each server has its own
configuration (``gunicorn.conf.py``, ``uwsgi.ini``). Logging is set up from the same file.
"""

import os

from pyramid.paster import get_app, setup_logging


CONFIG = os.environ.get("KINTO_INI") or os.path.join(os.path.dirname(__file__), "kinto.ini")

setup_logging(CONFIG)
application = get_app(CONFIG, "main")
