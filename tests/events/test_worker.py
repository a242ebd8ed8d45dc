"""The example worker (``examples/worker/worker.py``, run as shipped) against a live server
sending its events to Redis: every record ends with the ``processing`` result of its current
version, and a redelivered event changes nothing."""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest
import requests

from ..support.live import ALICE, REQUEST_TIMEOUT, ROOT, create_collection, running_server
from .conftest import redis_events_for_live_servers


pytestmark = pytest.mark.live

WORKER = ROOT / "examples" / "worker" / "worker.py"
WORKER_AUTH = ("worker", "a-worker-password")
GROUP = "line-counter"
#: What the worker prints first on the line of each event it acknowledges.
OUTCOMES = {"processed", "skipped-done", "skipped-replaced", "skipped-gone", "skipped-other"}
WAIT = 60


def _contents():
    """Bodies of the records: a different number of lines each (r2 is replaced)."""
    bodies = {f"r{i}": b"".join(b"line %d\n" % n for n in range(i * 10 + 1)) for i in range(4)}
    return bodies, b"replacement\n" * 3 + os.urandom(100)


def _post(server, record, content):
    response = requests.post(
        f"{server.url}/buckets/blog/collections/articles/records/{record}/attachment",
        files={"attachment": (f"{record}.txt", content, "text/plain")},
        auth=ALICE,
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code in (200, 201), response.text


def _records(server):
    response = requests.get(
        f"{server.url}/buckets/blog/collections/articles/records", auth=ALICE, timeout=30
    )
    return {record["id"]: record for record in response.json()["data"]}


class WorkerProcess:
    """The worker in a process of its own; what it printed, line by line."""

    def __init__(self, folder, server, stream):
        self.log = folder / f"worker-{time.monotonic_ns()}.log"
        env = {
            **os.environ,
            "KINTO_URL": server.url,
            "KINTO_AUTH": ":".join(WORKER_AUTH),
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "EVENTS_STREAM": stream,
            "EVENTS_GROUP": GROUP,
        }
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER)],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=folder,
                env=env,
            )

    def lines(self):
        return self.log.read_text().splitlines()

    def handled(self):
        """The outcome of each event acknowledged, in order."""
        words = (line.split() for line in self.lines())
        return [first[0] for first in words if first[:1] and first[0] in OUTCOMES]

    def stop(self):
        self.process.terminate()
        self.process.wait(10)


def until(condition, what, worker):
    deadline = time.monotonic() + WAIT
    while not condition():
        assert worker.process.poll() is None, "the worker exited:\n" + "\n".join(worker.lines())
        assert time.monotonic() < deadline, f"{what} not within {WAIT} s:\n" + "\n".join(
            worker.lines()
        )
        time.sleep(0.2)


def test_the_example_worker_processes_every_version(tmp_path, monkeypatch, redis_stream):
    client, stream = redis_stream
    redis_events_for_live_servers(monkeypatch, stream)
    bodies, replacement = _contents()
    with running_server(tmp_path, http_host=True) as server:
        create_collection(server, "blog", "articles")
        worker_id = requests.get(server.url + "/", auth=WORKER_AUTH, timeout=30).json()["user"]
        collection = f"{server.url}/buckets/blog/collections/articles"
        granted = requests.patch(
            collection,
            json={"permissions": {"write": [worker_id["id"]]}},
            auth=ALICE,
            timeout=REQUEST_TIMEOUT,
        )
        assert granted.status_code == 200, granted.text
        for record, content in bodies.items():
            _post(server, record, content)
        worker = WorkerProcess(tmp_path, server, stream)
        try:
            _post(server, "r2", replacement)  # While the worker runs.
            bodies["r2"] = replacement

            def processed():
                records = _records(server)
                return len(records) == len(bodies) and all(
                    (r.get("processing") or {}).get("hash") == r["attachment"]["hash"]
                    for r in records.values()
                )

            until(processed, "every record's current version processed", worker)
            until(lambda: not client.xpending(stream, GROUP)["pending"], "every ack", worker)
            done = _records(server)
            for record, content in bodies.items():
                processing = done[record]["processing"]
                assert processing["hash"] == hashlib.sha256(content).hexdigest()
                assert processing["status"] == "done"
                assert processing["result"] == {
                    "bytes": len(content),
                    "lines": content.count(b"\n"),
                }

            # A redelivery: every event of the stream added again, as a dispatcher that was
            # killed before marking them delivered does (same ids).
            events = [fields for _, fields in client.xrange(stream)]
            # The worker prints an outcome after its ack: every line printed before counting.
            until(lambda: len(worker.handled()) >= len(events), "every outcome printed", worker)
            handled = len(worker.handled())
            assert handled == len(events), worker.lines()
            for fields in events:
                client.xadd(stream, fields)
            until(
                lambda: len(worker.handled()) >= handled + len(events),
                "the redelivered events handled",
                worker,
            )
            assert _records(server) == done  # Not even a last_modified changed.
            again = worker.handled()[handled:]
            assert set(again) <= {"skipped-done", "skipped-replaced"}, again
            first = [json.loads(fields[b"event"])["id"] for fields in events]
            assert len(set(first)) == len(bodies) + 1
        finally:
            worker.stop()
        client.xgroup_destroy(stream, GROUP)


def test_an_entry_trimmed_while_pending_is_acknowledged_not_a_crash(redis_stream, monkeypatch):
    """Found by review (2026-12-05).

    An entry that ``MAXLEN`` trimmed while it was pending with a crashed consumer comes back
    from ``XAUTOCLAIM`` with no fields on Redis 6.2 (7.0 lists it apart, as deleted): the
    worker read ``fields[b"event"]`` of None and died. It acknowledges it, with a warning.
    Redis 6.2's answer is made here from 7.0's (the deleted ids as entries without fields)."""
    client, stream = redis_stream
    spec = importlib.util.spec_from_file_location("example_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    worker = module.Worker("http://127.0.0.1:9", "", "redis://127.0.0.1:6379", stream, "g", "w")
    worker.ensure_group()
    entry = client.xadd(stream, {"event": "{}"})
    client.xreadgroup("g", "crashed", {stream: ">"})
    client.xdel(stream, entry)  # As MAXLEN trims it.
    real = worker.redis.xautoclaim

    def as_redis_6_2(name, group, consumer, min_idle_time, **kwargs):  # At once, not after 60 s.
        cursor, claimed, deleted = real(name, group, consumer, 0, **kwargs)
        return cursor, claimed + [(entry_id, None) for entry_id in deleted]

    monkeypatch.setattr(worker.redis, "xautoclaim", as_redis_6_2)
    worker.run(exit_when_idle=0.5)

    assert client.xpending(stream, "g")["pending"] == 0
