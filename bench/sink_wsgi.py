"""The reference app (``bench/reference.py``: hash, write, fsync, nothing parsed) for the
streaming servers, which take a module: the raw sink of gunicorn and uWSGI, the bound of our
uploads under each. ``SINK_DIR`` is where it writes; with ``SINK_FLOOR=1`` it writes nothing,
only reads the body (``--floor``): each server's read-only floor. Under uWSGI it answers ``Expect:
100-continue`` as the plugin does (``kinto_attachment.web.streams``): else curl waits a second."""

import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reference import make_app  # noqa: E402

from kinto_attachment.web.streams import continue_under_uwsgi  # noqa: E402


sink = make_app(os.environ["SINK_DIR"], floor=os.environ.get("SINK_FLOOR") == "1")


def application(environ, start_response):
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is not None:
        continue_under_uwsgi(uwsgi, environ)
    return sink(environ, start_response)
