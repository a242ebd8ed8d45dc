"""Live crash tests: ``kill -9`` of a server at a chosen moment, then a restart and the GC.

The server includes the test-only :mod:`tests.support.hooks`, which pauses requests where a crash
hurts most: after the blob is stored and before the transaction commits, and half-way through
writing a large upload. The test kills the server there (SIGKILL: no hook, no cleanup runs), starts
it again on the same database and store, and checks with :mod:`tests.support.invariants` what a
crash may leave (orphans, for the GC) and what it must not (dangling references). Then
``kinto-attachment-gc`` (no grace for orphans) must leave zero orphans and remove nothing that is
referenced, tus uploads in progress included.

The same pause, without a kill, lines a tus ``PATCH`` up with the GC: the upload's state is
being rewritten while the GC finds it expired.
"""

import base64
import contextlib
import dataclasses
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from kinto_attachment.web import streams

from ..support import invariants
from ..support.live import ALICE, BIN, COMMAND_TIMEOUT, REQUEST_TIMEOUT
from .test_live_concurrency import (
    S3_PART_SIZE,
    Answer,
    Background,
    Cluster,
    Node,
    assert_attachment_intact,
    call,
    cluster_of,
    database,
    hooks_env,
    lock_waiters,
    new_collection,
    post_attachment,
    record_of,
    sha256,
    start_gc,
    substitute,
    until,
)


pytestmark = [pytest.mark.live, pytest.mark.postgresql]

#: The GC's setting under test: orphans are collected however young they are.
NO_GRACE = "kinto.attachment.gc.orphans_grace_seconds = 0"
#: Upper bound of any wait for a request to reach a pause.
PAUSE_TIMEOUT = 60
TUS = {"Tus-Resumable": "1.0.0"}


@dataclasses.dataclass
class Crashable:
    """One server with the pause hooks, its pause folder, and a GC configuration."""

    cluster: Cluster
    pauses: Path
    gc_ini: Path

    @property
    def node(self) -> Node:
        return self.cluster.nodes[0]

    @property
    def server(self):
        return self.node.server

    def check(self):
        return self.cluster.check()


@pytest.fixture(scope="module", params=["local", "s3"])
def crashable(request, pg_url, tmp_path_factory):
    kind = request.param
    endpoint = request.getfixturevalue("s3_server") if kind == "s3" else None
    folder = tmp_path_factory.mktemp(f"crash-{kind}")
    pauses = folder / "pauses"
    pauses.mkdir()
    with (
        database(f"crash_{kind}", request.config, folder) as pg,
        cluster_of(folder, kind, pg, endpoint, count=1, env=hooks_env(pauses), threads=8) as c,
    ):
        gc_ini = folder / "gc.ini"
        gc_ini.write_text(
            substitute(
                c.inis[0].read_text(),
                r"^kinto\.attachment\.extensions = any$",
                "kinto.attachment.extensions = any\n" + NO_GRACE,
            )
        )
        yield Crashable(c, pauses, gc_ini)


# Pauses, kills, requests in the background.


@contextlib.contextmanager
def pausing(crashable, flag="pause", content=""):
    """Requests pause (see :mod:`tests.support.hooks`) while the block runs."""
    for marker in crashable.pauses.glob("paused-*"):
        marker.unlink()
    path = crashable.pauses / flag
    path.write_text(content)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def wait_paused(crashable, count, requests_, name="paused"):
    """Until ``count`` requests paused at ``name``; fail if one of them ended instead."""
    deadline = time.monotonic() + PAUSE_TIMEOUT
    while True:
        markers = crashable.pauses.glob(f"{name}-[0-9]*")
        if sum(len(m.read_text().splitlines()) for m in markers) >= count:
            return
        ended = [r.answer for r in requests_ if r.done()]
        assert not ended, f"requests ended before pausing at {name!r}: {ended}"
        assert time.monotonic() < deadline, f"{count} requests did not pause at {name!r}"
        time.sleep(0.02)


def kill(crashable, background):
    """``kill -9`` the server; the requests it was serving are cut, never answered."""
    crashable.node.kill()
    for request in background:
        assert request.result().status is None, request.answer


def run_gc(crashable, ini=None):
    result = subprocess.run(
        [str(BIN / "kinto-attachment-gc"), "--ini", str(ini or crashable.gc_ini)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=crashable.cluster.folder,
        env=hooks_env(None),
        timeout=COMMAND_TIMEOUT,
    )
    assert result.returncode == 0, result
    return result


# tus.


def tus_create(server, path, length, filename="data.bin"):
    name = base64.b64encode(filename.encode()).decode()
    response = requests.post(
        f"{server.url}{path}/attachment/uploads",
        headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": f"filename {name}"},
        auth=ALICE,
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 201, response.text
    return response.headers["Location"]


def tus_patch(url, offset, chunk):
    headers = {
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
    }
    return call(f"PATCH {url} at {offset}", "PATCH", url, data=chunk, headers=headers, auth=ALICE)


def tus_offset(url):
    """``(status, Upload-Offset)`` of a HEAD of the upload."""
    response = requests.head(url, headers=TUS, auth=ALICE, timeout=REQUEST_TIMEOUT)
    return response.status_code, response.headers.get("Upload-Offset")


def expect(answer, status):
    assert isinstance(answer, Answer) and answer.status == status, answer


# 6. A crash after the blob is stored and before the commit; a crash while a large upload is
#    being written. The GC then removes what they left, and nothing else.


def test_crash_between_store_and_commit_then_gc(crashable):
    server = crashable.server
    baseline = crashable.check()
    records = new_collection(server)
    kept = f"{records}/kept"
    expect(post_attachment(server, kept, b"kept content"), 201)
    data_file = f"kept-{uuid.uuid4().hex[:8]}"
    data_url = f"{server.url}/data/files/{data_file}"
    expect(call("post", "POST", f"{server.url}/data/files?id={data_file}", data=b"data"), 200)
    in_progress = os.urandom(200_000)
    upload_url = tus_create(server, f"{records}/in-progress", len(in_progress))
    expect(tus_patch(upload_url, 0, in_progress[:120_000]), 204)
    # Paused on the read that takes the body past this, once the reads before it were fed: more
    # than one S3 part (or a staged file's first MiBs) is then stored.
    pause_after = S3_PART_SIZE + streams.UPLOAD_CHUNK_SIZE + 1
    large = os.urandom(pause_after + streams.UPLOAD_CHUNK_SIZE)
    # Two writes paused in one collection would wait for each other: Kinto gives a collection's
    # records distinct timestamps, and the second one's is checked against the first's.
    other = new_collection(server)

    with pausing(crashable), pausing(crashable, "pause-body", str(pause_after)):
        replacing = Background(post_attachment, server, kept, b"replacement")
        creating = Background(post_attachment, server, f"{other}/created", b"created")
        wait_paused(crashable, 2, [replacing, creating])
        writing = Background(post_attachment, server, f"{records}/large", large)
        wait_paused(crashable, 1, [writing], name="paused-body")
        kill(crashable, [replacing, creating, writing])
    crashable.node.start()
    server = crashable.server

    before = crashable.check().since(baseline)
    assert not before.dangling and not before.inconsistent, before
    # What the crash stranded: two stored blobs, and the large upload's partial data.
    assert len(before.orphans) >= 3, before
    if crashable.cluster.kind == "local":
        assert any(o.rsplit("/", 1)[-1].startswith(".upload-") for o in before.orphans), before
    else:
        assert any(o.startswith(invariants.MULTIPART_PREFIX) for o in before.orphans), before

    run_gc(crashable)

    crashable.check().assert_clean()
    assert_attachment_intact(crashable.cluster, server, kept, {sha256(b"kept content")})
    assert record_of(server, f"{other}/created")[0] == 404
    assert record_of(server, f"{records}/large")[0] == 404
    fetched = call("get", "GET", data_url)
    assert (fetched.status, fetched.content) == (200, b"data")
    # The upload in progress survived the GC: it can be finished.
    assert tus_offset(upload_url) == (200, "120000")
    expect(tus_patch(upload_url, 120_000, in_progress[120_000:]), 204)
    assert_attachment_intact(
        crashable.cluster, server, f"{records}/in-progress", {sha256(in_progress)}
    )
    crashable.check().assert_clean()


# 8. The last PATCH of a tus upload is cut in its commit; the client retries it.


def tus_last_patch_killed(crashable, path, content, split=200_000):
    """The URL of a tus upload of ``content`` at ``path`` whose first ``split`` bytes were
    sent, and whose last PATCH, the rest, was killed in its commit; the server restarted."""
    url = tus_create(crashable.server, path, len(content))
    expect(tus_patch(url, 0, content[:split]), 204)
    with pausing(crashable):
        last = Background(tus_patch, url, split, content[split:])
        wait_paused(crashable, 1, [last])
        kill(crashable, [last])
    crashable.node.start()
    return url


def test_tus_last_patch_killed_in_its_commit_then_retried(crashable):
    """On local disk the first chunk is hashed behind its answer by the server's thread,
    which the kill takes with it: the restarted server reads it back to finish the hash."""
    server = crashable.server
    baseline = crashable.check()
    path = new_collection(server) + "/resumed"
    content = os.urandom(300_000)
    url = tus_last_patch_killed(crashable, path, content)
    server = crashable.server

    assert crashable.check().since(baseline).dangling == []
    # The crash rolled the last PATCH back: the upload is where it was, and can go on.
    assert tus_offset(url) == (200, "200000")
    expect(tus_patch(url, 200_000, content[200_000:]), 204)

    key = assert_attachment_intact(crashable.cluster, server, path, {sha256(content)})
    # Finished: HEAD tells it is done (its final offset) until it would have expired.
    assert tus_offset(url) == (200, "300000")
    run_gc(crashable)
    crashable.check().assert_clean()
    assert assert_attachment_intact(crashable.cluster, server, path, {sha256(content)}) == key


# 9. tus concatenation: the final upload is killed in its commit; the client sends it again.


def tus_partial(server, path, content):
    """A finished partial upload of ``content`` (sent with its creation); its URL."""
    response = requests.post(
        f"{server.url}{path}/attachment/uploads",
        data=content,
        headers={
            **TUS,
            "Upload-Concat": "partial",
            "Upload-Length": str(len(content)),
            "Content-Type": "application/offset+octet-stream",
        },
        auth=ALICE,
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 201, response.text
    return response.headers["Location"]


def tus_final(server, path, urls):
    headers = {
        **TUS,
        "Upload-Concat": "final;" + " ".join(urls),
        "Upload-Metadata": "filename " + base64.b64encode(b"joined.bin").decode(),
    }
    url = f"{server.url}{path}/attachment/uploads"
    return call(f"POST final of {path}", "POST", url, headers=headers, auth=ALICE)


def test_tus_final_upload_killed_in_its_commit_then_sent_again(crashable):
    """The store has concatenated the partial uploads and the record is written, not
    committed: after the crash the partial uploads are as they were, the final upload is made
    when sent again, and the GC removes the blob the crash left. On S3 the partial uploads'
    multipart uploads were completed, one copied, the other sent again (their completed
    objects are recognised, as a retried last PATCH's); on local disk the first partial
    upload's file was grown by the others' bytes under a second name, which the retry cuts
    back to the partial's length."""
    server = crashable.server
    baseline = crashable.check()
    path = new_collection(server) + "/joined"
    contents = [os.urandom(S3_PART_SIZE + 1000), os.urandom(100_000)]
    urls = [tus_partial(server, path, content) for content in contents]

    with pausing(crashable):
        final = Background(tus_final, server, path, urls)
        wait_paused(crashable, 1, [final])
        kill(crashable, [final])
    crashable.node.start()
    server = crashable.server

    assert crashable.check().since(baseline).dangling == []
    for url, content in zip(urls, contents, strict=True):
        assert tus_offset(url) == (200, str(len(content)))
    expect(tus_final(server, path, urls), 201)
    whole = {sha256(b"".join(contents))}
    key = assert_attachment_intact(crashable.cluster, server, path, whole)
    assert [tus_offset(url)[0] for url in urls] == [404, 404]  # Consumed.
    run_gc(crashable)
    crashable.check().assert_clean()
    assert assert_attachment_intact(crashable.cluster, server, path, whole) == key


# 7. The GC against a tus PATCH: never remove an upload a PATCH is writing to.


def set_upload_expiry(pg_url, upload_id, expires):
    """Make the recorded expiration of an upload ``expires`` (ms): as if its last request had
    been that long ago."""
    import psycopg2

    connection = psycopg2.connect(pg_url, connect_timeout=10)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(
                "UPDATE objects SET data = jsonb_set(data, '{expires}', %s::jsonb)"
                " WHERE resource_name = 'attachment-upload' AND id = %s AND NOT deleted",
                (str(expires), upload_id),
            )
            assert cursor.rowcount == 1
    finally:
        connection.close()


def now_ms():
    return int(time.time() * 1000)


def test_gc_never_removes_an_upload_a_patch_is_writing_to(crashable):
    server = crashable.server
    baseline = crashable.check()
    pg = crashable.cluster.pg
    path = new_collection(server) + "/written"
    content = os.urandom(300_000)
    url = tus_create(server, path, len(content))
    expect(tus_patch(url, 0, content[:100_000]), 204)
    expires = now_ms() + 2500  # Time enough for the PATCH to read it, even on a busy machine.
    set_upload_expiry(pg, url.rsplit("/", 1)[-1], expires)

    with pausing(crashable):
        # Read before its expiration, this PATCH will commit a new one...
        writing = Background(tus_patch, url, 100_000, content[100_000:200_000])
        wait_paused(crashable, 1, [writing])
        while now_ms() <= expires + 100:
            time.sleep(0.05)
        # ...which the GC does not see yet: for it, the upload has expired.
        gc = start_gc(crashable.cluster, env=hooks_env(None))
        try:
            until(lambda: gc.poll() is not None or lock_waiters(pg), "the GC ends or waits")
        except BaseException:
            gc.kill()
            raise
    expect(writing.result(), 204)
    out, err = gc.communicate(timeout=COMMAND_TIMEOUT)
    assert gc.returncode == 0, (out, err)

    assert tus_offset(url) == (200, "200000")
    expect(tus_patch(url, 200_000, content[200_000:]), 204)
    assert_attachment_intact(crashable.cluster, server, path, {sha256(content)})
    crashable.check().since(baseline).assert_clean()
