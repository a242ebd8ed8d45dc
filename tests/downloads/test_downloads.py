"""GET and HEAD {record-url}/attachment: permission-checked, conditional, ranged, safe."""

import base64
import email.utils
import hashlib
import os
import sys
import threading
import time
import types
from urllib.parse import unquote

import pytest
import requests
import webob

from kinto_attachment import downloads
from kinto_attachment.state import links

from ..conftest import (
    ALICE,
    BOB,
    cached_app,
    presigned_app,
    s3_client,
    served_path,
    serving_app,
)
from ..storage.test_gcs import gcs_app


URL = "/v1/buckets/blog/collections/articles/records/r1"
CONTENT = bytes(range(256)) * 40  # 10240 bytes


@pytest.fixture
def stored(kinto):
    kinto.create_collection()
    meta = kinto.upload(URL, CONTENT, "data.pdf", mimetype="application/pdf").json
    return kinto, meta


def get(kinto, headers=ALICE, status=200, method="get", **extra):
    return getattr(kinto.app, method)(
        URL + "/attachment", headers={**headers, **extra}, status=status
    )


def test_download(stored):
    kinto, meta = stored
    response = get(kinto)
    assert response.body == CONTENT
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Content-Length"] == str(len(CONTENT))
    assert response.headers["ETag"] == f'"{hashlib.sha256(CONTENT).hexdigest()}"'
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Disposition"].startswith('inline; filename="data.pdf"')
    assert response.headers["Cache-Control"] == "private, no-cache"  # See test_caching.py.
    record = kinto.app.get(URL, headers=ALICE).json["data"]
    assert response.last_modified.timestamp() == record["last_modified"] // 1000


def test_head(stored):
    kinto, _ = stored
    response = get(kinto, method="head")
    assert response.body == b""
    assert response.headers["Content-Length"] == str(len(CONTENT))


def test_permissions(stored):
    kinto, _ = stored
    get(kinto, headers={}, status=401)
    get(kinto, headers=BOB, status=403)
    kinto.app.patch_json(URL, {"permissions": {"read": ["system.Everyone"]}}, headers=ALICE)
    assert get(kinto, headers={}).body == CONTENT
    assert get(kinto, headers=BOB).body == CONTENT


def test_collection_readers_can_download(stored):
    kinto, _ = stored
    kinto.app.patch_json(
        "/v1/buckets/blog/collections/articles",
        {"permissions": {"read": ["system.Authenticated"]}},
        headers=ALICE,
    )
    assert get(kinto, headers=BOB).body == CONTENT


@pytest.mark.parametrize(
    "header,status,expected,content_range",
    [
        ("bytes=0-9", 206, CONTENT[:10], "bytes 0-9/10240"),
        ("bytes=10000-", 206, CONTENT[10000:], "bytes 10000-10239/10240"),
        ("bytes=-16", 206, CONTENT[-16:], "bytes 10224-10239/10240"),
        ("bytes=10230-99999", 206, CONTENT[10230:], "bytes 10230-10239/10240"),
        ("bytes=0-0,5-6", 200, CONTENT, None),
        ("items=0-5", 200, CONTENT, None),
        ("bytes=9-3", 200, CONTENT, None),
    ],
)
def test_ranges(stored, header, status, expected, content_range):
    kinto, _ = stored
    response = get(kinto, status=status, Range=header)
    assert response.body == expected
    assert response.headers.get("Content-Range") == content_range
    assert response.headers["Content-Length"] == str(len(expected))


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=20000-30000", "bytes=-0"])
def test_unsatisfiable_range(stored, header):
    kinto, _ = stored
    response = get(kinto, status=416, Range=header)
    assert response.headers["Content-Range"] == "bytes */10240"
    assert response.json["code"] == 416


def test_conditional_requests(stored):
    kinto, meta = stored
    etag = f'"{meta["hash"]}"'
    response = get(kinto, status=304, **{"If-None-Match": etag})
    assert response.body == b""
    assert response.headers["ETag"] == etag
    get(kinto, status=304, **{"If-None-Match": f'"other", W/{etag}'})
    assert get(kinto, **{"If-None-Match": '"other"'}).body == CONTENT
    # "*": the file exists, so it matches (RFC 9110 §13.1.2; WebOb reads it as a falsy "any":
    # it was a 200 with the whole file; found by review, 2026-12-05).
    assert get(kinto, status=304, **{"If-None-Match": "*"}).body == b""
    # If-Range: the range only applies to the same content.
    assert get(kinto, status=206, Range="bytes=0-1", **{"If-Range": etag}).body == CONTENT[:2]
    assert get(kinto, Range="bytes=0-1", **{"If-Range": '"old"'}).body == CONTENT
    # If-Range compares strongly: a weak validator never matches.
    assert get(kinto, Range="bytes=0-1", **{"If-Range": f"W/{etag}"}).body == CONTENT


def test_if_modified_since(stored):
    kinto, _ = stored
    last_modified = get(kinto).headers["Last-Modified"]
    response = get(kinto, status=304, **{"If-Modified-Since": last_modified})
    assert response.body == b""
    assert get(kinto, **{"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).body == CONTENT
    # If-None-Match wins when both are sent (RFC 9110 §13.2.2).
    both = {"If-Modified-Since": last_modified, "If-None-Match": '"other"'}
    assert get(kinto, **both).body == CONTENT
    # An unreadable date is no condition.
    assert get(kinto, **{"If-Modified-Since": "yesterday"}).body == CONTENT


def replace_within_one_second(kinto, contents):
    """Upload ``contents`` one after the other until two of them have ``Last-Modified`` in
    one second; return the answers of their downloads."""
    for _ in range(5):
        answers = []
        for content in contents:
            kinto.upload(URL, content, "data.txt")
            answers.append(get(kinto, status=206, Range="bytes=0-499"))
        if len({answer.headers["Last-Modified"] for answer in answers}) == 1:
            return answers
    pytest.fail("no two uploads within one second")


def next_second():
    """Sleep until a new second starts."""
    time.sleep(1 - time.time() % 1 + 0.01)


def test_if_range_date_across_a_same_second_replacement(kinto):
    """The issue's scenario: the first 500 bytes of v1, v2 attached within the same second,
    then the rest with v1's Last-Modified in If-Range: the date cannot tell v1 from v2, so
    the whole of v2 is sent (a 206 would be v2's bytes after v1's)."""
    kinto.create_collection()
    v1, v2 = os.urandom(1000), os.urandom(1000)
    first, _ = replace_within_one_second(kinto, [v1, v2])
    assert first.body == v1[:500]
    rest = get(kinto, Range="bytes=500-", **{"If-Range": first.headers["Last-Modified"]})
    assert (rest.status_code, rest.body) == (200, v2)
    # With the ETag, the client's validator is exact: the same answer.
    rest = get(kinto, Range="bytes=500-", **{"If-Range": first.headers["ETag"]})
    assert (rest.status_code, rest.body) == (200, v2)


def test_date_conditions_across_a_same_second_replacement(kinto):
    """Found by review (2026-12-05).

    A client holding v1 (its ``Last-Modified``) after v2 was attached within the same
    second: ``If-Modified-Since`` was a ``304`` (the client kept v1 until the next change),
    and ``If-Unmodified-Since`` with a ``Range`` a ``206`` of v2's bytes to append to v1's.
    The date cannot tell them apart: a ``200`` of v2, and a ``412``. A record whose file
    never changed within that second keeps its ``304``."""
    kinto.create_collection()
    v1, v2 = os.urandom(1000), os.urandom(1000)
    first, _ = replace_within_one_second(kinto, [v1, v2])
    date = first.headers["Last-Modified"]
    assert get(kinto, **{"If-Modified-Since": date}).body == v2
    get(kinto, status=412, Range="bytes=500-", **{"If-Unmodified-Since": date})
    next_second()
    kinto.app.patch_json(URL, {"data": {"title": "edited"}}, headers=ALICE)
    edited = get(kinto).headers["Last-Modified"]
    get(kinto, status=304, **{"If-Modified-Since": edited})
    resumed = get(kinto, status=206, Range="bytes=500-", **{"If-Unmodified-Since": edited})
    assert resumed.body == v2[500:]


def test_if_range_date_is_honoured_only_when_strong(kinto):
    kinto.create_collection()
    v1, v2 = os.urandom(1000), os.urandom(1000)
    kinto.upload(URL, v1, "data.txt")
    # A record the upload created: a record of the same id may have existed earlier in that
    # second, deleted since, with another file.
    created = get(kinto).headers["Last-Modified"]
    assert get(kinto, Range="bytes=500-", **{"If-Range": created}).body == v1
    # Replaced in a later second than the version before: every version of the record with
    # this Last-Modified has v2.
    next_second()
    kinto.upload(URL, v2, "data.txt")
    last_modified = get(kinto).headers["Last-Modified"]
    ranged = get(kinto, status=206, Range="bytes=500-", **{"If-Range": last_modified})
    assert ranged.body == v2[500:]
    # The record's other fields changed in a later second: still v2.
    next_second()
    kinto.app.patch_json(URL, {"data": {"title": "edited"}}, headers=ALICE)
    edited = get(kinto).headers["Last-Modified"]
    assert edited != last_modified
    assert get(kinto, status=206, Range="bytes=500-", **{"If-Range": edited}).body == v2[500:]
    # Only the exact date: neither an earlier one nor a later one (WebOb's test: <=).
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)
    out_of_range = "Fri, 31 Dec 99999 23:59:59 GMT"
    for date in (last_modified, later, "Thu, 01 Jan 1970 00:00:00 GMT", "yesterday", out_of_range):
        assert get(kinto, Range="bytes=500-", **{"If-Range": date}).body == v2


@pytest.mark.parametrize(
    "filename,mimetype,disposition",
    [
        ("page.html", "text/html", "attachment"),
        ("logo.svg", "image/svg+xml", "attachment"),
        ("feed.xml", "application/atom+xml", "attachment"),
        ("app.js", "application/javascript", "attachment"),
        ("photo.png", "image/png", "inline"),
    ],
)
def test_executable_types_are_never_inline(
    tmp_path_factory, request, filename, mimetype, disposition
):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.extensions": "any"}
    )
    kinto.create_collection()
    kinto.upload(URL, b"<script>alert(1)</script>", filename, mimetype=mimetype)
    response = get(kinto)
    assert response.headers["Content-Disposition"].startswith(f'{disposition}; filename="')
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_unicode_filename(kinto_memory):
    kinto = kinto_memory
    kinto.create_collection()
    kinto.upload(URL, b"x", 'Résumé "final".txt')
    disposition = get(kinto).headers["Content-Disposition"]
    assert disposition == (
        'inline; filename="R_sum_ _final_.txt"; '
        "filename*=UTF-8''R%C3%A9sum%C3%A9%20%22final%22.txt"
    )


def test_missing(kinto_memory):
    kinto = kinto_memory
    kinto.create_collection()
    response = get(kinto, status=404)
    assert response.json["details"] == {"id": "r1", "resource_name": "record"}
    kinto.app.put_json(URL, {"data": {}}, headers=ALICE)
    response = get(kinto, status=404)
    assert response.json["details"] == {"id": "r1", "resource_name": "attachment"}


def test_missing_blob_is_404_and_logged(kinto, caplog):
    kinto.create_collection()
    meta = kinto.upload(URL, b"soon gone", "gone.txt").json
    kinto.registry.attachment_store.delete(kinto.key_of(meta["location"]))
    response = get(kinto, status=404)
    assert response.json["details"]["resource_name"] == "attachment"
    assert "is missing from the store" in caplog.text


def test_empty_file(kinto_memory):
    kinto = kinto_memory
    kinto.create_collection()
    kinto.upload(URL, b"", "empty.txt")
    response = get(kinto)
    assert (response.body, response.headers["Content-Length"]) == (b"", "0")


def test_presigned_redirect_on_s3(tmp_path_factory, request):
    kinto = presigned_app(tmp_path_factory, request, **{"kinto.attachment.extensions": "any"})
    content = os.urandom(2048)
    meta = kinto.upload(URL, content, "page.html", mimetype="text/html").json
    response = get(kinto, status=307)
    target = response.headers["Location"]
    assert "X-Amz-Signature=" in target and "X-Amz-Expires=300" in target
    download = requests.get(target, timeout=10)
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["Content-Disposition"].startswith('attachment; filename="page.html"')
    # Still permission-checked, and still conditional for a client that has the content; the
    # redirection itself has no validators (see test_caching.py).
    get(kinto, headers=BOB, status=403)
    assert "ETag" not in response.headers
    get(kinto, status=304, **{"If-None-Match": f'"{meta["hash"]}"'})


def test_without_a_file_wrapper_the_stream_is_iterated(stored):
    kinto, _ = stored
    wsgi_request = webob.Request.blank(URL + "/attachment", headers=ALICE)
    wsgi_request.environ.pop("wsgi.file_wrapper", None)
    response = wsgi_request.get_response(kinto.app.app)
    assert response.body == CONTENT


def test_streamed_response_body_is_only_a_length_until_set():
    response = downloads.StreamedResponse(content_type="text/plain")
    response.app_iter = iter([b"never", b" read"])
    response.content_length = 10
    assert len(response.body) == 10
    response.body = b"set"
    assert response.body == b"set"


HUGE = "9" * 5000


@pytest.mark.parametrize(
    "header,status",
    [
        (f"bytes={HUGE}-", 416),
        (f"bytes={HUGE}-{HUGE}", 416),
        (f"bytes=0-{HUGE}", 206),
        (f"bytes=-{HUGE}", 206),
        (f"bytes={'0' * 5000}1-2", 206),
        (f"bytes={HUGE}", 200),
    ],
)
def test_huge_range_positions_are_no_500(stored, header, status):
    kinto, _ = stored
    response = get(kinto, status=status, Range=header)
    if status == 206:
        assert response.body in (CONTENT, CONTENT[1:3])


def test_huge_range_on_data_files_and_served_files(tmp_path_factory, request):
    kinto = serving_app(tmp_path_factory, request)
    kinto.create_collection()
    meta = kinto.upload(URL, CONTENT, "data.txt").json
    path = served_path(meta["location"])
    # Served files answer ranges as every download does (one response builder).
    kinto.app.get(path, headers={"Range": f"bytes={HUGE}-"}, status=416)
    ranged = kinto.app.get(path, headers={"Range": "bytes=1-2"}, status=206)
    assert (ranged.body, ranged.headers["Content-Range"]) == (CONTENT[1:3], "bytes 1-2/10240")
    local = {"REMOTE_ADDR": "127.0.0.1"}
    file_id = kinto.app.post("/v1/data/files", CONTENT, extra_environ=local).text
    kinto.app.get(
        f"/v1/data/files/{file_id}",
        headers={"Range": f"bytes={HUGE}-"},
        extra_environ=local,
        status=416,
    )


class _Recorded:
    """A stored blob's stream that remembers being closed."""

    def __init__(self, stream):
        self._stream, self.closed = stream, False

    def read(self, size=-1):
        return self._stream.read(size)

    def close(self):
        self.closed = True
        self._stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def blob(tmp_path):
    """A local store holding a 3 MiB blob, and the streams it opened."""
    from kinto_attachment.storage.local import LocalStore

    store = LocalStore(str(tmp_path / "files"))
    store.prepare()
    staged = store.stage("big.bin")
    content = os.urandom(3 * 1024 * 1024 + 5)
    staged.write(content)
    key = staged.commit()
    opened = []
    real_open = store.open

    def open_(key, start=0, end=None):
        opened.append(_Recorded(real_open(key, start, end)))
        return opened[-1]

    store.open = open_
    served = downloads.Download(key=key, size=len(content), mimetype="", filename="big.bin")
    return store, served, content, opened


def test_a_wrapped_body_is_read_by_chunks_under_uwsgi_else_through_the_file_wrapper(
    blob, monkeypatch
):
    """uWSGI's file wrapper reads a file without a descriptor by small blocks: a wrapped body
    (the transfer limiter's) is read by chunks of 1 MiB there. Elsewhere it goes through the
    server's file wrapper (found by review, 2026-12-05: waitress iterated a generator in the
    request's thread, which a client reading nothing held for good)."""
    store, served, content, opened = blob
    wrapped = []

    def wrap(body, length):
        wrapped.append(length)
        return body

    request = webob.Request.blank("/")
    given = []
    request.environ["wsgi.file_wrapper"] = lambda file, size: given.append(file) or iter(())
    downloads.respond(request, store, served, wrap=wrap)
    assert given and wrapped == [len(content)]
    given[0].close()
    monkeypatch.setitem(sys.modules, "uwsgi", types.ModuleType("uwsgi"))
    request = webob.Request.blank("/")
    request.environ["wsgi.file_wrapper"] = lambda *a: pytest.fail("file wrapper used")
    response = downloads.respond(request, store, served, wrap=wrap)
    sizes = [len(chunk) for chunk in response.app_iter]
    assert sizes == [1024 * 1024] * 3 + [5] and wrapped == [len(content)] * 2
    assert opened[1].closed


def test_a_wrapper_that_refuses_closes_the_stream(blob):
    store, served, _, opened = blob

    def busy(body, length):
        raise RuntimeError("no budget")

    with pytest.raises(RuntimeError):
        downloads.respond(webob.Request.blank("/"), store, served, wrap=busy)
    assert opened[0].closed


# Downloads racing a replacement: the record (or entry) is read, then a replacement commits
# before the blob is opened. Another thread makes the change, through the API, at the moment
# the download first touches the store.


@pytest.fixture
def meanwhile(monkeypatch):
    """``meanwhile(kinto, change, times=1)``: ``change()`` runs in another thread (its own
    request, committed) the first ``times`` times this thread's request touches a blob."""

    def arrange(kinto, change, times=1):
        store, reader, done = kinto.registry.attachment_store, threading.get_ident(), []

        def hooked(original):
            def touched(key, *args, **kwargs):
                if threading.get_ident() == reader and len(done) < times:
                    done.append(key)
                    thread = threading.Thread(target=change)
                    thread.start()
                    thread.join(30)
                return original(key, *args, **kwargs)

            return touched

        for name in ("open", "exists", "stat"):
            monkeypatch.setattr(store, name, hooked(getattr(store, name)))
        return done

    return arrange


V1, V2 = b"version 1 " * 100, b"version 2 " * 100


@pytest.fixture
def racing(kinto):
    kinto.create_collection()
    kinto.upload(URL, V1, "v1.txt")
    return kinto


@pytest.mark.parametrize(
    "method,headers,status,body",
    [
        ("get", {}, 200, V2),
        ("get", {"Range": "bytes=500-"}, 206, V2[500:]),
        ("head", {}, 200, b""),
    ],
)
def test_a_download_racing_a_replacement_serves_the_new_version(
    racing, meanwhile, caplog, method, headers, status, body
):
    kinto = racing
    # Deleted as soon as the replacement commits (gc.replaced_grace_seconds = 0).
    touched = meanwhile(kinto, lambda: kinto.upload(URL, V2, "v2.txt"))
    response = get(kinto, method=method, status=status, **headers)
    assert response.body == body
    assert response.headers["ETag"] == f'"{hashlib.sha256(V2).hexdigest()}"'
    assert len(touched) == 1
    assert "missing from the store" not in caplog.text


@pytest.mark.parametrize("method", ["get", "head"])
def test_a_download_racing_a_replacement_on_gcs(gcs_server, meanwhile, caplog, method):
    kinto = gcs_app(gcs_server)
    kinto.upload(URL, V1, "v1.txt")
    meanwhile(kinto, lambda: kinto.upload(URL, V2, "v2.txt"))
    response = get(kinto, method=method)
    assert response.headers["ETag"] == f'"{hashlib.sha256(V2).hexdigest()}"'
    assert response.body == (V2 if method == "get" else b"")
    assert "missing from the store" not in caplog.text


def test_a_download_racing_a_replacement_with_a_grace_serves_the_old_version(
    tmp_path_factory, request, meanwhile, caplog
):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.gc.replaced_grace_seconds": "60"}
    )
    kinto.create_collection()
    first = kinto.upload(URL, V1, "v1.txt").json
    meanwhile(kinto, lambda: kinto.upload(URL, V2, "v2.txt"))
    assert get(kinto).body == V1  # The version it started with, whole.
    assert get(kinto).body == V2
    assert kinto.exists(first["location"])  # Until the grace has passed.
    assert "missing from the store" not in caplog.text


@pytest.mark.parametrize(
    "change,details",
    [
        ("record", {"id": "r1", "resource_name": "record"}),
        ("attachment", {"id": "r1", "resource_name": "attachment"}),
    ],
)
def test_a_download_racing_a_deletion_is_the_404_of_what_was_deleted(
    racing, meanwhile, caplog, change, details
):
    kinto = racing
    path = URL if change == "record" else URL + "/attachment"
    meanwhile(kinto, lambda: kinto.app.delete(path, headers=ALICE))
    assert get(kinto, status=404).json["details"] == details
    assert "missing from the store" not in caplog.text


def test_a_download_racing_a_permission_change_is_checked_again(racing, meanwhile):
    kinto = racing
    kinto.app.patch_json(URL, {"permissions": {"read": ["system.Authenticated"]}}, headers=ALICE)
    meanwhile(kinto, lambda: kinto.upload(URL, V2, "v2.txt", permissions={"read": []}))
    get(kinto, headers=BOB, status=403)


def test_a_download_replaced_at_every_attempt_is_a_503(racing, meanwhile):
    kinto = racing
    versions = iter(range(100))
    meanwhile(kinto, lambda: kinto.upload(URL, b"v%d" % next(versions), "v.txt"), times=100)
    response = get(kinto, status=503)
    assert "Retry-After" in response.headers
    assert next(versions) == downloads.ATTEMPTS


def test_a_lost_blob_is_tried_twice_then_logged(racing, caplog):
    kinto = racing
    location = kinto.app.get(URL, headers=ALICE).json["data"]["attachment"]["location"]
    kinto.registry.attachment_store.delete(kinto.key_of(location))
    get(kinto, status=404)
    get(kinto, method="head", status=404)
    assert caplog.text.count("is missing from the store") == 2


def test_default_bucket_downloads_racing_a_replacement(tmp_path_factory, request, meanwhile):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.includes": "kinto.plugins.default_bucket kinto.plugins.flush kinto_attachment"},
    )
    url = "/v1/buckets/default/collections/tasks/records/r1"
    kinto.upload(url, V1, "v1.txt")
    meanwhile(kinto, lambda: kinto.upload(url, V2, "v2.txt"))
    assert kinto.app.get(url + "/attachment", headers=ALICE).body == V2


LOCAL = {"REMOTE_ADDR": "127.0.0.1"}


@pytest.mark.parametrize("grace", ["0", "60"])
def test_data_files_racing_an_upload_of_the_same_id(
    tmp_path_factory, request, backend, meanwhile, caplog, grace
):
    kinto = cached_app(
        backend,
        tmp_path_factory,
        request,
        **{"kinto.attachment.gc.replaced_grace_seconds": grace},
    )
    kinto.app.post("/v1/data/files?id=x", V1, extra_environ=LOCAL)
    meanwhile(kinto, lambda: kinto.app.post("/v1/data/files?id=x", V2, extra_environ=LOCAL))
    served = kinto.app.get("/v1/data/files/x", extra_environ=LOCAL).body
    assert served == (V2 if grace == "0" else V1)
    meanwhile(kinto, lambda: kinto.app.delete("/v1/data/files/x", extra_environ=LOCAL))
    kinto.app.get("/v1/data/files/x", extra_environ=LOCAL, status=404 if grace == "0" else 200)
    assert "missing from the store" not in caplog.text
    assert "does not match" not in caplog.text


def test_served_files_deleted_while_opened_are_a_plain_404(
    tmp_path_factory, request, meanwhile, caplog
):
    kinto = serving_app(tmp_path_factory, request)
    kinto.create_collection()
    meta = kinto.upload(URL, V1, "v1.txt").json
    path = served_path(meta["location"])
    meanwhile(kinto, lambda: kinto.app.delete(URL + "/attachment", headers=ALICE))
    kinto.app.get(path, status=404)
    assert "missing from the store" not in caplog.text  # A file deleted is no lost file.


def test_served_names_no_file_can_have_are_a_plain_404(tmp_path_factory, request, caplog):
    """A name over the file system's NAME_MAX, or a link loop, names no file: a ``404``, not
    the ``503`` of a failing store (which asks the client to come back)."""
    kinto = serving_app(tmp_path_factory, request)
    kinto.app.get("/v1/attachments/" + "a" * 300, status=404)
    os.symlink("loop", os.path.join(kinto.base_path, "loop"))
    kinto.app.get("/v1/attachments/loop", status=404)
    assert "Attachment storage failed" not in caplog.text


def test_data_files_if_range_date(tmp_path_factory, request, backend):
    kinto = cached_app(backend, tmp_path_factory, request)
    url = "/v1/data/files/x"

    def resume(status, body):
        date = kinto.app.get(url, extra_environ=LOCAL).headers["Last-Modified"]
        headers = {"Range": "bytes=500-", "If-Range": date}
        assert kinto.app.get(url, headers=headers, extra_environ=LOCAL, status=status).body == body

    kinto.app.post(url.replace("/x", "?id=x"), V1, extra_environ=LOCAL)
    resume(200, V1)  # A new id: an entry of that id may have been deleted in that second.
    next_second()
    kinto.app.post(url.replace("/x", "?id=x"), V2, extra_environ=LOCAL)
    resume(206, V2[500:])  # The version before is older than that second.


def test_if_match_names_the_version_a_download_continues(kinto_memory):
    """``If-Match`` (and ``If-Unmodified-Since``) are evaluated (RFC 9110 §13.2.2), as
    Kinto does for records: a client resuming with ``Range`` after the file was replaced got
    a 206 of the new file's bytes, to append to the old ones (found by review, 2026-12-05)."""
    kinto = kinto_memory
    kinto.create_collection()
    old = kinto.upload(URL, CONTENT, "v1.txt").json
    new = kinto.upload(URL, CONTENT[::-1], "v2.txt").json
    current = {**ALICE, "Range": "bytes=0-9", "If-Match": f'"x", "{new["hash"]}"'}
    assert (
        kinto.app.get(URL + "/attachment", headers=current, status=206).body == CONTENT[-10:][::-1]
    )
    kinto.app.get(URL + "/attachment", headers={**ALICE, "If-Match": "*"}, status=200)
    for stale in (
        {"If-Match": f'"{old["hash"]}"'},
        {"If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"},
    ):
        response = kinto.app.get(
            URL + "/attachment", headers={**ALICE, "Range": "bytes=100-", **stale}, status=412
        )
        assert (response.json["code"], response.json["errno"]) == (412, 114)
    later = email.utils.formatdate(time.time() + 60, usegmt=True)
    kinto.app.get(URL + "/attachment", headers={**ALICE, "If-Unmodified-Since": later}, status=200)


@pytest.mark.parametrize("blobs", ["local", "s3"])
def test_a_download_racing_the_reuse_of_its_name_serves_its_own_file(
    tmp_path_factory, request, meanwhile, blobs
):
    """``randomize = false``, no grace: a download reads its record, the owner replaces the
    file (deleted at commit), another user uploads a file of that name in a bucket the
    downloader may not read, then the download opens the name: the name stays taken a while
    (``state.replaced``), so it finds nothing there, reads the record again and serves its
    next version, never the other user's file (found by review, 2026-12-05)."""
    kinto = cached_app(
        "memory", tmp_path_factory, request, blobs=blobs, **{"kinto.attachment.randomize": "false"}
    )
    kinto.create_collection()
    first = kinto.upload(URL, b"alice's v1 " * 64, "name.txt").json
    taken = []

    def change():
        kinto.upload(URL, b"alice's v2 " * 64, "next.txt")
        kinto.app.put_json("/v1/buckets/bobs", {}, headers=BOB)
        kinto.app.put_json("/v1/buckets/bobs/collections/private", {}, headers=BOB)
        secret = "/v1/buckets/bobs/collections/private/records/secret"
        taken.append(kinto.upload(secret, b"bob's secret", "name.txt", headers=BOB).json)

    meanwhile(kinto, change)
    response = kinto.app.get(URL + "/attachment", headers=ALICE)
    assert taken[0]["location"] != first["location"]
    assert response.body == b"alice's v2 " * 64
    assert response.headers["ETag"] == f'"{hashlib.sha256(response.body).hexdigest()}"'


def _created_then_uploaded_in_one_second(kinto):
    """A record created (no file), then given its first file within the same second (a
    script's create-then-upload): its URL and the file's ``Last-Modified``."""
    for attempt in range(50):
        url = kinto.record_url(f"fresh{attempt}")
        created = kinto.app.put_json(url, {"data": {"title": "t"}}, headers=ALICE)
        kinto.upload(url, b"the only content this record ever had")
        before = created.json["data"]["last_modified"]
        after = kinto.app.get(url, headers=ALICE).json["data"]["last_modified"]
        if before // 1000 == after // 1000:
            break
    else:  # pragma: no cover
        pytest.fail("never within one second")
    response = kinto.app.get(url + "/attachment", headers=ALICE, status=200)
    return url, response.headers["Last-Modified"]


def test_a_first_file_in_the_second_its_record_was_created_is_304_and_resumes_by_etag(
    kinto_memory,
):
    """Found by review (2026-12-05).

    A record made by a ``PUT``, given its first file within the same second (a script's
    create-then-upload): no client can hold another file of that URL (it was a ``404``),
    yet ``If-Modified-Since`` with its very ``Last-Modified`` was a ``200`` for as long as
    the file stayed (the link's ``previous`` was the record's version without a file). A
    date used to resume (``If-Unmodified-Since`` with a ``Range``) is refused there, as an
    ``If-Range`` date is (another version had that second): clients resume with the
    ``ETag``."""
    kinto = kinto_memory
    kinto.create_collection()
    url, last_modified = _created_then_uploaded_in_one_second(kinto)
    attachment = url + "/attachment"
    revalidated = {**ALICE, "If-Modified-Since": last_modified}
    assert kinto.app.get(attachment, headers=revalidated, status="*").status_int == 304
    by_date = {**ALICE, "If-Unmodified-Since": last_modified, "Range": "bytes=4-"}
    assert kinto.app.get(attachment, headers=by_date, status="*").status_int == 412
    etag = kinto.app.get(attachment, headers=ALICE).headers["ETag"]
    by_etag = {**ALICE, "If-Match": etag, "Range": "bytes=4-"}
    assert kinto.app.get(attachment, headers=by_etag, status="*").status_int == 206


def test_a_record_deleted_and_made_again_in_one_second_gives_no_bytes_to_append(kinto_memory):
    """Found by review (2026-12-05).

    A record deleted, then made again by an upload under the same id within the same second:
    a client holding the old file resumes with ``If-Unmodified-Since`` and a ``Range`` of
    that second. It got the new file's bytes to append to the old one's: refused now (the
    new record's file is not known to have had the whole second). ``If-Modified-Since`` of
    that second still says ``304`` (nothing says the record had another file: its
    tombstone is not read by uploads, a query each; docs/consistency.rst)."""
    kinto = kinto_memory
    kinto.create_collection()
    for attempt in range(50):
        url = kinto.record_url(f"again{attempt}")
        kinto.upload(url, b"old content, version one")
        old = kinto.app.get(url + "/attachment", headers=ALICE, status=200)
        kinto.app.delete(url, headers=ALICE, status=200)
        kinto.upload(url, b"NEW CONTENT, version two")
        new = kinto.app.get(url + "/attachment", headers=ALICE, status=200)
        if old.headers["Last-Modified"] == new.headers["Last-Modified"]:
            break
    else:  # pragma: no cover
        pytest.fail("never within one second")
    held = old.headers["Last-Modified"]
    resumed = kinto.app.get(
        url + "/attachment",
        headers={**ALICE, "If-Unmodified-Since": held, "Range": "bytes=4-"},
        status="*",
    )
    assert resumed.status_int == 412, resumed.body[:30]


COLLECTION = "/buckets/blog/collections/articles"


@pytest.fixture
def collection(kinto_memory):
    kinto_memory.create_collection()
    return kinto_memory


@pytest.fixture
def presigned_s3(tmp_path_factory, request):
    return presigned_app(tmp_path_factory, request)


def _sha(content):
    return hashlib.sha256(content).hexdigest()


def test_a_replacement_racing_a_download_of_a_file_under_an_older_url_never_mixes_versions(
    collection, monkeypatch
):
    """Found by review (2026-12-05).

        Docs (api.rst, consistency.rst): "A download is one version, whole, even while the file is
    replaced: the one it started with, or the new one"; the ``ETag`` is the sha256 of the
    content served. migrating.rst: "a record whose link names its file under another, older,
    URL [...] keeps its link" (a ``base_url`` changed since, kinto-attachment's bare keys):
    such records are served through their link.

    It was: ``views/attachment.py`` ``_download`` reads the record (file V1: size, hash,
    filename), then ``_key_of`` reads the links in another statement. When the record's
    ``location`` is not under ``base_url``, no link's URL matches it and ``key_for_url``
    gives nothing, so ``_key_of`` takes ``found[-1]["key"]`` (attachment.py ``_key_of``),
    whatever link that is. A replacement committed between the two reads (any node; READ
    COMMITTED on PostgreSQL, no isolation at all on memory) leaves only V2's link: the answer
    is V2's bytes under V1's ``ETag``, ``Content-Length`` and filename. A cache keeps V2 under
    V1's strong validator (and ranges of it get spliced with V1's); with sizes that differ
    the body does not even match its ``Content-Length``.

    Fixed: never take a link that cannot be tied to the record's file: store the hash (or the
    ``location``) in each link and pick the link whose hash is the metadata's; with none,
    raise ``downloads.Missing`` so that ``serve`` reads the record again.
    """
    kinto = collection
    meta = kinto.upload(URL, V1, "v1.txt").json
    storage = kinto.registry.storage
    # The record as a server whose base_url has changed since it stored this file sees it.
    record = storage.get(resource_name="record", parent_id=COLLECTION, object_id="r1")
    key = kinto.key_of(meta["location"])
    record["attachment"]["location"] = "https://old-cdn.example.com/files/" + key
    storage.update(resource_name="record", parent_id=COLLECTION, object_id="r1", obj=record)
    assert kinto.app.get(URL + "/attachment", headers=ALICE).body == V1  # Served by its link.

    real, reader, replaced = links.of_record, threading.get_ident(), []

    def of_record(*args, **kwargs):
        # Another request replaces the file between the record's read and the links' read.
        if threading.get_ident() == reader and not replaced:
            replaced.append(True)
            writer = threading.Thread(target=lambda: kinto.upload(URL, V2, "v2.txt"))
            writer.start()
            writer.join(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(links, "of_record", of_record)
    response = kinto.app.get(URL + "/attachment", headers=ALICE, status="*")
    assert replaced
    versions = {f'"{_sha(V1)}"': "V1", f'"{_sha(V2)}"': "V2", V1: "V1", V2: "V2"}
    etag, body = (versions.get(response.headers.get("ETag")), versions.get(response.body))
    # Observed: the ETag (and Content-Length, filename v1.txt) of V1, the bytes of V2.
    assert etag == body, f"the ETag of {etag} with the bytes of {body}"


def test_presigned_downloads_keep_the_objects_private(presigned_s3):
    """Found by review (2026-12-05).

        Docs (security.rst): "For private files, serve no ``base_url`` (keep the bucket private)
    and let clients download through ``{record-url}/attachment``, with
    ``aws.presigned_downloads`` on S3"; caching.rst: "with no public location (private
    bucket) [...] a reader whose permission is revoked gets ``401``/``403`` at the next
    request".

    It was: ``aws.acl`` defaults to ``public-read`` (storage/s3/options.py ``acl``) whatever
    ``presigned_downloads`` says, and nothing warns: every object of a private record is
    stored with an ``AllUsers: READ`` grant. A private bucket policy does not undo an object
    ACL (on S3 without "bucket owner enforced", MinIO, Ceph...): whoever has seen a
    ``location`` or a ``307``'s URL (which names the key in clear) reads the file without
    signature, for ever, permission revoked or not. Same on GCS (``gcloud.acl =
    publicRead`` with ``signed_downloads``).

    Fixed: with ``presigned_downloads`` (``signed_downloads``) on, default to no ACL (the
    bucket's), or refuse/warn at start-up on a public ACL; say in security.rst that
    ``aws.acl =`` (``gcloud.acl =``) is part of keeping files private.
    """
    kinto = presigned_s3
    meta = kinto.upload(URL, b"private content", "secret.pdf", permissions={"read": []}).json
    kinto.app.get(URL + "/attachment", headers=ALICE, status=307)  # Private: a signed URL.
    client = s3_client(kinto.registry.attachment_store.client.meta.endpoint_url)
    grants = client.get_object_acl(Bucket=kinto.bucket, Key=kinto.key_of(meta["location"]))
    public = [
        grant
        for grant in grants["Grants"]
        if grant["Grantee"].get("URI", "").endswith(("/AllUsers", "/AuthenticatedUsers"))
    ]
    assert public == [], f"the private record's object is readable by anyone: {public}"


def test_a_resume_with_if_match_is_streamed_not_redirected_to_s3(presigned_s3):
    """Found by review (2026-12-05).

        Docs (api.rst, consistency.rst): a download's ``If-Match`` (strong, the sha256 ``ETag``)
    is how a client resumes a download with ``Range`` without getting another version's
    bytes; "On S3 with ``aws.presigned_downloads = true`` [...] the reply is a ``307`` to a
    short-lived signed URL instead".

    It was: ``downloads.respond`` checks ``If-Match`` against the sha256 and answers ``307``;
    the client follows it with the same request headers (as HTTP clients do on a ``307``),
    and S3 compares ``If-Match`` with its own ETag (an MD5, or a multipart digest), which is
    never the sha256: ``412`` for the very version the client asked for. A client following
    the documented way to resume can never resume (and ``If-Range`` never matches at S3
    either: every resume downloads the whole file again).

    Fixed: when the request has validators that only Kinto knows (``If-Match``, ``If-Range``,
    ``If-Unmodified-Since`` together with ``Range``), having checked them, stream the range
    instead of redirecting (or redirect to a URL signed with S3's own ``If-Match``... which
    clients' headers would still override: streaming is the safe answer).
    """
    kinto = presigned_s3
    meta = kinto.upload(URL, CONTENT, "data.pdf").json
    resume = {"Range": "bytes=100-199", "If-Match": f'"{meta["hash"]}"'}
    response = kinto.app.get(URL + "/attachment", headers={**ALICE, **resume}, status="*")
    if response.status_int == 307:
        followed = requests.get(response.headers["Location"], headers=resume, timeout=10)
        status, body = followed.status_code, followed.content
    else:
        status, body = response.status_int, response.body
    assert (status, body) == (206, CONTENT[100:200]), (
        f"resuming the current version with its ETag: {status}"
    )


def test_get_and_head_of_an_empty_file_whose_blob_is_lost_agree(collection, caplog):
    """Found by review (2026-12-05).

        Docs (consistency.rst): "Only a blob still named by the record read again is lost:
    ``404`` and an error logged"; RFC 9110 §9.3.2: ``HEAD`` answers what ``GET`` would.

    It was: ``downloads.respond`` opens the blob only when there is something to send
    (``elif length:``): for a record whose file is empty, a ``GET`` never looks at the store
    and answers ``200`` with the empty file's ``ETag``, while ``HEAD`` checks the blob
    (``_require_blob``) and answers ``404`` (and logs the loss). The ``GET`` hides a lost blob.

    Fixed: in ``respond``, ``_require_blob`` for a ``GET`` of zero bytes too (as for ``HEAD``).
    """
    kinto = collection
    meta = kinto.upload(URL, b"", "empty.txt").json
    kinto.registry.attachment_store.delete(kinto.key_of(meta["location"]))
    got = kinto.app.get(URL + "/attachment", headers=ALICE, status="*")
    headed = kinto.app.head(URL + "/attachment", headers=ALICE, status="*")
    assert headed.status_int == 404
    assert got.status_int == headed.status_int, (got.status, got.headers.get("ETag"))


@pytest.mark.parametrize("header", ["bytes=1 0-2 0", "bytes=0-1 5", "bytes= 1 0 -"])
def test_spaces_inside_range_positions_do_not_make_another_range(collection, header):
    """Found by review (2026-12-05).

        RFC 9110 §14.1.2: ``int-range = first-pos "-" [ last-pos ]``, digits only (OWS only
    around list commas); a server ignores an invalid ``Range`` (``200``) or refuses it.
    conditions.py's docstring: "a malformed header [...] answered with the whole content".

    It was: ``conditions.requested_range`` deletes every space before matching
    (``.replace(" ", "")``): ``bytes=1 0-2 0`` is served as ``bytes=10-20`` (``206``), a
    range the client never wrote (nginx, in front per config/nginx.conf, reads ``1`` then
    refuses: a proxy and the origin disagree on the bytes of one request).

    Fixed: strip only the OWS around commas (or none), and let the regex refuse the rest.
    """
    kinto = collection
    kinto.upload(URL, CONTENT, "data.pdf", mimetype="application/pdf")
    response = kinto.app.get(URL + "/attachment", headers={**ALICE, "Range": header}, status="*")
    assert response.status_int == 200, (response.status, response.headers.get("Content-Range"))
    assert response.body == CONTENT


def test_precedence_of_download_preconditions(collection):
    """Held against a review (2026-12-05).

    RFC 9110 §13.2.2's order on ``{record}/attachment``: ``If-Match`` (strong, weak tags never
    match) before ``If-None-Match`` before ``Range``; ``If-Unmodified-Since`` only
    without ``If-Match``; ``If-None-Match`` hides ``If-Modified-Since``; ``If-Range`` with a
    weak tag, another tag or garbage sends the whole file, even for an unsatisfiable range;
    ``HEAD`` has the status and headers of ``GET``."""
    kinto = collection
    meta = kinto.upload(URL, CONTENT, "data.pdf", mimetype="application/pdf").json
    etag = f'"{meta["hash"]}"'
    modified = kinto.app.get(URL + "/attachment", headers=ALICE).headers["Last-Modified"]
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    cases = [
        ({"If-Match": f"W/{etag}"}, 412),
        ({"If-Match": '"x"', "If-None-Match": etag}, 412),
        ({"If-Match": etag, "If-None-Match": etag}, 304),
        ({"If-Match": etag, "If-Unmodified-Since": old}, 200),
        ({"If-Unmodified-Since": old, "If-None-Match": etag}, 412),
        ({"If-None-Match": '"x"', "If-Modified-Since": modified}, 200),
        ({"If-None-Match": etag, "Range": "bytes=0-1"}, 304),
        ({"Range": "bytes=0-1", "If-Range": f"W/{etag}"}, 200),
        ({"Range": "bytes=0-1", "If-Range": "garbage"}, 200),
        ({"Range": "bytes=99999-", "If-Range": '"x"'}, 200),
        ({"Range": "bytes=99999-", "If-Range": etag}, 416),
        ({"Range": "bytes=0-1", "If-Range": etag, "If-Match": etag}, 206),
        ({"Range": "BYTES=0-1"}, 200),
        ({"Range": "bytes=0-1,"}, 200),
    ]
    for headers, status in cases:
        got = kinto.app.get(URL + "/attachment", headers={**ALICE, **headers}, status="*")
        headed = kinto.app.head(URL + "/attachment", headers={**ALICE, **headers}, status="*")
        assert (got.status_int, headed.status_int) == (status, status), headers
        for name in ("ETag", "Content-Length", "Content-Range", "Cache-Control", "Vary"):
            if status != 412 or name != "Content-Length":
                assert got.headers.get(name) == headed.headers.get(name), (headers, name)


def test_hostile_filenames_make_one_safe_content_disposition(collection):
    """Held against a review (2026-12-05).

    Names sent through tus metadata (any bytes but NUL): quotes, backslashes, ``%``,
    ``;``, CR/LF, escapes, bidi overrides, path separators and non-ASCII give one ASCII header
    line, a printable quoted fallback and an RFC 5987 ``filename*`` that decodes to the name as
    uploaded; an HTML type is never ``inline``, and always ``nosniff``."""
    kinto = collection
    names = [
        'a"b\\c%41;d.txt',
        "r\u00e9sum\u00e9 \u202egnp.txt",
        "x\r\nSet-Cookie: a=b\x1b[31m.txt",
        "../../e.txt",
    ]
    for index, name in enumerate(names):
        url = kinto.record_url(f"n{index}")
        for mimetype in ("text/plain", "text/html"):
            meta = ",".join(
                f"{k} {base64.b64encode(v.encode()).decode()}"
                for k, v in {"filename": name, "filetype": mimetype}.items()
            )
            headers = {
                **ALICE,
                "Tus-Resumable": "1.0.0",
                "Upload-Length": "1",
                "Upload-Metadata": meta,
                "Content-Type": "application/offset+octet-stream",
            }
            kinto.app.post(url + "/attachment/uploads", b"x", headers=headers, status=201)
            served = kinto.app.get(url + "/attachment", headers=ALICE)
            header = served.headers["Content-Disposition"]
            assert "\r" not in header and "\n" not in header and header.isascii(), header
            kind, fallback, encoded = header.split("; ", 2)
            assert kind == ("inline" if mimetype == "text/plain" else "attachment"), header
            assert fallback.startswith('filename="') and fallback.count('"') == 2, header
            assert unquote(encoded.removeprefix("filename*=UTF-8''")) == name
            assert served.headers["X-Content-Type-Options"] == "nosniff"
