"""Each shipped server configuration, started as the documentation starts it, keeps answering a
well-behaved client within 2 s while 200 idle connections and 20 slow clients are open (partial
request heads, upload bodies that stop, heads and bodies sent a byte every 10 s), and ends
each stalled request after its documented time (docs/security.rst).

waitress runs ``config/kinto.ini`` as shipped (only its address and files folder differ, as in
every live test): its ``channel_timeout`` is the time waited. gunicorn and uWSGI run their
shipped files with ``KINTO_STALL_TIMEOUT`` (the setting both read) at 15 s, to wait less: still
longer than a trickle's 10 s between bytes, which must not be cut. nginx in front of each:
``tests/live/test_nginx_slow_clients.py``.
"""

import base64
import configparser
import os
import re
import socket
import time

import pytest
import requests
from waitress.adjustments import Adjustments

from ..support.live import ALICE, ROOT, create_collection, running_server
from ..support.slow_clients import ANSWER_WITHIN, withstand


pytestmark = pytest.mark.live

#: KINTO_STALL_TIMEOUT of the streaming servers here (their shipped default is 30).
STREAMING_STALL = 15
#: Seconds past the stall timeout within which a stalled request must have ended.
SLACK = 5
WAITRESS_SETTINGS = ("connection_limit", "channel_timeout", "cleanup_interval")


def waitress_server(ini):
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "config" / ini)
    return parser["server:main"]


def expected_stall(name):
    """``(seconds, slack)``: when a stalled request of ``name`` ends, from its configuration."""
    if name != "waitress":
        return STREAMING_STALL, SLACK
    server = waitress_server("kinto.ini")
    timeout = server.get("channel_timeout", Adjustments.channel_timeout)
    # waitress looks for inactive connections every cleanup_interval seconds.
    interval = server.get("cleanup_interval", Adjustments.cleanup_interval)
    return int(timeout), int(interval) + SLACK


@pytest.fixture(params=["waitress", "gunicorn", "uwsgi"])
def server(request, tmp_path, monkeypatch):
    monkeypatch.setenv("KINTO_STALL_TIMEOUT", str(STREAMING_STALL))
    with running_server(tmp_path, request.param) as live:
        live.name = request.param
        yield live


def check(report, stall, slack):
    """What every configuration must do, seen in ``report`` (:class:`slow_clients.Report`)."""
    summary = report.summary()
    assert report.answers and all(status == 200 for _, status, _ in report.answers), summary
    assert report.slowest < ANSWER_WITHIN, summary
    for kind in ("idle", "head-stalled", "body-stalled"):
        ends = [at for at, _ in report.ended[kind]]
        assert len(ends) == report.sizes[kind], (kind, summary)
        assert all(stall - 1 <= at <= stall + slack for at in ends), (kind, summary)
    # A body that keeps coming, however slowly, is not cut.
    assert report.ended["body-trickle"] == [], summary


def test_slow_and_idle_clients(server, capsys):
    stall, slack = expected_stall(server.name)
    create_collection(server, "slow", "clients")
    records = "/v1/buckets/slow/collections/clients/records"
    report = withstand(
        ("127.0.0.1", server.port), f"{server.origin}/v1/", records, stall + slack + 1
    )
    with capsys.disabled():
        print(f"\n{server.name} (stall {stall} s):\n{report.summary()}")
    check(report, stall, slack)


@pytest.mark.parametrize("ini", ["postgresql.ini", "s3.ini", "gcs.ini"])
def test_every_waitress_configuration_withstands_alike(ini):
    """The other configurations' ``[server:main]`` bound slow and idle clients as
    ``config/kinto.ini``'s, tested live above."""
    shipped = waitress_server("kinto.ini")
    other = waitress_server(ini)
    for name in (*WAITRESS_SETTINGS, "asyncore_use_poll"):
        assert other.get(name) == shipped.get(name) is not None, (ini, name)


def setting(path, pattern):
    """The one value ``pattern`` (a regex with one group) finds in ``config/path``."""
    found = re.findall(pattern, (ROOT / "config" / path).read_text(), flags=re.MULTILINE)
    assert len(found) == 1, (path, pattern, found)
    return found[0]


def test_the_documentation_says_what_each_configuration_sets():
    """docs/security.rst names the values the shipped files set."""
    readme = " ".join((ROOT / "docs" / "security.rst").read_text().split())
    server = waitress_server("kinto.ini")
    for name in WAITRESS_SETTINGS:
        assert f"``{name} = {server[name]}``" in readme, name
    stall = setting("gunicorn.conf.py", r'"KINTO_STALL_TIMEOUT", "(\d+)"')
    assert setting("uwsgi.ini", r"^socket-timeout = (\d+)$") == stall
    assert setting("nginx.conf", r"^\s*client_header_timeout (\d+)s;$") == stall
    assert f"``client_header_timeout {stall}s``" in readme
    assert f"within {stall} seconds" in readme and f"waits {stall} seconds" in readme
    threads = setting("gunicorn.conf.py", r"^threads = (\d+)$")
    assert f"one of the {threads} threads" in readme
    uwsgi_threads = setting("uwsgi.ini", r"^threads = (\d+)$")
    assert f"one of its {uwsgi_threads} threads" in readme
    connections = setting("gunicorn.conf.py", r"^worker_connections = (\d+)$")
    assert f"``worker_connections = {connections}``" in readme


@pytest.fixture
def gunicorn(tmp_path, monkeypatch):
    """gunicorn from its shipped configuration, stalls cut after 3 s."""
    monkeypatch.setenv("KINTO_STALL_TIMEOUT", "3")
    with running_server(tmp_path, "gunicorn") as live:
        yield live


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
        while "took nothing for 3 s" not in gunicorn.output()[since:]:
            assert time.monotonic() - asked < 15, gunicorn.output()[since:]
            time.sleep(0.2)
        assert time.monotonic() - asked >= 3
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
def test_a_stalled_upload_is_refused_cleanly(name, route, tmp_path, monkeypatch):
    """An upload whose body stops is cut after the stall time: a ``400`` for a client still
    listening, no file, no error logged (uWSGI's read failed with an ``OSError`` that became a
    ``500``, a ``503`` on tus, each with a traceback)."""
    monkeypatch.setenv("KINTO_STALL_TIMEOUT", "3")
    with running_server(tmp_path, name) as live:
        create_collection(live, "slow", "stalled")
        record = "/v1/buckets/slow/collections/stalled/records/r"
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
            assert [p for p in live.base_path.rglob("*") if p.is_file()] == []
        assert requests.get(f"{live.origin}{record}", auth=ALICE).status_code == 404
