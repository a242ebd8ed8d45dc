"""tus 1.0.0 conformance and interoperability, as a review checked them (2026-12-05).

Each test asserts what the protocol (https://tus.io/protocols/resumable-upload, quoted in its
docstring) or tusd, the reference server, does. Those that found a deviation say "Found by
review"; the others keep what was checked.

In-process tests run on a memory app; the live ones on the shipped configuration, under
gunicorn (which streams request bodies to Kinto) or waitress, with real clients (tuspy,
tus-js-client on Node.js).
"""

import base64
import io
import json
import os
import re
import shutil
import subprocess
import threading
import time

import pytest
import requests

from ..conftest import ALICE, cached_app
from ..support import live
from ..support.tcpproxy import TcpProxy


RECORD = "/v1/buckets/blog/collections/articles/records/r1"
UPLOADS = RECORD + "/attachment/uploads"
TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {"Content-Type": "application/offset+octet-stream"}
ORIGIN = {"Origin": "https://app.example.com"}


def b64(text):
    return base64.b64encode(text.encode()).decode()


FILENAME = "filename " + b64("a.txt")


def path_of(response):
    return response.headers["Location"][len("http://localhost") :]


@pytest.fixture
def kinto(tmp_path_factory, request):
    kinto = cached_app("memory", tmp_path_factory, request)
    kinto.create_collection()
    return kinto


def create(app, length=None, meta=FILENAME, body=None, status=201, **extra):
    headers = {**ALICE, **TUS, **extra}
    if length is not None:
        headers["Upload-Length"] = str(length)
    if meta is not None:
        headers["Upload-Metadata"] = meta
    if body is not None:
        headers.update(CHUNK)
    return app.post(UPLOADS, body or b"", headers=headers, status=status)


def patch(app, url, chunk, offset, status=204, **extra):
    headers = {**ALICE, **TUS, **CHUNK, "Upload-Offset": str(offset), **extra}
    return app.patch(url, chunk, headers=headers, status=status)


def finished_partial(app, content):
    url = path_of(create(app, len(content), meta=None, **{"Upload-Concat": "partial"}))
    patch(app, url, content, 0)
    return url


# Found by review (2026-12-05), in-process.


def test_head_of_an_upload_created_without_metadata_has_no_upload_metadata(kinto):
    """Found by review (2026-12-05).

    ``HEAD`` of an upload created without ``Upload-Metadata`` (tus-js-client's partial
    uploads of ``parallelUploads``: ``metadataForPartialUploads`` is ``{}`` by default) answers
    an empty ``Upload-Metadata:`` header.

    tus 1.0.0, Creation: "If an upload contains additional metadata, responses to HEAD
    requests MUST include the Upload-Metadata header"; "The Upload-Metadata request and
    response header MUST consist of one or more comma-separated key-value pairs. [...] The key
    [...] MUST NOT be empty." An empty value is not that grammar. tusd omits the header when
    there is no metadata (``HeadFile``: ``if len(info.MetaData) != 0``).
    """
    url = path_of(create(kinto.app, 3, meta=None, **{"Upload-Concat": "partial"}))
    response = kinto.app.head(url, headers={**ALICE, **TUS})
    assert "Upload-Metadata" not in response.headers, response.headers.get("Upload-Metadata")


def test_preflight_allows_tus_js_client_request_id(kinto):
    """Found by review (2026-12-05).

    A browser page whose tus-js-client sets ``addRequestId: true`` (an ``X-Request-ID`` on
    every request, for correlating logs) cannot upload: the preflight's
    ``Access-Control-Allow-Headers`` is a fixed list without ``X-Request-ID``, so the browser
    refuses to send the ``POST``.

    tusd's default ``AllowHeaders`` has ``X-Request-ID`` (``pkg/handler/config.go``,
    ``DefaultCorsConfig``), and Kinto's own services echo every requested header (Cornice):
    only the tus routes refuse it.
    """
    requested = "authorization, tus-resumable, upload-length, upload-metadata, x-request-id"
    preflight = kinto.app.options(
        UPLOADS,
        headers={
            **ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": requested,
        },
    )
    allowed = {
        name.strip().lower()
        for name in preflight.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {name.strip() for name in requested.split(",")} <= allowed, allowed


def test_final_upload_may_name_a_partial_upload_twice(kinto):
    """Found by review (2026-12-05).

    ``Upload-Concat: final;/a /a`` was refused (``400 Upload-Concat names a partial upload
    twice``).

    tus 1.0.0, Concatenation: "The Client, however, MAY attempt to use a partial upload
    multiple times. The same partial upload MAY be present multiple times in the
    ``Upload-Concat`` header in one upload creation request" (and "Concatenation [...]
    enabling Clients [...] to upload non-contiguous chunks": a repeated block sent once).
    tusd concatenates whatever list it is given.
    """
    url = finished_partial(kinto.app, b"ab")
    response = create(
        kinto.app, meta=FILENAME, status="*", **{"Upload-Concat": f"final;{url} {url}"}
    )
    assert response.status_int == 201, response.body
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"abab"


# Conforms (in-process).


def test_checked_core_headers(kinto):
    """201 with an absolute ``Location``, ``Upload-Expires`` an RFC 9110
    date; ``HEAD`` with ``Upload-Offset``, ``Upload-Length``, ``Upload-Metadata`` as sent (a
    key without a value too), ``Cache-Control: no-store``; 412 with ``Tus-Version``; 415; 409;
    460; 400 for an unknown checksum algorithm; ``OPTIONS`` ignores ``Tus-Resumable``; a body
    of another ``Content-Type`` at creation is ignored (as tusd)."""
    meta = FILENAME + ",is_confidential"
    response = create(kinto.app, 10, meta=meta, body=None)
    assert response.headers["Location"].startswith("http://localhost/v1/")
    assert re.fullmatch(
        r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT",
        response.headers["Upload-Expires"],
    )
    url = path_of(response)
    head = kinto.app.head(url, headers={**ALICE, **TUS})
    assert (head.headers["Upload-Offset"], head.headers["Upload-Length"]) == ("0", "10")
    assert head.headers["Upload-Metadata"] == meta
    assert head.headers["Cache-Control"] == "no-store"
    refused = kinto.app.head(url, headers={**ALICE, "Tus-Resumable": "0.2.2"}, status=412)
    assert refused.headers["Tus-Version"] == "1.0.0"
    patch(kinto.app, url, b"abc", 0, status=415, **{"Content-Type": "text/plain"})
    patch(kinto.app, url, b"abc", 1, status=409)
    wrong = base64.b64encode(b"\0" * 20).decode()
    patch(kinto.app, url, b"abc", 0, status=460, **{"Upload-Checksum": f"sha1 {wrong}"})
    patch(kinto.app, url, b"abc", 0, status=400, **{"Upload-Checksum": "crc32 AAAAAA=="})
    assert kinto.app.head(url, headers={**ALICE, **TUS}).headers["Upload-Offset"] == "0"
    options = kinto.app.options(UPLOADS, headers={"Tus-Resumable": "0.2.2"}, status=204)
    assert options.headers["Tus-Version"] == "1.0.0"
    ignored = kinto.app.post(
        UPLOADS,
        b"abc",
        headers={
            **ALICE,
            **TUS,
            "Upload-Length": "3",
            "Upload-Metadata": FILENAME,
            "Content-Type": "text/plain",
        },  # fmt: skip
    )
    assert ignored.headers["Upload-Offset"] == "0"


def test_checked_defer_length_and_concatenation(kinto):
    """``Upload-Defer-Length: 1`` on ``HEAD`` until the length is told, an
    empty last ``PATCH`` that tells it (tus-js-client's ``uploadLengthDeferred`` when the
    stream ends on a chunk boundary) completes the upload; a final upload's ``HEAD`` has
    ``Upload-Offset`` = ``Upload-Length`` = the sum, and ``Upload-Concat``; a ``PATCH`` to it
    is a 403."""
    url = path_of(create(kinto.app, meta=FILENAME, **{"Upload-Defer-Length": "1"}))
    head = kinto.app.head(url, headers={**ALICE, **TUS})
    assert head.headers["Upload-Defer-Length"] == "1" and "Upload-Length" not in head.headers
    patch(kinto.app, url, b"abcd", 0)
    done = patch(kinto.app, url, b"", 4, **{"Upload-Length": "4"})
    assert done.headers["Upload-Offset"] == "4"
    head = kinto.app.head(url, headers={**ALICE, **TUS})
    assert (head.headers["Upload-Offset"], head.headers["Upload-Length"]) == ("4", "4")
    assert "Upload-Defer-Length" not in head.headers

    first, second = finished_partial(kinto.app, b"abc"), finished_partial(kinto.app, b"de")
    concat = f"final;http://localhost{first} {second}"
    final = path_of(create(kinto.app, meta=FILENAME, **{"Upload-Concat": concat}))
    head = kinto.app.head(final, headers={**ALICE, **TUS})
    assert (head.headers["Upload-Offset"], head.headers["Upload-Length"]) == ("5", "5")
    assert head.headers["Upload-Concat"] == concat
    patch(kinto.app, final, b"", 5, status=403)
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"abcde"


# Live: real servers and clients.


COLLECTION = "/buckets/website/collections/assets"


def _prepare(server):
    for path in ("/buckets/website", COLLECTION):
        response = requests.put(server.url + path, json={}, auth=live.ALICE, timeout=30)
        assert response.status_code in (200, 201), response.text


@pytest.fixture(scope="module")
def gunicorn_server(tmp_path_factory):
    with live.running_server(tmp_path_factory.mktemp("review-gunicorn"), server="gunicorn") as s:
        _prepare(s)
        yield s


@pytest.fixture(scope="module")
def waitress_server(tmp_path_factory):
    with live.running_server(tmp_path_factory.mktemp("review-waitress")) as server:
        _prepare(server)
        yield server


@pytest.mark.live
def test_interrupted_patch_keeps_the_bytes_received(gunicorn_server, tmp_path, monkeypatch):
    """Found by review (2026-12-05).

    An interrupted ``PATCH`` keeps none of the bytes the server received: the next ``HEAD``
    answers the offset from before it, and the client sends them all again.

    tus 1.0.0, PATCH: "The Server SHOULD always attempt to store as much of the received data
    as possible." tusd does (``writeChunk``: "We try to finish the upload, even if an error
    occurred"; ``newOffset := offset + bytesWritten`` whatever the body's error). Here a body
    that ends early is refused whole (``web/streams.py``, ``read_chunks``: ``body_interrupted``
    / ``short_body``, raised through ``views/tus_steps.py``, ``append``).

    Clients notice: tuspy's default ``chunk_size`` is the whole file (``sys.maxsize``), as is
    tus-js-client's and Uppy's (``chunkSize: Infinity``), so one dropped connection at 90 % of
    a large file costs all of it: resumability is lost for clients in their default
    configuration. tuspy (real client, with ``retries``) through a loopback proxy that drops
    the connection once half of the file has gone through, under gunicorn (which streams the
    body to Kinto; waitress buffers it, and the app never sees the bytes).

    Expected: tuspy's retry resumes from an offset above 0 (tusd: what it had received).
    """
    from tusclient import client as tus_client
    from tusclient import request as tus_request

    size = 64 * 1024 * 1024
    content = os.urandom(size)
    proxy = TcpProxy("127.0.0.1", gunicorn_server.port)
    offsets = []
    real_patch = tus_request.requests.patch

    def recording_patch(url, *args, **kwargs):
        offsets.append(int(kwargs["headers"]["upload-offset"]))
        return real_patch(url, *args, **kwargs)

    monkeypatch.setattr(tus_request.requests, "patch", recording_patch)
    stop = threading.Event()

    def cut_half_way():
        while not stop.is_set():
            if proxy.sent > size // 2:
                proxy.down()
                time.sleep(0.2)
                proxy.up()
                return
            time.sleep(0.001)

    cutter = threading.Thread(target=cut_half_way, daemon=True)
    try:
        endpoint = f"http://127.0.0.1:{proxy.port}/v1{COLLECTION}/records/cut/attachment/uploads"
        credentials = requests.auth._basic_auth_str(*live.ALICE)
        uploader = tus_client.TusClient(endpoint, headers={"Authorization": credentials}).uploader(
            file_stream=io.BytesIO(content),
            metadata={"filename": "cut.bin"},
            retries=3,
            retry_delay=0.5,
        )
        uploader.set_url(uploader.create_url())
        cutter.start()
        uploader.upload()
    finally:
        stop.set()
        proxy.close()
    assert len(offsets) >= 2, f"the connection was never cut: {offsets}"
    assert offsets[0] == 0
    assert offsets[1] > 0, (
        f"tuspy resumed from offset {offsets[1]} after the server had received about "
        f"{size // 2} bytes: the interrupted PATCH kept nothing"
    )


@pytest.fixture(scope="module")
def tus_js():
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm needed")
    return live.ensure_tus_js()


TUS_JS = """
const fs = require("fs");
const tus = require("tus-js-client");
const [endpoint, path, storage, mode] = process.argv.slice(2);
const size = fs.statSync(path).size;
const options = {
  endpoint,
  headers: { Authorization: "Basic " + Buffer.from("alice:passwd").toString("base64") },
  metadata: { filename: "file.bin" },
  chunkSize: 64 * 1024,
  retryDelays: [0, 100, 300],
  urlStorage: new tus.FileUrlStorage(storage),
  fingerprint: async () => `${path}-${size}`,
  onError: (error) => { console.error(String(error)); process.exit(1); },
  onSuccess: () => console.log(upload.url || "done"),
};
let source = fs.createReadStream(path);
if (mode === "parallel") options.parallelUploads = 2;
if (mode === "deferred") {
  options.uploadLengthDeferred = true;
  // A stream of unknown length (no file path for tus-js-client to stat).
  const { PassThrough } = require("stream");
  source = fs.createReadStream(path).pipe(new PassThrough());
} else {
  options.uploadSize = size;
}
if (mode === "during-creation") options.uploadDataDuringCreation = true;
if (mode === "remove") options.removeFingerprintOnSuccess = true;
if (mode === "parallel") delete options.uploadSize;
const upload = new tus.Upload(source, options);
upload.findPreviousUploads().then((previous) => {
  if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
  upload.start();
});
"""


def _node(tus_js, tmp_path, server, record_id, mode, content):
    (tmp_path / "upload.js").write_text(TUS_JS)
    source = tmp_path / f"{mode}.bin"
    if not source.exists():
        source.write_bytes(content)
    endpoint = f"{server.url}{COLLECTION}/records/{record_id}/attachment/uploads"
    result = subprocess.run(
        ["node", "upload.js", endpoint, str(source), str(tmp_path / f"{mode}.json"), mode],
        cwd=tmp_path,
        env={**live.client_env(tmp_path), "NODE_PATH": str(tus_js)},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result
    return result


def _attachment(server, record_id):
    url = f"{server.url}{COLLECTION}/records/{record_id}/attachment"
    return requests.get(url, auth=live.ALICE, timeout=30).content


@pytest.mark.live
@pytest.mark.parametrize("mode", ["during-creation", "deferred", "remove"])
def test_checked_tus_js_client_modes(waitress_server, tus_js, tmp_path, mode):
    """tus-js-client with ``uploadDataDuringCreation``,
    ``uploadLengthDeferred`` (its last ``PATCH`` tells ``Upload-Length``; a stream of an exact
    number of chunks hangs tus-js-client 4 itself, ``NodeStreamFileSource.readChunk`` waiting
    for data after the end: the server's side of it, an empty last ``PATCH``, is checked in
    :func:`test_checked_defer_length_and_concatenation`) and ``removeFingerprintOnSuccess``."""
    content = os.urandom(4 * 64 * 1024 + 100)
    record_id = f"mode-{mode}"
    _node(tus_js, tmp_path, waitress_server, record_id, mode, content)
    assert _attachment(waitress_server, record_id) == content
    if mode == "remove":
        assert json.loads((tmp_path / "remove.json").read_text()) == {}
