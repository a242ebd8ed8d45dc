"""The transfer limiter: bounded waits and idle holds. Threads and events; no timed asserts."""

import io
import threading

import pytest

from kinto_attachment.data_files.limiter import Busy, TransferLimiter


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def in_thread(function, *args, **kwargs):
    outcome = {}

    def run():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - reported to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_waiter_gives_up_after_its_timeout():
    limiter = TransferLimiter(100, wait_seconds=0.05)
    held = limiter.acquire(80)
    thread, outcome = in_thread(limiter.acquire, 50)
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), Busy)
    assert (limiter.in_use, limiter.waiting) == (80, 0)
    held.release()
    held.release()  # Idempotent.
    assert limiter.in_use == 0


def test_a_waiter_that_gives_up_lets_the_next_one_go():
    limiter = TransferLimiter(100)
    held = limiter.acquire(60)
    big, big_outcome = in_thread(limiter.acquire, 500, timeout=0.2)
    assert limiter.wait_until_waiting(1)
    small, small_outcome = in_thread(limiter.acquire, 30, timeout=30)
    assert limiter.wait_until_waiting(2)
    big.join(30)
    assert isinstance(big_outcome.get("error"), Busy)
    small.join(30)
    assert not small.is_alive() and "value" in small_outcome
    assert limiter.in_use == 90
    held.release()
    small_outcome["value"].release()
    assert limiter.in_use == 0


def test_a_transfer_larger_than_the_budget_is_admitted_alone():
    limiter = TransferLimiter(100, wait_seconds=0)
    big = limiter.acquire(500)
    with pytest.raises(Busy):
        limiter.acquire(1)
    big.release()
    with limiter.reserve(1), pytest.raises(Busy):
        limiter.acquire(500)
    assert limiter.in_use == 0


def test_an_idle_download_gives_its_budget_back():
    clock = Clock()
    limiter = TransferLimiter(100, wait_seconds=0, idle_seconds=30, clock=clock)
    stalled = limiter.acquire(80, idle_release=True)
    body = limiter.holding(stalled, io.BytesIO(b"ab"))
    upload = limiter.acquire(10)  # Not a download: never taken back.
    clock.now += 29
    with pytest.raises(Busy):
        limiter.acquire(50)
    assert body.read(1) == b"a"  # Reading is activity.
    clock.now += 29
    with pytest.raises(Busy):
        limiter.acquire(50)
    clock.now += 31
    other = limiter.acquire(50)
    assert limiter.in_use == 60
    assert body.read() == b"b"  # Served to its end, outside of the budget.
    body.close()
    assert limiter.in_use == 60
    clock.now += 1000
    upload_is_kept = limiter.in_use >= 10
    other.release()
    upload.release()
    assert upload_is_kept and limiter.in_use == 0


def test_a_waiter_is_admitted_when_a_stalled_download_idles_out():
    # Real clock: the waiter must notice, while it waits, that the holder went idle.
    limiter = TransferLimiter(100, idle_seconds=0.2)
    stalled = limiter.acquire(100, idle_release=True)
    thread, outcome = in_thread(limiter.acquire, 50, timeout=60)
    thread.join(60)
    assert not thread.is_alive() and "value" in outcome
    assert limiter.in_use == 50
    stalled.release()
    outcome["value"].release()
    assert limiter.in_use == 0


def test_closing_releases_once_even_if_the_body_fails():
    limiter = TransferLimiter(100)

    class Failing(io.BytesIO):
        def read(self, size=-1):
            if self.tell():
                raise OSError("disk")
            return super().read(1)

    body = limiter.holding(limiter.acquire(40, idle_release=True), Failing(b"xy"))
    assert body.read() == b"x"
    with pytest.raises(OSError):
        body.read()
    body.close()
    assert limiter.in_use == 0
