"""``config/wsgi.py``'s application, telling on stderr how much of each body the app read.

The streaming servers' tests run it (``counting_wsgi:application``) to check that a request
refused before its body (authentication, ``Content-Length`` over the limit) reads none of it.
"""

import runpy
import sys
from pathlib import Path


APP = runpy.run_path(str(Path(__file__).resolve().parents[2] / "config" / "wsgi.py"))[
    "application"
]


class Counted:
    """``wsgi.input``, counting the bytes read through it."""

    def __init__(self, stream):
        self._stream = stream
        self.read_bytes = 0

    def read(self, *args):
        data = self._stream.read(*args)
        self.read_bytes += len(data)
        return data

    def readline(self, *args):
        data = self._stream.readline(*args)
        self.read_bytes += len(data)
        return data


def application(environ, start_response):
    counted = Counted(environ["wsgi.input"])
    environ["wsgi.input"] = counted
    try:
        return APP(environ, start_response)
    finally:
        line = f"body-read {counted.read_bytes} {environ['REQUEST_METHOD']} {environ['PATH_INFO']}"
        print(line, file=sys.stderr, flush=True)
