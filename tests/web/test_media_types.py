"""Declared media types parsed (RFC 9110), and only an allow-list ever served inline."""

import base64
import os
import subprocess
import sys
import unicodedata
from urllib.parse import unquote

import pytest
import requests
import transaction

from kinto_attachment.web import media_types

from ..conftest import (
    ALICE,
    Kinto,
    attachment_app,
    build_settings,
    make_app,
    s3_client,
    s3_settings,
    served_path,
)


URL = "/v1/buckets/blog/collections/articles/records/r1"
INVALID = ["text/html,", ",text/html", "text/plain,text/html", "image/svg+xml,", "text/pl\x00ain"]


def app(tmp_path_factory, request, backend="memory", blobs="local", **settings):
    return attachment_app(tmp_path_factory, request, backend, blobs, extensions="any", **settings)


def tus_upload(kinto, content, filename, filetype):
    def b64(text):
        return base64.b64encode(text.encode("latin-1")).decode()

    meta = f"filename {b64(filename)},filetype {b64(filetype)}"
    kinto.app.post(
        URL + "/attachment/uploads",
        content,
        headers={
            **ALICE,
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(len(content)),
            "Upload-Metadata": meta,
            "Content-Type": "application/offset+octet-stream",
        },
        status=201,
    )
    return kinto.app.get(URL, headers=ALICE).json["data"]["attachment"]


@pytest.mark.parametrize(
    "value,expected",
    [
        ("text/plain", "text/plain"),
        ("Text/Plain ; charset=UTF-8", "text/plain"),
        ('text/plain;charset="utf-8";format=flowed', "text/plain"),
        ("application/vnd.api+json", "application/vnd.api+json"),
        *((value, None) for value in INVALID),
        ("text/plain; charset", None),
        ("text/plain; charset=a b", None),
        ("text", None),
        ("text/", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_media_type(value, expected):
    assert media_types.parse_media_type(value) == expected


@pytest.mark.parametrize("declared", INVALID)
def test_invalid_declared_type_is_replaced_by_the_guess(
    blobs, declared, tmp_path_factory, request
):
    kinto = app(tmp_path_factory, request, blobs=blobs)
    meta = kinto.upload(URL, b"<b>hi</b>", "note.txt", mimetype=declared).json
    assert meta["mimetype"] == "text/plain"
    response = kinto.app.get(URL + "/attachment", headers=ALICE)
    assert response.headers["Content-Type"] == "text/plain"


@pytest.mark.parametrize("declared", INVALID)
def test_invalid_tus_filetype_is_replaced_by_the_guess(blobs, declared, tmp_path_factory, request):
    kinto = app(tmp_path_factory, request, blobs=blobs)
    assert tus_upload(kinto, b"<b>hi</b>", "note.bin", declared)["mimetype"] == (
        "application/octet-stream"
    )


@pytest.mark.parametrize(
    "filename,declared,disposition",
    [
        ("a.png", "image/png", "inline"),
        ("a.pdf", "application/pdf", "inline"),
        ("a.txt", "text/plain; charset=utf-8", "inline"),
        ("a.mp4", "video/mp4", "inline"),
        ("a.ogg", "audio/ogg", "inline"),
        ("a.css", "text/css", "attachment"),
        ("a.xyz", "application/x-whatever", "attachment"),
        ("a.bin", None, "attachment"),
        ("a.html", "text/html", "attachment"),
        ("a.svg", "image/svg+xml", "attachment"),
        ("a.xml", "application/rss+xml", "attachment"),
        ("a.mjs", "text/javascript", "attachment"),
    ],
)
def test_only_the_allow_list_is_inline(filename, declared, disposition, tmp_path_factory, request):
    kinto = app(tmp_path_factory, request)
    kinto.upload(URL, b"<script>alert(1)</script>", filename, mimetype=declared)
    response = kinto.app.get(URL + "/attachment", headers=ALICE)
    assert response.headers["Content-Disposition"].startswith(f"{disposition};")
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_stored_invalid_type_is_served_as_an_attachment(backend, tmp_path_factory, request):
    """Records written before types were parsed may hold anything."""
    kinto = app(tmp_path_factory, request, backend=backend)
    kinto.upload(URL, b"<script>alert(1)</script>", "a.txt")
    storage = kinto.registry.storage
    parent = "/buckets/blog/collections/articles"
    record = storage.get(resource_name="record", parent_id=parent, object_id="r1")
    record["attachment"]["mimetype"] = "text/plain,text/html"
    storage.update(resource_name="record", parent_id=parent, object_id="r1", obj=record)
    transaction.commit()
    response = kinto.app.get(URL + "/attachment", headers=ALICE)
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith("attachment;")


def test_serve_files_uses_the_allow_list(tmp_path_factory, request):
    kinto = app(
        tmp_path_factory,
        request,
        serve_files="true",
        folder="{bucket_id}",
        base_url="http://localhost/v1/attachments/",
    )
    css = served_path(kinto.upload(URL, b"body{}", "a.css").json["location"])
    response = kinto.app.get(css)
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    png = served_path(kinto.upload(URL, b"png", "a.png").json["location"])
    assert kinto.app.get(png).headers["Content-Disposition"].startswith("inline;")


def test_serve_files_directory_is_404(tmp_path_factory, request):
    kinto = app(
        tmp_path_factory,
        request,
        serve_files="true",
        folder="{bucket_id}",
        base_url="http://localhost/v1/attachments/",
    )
    kinto.upload(URL, b"x", "a.txt")
    kinto.app.get("/v1/attachments/blog", status=404)
    kinto.app.head("/v1/attachments/blog", status=404)


def head_object(kinto, location):
    client = s3_client(kinto.registry.attachment_store.client.meta.endpoint_url)
    return client.head_object(Bucket=kinto.bucket, Key=kinto.key_of(location))


@pytest.mark.parametrize(
    "filename,declared,size,disposition",
    [
        ("page.html", "text/html", 100, "attachment"),
        ("logo.svg", "image/svg+xml", 100, "attachment"),
        ("photo.png", "image/png", 100, None),
        # Above one part (5 MiB): a multipart upload.
        ("page.html", "text/html", 6 * 1024 * 1024, "attachment"),
        ("photo.png", "image/png", 6 * 1024 * 1024, None),
    ],
)
def test_s3_objects_not_inline_are_stored_as_attachments(
    filename, declared, size, disposition, tmp_path_factory, request
):
    kinto = app(tmp_path_factory, request, blobs="s3")
    meta = kinto.upload(URL, os.urandom(size), filename, mimetype=declared).json
    head = head_object(kinto, meta["location"])
    assert head.get("ContentDisposition") == disposition
    assert head["ContentType"] == declared


def test_s3_tus_objects_not_inline_are_stored_as_attachments(tmp_path_factory, request):
    kinto = app(tmp_path_factory, request, blobs="s3")
    meta = tus_upload(kinto, b"<script>alert(1)</script>", "page.html", "text/html")
    assert head_object(kinto, meta["location"]).get("ContentDisposition") == "attachment"


@pytest.mark.parametrize(
    "filename,declared,disposition",
    [("a.css", "text/css", "attachment"), ("a.png", "image/png", "inline")],
)
def test_presigned_redirect_uses_the_allow_list(
    filename, declared, disposition, tmp_path_factory, request
):
    kinto = app(tmp_path_factory, request, blobs="s3", **{"aws.presigned_downloads": "true"})
    kinto.upload(URL, b"body{}", filename, mimetype=declared)
    target = kinto.app.get(URL + "/attachment", headers=ALICE, status=307).headers["Location"]
    download = requests.get(target, timeout=10)
    assert download.headers["Content-Disposition"].startswith(f"{disposition};")
    assert download.headers["Content-Type"] == declared


def test_allow_list_helpers():
    assert media_types.is_inline("IMAGE/PNG; x=y")
    assert media_types.is_inline("video/webm")
    assert not media_types.is_inline("image/svg+xml")
    assert not media_types.is_inline("text/plain,text/html")
    assert media_types.served_type("text/plain,text/html") == "application/octet-stream"
    # Parameters are served as stored (a data file's charset or boundary), ASCII only.
    assert media_types.served_type("Text/Plain; charset=utf-8") == "text/plain; charset=utf-8"
    assert media_types.served_type('text/plain; a="\xe9"') == "text/plain"
    assert media_types.served_type("text/plain; a=" + "b" * 300) == "text/plain"


def test_parsing_never_backtracks_without_end():
    """A stray character after many empty parameters: a regex that could read each space in
    two places tried every way (each ``"; "`` doubled the time; 40 of them, hours, holding
    the GIL). Parsed in a process of its own: it must be done long before a backtracking
    parser would, and a hang fails here rather than the whole suite."""
    values = ["a/b" + "; " * 60 + '"', "a/b" + " ;" * 60 + "\x00", "a/b" + ";\t" * 60 + "@"]
    script = (
        "import sys; from kinto_attachment.web.media_types import parse_media_type as p; "
        f"print([p(v) for v in {values!r}])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[None, None, None]"


#: nginx's ``proxy_buffer_size`` (a memory page): a longer answer head is a ``502``.
PROXY_BUFFER_SIZE = 4096


@pytest.mark.parametrize("letter", ["e", "\u00e9", "\U0001f600"])
def test_a_long_filename_keeps_the_download_head_small(tmp_path_factory, request, letter):
    """Found by review (2026-12-05).

    A name of 1,000 letters (accepted by the upload) made ``Content-Disposition`` 7 KiB (200
    KiB through ``/data/files``' ``filename*``): past what proxies read, every reader got a
    ``502``. The name it gives is shortened in its stem (its extension kept); the record
    keeps the name as sent."""
    kinto = attachment_app(tmp_path_factory, request)
    name = letter * 1000 + ".txt"
    meta = kinto.upload(kinto.record_url(), b"content", name).json
    assert meta["filename"] == name
    response = kinto.app.get(kinto.record_url() + "/attachment", headers=ALICE)
    head = sum(len(k) + len(v) + 4 for k, v in response.headerlist)
    assert head < PROXY_BUFFER_SIZE
    disposition = response.headers["Content-Disposition"]
    assert 'filename="' in disposition and disposition.endswith(".txt")


def test_a_short_name_is_given_whole_and_a_long_extension_is_cut_with_the_name():
    assert media_types._shortened("report.pdf") == "report.pdf"
    name = media_types._shortened("\u00e9" * 150 + ".tar.gz")
    assert name.endswith(".gz") and len(name.encode()) <= media_types.DISPOSITION_NAME_BYTES
    long_extension = media_types._shortened("a" * 10 + "." + "b" * 300)
    assert len(long_extension) == media_types.DISPOSITION_NAME_BYTES
    assert long_extension.startswith("a" * 10 + ".b")


def test_a_name_with_a_lone_surrogate_is_given_with_a_replacement_character():
    """Uploads refuse lone surrogates (``test_unstorable.py``), but a record written by
    another plugin, or data taken over, may hold one: ``quote`` raised (a 500 for every
    download of the file), and a long name was cut at the wrong character (``é`` split from its
    accent: positions counted in bytes after dropping the surrogate's)."""
    disposition = media_types.content_disposition("a\ud800b.txt", "text/plain")
    assert disposition.endswith("filename*=UTF-8''a%3Fb.txt")
    long_name = "x" * 10 + "\ud800" + "e\u0301" * 150 + ".txt"
    given = unquote(media_types.content_disposition(long_name, "text/plain").split("''")[1])
    assert given.startswith("x" * 10 + "?e\u0301") and given.endswith("\u0301.txt")


def test_a_long_decomposed_name_is_not_cut_between_a_letter_and_its_accent(
    tmp_path_factory, request
):
    """Found by review (2026-12-05).

    A name in NFD (as macOS sends them): ``é`` is ``e`` + U+0301. The 200-byte cut of
    ``_shortened`` fell between the two: the name given ended with ``e`` where the file's
    name has ``é`` (a letter changed, not only a name shortened)."""
    kinto = attachment_app(tmp_path_factory, request)
    name = "e\u0301" * 150 + ".txt"  # 450 bytes.
    kinto.upload(kinto.record_url(), b"content", name)
    response = kinto.app.get(kinto.record_url() + "/attachment", headers=ALICE)
    given = unquote(response.headers["Content-Disposition"].split("filename*=UTF-8''")[1])
    assert given.endswith(".txt") and name.startswith(given[: -len(".txt")])
    stem = given[: -len(".txt")]
    assert set(unicodedata.normalize("NFC", stem)) == {"\u00e9"}, ascii(stem[-3:])


#: A session token as temporary credentials carry it (an EC2/ECS/EKS role: boto3 signs with
#: it, and a presigned URL names it in X-Amz-Security-Token): about 1 KiB.
SESSION_TOKEN = "IQoJb3JpZ2luX2VjE" + "A" * 1000


def test_a_presigned_redirect_of_a_long_name_keeps_its_head_small(
    tmp_path_factory, request, monkeypatch
):
    """Found by review (2026-12-05).

    The 200-byte cap was sized for one ``Content-Disposition``; a 307 to a presigned URL
    carried the name twice: the header, and again in ``response-content-disposition``,
    percent-encoded a second time (``%26`` becomes ``%2526``). With a role's credentials the
    head of the redirect passed nginx's 4 KiB ``proxy_buffer_size``: a 502 for every reader.
    The 307 names no disposition (the signed URL does), the signed URL's name 100 bytes."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    settings = build_settings("memory", str(tmp_path_factory.mktemp("attachments")))
    del settings["kinto.attachment.base_path"]
    settings.update(s3_settings(request.getfixturevalue("s3_server")))
    del settings["kinto.attachment.aws.access_key"], settings["kinto.attachment.aws.secret_key"]
    settings["kinto.attachment.aws.presigned_downloads"] = "true"
    kinto = Kinto(make_app(settings), None, settings["kinto.attachment.aws.bucket_name"])
    kinto.create_collection()
    # What a writer names a file, every reader of it downloads (the commit's own threat).
    kinto.upload(kinto.record_url(), b"content", "&" * 300 + ".txt")
    response = kinto.app.get(kinto.record_url() + "/attachment", headers=ALICE, status=307)
    assert "X-Amz-Security-Token" in response.headers["Location"]
    head = sum(len(k) + len(v) + 4 for k, v in response.headerlist)
    assert head < PROXY_BUFFER_SIZE, head
