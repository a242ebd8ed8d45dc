"""The S3 and GCS stores under failure (found by review, 2026-12-05): what an outage, a lost
answer or a store that stops answering does to the files already stored and to the requests
waiting on the store.

Real servers only (moto server, fake-gcs-server), reached through loopback TCP proxies that cut
answers or drop connections to play the network; no SDK is mocked (callables of the real
clients are at most wrapped, to act at a chosen instant).
"""

import json
import os
import threading
import time

import pytest

from kinto_attachment import adoption, gc
from kinto_attachment.state import data_file_entries

from ..conftest import ALICE, s3_settings
from ..support.gcs_server import gcs_settings, running
from ..support.live import free_port
from ..support.tcpproxy import TcpProxy
from .test_remote_store_edges import store_app


URL = "/v1/buckets/blog/collections/articles/records/r1"
OTHER = "/v1/buckets/blog/collections/articles/records/r2"
KiB = 1024
MiB = 1024 * KiB
#: A schema the records' ``title`` must follow: a record write it refuses fails an upload.
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}}}


def _upload(app, url, content, filename, status=(200, 201), data=None):
    params = [("data", json.dumps(data))] if data is not None else []
    return app.post(
        url + "/attachment",
        params=params,
        upload_files=[("attachment", filename, content)],
        headers=ALICE,
        status=status,
    )


def _key(app, location):
    base_url = app.app.registry.attachment_settings.base_url
    assert location.startswith(base_url), location
    return location[len(base_url) :]


def _stored(app, location):
    """The bytes the store holds at ``location``, or None."""
    store = app.app.registry.attachment_store
    try:
        with store.open(_key(app, location)) as f:
            return f.read()
    except FileNotFoundError:
        return None


@pytest.fixture
def s3_proxied(s3_server):
    """S3 (moto) behind a proxy, with the SDK's retries of production (3 attempts) and names
    that are not random (``randomize = false``: a name freed by a delete can be taken again)."""
    host, port = s3_server.removeprefix("http://").rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    settings = s3_settings(f"http://127.0.0.1:{proxy.port}")
    settings["kinto.attachment.aws.max_attempts"] = "3"
    settings["kinto.attachment.randomize"] = "false"
    yield proxy, store_app(settings)
    proxy.close()


@pytest.fixture
def gcs_proxied(tmp_path):
    """fake-gcs-server behind a proxy (session URIs too), with the client's retries on (10 s
    rather than 30) and names that are not random."""
    port = free_port()
    proxy = TcpProxy("127.0.0.1", port)
    external = f"http://127.0.0.1:{proxy.port}"
    with running(tmp_path, port=port, external_url=external) as direct:
        settings = gcs_settings(direct, chunk_size=str(256 * KiB), retry_seconds="10")
        settings["kinto.attachment.gcloud.endpoint_url"] = external
        settings["kinto.attachment.randomize"] = "false"
        yield proxy, store_app(settings)
    proxy.close()


def _in_thread(action):
    """Run ``action()`` in another thread (another request, as another worker would serve
    it) and wait for it; its result."""
    results, failures = [], []

    def run():
        try:
            results.append(action())
        except BaseException as e:  # pragma: no cover (reported below)
            failures.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not failures, failures
    return results[0]


# 1. A delete retried after its answer was lost deletes the file that took the name meanwhile.


def _r2_kept_its_file(app, taken, sends):
    """After the delete of a file named ``report.txt`` was sent again while r2 uploaded a
    file of that name."""
    assert len(sends) >= 2, "the delete was not sent again"
    other = taken[0]
    assert not other["location"].endswith("/report.txt")  # In quarantine (state.replaced).
    assert app.get(OTHER, headers=ALICE).json["data"]["attachment"] == other
    assert _stored(app, other["location"]) == b"r2's own file", (
        "r2's file was deleted by the retry of the delete of the file r1 let go"
    )


def _letting_go(app, how):
    """The action that lets a file named ``report.txt`` go: r1's replaced (its blob deleted
    once the transaction has committed), or an upload refused once its file is stored (the
    collection's schema refuses its record: its blob deleted after the abort; found by
    review, 2026-12-05)."""
    if how == "replaced":
        old = _upload(app, URL, b"r1's first version", "report.txt").json
        assert old["location"].endswith("/report.txt")
        return lambda: _upload(app, URL, b"r1's second version", "report-v2.txt")
    collection = "/v1/buckets/blog/collections/articles"
    app.patch_json(collection, {"data": {"schema": SCHEMA}}, headers=ALICE)
    return lambda: _upload(app, URL, b"refused", "report.txt", status=400, data={"title": 5})


LETTING_GO = ["replaced", "refused"]


@pytest.mark.parametrize("how", LETTING_GO)
def test_s3_retried_delete_spares_the_file_that_took_the_name_meanwhile(s3_proxied, how):
    """Found by review (2026-12-05).

    The deletion of a replaced blob (``DeleteObjects``) is sent again by botocore
    when its answer is lost (``aws.max_attempts``, 3 by default): the first request did
    delete the object, the name was free for a while (no blob, and with a grace of 0 no
    ``replaced`` entry reserves it; the collector's claim frees it as well), and another
    upload (``randomize = false``) stored its own file under it; the retry deletes that file.
    Record r2 then names a blob that does not exist: its file is lost.

    Expected: a delete is never repeated once the name may have been given again (no SDK
    retries for deletes, or the name kept reserved until the delete is known to be done, or
    a conditional delete): r2's file is still there."""
    proxy, app = s3_proxied
    let_go = _letting_go(app, how)
    store = app.app.registry.attachment_store
    sends, taken = [], []

    def before_send(**kwargs):
        sends.append(1)
        if len(sends) == 1:  # S3 deletes the object, and its answer is lost.
            proxy.cut_after = 0
        elif len(sends) == 2:  # botocore sends it again; meanwhile r2 took the name.
            proxy.cut_after = None
            taken.append(
                _in_thread(lambda: _upload(app, OTHER, b"r2's own file", "report.txt").json)
            )

    store.client.meta.events.register("before-send.s3.DeleteObjects", before_send)
    try:
        let_go()
    finally:
        store.client.meta.events.unregister("before-send.s3.DeleteObjects", before_send)
        proxy.cut_after = None
    _r2_kept_its_file(app, taken, sends)


@pytest.mark.parametrize("how", LETTING_GO)
def test_gcs_retried_delete_spares_the_file_that_took_the_name_meanwhile(gcs_proxied, how):
    """Found by review (2026-12-05).

    As on S3, GCS's batch delete of a replaced blob is sent again by the store's
    retry policy (``gcloud.retry_seconds``, 30 by default) when its answer is lost
    (:func:`kinto_attachment.storage.gcs.batch.delete_batch` through ``store.retried``); the
    first request had deleted the object, another upload took the free name meanwhile, and
    the retry deletes that upload's file (a delete by name, without ``ifGenerationMatch``).

    Expected: r2's file is still there."""
    proxy, app = gcs_proxied
    let_go = _letting_go(app, how)
    store = app.app.registry.attachment_store
    post = store.session.post
    sends, taken = [], []

    def watched(url, *args, **kwargs):
        if "/batch/" in url:
            sends.append(1)
            if len(sends) == 1:  # GCS deletes the object, and its answer is lost.
                proxy.cut_after = 0
            elif len(sends) == 2:  # Sent again; meanwhile r2 took the name.
                proxy.cut_after = None
                taken.append(
                    _in_thread(lambda: _upload(app, OTHER, b"r2's own file", "report.txt").json)
                )
        return post(url, *args, **kwargs)

    store.session.post = watched
    try:
        let_go()
    finally:
        store.session.post = post
        proxy.cut_after = None
    _r2_kept_its_file(app, taken, sends)


# 2. A GCS tus upload whose recorded bytes are gone: lost for good (410), not a 503 forever.


@pytest.mark.parametrize("last", [False, True], ids=["patch", "last-patch"])
def test_gcs_tus_upload_whose_bytes_are_gone_is_410_not_503(gcs_server, last):
    """Found by review (2026-12-05).

    ``IResumableStore.append``/``finish`` must raise ``FileNotFoundError`` when the
    bytes recorded before ``offset`` are gone for good (S3 does: its HeadObject after a
    failed part; local disk: the missing file), which the tus views answer with a 410 (start
    a new upload). On GCS the upload's bytes are one object under ``__uploads__/`` (``temp``);
    once it is gone (a bucket lifecycle rule on ``__uploads__/``, an operator's cleanup),
    every compose of it fails and :meth:`GCSResumable.append` / ``finish`` raise
    ``StorageUnavailable``: a 503 with ``Retry-After`` that the client retries in vain, for
    ever (GCS answers 404 to a compose of a missing source; fake-gcs-server a 500).

    Expected: a 410, as on the other stores (e.g. look the source up once a compose fails)."""
    from ..views.test_resumable import create, patch

    app = store_app(gcs_settings(gcs_server, chunk_size=str(256 * KiB)))
    store = app.app.registry.attachment_store
    content = os.urandom(1000)
    _, url = create(app, len(content))
    patch(app, url, content[:500], 0)
    working = [b.key for b in store.iter_blobs() if b.temporary]
    assert len(working) == 1  # The upload's bytes so far.
    store.delete_many(working)  # Gone: a lifecycle rule, a cleanup.
    rest = content[500:] if last else content[500:700]
    response = patch(app, url, rest, 500, status="*")
    assert response.status_int == 410, (response.status_int, response.body[:300])


# 3. Aborts left over from an outage, retried in the next upload's request, one after another.


def test_s3_leftover_aborts_do_not_hold_the_next_upload(s3_server):
    """Found by review (2026-12-05).

    A multipart upload whose abort failed (S3 unreachable) is remembered
    (``S3Store._unaborted``) and aborted again by :meth:`S3Store.stage`, i.e. in the request
    of the next upload, before its own bytes, one abort after another, each with the whole
    timeout budget of a request (``read_timeout`` × ``max_attempts``: 3 minutes by default),
    and put back when it fails again. Every upload that failed during an outage makes the
    next upload wait longer: with S3 accepting connections but not answering, a request (and
    its server thread) is held N times the budget of one S3 request, and that request is
    whoever comes first.

    Expected: an upload waits for its own S3 requests only: here (S3 not answering, a read
    timeout of 1 s, one attempt) a 503 as soon as when nothing is left over, however many aborts
    are left over (retry them in the background, or a bounded few per request)."""
    host, port = s3_server.removeprefix("http://").rsplit(":", 1)
    gate = TcpProxy(host, int(port))
    try:
        settings = s3_settings(f"http://127.0.0.1:{gate.port}")
        settings["kinto.attachment.aws.read_timeout"] = "1"
        settings["kinto.attachment.aws.part_size"] = str(5 * MiB)
        app = store_app(settings)
        store = app.app.registry.attachment_store
        # What an upload waits when S3 does not answer, nothing being left over.
        gate.hole()
        started = time.monotonic()
        _upload(app, URL, b"small", "small.txt", status=503)
        alone = time.monotonic() - started
        gate.up()
        # Six uploads under way (a part each sent) when S3 goes down: their aborts fail.
        staged = []
        for number in range(6):
            writer = store.stage(f"blog/articles/big-{number}.bin", "application/octet-stream")
            writer.write(os.urandom(5 * MiB + 1))
            staged.append(writer)
        gate.down()
        for writer in staged:
            with pytest.raises(OSError):
                writer.commit()
        gate.hole()  # S3 accepts connections and no longer answers.
        started = time.monotonic()
        response = _upload(app, URL, b"small", "small.txt", status="*")
        elapsed = time.monotonic() - started
        assert response.status_int == 503, response.body[:300]
        assert elapsed < alone + 2, (
            f"the upload waited {elapsed:.1f} s, {alone:.1f} s alone: six earlier uploads' "
            "aborts were retried first"
        )
    finally:
        gate.close()


def test_a_record_deleted_while_s3_is_unreachable_leaves_its_file_to_the_collector(s3_proxied):
    """The record's deletion commits (200), its blob's deletion fails
    after the commit; the blob is left for the collector, which removes it, and the name is
    never given to another file while the old one is still there."""
    proxy, app = s3_proxied
    registry = app.app.registry
    adoption.adopt(registry)
    keep = _upload(app, OTHER, b"r2's file", "keep.txt").json
    old = _upload(app, URL, b"r1's file", "report.txt").json
    proxy.down()
    try:
        app.delete(URL, headers=ALICE, status=200)
    finally:
        proxy.up()
    app.get(URL, headers=ALICE, status=404)
    assert _stored(app, old["location"]) == b"r1's file"  # Left behind.
    again = _upload(app, URL, b"r1's new file", "report.txt").json
    assert again["location"] != old["location"]
    gc.collect(registry, now=data_file_entries.msec_time() + 2 * 86400 * 1000)
    assert _stored(app, old["location"]) is None
    assert _stored(app, again["location"]) == b"r1's new file"
    assert _stored(app, keep["location"]) == b"r2's file"
