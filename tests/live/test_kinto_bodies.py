"""Kinto's own requests under gunicorn (chunked, compressed or large bodies) and the
worker's minimum body pace, from a review (2026-12-05) of that day's fixes
(:func:`~kinto_attachment.web.streams.receive_whole`, the view deriver of
:mod:`kinto_attachment.listeners`, ``config/gunicorn_worker.py``)."""

import base64
import contextlib
import gzip
import json
import socket
import time
from pathlib import Path

import pytest
import requests

from ..support.live import ALICE, create_collection, running_server
from .test_hostile_requests import chunked, exchange, unique


pytestmark = pytest.mark.live

CREDENTIALS = "Authorization: Basic " + base64.b64encode(":".join(ALICE).encode()).decode()
STALL = 3


def status_and_body(answer):
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def send_chunked(live, method, path, body, size):
    """``(status, answer, content)`` of Alice's JSON ``body`` sent chunked by ``size`` bytes."""
    answer = exchange(
        live.port,
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n{CREDENTIALS}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n".encode()
        + chunked(body, size),
    )
    status, _, content = status_and_body(answer)
    return status, answer, content


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory):
    """gunicorn from its shipped configuration (one worker, 32 threads), stalls at 3 s."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KINTO_STALL_TIMEOUT", str(STALL))
        with running_server(tmp_path_factory.mktemp("gunicorn"), "gunicorn") as live:
            create_collection(live, "review", "c")
            yield live


def test_gunicorn_a_chunked_batch_is_not_refused_in_every_sub_request(gunicorn):
    """Found by review (2026-12-05), of that day's fixes.

    ``streams.receive_whole`` reads a chunked body whole and sets ``request.body`` (which
    sets ``CONTENT_LENGTH``) but leaves ``HTTP_TRANSFER_ENCODING: chunked`` in the environ
    (waitress pops it once it has de-chunked a body; gunicorn and uWSGI pass it on). Kinto's
    ``POST /batch`` builds each sub-request from the parent's headers
    (``kinto.core.utils.build_request``: ``Transfer-Encoding`` copied, a ``Content-Length``
    of the sub-body added), and the listener runs ``receive_whole`` on every sub-request:
    ``_body`` now sees both framings and refuses it, ``400 "a body has one framing"``.

    Consequence: under gunicorn and uWSGI (and behind the shipped nginx, which forwards a
    streamed body chunked), every write of a batch sent chunked fails, although the client
    sent one perfectly framed body; waitress accepts the same request.

    Correct: once the body is whole, the request has one framing: drop
    ``HTTP_TRANSFER_ENCODING`` from the environ (as waitress does), or refuse both framings
    only on what the server handed over, not on sub-requests; the record is written."""
    record = f"/buckets/review/collections/c/records/{unique()}"
    body = json.dumps(
        {"requests": [{"method": "PUT", "path": record, "body": {"data": {"title": "kept"}}}]}
    ).encode()
    status, answer, content = send_chunked(gunicorn, "POST", "/v1/batch", body, 40)
    assert status == 200, answer[:300]
    responses = json.loads(content)["responses"]
    assert responses[0]["status"] == 201, responses[0]
    stored = requests.get(f"{gunicorn.url}{record}", auth=ALICE, timeout=10)
    assert stored.json()["data"]["title"] == "kept"


def test_gunicorn_a_chunked_write_in_the_default_bucket_is_not_refused(gunicorn):
    """Found by review (2026-12-05), of that day's fixes.

    Same cause as above, through Kinto's ``default_bucket`` plugin (included by the
    shipped ``config/kinto.ini``): ``PUT /buckets/default/.../records/r`` is handled by a
    sub-request built from the request's headers (``Transfer-Encoding: chunked`` kept) with
    the body read whole (a ``Content-Length``): ``receive_whole`` on the sub-request refuses
    the "two framings", ``400``.

    Consequence: a client streaming its JSON (chunked) can no longer write anything in its
    default bucket under gunicorn or uWSGI.

    Correct: ``201``, the record written (drop ``HTTP_TRANSFER_ENCODING`` once the body is
    whole)."""
    path = f"/v1/buckets/default/collections/{unique('c')}/records/r"
    body = json.dumps({"data": {"title": "kept"}}).encode()
    status, answer, _ = send_chunked(gunicorn, "PUT", path, body, 10)
    assert status == 201, answer[:400]
    stored = requests.get(f"{gunicorn.origin}{path}", auth=ALICE, timeout=10)
    assert stored.status_code == 200 and stored.json()["data"]["title"] == "kept"


def _worker_pids(live):
    children = Path(f"/proc/{live.process.pid}/task/{live.process.pid}/children")
    return [int(pid) for pid in children.read_text().split()]


def _peak_memory(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_gunicorn_an_anonymous_body_is_not_buffered_whole_in_memory(gunicorn):
    """Found by review (2026-12-05), of that day's fixes.

    ``listeners.on_context_found`` now calls ``streams.receive_whole`` for every request
    to Kinto's routes but GET/HEAD/OPTIONS, before any permission check, and
    ``receive_whole`` bounds only chunked bodies (``CHUNKED_WHOLE_MAX``, 8 MiB): a body
    with a ``Content-Length`` is read whole, into a list of chunks then joined (twice its
    size at the peak), whatever that length. Kinto answers an anonymous ``PATCH`` of a
    bucket ``401`` without reading its body; now the server first takes it all in memory.

    Consequence: any anonymous client makes a gunicorn worker hold twice what it declares
    (a few concurrent 1 GiB bodies exhaust the host's memory: gunicorn has no body limit,
    nginx's recipe streams bodies through); here a 160 MiB body grows the worker by about
    320 MiB, for a request that ends in a 401.

    Correct: the bound applies to declared lengths too (413 before reading, as for
    chunked bodies), or the body is spooled to a temporary file: the worker does not grow
    by the body's size."""
    size = 160 * 1024 * 1024
    (worker,) = _worker_pids(gunicorn)
    before = _peak_memory(worker)
    head = (
        f"PATCH /v1/buckets/review HTTP/1.1\r\nHost: 127.0.0.1:{gunicorn.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gunicorn.port), timeout=20) as sock:
        sock.sendall(head)
        block = b" " * (1024 * 1024)
        with contextlib.suppress(OSError):
            for _ in range(size // len(block)):
                sock.sendall(block)
        answer = b""
        with contextlib.suppress(OSError):
            while received := sock.recv(65536):
                answer += received
    grown = _peak_memory(worker) - before
    assert answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 413")), answer[:200]
    assert grown < 64 * 1024 * 1024, f"the worker grew by {grown // 2**20} MiB"


def test_gunicorn_a_gzip_transfer_coding_is_not_stored_as_the_file(gunicorn):
    """Found by review (2026-12-05), of that day's fixes.

    ``streams._chunked`` (used by ``_body``, ``receive_whole``, every upload) takes any
    ``Transfer-Encoding`` that contains ``chunked`` for the chunked coding alone. gunicorn
    accepts ``Transfer-Encoding: gzip, chunked``, removes the chunking and hands the app the
    still gzip-compressed bytes (waitress refuses the coding, 501). A ``POST /data/files``
    (or a multipart or tus upload) so framed is stored as the compressed bytes, its sha256
    theirs, and answered ``200``.

    Consequence: the stored file is not the representation the client sent (RFC 9112
    §6.1: the transfer coding is no part of the content): silent corruption.

    Correct: a transfer coding other than a lone ``chunked`` is refused (``501``, as
    waitress answers, or ``400``) before anything is stored."""
    content = b"the file itself, " * 200
    file_id = unique("gz")
    answer = exchange(
        gunicorn.port,
        f"POST /v1/data/files?id={file_id} HTTP/1.1\r\nHost: 127.0.0.1:{gunicorn.port}\r\n"
        "Content-Type: application/octet-stream\r\nTransfer-Encoding: gzip, chunked\r\n"
        "Connection: close\r\n\r\n".encode()
        + chunked(gzip.compress(content), 500),
    )
    stored = requests.get(f"{gunicorn.origin}/v1/data/files/{file_id}", timeout=10)
    kept = stored.status_code == 404 or stored.content == content
    assert kept, f"{answer[:15]!r} stored {stored.content[:10]!r}... (gzip), not the file"
    assert status_and_body(answer)[0] in (400, 501), answer[:300]


def test_gunicorn_keep_alive_and_fast_bodies_are_not_cut_by_the_body_pace(gunicorn):
    """Held against a review of the fixes (2026-12-05).

    ``StallBoundUnreader.pace`` is reset for each request: a kept-alive connection whose
    first request's body came slowly (2.5 s of the 3 s budget waited for, under 16 KiB)
    serves a second request, sent after an idle pause, whose body comes after 2 s; a 24 MiB
    upload at loopback speed goes through."""
    record = f"/v1/buckets/review/collections/c/records/{unique()}"
    body = b'{"data": {"n": 1}}'
    with socket.create_connection(("127.0.0.1", gunicorn.port), timeout=15) as sock:
        for pause in (2.5, 2.0):
            sock.sendall(
                f"PUT {record} HTTP/1.1\r\nHost: x\r\n{CREDENTIALS}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body[:5]
            )
            time.sleep(pause)
            sock.sendall(body[5:])
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(65536)
            head, _, rest = answer.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(rest) < length:
                rest += sock.recv(65536)
            assert head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 201")), head
            time.sleep(1)
    content = bytes(range(256)) * (96 * 1024)
    uploaded = requests.post(
        f"{gunicorn.origin}{record}/attachment",
        files={"attachment": ("big.bin", content)},
        auth=ALICE,
        timeout=30,
    )
    assert uploaded.status_code in (200, 201), uploaded.text
    assert uploaded.json()["size"] == len(content)
