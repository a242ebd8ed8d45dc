"""The pace of a transfer, and the hashing of a file: what uploads and downloads share."""

import hashlib
import time


#: Bytes read from a file or a response at a time.
CHUNK = 1024 * 1024


class Pace:
    """At most ``rate`` bytes a second (no limit when ``rate`` is None): call :meth:`passed`
    with each chunk's size, it sleeps while the transfer is ahead of the rate. ``done``: the
    bytes passed so far.

    A transfer that fell behind (a server's answer, a retry's wait) may catch up on
    :data:`CATCH_UP_SECONDS` at most: it never bursts for longer."""

    def __init__(self, rate=None):
        self._rate, self._started, self.done = rate, time.monotonic(), 0

    def passed(self, size):
        if not self._rate:
            self.done += size
            return
        behind = time.monotonic() - self._started - self.done / self._rate
        self._started += max(0.0, behind - CATCH_UP_SECONDS)
        self.done += size
        time.sleep(max(0.0, self.done / self._rate - (time.monotonic() - self._started)))


#: How far behind its rate a paced transfer may be, in seconds of transfer.
CATCH_UP_SECONDS = 1.0


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
