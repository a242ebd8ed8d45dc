"""Progress bars, one per file and one overall (bytes, rate, time left), drawn by ``rich``.

On a terminal only: when the output is a pipe or a file (a script, a cron job), nothing is
drawn and only the result lines are printed.
"""

import contextlib
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .names import shown


class Bars:
    """The bars of one command: :meth:`file` gives the callback of one transfer."""

    def __init__(self, total_bytes, console=None):
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.console.is_terminal,
        )
        self._overall = self._progress.add_task("total", total=total_bytes)

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    @contextlib.contextmanager
    def file(self, name, size, done=0):
        """``advance(nbytes)`` for the transfer of ``name``; ``done`` bytes are there already."""
        task = self._progress.add_task(shown(name), total=size, completed=done)
        self._progress.advance(self._overall, done)

        def advance(nbytes):
            self._progress.advance(task, nbytes)
            self._progress.advance(self._overall, nbytes)

        try:
            yield advance
        finally:
            self._progress.remove_task(task)

    def print(self, line):
        """A result line, above the bars (on stdout when they are not drawn), with what the
        server or the file system named escaped (see :func:`~.names.shown`)."""
        line = shown(line)
        if self.console.is_terminal:
            self._progress.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)


def report(what, error):
    """Say on stderr, in one line, that ``what`` failed and why; True (something failed)."""
    print(shown(f"kinto-attachment: {what}: {error}"), file=sys.stderr, flush=True)
    return True
