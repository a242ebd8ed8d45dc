"""The shipped servers (waitress, gunicorn, uWSGI, nginx in front) against bodies and readers
an attacker or a weak link sends (found by review, 2026-12-05): broken chunked framing is a
``400`` and stores nothing, a stalled chunked body ends after the stall time, a download taken
slowly but steadily is not cut, unread ranged downloads do not hold waitress's threads.

gunicorn and uWSGI run their shipped files with ``KINTO_STALL_TIMEOUT`` lowered (the setting
both read, as ``tests/live/test_stalled_requests.py`` does) so that a stall takes seconds.
"""

import base64
import contextlib
import hashlib
import os
import re
import socket
import ssl
import subprocess
import time
import uuid
import warnings
from types import SimpleNamespace

import pytest
import requests

from ..support.live import (
    ALICE,
    BIN,
    ROOT,
    PortTaken,
    create_collection,
    free_port,
    live_config,
    started,
)
from .test_nginx_slow_clients import deployment as nginx_deployment
from .test_stalled_requests import STALL, servers  # noqa: F401 (the fixture)


pytestmark = pytest.mark.live

MiB = 1024 * 1024
CREDENTIALS = "Authorization: Basic " + base64.b64encode(":".join(ALICE).encode()).decode()
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture(scope="module")
def streaming(servers):  # noqa: F811 (the fixture)
    """gunicorn and uWSGI from their shipped configurations, stalls cut after :data:`STALL`
    seconds (``tests/live/test_stalled_requests.py``'s), each with the review/c collection."""
    for live in servers.values():
        create_collection(live, "review", "c")
    return servers


def records(live):
    return f"/v1/buckets/review/collections/c/records/r{uuid.uuid4().hex[:10]}"


def exchange(live, data, timeout=10, read_for=None):
    """Send ``data`` on a new connection; ``(what came back, seconds until the server closed
    or ``timeout``)``. ``read_for``: stop reading after that many seconds whatever came."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=timeout) as sock:
        sock.sendall(data)
        started_at = time.monotonic()
        answer = b""
        try:
            while read_for is None or time.monotonic() - started_at < read_for:
                received = sock.recv(65536)
                if not received:
                    break
                answer += received
        except TimeoutError:
            answer += b"<no answer: timed out>"
        except ConnectionResetError:
            answer += b"<reset>"
        return answer, time.monotonic() - started_at


def status_of(answer):
    line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    match = re.match(r"HTTP/1\.[01] (\d{3}) ", line)
    return int(match.group(1)) if match else line


def multipart_start(filename="c.bin"):
    return (
        b'--xyz\r\nContent-Disposition: form-data; name="attachment"; filename="'
        + filename.encode()
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )


# 1. gunicorn: a malformed chunked body is a 500 with a traceback.


@pytest.mark.parametrize("route", ["multipart", "tus", "data-files"])
def test_gunicorn_malformed_chunked_body_is_a_clear_4xx(streaming, route):
    """Found by review (2026-12-05).

    A chunked upload whose chunk framing is broken (here a chunk size ``zz``, not hex) is
    bad input: the README promises a Kinto JSON 4xx ("never a 500"). Under the shipped
    gunicorn configuration every upload route answers ``500 Internal Server Error`` ("A
    programmatic error occurred, developers have been informed") and logs an ERROR with a
    traceback: any client (anonymous on ``/data/files``) can fill the operator's error
    tracking and 5xx alerts at will, and a client talking to a broken proxy is told the
    server failed rather than its body was bad. Cause: gunicorn's chunked reader raises
    ``InvalidChunkSize`` / ``ChunkMissingTerminator`` (``ParseException``, not ``OSError``),
    and ``kinto_attachment/web/streams.py:read_chunks`` only turns ``OSError`` into the
    ``400 body_interrupted`` (uWSGI's reader raises ``OSError`` and gets the 400; waitress
    refuses such a body itself)."""
    live = streaming["gunicorn"]
    record = records(live)
    broken = b"10\r\n" + b"a" * 16 + b"\r\nzz\r\n" + b"b" * 16 + b"\r\n0\r\n\r\n"
    if route == "multipart":
        head = (
            f"POST {record}/attachment HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n"
            f"{CREDENTIALS}\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
        )
        start = multipart_start()
        body = b"%x\r\n" % len(start) + start + b"\r\n" + broken
    elif route == "tus":
        created = requests.post(
            f"{live.origin}{record}/attachment/uploads",
            headers={**TUS, "Upload-Length": "1000", "Upload-Metadata": "filename YS5iaW4="},
            auth=ALICE,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        path = created.headers["Location"].split(str(live.port), 1)[1]
        head = (
            f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n{CREDENTIALS}\r\n"
            "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
            "Content-Type: application/offset+octet-stream\r\n"
        )
        body = broken
    else:
        head = (
            f"POST /data/files?id=f{uuid.uuid4().hex} HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n"
        )
        body = broken
    since = len(live.output())
    answer, _ = exchange(
        live, (head + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode() + body
    )
    log = live.output()[since:]
    status = status_of(answer)
    assert isinstance(status, int) and 400 <= status < 500, (answer[-300:], log[-1500:])
    assert "Traceback" not in log, log[-1500:]


# 2. uWSGI: a stalled chunked upload holds its thread 60 s, whatever socket-timeout says.


def test_uwsgi_stalled_chunked_upload_ends_after_the_stall_timeout(streaming):
    """Found by review (2026-12-05).

    docs/production.rst and ``config/uwsgi.ini``: "a read of the client (head or body) ...
    that waits [socket-timeout] seconds ends the request and frees the thread ...
    ``KINTO_STALL_TIMEOUT`` sets it". A multipart upload sent with ``Transfer-Encoding:
    chunked`` that stops after its first chunk is held for 60 s instead, whatever the operator
    configured (here 2 s; shipped 30 s: twice as long): each such connection pins one of
    uWSGI's threads twice as long as the bound the operator relies on (the slow-client sizing
    in docs/security.rst counts on it), and lowering ``KINTO_STALL_TIMEOUT`` has no effect on
    it. Cause: ``kinto_attachment/web/streams.py`` reads chunked bodies with
    ``uwsgi.chunked_read(UWSGI_CHUNK_TIMEOUT)``, a hard-coded 60 s, instead of the server's
    ``socket-timeout``."""
    live = streaming["uwsgi"]
    start = multipart_start() + b"x" * 1000
    head = (
        f"POST {records(live)}/attachment HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n"
        f"{CREDENTIALS}\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    answer, waited = exchange(live, head + b"%x\r\n" % len(start) + start + b"\r\n", timeout=12)
    assert status_of(answer) == 400 and waited < STALL + 5, (waited, answer[:200])


# 3. uWSGI reads a chunk size that is no number as the end: nginx in front refuses it.


def test_uwsgi_behind_nginx_refuses_a_malformed_chunked_body(tmp_path):
    """Found by review (2026-12-05).

    uWSGI's own chunked reader (``uwsgi.chunked_read()``, what the app must use under it)
    reads a chunk-size line that is no hexadecimal number (``zz``) as ``0``, the body's end:
    uWSGI alone stored an upload as the 16 bytes before it, and nothing in what it hands the
    app tells the two apart. The production setup (docs/production.rst) puts nginx in front,
    which checks the chunked framing: the same body is a ``400`` there, and nothing is
    stored. (A tus chunk here: the recipe keeps ``/data/files`` off the proxy.)"""
    body = (
        b"10\r\n" + b"a" * 16 + b"\r\nzz\r\n" + b"b" * 4096 + b"\r\n1000\r\n" + b"c" * 4096
        + b"\r\n0\r\n\r\n"
    )  # fmt: skip
    with nginx_deployment(tmp_path, "uwsgi") as (port, kinto):
        records = f"{kinto.origin}/v1/buckets/edges/collections/files/records"
        for url in (f"{kinto.origin}/v1/buckets/edges", records.rsplit("/", 1)[0]):
            requests.put(url, auth=ALICE, timeout=10).raise_for_status()
        created = requests.post(
            f"{records}/r/attachment/uploads",
            headers={"Tus-Resumable": "1.0.0", "Upload-Length": "8208",
                     "Upload-Metadata": "filename " + base64.b64encode(b"f.bin").decode()},
            auth=ALICE,
            timeout=10,
        )  # fmt: skip
        assert created.status_code == 201, created.text
        upload = created.headers["Location"].split("/v1/", 1)[1]
        head = (
            f"PATCH /v1/{upload} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{CREDENTIALS}\r\n"
            "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
            "Content-Type: application/offset+octet-stream\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        answer, _ = exchange(SimpleNamespace(port=port), head.encode() + body)
        offset = requests.head(
            f"{kinto.origin}/v1/{upload}",
            headers={"Tus-Resumable": "1.0.0"},
            auth=ALICE,
            timeout=10,
        ).headers["Upload-Offset"]
    assert status_of(answer) == 400, answer[:300]
    assert offset == "0"


# 4. gunicorn: a download read steadily, but slowly, is cut after the stall time.


def uploaded(live, record, size):
    """Attach ``size`` random bytes to ``record``; the bytes."""
    content = os.urandom(size)
    response = requests.post(
        f"{live.origin}{record}/attachment",
        files={"attachment": ("big.bin", content)},
        auth=ALICE,
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return content


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        received = sock.recv(4096)
        assert received, data
        data += received
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
    return head, rest, length


@pytest.mark.parametrize("ranged", [False, True], ids=["sendfile", "range"])
def test_gunicorn_does_not_cut_a_download_read_steadily_but_slowly(streaming, ranged):
    """Found by review (2026-12-05).

    docs/production.rst: "Timeouts bound stalls, not requests ... What is cut is a client
    that stops: ... an answer's write that waits 30 s for the client"; the worker's docstring:
    "one block of an answer (1 MiB for Kinto's downloads) not taken within it". A client
    that takes a download steadily, 7.5 KB every 50 ms (150 KB/s), never stopping, is cut
    all the same once the stall time has passed (here ``KINTO_STALL_TIMEOUT`` = 3 s): each
    1 MiB block must be taken whole within the stall time. With the shipped 30 s, every
    client slower than about 35 KB/s (a weak mobile link) never gets an attachment larger
    than the socket buffers: its download breaks after about 30 s, every time, and resuming
    with ``Range`` breaks the same way. gunicorn then logs the false "took nothing for 2 s",
    while Kinto's request log has already written ``200`` with the whole size. Cause:
    ``config/gunicorn_worker.py`` bounds writes with ``sock.settimeout(stall_timeout)``, and
    Python's ``sendall`` takes a socket timeout as a deadline for the whole call (since
    Python 3.5), not for each wait; no ``sendfile`` is used either (the metrics'
    ``_SentFile`` wrapper has no ``fileno``). waitress, sending from its event loop, delivers
    the same download whole."""
    name = "gunicorn"
    live = streaming[name]
    record = records(live)
    content = uploaded(live, record, 16 * MiB)
    since = len(live.output())
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", live.port))
        ranges = f"Range: bytes=1-{len(content) - 1}\r\n" if ranged else ""
        sock.sendall(
            f"GET {record}/attachment HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n"
            f"{CREDENTIALS}\r\nConnection: close\r\n{ranges}\r\n".encode()
        )
        _, body, length = read_head(sock)
        expected = content[1:] if ranged else content  # A range (no sendfile): sendall.
        assert length == len(expected)
        digest = hashlib.sha256(body)
        received = len(body)
        # Steadily: 7.5 KB every 50 ms (150 KB/s) for 8 s, four times the stall time...
        started_at = time.monotonic()
        while time.monotonic() - started_at < 8 and received < length:
            data = sock.recv(7500)
            if not data:
                break
            digest.update(data)
            received += len(data)
            time.sleep(0.05)
        slowly = received
        # ...then as fast as it comes: a download that was not cut arrives whole.
        while received < length:
            data = sock.recv(MiB)
            if not data:
                break
            digest.update(data)
            received += len(data)
    finally:
        sock.close()
    log = live.output()[since:]
    assert received == length, (
        f"cut after {received} of {length} bytes ({slowly} read at 150 KB/s); "
        f"server log: {log[-800:]}"
    )
    assert digest.hexdigest() == hashlib.sha256(expected).hexdigest()


def test_gunicorn_cuts_a_download_taken_a_kilobyte_now_and_then(streaming):
    """Found by review (2026-12-05) of the fix above.

    Watching the client's progress (``PacedSocket``) moved the deadline whenever the unsent
    queue shrank at all: a client taking a kilobyte every half second would hold one of
    gunicorn's 32 threads for ever. A client must take ``MIN_TAKEN`` (64 KiB) within the
    stall time to keep its thread: this one loses it soon after (what the kernel already
    holds still reaches it, without a thread)."""
    live = streaming["gunicorn"]
    record = records(live)
    uploaded(live, record, 16 * MiB)
    since = len(live.output())
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", live.port))
        sock.sendall(
            f"GET {record}/attachment HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n"
            f"{CREDENTIALS}\r\nConnection: close\r\n\r\n".encode()
        )
        started_at = time.monotonic()
        while "took nothing for" not in live.output()[since:]:
            assert time.monotonic() - started_at < 4 * STALL, live.output()[since:][-600:]
            assert sock.recv(1024), "the server closed the connection"
            time.sleep(0.5)


def _self_signed(folder):
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ],  # fmt: skip
        check=True,
        capture_output=True,
    )
    return key, cert


@contextlib.contextmanager
def _gunicorn_with_tls(folder):
    """The shipped gunicorn configuration, with ``--certfile``/``--keyfile``: ``(server,
    session)``, the session speaking HTTPS to it as alice."""
    key, cert = _self_signed(folder)
    base_path = folder / "attachments"
    base_path.mkdir()
    port = free_port()
    ini = folder / "kinto.ini"
    ini.write_text(live_config(port, base_path))
    command = [
        str(BIN / "gunicorn"), "-c", str(ROOT / "config" / "gunicorn.conf.py"),
        "--bind", f"127.0.0.1:{port}", "--certfile", str(cert), "--keyfile", str(key),
        "--pythonpath", str(ROOT / "config"), "wsgi:application",
    ]  # fmt: skip
    env = {**os.environ, "KINTO_INI": str(ini), "KINTO_STALL_TIMEOUT": "10"}
    listening = re.compile(r"Listening at: https://127\.0\.0\.1:(\d+)")
    with started(folder, ini, port, base_path, env, command, listening) as live:
        live.wait_bound()
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=False.
        session.verify = False
        session.auth = ALICE
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(requests.RequestException):
                answer = session.get(f"https://127.0.0.1:{port}/v1/__heartbeat__", timeout=2)
                if answer.status_code == 200:
                    break
            assert time.monotonic() < deadline, live.output()
            time.sleep(0.2)
        yield live, session


def test_gunicorn_with_tls_sends_a_download_whole_to_a_slow_client(tmp_path):
    """Found by review (2026-12-05) of the fix above.

    ``StallBoundWorker.handle_request`` now wraps EVERY request's socket in
    ``PacedSocket``, whose ``sendall`` makes the socket non-blocking and only waits on
    ``BlockingIOError``. config/gunicorn_worker.py says TLS "with ``certfile`` set" behaves as
    gthread does (``enqueue_req`` keeps gthread's path for it), but under TLS ``conn.sock`` is
    an ``SSLSocket``: non-blocking and full, its ``send`` raises ``SSLWantWriteError`` (an
    ``SSLError``, not a ``BlockingIOError``). The first time the client is slower than the
    server, the answer is abandoned mid-body: gunicorn logs "Invalid request ... The operation
    did not complete (write)", treats it as a client error (writing its own 400 page after the
    file's first bytes), and Kinto's log still says ``200 out=<whole size>``. Here a 16 MiB
    download read by a client that waits 1.5 s before reading gets ~4 MiB. Without the
    ``PacedSocket`` swap the same download is complete."""
    with _gunicorn_with_tls(tmp_path) as (live, session), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Unverified HTTPS.
        origin = f"https://127.0.0.1:{live.port}"
        for path in ("/v1/buckets/tls", "/v1/buckets/tls/collections/c"):
            assert session.put(origin + path, json={}).status_code in (200, 201)
        path = "/v1/buckets/tls/collections/c/records/big/attachment"
        content = os.urandom(16 * MiB)
        uploaded = session.post(origin + path, files={"attachment": ("big.bin", content)})
        assert uploaded.status_code == 201, uploaded.text

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        credentials = base64.b64encode(":".join(ALICE).encode()).decode()
        received = b""
        with (
            socket.create_connection(("127.0.0.1", live.port), timeout=20) as raw,
            context.wrap_socket(raw) as sock,
        ):
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Basic {credentials}\r\nConnection: close\r\n\r\n".encode()
            )
            time.sleep(1.5)  # A client busy a moment (a browser, a slow disk).
            while True:
                try:
                    data = sock.recv(MiB)
                except OSError:
                    break
                if not data:
                    break
                received += data
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        assert len(body) == len(content), f"{len(body)} of {len(content)} bytes received"
        assert hashlib.sha256(body).digest() == hashlib.sha256(content).digest()


# 5. waitress: four unread ranged downloads stop the server, for good.


@contextlib.contextmanager
def waitress_with_short_channel_timeout(folder, channel_timeout=2):
    """``config/kinto.ini`` served by waitress as the live tests serve it, with only its
    ``channel_timeout`` (30) and ``cleanup_interval`` (5) lowered so that the bound they set
    passes within the test."""
    base_path = folder / "attachments"
    base_path.mkdir()
    for _ in range(3):
        port = free_port()
        text = live_config(port, base_path)
        text, changed = re.subn(
            r"^channel_timeout = \d+$", f"channel_timeout = {channel_timeout}", text, flags=re.M
        )
        text, interval = re.subn(
            r"^cleanup_interval = \d+$", "cleanup_interval = 1", text, flags=re.M
        )
        assert (changed, interval) == (1, 1)
        ini = folder / "kinto.ini"
        ini.write_text(text)
        with started(folder, ini, port, base_path) as live:
            try:
                live.wait_bound()
            except PortTaken:
                continue
            live.wait_ready()
            yield live
            return
    raise AssertionError("no free port")


def unread_downloads(live, path, count, headers=""):
    """``count`` connections asking for ``path`` and reading nothing (a tiny receive
    buffer)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", live.port))
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n{headers}\r\n".encode()
        )
        sockets.append(sock)
    return sockets


def answered_meanwhile(live, sockets):
    """``GET /v1/`` twice, well past ``channel_timeout`` (2 s) and its check (every second),
    while ``sockets`` read nothing: their statuses (or why none came)."""
    try:
        time.sleep(6)
        answers = []
        for _ in range(2):
            try:
                answers.append(requests.get(f"{live.origin}/v1/", timeout=3).status_code)
            except requests.RequestException as e:
                answers.append(type(e).__name__)
        return answers
    finally:
        for sock in sockets:
            sock.close()


def test_waitress_unread_ranged_downloads_do_not_stall_the_server(tmp_path):
    """Found by review (2026-12-05).

    ``make serve``'s server (waitress, ``config/kinto.ini``) runs 4 threads. Four clients
    that ask for a ``Range`` of a 48 MiB attachment and then read nothing hold all four, with
    no end: the server answers nobody, not even ``GET /v1/``, long after ``channel_timeout``
    (lowered here to 2 s; docs/production.rst says it cuts "an answer's write that waits 30 s
    for the client"), for as long as those four sockets stay open. Four connections and a few
    bytes each are a complete, permanent denial of service, which docs/security.rst's "keeps
    answering while ... 20 slow clients are open" does not survive. The same download without
    ``Range`` does not do it: waitress sends a seekable file from its event loop, frees the
    thread, and ``channel_timeout`` closes the idle channel. Cause: ranged downloads from the
    local store are a ``LimitedReader`` (``kinto_attachment/storage/local/store.py``), not
    seekable on purpose, so waitress iterates it in the request's thread, which blocks once
    ``outbuf_high_watermark`` (16 MiB) waits to be sent; waitress only times out channels with
    no request in progress."""
    with waitress_with_short_channel_timeout(tmp_path) as live:
        create_collection(live, "review", "c")
        path = "/v1/buckets/review/collections/c/records/big/attachment"
        size = 48 * MiB
        uploaded = requests.post(
            f"{live.origin}{path}",
            files={"attachment": ("big.bin", os.urandom(size))},
            auth=ALICE,
            timeout=60,
        )
        assert uploaded.status_code == 201, uploaded.text
        ranged = f"{CREDENTIALS}\r\nRange: bytes=0-{size - 2}\r\n"
        sockets = unread_downloads(live, path, 4, ranged)
        answers = answered_meanwhile(live, sockets)
        assert answers == [200, 200], (answers, live.output()[-600:])


def test_waitress_unread_data_file_downloads_do_not_stall_the_server(tmp_path):
    """Found by review (2026-12-05).

    The same with ``/data/files`` (whose callers are trusted: loopback by default, yet one
    stuck internal client is enough): four downloads of a 48 MiB file that read nothing held
    waitress's four threads for as long as their sockets stayed open. The fix of the ranged
    downloads left this route out: its body went through the transfer limiter as a generator,
    which waitress iterates in the request's thread; the limiter's file now goes through
    ``wsgi.file_wrapper``, sent from waitress's loop."""
    with waitress_with_short_channel_timeout(tmp_path) as live:
        file_id = f"f{uuid.uuid4().hex}"
        stored = requests.post(
            f"{live.origin}/data/files?id={file_id}", data=os.urandom(48 * MiB), timeout=60
        )
        assert stored.status_code == 200, stored.text
        sockets = unread_downloads(live, f"/data/files/{file_id}", 4)
        answers = answered_meanwhile(live, sockets)
        assert answers == [200, 200], (answers, live.output()[-600:])
