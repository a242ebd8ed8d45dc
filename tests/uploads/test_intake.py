"""The upload pipeline's own contract: a plan, then bytes metered into a staged blob that is
committed on success and aborted on any error, whatever the entry point."""

import hashlib
import multiprocessing
import threading
import time

import pytest
from pyramid.httpexceptions import HTTPException

from kinto_attachment.storage.local import LocalStore
from kinto_attachment.uploads import intake


def plan(**overrides):
    return intake.Plan(
        **{"key": "f/a.txt", "filename": "a.txt", "mimetype": "text/plain", **overrides}
    )


def leftovers(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_leaving_the_block_commits(tmp_path):
    store = LocalStore(str(tmp_path), fsync=False)
    with intake.Intake(store, plan()) as received:
        received.write(b"hello ")
        received.write(b"world")
    blob = received.blob
    assert (blob.key, blob.size, blob.mimetype) == ("f/a.txt", 11, "text/plain")
    assert blob.hash == hashlib.sha256(b"hello world").hexdigest()
    assert (tmp_path / "f" / "a.txt").read_bytes() == b"hello world"


def test_an_exception_aborts_and_goes_on(tmp_path):
    store = LocalStore(str(tmp_path), fsync=False)
    with pytest.raises(KeyError), intake.Intake(store, plan()) as received:
        received.write(b"partial")
        raise KeyError("refused")
    assert received.blob is None
    assert leftovers(tmp_path) == []


def test_the_size_limit_refuses_as_bytes_arrive(tmp_path):
    store = LocalStore(str(tmp_path), fsync=False)
    with pytest.raises(HTTPException) as error, intake.Intake(store, plan(max_size=4)) as received:
        received.write(b"1234")
        received.write(b"5")
    assert error.value.code == 413
    assert leftovers(tmp_path) == []


class FullDiskStore(LocalStore):
    """Stages as a local store does, but every commit fails as a full disk would."""

    aborted = 0

    def stage(self, key, content_type=None, random=False):
        staged = super().stage(key, content_type, random=random)
        store, abort = self, staged.abort

        def commit():
            raise OSError(28, "No space left on device")

        def counted_abort():
            store.aborted += 1
            abort()

        staged.commit, staged.abort = commit, counted_abort
        return staged


def test_a_failing_commit_aborts_and_is_a_503(tmp_path):
    store = FullDiskStore(str(tmp_path), fsync=False)
    with pytest.raises(HTTPException) as error, intake.Intake(store, plan()) as received:
        received.write(b"data")
    assert error.value.code == 503
    assert store.aborted == 1
    assert leftovers(tmp_path) == []


def test_meter_feeds_every_hash_from_an_offset():
    extra = hashlib.md5()
    meter = intake.Meter(size=10, also=[extra])
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


LARGE = intake.HASH_BEHIND_MIN


def test_hashing_behind_keeps_the_order_and_waits_for_the_last_chunk():
    parts = [bytes([i]) * (LARGE + i) if i % 3 else b"small %d" % i for i in range(40)]
    extra, recorder = hashlib.md5(), Recorder()
    meter = intake.Meter(sha256=recorder, also=[extra])
    assert list(meter.measured(parts)) == parts
    meter.settle()
    assert extra.hexdigest() == hashlib.md5(b"".join(parts)).hexdigest()
    assert meter.sha256.digest.hexdigest() == hashlib.sha256(b"".join(parts)).hexdigest()
    assert meter.size == sum(map(len, parts))
    hashed_behind = [name.startswith("attachment-hash") for name in recorder.threads]
    assert hashed_behind == [len(part) >= LARGE for part in parts]


def test_chunks_that_may_change_or_are_small_are_hashed_at_once():
    recorder = Recorder()
    meter = intake.Meter(sha256=recorder)
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
    intake.Meter(sha256=small).feed(b"x" * (LARGE - 1))
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
    meter = intake.Meter(also=[slow])
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
    meter = intake.Meter()
    meter.feed(b"z" * LARGE)
    pipe.send(meter.sha256.hexdigest())


def test_a_forked_worker_hashes_behind_with_threads_of_its_own():
    """A forking server (gunicorn, uWSGI) forks after the app is loaded: had the parent
    hashed already, the child would inherit its executor without its threads and wait for
    them forever."""
    intake.Meter().feed(b"y" * LARGE)  # The parent's threads exist.
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


@pytest.mark.parametrize(
    "texts,problem",
    [
        ({"data": "{"}, "data is not valid JSON"),
        ({"permissions": "[]"}, "permissions should be a JSON object."),
        ({"data": "[" * 100_000}, "data is nested too deeply."),
    ],
)
def test_record_fields_are_json_objects(texts, problem):
    def refuse(name, description):
        return ValueError(f"{name} {description}")

    with pytest.raises(ValueError, match=problem):
        intake.record_fields(texts, refuse)


def test_record_fields_ignore_other_texts():
    texts = {"data": '{"a": 1}', "filename": "x.txt"}
    assert intake.record_fields(texts, None) == {"data": {"a": 1}}
