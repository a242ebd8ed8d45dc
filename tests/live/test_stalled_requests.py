"""One request stalled at a time on gunicorn and uWSGI, each from its shipped configuration
with ``KINTO_STALL_TIMEOUT`` at 3 s: the request ends after that time, cleanly. Many stalled
and idle clients at once: ``tests/live/test_slow_clients.py``.

One server of each for the module (each test looks at the files and the log lines of its
own request only).
"""

import base64
import contextlib
import os
import socket
import time
from pathlib import Path

import pytest
import requests

from ..support.live import ALICE, create_collection, running_server


pytestmark = pytest.mark.live

STALL = 3


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """``{name: server}``: gunicorn and uWSGI from their shipped configurations, stalls cut
    after :data:`STALL` seconds."""
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("KINTO_STALL_TIMEOUT", str(STALL))
            started = {
                name: stack.enter_context(running_server(tmp_path_factory.mktemp(name), name))
                for name in ("gunicorn", "uwsgi")
            }
        yield started


@pytest.fixture
def gunicorn(servers):
    """The module's gunicorn."""
    return servers["gunicorn"]


def files(live):
    return {path for path in live.base_path.rglob("*") if path.is_file()}


def test_gunicorn_ends_a_download_nobody_reads(gunicorn):
    """A client that asks for a file and reads none of it frees its thread after the stall
    time (``sendfile`` waits on it), instead of holding it as long as the connection lives."""
    create_collection(gunicorn, "slow", "readers")
    url = f"{gunicorn.origin}/v1/buckets/slow/collections/readers/records/big/attachment"
    content = os.urandom(32 * 1024 * 1024)
    uploaded = requests.post(url, files={"attachment": ("big.bin", content)}, auth=ALICE)
    assert uploaded.status_code == 201, uploaded.text
    since = len(gunicorn.output())
    with socket.create_connection(("127.0.0.1", gunicorn.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        credentials = base64.b64encode(":".join(ALICE).encode()).decode()
        sock.sendall(
            f"GET {url.removeprefix(gunicorn.origin)} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Basic {credentials}\r\n\r\n".encode()
        )
        asked = time.monotonic()
        while f"took nothing for {STALL} s" not in gunicorn.output()[since:]:
            assert time.monotonic() - asked < 15, gunicorn.output()[since:]
            time.sleep(0.2)
        assert time.monotonic() - asked >= STALL
    assert requests.get(f"{gunicorn.origin}/v1/", timeout=5).status_code == 200


def test_gunicorn_refuses_a_head_over_64_kib(gunicorn):
    """Heads are gathered without a thread up to 64 KiB: a larger one is 431, even when made of
    fields gunicorn's own limits allow (60 fields of 1.2 KB)."""
    fields = "".join(f"X-Field-{number}: {'v' * 1200}\r\n" for number in range(60))
    with socket.create_connection(("127.0.0.1", gunicorn.port), timeout=10) as sock:
        sock.sendall(f"GET /v1/ HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode())
        answer = sock.recv(1024)
    assert answer.startswith(b"HTTP/1.1 431 "), answer


@pytest.mark.parametrize("name", ["gunicorn", "uwsgi"])
@pytest.mark.parametrize("route", ["multipart", "tus"])
def test_a_stalled_upload_is_refused_cleanly(name, route, servers):
    """An upload whose body stops is cut after the stall time: a ``400`` for a client still
    listening, no file, no error logged (uWSGI's read failed with an ``OSError`` that became a
    ``500``, a ``503`` on tus, each with a traceback)."""
    live = servers[name]
    create_collection(live, "slow", route)
    record = f"/v1/buckets/slow/collections/{route}/records/r"
    before = files(live)
    credentials = base64.b64encode(":".join(ALICE).encode()).decode()
    auth = f"Authorization: Basic {credentials}\r\n"
    if route == "tus":
        created = requests.post(
            f"{live.origin}{record}/attachment/uploads",
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Length": "100000",
                "Upload-Metadata": "filename YS5iaW4=",
            },
            auth=ALICE,
        )
        assert created.status_code == 201, created.text
        path = created.headers["Location"].split(str(live.port), 1)[1]
        head = (
            f"PATCH {path} HTTP/1.1\r\nHost: x\r\n{auth}Tus-Resumable: 1.0.0\r\n"
            "Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
            "Content-Length: 100000\r\n\r\n"
        )
        body = b"x" * 1000
    else:
        boundary = "stalled"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="attachment"; '
            'filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode() + b"x" * 1000
        head = (
            f"POST {record}/attachment HTTP/1.1\r\nHost: x\r\n{auth}"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            "Content-Length: 100000\r\n\r\n"
        )
    since = len(live.output())
    with socket.create_connection(("127.0.0.1", live.port), timeout=20) as sock:
        sock.sendall(head.encode() + body)
        answer = sock.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 400 "), answer
    log = live.output()[since:]
    assert "Traceback" not in log and " ERROR " not in log, log
    if route == "tus":  # The upload stays resumable, from what was stored of it.
        resumed = requests.head(
            f"{live.origin}{path}", headers={"Tus-Resumable": "1.0.0"}, auth=ALICE
        )
        assert resumed.status_code == 200, resumed.headers
        assert int(resumed.headers["Upload-Offset"]) in (0, len(body))
    else:
        assert files(live) == before
    assert requests.get(f"{live.origin}{record}", auth=ALICE).status_code == 404


def worker_sockets(live):
    """Sockets the gunicorn worker of ``live`` holds."""
    (worker,) = (
        Path(f"/proc/{live.process.pid}/task/{live.process.pid}/children").read_text().split()
    )
    count = 0
    for fd in Path(f"/proc/{worker}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # Closed meanwhile.
            count += os.readlink(fd).startswith("socket:")
    return count


def answered(sock):
    """What the server sent on ``sock`` up to its end (it half-closed)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_gunicorn_closes_connections_without_a_thread(gunicorn):
    """Requests answered with a close, from a client that never closes its end, hold no thread
    while the server waits for that end (up to 2 s each: 96 of them answered in 4 s by 32
    threads, the next request waiting 2 s). Found by review (2026-12-05).

    The server still closes them (its sockets are back to what they were)."""
    count = 96
    before = worker_sockets(gunicorn)
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        clients = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", gunicorn.port)))
            sock.settimeout(20)
            sock.sendall(b"GET /v1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            clients.append(sock)
        answers = [answered(sock) for sock in clients]
        burst = time.monotonic() - started
        assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answers)
        asked = time.monotonic()
        assert requests.get(f"{gunicorn.origin}/v1/", timeout=10).status_code == 200
        assert time.monotonic() - asked < 1, "a thread was free only after the others' close"
        assert burst < 3, f"{count} answers took {burst:.1f} s"
        assert worker_sockets(gunicorn) >= count  # Lingering, without a thread.
        deadline = time.monotonic() + 10
        while worker_sockets(gunicorn) > before + 2:
            assert time.monotonic() < deadline, "lingering connections were never closed"
            time.sleep(0.2)


def test_gunicorn_waits_for_no_body_it_refused(gunicorn):
    """An upload refused before its body (anonymous: 401) whose client announced a large body
    and sends none: the connection closes after the answer, at once, instead of holding its
    thread 5 s discarding a body that never comes. Found by review (2026-12-05)."""
    create_collection(gunicorn, "slow", "refused")
    record = "/v1/buckets/slow/collections/refused/records/r/attachment"
    with socket.create_connection(("127.0.0.1", gunicorn.port), timeout=20) as sock:
        sock.sendall(
            f"POST {record} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            "Content-Length: 10000000\r\n\r\n".encode()
        )
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 401 "), answer
        asked = time.monotonic()
        answered(sock)
        assert time.monotonic() - asked < 1


def test_gunicorn_keeps_a_connection_whose_small_body_came_along(gunicorn):
    """The body of a refused request that arrived with its head is discarded, and the
    connection serves the next request."""
    create_collection(gunicorn, "slow", "kept")
    record = "/v1/buckets/slow/collections/kept/records/r/attachment"
    body = b"x" * 1000
    with socket.create_connection(("127.0.0.1", gunicorn.port), timeout=20) as sock:
        sock.sendall(
            f"POST {record} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
            + b"GET /v1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answers = answered(sock)
    assert answers.startswith(b"HTTP/1.1 401 "), answers
    assert answers.count(b"HTTP/1.1 200 ") == 1, answers
