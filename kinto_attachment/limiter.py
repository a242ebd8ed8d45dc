"""A process-wide byte budget for ``/data/files`` transfers (SlimFaas's transfer limiter).

Each upload and download reserves its size for as long as it runs. One that would take the
budget over waits until enough is released; one larger than the whole budget runs only when
nothing else does, so that it cannot starve. Waiters are served in arrival order.
"""

import collections
import contextlib
import threading


class TransferLimiter:
    def __init__(self, budget):
        self.budget = budget
        self.in_use = 0
        self._queue = collections.deque()
        self._condition = threading.Condition()

    @property
    def waiting(self):
        with self._condition:
            return len(self._queue)

    def _fits(self, size):
        return self.in_use == 0 or self.in_use + size <= self.budget

    def acquire(self, size):
        with self._condition:
            ticket = object()
            self._queue.append(ticket)
            # Fairness: only the oldest waiter may go, so a big transfer is not overtaken forever.
            self._condition.wait_for(lambda: self._queue[0] is ticket and self._fits(size))
            self._queue.popleft()
            self.in_use += size
            self._condition.notify_all()

    def release(self, size):
        with self._condition:
            self.in_use -= size
            self._condition.notify_all()

    @contextlib.contextmanager
    def reserve(self, size):
        self.acquire(size)
        try:
            yield
        finally:
            self.release(size)

    def wait_until_waiting(self, count, timeout=10):
        """Block until ``count`` transfers wait (for tests: no sleeping)."""
        with self._condition:
            return self._condition.wait_for(lambda: len(self._queue) >= count, timeout)

    def holding(self, size, iterable):
        """An iterable that holds ``size`` bytes of budget (already acquired) until closed.

        For response bodies: a WSGI server closes the body when it is sent or when the client
        goes away (PEP 3333), and either way the budget is given back, exactly once.
        """
        return _Holding(self, size, iterable)


class _Holding:
    def __init__(self, limiter, size, iterable):
        self._limiter = limiter
        self._size = size
        self._iterable = iterable
        self._iterator = iter(iterable)
        self._held = True

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._iterator)
        except BaseException:
            self.close()
            raise

    def close(self):
        if self._held:
            self._held = False
            try:
                close = getattr(self._iterable, "close", None)
                if close is not None:
                    close()
            finally:
                self._limiter.release(self._size)
