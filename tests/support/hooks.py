"""TEST ONLY: pause points in a live server, to kill it at a chosen moment.

Included by the live crash tests' ini files (``kinto.includes = ... tests.support.hooks``, with the
repository root on the server's ``PYTHONPATH``), never by a shipped configuration. It does
nothing unless ``KINTO_ATTACHMENT_TEST_PAUSE_DIR`` names a folder in the server's environment;
then each request looks for two files there:

``pause``
    When the request's transaction is about to commit (a ``transaction`` before-commit hook:
    an upload that ends its first transaction before its body hands its hooks to the next,
    :func:`kinto_attachment.state.long_transactions.end_before_body`),
    it creates ``paused-<pid>`` (or adds a line to it: one per request paused) and waits until
    ``pause`` is removed. The blob is stored, the
    record, its link and the locks are written but not committed: a ``kill -9`` now is a
    crash between the store and the database.

``pause-body`` (holding a number of bytes N)
    Once the view has read N bytes of the request body, the request creates
    ``paused-body-<pid>`` and waits until ``pause-body`` is removed: a staged file (or an S3
    multipart upload) is then half written.
"""

import os
import time


ENV = "KINTO_ATTACHMENT_TEST_PAUSE_DIR"
COMMIT_FLAG = "pause"
BODY_FLAG = "pause-body"
POLL_SECONDS = 0.02
#: Marks a transaction that already has our hook (subrequests share their parent's).
_HOOKED = "tests.support.hooks.before-commit"


def _wait_while(path):
    while os.path.exists(path):
        time.sleep(POLL_SECONDS)


def _announce(folder, name):
    """Create ``name-<pid>``, with one line per request paused so far."""
    with open(os.path.join(folder, f"{name}-{os.getpid()}"), "a") as f:
        f.write("paused\n")


def _before_commit(folder):
    flag = os.path.join(folder, COMMIT_FLAG)
    if os.path.exists(flag):
        _announce(folder, "paused")
        _wait_while(flag)


class PausingInput:
    """``wsgi.input``, paused once ``after`` bytes have been read from it."""

    def __init__(self, stream, after, folder):
        self._stream = stream
        self._after = after
        self._folder = folder
        self._read = 0
        self._paused = False

    def read(self, size=-1):
        data = self._stream.read(size)
        self._read += len(data)
        if not self._paused and self._read >= self._after:
            self._paused = True
            _announce(self._folder, "paused-body")
            _wait_while(os.path.join(self._folder, BODY_FLAG))
        return data

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _pause_body(request, folder):
    try:
        with open(os.path.join(folder, BODY_FLAG)) as f:
            after = int(f.read().strip() or 0)
    except FileNotFoundError:
        return
    request.environ["wsgi.input"] = PausingInput(request.environ["wsgi.input"], after, folder)


def _on_new_request(folder):
    def subscriber(event):
        request = event.request
        txn = request.tm.get()
        try:
            txn.data(_HOOKED)
        except KeyError:
            txn.set_data(_HOOKED, True)
            txn.addBeforeCommitHook(_before_commit, args=(folder,))
            _pause_body(request, folder)

    return subscriber


def includeme(config):
    from pyramid.events import NewRequest

    folder = os.environ.get(ENV)
    if folder:
        config.add_subscriber(_on_new_request(folder), NewRequest)
