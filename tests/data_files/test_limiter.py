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


def test_a_download_under_the_pace_gives_its_budget_back_one_at_it_keeps_it():
    """Idleness alone did not bound a hold: a client taking a few bytes just before each
    ``idle_seconds`` kept the whole budget for as long as its file lasted at that pace
    (found by review, 2026-12-06: 8 KiB every 29 s held a 256 MiB budget for days). Over
    each period of ``idle_seconds``, a transfer moves ``min_rate`` bytes a second or lets
    its budget go; one at pace keeps it period after period."""
    clock = Clock()
    limiter = TransferLimiter(100, wait_seconds=0, idle_seconds=30, min_rate=10, clock=clock)
    steady = limiter.holding(limiter.acquire(50, idle_release=True), io.BytesIO(b"s" * 10_000))
    slow = limiter.holding(limiter.acquire(50, idle_release=True), io.BytesIO(b"c" * 10_000))
    in_use = []
    for _ in range(20):  # Five minutes: 300 bytes each 15 s for one, 100 for the other.
        assert len(steady.read(300)) == 300  # (Counted once the next read begins.)
        if len(in_use) < 2:
            assert len(slow.read(100)) == 100
        clock.now += 15
        with pytest.raises(Busy):  # The steady one's 50 and 51 are over the budget.
            limiter.acquire(51)
        in_use.append(limiter.in_use)
    assert in_use == [100] + [50] * 19  # The slow one's 50 went at its first period's end.
    assert slow.read(1) == b"c"  # Served on, outside of the budget.
    clock.now += 1000  # Idle now: the steady one goes too.
    other = limiter.acquire(100)
    steady.close(), slow.close()
    assert limiter.in_use == 100
    other.release()


def test_any_pace_keeps_a_hold_without_a_minimum_rate():
    clock = Clock()
    limiter = TransferLimiter(100, wait_seconds=0, idle_seconds=30, clock=clock)
    body = limiter.holding(limiter.acquire(100, idle_release=True), io.BytesIO(b"x" * 100))
    for _ in range(20):
        assert body.read(1) == b"x"
        clock.now += 29
        with pytest.raises(Busy):
            limiter.acquire(1)
    body.close()
    assert limiter.in_use == 0


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
