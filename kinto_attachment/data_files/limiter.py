"""A process-wide byte budget for ``/data/files`` transfers (SlimFaas's transfer limiter).

Each upload and download reserves its size for as long as it runs. One that would take the
budget over waits until enough is released; one larger than the whole budget runs only when
nothing else does, so that it cannot starve. Waiters are served in arrival order.

Nothing waits or holds forever, since a waiting transfer occupies a server thread that the
rest of the API needs: a transfer gives up after ``wait_seconds`` (:class:`Busy`, a 503 for the
client), and a transfer whose client sent or pulled nothing for ``idle_seconds``, or less than
``min_rate`` bytes a second over such a period, loses its reservation (checked by whoever waits
for budget, so no watchdog thread is needed). Idleness alone did not bound a hold: a client
taking a few bytes just before each ``idle_seconds`` kept the whole budget for as long as its
file lasted at that pace (days), every other transfer refused meanwhile. A transfer that loses
its reservation still runs to its end, outside of the budget.
"""

import collections
import contextlib
import logging
import math
import threading
import time

from ..web import streams


logger = logging.getLogger(__name__)


class Busy(Exception):
    """No budget became free within the allowed wait."""


class Hold:
    """``size`` bytes of budget, held until :meth:`release` (idempotent)."""

    def __init__(self, limiter, size, idle_release):
        self._limiter = limiter
        self.size = size
        #: Whether the limiter may take the budget back from this hold when it idles or crawls.
        self.idle_release = idle_release
        self.active_at = limiter.clock()
        #: Bytes moved so far: written by the transfer's thread alone.
        self.moved = 0
        #: When the current period of the pace check began, and ``moved`` then: written by
        #: the limiter alone (under its lock), so that no count is lost between the two.
        self.period_start, self.period_mark = self.active_at, 0
        self.released = False

    def touch(self, count=0):
        """The transfer moved ``count`` bytes (0: it is at work, reading or writing)."""
        self.moved += count
        self.active_at = self._limiter.clock()

    def release(self):
        self._limiter._release(self)


class TransferLimiter:
    def __init__(
        self, budget, wait_seconds=None, idle_seconds=None, min_rate=0, clock=time.monotonic
    ):
        self.budget = budget
        #: Default wait of :meth:`acquire`; None waits for as long as it takes.
        self.wait_seconds = wait_seconds
        #: Idle time after which a transfer's hold is taken back; None never. Also the
        #: period over which its pace is measured.
        self.idle_seconds = idle_seconds
        #: Bytes a second a transfer moves at least, over each ``idle_seconds``, to keep its
        #: hold; 0: any pace.
        self.min_rate = min_rate
        self.clock = clock
        self.in_use = 0
        self._holds = set()
        self._queue = collections.deque()
        self._condition = threading.Condition()

    @property
    def waiting(self):
        with self._condition:
            return len(self._queue)

    def _fits(self, size):
        return self.in_use == 0 or self.in_use + size <= self.budget

    def acquire(self, size, timeout=None, idle_release=False):
        """A :class:`Hold` of ``size`` bytes; :class:`Busy` after ``timeout`` seconds
        (``wait_seconds`` when not given) without enough budget."""
        timeout = self.wait_seconds if timeout is None else timeout
        # An endless timeout is none (``Condition.wait`` refuses an infinite one).
        endless = timeout is None or not math.isfinite(timeout)
        deadline = None if endless else self.clock() + timeout
        with self._condition:
            ticket = object()
            self._queue.append(ticket)
            try:
                # Fairness: only the oldest waiter may go, so a big transfer is not overtaken.
                while True:
                    self._reap_stalled()
                    if self._queue[0] is ticket and self._fits(size):
                        break
                    slice_ = self._next_check(deadline)
                    if slice_ is not None and slice_ <= 0:
                        raise Busy()
                    self._condition.wait(slice_)
            finally:
                self._queue.remove(ticket)
                self._condition.notify_all()
            hold = Hold(self, size, idle_release)
            self._holds.add(hold)
            self.in_use += size
            return hold

    def _next_check(self, deadline):
        """Seconds to wait before looking again (until the deadline, or the next moment a
        hold may be found idle or too slow)."""
        now = self.clock()
        candidates = []
        if deadline is not None:
            candidates.append(deadline - now)
        if self.idle_seconds is not None:
            due = [
                min(h.active_at, h.period_start) + self.idle_seconds - now
                for h in self._holds
                if h.idle_release
            ]
            if due:
                # Never 0 here: a hold that is due is looked at by the next round anyway.
                candidates.append(max(min(due), 0.01))
        return min(candidates) if candidates else None

    def _reap_stalled(self):
        """Take back the holds of transfers idle for ``idle_seconds``, or slower than
        ``min_rate`` over the period of at least ``idle_seconds`` that has just ended (a
        transfer at pace begins the next)."""
        if self.idle_seconds is None:
            return
        now = self.clock()
        for hold in [h for h in self._holds if h.idle_release]:
            if hold.active_at <= now - self.idle_seconds:
                logger.warning(
                    "A transfer of %s bytes was idle for %ss: its budget is released",
                    hold.size,
                    self.idle_seconds,
                )
                self._release_locked(hold)
                continue
            elapsed = now - hold.period_start
            if elapsed < self.idle_seconds:
                continue
            moved = hold.moved - hold.period_mark
            if moved < self.min_rate * elapsed:
                logger.warning(
                    "A transfer of %s bytes moved %s bytes in %.0fs, under %s a second: its "
                    "budget is released",
                    hold.size,
                    moved,
                    elapsed,
                    self.min_rate,
                )
                self._release_locked(hold)
                continue
            hold.period_start, hold.period_mark = now, hold.moved

    def _release(self, hold):
        with self._condition:
            self._release_locked(hold)

    def _release_locked(self, hold):
        if not hold.released:
            hold.released = True
            self._holds.discard(hold)
            self.in_use -= hold.size
            self._condition.notify_all()

    @contextlib.contextmanager
    def reserve(self, size, timeout=None):
        hold = self.acquire(size, timeout)
        try:
            yield hold
        finally:
            hold.release()

    def wait_until_waiting(self, count, timeout=10):
        """Block until ``count`` transfers wait (for tests: no sleeping)."""
        with self._condition:
            return self._condition.wait_for(lambda: len(self._queue) >= count, timeout)

    def holding(self, hold, file):
        """A file reading ``file`` that keeps ``hold`` (acquired with ``idle_release``) until
        closed.

        For response bodies: a WSGI server closes the body when it is sent or when the client
        goes away (PEP 3333), and either way the budget is given back, exactly once. Each read
        marks the hold as active and counts its bytes. A file, not an iterator: waitress sends
        a file it is given through ``wsgi.file_wrapper`` from its own loop, where a body that
        the client does not read holds no thread.
        """
        return _HeldFile(hold, file)


class _HeldFile(streams.WatchedFile):
    """Counts what its client took: the bytes before each read, which a server reads in
    order, a block again until it was sent (waitress reads a block, seeks back, and skips
    what its socket took: counting what it read counted each block hundreds of times for a
    client taking a few bytes of it)."""

    def __init__(self, hold, file):
        super().__init__(file)
        self._hold = hold
        self.closed = False
        self._read = 0  # Bytes read, where the file cannot tell its position.
        self._sent = None  # The position before which every byte was sent.

    def read(self, size=-1):
        self._hold.touch(self._progress())
        try:
            data = super().read(size)
        except BaseException:
            self.close()
            raise
        self._read += len(data)
        self._hold.touch()  # Reading the chunk (from S3...) may itself have taken a while.
        return data

    def _progress(self):
        seekable = getattr(self._file, "seekable", None)
        position = self.tell() if seekable is not None and seekable() else self._read
        if self._sent is None:  # Where the body begins (a range's start).
            self._sent = position
        moved, self._sent = max(0, position - self._sent), max(self._sent, position)
        return moved

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                super().close()
            finally:
                self._hold.release()
