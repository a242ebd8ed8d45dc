"""The S3 and GCS stores when an answer is lost or a body is cut (outages played with a
loopback proxy, :mod:`tests.support.tcpproxy`, on moto and fake-gcs-server), and ranges of
objects cut short behind our back. No SDK is mocked."""

import hashlib
import os
import threading
from urllib.parse import unquote

import pytest
import requests
from pyramid.exceptions import ConfigurationError
from webob import Request

from kinto_attachment import adoption, gc
from kinto_attachment.state import data_file_entries
from kinto_attachment.storage.base import object_size
from kinto_attachment.storage.gcs.batch import _statuses

from ..conftest import ALICE, build_settings, make_app, s3_client, s3_settings
from ..support.gcs_server import gcs_settings, running
from ..support.live import free_port
from ..support.tcpproxy import TcpProxy
from ..views.test_resumable import create, patch
from ..views.test_resumable_concatenation import final_upload, partial_upload
from .test_gcs import gcs_app
from .test_remote_data_loss import _app
from .test_remote_store_edges import store_app
from .test_s3 import s3_app


URL = "/v1/buckets/blog/collections/articles/records/r1"
OTHER = "/v1/buckets/blog/collections/articles/records/r2"
KiB = 1024
MiB = 1024 * KiB


def _s3_proxied(s3_server, attempts, **extra):
    """S3 (moto) behind a proxy, ``aws.max_attempts = attempts``, names not random, and
    ``kinto.attachment.NAME = value`` for each of ``extra``."""
    host, port = s3_server.removeprefix("http://").rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    settings = s3_settings(f"http://127.0.0.1:{proxy.port}")
    settings["kinto.attachment.aws.max_attempts"] = str(attempts)
    settings["kinto.attachment.randomize"] = "false"
    settings.update({f"kinto.attachment.{k}": v for k, v in extra.items()})
    return proxy, store_app(settings)


@pytest.fixture
def s3_proxied(s3_server):
    """S3 behind a proxy, with the SDK's retries of production (3 attempts)."""
    proxy, app = _s3_proxied(s3_server, 3)
    yield proxy, app
    proxy.close()


@pytest.fixture
def s3_proxied_once(s3_server):
    """As :func:`s3_proxied`, with ``aws.max_attempts = 1`` (no retry)."""
    proxy, app = _s3_proxied(s3_server, 1)
    yield proxy, app
    proxy.close()


@pytest.fixture
def gcs_proxied(tmp_path):
    """fake-gcs-server behind a proxy (session URIs too), with the client's retries on (10 s)
    and names that are not random."""
    port = free_port()
    proxy = TcpProxy("127.0.0.1", port)
    external = f"http://127.0.0.1:{proxy.port}"
    with running(tmp_path, port=port, external_url=external) as direct:
        settings = gcs_settings(direct, chunk_size=str(256 * KiB), retry_seconds="10")
        settings["kinto.attachment.gcloud.endpoint_url"] = external
        settings["kinto.attachment.randomize"] = "false"
        yield proxy, store_app(settings)
    proxy.close()


def _post(app, url, content, filename, status=(200, 201)):
    return app.post(
        url + "/attachment",
        upload_files=[("attachment", filename, content)],
        headers=ALICE,
        status=status,
    )


def _in_thread(action):
    results, failures = [], []

    def run():
        try:
            results.append(action())
        except BaseException as e:  # noqa: BLE001 (reported below)
            failures.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not failures, failures
    return results[0]


def _stored(app, key):
    store = app.app.registry.attachment_store
    try:
        with store.open(key) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _key(app, location):
    base_url = app.app.registry.attachment_settings.base_url
    return location[len(base_url) :]


def _ranged(kinto, status=None):
    return kinto.app.get(
        URL + "/attachment",
        headers={**ALICE, "Range": "bytes=50-60"},
        status=status,
        expect_errors=True,
    )


def _lose_answers_of(proxy, store, operation, count=1):
    """The answers of the next ``count`` requests of ``operation`` are lost (S3 did the
    work); returns the list of those sent."""
    sent = []

    def before_send(**kwargs):
        sent.append(1)
        proxy.cut_after = 0 if len(sent) <= count else None

    store.client.meta.events.register(f"before-send.s3.{operation}", before_send)
    return sent, lambda: store.client.meta.events.unregister(
        f"before-send.s3.{operation}", before_send
    )


def _pending(app):
    store = app.app.registry.attachment_store
    return [(p.key, p.upload_id) for p in store.iter_pending()]


def _post_with_complete_answer_lost(proxy, app):
    store = app.app.registry.attachment_store
    content = os.urandom(9 * MiB)
    sent, stop = _lose_answers_of(proxy, store, "CompleteMultipartUpload")
    try:
        response = _post(app, URL, content, "big.bin", status="*")
    finally:
        stop()
        proxy.cut_after = None
    assert sent, "no multipart upload"
    objects = [listed.key for listed in store.iter_blobs()]
    if response.status_int in (200, 201):
        attachment = response.json
        assert objects == [_key(app, attachment["location"])]
        assert _stored(app, objects[0]) == content
    else:
        assert response.status_int == 503
        assert objects == [], f"a 503 upload left {objects} under its name"
    assert _pending(app) == []


def test_s3_range_past_the_end_of_an_object_cut_short_is_404_not_503(tmp_path_factory, request):
    """Found by review (2026-12-05).

    It was: an S3 object cut short behind our back is a lost file (404 for HEAD and GET),
    but a ``Range`` starting past its new end got S3's 416 (``InvalidRange``), a 503 that
    tells clients to retry a file that is gone. Fixed: the store's ``open`` takes a range
    past the end for a missing blob: 404."""
    kinto = s3_app(tmp_path_factory, request)
    content = os.urandom(100)
    location = kinto.upload(URL, content).json["location"]
    client = s3_client(kinto.registry.attachment_store.client.meta.endpoint_url)
    client.put_object(Bucket=kinto.bucket, Key=kinto.key_of(location), Body=b"cut")
    whole = kinto.app.get(URL + "/attachment", headers=ALICE, expect_errors=True)
    assert whole.status_int == 404
    assert _ranged(kinto).status_int == 404


def test_gcs_range_past_the_end_of_an_object_cut_short_is_404_not_503(gcs_server):
    """Found by review (2026-12-05).

    It was: as on S3, GCS's 416 for a range past the end of an object cut short was a 503.
    Fixed: 404."""
    kinto = gcs_app(gcs_server)
    content = os.urandom(100)
    location = kinto.upload(URL, content).json["location"]
    kinto.blob(location).upload_from_string(b"cut")
    whole = kinto.app.get(URL + "/attachment", headers=ALICE, expect_errors=True)
    assert whole.status_int == 404
    assert _ranged(kinto).status_int == 404


def test_s3_download_cut_by_the_network_does_not_end_as_a_whole_body(s3_proxied):
    """Found by review (2026-12-05).

    It was: a GET of an attachment on S3 whose stream the network cut ended quietly, short
    of the ``Content-Length`` announced (a caching proxy may keep it as the whole file).
    Fixed: reading the body raises (the server aborts the connection), as on GCS."""
    proxy, app = s3_proxied
    content = os.urandom(MiB)
    _post(app, URL, content, "big.bin")
    request = Request.blank(URL + "/attachment", headers={"Authorization": ALICE["Authorization"]})
    proxy.cut_after = 64 * KiB
    try:
        response = request.get_response(app.app, catch_exc_info=True)
        body, failed = b"", None
        try:
            for chunk in response.app_iter:
                body += chunk
        except Exception as e:  # noqa: BLE001 (what we want)
            failed = e
        finally:
            if hasattr(response.app_iter, "close"):
                response.app_iter.close()
    finally:
        proxy.cut_after = None
    assert proxy.cuts
    assert response.status_int == 200
    assert int(response.headers["Content-Length"]) == len(content)
    assert failed is not None or body == content, (
        f"a body of {len(body)} bytes ended quietly, {len(content)} announced"
    )


def test_s3_concatenation_whose_read_back_is_cut_records_the_right_sha256(s3_proxied):
    """Found by review (2026-12-05).

    It was: a final tus upload on S3 reads the composed object back to finish its sha256;
    a read cut by the network simply ended (botocore opens urllib3's stream without
    enforcing the length, and the store's ``Body`` read that stream), and the record got
    the sha256 of a prefix of its file, with a 201. Fixed: ``Body`` counts the bytes against
    ``Content-Length``; a short body is the store's failure (503), or the right sha256."""
    proxy, app = s3_proxied
    store = app.app.registry.attachment_store
    contents = [os.urandom(5 * MiB), os.urandom(MiB)]
    urls = [partial_upload(app, content) for content in contents]

    def before_get(request, **kwargs):
        if "whole" in request.url:
            proxy.cut_after = 64 * KiB  # The read-back of the composed object: cut.

    store.client.meta.events.register("before-send.s3.GetObject", before_get)
    try:
        response = final_upload(app, urls, status="*")
    finally:
        store.client.meta.events.unregister("before-send.s3.GetObject", before_get)
        proxy.cut_after = None
    assert proxy.cuts
    if response.status_int == 201:
        attachment = app.get(URL, headers=ALICE).json["data"]["attachment"]
        assert attachment["hash"] == hashlib.sha256(b"".join(contents)).hexdigest(), (
            "the record's sha256 is that of a body cut short"
        )
    else:
        assert response.status_int == 503, response.body[:300]


def test_s3_concatenation_cleanup_delete_sent_again_spares_the_file_that_took_the_name(
    s3_proxied,
):
    """Found by review (2026-12-05).

    It was: a final tus upload on S3 (``randomize = false``) composes ``whole.txt``, then
    reads it back for its sha256; that read failed, and the object was deleted with a plain
    delete, which botocore sends again when its answer is lost, the name held by nothing:
    another record's upload took the free name in between, and the retry deleted its file.
    Fixed: the delete runs with the name held in quarantine (``holding``, as every other
    delete of a name that may be given again): r2 gets another name, and keeps its file."""
    proxy, app = s3_proxied
    store = app.app.registry.attachment_store
    urls = [partial_upload(app, os.urandom(5 * MiB)), partial_upload(app, os.urandom(MiB))]
    deletes, taken = [], []

    def before_get(request, **kwargs):
        if "whole" in request.url and not deletes:
            proxy.down()  # The read-back of the composed object fails (every attempt).

    def before_delete(**kwargs):
        deletes.append(1)
        if len(deletes) == 1:  # S3 deletes the object, and its answer is lost.
            proxy.up()
            proxy.cut_after = 0
        elif len(deletes) == 2:  # botocore sends it again; meanwhile r2 took the name.
            proxy.cut_after = None
            taken.append(_in_thread(lambda: _post(app, OTHER, b"r2's own file", "whole.txt").json))

    events = store.client.meta.events
    events.register("before-send.s3.GetObject", before_get)
    events.register("before-send.s3.DeleteObjects", before_delete)
    try:
        response = final_upload(app, urls, status="*")
    finally:
        events.unregister("before-send.s3.GetObject", before_get)
        events.unregister("before-send.s3.DeleteObjects", before_delete)
        proxy.up()
        proxy.cut_after = None
    assert response.status_int == 503, response.body[:300]
    assert len(deletes) >= 2, "the delete was not sent again"
    other = taken[0]
    assert not other["location"].endswith("/whole.txt")  # Held while it was deleted.
    assert app.get(OTHER, headers=ALICE).json["data"]["attachment"] == other
    assert _stored(app, _key(app, other["location"])) == b"r2's own file", (
        f"r2's file {other['location']} was deleted by the retried delete of the concatenation"
    )


def test_gcs_concatenation_cleanup_delete_sent_again_spares_the_file_that_took_the_name(
    gcs_proxied,
):
    """Found by review (2026-12-05).

    It was: as on S3, the delete of a composed blob whose read-back failed, sent again by the
    store's retry policy, deleted the file another upload had put under the freed name.
    Fixed: the name is held while it is deleted."""
    proxy, app = gcs_proxied
    store = app.app.registry.attachment_store
    urls = [partial_upload(app, os.urandom(300 * KiB)), partial_upload(app, os.urandom(MiB))]
    get, post = store.session.get, store.session.post
    deletes, taken = [], []

    def watched_get(url, *args, **kwargs):
        if "whole" in url and not deletes:
            proxy.down()  # The read-back of the composed blob fails.
        return get(url, *args, **kwargs)

    def watched_post(url, *args, **kwargs):
        if "/batch/" in url:
            deletes.append(1)
            if len(deletes) == 1:  # GCS deletes the object, and its answer is lost.
                proxy.up()
                proxy.cut_after = 0
            elif len(deletes) == 2:  # Sent again; meanwhile r2 took the name.
                proxy.cut_after = None
                taken.append(
                    _in_thread(lambda: _post(app, OTHER, b"r2's own file", "whole.txt").json)
                )
        return post(url, *args, **kwargs)

    store.session.get, store.session.post = watched_get, watched_post
    try:
        response = final_upload(app, urls, status="*")
    finally:
        store.session.get, store.session.post = get, post
        proxy.up()
        proxy.cut_after = None
    assert response.status_int == 503, response.body[:300]
    assert len(deletes) >= 2, "the delete was not sent again"
    other = taken[0]
    assert not other["location"].endswith("/whole.txt")  # Held while it was deleted.
    assert app.get(OTHER, headers=ALICE).json["data"]["attachment"] == other
    assert _stored(app, _key(app, other["location"])) == b"r2's own file", (
        f"r2's file {other['location']} was deleted by the retried delete of the concatenation"
    )


def test_gcs_post_whose_last_chunk_answer_is_lost_leaves_no_object_under_its_name(
    gcs_proxied,
):
    """Found by review (2026-12-05).

    It was: a POST larger than ``chunk_size`` goes through a GCS resumable session; GCS
    made the object at the last chunk and that answer was lost: a 503, and the object stayed
    under its name (``big.bin``), named by no record, until the orphan pass. Fixed: the
    upload looks the object up, and takes it when it is the session's (its token, size and
    CRC32C): a 201 with that object; else a 503 that leaves none."""
    proxy, app = gcs_proxied
    store = app.app.registry.attachment_store
    put = store.session.put
    lost = []

    def watched_put(url, *args, **kwargs):
        total = kwargs.get("headers", {}).get("Content-Range", "").rpartition("/")[2]
        if total not in ("", "*") and not lost:
            lost.append(url)
            proxy.cut_after = 0
        try:
            return put(url, *args, **kwargs)
        finally:
            proxy.cut_after = None

    content = os.urandom(600 * KiB)
    store.session.put = watched_put
    try:
        response = _post(app, URL, content, "big.bin", status="*")
    finally:
        store.session.put = put
        proxy.cut_after = None
    assert lost, "no resumable session"
    objects = [listed.key for listed in store.iter_blobs()]
    if response.status_int in (200, 201):
        assert objects == [_key(app, response.json["location"])]
    else:
        assert response.status_int == 503, response.body[:300]
        assert objects == [], f"a 503 upload left {objects} under its name"


def test_s3_post_whose_complete_answer_is_lost_and_retried_by_the_sdk(s3_proxied):
    """Held against a review (2026-12-05).

    A POST larger than a part; S3 completes the multipart upload, the answer is lost,
    botocore sends CompleteMultipartUpload again and moto answers it: one object, the
    upload's, nothing pending."""
    _post_with_complete_answer_lost(*s3_proxied)


def test_s3_max_attempts_1_sends_a_request_once(s3_proxied_once):
    """Found by review (2026-12-05).

    It was: ``aws.max_attempts`` ("attempts per S3 request") went to botocore as
    ``max_attempts``, which botocore reads as retries: ``1`` sent a request twice, the
    default 3 four times. Fixed: ``total_max_attempts``."""
    proxy, app = s3_proxied_once
    store = app.app.registry.attachment_store
    sent, stop = _lose_answers_of(proxy, store, "HeadObject", count=10)
    try:
        with pytest.raises(OSError):
            store.stat("anything.txt")
    finally:
        stop()
        proxy.cut_after = None
    assert len(sent) == 1, f"max_attempts = 1 sent HeadObject {len(sent)} times"


ODD_KEYS = [
    "/leading-slash.txt",
    "a//double.txt",
    "ünïcödé/файл.txt",
    "sp ace/and+plus.txt",
    "q?x=1#frag.txt",
    "%2e%2e/pct.txt",
    "./dot.txt",
    "trailing/",
]


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_gc_on_odd_keys_never_touches_a_referenced_file(kind, request):
    """Held against a review (2026-12-05).

    Foreign objects of odd names (leading slash, ``..`` segments naming a referenced file's
    key, unicode, ``?#%+``, a trailing slash) in the bucket: the collector lists, looks at and
    deletes each by its exact name, without a failure, and the referenced file stays whole."""
    app = _app(kind, request, **{"gc.orphans_grace_seconds": "60"})
    registry = app.app.registry
    store = registry.attachment_store
    content = b"the referenced file"
    location = _post(app, URL, content, "a.txt").json["location"]
    key = _key(app, location)
    adoption.adopt(registry)
    odd = [*ODD_KEYS, f"x/../{key}", f"{key}/..", f"{key}/."]
    for name in odd:
        staged = store.stage(name, "text/plain", random=True)
        staged.write(content)
        assert staged.commit() == name
    report = gc.collect(registry, now=data_file_entries.msec_time() + 120_000)
    left = {listed.key for listed in store.iter_blobs()}
    assert key in left
    assert _stored(app, key) == content
    assert app.get(URL + "/attachment", headers=ALICE).body == content
    assert not set(odd) & left, sorted(set(odd) & left)
    assert {orphan.key for orphan in report.orphans} == set(odd)


def test_s3_tus_last_patch_whose_complete_answer_is_lost_finishes_exactly(s3_proxied):
    """Held against a review (2026-12-05).

    The last PATCH of a tus upload on S3 (several parts and a tail): S3 completes the
    multipart upload and the answer of CompleteMultipartUpload is lost; botocore's retry finds
    no such upload. The finish recognises the object completed from these very parts (its
    token, ETag and checksum) and takes it: exact bytes, one object, nothing pending."""
    proxy, app = s3_proxied
    store = app.app.registry.attachment_store
    content = os.urandom(11 * MiB + 5)
    _, url = create(app, len(content))
    patch(app, url, content[: 9 * MiB], 0)
    sent, stop = _lose_answers_of(proxy, store, "CompleteMultipartUpload")
    try:
        response = patch(app, url, content[9 * MiB :], 9 * MiB, status="*")
    finally:
        stop()
        proxy.cut_after = None
    assert sent
    if response.status_int == 503:  # The client sends its last chunk again.
        response = patch(app, url, content[9 * MiB :], 9 * MiB, status="*")
    assert response.status_int == 204, response.body[:300]
    attachment = app.get(URL, headers=ALICE).json["data"]["attachment"]
    assert attachment["hash"] == hashlib.sha256(content).hexdigest()
    key = _key(app, attachment["location"])
    assert _stored(app, key) == content
    assert [listed.key for listed in store.iter_blobs()] == [key]
    assert _pending(app) == []


@pytest.fixture
def s3_proxied_grace(s3_server):
    """As :func:`s3_proxied`, replaced blobs kept 600 s (the default) for the collector."""
    proxy, app = _s3_proxied(s3_server, 3, **{"gc.replaced_grace_seconds": "600"})
    yield proxy, app
    proxy.close()


def test_s3_replaced_blob_whose_delete_fails_is_collected_by_a_later_round(s3_proxied_grace):
    """Held against a review (2026-12-05).

    The collector claims a replaced blob (its entry removed, its name quarantined,
    committed), then S3 goes down just as the DeleteObjects is sent (every attempt). The
    round fails; the blob is referenced by nothing but its quarantine. A later round (S3
    back) ends the quarantine and its orphan pass deletes the blob: nothing forgotten for
    ever, the record's current file untouched."""
    proxy, app = s3_proxied_grace
    registry = app.app.registry
    store = registry.attachment_store
    first = _post(app, URL, b"first version", "report.txt").json
    second = _post(app, URL, b"second version", "report-v2.txt").json
    adoption.adopt(registry)
    old, new = _key(app, first["location"]), _key(app, second["location"])
    deletes = []

    def before_delete(**kwargs):
        deletes.append(1)
        proxy.down()

    store.client.meta.events.register("before-send.s3.DeleteObjects", before_delete)
    now = data_file_entries.msec_time()
    try:
        with pytest.raises(OSError):
            gc.collect(registry, now=now + 700_000, orphans=False)
    finally:
        store.client.meta.events.unregister("before-send.s3.DeleteObjects", before_delete)
        proxy.up()
    assert deletes
    assert _stored(app, old) == b"first version"  # Not deleted: S3 was down.
    gc.collect(registry, now=now + 700_000 + 86_400_000 + 120_000)
    assert _stored(app, old) is None, "the replaced blob was forgotten"
    assert _stored(app, new) == b"second version"
    assert app.get(URL + "/attachment", headers=ALICE).body == b"second version"


def test_a_folder_of_the_stores_working_objects_is_refused(s3_server):
    """Found by review (2026-12-05).

    It was: S3 and GCS list every object under ``__uploads__/`` as their own working file,
    which the collector deletes past the grace period whoever wrote it, and the settings
    took ``folder = __uploads__/reports``: with two instances on one bucket, one's collector
    deleted the other's attachments of that collection. Fixed: such a folder stops
    start-up."""
    settings = {**build_settings("memory", None), **s3_settings(s3_server)}
    del settings["kinto.attachment.base_path"]
    settings["kinto.attachment.resources.blog.reports.folder"] = "__uploads__/reports"
    with pytest.raises(ConfigurationError, match="__uploads__"):
        make_app(settings)


def test_gcs_small_post_whose_answer_is_lost_leaves_no_second_object(gcs_proxied):
    """Found by a review of a fix (2026-12-05).

    It was: a POST smaller than a chunk is one conditional upload, which the client sends
    again when its answer is lost: GCS had made ``small.txt``, the retry got a 412, read as
    "taken meanwhile", and the file was uploaded again as ``small-1.txt``, ``small.txt``
    left named by nothing. Fixed: the upload marks its object with a token, and a 412 on an
    object of its token is its own."""
    proxy, app = gcs_proxied
    store = app.app.registry.attachment_store
    request, lost = store.session.request, []

    def answer_lost_once(method, url, *args, **kwargs):
        if method == "POST" and "uploadType=multipart" in url and not lost:
            lost.append(url)
            proxy.cut_after = 0  # GCS makes the object; its answer never comes back.
        try:
            return request(method, url, *args, **kwargs)
        finally:
            proxy.cut_after = None

    store.session.request = answer_lost_once
    try:
        attachment = _post(app, URL, b"small and whole", "small.txt").json
    finally:
        store.session.request = request
    assert lost
    key = _key(app, attachment["location"])
    assert key.endswith("/small.txt") or key == "small.txt", key
    assert [listed.key for listed in store.iter_blobs()] == [key]
    assert _stored(app, key) == b"small and whole"


def test_gcs_compose_whose_answer_is_lost_takes_its_own_object(gcs_proxied):
    """Found by a review of a fix (2026-12-05).

    It was: the last PATCH of a tus upload on GCS composes the upload into its name; GCS
    made ``big.txt``, the answer was lost, and the retry's 412 read as "taken": the upload
    was composed again as ``big-1.txt``, ``big.txt`` left named by nothing. Fixed: a compose
    marks its object with a token, and a 412 on an object of its token is its own.
    (fake-gcs-server ignores ``ifGenerationMatch`` on compose: its answer to the retry is
    the 412 GCS sends, made here once the object exists.)"""
    proxy, app = gcs_proxied
    store = app.app.registry.attachment_store
    content = os.urandom(300 * KiB)
    _, url = create(app, len(content))  # big.txt
    post, composed = store.session.post, []

    def compose_answer_lost(url, *args, **kwargs):
        if not url.endswith("/compose") or "big" not in unquote(url):
            return post(url, *args, **kwargs)
        if composed:  # Sent again: the name is taken (by the first compose).
            response = requests.Response()
            response.status_code, response.url = 412, url
            return response
        composed.append(post(url, *args, **kwargs))
        raise requests.ConnectionError("the compose's answer was lost")

    store.session.post = compose_answer_lost
    try:
        patch(app, url, content, 0)
    finally:
        store.session.post = post
    assert composed and composed[0].status_code == 200
    attachment = app.get(URL, headers=ALICE).json["data"]["attachment"]
    key = _key(app, attachment["location"])
    assert key.endswith("big.txt"), key
    assert [listed.key for listed in store.iter_blobs() if not listed.temporary] == [key]
    assert _stored(app, key) == content


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_only_the_stores_own_names_under_their_folder_are_working_objects(kind, request):
    """Found by a review of a fix (2026-12-05).

    It was: S3's and GCS's listings marked every object under ``__uploads__/`` as a working
    object: a file kinto-attachment kept there (it allowed any folder), named by nothing,
    was skipped by the first adoption instead of retained, then deleted by an orphan pass
    as a working file. Fixed: only the store's own names there (S3's ``*.tail``, GCS's
    ``*.part``, directly under it) are working objects."""
    app = _app(kind, request)
    registry = app.app.registry
    store = registry.attachment_store
    own = f"__uploads__/{store.temporary_name()}{'.tail' if kind == 's3' else '.part'}"
    kept = "__uploads__/reports/report-2019.pdf"
    for key in (own, kept):
        staged = store.stage(key, "application/pdf", random=True)
        staged.write(b"bytes")
        assert staged.commit() == key
    listed = {blob.key: blob.temporary for blob in store.iter_blobs()}
    assert listed == {own: True, kept: False}
    report = adoption.adopt(registry)
    assert kept in report.unreferenced  # Retained: kept for good.


class _Answer:
    """What :func:`~kinto_attachment.storage.gcs.batch._statuses` reads of a response."""

    def __init__(self, content):
        self.headers = {"Content-Type": "multipart/mixed; boundary=b"}
        self.content = content


@pytest.mark.parametrize("odd", ["\u00b2", "\u0663"])  # ², and the Arabic-Indic three.
def test_digits_no_number_reads_in_a_stores_answer_are_no_number(odd):
    """Found by a review (2026-12-05).

    It was: ``str.isdigit()`` says yes to ``²``, which ``int()`` refuses: a ``Content-Range``
    total or a GCS batch part's status or id written so (a store's answer, or whatever stands
    between us and it) raised ``ValueError`` where an unknown size or a missing status are
    handled, and a part's non-ASCII ``Content-ID`` an ``AttributeError`` (the email parser
    makes a ``Header`` of it, not a ``str``). Fixed: only ASCII digits are read as numbers;
    the id is read as text."""
    assert object_size(f"bytes 0-1/2{odd}", "2") is None
    assert object_size(None, "25") == 25
    part = (
        "--b\r\nContent-Type: application/http\r\nContent-ID: <response-{id}>\r\n\r\n"
        "{line}\r\n\r\n"
    )
    content = (
        part.format(id="0", line=f"HTTP/1.1 20{odd} OK")
        + part.format(id=f"1{odd}", line="HTTP/1.1 204 No Content")
        + part.format(id="2", line="HTTP/1.1 204 No Content")
        + "--b--\r\n"
    ).encode()
    assert _statuses(_Answer(content)) == {2: 204}
