"""Resumable (tus) single uploads against an attacker's headers, racing requests, a database
that ends idle sessions, a kill -9 in the last PATCH's commit (found by, or held against, a
review of 2026-12-05)."""

import base64
import contextlib
import hashlib
import io
import os
import threading
import time

import pytest
import transaction
import webob

from kinto_attachment.state import tus_uploads

from ..conftest import (
    ALICE,
    BOB,
    Kinto,
    build_settings,
    cached_app,
    dispose,
    make_app,
    own_database,
)
from ..live.test_live_concurrency import new_collection, record_of
from ..live.test_live_crash import (  # The live crash scenarios' fixtures.
    crashable,  # noqa: F401 (a fixture)
    now_ms,
    run_gc,
    set_upload_expiry,
    tus_last_patch_killed,
    tus_offset,
)
from .test_resumable import CHUNK, RECORD, TUS, UPLOADS, create, head, metadata, patch


def b64(raw):
    return base64.b64encode(raw if isinstance(raw, bytes) else raw.encode()).decode()


@pytest.fixture
def kinto_tus(kinto):
    kinto.create_collection()
    return kinto


@pytest.fixture
def kinto_tus_local(backend, tmp_path_factory, request):
    """Each storage backend, local files: what the hostile headers and PATCHes exercise is the
    protocol and the upload's state, which S3's appends do not change (their own hostile
    cases: ``tests/storage/test_remote_answers_lost_or_cut.py``)."""
    kinto = cached_app(backend, tmp_path_factory, request)
    kinto.create_collection()
    return kinto


def _meta(**pairs):
    return ",".join(f"{key} {b64(value)}" for key, value in pairs.items())


CREATION_HEADERS = [
    {"Upload-Length": "-1"},
    {"Upload-Length": "1e3"},
    {"Upload-Length": " 5"},
    {"Upload-Length": "0x10"},
    {"Upload-Length": "\u0661\u0662"},
    {"Upload-Length": "9" * 19},
    {"Upload-Length": "9" * 5000},
    {"Upload-Length": "0" * 5000 + "5"},
    {"Upload-Metadata": "filename"},
    {"Upload-Metadata": "filename ===="},
    {"Upload-Metadata": _meta(filename="a.txt") + "," + _meta(filename="b.txt")},
    {"Upload-Metadata": _meta(filename="x" * 150000 + ".txt")},
    {"Upload-Metadata": _meta(filename="../../../etc/passwd")},
    {"Upload-Metadata": _meta(filename="../../x.txt")},
    {"Upload-Metadata": "filename " + b64(b"\xff\xfe.txt")},
    {"Upload-Metadata": _meta(filename="a\x00.txt")},
    {"Upload-Metadata": _meta(filename="a\r\n.txt")},
    {"Upload-Metadata": _meta(filename="/")},
    {"Upload-Metadata": _meta(filename="..")},
    {"Upload-Metadata": _meta(filename="a.txt", data="[1]")},
    {"Upload-Metadata": _meta(filename="a.txt", data='{"a": "\\u0000"}')},
    {"Upload-Metadata": _meta(filename="a.txt", data='{"last_modified": -1}')},
    {"Upload-Metadata": _meta(filename="a.txt", data='{"id": "other"}')},
    {"Upload-Metadata": _meta(filename="a.txt", data='{"attachment": {"location": "x"}}')},
    {"Upload-Metadata": _meta(filename="a.txt", permissions='{"read": "x"}')},
    {"Upload-Metadata": _meta(filename="a.txt", permissions='{"write": ["\\ud800"]}')},
    {"Upload-Metadata": _meta(filename="a.txt", filetype="text/plain\r\nX: y")},
    {"Upload-Metadata": _meta(filename="a.txt", filetype="x" * 100000)},
    {"Upload-Metadata": _meta(filename="a.txt") + ",\u00ff " + b64("z")},
    {"Upload-Metadata": _meta(filename="a.txt") + ", " + b64("z")},
    {"Upload-Defer-Length": "0", "Upload-Length": None},
    {"Upload-Defer-Length": "true", "Upload-Length": None},
    {"Upload-Defer-Length": "1"},
    {"Upload-Checksum": "sha1 xx"},
    {"If-Match": '*, "1"'},
]


@pytest.mark.parametrize("headers", CREATION_HEADERS)
def test_hostile_creation_headers(kinto_tus_local, headers):
    """Held against a review (2026-12-05).

    odd creation headers (lengths negative, non-numeric, with spaces, 5000 digits;
    metadata malformed, duplicated, huge, with paths, NULs, CR LF, non-UTF-8) are a 4xx, or
    an upload that then finishes as any other: never a 5xx, no state or file left by a
    refusal."""
    app = kinto_tus_local.app
    request_headers = {**ALICE, **TUS, "Upload-Length": "5", "Upload-Metadata": metadata()}
    request_headers.update(headers)
    request_headers = {k: v for k, v in request_headers.items() if v is not None}
    response = app.post(UPLOADS, headers=request_headers, status="*")
    assert response.status_code < 500, (response.status, response.body)
    if response.status_code != 201:
        assert 400 <= response.status_code < 500
        assert response.json["code"] == response.status_code
        assert tus_uploads.entries(kinto_tus_local.registry.storage) == []
        assert kinto_tus_local.files() == []
        return
    url = response.headers["Location"][len("http://localhost") :]
    assert head(app, url).status_code == 200
    if "Upload-Defer-Length" in request_headers:
        return
    done = patch(app, url, b"12345", 0, status="*")
    assert done.status_code < 500, (done.status, done.body)
    if done.status_code == 204:
        attachment = app.get(RECORD, headers=ALICE).json["data"]["attachment"]
        assert attachment["hash"] == hashlib.sha256(b"12345").hexdigest()
        assert kinto_tus_local.read(attachment["location"]) == b"12345"
        assert kinto_tus_local.files() == [kinto_tus_local.key_of(attachment["location"])]
        download = app.get(RECORD + "/attachment", headers=ALICE, status="*")
        assert download.status_code == 200, download.status


def _raw(kinto, url, method, body=b"", environ=None, **headers):
    wsgi_request = webob.Request.blank(url, method=method, headers=headers)
    wsgi_request.environ["wsgi.input"] = io.BytesIO(body)
    wsgi_request.environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in (environ or {}).items():
        if value is None:
            wsgi_request.environ.pop(name, None)
        else:
            wsgi_request.environ[name] = value
    return wsgi_request.get_response(kinto.app.app)


PATCH_CASES = [
    # (body, environ, headers, offset expected after)
    (b"12345", {"CONTENT_LENGTH": "-1"}, {}, 0),
    (b"12345", {"CONTENT_LENGTH": "abc"}, {}, 0),
    (b"12345", {"CONTENT_LENGTH": "99999999999999999999"}, {}, 0),
    (b"12345", {"CONTENT_LENGTH": "9999999999999999999"}, {}, 0),
    (b"12345", {"CONTENT_LENGTH": "3"}, {}, 3),
    (b"12345", {"CONTENT_LENGTH": "7"}, {}, 0),
    (b"12345", {"HTTP_TRANSFER_ENCODING": "chunked"}, {}, 0),
    (b"12345", {}, {"Upload-Offset": "-0"}, 0),
    (b"12345", {}, {"Upload-Offset": "9" * 30}, 0),
    (b"12345", {}, {"Upload-Offset": "1"}, 0),
    (b"12345", {}, {"Upload-Length": "4"}, 0),
    (b"12345", {}, {"Upload-Length": "6"}, 0),
    (b"12345", {}, {"Upload-Length": "-5"}, 0),
    (b"12345", {}, {"Upload-Checksum": "sha256"}, 0),
    (b"12345", {}, {"Upload-Checksum": "crc32 AAAA"}, 0),
    (b"12345", {}, {"Upload-Checksum": "md5 " + b64(hashlib.md5(b"x").digest())}, 0),
    (b"12345", {}, {"If-Match": '"123"'}, 0),
    (b"12345", {}, {"If-Match": "garbage"}, 0),
    (b"12345", {}, {"Content-Type": "text/plain"}, 0),
    (b"", {}, {}, 0),
    (b"123456", {}, {}, 0),
]


@pytest.mark.parametrize("body,environ,headers,after", PATCH_CASES)
def test_hostile_patches(kinto_tus_local, body, environ, headers, after):
    """Held against a review (2026-12-05).

    a PATCH with a lying, negative or huge Content-Length, both framings, a wrong
    or huge offset, a changed length, bad checksums, a failed precondition, a wrong type, an
    empty body or one past Upload-Length is a 4xx (or a 204 for what it did send), and the
    upload is where the bytes stored say: never a 5xx, never a wrong hash."""
    app = kinto_tus_local.app
    _, url = create(app, 5)
    request_headers = {**ALICE, **TUS, **CHUNK, "Upload-Offset": "0", **headers}
    response = _raw(kinto_tus_local, url, "PATCH", body, environ, **request_headers)
    assert response.status_code < 500, (response.status, response.body)
    assert head(app, url).headers["Upload-Offset"] == str(after)
    patch(app, url, b"12345"[after:], after)
    attachment = app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert attachment["hash"] == hashlib.sha256(b"12345").hexdigest()
    assert kinto_tus_local.read(attachment["location"]) == b"12345"
    assert kinto_tus_local.files() == [kinto_tus_local.key_of(attachment["location"])]


def test_another_users_upload_url_is_unknown_and_untouched(kinto_tus):
    """Held against a review (2026-12-05).

    Bob, who may write the record, cannot see, append to, or terminate Alice's
    upload (404 each time), and Alice's upload is unharmed."""
    app = kinto_tus.app
    shared = {"data": {}, "permissions": {"write": ["system.Authenticated"]}}
    app.put_json(RECORD, shared, headers=ALICE)
    _, url = create(app, 10)
    patch(app, url, b"12345", 0)
    head(app, url, status=404, headers=BOB)
    patch(app, url, b"BBBBB", 5, status=404, headers=BOB)
    app.delete(url, headers={**BOB, **TUS}, status=404)
    assert head(app, url).headers["Upload-Offset"] == "5"
    patch(app, url, b"67890", 5)
    assert app.get(RECORD + "/attachment", headers=ALICE).body == b"1234567890"


def test_an_upload_whose_collection_went_is_refused_and_collected(kinto_tus, monkeypatch):
    """Held against a review (2026-12-05).

    the collection deleted while an upload is in progress: its PATCHes are a 4xx
    (never a 5xx, no record made), and the collector takes its bytes when it expires."""
    from kinto.core.utils import msec_time

    from kinto_attachment import gc
    from kinto_attachment.views import tus_steps

    app = kinto_tus.app
    _, url = create(app, 10)
    patch(app, url, b"12345", 0)
    app.delete("/v1/buckets/blog/collections/articles", headers=ALICE)
    response = patch(app, url, b"67890", 5, status="*")
    assert 400 <= response.status_code < 500, response.status
    later = msec_time() + 86400 * 1000 + 1
    monkeypatch.setattr(tus_steps, "msec_time", lambda: later)
    gc.collect(kinto_tus.registry, now=later)
    assert tus_uploads.entries(kinto_tus.registry.storage) == []
    assert kinto_tus.files() == []


class _PausingBody:
    """A request body that gives ``first``, then waits for ``release``, then gives ``rest``."""

    def __init__(self, first, rest, started, release):
        self._parts = [first, rest]
        self._started, self._release = started, release

    def read(self, size=-1):
        if not self._parts:
            return b""
        if len(self._parts) == 1:
            self._started.set()
            self._release.wait(30)
        return self._parts.pop(0)


def _pausing_patch(app, url, first, rest, offset, result, started, release, **headers):
    wsgi_request = webob.Request.blank(
        url,
        method="PATCH",
        headers={**ALICE, **TUS, **CHUNK, "Upload-Offset": str(offset), **headers},
    )
    wsgi_request.environ["wsgi.input"] = _PausingBody(first, rest, started, release)
    wsgi_request.environ["CONTENT_LENGTH"] = str(len(first) + len(rest))
    try:
        result.append(wsgi_request.get_response(app.app))
    except Exception as e:  # noqa: BLE001
        result.append(e)
    finally:
        transaction.abort()


@contextlib.contextmanager
def _ending_idle_sessions(tmp_path, name):
    """An app on a database of its own (``name``) whose server ends sessions idle in a
    transaction for 500 ms, with the blog/articles collection."""
    base_path = str(tmp_path / "store")
    os.makedirs(base_path)
    with own_database(name) as url:
        limited = url + "?options=-c%20idle_in_transaction_session_timeout%3D500"
        node = Kinto(make_app(build_settings("postgresql", base_path, pg=limited)), base_path)
        try:
            node.create_collection()
            yield node
        finally:
            transaction.abort()
            dispose(node)


@pytest.mark.postgresql
def test_a_patch_whose_session_was_killed_never_writes_into_the_attachment(tmp_path):
    """Found by review (2026-12-05).

    It was: a PATCH streams its body in an idle transaction, which holds the upload's lock;
    a server with ``idle_in_transaction_session_timeout`` ended that session (and the lock)
    while the request went on writing: a second PATCH appended and finished the upload, and
    the first one's late bytes landed in the attachment (its file is the upload's): a
    sha256 that is not the bytes served. Fixed: Kinto's connections are opened without
    that timeout (:mod:`kinto_attachment.state.long_transactions`), and an append holds the
    upload's file (tests/storage/test_local_failures.py)."""
    with _ending_idle_sessions(tmp_path, "review_tus_lock") as node:
        _, upload = create(node.app, 10)
        started, release, result = threading.Event(), threading.Event(), []
        thread = threading.Thread(
            target=_pausing_patch,
            args=(node.app, upload, b"AAAAA", b"aaaaa", 0, result, started, release),
        )
        thread.start()
        try:
            assert started.wait(30)
            time.sleep(1.5)  # The first PATCH's session is ended by the server.
            second = patch(node.app, upload, b"B" * 10, 0, status="*")
        finally:
            release.set()
            thread.join(30)
        assert second.status_code in (204, 423), second.status
        record = node.app.get(RECORD, headers=ALICE, status="*").json.get("data", {})
        attachment = record.get("attachment")
        if second.status_code == 204:
            stored = node.read(attachment["location"])
            assert hashlib.sha256(stored).hexdigest() == attachment["hash"], stored
            assert len(stored) == attachment["size"], stored


@pytest.mark.postgresql
def test_a_patch_slower_than_the_database_idle_timeout_keeps_its_bytes(tmp_path):
    """Found by review (2026-12-05).

    It was: on a PostgreSQL server with ``idle_in_transaction_session_timeout``, a PATCH
    lasting longer (clients send a whole file in one) was received and written, then
    refused when its state was saved (503): every retry the same, the upload never
    finished. Fixed: Kinto's connections are opened without that timeout."""
    with _ending_idle_sessions(tmp_path, "review_tus_idle") as node:
        _, upload = create(node.app, 20)
        started, release, result = threading.Event(), threading.Event(), []
        thread = threading.Thread(
            target=_pausing_patch,
            args=(node.app, upload, b"A" * 5, b"a" * 5, 0, result, started, release),
        )
        thread.start()
        assert started.wait(30)
        time.sleep(1.5)
        release.set()
        thread.join(30)
        response = result[0]
        assert not isinstance(response, Exception), response
        assert response.status_code == 204, (response.status, response.body[:300])
        assert head(node.app, upload).headers["Upload-Offset"] == "10"


@pytest.mark.postgresql
def test_a_refused_patch_whose_session_ended_is_no_500(tmp_path):
    """Found by review (2026-12-05).

    It was: a PATCH refused (a wrong checksum) after the server ended its idle session was a
    500 (the rollback failed on the dead connection). Fixed: the session is not ended under
    a request (Kinto's connections are opened without that timeout): the refusal it is."""
    with _ending_idle_sessions(tmp_path, "review_tus_idle") as node:
        _, upload = create(node.app, 20)
        started, release, result = threading.Event(), threading.Event(), []
        bad = {"Upload-Checksum": "sha1 " + b64(b"x" * 20)}
        thread = threading.Thread(
            target=_pausing_patch,
            args=(node.app, upload, b"A" * 5, b"a" * 5, 0, result, started, release),
            kwargs=bad,
        )
        thread.start()
        assert started.wait(30)
        time.sleep(1.5)
        release.set()
        thread.join(30)
        response = result[0]
        assert not isinstance(response, Exception), response
        assert response.status_code < 500, (response.status, response.body[:300])


@pytest.mark.live
@pytest.mark.postgresql
def test_a_last_patch_killed_in_its_commit_is_never_told_done_later(crashable):  # noqa: F811 (the fixture)
    """Found by review (2026-12-05).

    It was: the last PATCH remembers the upload as finished in Kinto's cache before its
    transaction commits, and that cache is not part of it: a ``kill -9`` in between left
    the entry, and once the upload's state expired and was collected, ``HEAD`` answered it
    done (``Upload-Offset == Upload-Length``), the record without attachment. Fixed: the
    entry is confirmed once the transaction has committed; one that is not is taken only
    while the record's attachment is the upload's."""
    server = crashable.server
    path = new_collection(server) + "/never-finished"
    content = os.urandom(300_000)
    url = tus_last_patch_killed(crashable, path, content)
    server = crashable.server
    assert tus_offset(url) == (200, "200000")  # Rolled back: the state is read first.

    # The client comes back after the upload expired; the collector has removed it.
    set_upload_expiry(crashable.cluster.pg, url.rsplit("/", 1)[-1], now_ms() - 1000)
    run_gc(crashable)
    status, _ = record_of(server, path)
    assert status == 404  # No record, no attachment.
    assert tus_offset(url) == (404, None), "the upload is told done; it never was"


def test_a_download_of_the_old_file_is_whole_while_an_upload_replaces_it(kinto_memory):
    """Held against a review (2026-12-05).

    a download of the previous attachment, begun before the last PATCH of an upload
    that replaces it, reads the previous file whole (local disk: the open file outlives its
    name); the new one is then served, whole."""
    kinto = kinto_memory
    kinto.create_collection()
    app = kinto.app
    old = os.urandom(3 * 1024 * 1024 + 5)
    new = os.urandom(2 * 1024 * 1024 + 3)
    kinto.upload(RECORD, old, "old.txt")
    request = webob.Request.blank(RECORD + "/attachment", headers=ALICE)
    status, _, app_iter = request.call_application(app.app)
    assert status.startswith("200")
    iterator = iter(app_iter)
    first = next(iterator)
    _, url = create(app, len(new), meta=_meta(filename="new.txt"))
    patch(app, url, new[: 1024 * 1024], 0)
    patch(app, url, new[1024 * 1024 :], 1024 * 1024)
    rest = b"".join(iterator)
    if hasattr(app_iter, "close"):
        app_iter.close()
    assert first + rest == old
    assert app.get(RECORD + "/attachment", headers=ALICE).body == new
