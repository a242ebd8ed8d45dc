"""Refused, malformed and failing uploads: a clear Kinto error, nothing left, nothing lost."""

import pytest
import webob
from kinto.core.errors import ERRORS

from kinto_attachment.protocols import multipart
from kinto_attachment.state import links
from kinto_attachment.storage import StorageUnavailable
from kinto_attachment.views.attachment import FRAMING_ROOM

from ..conftest import ALICE, PREVIOUS_URL, cached_app


URL = PREVIOUS_URL


def raw_post(kinto, body, content_type=None, status=400, headers=ALICE, boundary="XyZ"):
    content_type = content_type or f"multipart/form-data; boundary={boundary}"
    return kinto.app.post(
        URL + "/attachment",
        body,
        headers={**headers, "Content-Type": content_type},
        status=status,
    )


def form(*parts, boundary="XyZ", end=True):
    chunks = []
    for headers, content in parts:
        chunks.append(f"--{boundary}\r\n{headers}\r\n\r\n".encode() + content + b"\r\n")
    if end:
        chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


FILE = ('Content-Disposition: form-data; name="attachment"; filename="new.txt"', b"new bytes")


@pytest.mark.parametrize(
    "params",
    [
        {"data": "{not json"},
        {"data": "[1, 2]"},
        {"permissions": '{"read": "not a list"}'},
        {"unknown": "field"},
    ],
    ids=["bad-json", "not-an-object", "bad-permissions", "unknown-field"],
)
def test_bad_form_fields_leave_previous_attachment_intact(with_previous, params):
    kinto = with_previous
    response = kinto.app.post(
        URL + "/attachment",
        params=list(params.items()),
        upload_files=[("attachment", "new.txt", b"new bytes")],
        headers=ALICE,
        status=400,
    )
    assert response.json["code"] == 400
    assert response.json["errno"] in (ERRORS.INVALID_POSTED_DATA.value, 107)


def test_extension_not_allowed(with_previous):
    response = with_previous.upload(URL, b"MZ", "virus.exe", status=400)
    assert "File extension is not allowed" in response.json["message"]


def test_file_too_large_midstream_is_413(backend, tmp_path_factory, request):
    kinto = cached_app(
        backend, tmp_path_factory, request, **{"kinto.attachment.max_size_bytes": "10"}
    )
    kinto.create_collection()
    kinto.upload(URL, b"0123456789", "ten.txt")
    previous = kinto.files()
    response = kinto.upload(URL, b"0123456789A", "eleven.txt", status=413)
    assert response.json["errno"] == ERRORS.REQUEST_TOO_LARGE.value
    assert response.json["message"] == "File size exceeds the limit (10 bytes)."
    assert kinto.files() == previous


def test_content_length_too_large_is_refused_before_reading(tmp_path_factory, request):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.max_size_bytes": "10"}
    )
    kinto.create_collection()

    class Unreadable:
        def read(self, *args):
            raise AssertionError("the body must not be read")

    # webtest would replace the body: call the WSGI app with a body that cannot be read.
    wsgi_request = webob.Request.blank(
        URL + "/attachment",
        method="POST",
        headers={**ALICE, "Content-Type": "multipart/form-data; boundary=XyZ"},
    )
    wsgi_request.environ["wsgi.input"] = Unreadable()
    wsgi_request.environ["CONTENT_LENGTH"] = str(10 + multipart.FIELDS_LIMIT + FRAMING_ROOM + 1)
    response = wsgi_request.get_response(kinto.app.app)
    assert response.status_code == 413
    assert response.json["errno"] == ERRORS.REQUEST_TOO_LARGE.value
    assert kinto.files() == []


def test_per_collection_limit_overrides_global(backend, tmp_path_factory, request):
    kinto = cached_app(
        backend,
        tmp_path_factory,
        request,
        **{
            "kinto.attachment.max_size_bytes": "5",
            "kinto.attachment.resources.blog.articles.max_size_bytes": "0",
        },
    )
    kinto.create_collection("blog", "articles")
    kinto.create_collection("blog", "other")
    kinto.upload(URL, b"much more than five bytes")
    kinto.upload(kinto.record_url(collection="other"), b"123456", status=413)


@pytest.mark.parametrize(
    "body,content_type,message",
    [
        (form(FILE), "application/json", "multipart/form-data"),
        (form(FILE), "multipart/form-data", "Invalid boundary in multipart form: ''"),
        (form(FILE, end=False), None, "truncated"),
        (form(FILE)[:40], None, "truncated"),
        (b"garbage without any boundary", None, "malformed"),
        (form(('Content-Disposition: form-data; name="attachment"', b"x")), None, "Filename"),
        (form(FILE, FILE), None, "only one file"),
        (form(('Content-Disposition: form-data; name="data"', b"{}")), None, "missing"),
        (form(("Content-Disposition: form-data", b"x"), FILE), None, "name"),
        (form(("Content-Type: text/plain", b"x"), FILE), None, "name"),
        (
            form(('Content-Disposition: form-data; name="data"; filename="d.json"', b"{}"), FILE),
            None,
            "should be passed as form data, not files",
        ),
        (
            form(
                ('Content-Disposition: form-data; name="data"', b"{}"),
                ('Content-Disposition: form-data; name="data"', b"{}"),
                FILE,
            ),
            None,
            "twice",
        ),
        (b"--XyZ\r\nno-colon-header\r\n\r\nx\r\n--XyZ--\r\n", None, "malformed"),
    ],
    ids=[
        "not-multipart",
        "no-boundary",
        "no-closing-boundary",
        "cut-in-headers",
        "no-boundary-in-body",
        "file-without-filename",
        "two-files",
        "no-file",
        "disposition-without-name",
        "no-disposition",
        "data-as-file",
        "data-twice",
        "bad-header",
    ],
)
def test_malformed_multipart_is_400_and_leaves_nothing(with_previous, body, content_type, message):
    response = raw_post(with_previous, body, content_type=content_type)
    assert response.json["code"] == 400
    assert message in response.json["message"]


def test_oversized_form_fields_are_refused(with_previous):
    big = b'{"x": "' + b"a" * multipart.FIELDS_LIMIT + b'"}'
    body = form(('Content-Disposition: form-data; name="data"', big), FILE)
    response = raw_post(with_previous, body)
    assert "form fields exceed" in response.json["message"]


def test_refused_record_write_deletes_the_new_blob(with_previous, monkeypatch):
    # The record view refuses the write (bad permissions): the blob, already committed by
    # then, must go with the rolled back transaction.
    kinto = with_previous
    store = kinto.registry.attachment_store
    stage, committed = store.stage, []

    def spied_stage(*args, **kwargs):
        staged = stage(*args, **kwargs)
        # Local disk's uploads commit unsettled (their fsync runs with the transaction).
        for name in ("commit", "commit_unsettled"):
            commit = getattr(staged, name, None)

            def spied_commit(*a, _commit=commit, **kw):
                result = _commit(*a, **kw)
                committed.append(result[0] if isinstance(result, tuple) else result)
                return result

            if commit is not None:
                monkeypatch.setattr(staged, name, spied_commit)
        return staged

    monkeypatch.setattr(store, "stage", spied_stage)
    before = kinto.files()
    response = kinto.upload(URL, b"new", "new.txt", permissions={"read": "everyone"}, status=400)
    assert response.json["details"][0]["location"] == "body", response.json
    assert "permissions" in response.json["details"][0]["name"], response.json
    # The refusal came after the new blob was committed, and that blob is gone.
    assert len(committed) == 1 and committed[0] not in before, committed
    assert not store.exists(committed[0])
    assert kinto.files() == before


@pytest.mark.postgresql
def test_failing_transaction_deletes_the_new_blob_and_keeps_the_old(
    tmp_path_factory, request, monkeypatch
):
    # Needs a transactional backend: the record write is rolled back with the failure.
    kinto = cached_app("postgresql", tmp_path_factory, request)
    kinto.create_collection()
    meta = kinto.upload(URL, b"previous", "previous.txt").json
    record = kinto.app.get(URL, headers=ALICE).json["data"]

    def explode(*args, **kwargs):
        raise RuntimeError("links are down")

    monkeypatch.setattr(links, "add", explode)
    kinto.upload(URL, b"new", "new.txt", status=500)
    assert kinto.app.get(URL, headers=ALICE).json["data"] == record
    assert kinto.files() == [kinto.key_of(meta["location"])]


@pytest.mark.parametrize("route", ["attachment", "data_files"])
def test_a_file_the_disk_cannot_make_durable_is_503_and_leaves_nothing(
    backend, tmp_path_factory, request, monkeypatch, route
):
    """The fsync of an upload's file runs while its record is written (local disk); its
    failure fails the transaction at commit: no record change, no entry, no file."""
    from kinto_attachment.storage.local import store as local

    kinto = cached_app(backend, tmp_path_factory, request)
    kinto.create_collection()
    previous = kinto.upload(URL, b"previous content", "previous.txt").json
    record = kinto.app.get(URL, headers=ALICE).json["data"]
    fsync, failures = local.os.fsync, [OSError(5, "Input/output error")]

    def failing_fsync(fd):  # The first one: the new file's.
        if failures:
            raise failures.pop()
        fsync(fd)

    monkeypatch.setattr(local.os, "fsync", failing_fsync)
    local_client = {"REMOTE_ADDR": "127.0.0.1"}
    if route == "attachment":
        response = kinto.upload(URL, b"new", "new.txt", status=503)
    else:
        response = kinto.app.post("/v1/data/files", b"new", extra_environ=local_client, status=503)
    assert response.json["errno"] == ERRORS.BACKEND.value and not failures
    assert kinto.app.get(URL, headers=ALICE).json["data"] == record
    listed = kinto.app.get("/v1/data/files", extra_environ=local_client).json
    assert listed == []
    assert kinto.files() == [kinto.key_of(previous["location"])]


def test_store_failure_midway_is_503_and_leaves_nothing(with_previous, monkeypatch):
    store = with_previous.registry.attachment_store
    stage = store.stage

    def failing_stage(key, content_type=None, **options):
        staged = stage(key, content_type, **options)
        staged.write(b"some bytes went through")

        def fail(chunk):
            raise StorageUnavailable("No space left on device")

        monkeypatch.setattr(staged, "write", fail)
        return staged

    monkeypatch.setattr(store, "stage", failing_stage)
    response = with_previous.upload(URL, b"new", "new.txt", status=503)
    assert response.json["errno"] == ERRORS.BACKEND.value
    assert response.headers["Retry-After"]
