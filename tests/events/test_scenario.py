"""The scenario of the events issue, live: two nodes on PostgreSQL send their events to Redis
(through a TCP proxy) while 8 clients make about 200 changes (multipart and tus uploads,
``/data/files`` POSTs, replacements, deletes, and uploads refused on purpose); one node is
killed (``kill -9``) and started again in the middle, and Redis is unreachable for a while.

Then, counting what was delivered against what was committed:

- every committed version (an upload or delete answered 2xx) is delivered at least once, and
  nothing of a refused upload;
- per subject, the events in delivery order (each id counted at its first delivery) are the
  committed changes in commit order; a change whose answer was lost with the killed node may
  or may not be among them, in its place;
- every ``url``, fetched (without credentials) as soon as its event is seen, serves bytes of
  the event's sha256, versions replaced right after included (the blobs events hold);
- once the fetch grace is over, the garbage collector leaves no blob behind: no orphan, no
  replaced blob waiting (:mod:`tests.support.invariants`).

Each client changes subjects of its own (records ``t{client}-r{n}`` and ``/data/files``
ids ``t{client}-f{n}``), one request at a time: the order of its answers is the commit order.
"""

import base64
import dataclasses
import functools
import hashlib
import json
import os
import random
import threading
import time
import uuid

import pytest
import requests

from ..live.test_live_concurrency import call, cluster_of, database, start_gc
from ..support import invariants
from ..support.live import ALICE, COMMAND_TIMEOUT, create_collection
from .conftest import REDIS, URL_SECRET


pytestmark = [pytest.mark.live, pytest.mark.postgresql]

CLIENTS = 8
OPERATIONS = 25  # Per client: 200 in all.
RECORDS, DATA_FILES = 3, 2  # Subjects per client.
BUCKET, COLLECTION = "events", "files"
MAX_SIZE = 16 * 1024
#: Seconds a delivered version stays fetchable (``events.fetch_grace_seconds``).
GRACE = 6
#: Seconds Redis is unreachable.
OUTAGE = 6
#: Bound of each phase (clients, deliveries, fetches).
PHASE_TIMEOUT = 60
TUS_HEADERS = {"Tus-Resumable": "1.0.0"}
#: Refusals a client retries later (Kinto's 409 "please retry" of concurrent first writes
#: under one parent, a 503 with Retry-After): nothing committed.
RETRYABLE = {409, 503}
STORED, DELETED = "org.kinto.attachment.stored", "org.kinto.attachment.deleted"


@dataclasses.dataclass
class Change:
    """A change of a subject, as its client saw it: ``certain`` when answered (2xx: it
    committed), not when the answer was lost with the killed node (it may have committed).
    ``digest`` None: any (a delete after an uncertain change)."""

    kind: str
    digest: str | None
    certain: bool = True

    def matches(self, kind, digest):
        return self.kind == kind and self.digest in (None, digest)


def consistent(delivered, changes):
    """Whether ``delivered`` (``(kind, digest)`` in delivery order) is ``changes`` in order,
    each certain one present and each uncertain one present or not."""

    @functools.cache
    def from_(i, j):
        if j == len(changes):
            return i == len(delivered)
        change = changes[j]
        if i < len(delivered) and change.matches(*delivered[i]) and from_(i + 1, j + 1):
            return True
        return not change.certain and from_(i, j + 1)

    return from_(0, 0)


class Client:
    """One of the clients: its own subjects, one request at a time, on both nodes in turn."""

    def __init__(self, index, cluster, progress):
        self.index, self.cluster, self.progress = index, cluster, progress
        self.random = random.Random(index)
        self.records = [f"t{index}-r{n}" for n in range(RECORDS)]
        self.data_files = [f"t{index}-f{n}" for n in range(DATA_FILES)]
        #: subject → its changes; subject → its current hash (None: no file; "?": unknown).
        self.changes, self.current = {}, {}
        self.refused, self.unexpected = [], []

    def node(self):
        return self.cluster.nodes[self.random.randrange(2)].server

    def body(self, size=None):
        tag = f"client {self.index} {uuid.uuid4()}\n".encode()
        return tag + os.urandom(size or self.random.randint(1024, 6 * 1024))

    def run(self):
        operations = [
            *[self.multipart] * 4,
            *[self.tus] * 2,
            *[self.data_file] * 3,
            self.delete_attachment,
            self.delete_data_file,
            self.refused_upload,
        ]
        for _ in range(OPERATIONS):
            self.random.choice(operations)()
            self.progress.release()

    def note(self, subject, kind, digest, answer, ok):
        """What ``answer`` tells of a change of ``subject``."""
        if answer.status is None:  # The node was killed: committed or not.
            self.changes.setdefault(subject, []).append(Change(kind, digest, certain=False))
            self.current[subject] = "?"
            time.sleep(0.3)
        elif answer.status in ok:
            self.changes.setdefault(subject, []).append(Change(kind, digest))
            self.current[subject] = digest if kind == STORED else None
        elif answer.status not in RETRYABLE:
            self.unexpected.append((subject, answer.status, answer.text[:300]))

    def record_url(self, server, record):
        return f"{server.url}/buckets/{BUCKET}/collections/{COLLECTION}/records/{record}"

    def multipart(self, record=None, filename="file.txt", content=None, ok=(200, 201)):
        record = record or self.random.choice(self.records)
        content = content or self.body()
        server = self.node()
        answer = call(
            "multipart",
            "POST",
            self.record_url(server, record) + "/attachment",
            files={"attachment": (filename, content)},
            auth=ALICE,
        )
        if ok:
            self.note(subject_of(record), STORED, sha256(content), answer, ok)
        return answer

    def tus(self):
        record = self.random.choice(self.records)
        content = self.body()
        server = self.node()
        created = call(
            "tus create",
            "POST",
            self.record_url(server, record) + "/attachment/uploads",
            headers={
                **TUS_HEADERS,
                "Upload-Length": str(len(content)),
                "Upload-Metadata": "filename " + base64.b64encode(b"file.bin").decode(),
            },
            auth=ALICE,
        )
        if created.status != 201:  # Nothing committed yet: no event either way.
            if created.status is not None and created.status not in RETRYABLE:
                self.unexpected.append((record, created.status, created.text[:300]))
            return
        answer = call(
            "tus patch",
            "PATCH",
            created.headers["Location"],
            data=content,
            headers={
                **TUS_HEADERS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
            auth=ALICE,
        )
        self.note(subject_of(record), STORED, sha256(content), answer, (204,))

    def data_file(self):
        file_id = self.random.choice(self.data_files)
        content = self.body()
        answer = call(
            "data file", "POST", f"{self.node().url}/data/files?id={file_id}", data=content
        )
        self.note(f"/data/files/{file_id}", STORED, sha256(content), answer, (200, 201))

    def _delete(self, subject, url):
        current = self.current.get(subject)
        if current is None:  # Nothing to delete: an upload instead.
            return self.multipart()
        answer = call("delete", "DELETE", url, auth=ALICE)
        if current == "?" and answer.status is not None and answer.status not in RETRYABLE:
            # Whether there was a file to delete (and an event) depends on the uncertain
            # change; /data/files answers 204 either way.
            if answer.status != 404:
                self.changes[subject].append(Change(DELETED, None, certain=False))
            self.current[subject] = None
            return
        self.note(subject, DELETED, current, answer, (200, 204))

    def delete_attachment(self):
        record = self.random.choice(self.records)
        self._delete(subject_of(record), self.record_url(self.node(), record) + "/attachment")

    def delete_data_file(self):
        file_id = self.random.choice(self.data_files)
        self._delete(f"/data/files/{file_id}", f"{self.node().url}/data/files/{file_id}")

    def refused_upload(self):
        """A wrong extension, or a file over the collection's limit: refused, no event."""
        if self.random.random() < 0.5:
            content, filename = self.body(), "program.exe"
        else:
            content, filename = self.body(MAX_SIZE + 1), "large.txt"
        record = f"t{self.index}-refused"
        answer = self.multipart(record, filename, content, ok=())
        if answer.status is not None and answer.status not in {400, 413, *RETRYABLE}:
            self.unexpected.append((record, answer.status, answer.text[:300]))
        self.refused.append(sha256(content))


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def short(changes):
    """Changes (delivered, or :class:`Change`) as ``kind:digest`` words, for messages."""
    words = []
    for change in changes:
        kind, digest, *certain = dataclasses.astuple(change) if certain_of(change) else change
        mark = "" if not certain or certain[0] else "?"
        words.append(f"{mark}{kind.rsplit('.', 1)[-1]}:{(digest or '*')[:8]}")
    return " ".join(words)


def certain_of(change):
    return isinstance(change, Change)


def subject_of(record):
    return f"/buckets/{BUCKET}/collections/{COLLECTION}/records/{record}"


class Fetcher:
    """A worker without Kinto credentials: reads the stream as events arrive, and fetches each
    stored version's ``url`` once (again later while its node is down)."""

    def __init__(self, redis_client, stream):
        self.redis, self.stream = redis_client, stream
        self.seen, self.fetched, self.failed = set(), {}, []
        self.last_error = None
        self._waiting = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        last = "0-0"
        while not self._stop.is_set():
            for _, entries in self.redis.xread({self.stream: last}, block=200) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    event = json.loads(fields[b"event"])
                    if event["type"] == STORED and event["id"] not in self.seen:
                        self.seen.add(event["id"])
                        self._waiting.append(event)
            self._waiting = [event for event in self._waiting if not self._fetch(event)]

    def _fetch(self, event):
        """Whether ``event``'s URL answered (bytes checked); False: try again later."""
        try:
            response = requests.get(event["data"]["url"], timeout=10)
        except requests.RequestException as e:
            self.last_error = f"{event['data']['url']}: {e!r}"
            return False  # Its node is down: it comes back.
        if response.status_code == 200:
            digest = sha256(response.content)
            self.fetched[event["id"]] = digest == event["data"]["attachment"]["hash"]
        else:
            self.failed.append((event["id"], response.status_code, response.text[:300]))
        return True

    def wait(self, ids):
        deadline = time.monotonic() + PHASE_TIMEOUT
        while not ids <= self.fetched.keys() | {f[0] for f in self.failed}:
            assert time.monotonic() < deadline, (
                f"{len(self._waiting)} URLs unfetched, last error: {self.last_error}"
            )
            time.sleep(0.2)

    def stop(self):
        self._stop.set()
        self._thread.join(10)


def outbox_query(pg, query):
    import psycopg2

    connection = psycopg2.connect(pg, connect_timeout=10)
    try:
        with connection.cursor() as cursor:
            cursor.execute(query)
            return cursor.fetchall()
    finally:
        connection.close()


def undelivered(pg):
    """``{state: count}`` of the outbox rows not delivered yet."""
    return dict(
        outbox_query(
            pg,
            "SELECT data->>'state', count(*) FROM objects"
            " WHERE resource_name = 'attachment-event' AND data->>'state' != 'delivered'"
            " GROUP BY 1",
        )
    )


class Progress:
    """How many changes the clients made; faults wait for a share of them."""

    def __init__(self):
        self.done = 0
        self._condition = threading.Condition()

    def release(self):
        with self._condition:
            self.done += 1
            self._condition.notify_all()

    def wait_for(self, count):
        with self._condition:
            self._condition.wait_for(lambda: self.done >= count, PHASE_TIMEOUT)


def kill_node(cluster, progress, total):
    """Kill -9 node 1 at a third of the changes, and start it again."""
    progress.wait_for(total // 3)
    cluster.nodes[1].kill()
    time.sleep(1)
    cluster.nodes[1].start()


def cut_redis(proxy, progress, total):
    """Redis unreachable from half of the changes, for :data:`OUTAGE` seconds."""
    progress.wait_for(total // 2)
    proxy.down()
    time.sleep(OUTAGE)
    proxy.up()


def test_events_of_two_nodes_through_a_kill_and_an_outage(
    pg_url, redis_stream, proxies, tmp_path, request
):
    redis_client, stream = redis_stream
    proxy = proxies(*REDIS)
    settings = {
        "destinations": "redis",
        "redis.url": f"redis://127.0.0.1:{proxy.port}/0",
        "redis.stream": stream,
        "url_secret": URL_SECRET,
        "poll_seconds": 0.5,
        "timeout_seconds": 1,
        "retry_seconds": 0.5,
        "fetch_grace_seconds": GRACE,
    }
    lines = [f"kinto.attachment.events.{name} = {value}" for name, value in settings.items()]
    lines += [
        "kinto.attachment.gc.replaced_grace_seconds = 0",
        f"kinto.attachment.resources.{BUCKET}.extensions = txt bin",
        f"kinto.attachment.resources.{BUCKET}.max_size_bytes = {MAX_SIZE}",
    ]
    with (
        database("events", request.config, tmp_path) as pg,
        cluster_of(tmp_path, "local", pg, extra_lines=lines, http_host=True) as cluster,
    ):
        create_collection(cluster.nodes[0].server, BUCKET, COLLECTION)
        fetcher = Fetcher(redis_client, stream)
        request.addfinalizer(fetcher.stop)  # Before the stream's client closes.
        progress, total = Progress(), CLIENTS * OPERATIONS
        clients = [Client(i, cluster, progress) for i in range(CLIENTS)]
        failures = []

        def thread(function, *args):
            def run():
                try:
                    function(*args)
                except BaseException as e:  # Reported below, with the thread's name.
                    failures.append(f"{function.__qualname__}: {e!r}")

            return threading.Thread(target=run, daemon=True)

        threads = [thread(c.run) for c in clients]
        threads += [
            thread(kill_node, cluster, progress, total),
            thread(cut_redis, proxy, progress, total),
        ]
        for started in threads:
            started.start()
        deadline = time.monotonic() + PHASE_TIMEOUT
        for started in threads:
            started.join(max(deadline - time.monotonic(), 0.1))
            assert not started.is_alive(), "the clients did not finish in time"
        assert not failures, failures
        assert cluster.nodes[1].server.process.poll() is None, "node 1 did not start again"
        unexpected = [u for c in clients for u in c.unexpected]
        assert not unexpected, unexpected

        # Every event delivered (a killed node's claims wait for their lease), none dead.
        deadline = time.monotonic() + PHASE_TIMEOUT
        while left := undelivered(pg):
            assert "dead" not in left, left
            assert time.monotonic() < deadline, f"undelivered: {left}"
            time.sleep(0.5)
        delivered_at = time.monotonic()
        assert "to redis failed" in cluster.output(), "the outage delayed no delivery"
        uncertain = [ch for c in clients for chs in c.changes.values() for ch in chs]
        assert not all(ch.certain for ch in uncertain), "no answer lost with the killed node"

        events = [json.loads(f[b"event"]) for _, f in redis_client.xrange(stream)]
        firsts, by_subject = {}, {}
        for event in events:
            if firsts.setdefault(event["id"], event) is event:
                by_subject.setdefault(event["subject"], []).append(
                    (event["type"], event["data"]["attachment"]["hash"])
                )
        changes = {s: c for client in clients for s, c in client.changes.items()}
        assert set(by_subject) <= set(changes), set(by_subject) - set(changes)
        wrong = {
            subject: (short(by_subject.get(subject, [])), short(expected))
            for subject, expected in changes.items()
            if not consistent(tuple(by_subject.get(subject, [])), tuple(expected))
        }
        assert not wrong, wrong
        committed = sum(ch.certain for expected in changes.values() for ch in expected)
        assert committed >= CLIENTS * OPERATIONS // 3, committed
        refused = {digest for client in clients for digest in client.refused}
        assert refused and not refused & {e["data"]["attachment"]["hash"] for e in events}

        stored = {e["id"] for e in firsts.values() if e["type"] == STORED}
        fetcher.wait(stored)
        assert not fetcher.failed, fetcher.failed
        assert stored == fetcher.fetched.keys() and all(fetcher.fetched.values())

        # Once the grace is over, the collector deletes what events held: nothing leaks.
        time.sleep(max(0.0, delivered_at + GRACE + 1 - time.monotonic()))
        gc = start_gc(
            cluster, env={**os.environ, "KINTO_ATTACHMENT_GC_ORPHANS_GRACE_SECONDS": "0"}
        )
        out, err = gc.communicate(timeout=COMMAND_TIMEOUT)
        assert gc.returncode == 0, (out, err)
        cluster.check().assert_clean()
        assert not invariants.replaced_keys(pg)
