"""Live downloads racing replacements: real servers, real clients in threads.

One writer replaces a record's attachment in a loop while two readers download it, whole and
by ranges, through ``{record}/attachment``. Whatever the interleaving, every answer must be one
version, whole (or the requested range of one version), identified by its ``ETag``: never a
``404`` for a record that always has an attachment, never a mix of versions, and no ``ERROR``
in the server's log (a "blob missing from the store" error is a false alarm there).

Run on ``config/kinto.ini`` as shipped (memory backend, waitress), and on two nodes of
``config/postgresql.ini`` sharing one database and one store (the writer on one node, a
reader on each), with files on local disk and in S3 (moto).
"""

import dataclasses
import hashlib
import os
import threading
import time

import pytest
import requests

from ..support.live import ALICE, REQUEST_TIMEOUT, running_server
from .test_live_concurrency import cluster_of, database, new_collection


pytestmark = pytest.mark.live

KiB = 1024
#: Readers, and downloads in all on each backend. Enough to catch the bug these races guard:
#: with a download that finds its blob gone not reading the record again (``ATTEMPTS = 1`` in
#: ``kinto_attachment/downloads``), 3 % of 600 downloads failed on the memory backend, 14 % on
#: two nodes with local files, 9 % with S3 files and no grace (measured): 600 miss it with a
#: chance below 0.97 ** 600 < 1e-7. And long enough for the writer's ~60 replacements (20
#: required).
READERS = 4
DOWNLOADS = 600
#: Bound of one race (threads not done by then fail the test): far beyond what it takes.
RACE_SECONDS = 180
SIZE = 16 * KiB


@dataclasses.dataclass
class Tally:
    """What the readers saw."""

    versions: dict
    good: int = 0
    bad: list = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def judge(self, what, response, start=None):
        """Count ``response`` good if it is one known version whole (``start`` None) or its
        bytes from ``start``, as its ``ETag`` and ``Content-Range`` say."""
        etag = response.headers.get("ETag", "").strip('"')
        content = self.versions.get(etag)
        if content is None or response.status_code not in (200, 206):
            verdict = f"{response.status_code} {response.text[:200]!r}"
        elif response.status_code == 200 and response.content != content:
            verdict = "200 with other bytes than its ETag's version"
        elif response.status_code == 206 and (
            start is None
            or response.headers.get("Content-Range")
            != f"bytes {start}-{len(content) - 1}/{len(content)}"
            or response.content != content[start:]
        ):
            verdict = "206 with other bytes than its ETag's version"
        else:
            verdict = None
        with self.lock:
            if verdict is None:
                self.good += 1
            else:
                self.bad.append(f"{what}: {verdict}")


def replace_in_a_loop(url, tally, stop):
    """POST new versions until ``stop`` is set; each one's bytes go to ``tally.versions``
    before it is sent (a reader may see it before the POST returns)."""
    count = 0
    while not stop.is_set():
        content = f"version {count}\n".encode() + os.urandom(SIZE)
        tally.versions[hashlib.sha256(content).hexdigest()] = content
        response = requests.post(
            url,
            files={"attachment": (f"v{count}.bin", content)},
            auth=ALICE,
            timeout=REQUEST_TIMEOUT,
        )
        assert response.status_code in (200, 201), response.text
        count += 1
    return count


def read_in_a_loop(url, tally, downloads):
    """Download ``downloads`` times: whole, the last bytes, a range from the middle."""
    session = requests.Session()
    session.auth = ALICE
    for i in range(downloads):
        start = (None, SIZE // 2, 100)[i % 3]
        headers = {} if start is None else {"Range": f"bytes={start}-"}
        response = session.get(url, headers=headers, timeout=REQUEST_TIMEOUT)
        tally.judge(f"GET {headers or 'whole'}", response, start)


def race(writer_url, reader_urls):
    """The writer replacing, one reader per URL sharing :data:`DOWNLOADS`; the :class:`Tally`
    and the count of replacements."""
    tally = Tally(versions={})
    first = b"first version\n" + os.urandom(SIZE)
    tally.versions[hashlib.sha256(first).hexdigest()] = first
    created = requests.post(
        writer_url, files={"attachment": ("v.bin", first)}, auth=ALICE, timeout=REQUEST_TIMEOUT
    )
    assert created.status_code == 201, created.text
    stop, results = threading.Event(), {}

    def run(name, function, *args):
        try:
            results[name] = function(*args)
        except BaseException as e:  # pragma: no cover (reported below)
            results[name] = e
            stop.set()

    writer = threading.Thread(
        target=run, args=("writer", replace_in_a_loop, writer_url, tally, stop)
    )
    readers = [
        threading.Thread(
            target=run,
            args=(f"reader {i}", read_in_a_loop, url, tally, DOWNLOADS // len(reader_urls)),
        )
        for i, url in enumerate(reader_urls)
    ]
    writer.start()
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + RACE_SECONDS
    for reader in readers:
        reader.join(max(deadline - time.monotonic(), 0.1))
    stop.set()
    writer.join(RACE_SECONDS)
    assert not any(t.is_alive() for t in (writer, *readers)), "the race did not end"
    failures = {k: v for k, v in results.items() if isinstance(v, BaseException)}
    assert not failures, failures
    return tally, results["writer"]


def assert_race_clean(tally, replacements, output):
    assert tally.good + len(tally.bad) == DOWNLOADS
    # The race happened: the writer replaced the file many times while the readers read.
    assert replacements >= 20, replacements
    assert not tally.bad, f"{len(tally.bad)} bad answers of {DOWNLOADS}: {tally.bad[:10]}"
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert not errors, errors[:10]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``config/kinto.ini`` as shipped: files deleted as soon as a replacement commits."""
    with running_server(tmp_path_factory.mktemp("live-downloads")) as live:
        yield live


def test_downloads_racing_replacements_on_the_memory_backend(server):
    url = f"{server.url}{new_collection(server)}/contested/attachment"
    tally, replacements = race(url, [url] * READERS)
    assert_race_clean(tally, replacements, server.output())


def test_if_range_with_a_date_across_a_same_second_replacement(server):
    """A client resumes v1 after its first 500 bytes with v1's date in ``If-Range``, v2 having
    replaced v1 within the same second: the date cannot tell them apart, so it gets v2
    whole (200), never v2's bytes after v1's."""
    url = f"{server.url}{new_collection(server)}/resumed/attachment"
    for _ in range(10):
        v1, v2 = os.urandom(1000), os.urandom(1000)
        assert requests.post(url, files={"attachment": ("v1.bin", v1)}, auth=ALICE).ok
        first = requests.get(url, headers={"Range": "bytes=0-499"}, auth=ALICE)
        assert (first.status_code, first.content) == (206, v1[:500])
        assert requests.post(url, files={"attachment": ("v2.bin", v2)}, auth=ALICE).ok
        if (
            requests.head(url, auth=ALICE).headers["Last-Modified"]
            == first.headers["Last-Modified"]
        ):
            break
    else:
        pytest.fail("no replacement within one second")
    resumed = {"Range": "bytes=500-", "If-Range": first.headers["Last-Modified"]}
    rest = requests.get(url, headers=resumed, auth=ALICE, timeout=REQUEST_TIMEOUT)
    assert (rest.status_code, rest.content) == (200, v2)


#: The grace of the cluster that keeps replaced files, and how often its nodes collect.
GRACE_SECONDS = 2
GC_INTERVAL_SECONDS = 1


@pytest.mark.postgresql
@pytest.mark.parametrize("kind,grace", [("local", 0), ("s3", GRACE_SECONDS)])
def test_downloads_racing_replacements_on_two_nodes(request, pg_url, tmp_path, kind, grace):
    """Readers on both nodes. On local disk with no grace: a file replaced meanwhile is found
    gone by readers of either node, which read the record again. On S3 with a short grace:
    the files are kept for the downloads that read them, then the nodes' collectors delete
    them, and nothing else."""
    endpoint = request.getfixturevalue("s3_server") if kind == "s3" else None
    extra = [f"kinto.attachment.gc.replaced_grace_seconds = {grace}"]
    if grace:
        extra.append(f"kinto.attachment.data_files.gc_interval_seconds = {GC_INTERVAL_SECONDS}")
    with (
        database(f"downloads_{kind}", request.config, tmp_path) as pg,
        cluster_of(tmp_path, kind, pg, endpoint, extra_lines=extra) as cluster,
    ):
        a, b = cluster.nodes
        path = new_collection(a.server) + "/contested"
        url = path + "/attachment"
        readers = [a.url + url, b.url + url] * (READERS // 2)
        tally, replacements = race(a.url + url, readers)
        assert_race_clean(tally, replacements, cluster.output())
        # Once the grace has passed, the collectors have deleted every replaced file: the
        # store holds the record's file only.
        record = requests.get(a.url + path, auth=ALICE, timeout=REQUEST_TIMEOUT).json()["data"]
        current = cluster.key_of(record["attachment"]["location"])
        deadline = time.monotonic() + grace + GC_INTERVAL_SECONDS + 30
        while cluster.store.objects() != {current} and time.monotonic() < deadline:
            time.sleep(0.5)
        assert cluster.store.objects() == {current}
        cluster.check().assert_clean()
