"""/data/files and downloads against an attacker and a careless client: odd headers, ids,
lengths and settings get a 4xx or a refusal at start-up, never a 5xx nor a damaged file."""

import io
import threading
import time

import pytest
import webob
from pyramid.exceptions import ConfigurationError

from kinto_attachment.data_files import options
from kinto_attachment.data_files.limiter import TransferLimiter
from kinto_attachment.state import data_file_entries

from ..conftest import ALICE, cached_app
from .test_data_files import LOCAL, PDF, get, post


#: A Content-Type on which a backtracking parser spent seconds (each further "; " doubled).
REDOS_TYPE = "a/b" + "; " * 24 + '"'


def raw(kinto, path, method="GET", body=None, **environ):
    wsgi_request = webob.Request.blank(path, method=method, environ=dict(LOCAL))
    wsgi_request.environ.update(environ)
    if body is not None:
        wsgi_request.environ["wsgi.input"] = io.BytesIO(body)
    return wsgi_request.get_response(kinto.app.app)


def test_a_range_from_zero_is_the_whole_file(kinto_memory):
    """``Range: bytes=0-`` (curl -C -, browsers' media players) is every byte (it was read
    as ``bytes=-0``: a 206 of none)."""
    post(kinto_memory, query="?id=r")
    response = get(kinto_memory, "r", status=(200, 206), Range="bytes=0-")
    assert response.body == PDF
    head = kinto_memory.app.head(
        "/v1/data/files/r", headers={"Range": "bytes=0-"}, extra_environ=LOCAL, status="*"
    )
    assert head.headers["Content-Length"] == str(len(PDF))


def test_a_range_from_zero_of_a_record_attachment_is_the_whole_file(kinto_memory):
    kinto_memory.create_collection()
    url = kinto_memory.record_url()
    kinto_memory.upload(url, b"0123456789", "d.txt")
    response = kinto_memory.app.get(
        url + "/attachment", headers={**ALICE, "Range": "bytes=0-"}, status=(200, 206)
    )
    assert response.body == b"0123456789"


def test_an_invalid_content_type_is_no_type_on_data_files(kinto_memory):
    post(kinto_memory, b"x", query="?id=t", **{"Content-Type": REDOS_TYPE})
    assert get(kinto_memory, "t").headers["Content-Type"] == "application/octet-stream"


def test_an_invalid_content_type_is_no_type_on_attachment_uploads(kinto_memory):
    kinto_memory.create_collection()
    meta = kinto_memory.upload(kinto_memory.record_url(), b"x", "x.txt", mimetype=REDOS_TYPE)
    assert meta.json["mimetype"] == "text/plain"


@pytest.mark.parametrize(
    "date",
    [
        "Mon, 01 Jan 99999 00:00:00 GMT",
        "Mon, 01 Jan 10000 00:00:00 GMT",
        "Fri, 31 Dec 9999 23:59:59 -2359",
    ],
)
def test_an_if_modified_since_beyond_9999_is_no_500(kinto_memory, date):
    post(kinto_memory, query="?id=d")
    response = get(kinto_memory, "d", status="*", **{"If-Modified-Since": date})
    assert response.status_code in (200, 304), response.status


def test_an_id_with_a_trailing_newline_is_refused(kinto_memory):
    post(kinto_memory, query="?id=abc%0A", status=400)


@pytest.mark.parametrize("value", ["-1", "abc"])
def test_a_content_length_that_is_no_number_is_refused_and_keeps_the_file(kinto_memory, value):
    """Behind a server that passes such a header on (waitress and gunicorn refuse it), it
    made an empty body that replaced the file; ``-1`` reserved -1 byte of the budget."""
    post(kinto_memory, b"keep me", query="?id=n")
    response = raw(kinto_memory, "/v1/data/files?id=n", "POST", b"new", CONTENT_LENGTH=value)
    assert response.status_code == 400
    assert get(kinto_memory, "n").body == b"keep me"


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_non_finite_wait_settings_are_refused(value):
    for name in ("transfer_wait_seconds", "transfer_idle_seconds"):
        with pytest.raises(ConfigurationError):
            options.from_settings({name: value})


def test_an_infinite_wait_waits():
    limiter = TransferLimiter(100, wait_seconds=float("inf"))
    held = limiter.acquire(80)
    outcome = {}

    def run():
        try:
            outcome["hold"] = limiter.acquire(50)
        except Exception as error:  # noqa: BLE001
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(1)
    held.release()
    thread.join(10)
    assert "error" not in outcome, outcome["error"]


def test_truncated_reupload_keeps_the_old_file(kinto_memory):
    post(kinto_memory, b"old content", query="?id=k")
    response = raw(kinto_memory, "/v1/data/files?id=k", "POST", b"only", CONTENT_LENGTH="100")
    assert response.status_code == 400
    assert get(kinto_memory, "k").body == b"old content"
    assert len(kinto_memory.files()) == 1
    assert kinto_memory.registry.transfer_limiter.in_use == 0


def test_oversized_chunked_reupload_keeps_the_old_file(tmp_path_factory, request):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.max_size_bytes": "10"}
    )
    post(kinto, b"old", query="?id=k")
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True}
    response = raw(kinto, "/v1/data/files?id=k", "POST", b"x" * 50, **chunked)
    assert response.status_code == 413
    assert get(kinto, "k").body == b"old"
    assert len(kinto.files()) == 1
    assert kinto.registry.transfer_limiter.in_use == 0


def test_expired_file_is_404_for_get_range_and_head(kinto_memory, monkeypatch):
    post(kinto_memory, b"short", query="?id=e&ttl=1000")
    later = data_file_entries.msec_time() + 2000
    monkeypatch.setattr(data_file_entries, "msec_time", lambda: later)
    get(kinto_memory, "e", status=404)
    get(kinto_memory, "e", status=404, Range="bytes=0-1")
    kinto_memory.app.head("/v1/data/files/e", extra_environ=LOCAL, status=404)


@pytest.mark.parametrize("value", ['"', "W/", "*, x", '"a" "b"', "," * 10000])
def test_odd_if_none_match(kinto_memory, value):
    post(kinto_memory, query="?id=d")
    response = get(kinto_memory, "d", status="*", **{"If-None-Match": value})
    assert response.status_code in (200, 304), response.status


@pytest.mark.parametrize("date", ["Mon, 01 Jan 99999 00:00:00 GMT", "garbage"])
def test_odd_if_range(kinto_memory, date):
    post(kinto_memory, query="?id=d")
    response = get(kinto_memory, "d", status="*", Range="bytes=1-2", **{"If-Range": date})
    assert response.status_code == 200 and response.body == PDF


@pytest.mark.parametrize("query", ["?id=%FF", "?ttl=%FF", "?id=a%00b", "?%FF=1"])
def test_bad_query_encoding_is_4xx(kinto_memory, query):
    assert 400 <= post(kinto_memory, query=query, status="*").status_code < 500


@pytest.mark.parametrize("path", ["/v1/data/files/%FF", "/v1/data/files/a%00", "/data/files/%FF"])
def test_bad_path_encoding_is_4xx(kinto_memory, path):
    for method in ("GET", "HEAD", "DELETE"):
        response = kinto_memory.app.request(
            path, method=method, environ=dict(LOCAL), status="*", expect_errors=True
        )
        assert response.status_code < 500, (method, response.status)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "POST", "TRACE"])
def test_methods_not_served_are_no_5xx(kinto_memory, method):
    for path in ("/v1/data/files/x", "/data/files/x"):
        response = kinto_memory.app.request(
            path, method=method, environ=dict(LOCAL), status="*", expect_errors=True
        )
        assert 300 <= response.status_code < 500, (path, response.status)


@pytest.mark.parametrize(
    "disposition",
    [
        'attachment; filename="a.' + "x" * 400 + '"',
        'attachment; filename="' + "y" * 5000 + '.pdf"',
        "attachment; filename*0*=UTF-8''a%; filename*1=b",
        "attachment; filename*=''",
        'attachment; filename="\\"',
        "attachment; filename*=UTF-8'en'%E2%82",
    ],
)
def test_odd_content_disposition(kinto_memory, disposition):
    response = post(
        kinto_memory, b"z", query="?id=cd", status="*", **{"Content-Disposition": disposition}
    )
    assert response.status_code in (200, 400), response.status
    if response.status_code == 200:
        assert get(kinto_memory, "cd").body == b"z"


def test_a_record_writer_cannot_plant_a_type_that_hangs_readers(kinto_memory):
    kinto_memory.create_collection()
    url = kinto_memory.record_url()
    meta = kinto_memory.upload(url, b"hello", "hello.txt").json
    evil = {"attachment": {**meta, "mimetype": REDOS_TYPE}}
    kinto_memory.app.patch_json(url, {"data": evil}, headers=ALICE, status="*")
    started = time.monotonic()
    kinto_memory.app.get(url + "/attachment", headers=ALICE, status="*")
    assert time.monotonic() - started < 1
