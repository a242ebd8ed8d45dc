"""Where files are stored and how they are named and typed, through the API."""

import re

import pytest
import webob.request

from ..conftest import ALICE, attachment_app, cached_app, served_path


@pytest.mark.parametrize(
    "folder,prefix",
    [
        ("{bucket_id}/{collection_id}", "blog/articles/"),
        # As kinto-attachment formats it (found by review, 2026-12-05: start-up refused it).
        ("{bucket_id}/{id}", "blog/r1/"),
    ],
)
def test_folder_pattern(folder, prefix, blobs, tmp_path_factory, request):
    kinto = attachment_app(tmp_path_factory, request, blobs=blobs, folder=folder)
    meta = kinto.upload(kinto.record_url()).json
    assert meta["location"].startswith("https://files.example.com/" + prefix)
    assert kinto.files() == [kinto.key_of(meta["location"])]


def test_not_randomized_keeps_sanitised_name_and_never_overwrites(
    backend, blobs, tmp_path_factory, request
):
    kinto = attachment_app(
        tmp_path_factory, request, backend=backend, blobs=blobs, randomize="false"
    )
    first = kinto.upload(kinto.record_url("a"), b"a", "Ré sumé.txt").json
    second = kinto.upload(kinto.record_url("b"), b"b", "Ré sumé.txt").json
    assert first["location"] == "https://files.example.com/Re_sume.txt"
    assert second["location"] == "https://files.example.com/Re_sume-1.txt"
    assert first["filename"] == "Ré sumé.txt"
    assert kinto.read(first["location"]) == b"a"


def test_filename_pattern(tmp_path_factory, request):
    kinto = attachment_app(
        tmp_path_factory,
        request,
        randomize="false",
        filename_pattern="{rid}-{datetime}-{filename}",
    )
    meta = kinto.upload(kinto.record_url("rec"), b"x", "x.txt").json
    assert re.fullmatch(r"https://files\.example\.com/rec-\d{20}-x\.txt", meta["location"])


def test_randomized_names_keep_the_extension(kinto):
    kinto.create_collection()
    meta = kinto.upload(kinto.record_url(), b"x", "Photo.JPEG").json
    assert re.fullmatch(r"https://files\.example\.com/[0-9a-f]{40}\.jpeg", meta["location"])


@pytest.mark.parametrize(
    "filename,declared,expected",
    [
        ("a.pem", "text/plain", "application/x-pem-file"),
        ("a.ftl", None, "application/vnd.fluent"),
        ("a.json", "application/json; charset=utf-8", "application/json"),
        ("a.png", "application/octet-stream", "image/png"),
        ("a.unknownext", None, "application/octet-stream"),
    ],
)
def test_mimetype_resolution(tmp_path_factory, request, filename, declared, expected):
    kinto = attachment_app(
        tmp_path_factory, request, extensions="any", mimetypes=".ftl:application/vnd.fluent"
    )
    meta = kinto.upload(kinto.record_url(), b"x", filename, mimetype=declared).json
    assert meta["mimetype"] == expected


def test_keep_old_files(backend, blobs, tmp_path_factory, request):
    kinto = attachment_app(
        tmp_path_factory, request, backend=backend, blobs=blobs, keep_old_files="true"
    )
    url = kinto.record_url()
    kinto.upload(url, b"one", "one.txt")
    kinto.upload(url, b"two", "two.txt")
    assert len(kinto.files()) == 2
    kinto.app.delete(url + "/attachment", headers=ALICE)
    kinto.upload(url, b"three", "three.txt")
    kinto.app.delete(url, headers=ALICE)
    assert len(kinto.files()) == 3


def test_serve_files(tmp_path_factory, request):
    kinto = attachment_app(
        tmp_path_factory, request, serve_files="true", base_url="http://localhost/v1/attachments/"
    )
    meta = kinto.upload(kinto.record_url(), b"served bytes", "s.txt").json
    assert meta["location"].startswith("http://localhost/v1/attachments/")
    assert kinto.app.get(served_path(meta["location"])).body == b"served bytes"


def test_default_bucket(tmp_path_factory, request, monkeypatch):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.includes": "kinto.plugins.default_bucket kinto.plugins.flush kinto_attachment"},
    )
    url = "/v1/buckets/default/collections/tasks/records/r1"
    # The default_bucket plugin's own view would read the whole body into memory.
    body = webob.request.BaseRequest.body

    def whole_body(req):
        assert not req.content_type.startswith("multipart/"), "upload body read whole"
        return body.fget(req)

    monkeypatch.setattr(webob.request.BaseRequest, "body", property(whole_body, body.fset))
    meta = kinto.upload(url, b"in the default bucket").json
    monkeypatch.undo()
    assert kinto.app.get(url, headers=ALICE).json["data"]["attachment"] == meta
    kinto.app.delete(url, headers=ALICE)
    assert kinto.files() == []


def test_served_files_are_streamed_safely(tmp_path_factory, request):
    kinto = attachment_app(
        tmp_path_factory,
        request,
        serve_files="true",
        extensions="any",
        folder="{bucket_id}",
        base_url="http://localhost/v1/attachments/",
    )
    meta = kinto.upload(kinto.record_url(), b"<script>alert(1)</script>", "x.html").json
    path = served_path(meta["location"])
    response = kinto.app.get(path)
    assert response.body == b"<script>alert(1)</script>"
    assert response.headers["Content-Type"] == "text/html"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert kinto.app.head(path).headers["Content-Length"] == "25"
    kinto.app.get("/v1/attachments/blog/missing.txt", status=404)
    kinto.app.get("/v1/attachments/..%2F..%2Fetc%2Fpasswd", status=404)
    staged = kinto.registry.attachment_store.stage("blog/.hidden")
    staged.write(b"x")
    staged.commit()
    kinto.app.get("/v1/attachments/blog/.hidden", status=404)


LONG_HTML = "x" * 195 + ".html.txt"


@pytest.mark.parametrize("filename", [LONG_HTML, "x" * 196 + ".svg.txt", "x" * 400 + ".txt"])
def test_shortened_names_keep_their_checked_extension(blobs, filename, tmp_path_factory, request):
    kinto = attachment_app(tmp_path_factory, request, blobs=blobs, randomize="false")
    meta = kinto.upload(kinto.record_url(), b"<script>alert(1)</script>", filename).json
    assert meta["location"].endswith(".txt")
    assert len(kinto.key_of(meta["location"])) <= 200
    assert meta["filename"] == filename


def test_shortened_tus_names_keep_their_checked_extension(blobs, tmp_path_factory, request):
    import base64

    kinto = attachment_app(tmp_path_factory, request, blobs=blobs, randomize="false")
    url = kinto.record_url()
    name = base64.b64encode(LONG_HTML.encode()).decode()
    kinto.app.post(
        url + "/attachment/uploads",
        b"<script>",
        headers={
            **ALICE,
            "Tus-Resumable": "1.0.0",
            "Upload-Length": "8",
            "Upload-Metadata": f"filename {name}",
            "Content-Type": "application/offset+octet-stream",
        },
        status=201,
    )
    location = kinto.app.get(url, headers=ALICE).json["data"]["attachment"]["location"]
    assert location.endswith(".txt")


def test_s3_taken_names_cost_no_body_resend(tmp_path_factory, request):
    """The 41st ``same.txt`` is sent once, not 41 times (names probed without the body)."""
    from ..conftest import s3_client

    kinto = attachment_app(tmp_path_factory, request, blobs="s3", randomize="false")
    store = kinto.registry.attachment_store
    client = s3_client(store.client.meta.endpoint_url)
    for key in ["same.txt"] + [f"same-{n}.txt" for n in range(1, 40)] + ["same-x.txt"]:
        client.put_object(Bucket=kinto.bucket, Key=key, Body=b"old")
    calls = []

    def count(event_name, **_):
        calls.append(event_name.rsplit(".", 1)[-1])

    store.client.meta.events.register("before-call.s3", count)
    try:
        meta = kinto.upload(kinto.record_url(), b"new", "same.txt").json
    finally:
        store.client.meta.events.unregister("before-call.s3", count)
    assert meta["location"] == "https://files.example.com/same-40.txt"
    assert calls.count("PutObject") == 1
    assert len(calls) <= 4
    assert kinto.read("https://files.example.com/same-1.txt") == b"old"


@pytest.mark.parametrize("size", [3, 6 * 1024 * 1024], ids=["single-put", "multipart"])
def test_s3_random_names_are_written_without_looking_first(tmp_path_factory, request, size):
    """A random name cannot be taken: no request looks for a free one (writes stay
    conditional), so a small upload is one PutObject and nothing else."""
    kinto = attachment_app(tmp_path_factory, request, blobs="s3")
    store = kinto.registry.attachment_store
    calls = []

    def count(event_name, **_):
        calls.append(event_name.rsplit(".", 1)[-1])

    store.client.meta.events.register("before-call.s3", count)
    try:
        meta = kinto.upload(kinto.record_url(), b"x" * size, "random.txt").json
    finally:
        store.client.meta.events.unregister("before-call.s3", count)
    assert "HeadObject" not in calls and "ListObjectsV2" not in calls
    if size == 3:
        assert calls == ["PutObject"]
    assert kinto.read(meta["location"]) == b"x" * size


def test_a_base_url_without_slash_is_joined_as_kinto_attachment_does(
    tmp_path_factory, request, caplog
):
    kinto = attachment_app(tmp_path_factory, request, base_url="https://cdn.example.com/files")
    assert "has no trailing slash" in caplog.text
    meta = kinto.upload(kinto.record_url(), b"x", "x.txt").json
    assert meta["location"].startswith("https://cdn.example.com/")
    assert not meta["location"].startswith("https://cdn.example.com/files/")
    assert kinto.app.get(kinto.record_url() + "/attachment", headers=ALICE).body == b"x"
