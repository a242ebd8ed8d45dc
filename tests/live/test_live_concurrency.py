"""Live concurrency tests: real ``pserve`` processes, real clients in threads, real races.

Two nodes share one PostgreSQL database and one store (a local folder, or a bucket of the moto
S3 server), as in ``test_live_cluster.py``; a third configuration is ``config/kinto.ini`` as
shipped (memory backend). :func:`cluster_of` also starts the clusters of
``test_live_cluster.py`` (S3) and ``test_live_gcs.py`` (a bucket of fake-gcs-server). Each
test races requests that change the same record, collection, bucket or ``/data/files`` entry,
then asserts what must hold whatever the interleaving:

- no answer is a 500: each is a success, or one of the refusals a client can act on (404, 409,
  412, 423, 503 with ``Retry-After``);
- the references and the stored files agree (:mod:`tests.support.invariants`, which reads
PostgreSQL
  and the store directly): no orphan, no dangling reference, one link per attachment.

Exact counts of winners and losers are never asserted: they depend on the scheduling. Where a
race window is too narrow to be hit reliably (the GC against a re-upload), the slow party is
held on purpose (a row lock) instead of being raced in a loop. Crashes are in
``test_live_crash.py``, which reuses the cluster helpers defined here.
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import random
import re
import subprocess
import threading
import time
import uuid
from functools import partial
from pathlib import Path

import pytest
import requests

from ..conftest import PG_SERVER, s3_client, s3_settings
from ..support import invariants
from ..support.gcs_server import gcs_client, gcs_settings
from ..support.live import (
    ALICE,
    BIN,
    COMMAND_TIMEOUT,
    REQUEST_TIMEOUT,
    ROOT,
    create_collection,
    free_port,
    live_config,
    running_server,
    started,
)


pytestmark = pytest.mark.live

POSTGRESQL_CONFIG = ROOT / "config" / "postgresql.ini"
MiB = 1024 * 1024
KiB = 1024
BUCKET = "races"
#: Refusals a client can act on (retry, or learn the record or its parent is gone).
REFUSALS = {404, 409, 412, 423}
#: Upper bound of every race (threads that do not finish by then fail the test).
RACE_TIMEOUT = 90


@pytest.fixture(scope="module", autouse=True)
def quiet_s3_server():
    """The moto server logs every request: thousands of lines, and time, per race."""
    logger = logging.getLogger("werkzeug")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


# Clusters: nodes on one PostgreSQL database and one store.


def substitute(text, pattern, replacement, where=POSTGRESQL_CONFIG):
    text, count = re.subn(pattern, lambda _: replacement, text, flags=re.MULTILINE)
    assert count == 1, f"{where}: {count} lines match {pattern!r}, expected 1"
    return text


def node_config(port, pg_url, store_lines, base_url, extra_lines=(), includes=()):
    """``config/postgresql.ini`` on ``127.0.0.1:port``, ``pg_url``, the given store lines
    (instead of ``base_path``) and ``base_url``; ``extra_lines`` and ``includes`` added."""
    text = live_config(port, "unused", template=POSTGRESQL_CONFIG)
    escape = lambda value: str(value).replace("%", "%%")  # noqa: E731
    text = substitute(text, r"^pg_url = .*$", "pg_url = " + escape(pg_url))
    text = substitute(text, r"^kinto\.attachment\.base_path = .*$", escape("\n".join(store_lines)))
    text = substitute(
        text,
        r"^kinto\.attachment\.base_url = .*$",
        "kinto.attachment.base_url = " + escape(base_url),
    )
    indent = " " * len("kinto.includes = ")
    for name in includes:
        text = substitute(
            text, r"^\s+kinto_attachment$", f"{indent}kinto_attachment\n{indent}{name}"
        )
    if extra_lines:
        text = substitute(
            text,
            r"^kinto\.attachment\.extensions = any$",
            "\n".join(["kinto.attachment.extensions = any", *map(escape, extra_lines)]),
        )
    return text


def _admin(statement):
    import psycopg2

    admin = psycopg2.connect(PG_SERVER + "/postgres", connect_timeout=5)
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(statement)
    finally:
        admin.close()


#: The name of a database migrated once (``kinto migrate``) for the whole test session.
_TEMPLATE = {}


def _template(pytest_config, folder):
    if "name" not in _TEMPLATE:
        name = f"kinto_attachment_template_{uuid.uuid4().hex[:8]}"
        _admin(f'CREATE DATABASE "{name}"')
        pytest_config.add_cleanup(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        ini = Path(folder) / "migrate.ini"
        store = [f"kinto.attachment.base_path = {Path(folder) / 'unused'}"]
        ini.write_text(node_config(0, f"{PG_SERVER}/{name}", store, "http://localhost/"))
        migrate(ini, folder)
        _TEMPLATE["name"] = name
    return _TEMPLATE["name"]


@contextlib.contextmanager
def database(tag, pytest_config, folder):
    """A new database with Kinto's schema on the test PostgreSQL server, dropped afterwards.

    Each is a copy of one migrated once per session (copying is faster than migrating).
    """
    template = _template(pytest_config, folder)
    name = f"kinto_attachment_{tag}_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def hooks_env(pause_dir):
    """A server's environment with ``tests.support.hooks`` importable and its pause folder set."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    if pause_dir is not None:
        env["KINTO_ATTACHMENT_TEST_PAUSE_DIR"] = str(pause_dir)
    return env


class Node:
    """One ``pserve`` that can be killed (``kill -9``) and started again on its port.

    ``port`` 0: the kernel's pick at the first start; a restart binds the same port again, so
    that the URLs clients were given (tus upload locations) still lead to this node.
    """

    def __init__(self, folder, ini, port, env=None):
        self.folder, self.ini, self.port, self.env = folder, ini, port, env
        self.server = None
        self._stack = None
        self._previous_output = ""

    @property
    def url(self):
        return self.server.url

    def start(self, wait=True):
        if self.server is not None and self.server.bound and self.port != self.server.port:
            self.port = self.server.port
            text = re.sub(r"^port = 0$", f"port = {self.port}", self.ini.read_text(), flags=re.M)
            self.ini.write_text(text)
        self._stack = contextlib.ExitStack()
        self.server = self._stack.enter_context(
            started(self.folder, self.ini, self.port, env=self.env)
        )
        if wait:
            self.server.wait_ready()

    def kill(self):
        """SIGKILL: no cleanup, no after-commit or after-abort hook runs."""
        self._previous_output += self.server.output()
        self.server.process.kill()
        self.server.process.wait(COMMAND_TIMEOUT)
        self._stack.close()

    def stop(self):
        if self._stack is not None:
            self._stack.close()

    def output(self):
        return self._previous_output + (self.server.output() if self.server else "")


@dataclasses.dataclass
class Cluster:
    kind: str
    nodes: list
    pg: str
    store: object
    base_url: str
    inis: list
    folder: Path

    def check(self):
        return invariants.check_postgresql(self.pg, self.store, [self.base_url])

    def key_of(self, location):
        key = invariants.key_of(location, [self.base_url])
        assert key is not None, (location, self.base_url)
        return key

    def output(self):
        return "".join(node.output() for node in self.nodes)


def migrate(ini, folder):
    result = subprocess.run(
        [str(BIN / "kinto"), "migrate", "--ini", str(ini)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=COMMAND_TIMEOUT,
    )
    assert result.returncode == 0, result


#: Parts of S3 multipart uploads on the nodes: S3's smallest, for large uploads in few bytes.
S3_PART_SIZE = 5 * MiB


@contextlib.contextmanager
def cluster_of(
    folder,
    kind,
    pg_url,
    endpoint=None,
    count=2,
    extra_lines=(),
    env=None,
    threads=None,
    http_host=False,
):
    """``count`` nodes on ``pg_url`` (migrated) with files in a folder (``local``) or in a new
    bucket of the S3 (``s3``) or GCS (``gcs``) server at ``endpoint``; with ``env``,
    ``tests.support.hooks`` is included and ``env`` is the nodes' environment; with
    ``http_host`` (``local`` only), node 0's address is every node's ``http_host``, as a load
    balancer's would be (events on local disk require one)."""
    folder = Path(folder)
    # Port 0: each node binds a port of the kernel's choice, read back from its output...
    ports = [0] * count
    if kind == "local":
        # ...but node 0's, named beforehand: locations (base_url) lead to it, whichever node
        # wrote them.
        ports[0] = free_port()
        base_path = folder / "attachments"
        base_path.mkdir()
        store_lines = [f"kinto.attachment.base_path = {base_path}"]
        # Every node writes the same locations, whichever serves the request.
        base_url = f"http://localhost:{ports[0]}/v1/attachments/"
        if http_host:
            extra_lines = [*extra_lines, f"kinto.http_host = localhost:{ports[0]}"]
        store = invariants.LocalFolder(base_path)
    elif kind == "s3":
        settings = s3_settings(endpoint)
        bucket = settings["kinto.attachment.aws.bucket_name"]
        settings["kinto.attachment.aws.part_size"] = str(S3_PART_SIZE)
        store = invariants.S3Bucket(s3_client(endpoint), bucket)
    else:
        settings = gcs_settings(endpoint)
        bucket = settings["kinto.attachment.gcloud.bucket_name"]
        store = invariants.GCSBucket(gcs_client(endpoint).bucket(bucket))
    if kind != "local":
        store_lines = [f"{name} = {value}" for name, value in settings.items()]
        base_url = f"{endpoint}/{bucket}/"
    includes = ("tests.support.hooks",) if env is not None else ()
    inis = []
    for index, port in enumerate(ports):
        ini = folder / f"kinto-{index}.ini"
        text = node_config(port, pg_url, store_lines, base_url, extra_lines, includes)
        if kind != "local":
            text = substitute(text, r"^kinto\.attachment\.serve_files = true$", "")
        if threads:
            text = substitute(text, r"^\[server:main\]$", f"[server:main]\nthreads = {threads}")
        ini.write_text(text)
        inis.append(ini)
    nodes = [Node(folder, ini, port, env) for ini, port in zip(inis, ports, strict=True)]
    try:
        for node in nodes:  # Started together, then waited for.
            node.start(wait=False)
        for node in nodes:
            node.server.wait_ready()
        yield Cluster(kind, nodes, pg_url, store, base_url, inis, folder)
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(scope="module", params=["local", pytest.param("s3")])
def cluster(request, pg_url, tmp_path_factory):
    """Two nodes on a new PostgreSQL database, with files on local disk or in S3."""
    kind = request.param
    endpoint = request.getfixturevalue("s3_server") if kind == "s3" else None
    folder = tmp_path_factory.mktemp(f"cluster-{kind}")
    with (
        database(f"races_{kind}", request.config, folder) as pg,
        cluster_of(folder, kind, pg, endpoint) as nodes,
    ):
        yield nodes


@pytest.fixture
def baseline(cluster):
    """What the checker finds before the test (see :meth:`invariants.Report.since`)."""
    return cluster.check()


# Clients.


@dataclasses.dataclass
class Answer:
    what: str
    status: int | None
    headers: dict
    content: bytes

    @property
    def text(self):
        return self.content.decode("utf-8", "replace")

    @property
    def json(self):
        return json.loads(self.content)


def call(what, method, url, **kwargs):
    """One HTTP request; a connection error is an answer too (status None)."""
    try:
        response = requests.request(method, url, timeout=REQUEST_TIMEOUT, **kwargs)
    except requests.RequestException as e:
        return Answer(what, None, {}, repr(e).encode())
    return Answer(what, response.status_code, dict(response.headers), response.content)


def post_attachment(server, path, content, filename="file.bin"):
    return call(
        f"POST {path}/attachment via {server.port}",
        "POST",
        f"{server.url}{path}/attachment",
        files={"attachment": (filename, content)},
        auth=ALICE,
    )


def acceptable(answer, also=()):
    """A success, or a refusal a client can act on; never a 500 nor a dropped connection."""
    status = answer.status
    if status is None:
        return False
    if 200 <= status < 300 or status in REFUSALS or status in also:
        return True
    return status == 503 and "Retry-After" in answer.headers


def race(calls, timeout=RACE_TIMEOUT):
    """Run every ``call()`` in its own thread, all released at once; their answers in order."""
    barrier = threading.Barrier(len(calls))
    answers = [None] * len(calls)

    def run(index, function):
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout)
        try:
            answers[index] = function()
        except Exception as e:  # pragma: no cover (reported below)
            answers[index] = Answer("exception", None, {}, repr(e).encode())

    threads = [threading.Thread(target=run, args=(i, f), daemon=True) for i, f in enumerate(calls)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.1))
    unfinished = [i for i, thread in enumerate(threads) if thread.is_alive()]
    assert not unfinished, f"requests {unfinished} did not finish within {timeout} s"
    return answers


class Background:
    """``function(*args)`` in a thread; its answer once done."""

    def __init__(self, function, *args):
        self.answer = None
        self._thread = threading.Thread(target=self._run, args=(function, args), daemon=True)
        self._thread.start()

    def _run(self, function, args):
        self.answer = function(*args)

    def done(self):
        return not self._thread.is_alive()

    def result(self, timeout=RACE_TIMEOUT):
        self._thread.join(timeout)
        assert self.done(), "the request did not end"
        return self.answer


def later(delay, function, *args):
    """``function(*args)`` after ``delay`` seconds (to land in the middle of a race)."""
    time.sleep(delay)
    return function(*args)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def contents(count, size, tag):
    """``count`` distinct bodies of ``size`` bytes."""
    return [f"{tag} {i}\n".encode() + os.urandom(size) for i in range(count)]


def new_collection(server, bucket=BUCKET):
    name = f"c{uuid.uuid4().hex[:10]}"
    create_collection(server, bucket, name)
    return f"/buckets/{bucket}/collections/{name}/records"


def record_of(server, path):
    response = requests.get(server.url + path, auth=ALICE, timeout=REQUEST_TIMEOUT)
    return response.status_code, (response.json().get("data") if response.ok else None)


def ids_of(path):
    """``(bucket, collection, record)`` of a record path."""
    parts = path.strip("/").split("/")
    return parts[1], parts[3], parts[5]


def assert_no_errors_logged(cluster):
    output = cluster.output().lower()
    assert "deadlock" not in output, cluster.output()[-5000:]


def assert_attachment_intact(cluster, server, path, candidates=None):
    """The record's attachment is stored with its sha256, and is the record's only link."""
    status, record = record_of(server, path)
    assert status == 200, (path, status)
    attachment = record["attachment"]
    assert attachment is not None, record
    if candidates is not None:
        assert attachment["hash"] in candidates
    key = cluster.key_of(attachment["location"])
    assert cluster.store.sha256(key) == attachment["hash"], attachment
    assert invariants.record_links(cluster.pg, *ids_of(path)) == [key]
    return key


# 1, 2. Simultaneous uploads to one record.

CLIENTS = 20


@pytest.mark.postgresql
@pytest.mark.parametrize("initially", ["attached", "bare", "absent"])
def test_simultaneous_uploads_to_one_record(cluster, baseline, initially):
    a, b = cluster.nodes
    path = new_collection(a) + "/contested"
    if initially == "attached":
        assert post_attachment(a, path, b"the first file").status == 201
    elif initially == "bare":
        created = requests.put(
            a.url + path, json={"data": {"title": "no file yet"}}, auth=ALICE, timeout=30
        )
        assert created.status_code == 201, created.text
    bodies = contents(CLIENTS, 16 * KiB, "client")

    answers = race(
        [
            lambda i=i: post_attachment(cluster.nodes[i % 2], path, bodies[i], f"f{i}.bin")
            for i in range(CLIENTS)
        ]
    )

    refused = [a for a in answers if not acceptable(a)]
    assert not refused, refused
    # kinto-attachment's statuses: 201 for the one upload that created the record, 200 for
    # those that replaced its attachment.
    successes = [a.status for a in answers if 200 <= a.status < 300]
    assert successes.count(201) == (1 if initially == "absent" else 0), answers
    assert set(successes) <= {200, 201}, answers
    assert_attachment_intact(cluster, b, path, {sha256(body) for body in bodies})
    cluster.check().since(baseline).assert_clean()
    assert_no_errors_logged(cluster)


# 3. The same on the memory backend (config/kinto.ini as shipped).


@pytest.fixture(scope="module")
def memory_server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("memory-races")) as live:
        yield live


def check_memory_server(server):
    base_url = f"{server.url}/attachments/"
    store = invariants.LocalFolder(server.base_path)
    return invariants.check_http(server.url, ALICE, store, [base_url])


#: One process, no isolation between transactions: a lost race shows only sometimes, so the
#: race is run a few times.
MEMORY_ROUNDS = 3


@pytest.mark.parametrize("initially", ["attached", "bare"])
def test_simultaneous_uploads_on_the_memory_backend(memory_server, initially):
    server = memory_server
    baseline = check_memory_server(server)
    for _ in range(MEMORY_ROUNDS):
        path = new_collection(server) + "/contested"
        if initially == "attached":
            assert post_attachment(server, path, b"the first file").status == 201
        else:
            created = requests.put(server.url + path, json={"data": {}}, auth=ALICE, timeout=30)
            assert created.status_code == 201, created.text
        bodies = contents(CLIENTS, 16 * KiB, "client")

        answers = race([partial(post_attachment, server, path, body) for body in bodies])

        refused = [a for a in answers if not acceptable(a)]
        assert not refused, refused
        status, record = record_of(server, path)
        assert status == 200
        attachment = record["attachment"]
        assert attachment["hash"] in {sha256(body) for body in bodies}
        stored = server.path_of(attachment["location"])
        assert stored.exists(), attachment
        assert sha256(stored.read_bytes()) == attachment["hash"]
        check_memory_server(server).since(baseline).assert_clean()


# 4. Deleting the record, or its attachment, while uploads to it run.

ROUNDS = 30
#: Bound of the rounds of one test (fewer rounds on a slow machine, never a timed assertion).
ROUNDS_SECONDS = 5


def delete(server, url_path, what):
    return call(f"DELETE {what} via {server.port}", "DELETE", server.url + url_path, auth=ALICE)


@pytest.mark.postgresql
@pytest.mark.parametrize("target", ["record", "attachment"])
def test_deletes_racing_uploads(cluster, baseline, target):
    path = new_collection(cluster.nodes[0]) + "/raced"
    deleted = path if target == "record" else path + "/attachment"
    deadline = time.monotonic() + ROUNDS_SECONDS
    wrong, rounds = [], 0
    while rounds < ROUNDS and time.monotonic() < deadline:
        first, second = cluster.nodes[rounds % 2], cluster.nodes[(rounds + 1) % 2]
        assert post_attachment(first, path, b"before the race").status in (200, 201)
        bodies = contents(3, 8 * KiB, f"round {rounds}")
        answers = race(
            [partial(post_attachment, cluster.nodes[i % 2], path, bodies[i]) for i in range(3)]
            + [partial(later, random.uniform(0, 0.03), delete, second, deleted, target)]
        )
        wrong += [(rounds, a) for a in answers if not acceptable(a)]
        status, record = record_of(first, path)
        assert status in (200, 404), (rounds, status)
        if record is not None and record.get("attachment"):
            assert_attachment_intact(cluster, first, path)
        rounds += 1

    assert rounds, "no round ran"
    assert not wrong, wrong
    cluster.check().since(baseline).assert_clean()
    assert_no_errors_logged(cluster)


# 5. Deleting the collection, or the bucket, while uploads into it run.

PARENT_ROUNDS = 2


@pytest.mark.postgresql
@pytest.mark.parametrize("parent", ["collection", "bucket"])
def test_deleting_the_parent_while_uploads_run(cluster, baseline, parent):
    a = cluster.nodes[0]
    wrong, keys = [], set()
    for round_ in range(PARENT_ROUNDS):
        bucket = f"p{uuid.uuid4().hex[:10]}" if parent == "bucket" else BUCKET
        records = new_collection(a, bucket)
        collection = records.removesuffix("/records")
        parent_path = collection if parent == "collection" else f"/buckets/{bucket}"
        for i in range(3):
            answer = post_attachment(a, f"{records}/r{i}", b"existing %d" % i)
            assert answer.status == 201, answer
            keys.add(cluster.key_of(answer.json["location"]))
        bodies = contents(8, 128 * KiB, f"round {round_}")

        deleting = (delete, cluster.nodes[1], parent_path, parent)
        answers = race(
            [
                partial(post_attachment, cluster.nodes[i % 2], f"{records}/r{i % 5}", bodies[i])
                for i in range(8)
            ]
            + [partial(later, random.uniform(0, 0.05), *deleting)]
        )

        deleted = answers[-1]
        for _ in range(3):  # Deleting again after a 503 (Retry-After), as a client would.
            if deleted.status != 503 or not acceptable(deleted):
                break
            time.sleep(0.05)
            deleted = delete(cluster.nodes[1], parent_path, parent)
        assert deleted.status == 200, answers[-1]
        # A missing bucket is a 403 for who cannot know whether it exists.
        wrong += [(round_, x) for x in answers if not acceptable(x, also=(403,))]
        keys |= {
            cluster.key_of(x.json["location"]) for x in answers[:-1] if x.status in (200, 201)
        }
        for i in range(5):
            assert record_of(a, f"{records}/r{i}")[0] in (403, 404)
        assert record_of(a, collection)[0] in (403, 404)
        assert invariants.records_under(cluster.pg, collection) == []

    assert not wrong, wrong
    stored = cluster.store.objects() | {key for key, _ in cluster.store.unfinished()}
    # Those still stored are kept for the downloads that may be reading them, recorded for
    # the collector (gc.replaced_grace_seconds).
    leaked = (keys & stored) - invariants.replaced_keys(cluster.pg)
    assert not leaked, sorted(leaked)
    cluster.check().since(baseline).assert_clean()
    assert_no_errors_logged(cluster)


# 7. Garbage collection racing re-uploads of /data/files entries.


def lock_waiters(pg_url):
    """How many sessions of this database wait for a lock (a row's or an advisory one)."""
    import psycopg2

    connection = psycopg2.connect(pg_url, connect_timeout=10)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = %s AND wait_event_type = 'Lock'",
                (pg_url.rsplit("/", 1)[-1],),
            )
            return cursor.fetchone()[0]
    finally:
        connection.close()


@contextlib.contextmanager
def rows_held(pg_url, resource_name, parents, object_ids):
    """Lock the rows of these objects, under the parents matching ``parents`` (a ``LIKE``
    pattern), (``SELECT ... FOR UPDATE``) while the block runs: who deletes or rewrites one of
    them waits until then."""
    import psycopg2

    connection = psycopg2.connect(pg_url, connect_timeout=10)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM objects WHERE resource_name = %s AND parent_id LIKE %s"
                " AND id = ANY(%s) AND NOT deleted FOR UPDATE",
                (resource_name, parents, list(object_ids)),
            )
            assert cursor.rowcount == len(object_ids)
        yield
    finally:
        connection.rollback()
        connection.close()


def start_gc(cluster, ini=None, env=None):
    """``kinto-attachment-gc --ini`` in the background."""
    return subprocess.Popen(
        [str(BIN / "kinto-attachment-gc"), "--ini", str(ini or cluster.inis[0])],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cluster.folder,
        env=env,
    )


def until(condition, what, timeout=COMMAND_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def data_files_url(server):
    return f"{server.url}/data/files"


def post_until_stored(url, content, attempts=3):
    """POST again after a refusal a client can retry (409, 423, 503...), as clients do."""
    for _ in range(attempts):
        answer = call("POST", "POST", url, data=content)
        if answer.status == 200 or not acceptable(answer):
            break
        time.sleep(0.05)
    return answer


REUPLOADED = 8
#: Sorted before the re-uploaded ids, and posted before and after them: whatever order the GC
#: walks the entries in (by id, oldest or newest first), it meets one of these first.
BALLAST = "00-ballast-"


@pytest.mark.postgresql
def test_gc_never_takes_an_entry_uploaded_again_meanwhile(cluster, baseline):
    """Entries that expired are uploaded again (same ids, new content) while the GC, which
    found them expired, is still at work: it must leave the new entries and their files.

    The GC is held (in a race it would merely be slow) by a row lock on two other expired
    entries, which it meets before the others; the re-uploads happen meanwhile.
    """
    root = data_files_url(cluster.nodes[0])
    tag = uuid.uuid4().hex[:8]
    ids = [f"re-{tag}-{i}" for i in range(REUPLOADED)]
    ballast = [f"{BALLAST}{tag}-first", f"{BALLAST}{tag}-last"]
    for file_id in [ballast[0], *ids, ballast[1]]:
        expired = call("short", "POST", f"{root}?id={file_id}&ttl=1", data=b"expired")
        assert expired.status == 200, expired
    contents_ = {
        file_id: f"{file_id}: new content\n".encode() + os.urandom(2048) for file_id in ids
    }

    with rows_held(cluster.pg, "data-file", "data-files%", ballast):
        gc = start_gc(cluster)
        try:
            until(lambda: gc.poll() is not None or lock_waiters(cluster.pg), "the GC is held")
            uploads = [
                Background(
                    post_until_stored,
                    f"{data_files_url(cluster.nodes[i % 2])}?id={file_id}&ttl=600000",
                    contents_[file_id],
                )
                for i, file_id in enumerate(ids)
            ]
            # Each upload ends, or waits for the GC (an entry it deleted, not committed yet).
            held = 1 if gc.poll() is None else 0
            until(
                lambda: (
                    sum(u.done() for u in uploads) + lock_waiters(cluster.pg) - held
                    >= len(uploads)
                ),
                "the uploads end or wait",
            )
        except BaseException:
            gc.kill()
            raise
    out, err = gc.communicate(timeout=COMMAND_TIMEOUT)
    assert gc.returncode == 0, (out, err)

    answers = [u.result() for u in uploads]
    assert all(a.status == 200 for a in answers), answers
    lost = []
    for file_id in ids:
        got = call("GET", "GET", f"{root}/{file_id}")
        if (got.status, got.content) != (200, contents_[file_id]):
            lost.append((file_id, got.status))
    assert not lost, f"{len(lost)} of {len(ids)} re-uploaded entries lost: {lost}"
    cluster.check().since(baseline).assert_clean()


# 8. Uploads of distinct /data/files ids at once.

DATA_FILE_CLIENTS = 8
DATA_FILE_ROUNDS = 40


@pytest.mark.postgresql
@pytest.mark.parametrize("cluster", ["local"], indirect=True)
def test_data_files_uploaded_at_once_are_stored_at_the_first_try(cluster, baseline):
    """Eight clients on both nodes upload distinct ids at once, again and again: each upload
    is stored when first sent. Entries that shared one parent in Kinto's storage collided on
    its per-parent timestamps: about one upload in twelve was refused (409). (What collided
    is in PostgreSQL, whatever the store: local files only.)"""
    tag = uuid.uuid4().hex[:8]

    def uploads(client):
        answers = []
        root = data_files_url(cluster.nodes[client % 2])
        with requests.Session() as session:
            for round_ in range(DATA_FILE_ROUNDS):
                file_id = f"at-once-{tag}-{client}-{round_}"
                response = session.post(
                    f"{root}?id={file_id}", data=file_id.encode(), timeout=REQUEST_TIMEOUT
                )
                answers.append((file_id, response.status_code))
        return answers

    answers = [
        a for run in race([partial(uploads, c) for c in range(DATA_FILE_CLIENTS)]) for a in run
    ]
    refused = [answer for answer in answers if answer[1] != 200]
    assert not refused, f"{len(refused)} of {len(answers)} refused: {refused[:5]}"
    for file_id, _ in answers[::DATA_FILE_CLIENTS]:
        assert call("GET", "GET", f"{data_files_url(cluster.nodes[0])}/{file_id}").content == (
            file_id.encode()
        )
    for file_id, _ in answers:
        assert (
            call("DELETE", "DELETE", f"{data_files_url(cluster.nodes[1])}/{file_id}").status == 204
        )
    cluster.check().since(baseline).assert_clean()
