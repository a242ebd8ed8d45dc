"""Hostile requests to the shipped server configurations, from a review (2026-12-05): slow,
stalled, chunked and badly framed requests against waitress (``config/kinto.ini``), gunicorn
(``config/gunicorn.conf.py``), uWSGI (``config/uwsgi.ini``) and nginx (``config/nginx.conf``)
in front, each started as the other live tests start them.

gunicorn and uWSGI run with ``KINTO_STALL_TIMEOUT`` at 3 s (the fixture of
``tests/live/test_stalled_requests.py``): a trickling client below sends a byte every second,
so that no stall timeout ever cuts it, exactly as a client trickling a byte every 10 s does
against the shipped 30 s.

Each test says the defect the review found, or the attack the servers withstood.
"""

import base64
import contextlib
import json
import re
import socket
import threading
import time
import uuid

import pytest
import requests

from ..support.live import ALICE, create_collection, running_server
from ..support.slow_clients import upload_head
from .test_stalled_requests import STALL, servers  # noqa: F401 (the fixture)


pytestmark = pytest.mark.live

BOB = ("bob", "bobpasswd")
CREDENTIALS = "Authorization: Basic " + base64.b64encode(":".join(ALICE).encode()).decode()
TUS = {"Tus-Resumable": "1.0.0"}
#: Seconds between two bytes of a trickling body: well under the stall timeout (3 s here).
TRICKLE_EVERY = 1.0
#: Longest a well-behaved request may wait while the attack runs.
ANSWER_WITHIN = 3.0


@pytest.fixture(scope="module")
def streaming(servers):  # noqa: F811 (the fixture)
    """gunicorn and uWSGI from their shipped configurations, stalls cut after :data:`STALL` s."""
    for live in servers.values():
        create_collection(live, "review", "c")
    return servers


@pytest.fixture(scope="module")
def waitress(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("waitress")) as live:
        create_collection(live, "review", "c")
        yield live


@pytest.fixture
def every_server(streaming, waitress):
    return {**streaming, "waitress": waitress}


def unique(prefix="r"):
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def exchange(port, data, timeout=10):
    """Send ``data`` on a new connection; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while received := sock.recv(65536):
                answer += received
        except TimeoutError:
            answer += b"<timed out>"
        except ConnectionResetError:
            answer += b"<reset>"
        return answer


def status_of(answer):
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return int(match.group(1)) if match else answer[:80]


def chunked(body, size):
    """``body`` in the chunked transfer coding, ``size`` bytes a chunk."""
    framed = b"".join(
        b"%x\r\n" % len(body[i : i + size]) + body[i : i + size] + b"\r\n"
        for i in range(0, len(body), size)
    )
    return framed + b"0\r\n\r\n"


@contextlib.contextmanager
def trickling(live, head, first=b"{"):
    """A connection that sends ``head`` and ``first``, then a byte every
    :data:`TRICKLE_EVERY` seconds (never stalled, never done) until exit."""
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    sock.sendall(head.encode() + first)
    stop = threading.Event()

    def run():
        while not stop.wait(TRICKLE_EVERY):
            try:
                sock.send(b" ")
            except OSError:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sock
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def slow_json_put(live, path, auth=""):
    """The head of a record ``PUT`` announcing a 100 kB JSON body (anonymous by default)."""
    return (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n{auth}"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )


def timed(call):
    """``(status or exception name, seconds)`` of ``call()``."""
    started = time.monotonic()
    try:
        status = call().status_code
    except requests.RequestException as e:
        status = type(e).__name__
    return status, round(time.monotonic() - started, 2)


def recovered(live):
    """Wait (bounded) until the server answers again, once an attack's sockets are closed."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{live.origin}/v1/", timeout=2).status_code == 200:
                return
        time.sleep(0.2)


def bobs_collection(live):
    """A bucket and collection of Bob's (names sorting before ``zz...``): its path."""
    bucket = unique("a")
    for path in (f"/v1/buckets/{bucket}", f"/v1/buckets/{bucket}/collections/c"):
        requests.put(f"{live.origin}{path}", auth=BOB, timeout=10).raise_for_status()
    return f"/v1/buckets/{bucket}/collections/c"


@pytest.mark.parametrize("name", ["gunicorn", "uwsgi"])
def test_an_anonymous_slow_body_does_not_freeze_another_users_record(streaming, name):
    """Found by review (2026-12-05).

    ``kinto_attachment/listeners.py:on_context_found`` runs on Pyramid's
    ``ContextFound``, i.e. BEFORE the view's permission check: it takes the record's exclusive
    lock (``write_locks.lock_write``) and then reads the JSON body (``_check_record_body`` ->
    ``request.json_body``). gunicorn and uWSGI stream bodies, so an ANONYMOUS ``PUT`` on
    anybody's record whose body trickles in (a byte a second, never stalling) holds that
    record's lock for as long as it likes; behind ``config/nginx.conf`` too (it streams bodies).

    Consequence: the owner's writes of that record (``PATCH``, ``PUT``, uploads, deletes) wait
    for ever, each holding a server thread. Here Bob's ``PATCH`` of his own record gets no
    answer.

    Correct: nobody may hold a lock while the server waits for a client. Read (bound) the body
    before taking the lock, and check permissions before locking: Bob is answered at once,
    the anonymous request gets its 401."""
    live = streaming[name]
    record = f"{bobs_collection(live)}/records/r"
    requests.put(f"{live.origin}{record}", json={"data": {}}, auth=BOB, timeout=10)
    with trickling(live, slow_json_put(live, record)):
        time.sleep(0.5)
        patched = timed(
            lambda: requests.patch(
                f"{live.origin}{record}", json={"data": {"x": 1}}, auth=BOB, timeout=6
            )
        )
    recovered(live)
    assert patched[0] == 200 and patched[1] < ANSWER_WITHIN, patched


def test_gunicorn_anonymous_lock_waits_do_not_take_every_thread(streaming):
    """Found by review (2026-12-05).

    the same lock (``listeners.on_context_found`` -> ``write_locks.lock_write`` ->
    ``locks.MemoryLocks.hold``, likewise ``pg_advisory_xact_lock`` on PostgreSQL) is waited for
    without any bound, before any permission check, in the request's thread. One anonymous
    trickling ``PUT`` (above) plus 40 anonymous, complete, tiny ``PUT`` requests on the same
    record: each of the 40 waits for the lock inside one of gunicorn's 32 threads.

    Consequence: the whole server stops answering (``GET /v1/`` included) for as long as one
    socket trickles a byte a second: 41 sockets, no credentials, a complete denial of service
    of the shipped gunicorn (and behind nginx).

    Correct: a request that cannot be authorised never waits for a lock, and a lock wait is
    bounded (a 409/503 with ``Retry-After`` after a few seconds); then ``GET /v1/`` is
    answered within a second."""
    live = streaming["gunicorn"]
    record = f"{bobs_collection(live)}/records/r"
    requests.put(f"{live.origin}{record}", json={"data": {}}, auth=BOB, timeout=10)
    body = b'{"data": {}}'
    waiting = []
    try:
        with trickling(live, slow_json_put(live, record)):
            time.sleep(0.5)
            for _ in range(40):
                sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
                waiting.append(sock)
                sock.sendall(
                    f"PUT {record} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
            time.sleep(1)
            answer = timed(lambda: requests.get(f"{live.origin}/v1/", timeout=5))
    finally:
        for sock in waiting:
            sock.close()
    recovered(live)
    assert answer[0] == 200 and answer[1] < ANSWER_WITHIN, answer


@pytest.mark.parametrize("name", ["gunicorn", "uwsgi"])
def test_an_anonymous_batch_does_not_freeze_another_users_bucket(streaming, name):
    """Found by review (2026-12-05).

    ``write_locks.lock_batch`` (on ``ContextFound``, before any sub-request's
    permission check) locks EVERY path the batch's sub-requests name, sorted, waiting for each
    in turn while holding the previous ones. An anonymous batch ``[DELETE /buckets/<Bob's>,
    PUT <a record whose lock an anonymous trickling PUT holds (test above), in a collection
    sorting after Bob's>]`` takes Bob's bucket exclusively, then waits for ever on the second
    lock.

    Consequence: every write anywhere in Bob's bucket (a new record, an upload...) hangs for as
    long as the attacker's one trickling socket lives; two anonymous sockets freeze any bucket
    (the attacker needs only some existing collection whose name sorts after it; anybody
    can create one with ``bucket_create_principals = system.Authenticated``).

    Correct: no lock is taken for a sub-request its caller may not perform, no lock is held
    while the server waits for a client (see above), and lock waits are bounded: Bob's write
    is answered at once."""
    live = streaming[name]
    bobs = bobs_collection(live)
    bucket = bobs.split("/")[3]
    attacker = unique("zz")
    for path in (f"/v1/buckets/{attacker}", f"/v1/buckets/{attacker}/collections/c"):
        requests.put(f"{live.origin}{path}", auth=ALICE, timeout=10).raise_for_status()
    held = f"/v1/buckets/{attacker}/collections/c/records/r"
    batch = {
        "requests": [
            {"method": "DELETE", "path": f"/buckets/{bucket}"},
            {"method": "PUT", "path": held.removeprefix("/v1"), "body": {"data": {}}},
        ]
    }
    with trickling(live, slow_json_put(live, held)):
        time.sleep(0.5)

        def post_batch():
            with contextlib.suppress(requests.RequestException):
                requests.post(f"{live.origin}/v1/batch", json=batch, timeout=10)

        thread = threading.Thread(target=post_batch, daemon=True)
        thread.start()
        time.sleep(1)
        written = timed(
            lambda: requests.put(
                f"{live.origin}{bobs}/records/{unique()}", json={"data": {}}, auth=BOB, timeout=5
            )
        )
    thread.join(15)
    recovered(live)
    assert written[0] == 201 and written[1] < ANSWER_WITHIN, written


@pytest.mark.parametrize("name", ["gunicorn", "uwsgi"])
def test_a_stalled_record_body_is_a_4xx_not_a_500(streaming, name):
    """Found by review (2026-12-05).

    ``listeners._check_record_body`` reads ``request.json_body`` catching only
    ``ValueError``/``RecursionError``. When the JSON body of a record ``PUT`` stops (the
    stall timeout cuts it: gunicorn's reader ends the body -> WebOb ``DisconnectionError``;
    uWSGI's ``socket-timeout`` -> ``OSError: timeout during read``), or the client goes away
    mid-body, the exception escapes: ``500 "A programmatic error occurred, developers have
    been informed"`` and an ERROR with a traceback, for any anonymous client, at will.

    Consequence: bad input becomes a 5xx (alerts, error tracking flooded, clients told the
    server failed).

    Correct: a body that cannot be read is the client's fault: a Kinto JSON ``400``
    (``body_interrupted``, as the upload routes answer), no traceback."""
    live = streaming[name]
    record = f"/v1/buckets/review/collections/c/records/{unique()}"
    since = len(live.output())
    answer = exchange(
        live.port,
        f"PUT {record} HTTP/1.1\r\nHost: x\r\n{CREDENTIALS}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\nConnection: close\r\n\r\n".encode()
        + b'{"data": ',
        timeout=STALL + 10,
    )
    log = live.output()[since:]
    status = status_of(answer)
    assert isinstance(status, int) and 400 <= status < 500, (answer[:300], log[-1200:])
    assert "Traceback" not in log, log[-1200:]


def test_uwsgi_behind_nginx_does_not_drop_a_chunked_record_body(tmp_path):
    """Found by review (2026-12-05).

    under uWSGI (``config/uwsgi.ini``, ``post-buffering = 0``), a request body sent
    with ``Transfer-Encoding: chunked`` reaches the app with no ``CONTENT_LENGTH`` and no
    ``wsgi.input_terminated``; only the upload routes read it (``uwsgi.chunked_read`` in
    ``kinto_attachment/web/streams.py``). Kinto's own JSON routes read ``wsgi.input`` through
    WebOb, which sees no body at all. nginx in front (``config/nginx.conf``,
    ``proxy_request_buffering off``) forwards a chunked body that arrives over time still
    chunked. So a record ``PUT`` of ``{"data": {"title": ...}}`` is answered ``201 Created``
    with the record stored EMPTY (a ``PUT`` of an existing record answers ``200`` and keeps
    the old data; once in a while nginx answers ``502`` instead).

    Consequence: silent data loss, reported as success, in the documented production setup
    (uWSGI behind nginx), for any client that streams its JSON (chunked).

    Correct: the body is read whole (de-chunked, e.g. a WSGI middleware in ``config/wsgi.py``
    that reads ``uwsgi.chunked_read()`` up to a bound and sets ``CONTENT_LENGTH``), or the
    request is refused (``411 Length Required``); never a write of an empty record."""
    from .test_nginx_slow_clients import deployment

    body = json.dumps({"data": {"title": "kept", "pad": "x" * 30000}}).encode()
    with deployment(tmp_path, "uwsgi") as (port, kinto):
        create_collection(kinto, "review", "c")
        record = f"/v1/buckets/review/collections/c/records/{unique()}"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                f"PUT {record} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{CREDENTIALS}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            for start in range(0, len(body), 10000):  # A client streaming its body.
                part = body[start : start + 10000]
                sock.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
                time.sleep(0.2)
            sock.sendall(b"0\r\n\r\n")
            answer = b""
            while received := sock.recv(65536):
                answer += received
        status = status_of(answer)
        stored = requests.get(f"{kinto.origin}{record}", auth=ALICE, timeout=10)
    if status in (200, 201):
        assert stored.json()["data"].get("title") == "kept", (status, stored.text[:300])
    else:
        assert isinstance(status, int) and 400 <= status < 500, answer[:300]


def test_uwsgi_refuses_a_tus_chunk_with_both_content_length_and_chunked(streaming):
    """Found by review (2026-12-05).

    with both ``Content-Length`` and ``Transfer-Encoding: chunked`` (RFC 9112 §6.3:
    the chunked coding wins, or the request is refused: gunicorn answers 400 and nginx too),
    uWSGI passes both to the app, and ``kinto_attachment/web/streams.py:_body`` trusts
    ``CONTENT_LENGTH`` first: it reads the raw chunk framing as the data. A tus ``PATCH``
    of ``hello world`` (``Content-Length: 11``) completes the upload with ``7\\r\\nhello
    w\\r`` and answers ``204``.

    Consequence: a corrupted file is stored and attached as complete, its hash that of the
    framing (a request-smuggling-style desync between what a front proxy and uWSGI believe
    the body is).

    Correct: refuse such a request (``400``) before reading anything, as gunicorn does; the
    upload stays at offset 0 and no attachment is written."""
    live = streaming["uwsgi"]
    record = f"/v1/buckets/review/collections/c/records/{unique()}"
    created = requests.post(
        f"{live.origin}{record}/attachment/uploads",
        headers={**TUS, "Upload-Length": "11", "Upload-Metadata": "filename YS5iaW4="},
        auth=ALICE,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    path = created.headers["Location"].split(str(live.port), 1)[1]
    answer = exchange(
        live.port,
        f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n{CREDENTIALS}\r\n"
        "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
        "Content-Type: application/offset+octet-stream\r\n"
        "Content-Length: 11\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
        + chunked(b"hello world", 7),
    )
    attachment = requests.get(f"{live.origin}{record}/attachment", auth=ALICE, timeout=10)
    assert attachment.status_code == 404 or attachment.content == b"hello world", (
        answer[:40],
        attachment.status_code,
        attachment.content,
    )
    assert isinstance(status_of(answer), int) and 400 <= status_of(answer) < 500, answer[:200]


def test_gunicorn_32_trickling_uploads_do_not_stall_the_server(streaming):
    """Found by review (2026-12-05).

    ``config/gunicorn.conf.py`` (``threads = 32``, ``StallBoundWorker``) bounds each
    wait for a body byte (stall timeout), not the pace of a body: an upload whose body comes a
    byte at a time, just often enough, holds one of the 32 threads for ever. 32 authenticated
    uploads trickling a byte a second (any ``user:password`` is an identity and may create its
    own bucket in the shipped configuration) stop the server: ``GET /v1/`` waits for a thread.
    docs/security.rst admits it ("what no timeout bounds"), but the slow-client promise
    ("a few slow clients must not stall the server") fails at the thread count itself; nginx
    in front does not help (``proxy_request_buffering off`` streams bodies through).

    Correct: a minimum body rate after a grace period (e.g. less than 64 KiB per stall timeout
    ends the body, as ``PacedSocket`` already does for answers), and/or nginx ``limit_conn``
    per client in the recipe; then the 33rd client is answered at once."""
    live = streaming["gunicorn"]
    records = "/v1/buckets/review/collections/c/records"
    crowd = contextlib.ExitStack()
    with crowd:
        for _ in range(32):
            head = upload_head(f"127.0.0.1:{live.port}", f"{records}/{unique()}/attachment", 10**6)
            crowd.enter_context(trickling(live, head.decode("latin-1"), b""))
        time.sleep(1.5)
        answer = timed(lambda: requests.get(f"{live.origin}/v1/", timeout=6))
    recovered(live)
    assert answer[0] == 200 and answer[1] < ANSWER_WITHIN, answer


@pytest.mark.parametrize("name", ["waitress", "gunicorn", "uwsgi"])
def test_a_request_inside_a_refused_upload_body_is_never_run(every_server, name):
    """Held against a review (2026-12-05).

    An anonymous upload refused before its body is read (401), whose small body is
    itself a request (``DELETE`` of a record), followed by a real ``GET``: no server runs the
    hidden request (waitress and gunicorn discard the body by its length and answer the
    ``GET``; uWSGI answers one request per connection and closes)."""
    live = every_server[name]
    record = f"/v1/buckets/review/collections/c/records/{unique()}"
    requests.put(f"{live.origin}{record}", json={"data": {}}, auth=ALICE, timeout=10)
    hidden = f"DELETE {record} HTTP/1.1\r\nHost: x\r\n{CREDENTIALS}\r\n\r\n".encode()
    answer = exchange(
        live.port,
        f"POST {record}/attachment HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {len(hidden)}\r\n\r\n".encode()
        + hidden
        + b"GET /v1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses[0] == b"401" and b"200" not in statuses[2:], statuses
    assert requests.get(f"{live.origin}{record}", auth=ALICE, timeout=10).status_code == 200


def test_chunked_uploads_are_stored_whole(every_server):
    """Held against a review (2026-12-05).

    Uploads sent with ``Transfer-Encoding: chunked`` (1000-byte chunks), multipart and
    tus, are stored whole under each server alone (waitress, gunicorn, uWSGI)."""
    content = bytes(range(256)) * 40
    for name, live in every_server.items():
        for route in ("multipart", "tus"):
            record = f"/v1/buckets/review/collections/c/records/{unique()}"
            if route == "multipart":
                body = (
                    b'--xyz\r\nContent-Disposition: form-data; name="attachment"; '
                    b'filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
                    + content
                    + b"\r\n--xyz--\r\n"
                )
                head = (
                    f"POST {record}/attachment HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n"
                    f"{CREDENTIALS}\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
                )
            else:
                created = requests.post(
                    f"{live.origin}{record}/attachment/uploads",
                    headers={
                        **TUS,
                        "Upload-Length": str(len(content)),
                        "Upload-Metadata": "filename YS5iaW4=",
                    },
                    auth=ALICE,
                    timeout=10,
                )
                assert created.status_code == 201, created.text
                path = created.headers["Location"].split(str(live.port), 1)[1]
                body = content
                head = (
                    f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n{CREDENTIALS}\r\n"
                    "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
                    "Content-Type: application/offset+octet-stream\r\n"
                )
            answer = exchange(
                live.port,
                (head + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
                + chunked(body, 1000),
            )
            assert status_of(answer) in (201, 204), (name, route, answer[:300])
            stored = requests.get(f"{live.origin}{record}/attachment", auth=ALICE, timeout=10)
            assert stored.content == content, (name, route)
