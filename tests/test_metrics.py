"""Metrics: what Prometheus scrapes from ``/v1/__metrics__`` and what StatsD receives.

Kinto's Prometheus plugin keeps its metrics in the process's registry: the tests read what
each request added (:func:`added`), on an in-process app and on a live waitress server.
"""

import contextlib
import hashlib
import socket
import time
import uuid
import wsgiref.util

import pytest
import requests
from kinto.plugins import prometheus
from prometheus_client.parser import text_string_to_metric_families
from waitress.buffers import ReadOnlyFileBasedBuffer

from kinto_attachment import gc
from kinto_attachment.metrics import transfers as measured
from kinto_attachment.storage.local import LocalStore
from kinto_attachment.web import signed_urls

from .conftest import ALICE, BOB, Kinto, build_settings, make_app, s3_settings
from .support.live import ALICE as LIVE_ALICE
from .support.live import (
    REQUEST_TIMEOUT,
    create_collection,
    live_config,
    started,
    write_random_file,
)
from .web.test_request_log import summaries  # noqa: F401 (a fixture)


#: ``kinto_attachment.metrics`` stands apart until ``kinto_attachment`` includes it itself
#: (including it twice is harmless).
URL_SECRET = "a-metrics-secret-of-enough-length"
INCLUDES = (
    "kinto.plugins.default_bucket kinto.plugins.flush kinto.plugins.prometheus "
    "kinto_attachment kinto_attachment.metrics"
)
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {"Content-Type": "application/offset+octet-stream"}
WAIT = 0.2
BUDGET = 1000


def scrape(app):
    """``{(sample name, sorted labels): value}`` of what ``/v1/__metrics__`` shows."""
    return _samples(app.get("/v1/__metrics__").text)


def _samples(text):
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def added(before, after, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


def transfers(before, after):
    """What changed in the ``attachment_`` transfer metrics: ``{(name, labels): delta}``."""
    return {
        key: value - before.get(key, 0)
        for key, value in after.items()
        if key[0].startswith(("kinto_attachment_upload", "kinto_attachment_download"))
        and not key[0].endswith("_bucket")
        and value != before.get(key, 0)
    }


@pytest.fixture(scope="module")
def kinto(tmp_path_factory):
    prometheus.reset_registry()
    base_path = str(tmp_path_factory.mktemp("attachments"))
    settings = build_settings(
        "memory",
        base_path,
        **{
            "kinto.includes": INCLUDES,
            "kinto.attachment.serve_files": "true",
            "kinto.attachment.data_files.transfer_budget_bytes": str(BUDGET),
            "kinto.attachment.data_files.transfer_wait_seconds": str(WAIT),
            # The fetch route of events' signed URLs (no destination: no events).
            "kinto.attachment.events.url_secret": URL_SECRET,
        },
    )
    kinto = Kinto(make_app(settings), base_path)
    kinto.create_collection()
    yield kinto
    prometheus.reset_registry()


def upload(kinto, content, record="r1", headers=ALICE, status=201):
    return kinto.upload(kinto.record_url(record), content=content, headers=headers, status=status)


def test_a_multipart_upload_counts_its_body_and_status(kinto):
    before = scrape(kinto.app)
    response = upload(kinto, b"x" * 5000)
    after = scrape(kinto.app)
    body = int(response.request.headers["Content-Length"])
    assert body > 5000  # The file and the form around it.
    labels = {"route": "attachment", "status": "201"}
    assert added(before, after, "kinto_attachment_upload_seconds_count", **labels) == 1
    assert added(before, after, "kinto_attachment_upload_seconds_sum", **labels) > 0
    assert added(before, after, "kinto_attachment_upload_bytes_total", **labels) == body
    assert {name for name, _ in transfers(before, after)} == {
        "kinto_attachment_upload_seconds_count",
        "kinto_attachment_upload_seconds_sum",
        "kinto_attachment_upload_bytes_total",
    }


def test_a_refused_upload_counts_its_status(kinto):
    """Its bytes are those read: none, for a body refused before it is read (a count of its
    ``Content-Length`` took whatever a client announced; found by review, 2026-12-05)."""
    before = scrape(kinto.app)
    upload(kinto, b"x" * 100, record="refused", headers=BOB, status=403)
    after = scrape(kinto.app)
    labels = {"route": "attachment", "status": "403"}
    assert added(before, after, "kinto_attachment_upload_seconds_count", **labels) == 1
    assert added(before, after, "kinto_attachment_upload_bytes_total", **labels) == 0


def test_in_the_default_bucket_too(kinto):
    kinto.app.put_json("/v1/buckets/default/collections/mine", {}, headers=ALICE)
    url = "/v1/buckets/default/collections/mine/records/r1"
    before = scrape(kinto.app)
    kinto.upload(url, content=b"abc", status=201)
    after = scrape(kinto.app)
    labels = {"route": "attachment", "status": "201"}
    assert added(before, after, "kinto_attachment_upload_seconds_count", **labels) == 1


def test_downloads_count_the_bytes_sent(kinto):
    content = bytes(range(256)) * 40
    location = upload(kinto, content, record="d1").json["location"]
    url = kinto.record_url("d1") + "/attachment"
    key = kinto.key_of(location)
    before = scrape(kinto.app)
    etag = kinto.app.get(url, headers=ALICE).headers["ETag"]
    kinto.app.get(url, headers={**ALICE, "Range": "bytes=100-199"}, status=206)
    kinto.app.get(url, headers={**ALICE, "If-None-Match": etag}, status=304)
    kinto.app.get(f"/v1/attachments/{key}")
    missing = kinto.app.get("/v1/attachments/missing.bin", status=404)
    after = scrape(kinto.app)

    def bytes_sent(route, status):
        return added(
            before, after, "kinto_attachment_download_bytes_total", route=route, status=status
        )

    def count(route, status):
        return added(
            before, after, "kinto_attachment_download_seconds_count", route=route, status=status
        )

    assert (count("attachment", "200"), bytes_sent("attachment", "200")) == (1, len(content))
    assert (count("attachment", "206"), bytes_sent("attachment", "206")) == (1, 100)
    assert (count("attachment", "304"), bytes_sent("attachment", "304")) == (1, 0)
    assert (count("files", "200"), bytes_sent("files", "200")) == (1, len(content))
    assert (count("files", "404"), bytes_sent("files", "404")) == (1, len(missing.body))


def test_a_download_through_the_servers_file_wrapper(kinto):
    content = b"y" * 3000
    upload(kinto, content, record="w1")
    url = kinto.record_url("w1") + "/attachment"
    before = scrape(kinto.app)
    environ = {"wsgi.file_wrapper": wsgiref.util.FileWrapper}
    response = kinto.app.get(url, headers=ALICE, extra_environ=environ)
    after = scrape(kinto.app)
    assert response.body == content
    labels = {"route": "attachment", "status": "200"}
    assert added(before, after, "kinto_attachment_download_seconds_count", **labels) == 1
    assert added(before, after, "kinto_attachment_download_bytes_total", **labels) == 3000


def test_waitress_sends_a_file_from_its_loop_and_its_position_tells_what_was_sent(tmp_path):
    """What waitress's channel does with a ``wsgi.file_wrapper`` body: read ahead, send, skip
    what the socket took, close (once sent, or when the client went away)."""
    path = tmp_path / "blob"
    path.write_bytes(b"z" * 1000)
    stream = open(path, "rb")  # noqa: SIM115 (closed through the buffer)
    stream.seek(200)
    served = measured._FileWrapper(ReadOnlyFileBasedBuffer)
    body = served(stream, 4096)
    sizes = []
    served.file.sent = sizes.append
    assert body.prepare(None) == 800
    assert len(body.get(500)) == 500  # Read ahead, then back to where it was.
    body.skip(300, True)  # The socket took 300 bytes; then the client went away.
    body.close()
    body.close()
    assert sizes == [300]
    assert stream.closed


def test_tus_uploads(kinto):
    record = kinto.record_url("t1")
    before = scrape(kinto.app)
    created = kinto.app.post(
        record + "/attachment/uploads",
        b"",
        headers={**ALICE, **TUS, "Upload-Length": "10", "Upload-Metadata": "filename YS50eHQ="},
        status=201,
    )
    url = created.headers["Location"][len("http://localhost") :]
    headers = {**ALICE, **TUS, **CHUNK}
    kinto.app.patch(url, b"12345", headers={**headers, "Upload-Offset": "0"}, status=204)
    kinto.app.head(url, headers={**ALICE, **TUS})
    kinto.app.patch(url, b"67890", headers={**headers, "Upload-Offset": "5"}, status=204)
    after = scrape(kinto.app)
    count = "kinto_attachment_upload_seconds_count"
    size = "kinto_attachment_upload_bytes_total"
    assert added(before, after, count, route="tus", status="201") == 1
    assert added(before, after, size, route="tus", status="201") == 0
    assert added(before, after, count, route="tus", status="204") == 2
    assert added(before, after, size, route="tus", status="204") == 10


@pytest.mark.parametrize("prefix", ["/v1", ""])
def test_data_files(kinto, prefix):
    content = b"d" * 700
    before = scrape(kinto.app)
    file_id = kinto.app.post(f"{prefix}/data/files", content, extra_environ=LOCAL).text
    downloaded = kinto.app.get(f"{prefix}/data/files/{file_id}", extra_environ=LOCAL)
    kinto.app.get(f"{prefix}/data/files", extra_environ=LOCAL)  # A listing: no transfer.
    after = scrape(kinto.app)
    assert downloaded.body == content
    labels = {"route": "data_files", "status": "200"}
    assert added(before, after, "kinto_attachment_upload_seconds_count", **labels) == 1
    assert added(before, after, "kinto_attachment_upload_bytes_total", **labels) == 700
    assert added(before, after, "kinto_attachment_download_seconds_count", **labels) == 1
    assert added(before, after, "kinto_attachment_download_bytes_total", **labels) == 700


def test_other_requests_are_no_transfers(kinto):
    upload(kinto, b"abc", record="o1")
    before = scrape(kinto.app)
    kinto.app.get(kinto.record_url("o1"), headers=ALICE)
    kinto.app.head(kinto.record_url("o1") + "/attachment", headers=ALICE)
    kinto.app.delete(kinto.record_url("o1") + "/attachment", headers=ALICE, status=204)
    kinto.app.post("/data/files/x", b"", extra_environ=LOCAL, status=405)  # Not served.
    kinto.app.get("/v1/nowhere", status=404)
    after = scrape(kinto.app)
    assert transfers(before, after) == {}


def test_store_operations_are_timed_by_backend(kinto):
    before = scrape(kinto.app)
    upload(kinto, b"s" * 100, record="s1")
    after = scrape(kinto.app)
    for method in ("stage", "write", "commit", "url"):
        name = "kinto_backend_localstore_seconds_count"
        assert added(before, after, name, method=method) >= 1, method


def test_s3_store_operations_too(s3_server, kinto):
    # A second app (after ``kinto``, which set the Prometheus registry up) on S3.
    settings = build_settings("memory", None, **{"kinto.includes": INCLUDES})
    del settings["kinto.attachment.base_path"]
    settings.update(s3_settings(s3_server))
    app = make_app(settings)
    s3 = Kinto(app)
    s3.create_collection()
    before = scrape(app)
    upload(s3, b"s" * 100)
    after = scrape(app)
    for method in ("stage", "write", "commit", "object_args"):
        name = "kinto_backend_s3store_seconds_count"
        assert added(before, after, name, method=method) >= 1, method


def gc_metrics(scraped):
    return {
        key: value for key, value in scraped.items() if key[0].startswith("kinto_attachment_gc_")
    }


def test_garbage_collections_are_counted(kinto):
    registry = kinto.registry
    kinto.app.post("/v1/data/files?id=old&ttl=1", b"g" * 300, extra_environ=LOCAL)
    before = scrape(kinto.app)
    gc.collect(registry, now=time.time() * 1000 + 1000, dry_run=True, orphans=False)
    dry = scrape(kinto.app)
    gc.collect(registry, now=time.time() * 1000 + 1000, orphans=False)
    after = scrape(kinto.app)
    assert gc_metrics(dry) == gc_metrics(before)
    assert added(before, after, "kinto_attachment_gc_runs_total") == 1
    assert added(before, after, "kinto_attachment_gc_removed_total", kind="expired_files") == 1
    assert added(before, after, "kinto_attachment_gc_removed_total", kind="orphans") == 0
    assert ("kinto_attachment_gc_removed_total", (("kind", "aborted_uploads"),)) in after
    assert added(before, after, "kinto_attachment_gc_removed_bytes_total") == 300


def test_waits_for_the_transfer_budget(kinto):
    limiter = kinto.registry.transfer_limiter
    before = scrape(kinto.app)
    with limiter.reserve(BUDGET):  # Another transfer holds the whole budget.
        kinto.app.post("/v1/data/files", b"w" * 10, extra_environ=LOCAL, status=503)
    after = scrape(kinto.app)
    name = "kinto_attachment_limiter_wait_seconds"
    assert added(before, after, name + "_count", outcome="acquired") == 1
    assert added(before, after, name + "_count", outcome="busy") == 1
    assert added(before, after, name + "_sum", outcome="busy") >= WAIT
    labels = {"route": "data_files", "status": "503"}
    assert added(before, after, "kinto_attachment_upload_seconds_count", **labels) == 1


#: The methods of HTTP that our routes serve: the only ``method`` labels they may make.
METHODS = {"get", "head", "post", "put", "patch", "delete", "options"}


def request_methods(scraped):
    """The ``method`` labels of Kinto's request metrics (``request_summary``...)."""
    return {
        dict(labels)["method"]
        for name, labels in scraped
        if name.startswith("kinto_request_") and "method" in dict(labels)
    }


def test_method_override_values_are_no_labels(kinto):
    """Each value of ``X-HTTP-Method-Override`` made a ``method`` series (issue 25)."""
    uploads = kinto.record_url("m1") + "/attachment/uploads"
    for i in range(50):
        override = {**TUS, "X-HTTP-Method-Override": f"M{i}"}
        kinto.app.post(uploads, headers=override, status="*")
        kinto.app.post(uploads + "/abc", headers=override, status="*")
    assert request_methods(scrape(kinto.app)) <= METHODS


def send_what_clients_choose(kinto, tag):
    """Requests to every route of ours, with ``tag`` wherever a client chooses what it sends:
    ids, names, types, query strings, headers, override values; accepted and refused."""
    app = kinto.app
    anyone = {"User-Agent": f"agent-{tag}", "Origin": f"https://{tag}.example"}
    record = kinto.record_url(f"r-{tag}")
    uploaded = kinto.upload(record, tag.encode(), f"{tag}.txt", mimetype=f"text/x-{tag}")
    app.get(f"{record}/attachment?{tag}={tag}", headers={**ALICE, **anyone})
    app.get(f"{record}/attachment", headers={**ALICE, "Range": f"bytes={tag}"}, status="*")
    app.get(kinto.record_url(f"nope-{tag}") + "/attachment", headers=ALICE, status=404)
    app.get("/v1/attachments/" + uploaded.json["location"].rsplit("/", 1)[-1], headers=anyone)
    app.get(f"/v1/attachments/{tag}.txt", headers=anyone, status=404)

    uploads = kinto.record_url(f"t-{tag}") + "/attachment/uploads"
    meta = {**TUS, "Upload-Length": "6", "Upload-Metadata": f"filename {tag}"}
    app.post(uploads, headers={**ALICE, **meta}, status=400)  # Not base64.
    meta["Upload-Metadata"] = "filename YS50eHQ="
    url = app.post(uploads, headers={**ALICE, **meta}, status=201).headers["Location"]
    url = url[len("http://localhost") :]
    chunk = {**ALICE, **TUS, **CHUNK, "Upload-Offset": "0"}
    app.patch(url, b"123", headers={**chunk, "Upload-Checksum": f"sha1 {tag}"}, status=400)
    app.post(url, b"123", headers={**chunk, "X-HTTP-Method-Override": "PATCH"}, status=204)
    app.post(url, headers={**chunk, "X-HTTP-Method-Override": tag}, status="*")
    app.head(url, headers={**ALICE, **TUS, **anyone})
    app.delete(url, headers={**ALICE, **TUS})
    app.head(f"{uploads}/{tag}", headers={**ALICE, **TUS}, status=404)
    app.post(uploads, headers={**TUS, "X-HTTP-Method-Override": tag}, status="*")

    for prefix in ("/v1", ""):
        local = {"extra_environ": LOCAL}
        app.post(f"{prefix}/data/files?id={tag}&ttl=100000&{tag}=1", tag.encode(), **local)
        app.get(f"{prefix}/data/files/{tag}", headers=anyone, status=403, **local)
        app.get(f"{prefix}/data/files/{tag}", **local)
        app.get(f"{prefix}/data/files/nope-{tag}", status=404, **local)
        app.get(f"{prefix}/data/files", headers={"Host": f"{tag}.example"}, status=403, **local)
        app.delete(f"{prefix}/data/files/{tag}", status=204, **local)


def ours(scraped):
    """The series but those of Kinto's record endpoint, which Kinto labels by record id
    (``metrics_matchdict_fields``): an upload writes its record through it, as a ``PUT`` of
    the record would."""
    return {key for key in scraped if ("endpoint", "record-object") not in key[1]}


def test_no_label_takes_what_a_client_chooses(kinto):
    """The series after two rounds of the same requests with other values are the same: no
    label of ours (nor Kinto's, on our routes) is made of what a client sends."""
    scrape(kinto.app)  # The scrape's own series.
    send_what_clients_choose(kinto, "first")
    first = ours(scrape(kinto.app))
    send_what_clients_choose(kinto, "second")
    second = ours(scrape(kinto.app))
    assert second == first, sorted(second - first)


def test_without_a_metrics_plugin_nothing_is_measured(tmp_path):
    settings = build_settings(
        "memory", str(tmp_path), **{"kinto.includes": "kinto_attachment kinto_attachment.metrics"}
    )
    registry = make_app(settings).app.registry
    assert registry.attachment_store.stage.__func__ is LocalStore.stage
    assert "acquire" not in vars(registry.transfer_limiter)

    def handler(request):
        raise AssertionError("not called")

    assert measured.transfers_tween_factory(handler, registry) is handler
    assert gc.collect(registry, orphans=False).expired_files == []


@contextlib.contextmanager
def statsd_packets():
    """A StatsD server on a loopback UDP port: ``(port, read())``, ``read()`` returning the
    metric lines received so far."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)

    def read():
        lines = []
        while True:
            try:
                lines += sock.recv(65536).decode().splitlines()
            except TimeoutError:
                return lines

    try:
        yield sock.getsockname()[1], read
    finally:
        sock.close()


def test_statsd_gets_counts_with_their_labels_in_the_key(tmp_path):
    with statsd_packets() as (port, read):
        settings = build_settings(
            "memory",
            str(tmp_path),
            **{
                "kinto.includes": "kinto.plugins.statsd kinto_attachment kinto_attachment.metrics",
                "kinto.statsd_url": f"udp://127.0.0.1:{port}",
            },
        )
        kinto = Kinto(make_app(settings), str(tmp_path))
        kinto.create_collection()
        read()
        response = upload(kinto, b"x" * 1234)
        gc.collect(kinto.registry, orphans=False)
        lines = read()
    body = response.request.headers["Content-Length"]
    assert f"kinto.attachment.upload.bytes.route.attachment.status.201:{body}|c" in lines
    key = "kinto.attachment.upload.seconds.route.attachment.status.201:"
    assert any(line.startswith(key) and line.endswith("|ms") for line in lines), lines
    assert any(
        line.startswith("kinto.backend.localstore.seconds.method.commit:") for line in lines
    )
    assert "kinto.attachment.gc.runs:1|c" in lines
    assert "kinto.attachment.gc.removed.kind.expired_files:0|c" in lines
    assert "kinto.attachment.gc.removed_bytes:0|c" in lines


# A live server.


def _metrics_config(base_path):
    text = live_config(0, base_path)
    includes = "                 kinto_attachment\n"
    assert text.count(includes) == 1
    text = text.replace(
        includes,
        includes + "                 kinto.plugins.prometheus\n"
        "                 kinto_attachment.metrics\n",
    )
    # One worker thread: a download that holds it would hold up the server.
    text = text.replace("[server:main]\n", "[server:main]\nthreads = 1\n", 1)
    return text.replace(
        "[app:main]\n", "[app:main]\nkinto.attachment.data_files.gc_interval_seconds = 1\n", 1
    )


def live_scrape(server):
    response = requests.get(f"{server.origin}/v1/__metrics__", timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200, response.text
    return _samples(response.text)


def eventually(server, condition, timeout=20):
    """The scrape for which ``condition(scrape)`` holds, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        scraped = live_scrape(server)
        if condition(scraped) or time.monotonic() > deadline:
            return scraped
        time.sleep(0.1)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    folder = tmp_path_factory.mktemp("metrics-server")
    base_path = folder / "attachments"
    base_path.mkdir()
    ini = folder / "kinto.ini"
    ini.write_text(_metrics_config(base_path))
    with started(folder, ini, base_path=base_path) as server:
        server.wait_ready()
        yield server


@pytest.mark.live
def test_live_uploads_and_downloads(live, tmp_path):
    create_collection(live, "live", "files")
    record = f"{live.origin}/v1/buckets/live/collections/files/records/big"
    size = 32 * 1024 * 1024
    path = tmp_path / "big.bin"
    digest = write_random_file(path, size)
    before = live_scrape(live)
    with open(path, "rb") as f:
        uploaded = requests.post(
            record + "/attachment",
            files={"attachment": ("big.bin", f)},
            auth=LIVE_ALICE,
            timeout=REQUEST_TIMEOUT,
        )
    assert uploaded.status_code == 201, uploaded.text
    refused = requests.post(
        record + "/attachment", files={"attachment": ("x.bin", b"x")}, timeout=REQUEST_TIMEOUT
    )
    assert refused.status_code == 401
    key = uploaded.json()["location"].rsplit("/attachments/", 1)[1]

    # A client that takes its time: the download lasts until its body has been sent.
    sha256 = hashlib.sha256()
    with requests.get(f"{live.origin}/v1/attachments/{key}", stream=True, timeout=30) as r:
        chunks = r.iter_content(1024 * 1024)
        sha256.update(next(chunks))
        time.sleep(1)
        for chunk in chunks:
            sha256.update(chunk)
    assert sha256.hexdigest() == digest

    # A client that goes away: only what was sent is counted.
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(f"GET /v1/attachments/{key} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        received = 0
        while received < 1024 * 1024:
            received += len(sock.recv(65536))

    def downloads_done(scraped):
        name = "kinto_attachment_download_seconds_count"
        return added(before, scraped, name, route="files", status="200") == 2

    after = eventually(live, downloads_done)
    upload_labels = {"route": "attachment", "status": "201"}
    assert added(before, after, "kinto_attachment_upload_seconds_count", **upload_labels) == 1
    sent = added(before, after, "kinto_attachment_upload_bytes_total", **upload_labels)
    assert size < sent < size + 1024
    refused_labels = {"route": "attachment", "status": "401"}
    assert added(before, after, "kinto_attachment_upload_seconds_count", **refused_labels) == 1

    files = {"route": "files", "status": "200"}
    assert added(before, after, "kinto_attachment_download_seconds_count", **files) == 2
    assert added(before, after, "kinto_attachment_download_seconds_sum", **files) >= 1
    sent = added(before, after, "kinto_attachment_download_bytes_total", **files)
    assert size + 1024 * 1024 <= sent < 2 * size
    assert added(before, after, "kinto_backend_localstore_seconds_count", method="commit") == 1


@pytest.mark.live
def test_live_a_download_measured_holds_no_worker_thread(live, tmp_path):
    """Waitress sends a file from its own loop (``wsgi.file_wrapper``): measuring the download
    must not move it to the worker thread, which a client that reads nothing would hold."""
    create_collection(live, "live", "slow")
    path = tmp_path / "big.bin"
    size = 32 * 1024 * 1024
    write_random_file(path, size)
    with open(path, "rb") as f:
        uploaded = requests.post(
            f"{live.origin}/v1/buckets/live/collections/slow/records/slow/attachment",
            files={"attachment": ("big.bin", f)},
            auth=LIVE_ALICE,
            timeout=REQUEST_TIMEOUT,
        )
    assert uploaded.status_code == 201, uploaded.text
    key = uploaded.json()["location"].rsplit("/attachments/", 1)[1]
    before = live_scrape(live)
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(f"GET /v1/attachments/{key} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        # The only worker thread is free while that download waits for its client.
        response = requests.get(f"{live.origin}/v1/", timeout=5)
        assert response.status_code == 200

    def done(scraped):
        name = "kinto_attachment_download_seconds_count"
        return added(before, scraped, name, route="files", status="200") == 1

    after = eventually(live, done)
    assert done(after)
    sent = added(
        before, after, "kinto_attachment_download_bytes_total", route="files", status="200"
    )
    assert 0 < sent < size


@pytest.mark.live
def test_live_garbage_collection(live):
    before = live_scrape(live)
    response = requests.post(
        f"{live.origin}/data/files?ttl=1", data=b"e" * 321, timeout=REQUEST_TIMEOUT
    )
    assert response.status_code == 200, response.text

    def collected(scraped):
        name = "kinto_attachment_gc_removed_total"
        return added(before, scraped, name, kind="expired_files") >= 1

    after = eventually(live, collected)
    assert added(before, after, "kinto_attachment_gc_runs_total") >= 1
    assert added(before, after, "kinto_attachment_gc_removed_total", kind="expired_files") == 1
    assert added(before, after, "kinto_attachment_gc_removed_bytes_total") >= 321
    data_files = {"route": "data_files", "status": "200"}
    assert added(before, after, "kinto_attachment_upload_bytes_total", **data_files) == 321


@pytest.mark.live
def test_live_override_values_make_no_series(live):
    """The observation of issue 25: 200 anonymous requests, each with its own
    ``X-HTTP-Method-Override``, made 200 series (a 6.9 MB ``/v1/__metrics__``)."""
    uploads = f"{live.origin}/v1/buckets/b/collections/c/records/r/attachment/uploads"
    with requests.Session() as session:
        session.post(uploads, headers={**TUS, "X-HTTP-Method-Override": "warm-up"})
        size = len(session.get(f"{live.origin}/v1/__metrics__").content)
        for i in range(200):
            override = {**TUS, "X-HTTP-Method-Override": f"method-{i}"}
            for url in (uploads, uploads + "/abc"):
                response = session.post(url, headers=override, timeout=REQUEST_TIMEOUT)
                assert response.status_code == 405, response.text
        scraped = live_scrape(live)
        grown = len(session.get(f"{live.origin}/v1/__metrics__").content) - size
    assert request_methods(scraped) <= METHODS
    assert grown < 20_000, grown  # A few new series at most: those of the 405s.


def _label_values(scraped, name):
    return {dict(labels).get(name) for _, labels in scraped} - {None, ""}


def test_anonymous_preflights_make_no_series_of_the_ids_they_name(kinto):
    """An anonymous CORS preflight (``OPTIONS``) of ``{record-url}/attachment``,
    ``.../attachment/uploads`` or ``.../attachment/uploads/{id}`` is answered for any bucket
    and collection, existing or not, and Kinto labels its request metrics with the URL's
    ids below 400: each invented id would make series kept for the process's life (memory,
    the scrape). The preflights' ids are forgotten before Kinto reads them."""
    before = _label_values(scrape(kinto.app), "bucket_id")
    preflight = {
        "Origin": "https://anyone.example",
        "Access-Control-Request-Method": "POST",
        "Tus-Resumable": "1.0.0",
    }
    invented = {f"made-up-{uuid.uuid4().hex[:8]}" for _ in range(5)}
    for bucket in invented:
        record = f"/v1/buckets/{bucket}/collections/c/records/r"
        kinto.app.options(record + "/attachment", headers=preflight, status="*")
        kinto.app.options(record + "/attachment/uploads", headers=preflight, status="*")
        kinto.app.options(record + "/attachment/uploads/u", headers=preflight, status="*")
    after = _label_values(scrape(kinto.app), "bucket_id")
    assert not (after - before) & invented, sorted((after - before) & invented)


def test_the_signature_of_a_fetch_url_is_masked_in_the_request_log(kinto, summaries):  # noqa: F811
    """``GET /v1/attachment-fetch/{key}?expires=...&signature=...`` needs no credentials: the
    URL gives its file for ``url_expires_seconds`` to whoever reads it, log readers included.
    The log writes ``signature=-`` (the line, and Kinto's ``querystring`` for JSON logs)."""
    location = kinto.upload(kinto.record_url("secret"), b"private bytes", "p.txt").json["location"]
    key = kinto.key_of(location)
    path = signed_urls.signed_path(URL_SECRET, key, time.time() + 3600)
    signature = path.rsplit("signature=", 1)[1]
    summaries.clear()
    response = kinto.app.get("/v1" + signed_urls.PATH + path)
    assert response.body == b"private bytes"
    (line,) = [line for line in summaries if "attachment-fetch" in line]
    assert signature not in line, line
    assert "signature=-" in line
