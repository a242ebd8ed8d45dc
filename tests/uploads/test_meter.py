"""The meter of every upload: each byte counted and hashed once, large chunks on a hashing
thread, in order, and a buffer the caller reuses only once it is hashed."""

import hashlib
import multiprocessing
import threading
import time

from kinto_attachment.uploads.meter import HASH_BEHIND_MIN, Meter


def test_meter_feeds_every_hash_from_an_offset():
    extra = hashlib.md5()
    meter = Meter(size=10, also=[extra])
    assert list(meter.measured([b"ab", b"c"])) == [b"ab", b"c"]
    assert meter.size == 13
    assert meter.sha256.hexdigest() == hashlib.sha256(b"abc").hexdigest()
    assert extra.hexdigest() == hashlib.md5(b"abc").hexdigest()


class Recorder:
    """A hash that also notes which thread each chunk was hashed on."""

    def __init__(self):
        self.digest = hashlib.sha256()
        self.threads = []

    def update(self, chunk):
        self.threads.append(threading.current_thread().name)
        self.digest.update(chunk)


LARGE = HASH_BEHIND_MIN


def test_hashing_behind_keeps_the_order_and_waits_for_the_last_chunk():
    parts = [bytes([i]) * (LARGE + i) if i % 3 else b"small %d" % i for i in range(40)]
    extra, recorder = hashlib.md5(), Recorder()
    meter = Meter(sha256=recorder, also=[extra])
    assert list(meter.measured(parts)) == parts
    meter.settle()
    assert extra.hexdigest() == hashlib.md5(b"".join(parts)).hexdigest()
    assert meter.sha256.digest.hexdigest() == hashlib.sha256(b"".join(parts)).hexdigest()
    assert meter.size == sum(map(len, parts))
    hashed_behind = [name.startswith("attachment-hash") for name in recorder.threads]
    assert hashed_behind == [len(part) >= LARGE for part in parts]


def test_chunks_that_may_change_or_are_small_are_hashed_at_once():
    recorder = Recorder()
    meter = Meter(sha256=recorder)
    buffer = bytearray(b"a" * LARGE)
    meter.feed(buffer)
    meter.feed(memoryview(buffer))
    buffer[:] = b"b" * LARGE  # A reader reusing its buffer: what was fed was hashed already.
    meter.feed(memoryview(b"c" * (LARGE + 1))[1:])  # A view of bytes cannot change: behind.
    expected = b"a" * 2 * LARGE + b"c" * LARGE
    assert meter.sha256.digest.hexdigest() == hashlib.sha256(expected).hexdigest()
    assert [name.startswith("attachment-hash") for name in recorder.threads] == [
        False,
        False,
        True,
    ]

    small = Recorder()
    Meter(sha256=small).feed(b"x" * (LARGE - 1))
    assert small.threads == [threading.current_thread().name]


class SlowRecorder:
    """A hash that takes its time before it reads a chunk, and notes what it read where."""

    def __init__(self):
        self.seen = []

    def update(self, chunk):
        time.sleep(0.05)
        self.seen.append((threading.current_thread().name, bytes(chunk)))


def test_a_held_buffer_is_hashed_behind_and_before_the_next_is_taken():
    """A store that reads into two buffers in turn feeds each as held: hashed on a hashing
    thread, and done with before the next feed returns, when the store may reuse it."""
    slow = SlowRecorder()
    meter = Meter(also=[slow])
    first, second = bytearray(b"a" * LARGE), bytearray(b"b" * LARGE)
    meter.update(memoryview(first))
    meter.update(memoryview(second))
    first[:] = b"c" * LARGE  # Reused: its hash must be over.
    meter.update(memoryview(first))
    meter.settle()
    expected = [b"a" * LARGE, b"b" * LARGE, b"c" * LARGE]
    assert [content for _, content in slow.seen] == expected
    assert all(name.startswith("attachment-hash") for name, _ in slow.seen)
    assert meter.sha256.hexdigest() == hashlib.sha256(b"".join(expected)).hexdigest()


def _hash_behind_in_child(pipe):
    meter = Meter()
    meter.feed(b"z" * LARGE)
    pipe.send(meter.sha256.hexdigest())


def test_a_forked_worker_hashes_behind_with_threads_of_its_own():
    """A forking server (gunicorn, uWSGI) forks after the app is loaded: had the parent
    hashed already, the child would inherit its executor without its threads and wait for
    them forever."""
    Meter().feed(b"y" * LARGE)  # The parent's threads exist.
    context = multiprocessing.get_context("fork")
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(target=_hash_behind_in_child, args=(sending,))
    child.start()
    try:
        assert receiving.poll(30), "the child never finished hashing"
        assert receiving.recv() == hashlib.sha256(b"z" * LARGE).hexdigest()
    finally:
        child.join(30)
        if child.is_alive():  # pragma: no cover (only when the test fails)
            child.kill()
    assert child.exitcode == 0
