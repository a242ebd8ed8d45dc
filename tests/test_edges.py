"""Less travelled paths: heartbeat failures, cleanup failures, unusual but valid requests."""

import base64
import hashlib
import io
import json
import logging
from pathlib import Path

import pytest
import webob

import kinto_attachment
from kinto_attachment.storage.local import LocalStaged
from kinto_attachment.uploads import lifecycle

from .conftest import ALICE, build_settings, cached_app, make_app


URL = "/v1/buckets/blog/collections/articles/records/r1"


def test_heartbeat_reports_a_failing_store(kinto_memory, monkeypatch, caplog):
    def fail(self, chunk):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(LocalStaged, "write", fail)
    with caplog.at_level(logging.ERROR):
        response = kinto_memory.app.get("/v1/__heartbeat__", status=503)
    assert response.json["attachments"] is False
    assert "heartbeat failed" in caplog.text
    assert kinto_memory.files() == []


def test_heartbeat_of_a_readonly_server_does_not_write(tmp_path_factory, request, monkeypatch):
    kinto = cached_app("memory", tmp_path_factory, request, **{"kinto.readonly": "true"})
    monkeypatch.setattr(LocalStaged, "write", None)  # Any write would crash.
    assert kinto.app.get("/v1/__heartbeat__").json["attachments"] is True


def test_a_blob_that_cannot_be_deleted_is_logged_not_raised(kinto_memory, monkeypatch, caplog):
    kinto = kinto_memory
    kinto.create_collection()
    kinto.upload(URL, b"first")

    def refuse(key):
        raise PermissionError(f"cannot delete {key}")

    monkeypatch.setattr(kinto.registry.attachment_store, "delete_many", refuse)
    with caplog.at_level(logging.ERROR, logger=lifecycle.__name__):
        kinto.upload(URL, b"second")
    assert "Cleanup failed: refuse" in caplog.text
    assert len(kinto.files()) == 2  # Left for garbage collection.


def test_json_patch_of_the_attachment_is_refused(kinto):
    kinto.create_collection()
    meta = kinto.upload(URL).json
    headers = {**ALICE, "Content-Type": "application/json-patch+json"}
    for path in ("/data/attachment", "/data/attachment/location"):
        ops = [{"op": "replace", "path": path, "value": "x"}]
        kinto.app.patch_json(URL, ops, headers=headers, status=400)
    kinto.app.patch_json(URL, [{"op": "add", "path": "/data/t", "value": 1}], headers=headers)
    record = kinto.app.get(URL, headers=ALICE).json["data"]
    assert (record["attachment"], record["t"]) == (meta, 1)


def test_record_writes_without_json_objects_are_left_to_kinto(kinto_memory):
    kinto = kinto_memory
    kinto.create_collection()
    headers = {**ALICE, "Content-Type": "application/json"}
    kinto.app.put(URL, "{not json", headers=headers, status=400)
    kinto.app.put_json(URL, {"data": "nope"}, headers=ALICE, status=400)


def test_latin1_filename_is_kept(kinto_memory):
    kinto = kinto_memory
    kinto.create_collection()
    body = (
        b'--B\r\nContent-Disposition: form-data; name="attachment"; filename="caf\xe9.txt"\r\n'
        b"\r\ncoffee\r\n--B--\r\n"
    )
    response = kinto.app.post(
        URL + "/attachment",
        body,
        headers={**ALICE, "Content-Type": "multipart/form-data; boundary=B"},
        status=201,
    )
    assert response.json["filename"] == "café.txt"


def test_empty_filename_is_refused(kinto_memory):
    kinto_memory.create_collection()
    response = kinto_memory.upload(URL, b"x", "", status=400)
    assert "Filename is required" in response.json["message"]


def test_body_without_content_length_is_read_to_the_end(kinto_memory):
    # A chunked request: no Content-Length, the server ends the body (wsgi.input_terminated).
    kinto = kinto_memory
    kinto.create_collection()
    body = b'--B\r\nContent-Disposition: form-data; name="attachment"; filename="a.txt"\r\n\r\n'
    body += b"chunked!\r\n--B--\r\n"
    wsgi_request = webob.Request.blank(
        URL + "/attachment",
        method="POST",
        headers={**ALICE, "Content-Type": "multipart/form-data; boundary=B"},
    )
    wsgi_request.environ["wsgi.input"] = io.BytesIO(body)
    wsgi_request.environ.pop("CONTENT_LENGTH", None)
    wsgi_request.environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    wsgi_request.environ["wsgi.input_terminated"] = True
    response = wsgi_request.get_response(kinto.app.app)
    assert response.status_code == 201
    assert response.json["hash"] == hashlib.sha256(b"chunked!").hexdigest()


def test_default_bucket_needs_authentication(tmp_path_factory, request):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.includes": "kinto.plugins.default_bucket kinto.plugins.flush kinto_attachment"},
    )
    url = "/v1/buckets/default/collections/tasks/records/r1"
    kinto.upload(url, headers={}, status=401)
    assert kinto.files() == []


@pytest.mark.parametrize("how", ["patch", "creation", "override"])
def test_a_resumable_upload_to_the_default_bucket_keeps_its_bytes(tmp_path_factory, request, how):
    """Found by review (2026-12-05).

    tus requests to ``/buckets/default/...`` went through Kinto's default_bucket view, which
    takes a body for JSON: a chunk that parsed as JSON (an exported record) was rewritten and
    typed ``application/json`` (a 415 at every retry; bytes dropped on creation-with-upload),
    any other held whole in memory. Streamed to the real bucket's URL, as uploads are, a
    ``POST`` with ``X-HTTP-Method-Override: PATCH`` too (tus-js-client's
    ``overridePatchMethod``; found by the review of the fix)."""
    includes = "kinto.plugins.default_bucket kinto.plugins.flush kinto_attachment"
    kinto = cached_app("memory", tmp_path_factory, request, **{"kinto.includes": includes})
    record = "/v1/buckets/default/collections/tasks/records/r1"
    content = b'{"data": {"id": "default-settings", "title": "exported"}}'
    tus = {**ALICE, "Tus-Resumable": "1.0.0"}
    chunk = {"Content-Type": "application/offset+octet-stream"}
    name = base64.b64encode(b"export.json").decode()
    meta = {"Upload-Length": str(len(content)), "Upload-Metadata": f"filename {name}"}
    body, sent = (content, chunk) if how == "creation" else (b"", {})
    uploads = f"{record}/attachment/uploads"
    created = kinto.app.post(uploads, body, headers={**tus, **meta, **sent}, status=201)
    upload = f"{uploads}/" + created.headers["Location"].rsplit("/", 1)[1]
    if how != "creation":
        assert kinto.app.head(upload, headers=tus).headers["Upload-Offset"] == "0"
        headers = {**tus, **chunk, "Upload-Offset": "0"}
        if how == "override":
            kinto.app.post(upload, content, headers={**headers, "X-HTTP-Method-Override": "PATCH"})
        else:
            kinto.app.patch(upload, content, headers=headers)

    assert kinto.app.get(f"{record}/attachment", headers=ALICE).body == content
    kinto.app.delete(upload, headers=tus, status=204)  # A finished upload, forgotten.


def test_a_deployment_s_version_file_wins(tmp_path):
    """``kinto.version_json_path`` naming a file that exists: ``/__version__`` answers it, not
    the package's (tests/live/test_live.py: the package's where there is none)."""
    deployed = tmp_path / "version.json"
    deployed.write_text('{"version": "2026.12.05", "source": "ours", "commit": "c", "build": "b"}')
    settings = build_settings("memory", str(tmp_path / "files"))
    app = make_app({**settings, "kinto.version_json_path": str(deployed)})
    assert app.app.registry.settings["version_json_path"] == str(deployed)
    settings = build_settings("memory", str(tmp_path / "other"))
    app = make_app({**settings, "kinto.version_json_path": str(tmp_path / "none.json")})
    packaged = json.loads(Path(app.app.registry.settings["version_json_path"]).read_text())
    assert packaged["version"] == kinto_attachment.__version__
