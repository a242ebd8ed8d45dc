"""Inputs that Kinto's storage cannot hold are a 400, never a 5xx, on every entry point.

PostgreSQL refuses NUL in text and JSONB (Kinto answers a 503 "temporary unavailable" then,
or a 500 for a permission), no UTF-8 holds a lone surrogate, and Kinto's parser refuses NaN,
Infinity and numbers past a double. Folders and ids have limits too: a file name on disk, an
S3 or GCS key, a PostgreSQL index row. Each case runs on the memory backend and on
PostgreSQL, where these inputs used to be server errors.
"""

import base64
import hashlib
import json
import secrets

import pytest
from kinto.core.errors import ERRORS
from pyramid.exceptions import ConfigurationError

from kinto_attachment.state import data_file_entries, links, storable, tus_uploads
from kinto_attachment.uploads import policies

from ..conftest import ALICE, PREVIOUS_URL, attachment_app, build_settings, cached_app, make_app


URL = PREVIOUS_URL
BOUNDARY = "XyZ"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {"Content-Type": "application/offset+octet-stream"}


def part(name, content, filename=None):
    """A form part; ``filename`` as bytes, so that any byte (NUL) can be sent."""
    disposition = f'Content-Disposition: form-data; name="{name}"'.encode()
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    return f"--{BOUNDARY}\r\n".encode() + disposition + b"\r\n\r\n" + content + b"\r\n"


def form(*parts):
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def b64(text):
    return base64.b64encode(text.encode("utf-8", "surrogatepass")).decode()


# What Kinto stores: the checks themselves.


@pytest.mark.parametrize(
    "text,description",
    [
        ('{"a": "x\\u0000y"}', "contains the invalid character 0x00"),
        ('{"a\\u0000": 1}', "contains the invalid character 0x00"),
        ('{"a": ["\\ud800"]}', "contains a lone surrogate (\\ud800)"),
        ('{"\\udfff": 1}', "contains a lone surrogate (\\udfff)"),
        ('{"a": ' * 101 + "1" + "}" * 101, "is nested too deeply"),
        ('{"a": ' + "[" * 100 + "]" * 100 + "}", "is nested too deeply"),
    ],
)
def test_unstorable_json(text, description):
    with pytest.raises(storable.Unstorable) as raised:
        storable.json_object(text)
    assert str(raised.value) == description


@pytest.mark.parametrize(
    "text,description",
    [
        ('{"a": NaN}', "NaN is not a JSON number"),
        ('{"a": -Infinity}', "-Infinity is not a JSON number"),
        ('{"a": 1e400}', "1e400 is too large a number"),
        ('{"a": 1' + "0" * 400 + "}", "1" + "0" * 19 + "... is too large a number"),
    ],
)
def test_json_that_kinto_does_not_read(text, description):
    with pytest.raises(ValueError, match=description) as raised:
        storable.json_object(text)
    assert not isinstance(raised.value, storable.Unstorable)


def test_storable_json_is_parsed_as_python_does():
    text = json.dumps(
        {
            "deep": json.loads('{"a": ' * 99 + "1" + "}" * 99),
            "pair": "\U0001f600",
            "controls": "\x01\x1f\x7f",
            "numbers": [1e308, -(2**1000), 1e-400, -0.0],
        }
    )
    assert storable.json_object(text) == json.loads(text)


# Multipart: on every backend and store, the previous attachment intact (``with_previous``).


@pytest.mark.parametrize(
    "filename", [b"a\x00b.txt", b"\x00.txt", b"b.txt\x00"], ids=["inside", "first", "last"]
)
def test_nul_in_a_multipart_filename_is_400(with_previous, filename):
    response = with_previous.app.post(
        URL + "/attachment",
        form(part("attachment", b"new bytes", filename)),
        headers={**ALICE, **MULTIPART},
        status=400,
    )
    assert response.json["errno"] == ERRORS.INVALID_PARAMETERS.value
    assert response.json["message"] == "body: Filename contains the invalid character 0x00."


UNSTORABLE_FIELDS = [
    ("data", '{"title": "a\\u0000b"}', "data contains the invalid character 0x00."),
    ("data", '{"t\\u0000": 1}', "data contains the invalid character 0x00."),
    ("data", '{"title": "\\ud83d"}', "data contains a lone surrogate (\\ud83d)."),
    ("data", '{"n": NaN}', "data is not valid JSON (NaN is not a JSON number)"),
    ("data", '{"n": 1e999}', "data is not valid JSON (1e999 is too large a number)"),
    ("data", '{"a": ' * 480 + "1" + "}" * 480, "data is nested too deeply."),
    ("permissions", '{"read": ["x\\u0000"]}', "permissions contains the invalid character 0x00."),
    ("permissions", '{"read": ["\\udc00"]}', "permissions contains a lone surrogate (\\udc00)."),
]
UNSTORABLE_IDS = [
    "data-nul",
    "data-key-nul",
    "data-surrogate",
    "data-nan",
    "data-infinity",
    "data-deep",
    "permissions-nul",
    "permissions-surrogate",
]


@pytest.mark.parametrize("field,text,description", UNSTORABLE_FIELDS, ids=UNSTORABLE_IDS)
def test_unstorable_form_fields_are_400(with_previous, field, text, description):
    response = with_previous.app.post(
        URL + "/attachment",
        form(part(field, text.encode()), part("attachment", b"new bytes", b"new.txt")),
        headers={**ALICE, **MULTIPART},
        status=400,
    )
    assert response.json["errno"] == ERRORS.INVALID_POSTED_DATA.value
    assert response.json["message"] == f"body: {description}"


# tus: refused at creation, nothing recorded.


@pytest.fixture
def kinto_tus(backend, tmp_path_factory, request):
    kinto = cached_app(backend, tmp_path_factory, request)
    kinto.create_collection()
    return kinto


def create(kinto, metadata, status=400, url=URL):
    headers = {**ALICE, **TUS, "Upload-Length": "5", "Upload-Metadata": metadata}
    response = kinto.app.post(url + "/attachment/uploads", headers=headers, status=status)
    if status >= 400:
        assert response.headers["Tus-Resumable"] == "1.0.0"
        assert tus_uploads.entries(kinto.registry.storage) == []
        assert kinto.files() == []
    return response


@pytest.mark.parametrize("filename", ["a\x00b.txt", "\x00"])
def test_nul_in_a_tus_filename_is_400(kinto_tus, filename):
    response = create(kinto_tus, f"filename {b64(filename)}")
    assert response.json["errno"] == ERRORS.INVALID_PARAMETERS.value
    assert response.json["message"] == "body: Filename contains the invalid character 0x00."


@pytest.mark.parametrize("field,text,description", UNSTORABLE_FIELDS, ids=UNSTORABLE_IDS)
def test_unstorable_tus_fields_are_400(kinto_tus, field, text, description):
    response = create(kinto_tus, f"filename {b64('a.txt')},{field} {b64(text)}")
    assert response.json["errno"] == ERRORS.INVALID_PARAMETERS.value
    assert response.json["message"] == f"Upload-Metadata: {description}"


@pytest.mark.parametrize("key", ["a\x00", "\x00filename", "x\x01y"])
def test_tus_metadata_keys_are_printable(kinto_tus, key):
    """The header is kept as sent (``HEAD`` returns it): a NUL in it could not be stored.
    (waitress refuses such a header itself; a server that passes it must not fail.)"""
    response = create(kinto_tus, f"filename {b64('a.txt')},{key} {b64('x')}")
    assert response.json["message"] == f"Upload-Metadata: bad {ascii(key)}"


# Ids in URLs: an id with a NUL cannot exist, and is not looked up (storage and permission
# backends on PostgreSQL fail on it), as Kinto's own route factory refuses invalid ids.


RECORDS = "/v1/buckets/blog/collections/articles/records"
UPLOAD = f"{RECORDS}/r1/attachment/uploads"


@pytest.mark.parametrize(
    "method,url,status",
    [
        ("POST", f"{RECORDS}/a%00b/attachment", 404),
        ("GET", f"{RECORDS}/a%00b/attachment", 404),
        ("DELETE", f"{RECORDS}/a%00b/attachment", 404),
        ("POST", "/v1/buckets/b%00/collections/articles/records/r1/attachment", 404),
        ("GET", "/v1/buckets/blog%00/collections/articles/records/r1/attachment", 404),
        ("GET", "/v1/buckets/blog/collections/a%00/records/r1/attachment", 404),
        ("POST", f"{RECORDS}/a%00b/attachment/uploads", 404),
        ("HEAD", f"{UPLOAD}/%00", 404),
        ("PATCH", f"{UPLOAD}/a%00", 404),
        ("DELETE", f"{UPLOAD}/a%00", 404),
    ],
)
def test_ids_with_a_nul_are_unknown(kinto_tus, method, url, status):
    headers = {**ALICE, **TUS, **CHUNK, "Upload-Length": "2", "Upload-Offset": "0"}
    if method == "POST" and not url.endswith("/uploads"):
        headers = {**ALICE, **MULTIPART}
    body = form(part("attachment", b"x", b"x.txt")) if method in ("POST", "PATCH") else b""
    response = kinto_tus.app.request(url, method=method, body=body, headers=headers, status="*")
    assert response.status_int == status
    if method != "HEAD":
        assert response.json["errno"] == ERRORS.MISSING_RESOURCE.value
    if "/uploads" in url:
        assert response.headers["Tus-Resumable"] == "1.0.0"
    assert kinto_tus.files() == []


# /data/files: the name is taken from the header, without what cannot be stored.


LOCAL = {"REMOTE_ADDR": "127.0.0.1"}


@pytest.mark.parametrize(
    "disposition",
    [
        'attachment; filename="a\x00b.txt"',
        "attachment; filename*=utf-8''a%00b.txt",
        "attachment; filename*=utf-16''%00%d8%61%00%62%00.%00t%00x%00t%00",
    ],
    ids=["nul", "encoded-nul", "lone-surrogate"],
)
def test_data_files_names_are_stored_without_what_cannot_be(
    backend, tmp_path_factory, request, disposition
):
    kinto = cached_app(backend, tmp_path_factory, request)
    kinto.app.post(
        "/v1/data/files?id=named",
        b"content",
        headers={"Content-Disposition": disposition},
        extra_environ=LOCAL,
        status=200,
    )
    entry = data_file_entries.get(kinto.registry.storage, "named")
    assert entry["filename"] in ("ab.txt", "\ufffdab.txt")
    assert kinto.app.get("/v1/data/files/named", extra_environ=LOCAL).body == b"content"


@pytest.mark.parametrize("file_id", ["a%00b", "%00", "a%ED%A0%80"])
def test_data_files_ids_that_cannot_be_stored_are_400(backend, tmp_path_factory, request, file_id):
    kinto = cached_app(backend, tmp_path_factory, request)
    response = kinto.app.post(
        f"/v1/data/files?id={file_id}", b"x", extra_environ=LOCAL, status=400
    )
    assert response.json["errno"] == ERRORS.INVALID_PARAMETERS.value
    assert kinto.files() == []


@pytest.mark.parametrize("method,status", [("GET", 404), ("HEAD", 404), ("DELETE", 204)])
@pytest.mark.parametrize("file_id", ["a%00b", "%00", "a" * 129])
def test_data_files_ids_that_cannot_exist_are_unknown(
    backend, tmp_path_factory, request, method, status, file_id
):
    """No upload could store such an id: it is not looked up (PostgreSQL fails on a NUL)."""
    kinto = cached_app(backend, tmp_path_factory, request)
    send = getattr(kinto.app, method.lower())
    response = send(f"/v1/data/files/{file_id}", extra_environ=LOCAL, status=status)
    if method == "GET":
        assert response.json["errno"] == ERRORS.MISSING_RESOURCE.value


# Long folders: named by a hash, the same on every store.


FOLDERS = {"folder": "{bucket_id}/{collection_id}"}
LONG_BUCKET = "b" * 301


def test_long_folder_segments_are_named_by_their_hash(backend, blobs, tmp_path_factory, request):
    kinto = attachment_app(tmp_path_factory, request, backend, blobs, **FOLDERS)
    kinto.create_collection(LONG_BUCKET, "articles")
    url = kinto.record_url(bucket=LONG_BUCKET)
    response = kinto.upload(url, b"long folder", "a.txt", status=201)
    key = kinto.key_of(response.json["location"])
    segment = "b" * 64 + "~" + hashlib.sha256(LONG_BUCKET.encode()).hexdigest()
    assert key.startswith(f"{segment}/articles/") and key.endswith(".txt"), key
    assert kinto.read(response.json["location"]) == b"long folder"
    # Folders that fit are kinto-attachment's, as they were.
    short = kinto.upload(kinto.record_url(), b"short", "a.txt", status=201)
    assert kinto.key_of(short.json["location"]).startswith("blog/articles/")


def test_long_folder_segments_in_tus_uploads(backend, tmp_path_factory, request):
    kinto = attachment_app(tmp_path_factory, request, backend, **FOLDERS)
    kinto.create_collection(LONG_BUCKET, "c" * 400)
    url = kinto.record_url(bucket=LONG_BUCKET, collection="c" * 400)
    created = create(kinto, f"filename {b64('a.txt')}", status=201, url=url)
    upload = created.headers["Location"][len("http://localhost") :]
    headers = {**ALICE, **TUS, **CHUNK}
    kinto.app.patch(upload, b"hel", headers={**headers, "Upload-Offset": "0"}, status=204)
    kinto.app.patch(upload, b"lo", headers={**headers, "Upload-Offset": "3"}, status=204)
    attachment = kinto.app.get(url, headers=ALICE).json["data"]["attachment"]
    assert kinto.read(attachment["location"]) == b"hello"
    for segment in kinto.key_of(attachment["location"]).split("/"):
        assert len(segment) <= policies.MAX_SEGMENT


@pytest.mark.parametrize(
    "folder,message",
    [
        ("{bucket_id}/{collection_id}/{bucket_id}/x", None),
        ("{bucket_id}/{collection_id}/{bucket_id}/{collection_id}", "over 1024"),
        ("a" * 256, "a folder name has 255 bytes at most"),
    ],
)
def test_folder_patterns_keep_keys_within_1024_bytes(tmp_path, folder, message):
    settings = build_settings("memory", str(tmp_path), **{"kinto.attachment.folder": folder})
    if message is None:
        make_app(settings)
        return
    with pytest.raises(ConfigurationError, match=message):
        make_app(settings)


def test_short_segment():
    assert policies.short_segment("x" * 255) == "x" * 255
    hashed = policies.short_segment("é" * 200)  # 400 bytes
    assert hashed == "é" * 32 + "~" + hashlib.sha256(("é" * 200).encode()).hexdigest()


# Long ids.


def test_long_record_ids_keep_names_short(backend, tmp_path_factory, request):
    kinto = attachment_app(
        tmp_path_factory,
        request,
        backend,
        randomize="false",
        filename_pattern="{rid}-{filename}",
        **FOLDERS,
    )
    record = "r" * 1500
    response = kinto.upload(kinto.record_url(record), b"x", "a.txt", status=201)
    key = kinto.key_of(response.json["location"])
    assert key.startswith("blog/articles/rrr") and key.endswith(".txt")
    assert len(key.rsplit("/", 1)[1]) <= 200


@pytest.mark.parametrize("entry", ["multipart", "tus"])
def test_ids_too_long_for_a_link_are_400(backend, tmp_path_factory, request, entry):
    """A record URI past PostgreSQL's index rows (Kinto then answers its own 503)."""
    kinto = cached_app(backend, tmp_path_factory, request)
    kinto.create_collection()
    url = kinto.record_url(secrets.token_hex(1400))
    length = len(url) - len("/v1")
    if entry == "multipart":
        response = kinto.upload(url, b"x", "a.txt", status=400)
    else:
        response = create(kinto, f"filename {b64('a.txt')}", url=url)
    assert response.json["errno"] == ERRORS.INVALID_PARAMETERS.value
    assert response.json["message"] == (
        f"The record's URI has {length} bytes: a record with an attachment has "
        f"{links.MAX_RECORD_URI} at most (/buckets/{{bid}}/collections/{{cid}}/records/{{rid}}, "
        "its ids with their 31 bytes of path)."
    )
    assert kinto.files() == []
    assert kinto.app.get(url, headers=ALICE, status=404)
