"""The transfer limiter's pace check (``transfer_min_bytes_per_second`` over periods of
``transfer_idle_seconds``): attacks of a review of the fix (2026-12-06). ``test_held_*``: held
against it; the others were findings, fixed."""

import io
import threading
import time

import pytest
from pyramid.exceptions import ConfigurationError
from waitress.buffers import ReadOnlyFileBasedBuffer

from kinto_attachment import settings as attachment_settings
from kinto_attachment.data_files.limiter import Busy, TransferLimiter


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_bytes_waitress_reads_then_puts_back_are_not_counted_as_moved():
    """Found by a review of a fix (2026-12-06). Fixed: what lies before each read is counted,
    once. Attack: waitress sends a ``wsgi.file_wrapper`` file from its loop with
    ``ReadOnlyFileBasedBuffer.get(sendbuf_len)``, which *reads* a whole send buffer, then
    seeks back, and ``skip``s only what the socket took; a socket that takes nothing ends the
    round after a second ``get``. ``_HeldFile.read`` counts every byte read as moved ("the
    server sends it before it reads again"): a client taking 100 bytes a round is counted
    for 2 x 16 KiB. The pace check must count what the client took, not what was re-read."""
    limiter = TransferLimiter(10**9, idle_seconds=30, min_rate=64 * 1024, clock=Clock())
    hold = limiter.acquire(10**6, idle_release=True)
    body = limiter.holding(hold, io.BytesIO(b"x" * 10**6))
    buffer = ReadOnlyFileBasedBuffer(body)
    buffer.prepare()
    sendbuf_len, taken = 16384, 0
    for _ in range(10):  # Ten writable rounds of waitress's _flush_some.
        chunk = buffer.get(sendbuf_len)
        buffer.skip(100, True)  # The socket took 100 bytes.
        taken += 100
        buffer.get(sendbuf_len)  # The next send() would block: the round ends.
        assert chunk
    assert hold.moved <= taken + sendbuf_len, (hold.moved, taken)


def test_a_min_rate_too_large_for_a_float_is_a_configuration_error():
    """Found by a review of a fix (2026-12-06): ``transfer_min_bytes_per_second`` (and
    ``transfer_budget_bytes``) has no maximum; a value past a float's range stopped start-up
    with an ``OverflowError``. It names the setting now, as any malformed one."""
    with pytest.raises(ConfigurationError, match="transfer_min_bytes_per_second"):
        attachment_settings.parse(
            {
                "attachment.base_path": "/tmp/files",
                "attachment.data_files.transfer_min_bytes_per_second": "1" + "0" * 400,
            }
        )


def test_held_a_huge_min_rate_releases_at_the_period_end_without_error():
    """Attack: a min rate near a float's limit (``min_rate * elapsed`` overflows to inf):
    the hold is released at its period's end, no exception in the waiter."""
    clock = Clock()
    limiter = TransferLimiter(100, wait_seconds=0, idle_seconds=30, min_rate=10**308, clock=clock)
    body = limiter.holding(limiter.acquire(100, idle_release=True), io.BytesIO(b"x" * 1000))
    body.read(500)
    clock.now += 29
    with pytest.raises(Busy):
        limiter.acquire(1)
    clock.now += 1
    body.read(1)
    limiter.acquire(100).release()
    body.close()
    assert limiter.in_use == 0


def test_held_min_rate_zero_still_releases_idle_holds_and_keeps_others():
    """Attack: ``min_rate = 0`` (any pace) must not disable the idle release, nor take back
    holds that are not ``idle_release`` (uploads under waitress, served whole)."""
    clock = Clock()
    limiter = TransferLimiter(100, wait_seconds=0, idle_seconds=30, min_rate=0, clock=clock)
    idle = limiter.acquire(50, idle_release=True)
    kept = limiter.acquire(50)
    clock.now += 31
    with pytest.raises(Busy):
        limiter.acquire(51)
    assert idle.released and not kept.released
    limiter.acquire(50).release()
    kept.release()
    assert limiter.in_use == 0


def test_held_a_waiter_is_admitted_when_a_crawling_hold_ends_its_period_without_spinning():
    """Attack: the waiter's wake-ups (``_next_check``) with a hold that keeps touching
    (never idle) but crawls: the waiter must wake at the period's end, find it too slow and
    go, without spinning (a bounded number of rounds) and long before its timeout."""
    limiter = TransferLimiter(100, idle_seconds=0.3, min_rate=10**6)
    hold = limiter.acquire(100, idle_release=True)
    stop = threading.Event()

    def crawl():
        while not stop.is_set():
            hold.touch(1)
            time.sleep(0.01)

    crawler = threading.Thread(target=crawl, daemon=True)
    crawler.start()
    rounds = []
    original = limiter._next_check

    def counted(deadline):
        rounds.append(1)
        return original(deadline)

    limiter._next_check = counted
    started = time.monotonic()
    try:
        limiter.acquire(100, timeout=20).release()
    finally:
        stop.set()
        crawler.join(10)
    assert time.monotonic() - started < 5
    assert len(rounds) < 100, len(rounds)
    assert hold.released and limiter.in_use == 0


def test_held_a_hold_at_pace_is_kept_period_after_period_by_a_waiting_transfer():
    """Attack: a hold moving well over ``min_rate``, touched from its own thread while
    another thread waits for budget (reaping each round): never taken back, the waiter gets
    ``Busy``; the budget's count stays exact."""
    limiter = TransferLimiter(100, idle_seconds=0.2, min_rate=1000)
    hold = limiter.acquire(100, idle_release=True)
    stop = threading.Event()

    def fast():
        while not stop.is_set():
            hold.touch(10_000)
            time.sleep(0.005)

    mover = threading.Thread(target=fast, daemon=True)
    mover.start()
    try:
        with pytest.raises(Busy):
            limiter.acquire(1, timeout=1.5)
    finally:
        stop.set()
        mover.join(10)
    assert not hold.released and limiter.in_use == 100
    hold.release()
    hold.release()
    assert limiter.in_use == 0


def test_held_touches_racing_releases_keep_the_budget_exact():
    """Attack: transfer threads touching and closing their files while others reap them as
    idle or slow: the budget ends at 0, never below, each hold released once."""
    limiter = TransferLimiter(1000, idle_seconds=0.01, min_rate=10**9)
    errors = []

    def transfer():
        try:
            for _ in range(200):
                try:
                    hold = limiter.acquire(300, timeout=1, idle_release=True)
                except Busy:
                    continue
                body = limiter.holding(hold, io.BytesIO(b"y" * 64))
                while body.read(8):
                    pass
                body.close()
                assert limiter.in_use >= 0
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=transfer, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert limiter.in_use == 0 and not limiter._holds


PACE = {
    "KINTO_ATTACHMENT_DATA_FILES_TRANSFER_BUDGET_BYTES": str(8 * 1024 * 1024),
    "KINTO_ATTACHMENT_DATA_FILES_TRANSFER_IDLE_SECONDS": "2",
    "KINTO_ATTACHMENT_DATA_FILES_TRANSFER_WAIT_SECONDS": "4",
    "KINTO_ATTACHMENT_DATA_FILES_TRANSFER_MIN_BYTES_PER_SECOND": "65536",
}
