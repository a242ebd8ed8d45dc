"""S3 and GCS under what networks and other uploads do to them: bodies cut short while the
server reads them back, a store failing while a refused chunk is cleaned up, names taken
meanwhile; and exact bytes and sha256 whatever the chunking, ranges, clients gone mid-body.

Real servers only (moto server, fake-gcs-server), reached through a loopback proxy that cuts
responses mid-body to play a network failure: no SDK is mocked.
"""

import hashlib
import itertools
import os
import threading

import pytest
import requests
import webob

from ..conftest import ALICE, build_settings, make_app, s3_settings
from ..support.gcs_server import gcs_settings, running
from ..support.live import free_port
from ..support.tcpproxy import TcpProxy
from ..views.test_resumable import create, metadata, patch


URL = "/v1/buckets/blog/collections/articles/records/r1"
KiB = 1024
MiB = 1024 * KiB


def store_app(settings):
    settings = {**build_settings("memory", None), **settings}
    del settings["kinto.attachment.base_path"]
    settings["kinto.attachment.extensions"] = "any"
    app = make_app(settings)
    app.put_json("/v1/buckets/blog", {}, headers=ALICE)
    app.put_json("/v1/buckets/blog/collections/articles", {}, headers=ALICE)
    return app


@pytest.fixture
def s3_cut(s3_server):
    host, port = s3_server.removeprefix("http://").rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    settings = s3_settings(f"http://127.0.0.1:{proxy.port}")
    yield proxy, store_app(settings)
    proxy.close()


@pytest.fixture
def gcs_cut(tmp_path):
    """fake-gcs-server telling clients (session URIs too) to come through the proxy."""
    port = free_port()
    proxy = TcpProxy("127.0.0.1", port)
    external = f"http://127.0.0.1:{proxy.port}"
    with running(tmp_path, port=port, external_url=external) as direct:
        settings = gcs_settings(direct, chunk_size=str(256 * KiB))
        settings["kinto.attachment.gcloud.endpoint_url"] = external
        yield proxy, store_app(settings)
    proxy.close()


# A stored body cut short while the server reads it back: a 503 (retry), not a 500.


def test_s3_tus_patch_whose_tail_read_is_cut_short_is_503(s3_cut):
    """Each PATCH on S3 first reads back the upload's tail (the bytes short of a part): a
    body cut by the network is the store's failure (urllib3's own error, under botocore's
    stream, was no OSError: a 500)."""
    proxy, app = s3_cut
    content = os.urandom(2 * MiB)
    _, url = create(app, len(content))
    patch(app, url, content[:MiB], 0)  # A 1 MiB tail object.
    proxy.cut_after = 64 * KiB  # Cut the next large response: the tail's GetObject.
    response = app.patch(
        url,
        content[MiB:],
        headers={
            **ALICE,
            "Tus-Resumable": "1.0.0",
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(MiB),
        },
        expect_errors=True,
    )
    proxy.cut_after = None
    assert proxy.cuts
    assert response.status_int == 503, (response.status_int, response.body[:300])
    assert response.headers.get("Retry-After")


def _concatenation_cut_while_read_back(proxy, app):
    """A final upload of two partial ones: the store reads back the second part's bytes
    (its sha256); that read is cut by the network."""
    from ..views.test_resumable_concatenation import final_upload, partial_upload

    contents = [os.urandom(300 * KiB), os.urandom(MiB)]
    urls = [partial_upload(app, content) for content in contents]
    proxy.cut_after = 128 * KiB
    try:
        return final_upload(app, urls, status="*")
    finally:
        proxy.cut_after = None


def test_s3_concatenation_whose_read_back_is_cut_short_is_503(s3_cut):
    proxy, app = s3_cut
    response = _concatenation_cut_while_read_back(proxy, app)
    assert proxy.cuts
    assert response.status_int == 503, (response.status_int, response.body[:300])


def test_gcs_concatenation_whose_read_back_is_cut_short_is_503(gcs_cut):
    """GCS's downloads read ``response.raw``, whose urllib3 errors are the store's failure
    too (they were not requests': a 500)."""
    proxy, app = gcs_cut
    response = _concatenation_cut_while_read_back(proxy, app)
    assert proxy.cuts
    assert response.status_int == 503, (response.status_int, response.body[:300])


# tus uploads on S3 and GCS: exact bytes and sha256 in every chunking (Hypothesis).

import random  # noqa: E402

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


_TUS_APPS = {}


def _tus_app(kind, request):
    if kind not in _TUS_APPS:
        if kind == "s3":
            app = store_app(
                {
                    **s3_settings(request.getfixturevalue("s3_server")),
                    "kinto.attachment.aws.part_size": str(5 * MiB),
                }
            )
        else:
            app = store_app(
                gcs_settings(request.getfixturevalue("gcs_server"), chunk_size=str(256 * KiB))
            )
        _TUS_APPS[kind] = app
    return _TUS_APPS[kind]


PART = 5 * MiB
near = st.sampled_from([PART, 2 * PART, 256 * KiB, 512 * KiB]).flatmap(
    lambda b: st.integers(b - 3, b + 3)
)


@st.composite
def chunkings(draw, largest):
    total = draw(
        st.one_of(st.sampled_from([0, 1, 2, PART - 1, PART, PART + 1]), st.integers(0, largest))
    )
    cuts = draw(st.lists(st.one_of(near, st.integers(0, total)), max_size=6))
    cuts = sorted({0, total, *[c for c in cuts if 0 <= c <= total]})
    return total, cuts


def _upload_tus(app, content, cuts):
    _, url = create(app, len(content))
    for start, end in itertools.pairwise(cuts):
        patch(app, url, content[start:end], start)
    return app.get(URL, headers=ALICE).json["data"]["attachment"]


def _stored(app, location):
    store = app.app.registry.attachment_store
    base = app.app.registry.attachment_settings.base_url
    with store.open(location[len(base) :]) as f:
        return f.read()


@pytest.mark.parametrize("kind", ["s3", "gcs"])
@settings(
    max_examples=int(os.environ.get("REVIEW_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(chunking=chunkings(largest=2 * PART + 7), seed=st.integers(0, 2**32))
@example(chunking=(PART + 3, [0, PART - 2, PART - 1, PART, PART + 1, PART + 2, PART + 3]), seed=1)
@example(chunking=(0, [0]), seed=1)
def test_tus_chunkings_give_exact_bytes_and_sha256(kind, request, chunking, seed):
    app = _tus_app(kind, request)
    app.delete(URL, headers=ALICE, status="*")
    total, cuts = chunking
    content = random.Random(seed).randbytes(total)
    attachment = _upload_tus(app, content, cuts)
    assert attachment["size"] == total
    assert attachment["hash"] == hashlib.sha256(content).hexdigest()
    assert _stored(app, attachment["location"]) == content


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_tus_one_byte_chunks(kind, request):
    app = _tus_app(kind, request)
    app.delete(URL, headers=ALICE, status="*")
    content = os.urandom(40)
    attachment = _upload_tus(app, content, list(range(41)))
    assert attachment["hash"] == hashlib.sha256(content).hexdigest()
    assert _stored(app, attachment["location"]) == content


@settings(max_examples=500, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), max_size=12),
    min_size=st.integers(1, 8),
    max_copy=st.integers(16, 30),  # S3: 5 GiB, a thousand times the 5 MiB minimum.
)
def test_s3_concatenation_ranges_cover_the_sources_in_parts_s3_takes(sizes, min_size, max_copy):
    from kinto_attachment.storage.s3.concatenate import ranges

    sources = [(f"k{n}", size) for n, size in enumerate(sizes)]
    parts = list(ranges(sources, min_size=min_size, max_copy=max_copy))
    covered = [
        (key, n) for part, _ in parts for key, start, end in part for n in range(start, end)
    ]
    assert covered == [(key, n) for key, size in sources for n in range(size)]
    for number, (part, copied) in enumerate(parts, 1):
        size = sum(end - start for _, start, end in part)
        assert size > 0
        if number < len(parts):
            assert size >= min_size, parts
        if copied:
            assert len(part) == 1 and size <= max_copy


@pytest.mark.parametrize("kind", ["s3", "gcs"])
@settings(
    max_examples=int(os.environ.get("REVIEW_EXAMPLES", "6")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sizes=st.lists(
        st.one_of(st.sampled_from([0, 1, PART - 1, PART, PART + 1]), st.integers(0, 2 * PART)),
        min_size=1,
        max_size=4,
    ),
    seed=st.integers(0, 2**32),
)
def test_tus_concatenation_gives_exact_bytes_and_sha256(kind, request, sizes, seed):
    from ..views.test_resumable_concatenation import final_upload, partial_upload

    app = _tus_app(kind, request)
    app.delete(URL, headers=ALICE, status="*")
    rng = random.Random(seed)
    contents = [rng.randbytes(size) for size in sizes]
    urls = [partial_upload(app, content) for content in contents]
    final_upload(app, urls)
    attachment = app.get(URL, headers=ALICE).json["data"]["attachment"]
    whole = b"".join(contents)
    assert attachment["size"] == len(whole)
    assert attachment["hash"] == hashlib.sha256(whole).hexdigest()
    assert _stored(app, attachment["location"]) == whole


# A tus chunk refused for its checksum while the store fails its cleanup: still a 460.


def test_s3_checksum_mismatch_with_a_failing_cleanup_is_not_a_500(s3_server):
    """What the refused chunk created (its tail object) is deleted once the request failed;
    S3 failing then (down, or throttling the DeleteObjects) leaves it to the collector, and
    the answer stands (it was a 500)."""
    import base64

    from ..support.tcpproxy import TcpProxy

    host, port = s3_server.removeprefix("http://").rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    try:
        app = store_app(s3_settings(f"http://127.0.0.1:{proxy.port}"))
        store = app.app.registry.attachment_store
        _, url = create(app, 100)

        def down(**kwargs):
            proxy.down()

        store.client.meta.events.register("before-call.s3.DeleteObjects", down)
        wrong = "sha1 " + base64.b64encode(hashlib.sha1(b"other").digest()).decode()
        response = app.patch(
            url,
            b"x" * 10,  # Fewer bytes than a part: they go to a new tail object.
            headers={
                **ALICE,
                "Tus-Resumable": "1.0.0",
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": "0",
                "Upload-Checksum": wrong,
            },
            expect_errors=True,
        )
        assert response.status_int == 460, (response.status_int, response.body[:300])
    finally:
        proxy.close()


# Downloads through Kinto on S3 and GCS: ranges.


@pytest.mark.parametrize("kind", ["s3", "gcs"])
@pytest.mark.parametrize(
    "header,expected",
    [
        ("bytes=0-0", slice(0, 1)),
        ("bytes=5-", slice(5, None)),
        ("bytes=-7", slice(-7, None)),
        ("bytes=-5000", slice(0, None)),
        ("bytes=990-5000", slice(990, None)),
        ("bytes=999-999", slice(999, 1000)),
        ("bytes=10-19", slice(10, 20)),
    ],
)
def test_ranges(kind, request, header, expected):
    app = _tus_app(kind, request)
    app.delete(URL, headers=ALICE, status="*")
    content = os.urandom(1000)
    app.post(URL + "/attachment", upload_files=[("attachment", "a.bin", content)], headers=ALICE)
    response = app.get(URL + "/attachment", headers={**ALICE, "Range": header}, status=206)
    assert response.body == content[expected]
    app.get(URL + "/attachment", headers={**ALICE, "Range": "bytes=1000-"}, status=416)


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_ranges_of_an_empty_file(kind, request):
    app = _tus_app(kind, request)
    app.delete(URL, headers=ALICE, status="*")
    app.post(URL + "/attachment", upload_files=[("attachment", "a.bin", b"")], headers=ALICE)
    for header in ("bytes=0-", "bytes=-5", "bytes=0-0"):
        response = app.get(URL + "/attachment", headers={**ALICE, "Range": header}, status="*")
        assert response.status_int in (200, 416), (header, response)
        if response.status_int == 200:
            assert response.body == b""


# A client gone mid-body: nothing left, the previous file intact.


def _leftovers(store):
    pending = [f"pending:{p.key}" for p in store.iter_pending()]
    return sorted([b.key for b in store.iter_blobs()] + pending)


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_client_gone_mid_body_leaves_nothing(kind, request):
    import io

    import webob

    app = _tus_app(kind, request)
    app.delete(URL, headers=ALICE, status="*")
    store = app.app.registry.attachment_store
    before = app.post(
        URL + "/attachment", upload_files=[("attachment", "a.bin", b"before")], headers=ALICE
    ).json
    kept = _leftovers(store)
    boundary = "xyz"
    content = os.urandom(11 * MiB)
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="attachment"; filename="b.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = webob.Request.blank(URL + "/attachment", method="POST", headers=ALICE)
    req.content_type = f"multipart/form-data; boundary={boundary}"
    req.environ["CONTENT_LENGTH"] = str(len(body))
    req.environ["wsgi.input"] = io.BytesIO(body[: 8 * MiB + 12345])  # Then the client is gone.
    response = req.get_response(app.app)
    assert response.status_int == 400, response.body[:300]
    assert _leftovers(store) == kept
    assert app.get(URL, headers=ALICE).json["data"]["attachment"] == before


# A tus upload whose name another upload took meanwhile (``randomize = false``).


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_tus_upload_whose_name_was_taken_meanwhile(kind, request):
    """``randomize = false``: a tus upload keeps no name for itself while it goes on, and a
    POST of the same file name to another record may take it. On GCS the upload finishes
    under ``name-1``. On S3 a multipart upload is completed under its own key only: its last
    PATCH is a 410 (start again), not a 503 retried in vain; the new upload gets ``name-1``.
    The other file is never touched."""
    from ..views.test_resumable import metadata

    key = "_names_" + kind
    if key not in _TUS_APPS:
        settings = (
            {
                **s3_settings(request.getfixturevalue("s3_server")),
                "kinto.attachment.aws.part_size": str(5 * MiB),
            }
            if kind == "s3"
            else gcs_settings(request.getfixturevalue("gcs_server"), chunk_size=str(256 * KiB))
        )
        _TUS_APPS[key] = store_app({**settings, "kinto.attachment.randomize": "false"})
    app = _TUS_APPS[key]
    name = f"same-{os.urandom(4).hex()}.bin"
    content = os.urandom(1000)
    _, url = create(app, len(content), meta=metadata(name))
    patch(app, url, content[:500], 0)
    other = app.post(
        URL.replace("r1", "r2") + "/attachment",
        upload_files=[("attachment", name, b"other file")],
        headers=ALICE,
    ).json
    assert other["location"].endswith("/" + name)
    if kind == "s3":
        gone = patch(app, url, content[500:], 500, status=410)
        assert "start a new upload" in gone.json["message"].lower() or gone.json["errno"]
        _, url = create(app, len(content), meta=metadata(name))
        patch(app, url, content, 0)
    else:
        patch(app, url, content[500:], 500)
    attachment = app.get(URL, headers=ALICE).json["data"]["attachment"]
    assert attachment["location"].endswith(name.replace(".bin", "-1.bin"))
    assert attachment["hash"] == hashlib.sha256(content).hexdigest()
    assert _stored(app, attachment["location"]) == content
    assert _stored(app, other["location"]) == b"other file"


R1 = "/v1/buckets/blog/collections/articles/records/r1"
R2 = "/v1/buckets/blog/collections/articles/records/r2"


def test_s3_tus_finish_takes_a_name_in_quarantine(s3_server):
    """Found by review (2026-12-05).

    ``randomize = false`` on S3: a tus upload picks its name when it starts (its multipart
    upload's key) and completes there whatever happened to the name meanwhile. Another file
    took the name while the upload was paused, and was deleted: the name is in quarantine
    (docs/gc.rst: a 307's signed URL handed out for that file must never reach another file
    given the name). The upload's last PATCH completes onto the quarantined name all the
    same, and the signed URL handed out for r2's file now serves r1's file.

    GCS (and every other S3 write: POST, concatenation) asks ``free_key`` at the time of the
    write, which skips reserved names (``-1``); S3's ``finish`` never asks."""
    app = store_app(
        {
            **s3_settings(s3_server),
            "kinto.attachment.randomize": "false",
            "kinto.attachment.gc.replaced_grace_seconds": "0",
            "kinto.attachment.aws.presigned_downloads": "true",
        }
    )
    name = f"same-{os.urandom(4).hex()}.bin"
    mine = os.urandom(1000)
    _, url = create(app, len(mine), meta=metadata(name))
    patch(app, url, mine[:500], 0)  # Paused: the multipart upload is at `name`.

    # Meanwhile another record takes the name, hands out a signed URL, and lets it go.
    other = app.post(
        R2 + "/attachment", upload_files=[("attachment", name, b"other file")], headers=ALICE
    ).json
    assert other["location"].endswith("/" + name)
    signed = app.get(R2 + "/attachment", headers=ALICE, status=307).headers["Location"]
    assert requests.get(signed, timeout=10).content == b"other file"
    app.delete(R2 + "/attachment", headers=ALICE, status=204)  # Deleted, name quarantined.

    response = patch(app, url, mine[500:], 500, status="*")
    # The URL handed out for r2's (deleted) file must never serve r1's.
    serves_mine = requests.get(signed, timeout=10).content == mine
    assert not serves_mine, "the signed URL handed out for r2's file serves r1's file"
    # A 410 (start again: the new upload gets a free name) would be fine; taking the name is not.
    if response.status_int == 204:
        location = app.get(R1, headers=ALICE).json["data"]["attachment"]["location"]
        assert not location.endswith("/" + name), "a quarantined name was given to a new file"


class _BodyThatWaits:
    """A request body that runs ``meanwhile()`` (in another thread, waited for) once ``after``
    bytes have been read: what other nodes do while a large upload's body comes."""

    def __init__(self, data, after, meanwhile):
        self._data, self._position = data, 0
        self._after, self._meanwhile = after, meanwhile

    def read(self, size=-1):
        if self._meanwhile is not None and self._position >= self._after:
            meanwhile, self._meanwhile = self._meanwhile, None
            worker = threading.Thread(target=meanwhile)
            worker.start()
            worker.join()
        size = len(self._data) - self._position if size is None or size < 0 else size
        size = min(size, 64 * KiB)  # As a network delivers it.
        chunk = self._data[self._position : self._position + size]
        self._position += len(chunk)
        return chunk


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_large_post_completes_onto_a_name_in_quarantine(kind, request):
    """Found by review (2026-12-05).

    The same on a POST larger than one part (S3) or chunk (GCS): its multipart upload's
    (resumable session's) name is chosen when the first part is full (``free_key``: reserved
    names skipped), and the object is made there at the end of the body, conditionally on
    the name being free in the bucket only. A name that another node gave to a file and let
    go while the body came is in quarantine, yet free in the bucket: the upload takes it (on
    S3, the signed URL handed out for the other file then serves this one)."""
    if kind == "s3":
        settings = {
            **s3_settings(request.getfixturevalue("s3_server")),
            "kinto.attachment.aws.presigned_downloads": "true",
            "kinto.attachment.aws.part_size": str(5 * MiB),
        }
        size, after = 6 * MiB, 5 * MiB + 512 * KiB
    else:
        settings = gcs_settings(request.getfixturevalue("gcs_server"), chunk_size=str(256 * KiB))
        size, after = MiB, 512 * KiB
    app = store_app(
        {
            **settings,
            "kinto.attachment.randomize": "false",
            "kinto.attachment.gc.replaced_grace_seconds": "0",
        }
    )
    name = f"big-{os.urandom(4).hex()}.bin"
    mine = os.urandom(size)
    signed = []

    def other_node():
        other = app.post(
            R2 + "/attachment", upload_files=[("attachment", name, b"other file")], headers=ALICE
        ).json
        assert other["location"].endswith("/" + name)
        if kind == "s3":
            answer = app.get(R2 + "/attachment", headers=ALICE, status=307)
            signed.append(answer.headers["Location"])
        app.delete(R2 + "/attachment", headers=ALICE, status=204)  # Name quarantined.

    boundary = "reviewboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="attachment"; '
        f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    body = head + mine + f"\r\n--{boundary}--\r\n".encode()
    req = webob.Request.blank(R1 + "/attachment", method="POST", headers=ALICE)
    req.content_type = f"multipart/form-data; boundary={boundary}"
    req.environ["CONTENT_LENGTH"] = str(len(body))
    # The other node acts once the first part has been sent, before the end of the body.
    req.environ["wsgi.input"] = _BodyThatWaits(body, after, other_node)
    response = req.get_response(app.app)
    assert not req.environ["wsgi.input"]._meanwhile, "the other node did not run"
    if signed:
        serves_mine = requests.get(signed[0], timeout=10).content == mine
        assert not serves_mine, "the signed URL handed out for r2's file serves r1's file"
    # A 503 (retry: the next free name) would do; taking the quarantined name does not.
    assert response.status_int in (201, 503), response.body[:300]
    if response.status_int == 201:
        location = app.get(R1, headers=ALICE).json["data"]["attachment"]["location"]
        assert not location.endswith("/" + name), "a quarantined name was given to a new file"
