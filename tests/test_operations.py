"""Operations, as an attacker and an operator meet them: the metrics, the heartbeat and the
logs. Found by review (2026-12-05): the tests that found a defect say so; the others keep
attacks that the code withstood.

Real services only: Kinto apps in process, moto's S3 server behind the TCP proxy of
``tests/support/tcpproxy.py`` for outages, and live gunicorn, uWSGI and waitress servers started
from the shipped configurations.
"""

import base64
import configparser
import contextlib
import io
import os
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
import webob
from kinto.plugins import prometheus
from pyramid.exceptions import ConfigurationError

from kinto_attachment import heartbeat

from .conftest import ALICE, Kinto, basic_auth, build_settings, make_app, s3_client, s3_settings
from .support.live import ALICE as LIVE_ALICE
from .support.live import (
    REQUEST_TIMEOUT,
    ROOT,
    create_collection,
    running_server,
)
from .support.tcpproxy import TcpProxy
from .test_metrics import INCLUDES, _samples, added, scrape


LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
TUS = {"Tus-Resumable": "1.0.0"}
UPLOAD_BYTES = "kinto_attachment_upload_bytes_total"
DEFAULT = "/v1/buckets/default/collections/mine/records"


# Metrics, in process.


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """An app with Kinto's Prometheus plugin, as ``config/metrics.ini`` includes it."""
    prometheus.reset_registry()
    base_path = str(tmp_path_factory.mktemp("attachments"))
    settings = build_settings("memory", base_path, **{"kinto.includes": INCLUDES})
    kinto = Kinto(make_app(settings), base_path)
    kinto.create_collection()
    kinto.app.put_json("/v1/buckets/default/collections/mine", {}, headers=ALICE)
    yield kinto
    prometheus.reset_registry()


def _wsgi(kinto, path, method, body, headers=(), length=None, chunked=False, **environ):
    """What a WSGI server hands the app, without webtest's checks (which refuse what some
    servers pass on): ``length`` as ``CONTENT_LENGTH`` (none when None); ``chunked``: a
    ``Transfer-Encoding: chunked`` body that the server ends itself, as gunicorn hands it
    (``wsgi.input_terminated``, no ``CONTENT_LENGTH``)."""
    request = webob.Request.blank(path, method=method, headers=dict(headers), environ=environ)
    request.environ["wsgi.input"] = io.BytesIO(body)
    request.environ.pop("CONTENT_LENGTH", None)
    if length is not None:
        request.environ["CONTENT_LENGTH"] = str(length)
    if chunked:
        request.environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        request.environ["wsgi.input_terminated"] = True
    return request.get_response(kinto.app.app)


def _multipart(content, boundary="review-boundary"):
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="attachment"; '
            f'filename="chunked.txt"\r\nContent-Type: text/plain\r\n\r\n'
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )


def _chunked_multipart(kinto, content):
    body = _multipart(content)
    headers = {**ALICE, "Content-Type": "multipart/form-data; boundary=review-boundary"}
    url = kinto.record_url(f"chunked-{uuid.uuid4().hex[:8]}") + "/attachment"
    return _wsgi(kinto, url, "POST", body, headers, chunked=True), "attachment", len(body)


def _chunked_tus_patch(kinto, content):
    record = kinto.record_url(f"chunked-{uuid.uuid4().hex[:8]}")
    created = kinto.app.post(
        record + "/attachment/uploads",
        headers={
            **ALICE,
            **TUS,
            "Upload-Length": str(len(content)),
            "Upload-Metadata": "filename YS50eHQ=",
        },
        status=201,
    )
    url = created.headers["Location"][len("http://localhost") :]
    headers = {
        **ALICE,
        **TUS,
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": "0",
    }
    return _wsgi(kinto, url, "PATCH", content, headers, chunked=True), "tus", len(content)


def _chunked_data_file(kinto, content):
    response = _wsgi(kinto, "/v1/data/files", "POST", content, chunked=True, **LOCAL)
    return response, "data_files", len(content)


@pytest.mark.parametrize(
    "send", [_chunked_multipart, _chunked_tus_patch, _chunked_data_file], ids=lambda f: f.__name__
)
def test_chunked_uploads_count_their_bytes(measured, send):
    """Found by review (2026-12-05).

    ``attachment_upload_bytes_total`` is "request body bytes of uploads"
    (docs/metrics.rst), and chunked bodies are uploads like any other under all three servers
    (docs/production.rst). The tween counts ``request.content_length or 0``: under gunicorn
    and uWSGI a chunked body has no ``Content-Length`` (waitress writes one in), so each such
    upload, stored whole, is counted 0 bytes."""
    content = os.urandom(50_000)
    before = scrape(measured.app)
    response, route, body_size = send(measured, content)
    after = scrape(measured.app)
    assert response.status_int in (200, 201, 204), response.text
    status = str(response.status_int)
    counted = added(before, after, UPLOAD_BYTES, route=route, status=status)
    assert counted >= len(content), f"{route}: {counted} bytes counted for {body_size} received"


def test_an_announced_body_that_never_came_is_not_counted(measured):
    """Found by review (2026-12-05).

    An anonymous ``POST`` announcing ``Content-Length: 10**15`` and sending
    nothing (gunicorn and uWSGI answer it ``401`` without reading: docs/production.rst) adds
    a petabyte to ``attachment_upload_bytes_total``: the counter takes the client's word
    (``request.content_length``), not the bytes received. One request of anyone's ruins the
    dashboard's bytes-per-second panel for good (a counter never goes down)."""
    url = measured.record_url("announced") + "/attachment"
    headers = {"Content-Type": "multipart/form-data; boundary=x"}
    before = scrape(measured.app)
    response = _wsgi(measured, url, "POST", b"", headers, length=10**15)
    after = scrape(measured.app)
    assert response.status_int == 401
    counted = added(before, after, UPLOAD_BYTES, route="attachment", status="401")
    assert counted == 0, f"{counted:.0f} bytes counted, none received"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/buckets/blog/collections/articles/records/neg/attachment",
        "/v1/buckets/blog/collections/articles/records/neg/attachment/uploads",
        "/v1/data/files",
    ],
)
def test_a_negative_content_length_is_a_400_with_metrics_on(measured, path):
    """Found by review (2026-12-05).

    ``Content-Length: -1`` is refused with a ``400`` by the views
    (``web.streams.declared_length``: "a proxy or another server may not" refuse it; uWSGI
    passes it on). With metrics on, the tween then counts ``request.content_length``, -1:
    Prometheus' ``Counter.inc(-1)`` raises ``ValueError`` above Pyramid's exception views,
    and the server gets an exception instead of the ``400`` (uWSGI closes the connection
    without an answer)."""
    headers = {
        **ALICE,
        **TUS,
        "Upload-Length": "5",
        "Content-Type": "multipart/form-data; boundary=x",
    }
    try:
        response = _wsgi(measured, path, "POST", b"", headers, length=-1, **LOCAL)
    except ValueError as e:
        pytest.fail(f"the app raised instead of answering: {e!r}")
    assert response.status_int == 400, response.text


def _shipped_metrics_settings():
    """The ``kinto.prometheus_*`` settings of ``config/metrics.ini``."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "config" / "metrics.ini")
    return {k: v for k, v in config["app:main"].items() if k.startswith("kinto.prometheus_")}


def test_invented_credentials_make_no_series_with_the_shipped_metrics_config(tmp_path):
    """Found by review (2026-12-05) (shipped configuration and docs).

    ``config/metrics.ini`` (basicauth, as
    ``kinto.ini``) leaves Kinto's ``users`` counter on, labelled by user id: any client
    inventing Basic credentials (basicauth takes any) makes one series per request, kept for
    the process's life (memory, scrape size). docs/security.rst lists Kinto's id labels and
    says how to bound them, but not this one (``kinto.prometheus_disabled_metrics = users``
    would)."""
    prometheus.reset_registry()
    try:
        settings = build_settings(
            "memory", str(tmp_path), **{"kinto.includes": INCLUDES}, **_shipped_metrics_settings()
        )
        app = make_app(settings)
        scrape(app)
        before = set(scrape(app))
        for _ in range(20):
            app.get("/v1/", headers=basic_auth(uuid.uuid4().hex, "x"))
        grown = set(scrape(app)) - before
    finally:
        prometheus.reset_registry()
    by_user = sorted(key for key in grown if "userid" in dict(key[1]))
    assert len(by_user) < 5, f"{len(by_user)} new series, e.g. {by_user[:2]}"


def test_metric_labels_name_no_bucket_or_file_of_a_refused_client(measured):
    """anonymous uploads, downloads and tus requests on invented ids are
    refused (>= 400), and neither Kinto nor the plugin labels anything with their ids or
    filenames then."""
    before = scrape(measured.app)
    secret = f"secret-{uuid.uuid4().hex[:8]}"
    record = f"/v1/buckets/{secret}/collections/{secret}/records/{secret}"
    measured.app.post(
        record + "/attachment",
        upload_files=[("attachment", f"{secret}.txt", b"x")],
        status="*",
    )
    measured.app.get(record + "/attachment", status="*")
    measured.app.head(record + "/attachment/uploads/" + secret, headers=TUS, status="*")
    measured.app.get(f"/v1/attachments/{secret}.txt", status="*")
    after = scrape(measured.app)
    assert not [key for key in set(after) - set(before) if secret in repr(key)]


def test_the_api_description_hides_data_files_from_whom_the_route_is_hidden(measured):
    """Found by review (2026-12-05) (information).

    ``/data/files`` is private: a caller outside
    ``data_files.trusted_networks`` gets "what a path that does not exist gets, as if it did
    not exist" (docs/data-files.rst; a 404 at the root was changed into Kinto's 307 so that
    the answer would not tell the route from a missing one). ``GET /v1/__api__``, public,
    describes ``/data/files`` and ``/data/files/{id}`` to that same caller."""
    outsider = {"REMOTE_ADDR": "203.0.113.7"}
    measured.app.get("/v1/data/files", extra_environ=outsider, status=404)
    paths = measured.app.get("/v1/__api__", extra_environ=outsider).json["paths"]
    assert not [path for path in paths if path.startswith("/data/files")]


# Metrics, live: gunicorn and uWSGI as docs/production.rst starts them, with Prometheus.


def streaming_metrics_server(folder, name):
    """The shipped ``config/metrics.ini`` (``kinto.ini`` with Prometheus), served by ``name``
    (gunicorn, uwsgi) from its shipped configuration."""
    return running_server(folder, name, extended_by=ROOT / "config" / "metrics.ini")


def _answered(server, path, timeout=30):
    """The first HTTP answer of ``path`` (whatever its status), once the app is loaded."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.get(f"{server.origin}{path}", timeout=5)
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.live
def test_live_gunicorn_with_metrics_answers_gets(tmp_path):
    """Found by review (2026-12-05) (severe).

    Under gunicorn (docs/production.rst) with a metrics plugin on
    (docs/metrics.rst), every ``GET`` answers ``500``, the heartbeat included: the tween puts
    a ``_FileWrapper`` *instance* in ``environ["wsgi.file_wrapper"]`` for each ``GET``, and
    gunicorn's worker then runs ``isinstance(respiter, environ["wsgi.file_wrapper"])``
    (``TypeError: isinstance() arg 2 must be a type``) after the app answered. The request
    log says ``200`` meanwhile."""
    with streaming_metrics_server(tmp_path, "gunicorn") as server:
        _answered(server, "/v1/__lbheartbeat__")
        statuses = {
            path: requests.get(f"{server.origin}{path}", timeout=REQUEST_TIMEOUT).status_code
            for path in ("/v1/__lbheartbeat__", "/v1/__heartbeat__", "/v1/", "/v1/__metrics__")
        }
        server.stop()
        output = server.output()
    assert set(statuses.values()) == {200}, (statuses, output[-2000:])


@pytest.fixture(scope="module")
def uwsgi_metrics(tmp_path_factory):
    with streaming_metrics_server(tmp_path_factory.mktemp("uwsgi-metrics"), "uwsgi") as server:
        server.wait_ready()
        create_collection(server, "ops", "files")
        yield server


def _live_uploads(server):
    response = requests.get(f"{server.origin}/v1/__metrics__", timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200, response.text
    return _samples(response.text)


def _raw_head(server, head):
    """Send a request head (no body) and half-close: the status line of the answer, or
    ``b""`` when the connection closed without one."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode())
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.live
def test_live_uwsgi_a_chunked_upload_counts_its_bytes(uwsgi_metrics):
    """Found by review (2026-12-05): :func:`test_chunked_uploads_count_their_bytes` under
    the shipped uWSGI, where a chunked multipart upload of 200 kB was stored (``201``) and
    counted 0 bytes."""
    url = f"{uwsgi_metrics.origin}/v1/buckets/ops/collections/files/records/chunked/attachment"
    content = os.urandom(200_000)
    body = _multipart(content)
    before = _live_uploads(uwsgi_metrics)
    response = requests.post(
        url,
        data=iter([body[:1000], body[1000:]]),  # A generator: requests sends it chunked.
        headers={"Content-Type": "multipart/form-data; boundary=review-boundary"},
        auth=LIVE_ALICE,
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 201, response.text
    after = _live_uploads(uwsgi_metrics)
    counted = added(before, after, UPLOAD_BYTES, route="attachment", status="201")
    assert counted >= len(content), counted


@pytest.mark.live
def test_live_uwsgi_an_announced_body_that_never_came_is_not_counted(uwsgi_metrics):
    """Found by review (2026-12-05): :func:`test_an_announced_body_that_never_came_is_not_
    counted` under the shipped uWSGI, where a request head announcing a petabyte, with no
    body, answered ``401``, counted a petabyte."""
    path = "/v1/buckets/ops/collections/files/records/announced/attachment"
    before = _live_uploads(uwsgi_metrics)
    status = _raw_head(
        uwsgi_metrics,
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 999999999999999\r\n\r\n",
    )
    assert status == b"HTTP/1.1 401 Unauthorized"
    after = _live_uploads(uwsgi_metrics)
    counted = added(before, after, UPLOAD_BYTES, route="attachment", status="401")
    assert counted == 0, f"{counted:.0f} bytes counted, none sent"


@pytest.mark.live
def test_live_uwsgi_a_negative_content_length_is_answered(uwsgi_metrics):
    """Found by review (2026-12-05): :func:`test_a_negative_content_length_is_a_400_with_
    metrics_on` under the shipped uWSGI, which passes ``Content-Length: -1`` on: the
    connection closed without an answer instead of the views' ``400``."""
    path = "/v1/buckets/ops/collections/files/records/negative/attachment"
    status = _raw_head(
        uwsgi_metrics,
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Basic {base64.b64encode(b'alice:passwd').decode()}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: -1\r\n\r\n",
    )
    assert status.startswith(b"HTTP/1.1 400"), status


# Heartbeat.


def _s3_app(endpoint, **extra):
    settings = build_settings("memory", None, **extra)
    del settings["kinto.attachment.base_path"]
    settings.update(s3_settings(endpoint))
    return make_app(settings), settings["kinto.attachment.aws.bucket_name"]


def test_heartbeat_probes_do_not_pile_up_while_s3_hangs(s3_server):
    """Found by review (2026-12-05).

    While S3 accepts connections and never answers (an overloaded endpoint, a
    load balancer without backends), each ``GET /v1/__heartbeat__`` (anonymous) answers
    ``503`` within Kinto's ``heartbeat_timeout_seconds`` (right), but leaves its probe
    running in a thread of its own: ``attachments_ping`` starts a new PutObject whatever is
    already in flight, then a DeleteObjects in its ``finally``. With the shipped S3 defaults
    (5 s connect, 60 s read, 3 attempts) each probe holds a thread and an S3 connection for
    minutes; load balancers polling every few seconds, or anyone, pile them up without bound.
    One probe in flight at a time (the others answer with its result, or false) bounds it."""
    host, port = s3_server.removeprefix("http://").rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    try:
        app, _ = _s3_app(
            f"http://127.0.0.1:{proxy.port}", **{"kinto.heartbeat_timeout_seconds": "1"}
        )
        assert app.get("/v1/__heartbeat__").json["attachments"] is True
        proxy.hole()
        for _ in range(5):
            started_at = time.monotonic()
            response = app.get("/v1/__heartbeat__", status=503)
            assert response.json["attachments"] is False
            assert time.monotonic() - started_at < 3  # Answered within its timeout.
        time.sleep(0.5)
        held = len(proxy._sockets)  # The probes' connections, held unanswered.
    finally:
        proxy.close()  # The held probes fail at once, and end.
    assert held <= 1, f"{held} heartbeat probes waiting on S3 at once"


def test_heartbeat_leaves_nothing_in_a_versioned_bucket(s3_server):
    """Found by review (2026-12-05).

    Each ``GET /v1/__heartbeat__`` (anonymous, unbounded) writes and deletes a
    probe object. In a bucket with versioning on, the delete only adds a delete marker: every
    heartbeat leaves a version of its probe and a marker, for ever (storage, listings, the
    cost of each), two per call of anyone. Deleting the probe's own version (``VersionId``
    of its ``PutObject``) leaves nothing."""
    app, bucket = _s3_app(s3_server)
    client = s3_client(s3_server)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for _ in range(5):
        assert app.get("/v1/__heartbeat__").json["attachments"] is True
    listed = client.list_object_versions(Bucket=bucket)
    left = listed.get("Versions", []) + listed.get("DeleteMarkers", [])
    assert left == [], f"{len(left)} versions and markers left, e.g. {left[0]['Key']}"


@contextlib.contextmanager
def small_disk():
    """A 64 KiB tmpfs, mounted for the block (skipped where mounting is not allowed)."""
    folder = tempfile.mkdtemp(prefix="review-small-disk-")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", folder], capture_output=True
    )
    if mounted.returncode != 0:
        os.rmdir(folder)
        message = f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}"
        if os.environ.get("CI") == "true":  # CI runs as root: the test runs there.
            pytest.fail(message + " (CI=true: this test must run)", pytrace=False)
        pytest.skip(message)
    try:
        yield Path(folder)
    finally:
        subprocess.run(["umount", "-l", folder], check=False)
        os.rmdir(folder)


def test_heartbeat_on_a_full_or_read_only_disk(tmp_path):
    """on a full disk, and on one remounted read-only, the heartbeat
    answers ``503`` with ``attachments: false`` at once, and leaves no file behind."""
    with small_disk() as disk:
        base_path = disk / "files"
        app = make_app(build_settings("memory", str(base_path)))
        assert app.get("/v1/__heartbeat__").json["attachments"] is True
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"x" * 4096)
        assert app.get("/v1/__heartbeat__", status=503).json["attachments"] is False
        assert os.listdir(base_path) == []
        filler.unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        try:
            assert app.get("/v1/__heartbeat__", status=503).json["attachments"] is False
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        assert os.listdir(base_path) == []
        assert app.get("/v1/__heartbeat__").json["attachments"] is True


# Logs.


@pytest.mark.live
def test_live_shipped_logging_writes_no_credentials(tmp_path):
    """Found by review (2026-12-05) (shipped configuration).

    Under ``config/kinto.ini`` (logger ``kinto`` at
    ``INFO``), a request whose query string is not UTF-8 (``?x=%FF``: a Latin-1 link, a
    client's bug) makes Kinto log ``Error decoding QUERY_STRING: {environ}`` at ``INFO``
    (``kinto/core/errors.py``): the whole WSGI environment, its ``HTTP_AUTHORIZATION`` (a
    Basic header is the password) and ``HTTP_COOKIE`` included, and the ``QUERY_STRING`` of
    a fetch URL with its ``signature``, which the request log masks (docs/security.rst:
    "whoever reads it could fetch the file"). The formatter that every shipped configuration
    uses (``SummaryFormatter``) writes it as it comes."""
    password = f"pw-{uuid.uuid4().hex}"
    cookie = f"session={uuid.uuid4().hex}"
    with running_server(tmp_path) as server:
        response = requests.get(
            f"{server.origin}/v1/buckets?x=%FF",
            auth=("alice", password),
            headers={"Cookie": cookie},
            timeout=REQUEST_TIMEOUT,
        )
        assert response.status_code == 400
        server.stop()
        log = server.output()
    token = base64.b64encode(f"alice:{password}".encode()).decode()
    leaked = [line[:200] for line in log.splitlines() if token in line or cookie in line]
    assert not leaked, leaked


def test_a_redis_password_in_the_query_is_redacted_at_startup(tmp_path):
    """Found by review (2026-12-05) (minor).

    Start-up errors on a destination's URL show "its password shown as
    ``***``" (docs/events.rst): ``redacted`` masks the user info only. redis-py takes the
    password from the query too (``redis://host/0?password=...``; its documented form for
    ``unix://`` sockets), which is then written whole to the logs and terminals."""
    password = f"pw-{uuid.uuid4().hex}"
    for url in (f"redis://:6379/0?password={password}", f"unix://?password={password}"):
        settings = build_settings(
            "memory",
            str(tmp_path),
            **{
                "kinto.attachment.events.destinations": "redis",
                "kinto.attachment.events.redis.url": url,
                "kinto.attachment.events.url_secret": "x" * 40,
            },
        )
        with pytest.raises(ConfigurationError) as refused:
            make_app(settings)
        assert "redis.url" in str(refused.value)
        assert password not in str(refused.value), str(refused.value)


# Found by the review of the fixes (2026-12-05).


def test_a_multipart_upload_in_the_default_bucket_counts_its_bytes(measured):
    """Found by review (2026-12-05).

    Defect (regression of 90a64fd).

    ``attachment_upload_bytes_total`` now counts the bytes read through
    ``streams.request_body`` in ``environ["kinto_attachment.body_read"]``. An upload to
    ``/buckets/default/...`` is read by a subrequest (``views/default_bucket.py``) whose
    environ is a new dict: the count lands there, and the tween reads the outer request's,
    0. Every default-bucket upload (Kinto Admin's and kinto-http's "default" bucket) is now
    counted 0 bytes, where ``request.content_length`` counted it before."""
    content = b"d" * 20_000
    before = scrape(measured.app)
    response = measured.upload(f"{DEFAULT}/m1", content=content, status=201)
    after = scrape(measured.app)
    body = int(response.request.headers["Content-Length"])
    counted = added(before, after, UPLOAD_BYTES, route="attachment", status="201")
    assert counted == body, f"{counted} bytes counted for a body of {body}"


def test_a_tus_creation_with_upload_in_the_default_bucket_counts_its_bytes(measured):
    """Found by review (2026-12-05).

    Defect (same cause as above): a tus creation-with-upload (tus-js-client's
    ``uploadDataDuringCreation``) in the default bucket stores its first bytes, counted 0."""
    content = b"t" * 5000
    before = scrape(measured.app)
    measured.app.post(
        f"{DEFAULT}/t1/attachment/uploads",
        content,
        headers={
            **ALICE,
            **TUS,
            "Upload-Length": str(2 * len(content)),
            "Upload-Metadata": "filename " + base64.b64encode(b"a.txt").decode(),
            "Content-Type": "application/offset+octet-stream",
        },
        status=201,
    )
    after = scrape(measured.app)
    counted = added(before, after, UPLOAD_BYTES, route="tus", status="201")
    assert counted == len(content), f"{counted} bytes counted, {len(content)} stored"


def _download_body(app, url, file_wrapper):
    request = webob.Request.blank(url, headers=ALICE)
    request.environ["wsgi.file_wrapper"] = file_wrapper
    response = request.get_response(app.app)
    assert response.status_int == 200, response.text
    return response.app_iter


def test_gunicorn_still_sends_local_downloads_with_sendfile_when_metrics_are_on(measured):
    """Found by review (2026-12-05).

    Defect (minor: CPU, not correctness).

    docs and ``web.streams.file_body`` promise the server's ``wsgi.file_wrapper`` "(``sendfile``
    for local files)". With metrics on, the tween hands the server's wrapper a
    ``metrics.transfers._SentFile`` instead of the file, which has no ``fileno()``: gunicorn's
    ``Response.sendfile`` checks ``util.has_fileno(respiter.filelike)`` and falls back to
    reading the file through Python (uWSGI alike: ``PyObject_AsFileDescriptor`` fails, it
    calls ``read``). Measured under the shipped gunicorn: 10 downloads of 64 MiB cost the
    server 0.28 s of CPU with metrics, 0.18 s without. Without metrics the file (a real file
    object) goes to sendfile."""
    from gunicorn import util
    from gunicorn.http.wsgi import FileWrapper

    url = measured.record_url("sendfile")
    measured.upload(url, content=b"s" * 100_000)
    body = _download_body(measured.app, url + "/attachment", FileWrapper)
    try:
        assert isinstance(body, FileWrapper)  # gunicorn's own check (fixed by 90a64fd)
        assert util.has_fileno(body.filelike), f"{type(body.filelike).__name__}: no fileno()"
    finally:
        body.close()


def test_a_probe_that_raised_does_not_wedge_the_next_ones():
    """Found by review (2026-12-05).

    Checked, no defect: a probe raising fails its waiters alike, and the next call runs
    a new one; a probe under way is shared (one call, not three), and a waiter gives up
    after its timeout with ``False``."""
    probes = heartbeat._OneAtATime()
    with pytest.raises(RuntimeError):
        probes.result(lambda: (_ for _ in ()).throw(RuntimeError("store down")), 1)
    assert probes.result(lambda: True, 1) is True

    calls, release = [], threading.Event()

    def slow():
        calls.append(1)
        release.wait(5)
        return True

    results = []
    threads = [threading.Thread(target=lambda: results.append(probes.result(slow, 0.3)))]
    threads[0].start()
    time.sleep(0.1)
    threads += [threading.Thread(target=lambda: results.append(probes.result(slow, 0.3)))]
    threads[1].start()
    threads[1].join()
    release.set()
    threads[0].join()
    assert len(calls) == 1
    assert sorted(results, key=str) == [False, True]


def test_the_api_description_names_no_data_files_tag_to_whom_the_route_is_hidden(measured):
    """Found by review (2026-12-05).

    Defect (minor, information; the fix of 90a64fd is partial).

    To a caller outside ``data_files.trusted_networks``, ``/data/files`` is to be "a path
    that does not exist" and ``/v1/__api__`` now leaves out its paths, but its ``tags`` still
    list ``Data files`` (``openapi.extended`` adds every tag of ``operations.TAG`` whatever
    routes are described): the description still tells that the route exists. (``Files`` is
    listed too, on an app serving no files and with no fetch route.)"""
    outsider = {"REMOTE_ADDR": "203.0.113.7"}
    measured.app.get("/v1/data/files", extra_environ=outsider, status=404)
    spec = measured.app.get("/v1/__api__", extra_environ=outsider).json
    described = {
        tag
        for path in spec["paths"].values()
        for op in path.values()
        if isinstance(op, dict)
        for tag in op.get("tags", [])
    }
    tags = {tag["name"] for tag in spec.get("tags", [])}
    assert "Data files" not in tags, sorted(tags - described)


def test_a_webhook_url_refused_at_startup_does_not_show_its_token(tmp_path):
    """Found by review (2026-12-05).

    Defect (minor, credentials in logs).

    ``redacted`` (start-up errors on a destination's URL) masks the user info and query
    parameters named password/secret/token only. Webhook endpoints take their token in the
    path (Slack's ``/services/T/B/<token>``) or in other parameters (Azure's ``?code=``,
    ``?sig=``): ``webhook._failure`` knows it ("never its path and query, where a token may
    be") and shows the origin alone at delivery, but a webhook URL refused at start-up (a
    scheme mistyped, a port out of range) is written whole to the terminal and the logs."""
    token = f"tok{uuid.uuid4().hex}"
    for url in (
        f"htps://hooks.example.com/services/T0/B0/{token}",
        f"https://hooks.example.com:99999/api/hook?code={token}",
    ):
        settings = build_settings(
            "memory",
            str(tmp_path),
            **{
                "kinto.attachment.events.destinations": "webhook",
                "kinto.attachment.events.webhook.url": url,
                "kinto.attachment.events.webhook.secret": "whsec_" + "QUJD" * 8,
                "kinto.attachment.events.url_secret": "x" * 40,
            },
        )
        with pytest.raises(ConfigurationError) as refused:
            make_app(settings)
        assert "webhook.url" in str(refused.value)
        assert token not in str(refused.value), str(refused.value)
