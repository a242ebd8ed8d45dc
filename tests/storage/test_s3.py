"""The S3 backend against a real S3 endpoint (moto in server mode, over HTTP)."""

import hashlib
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kinto_attachment.storage import StorageUnavailable

from ..conftest import ALICE, UNHELD, build_settings, cached_app, make_app, s3_client, s3_settings
from ..support.tcpproxy import TcpProxy
from .test_store_contract import traced_upload


URL = "/v1/buckets/blog/collections/articles/records/r1"
MiB = 1024 * 1024


def s3_app(tmp_path_factory, request, **settings):
    settings.setdefault("extensions", "any")
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        blobs="s3",
        **{f"kinto.attachment.{k}": v for k, v in settings.items()},
    )
    kinto.create_collection()
    return kinto


def count_calls(client, operation):
    """Count the requests the app's real boto3 client sends for an S3 operation."""
    calls = []
    client.meta.events.register(f"before-call.s3.{operation}", lambda **kw: calls.append(1))
    return calls


def test_large_file_goes_through_a_multipart_upload(tmp_path_factory, request):
    kinto = s3_app(tmp_path_factory, request, **{"aws.cache_control": "max-age=3600"})
    store = kinto.registry.attachment_store
    parts = count_calls(store.client, "UploadPart")
    content = os.urandom(12 * MiB + 123)
    meta = kinto.upload(URL, content, "big.bin", mimetype="application/x-big").json

    assert len(parts) == 2  # 8 MiB + the rest.
    assert meta["hash"] == hashlib.sha256(content).hexdigest()
    assert kinto.read(meta["location"]) == content
    head = s3_client(store.client.meta.endpoint_url).head_object(
        Bucket=kinto.bucket, Key=kinto.key_of(meta["location"])
    )
    assert head["ContentType"] == "application/x-big"
    assert head["CacheControl"] == "max-age=3600"
    assert head["ContentLength"] == len(content)
    assert kinto.files() == [kinto.key_of(meta["location"])]


def test_parts_carry_crc32_and_tus_parts_sha256(tmp_path_factory, request):
    """S3 verifies every part. A multipart ``POST``'s parts carry CRC32, cheap on both sides;
    a tus upload's carry SHA-256, by which a retried finish recognises its object."""
    kinto = s3_app(tmp_path_factory, request)
    store = kinto.registry.attachment_store
    sent = []
    store.client.meta.events.register(
        "before-call.s3.UploadPart",
        lambda params, **kw: sent.append(
            {k for k in params["headers"] if k.startswith("x-amz-checksum-")}
        ),
    )
    content = os.urandom(12 * MiB + 123)
    meta = kinto.upload(URL, content, "big.bin").json
    assert sent == [{"x-amz-checksum-crc32"}] * 2
    head = s3_client(store.client.meta.endpoint_url).head_object(
        Bucket=kinto.bucket, Key=kinto.key_of(meta["location"]), ChecksumMode="ENABLED"
    )
    assert head.get("ChecksumCRC32") and "ChecksumSHA256" not in head  # As S3 recorded it.

    sent.clear()
    state = store.start_resumable("tus.bin", "application/x-test")
    state = store.append(state, 0, [content[: 9 * MiB]]).state
    assert sent == [{"x-amz-checksum-sha256"}]


def test_small_file_is_a_single_put(tmp_path_factory, request):
    kinto = s3_app(tmp_path_factory, request)
    store = kinto.registry.attachment_store
    puts = count_calls(store.client, "PutObject")
    parts = count_calls(store.client, "UploadPart")
    meta = kinto.upload(URL, b"tiny", "tiny.txt").json
    assert (len(puts), len(parts)) == (1, 0)
    assert kinto.read(meta["location"]) == b"tiny"


@pytest.mark.parametrize("failure", ["unknown-field", "too-large"])
def test_refused_multipart_upload_is_aborted(tmp_path_factory, request, failure):
    kinto = s3_app(tmp_path_factory, request, max_size_bytes=str(10 * MiB))
    content = os.urandom(9 * MiB)
    if failure == "too-large":
        content += os.urandom(2 * MiB)
        kinto.upload(URL, content, "big.bin", status=413)
    else:
        # The unknown field comes after the file: the upload has started by then.
        kinto.app.post(
            URL + "/attachment",
            params=[("surprise", "x")],
            upload_files=[("attachment", "big.bin", content)],
            headers=ALICE,
            status=400,
        )
    assert kinto.files() == []  # No object, no unfinished multipart upload.


@pytest.mark.parametrize("acl,public", [("public-read", True), ("", False)])
def test_acl(tmp_path_factory, request, acl, public):
    kinto = s3_app(tmp_path_factory, request, **{"aws.acl": acl})
    meta = kinto.upload(URL).json
    client = s3_client(kinto.registry.attachment_store.client.meta.endpoint_url)
    grants = client.get_object_acl(Bucket=kinto.bucket, Key=kinto.key_of(meta["location"]))
    everyone = [
        g for g in grants["Grants"] if g["Grantee"].get("URI", "").endswith("/global/AllUsers")
    ]
    assert bool(everyone) is public


def test_path_style_addressing(tmp_path_factory, request):
    kinto = s3_app(tmp_path_factory, request, **{"aws.use_path_style": "true"})
    client = kinto.registry.attachment_store.client
    urls = []
    client.meta.events.register("before-send.s3", lambda request, **kw: urls.append(request.url))
    kinto.upload(URL)
    assert urls and all(f"/{kinto.bucket}/" in url for url in urls)
    assert client.meta.config.s3["addressing_style"] == "path"


def test_not_randomized_names_are_never_overwritten(tmp_path_factory, request):
    kinto = s3_app(tmp_path_factory, request, randomize="false")
    big = os.urandom(9 * MiB)
    first = kinto.upload(kinto.record_url("a"), big, "same.bin").json
    second = kinto.upload(kinto.record_url("b"), big[:100], "same.bin").json
    third = kinto.upload(kinto.record_url("c"), big, "same.bin").json
    keys = [kinto.key_of(m["location"]) for m in (first, second, third)]
    assert keys == ["same.bin", "same-1.bin", "same-2.bin"]
    assert kinto.read(first["location"]) == big


def test_deleting_a_collection_deletes_its_objects_in_batches(tmp_path_factory, request):
    kinto = s3_app(tmp_path_factory, request)
    for rid in range(5):
        kinto.upload(kinto.record_url(f"r{rid}"))
    deletes = count_calls(kinto.registry.attachment_store.client, "DeleteObjects")
    kinto.app.delete("/v1/buckets/blog/collections/articles", headers=ALICE)
    assert len(deletes) == 1
    assert kinto.files() == []


def test_delete_many_splits_in_batches_of_1000(tmp_path_factory, request):
    kinto = s3_app(tmp_path_factory, request)
    store = kinto.registry.attachment_store
    deletes = count_calls(store.client, "DeleteObjects")
    store.delete_many([f"missing-{i}" for i in range(2500)])
    assert len(deletes) == 3


@pytest.fixture
def flaky_endpoint(s3_server):
    """The S3 server behind a proxy of its own that the test can take down and bring back."""
    host, port = s3_server.removeprefix("http://").rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    yield proxy, f"http://127.0.0.1:{proxy.port}"
    proxy.close()


def test_endpoint_down_mid_upload_is_503_and_leaves_nothing(
    flaky_endpoint, tmp_path, request, caplog
):
    proxy, endpoint = flaky_endpoint
    settings = build_settings("memory", str(tmp_path), **s3_settings(endpoint))
    del settings["kinto.attachment.base_path"]
    app = make_app(settings)
    app.put_json("/v1/buckets/blog", {}, headers=ALICE)
    app.put_json("/v1/buckets/blog/collections/articles", {}, headers=ALICE)
    meta = app.post(
        URL + "/attachment", upload_files=[("attachment", "a.txt", b"before")], headers=ALICE
    ).json
    store = app.app.registry.attachment_store
    bucket = settings["kinto.attachment.aws.bucket_name"]

    def stop_after_first_part(**kwargs):
        proxy.down()

    store.client.meta.events.register("after-call.s3.UploadPart", stop_after_first_part)
    with caplog.at_level(logging.WARNING):
        response = app.post(
            URL + "/attachment",
            upload_files=[("attachment", "big.txt", os.urandom(20 * MiB))],
            headers=ALICE,
            status=503,
        )
    assert response.json["errno"] == 201
    assert response.headers["Retry-After"]
    assert "Could not abort S3 upload" in caplog.text

    # Through the main endpoint (same state): the record and its object are untouched.
    main = s3_client(request.getfixturevalue("s3_server"))
    keys = [o["Key"] for o in main.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [meta["location"].rsplit("/", 1)[-1]]
    assert app.get(URL, headers=ALICE).json["data"]["attachment"] == meta
    # Once S3 answers again, the next upload first aborts what was left unfinished.
    assert main.list_multipart_uploads(Bucket=bucket).get("Uploads")
    store.client.meta.events.unregister("after-call.s3.UploadPart", stop_after_first_part)
    proxy.up()
    app.post(URL + "/attachment", upload_files=[("attachment", "b.txt", b"after")], headers=ALICE)
    assert not main.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_part_body_reads_and_rewinds_like_a_file():
    from kinto_attachment.storage.parts import PartBody

    data = bytearray(b"hello multipart world!")
    body = PartBody(memoryview(data)[:21])
    assert len(body) == 21 and body.readable() and body.seekable()
    assert body.read(3) == b"hel"
    assert body.read(9) == b"lo multip"
    assert body.read() == b"art world"
    assert body.read(5) == b""
    assert body.seek(-5, os.SEEK_END) == 16 and body.read() == b"world"
    body.seek(0)
    assert body.read() == bytes(data[:21])
    assert body.seek(100) == 21 and body.tell() == 21


@pytest.fixture(scope="module")
def moto_process(tmp_path_factory):
    """moto in a process of its own: the objects it keeps are not in this one's memory. It
    binds port 0 and says which port it got (no free port picked, released, then taken)."""
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    log = open(log_path, "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while not (bound := re.search(r"Running on (http://127\.0\.0\.1:\d+)", log_path.read_text())):
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)
    yield bound.group(1)
    process.terminate()
    process.wait(15)
    log.close()


def test_upload_memory_is_bounded_by_its_part_buffers(moto_process, tmp_path):
    """At most ``concurrency + 1`` part buffers, reused, however the chunks straddle parts."""
    part_size, concurrency = 5 * MiB, 2
    settings = build_settings(
        "memory",
        str(tmp_path),
        **s3_settings(moto_process),
        **{
            "kinto.attachment.aws.part_size": str(part_size),
            "kinto.attachment.aws.concurrency": str(concurrency),
        },
    )
    del settings["kinto.attachment.base_path"]
    store = make_app(settings).app.registry.attachment_store
    peak, intact = traced_upload(store, "bounded.bin", 3 * MiB + 7, 20)
    # Over plain HTTP, botocore also reads each part in flight by MiB to sign it (2 MiB at
    # once: the chunk hashed and the next one); over HTTPS our checksum spares it that.
    signing = concurrency * 2 * MiB
    bound = (concurrency + 1) * part_size + signing + MiB
    assert peak < bound, f"peak {peak / MiB:.1f} MiB for a 60 MiB upload"
    assert intact


# A tus upload finished again: its first finish completed the multipart upload, then the
# transaction that was to record it failed (tests/views/test_resumable.py for the whole story).


@pytest.fixture(params=["NoSuchUpload", "InternalError"])
def s3_answers(request, monkeypatch):
    """What UploadPart gets on a multipart upload S3 no longer has (completed or aborted):
    ``NoSuchUpload`` from AWS, a 500 from moto 5.2 (a KeyError). Our moto server runs in
    this process: make it give one or the other."""
    from moto.s3.exceptions import NoSuchUpload, S3ClientError
    from moto.s3.models import S3Backend

    class InternalError(S3ClientError):
        code = 500

        def __init__(self):
            super().__init__("InternalError", "We encountered an internal error.")

    original = S3Backend.upload_part

    def upload_part(self, bucket_name, multipart_id, part_id, value):
        if multipart_id not in self.get_bucket(bucket_name).multiparts:
            if request.param == "NoSuchUpload":
                raise NoSuchUpload(upload_id=multipart_id)
            raise InternalError()
        return original(self, bucket_name, multipart_id, part_id, value)

    monkeypatch.setattr(S3Backend, "upload_part", upload_part)
    return request.param


def tus_store(tmp_path_factory, request, concurrency=1):
    kinto = s3_app(
        tmp_path_factory,
        request,
        **{"aws.part_size": str(5 * MiB), "aws.concurrency": str(concurrency)},
    )
    return kinto, kinto.registry.attachment_store


def appended(store, content, first):
    """A started upload with ``content[:first]`` recorded; its state."""
    state = store.start_resumable("retried.bin", "application/x-test")
    return store.append(state, 0, [content[:first]]).state


@pytest.mark.parametrize(
    "size,first,concurrency",
    [(100, 40, 1), (3 * 5 * MiB + 11, MiB, 1), (3 * 5 * MiB + 11, MiB, 3)],
    ids=["one-part", "four-parts", "four-parts-in-flight"],
)
@pytest.mark.usefixtures("s3_answers")
def test_finish_again_takes_the_object_of_the_first(
    tmp_path_factory, request, size, first, concurrency
):
    kinto, store = tus_store(tmp_path_factory, request, concurrency)
    content = os.urandom(size)
    recorded = appended(store, content, first)
    finished = store.finish(store.append(recorded, first, [content[first:]]).state)
    assert finished.created == []  # The object stays if the record is not written.
    key = finished.key
    etag = store.stat(key).version

    # The transaction failed: `recorded` is still the state. The last chunk comes again.
    parts = count_calls(store.client, "UploadPart")
    heads = count_calls(store.client, "HeadObject")
    again = store.append(recorded, first, [content[first:]])
    retried = store.finish(again.state)
    assert 1 <= len(parts) <= concurrency  # Then S3 said NoSuchUpload: the rest is hashed.
    assert len(heads) <= 2  # On the first NoSuchUpload (append or finish), then to verify.
    assert retried.key == key and store.stat(key).version == etag
    with store.open(key) as f:
        assert f.read() == content
    head = s3_client(store.client.meta.endpoint_url).head_object(Bucket=kinto.bucket, Key=key)
    assert head["Metadata"] == {"kinto-attachment-upload": recorded["token"]}
    assert head["ContentType"] == "application/x-test"


def test_finish_again_takes_no_object_but_its_own(tmp_path_factory, request, s3_answers):
    kinto, store = tus_store(tmp_path_factory, request)
    content = os.urandom(5 * MiB + 3)
    recorded = appended(store, content, MiB)
    # Aborted (an expiry rule...), and an object of the same bytes and parts, made by another
    # upload (another token), at its key.
    store.abort_upload(recorded["key"], recorded["upload_id"])
    client = s3_client(store.client.meta.endpoint_url)
    other = client.create_multipart_upload(
        Bucket=kinto.bucket,
        Key=recorded["key"],
        ChecksumAlgorithm="SHA256",
        Metadata={"kinto-attachment-upload": "another-upload"},
    )["UploadId"]
    parts = []
    for number, start in enumerate((0, 5 * MiB), 1):
        response = client.upload_part(
            Bucket=kinto.bucket,
            Key=recorded["key"],
            UploadId=other,
            PartNumber=number,
            Body=content[start : start + 5 * MiB],
        )
        parts.append({"PartNumber": number, "ETag": response["ETag"]})
    client.complete_multipart_upload(
        Bucket=kinto.bucket,
        Key=recorded["key"],
        UploadId=other,
        MultipartUpload={"Parts": parts},
    )
    retried = [content[MiB:]]  # Fills a part: S3 answers that the upload is gone.
    if s3_answers == "NoSuchUpload":  # And not its object: the upload is lost.
        with pytest.raises(FileNotFoundError, match="from another upload"):
            store.append(recorded, MiB, retried)
    else:  # And not its object: S3 is failing, for all we know.
        with pytest.raises(StorageUnavailable, match="UploadPart failed: InternalError"):
            store.append(recorded, MiB, retried)
    closed = {**recorded, "closed": True}  # As if an earlier retry had found its object.
    with pytest.raises(FileNotFoundError, match="from another upload"):
        store.finish(store.append(closed, MiB, retried).state)
    store.discard(recorded, UNHELD)
    assert store.exists(recorded["key"])  # Not ours: discard leaves it.


@pytest.mark.parametrize("s3_answers", ["NoSuchUpload"], indirect=True)
def test_lost_upload_is_reported_before_a_tail_is_written(tmp_path_factory, request, s3_answers):
    kinto, store = tus_store(tmp_path_factory, request)
    content = os.urandom(5 * MiB + 3)
    recorded = appended(store, content, MiB)
    store.abort_upload(recorded["key"], recorded["upload_id"])
    with pytest.raises(FileNotFoundError, match="is lost"):
        store.append(recorded, MiB, [content[MiB : 6 * MiB]])  # Fills a part: NoSuchUpload.
    assert kinto.files() == [recorded["tail"]]  # Only the tail the state names.


def test_discard_deletes_the_object_of_an_unrecorded_finish(tmp_path_factory, request):
    kinto, store = tus_store(tmp_path_factory, request)
    content = os.urandom(5 * MiB + 3)
    recorded = appended(store, content, MiB)
    progress = store.append(recorded, MiB, [content[MiB:]])
    store.finish(progress.state)
    store.delete_many(progress.created)  # As the failed transaction does.
    assert sorted(kinto.files()) == sorted([recorded["key"], recorded["tail"]])
    store.discard(recorded, UNHELD)  # Termination or expiry of the upload.
    assert kinto.files() == []


def test_tus_upload_needs_no_extra_request(tmp_path_factory, request):
    """Recovering a finish costs nothing until it is needed."""
    kinto, store = tus_store(tmp_path_factory, request)
    response = kinto.app.post(
        URL + "/attachment/uploads",
        headers={
            **ALICE,
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(6 * MiB),
            "Upload-Metadata": "filename YS5iaW4=",  # a.bin
        },
        status=201,
    )
    upload = response.headers["Location"][len("http://localhost") :]
    heads = count_calls(store.client, "HeadObject")
    content = os.urandom(6 * MiB)
    for offset in (0, 3 * MiB):
        kinto.app.patch(
            upload,
            content[offset : offset + 3 * MiB],
            headers={
                **ALICE,
                "Tus-Resumable": "1.0.0",
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": str(offset),
            },
            status=204,
        )
    assert heads == []
    meta = kinto.app.get(URL, headers=ALICE).json["data"]["attachment"]
    assert kinto.read(meta["location"]) == content
    assert kinto.files() == [kinto.key_of(meta["location"])]


# Concatenation of resumable uploads: how the parts of the composed object are planned.


@pytest.mark.parametrize(
    "sizes,expected",
    [
        # Large enough: each object copied whole, the last one whatever its size.
        ([10, 7, 2], [[("a", 0, 10)], [("b", 0, 7)], [("c", 0, 2)]]),
        # A small one is sent with the start of the next, whose rest is copied.
        ([2, 14], [([("a", 0, 2), ("b", 0, 3)], False), ([("b", 3, 14)], True)]),
        # Small ones gathered until they make the minimum; the last part may be smaller.
        (
            [2, 2, 2, 1],
            [
                ([("a", 0, 2), ("b", 0, 2), ("c", 0, 1)], False),
                ([("c", 1, 2), ("d", 0, 1)], False),
            ],
        ),
        # Empty objects make no part; too large for one copy, copied in equal ranges.
        ([0, 25, 0], [[("b", 0, 8)], [("b", 8, 16)], [("b", 16, 25)]]),
    ],
)
def test_concatenated_parts(sizes, expected):
    from kinto_attachment.storage.s3.concatenate import ranges

    sources = list(zip("abcd", sizes, strict=False))
    planned = list(ranges(sources, min_size=5, max_copy=12))
    expected = [e if isinstance(e, tuple) else (e, True) for e in expected]
    assert planned == expected
    copied = [part for part, is_copy in planned[:-1] if is_copy]
    assert all(5 <= end - start <= 12 for ((_, start, end),) in copied)
