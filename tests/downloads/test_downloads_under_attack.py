"""Downloads (``GET|HEAD {record-url}/attachment``, served files, signed fetch URLs) against an
adversarial review's attacks (2026-12-05). Those marked HELD are attacks the code withstood."""

import gc as python_gc
import hashlib
import json
import os
import time
import tracemalloc

import pytest
import webob

from kinto_attachment.web import signed_urls

from ..conftest import ALICE, BOB, cached_app, s3_client, served_path, serving_app


URL = "/v1/buckets/blog/collections/articles/records/r1"
CONTENT = bytes(range(256)) * 40  # 10240 bytes


def _get(kinto, headers=ALICE, method="get", path=URL + "/attachment", **extra):
    return getattr(kinto.app, method)(path, headers={**headers, **extra}, status="*")


@pytest.fixture
def stored(kinto):
    kinto.create_collection()
    meta = kinto.upload(URL, CONTENT, "data.pdf", mimetype="application/pdf").json
    return kinto, meta


# Permissions: every route to the bytes (HEAD, Range, conditions) is refused to a reader
# without permission, and refusals leak neither bytes nor validators.


@pytest.mark.parametrize("method", ["get", "head"])
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"Range": "bytes=0-9"},
        {"Range": "bytes=-5"},
        {"If-None-Match": "*"},
        {"If-Match": "*"},
        {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"},
        {"Range": "bytes=0-1", "If-Range": "garbage"},
    ],
)
def test_no_route_to_the_bytes_without_read_permission(stored, method, extra):
    """HELD."""
    kinto, meta = stored
    for headers, status in ((BOB, 403), ({}, 401)):
        response = _get(kinto, headers=headers, method=method, **extra)
        assert response.status_int == status, (headers, extra, response.status)
        assert CONTENT[:5] not in response.body
        assert meta["hash"] not in str(response.headers), response.headers
        assert "Content-Range" not in response.headers
    # The ETag too: a conditional request tells nothing (no 304 for Bob).
    etag = f'"{meta["hash"]}"'
    assert _get(kinto, headers=BOB, **{"If-None-Match": etag}).status_int == 403
    assert _get(kinto, headers=BOB, **{"If-Match": etag}).status_int == 403


def test_default_bucket_never_leads_to_another_users_file(tmp_path_factory, request):
    """HELD: ``/buckets/default`` names each user's own bucket."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.includes": "kinto.plugins.default_bucket kinto.plugins.flush kinto_attachment"},
    )
    url = "/v1/buckets/default/collections/tasks/records/r1"
    secret = os.urandom(64)
    kinto.upload(url, secret, "secret.txt")
    assert kinto.app.get(url + "/attachment", headers=ALICE).body == secret
    for method in ("get", "head"):
        for extra in ({}, {"Range": "bytes=0-9"}):
            response = getattr(kinto.app, method)(
                url + "/attachment", headers={**BOB, **extra}, status="*"
            )
            assert response.status_int == 404, (method, extra, response.status)
            assert secret[:10] not in response.body
    # Alice's default bucket by its real id: Bob may not read it.
    bucket_id = kinto.app.get("/v1/", headers=ALICE).json["user"]["bucket"]
    real = url.replace("/default/", f"/{bucket_id}/")
    assert kinto.app.get(real + "/attachment", headers=BOB, status="*").status_int == 403
    # Conditions and ranges go through the default bucket's subrequest.
    etag = kinto.app.get(url + "/attachment", headers=ALICE).headers["ETag"]
    assert _get(kinto, path=url + "/attachment", **{"If-None-Match": etag}).status_int == 304
    ranged = _get(kinto, path=url + "/attachment", Range="bytes=2-5")
    assert (ranged.status_int, ranged.body) == (206, secret[2:6])


def test_another_users_record_cannot_be_pointed_at_a_file(stored):
    """HELD: Bob cannot make a record of his own name Alice's file (then download it through
    it): the ``attachment`` field is refused in every write form."""
    kinto, meta = stored
    kinto.app.put_json("/v1/buckets/bob", {}, headers=BOB, status=(200, 201))
    kinto.app.put_json("/v1/buckets/bob/collections/c", {}, headers=BOB, status=201)
    bob_record = "/v1/buckets/bob/collections/c/records/r"
    forged = dict(meta)
    writes = [
        ("put_json", bob_record, {"data": {"attachment": forged}}),
        (
            "post_json",
            "/v1/buckets/bob/collections/c/records",
            {"data": {"id": "r", "attachment": forged}},
        ),
        (
            "post_json",
            "/v1/batch",
            {
                "requests": [
                    {
                        "method": "PUT",
                        "path": bob_record[3:],
                        "body": {"data": {"attachment": forged}},
                    }
                ]
            },
        ),
    ]
    for method, path, body in writes:
        getattr(kinto.app, method)(path, body, headers=BOB, status="*")
        got = kinto.app.get(bob_record + "/attachment", headers=BOB, status="*")
        assert got.body != CONTENT, (method, path)
    kinto.app.put_json(bob_record, {"data": {}}, headers=BOB, status=(200, 201))
    for ops in (
        [{"op": "add", "path": "/data/attachment", "value": forged}],
        [{"op": "replace", "path": "/data", "value": {"attachment": forged}}],
    ):
        kinto.app.patch(
            bob_record,
            json.dumps(ops),
            headers={**BOB, "Content-Type": "application/json-patch+json"},
            status="*",
        )
        got = kinto.app.get(bob_record + "/attachment", headers=BOB, status="*")
        assert got.body != CONTENT, ops
    kinto.app.patch(
        bob_record,
        json.dumps({"data": {"attachment": forged}}),
        headers={**BOB, "Content-Type": "application/merge-patch+json"},
        status="*",
    )
    assert kinto.app.get(bob_record + "/attachment", headers=BOB, status="*").body != CONTENT


# Ranges.


@pytest.mark.parametrize(
    "header,status,content_range,body",
    [
        ("bytes=0-", 416, "bytes */0", None),
        ("bytes=0-0", 416, "bytes */0", None),
        ("bytes=5-9", 416, "bytes */0", None),
        ("bytes=-1", 200, None, b""),
        ("bytes=-0", 416, "bytes */0", None),
        ("bytes=0-0,-1", 200, None, b""),
    ],
)
def test_ranges_of_an_empty_file(kinto_memory, header, status, content_range, body):
    """HELD: RFC 9110 §14.1.1, an empty representation satisfies only a suffix range."""
    kinto = kinto_memory
    kinto.create_collection()
    kinto.upload(URL, b"", "empty.txt")
    for method in ("get", "head"):
        response = _get(kinto, method=method, Range=header)
        assert response.status_int == status, (method, header, response.status)
        assert response.headers.get("Content-Range") == content_range
        if body is not None and method == "get":
            assert response.body == body


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-1,1-2",  # overlapping
        "bytes=0-,0-,0-,0-,0-,0-,0-,0-",  # many overlapping
        "bytes=-5,0-3",
        "bytes=" + ",".join(f"{i}-{i}" for i in range(2000)),  # a long list
        "bytes=0-1, 99999-",
    ],
)
def test_several_ranges_are_the_whole_file(stored, header):
    """HELD: several ranges (overlapping, many) are answered with the whole file (RFC 9110
    allows ignoring them), its full length, never a multipart body of amplified size."""
    kinto, _ = stored
    response = _get(kinto, Range=header)
    assert response.status_int == 200
    assert response.body == CONTENT
    assert response.headers["Content-Length"] == str(len(CONTENT))
    assert "Content-Range" not in response.headers


def test_a_416_carries_its_content_range_on_head_too(stored):
    """HELD."""
    kinto, _ = stored
    for method in ("get", "head"):
        response = _get(kinto, method=method, Range="bytes=99999-")
        assert response.status_int == 416
        assert response.headers["Content-Range"] == f"bytes */{len(CONTENT)}"


@pytest.mark.parametrize(
    "header",
    ["bytes=-99999999999999999999999", "bytes=0-99999999999999999999999999", "bytes=10239-"],
)
def test_edge_ranges(stored, header):
    """HELD."""
    kinto, _ = stored
    response = _get(kinto, Range=header)
    start, _, end = header.removeprefix("bytes=").partition("-")
    expected = CONTENT[int(start) :] if start else CONTENT
    assert (response.status_int, response.body) == (206, expected)
    assert response.headers["Content-Length"] == str(len(expected))


# Conditional requests.


def test_a_304_has_its_validators_and_no_body(stored):
    """HELD: RFC 9110 §15.4.5, a 304 has what a 200 would have had of ETag, Cache-Control,
    Vary, and no content."""
    kinto, meta = stored
    full = _get(kinto)
    for method in ("get", "head"):
        for condition in (
            {"If-None-Match": f'"{meta["hash"]}"'},
            {"If-None-Match": f'W/"{meta["hash"]}"'},
            {"If-Modified-Since": full.headers["Last-Modified"]},
        ):
            response = _get(kinto, method=method, **condition)
            assert response.status_int == 304, (method, condition)
            assert response.body == b""
            for name in ("ETag", "Cache-Control", "Vary", "Last-Modified"):
                assert response.headers.get(name) == full.headers.get(name), name
            assert "Content-Range" not in response.headers


def test_a_weak_if_match_or_if_range_never_matches(stored):
    """HELD: strong comparison for If-Match and If-Range."""
    kinto, meta = stored
    weak = f'W/"{meta["hash"]}"'
    assert _get(kinto, **{"If-Match": weak}).status_int == 412
    response = _get(kinto, Range="bytes=0-1", **{"If-Range": weak})
    assert (response.status_int, response.body) == (200, CONTENT)


# Racing: a download under way while its file is replaced and deleted after commit.


def _start_download(kinto, size=None):
    """A GET of the attachment whose body has not been read yet (no file wrapper: the
    stream is iterated as a WSGI server iterates it)."""
    wsgi_request = webob.Request.blank(URL + "/attachment", headers=ALICE)
    wsgi_request.environ.pop("wsgi.file_wrapper", None)
    response = wsgi_request.get_response(kinto.app.app)
    assert response.status_int == 200
    return response


def test_a_download_under_way_finishes_the_old_file_when_it_is_replaced_and_deleted(kinto):
    """HELD: the old blob is deleted right after the replacement commits (grace 0 in the
    tests), while its download is streaming: the download is the old file, whole."""
    kinto.create_collection()
    old, new = os.urandom(3 * 1024 * 1024 + 7), os.urandom(1024 * 1024 + 3)
    first = kinto.upload(URL, old, "old.txt").json
    response = _start_download(kinto)
    body = iter(response.app_iter)
    received = next(body)
    kinto.upload(URL, new, "new.txt")
    assert not kinto.exists(first["location"])  # Deleted at commit.
    received += b"".join(body)
    response.app_iter.close()
    assert received == old
    assert int(response.headers["Content-Length"]) == len(old)


def test_a_download_under_way_when_the_attachment_is_deleted(kinto):
    """HELD."""
    kinto.create_collection()
    old = os.urandom(3 * 1024 * 1024 + 7)
    kinto.upload(URL, old, "old.txt")
    response = _start_download(kinto)
    body = iter(response.app_iter)
    received = next(body)
    kinto.app.delete(URL + "/attachment", headers=ALICE, status=204)
    received += b"".join(body)
    response.app_iter.close()
    assert received == old


# Memory: a large download streams.


def test_memory_stays_flat_on_a_large_local_download(kinto_memory):
    """HELD."""
    kinto = kinto_memory
    kinto.create_collection()
    size = 48 * 1024 * 1024
    kinto.upload(URL, os.urandom(size), "big.txt")
    python_gc.collect()
    tracemalloc.start()
    try:
        response = _start_download(kinto)
        total = 0
        for chunk in response.app_iter:
            total += len(chunk)
        response.app_iter.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a 48 MiB download"


def test_memory_stays_flat_on_a_large_ranged_download(kinto_memory):
    """HELD."""
    kinto = kinto_memory
    kinto.create_collection()
    size = 48 * 1024 * 1024
    kinto.upload(URL, os.urandom(size), "big.txt")
    python_gc.collect()
    tracemalloc.start()
    try:
        wsgi_request = webob.Request.blank(
            URL + "/attachment", headers={**ALICE, "Range": "bytes=1-"}
        )
        wsgi_request.environ.pop("wsgi.file_wrapper", None)
        response = wsgi_request.get_response(kinto.app.app)
        assert response.status_int == 206
        total = sum(len(chunk) for chunk in response.app_iter)
        response.app_iter.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size - 1
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


# Stored objects that are not what the record describes.


@pytest.mark.parametrize("change", ["shorter", "longer", "empty"])
@pytest.mark.parametrize(
    "method,extra",
    [("get", {}), ("head", {}), ("get", {"Range": "bytes=0-99"}), ("get", {"Range": "bytes=-10"})],
)
def test_an_s3_object_of_another_length_is_never_served_as_the_file(
    tmp_path_factory, request, change, method, extra
):
    """HELD: never a 200 (or 206) with the recorded Content-Length over other bytes."""
    kinto = cached_app("memory", tmp_path_factory, request, blobs="s3")
    kinto.create_collection()
    meta = kinto.upload(URL, CONTENT, "data.txt").json
    body = {"shorter": CONTENT[:5000], "longer": CONTENT + b"x", "empty": b""}[change]
    client = s3_client(kinto.registry.attachment_store.client.meta.endpoint_url)
    client.put_object(Bucket=kinto.bucket, Key=kinto.key_of(meta["location"]), Body=body)
    response = _get(kinto, method=method, **extra)
    assert response.status_int == 404, (response.status, response.headers)


@pytest.mark.parametrize("change", ["shorter", "longer"])
def test_a_local_file_of_another_length_is_never_served(kinto_memory, change):
    """HELD."""
    kinto = kinto_memory
    kinto.create_collection()
    meta = kinto.upload(URL, CONTENT, "data.txt").json
    path = os.path.join(kinto.base_path, kinto.key_of(meta["location"]))
    with open(path, "r+b") as f:
        if change == "shorter":
            f.truncate(5000)
        else:
            f.seek(0, 2)
            f.write(b"x")
    for method, extra in (("get", {}), ("head", {}), ("get", {"Range": "bytes=0-9"})):
        response = _get(kinto, method=method, **extra)
        assert response.status_int == 404, (method, extra, response.status)


# Content-Disposition and Content-Type.


@pytest.mark.parametrize(
    "filename",
    [
        "x.txt\"; filename*=UTF-8''evil.html",
        "x.html; filename=evil.txt",
        "\u00e9t\u00e9.txt",
        "\u65e5\u672c\u8a9e.txt",
        'a\\"b.txt',
        "%41%0d%0a.txt",
    ],
)
def test_a_filename_makes_one_disposition_with_one_name(kinto_memory, filename):
    """HELD: one filename parameter and one filename*, whatever the name holds."""
    kinto = kinto_memory
    kinto.create_collection()
    kinto.upload(URL, b"x", filename)
    header = _get(kinto).headers["Content-Disposition"]
    assert header.isascii() and "\r" not in header and "\n" not in header
    import re

    # A quoted-string parser's view: kind; filename="<no quote, no backslash>"; filename*=...
    match = re.fullmatch(
        r"(inline|attachment); filename=\"([^\"\\\\]*)\"; filename\*=UTF-8''([A-Za-z0-9%._~-]*)",
        header,
    )
    assert match, header


@pytest.mark.parametrize(
    "declared",
    [
        "text/html",
        "TEXT/HTML",
        "text/html; charset=utf-8",
        "image/svg+xml",
        "application/xhtml+xml",
        "text/xml",
        "application/x-shockwave-flash",
        "multipart/x-mixed-replace; boundary=x",
    ],
)
def test_types_a_browser_runs_are_saved_not_shown(tmp_path_factory, request, declared):
    """HELD: served as ``attachment`` with ``nosniff``."""
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.extensions": "any"}
    )
    kinto.create_collection()
    kinto.upload(URL, b"<script>alert(1)</script>", "x.txt", mimetype=declared)
    response = _get(kinto)
    assert response.headers["Content-Disposition"].startswith("attachment;"), response.headers[
        "Content-Type"
    ]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# Served files (serve_files) and signed fetch URLs: no way out of the store, nor into its
# hidden parts.


@pytest.mark.parametrize(
    "path",
    [
        "/v1/attachments/..%2F..%2F..%2Fetc%2Fpasswd",
        "/v1/attachments/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/v1/attachments/%252e%252e/%252e%252e/etc/passwd",
        "/v1/attachments/%2Fetc%2Fpasswd",
        "/v1/attachments//etc/passwd",
        "/v1/attachments/blog/..%5C..%5Cetc%5Cpasswd",
    ],
)
def test_served_files_never_climb_out_of_the_store(tmp_path_factory, request, path):
    """HELD."""
    kinto = serving_app(tmp_path_factory, request)
    response = kinto.app.get(path, status="*")
    assert response.status_int in (400, 404), (path, response.status)
    assert b"root:" not in response.body


def test_served_files_hide_the_stores_own_files(tmp_path_factory, request):
    """HELD: hidden segments (the store's staging, tus and /data/files blobs) are never
    served, however encoded."""
    kinto = serving_app(tmp_path_factory, request)
    kinto.create_collection()
    meta = kinto.upload(URL, CONTENT, "data.txt").json
    assert kinto.app.get(served_path(meta["location"])).body == CONTENT
    local = {"REMOTE_ADDR": "127.0.0.1"}
    kinto.app.post("/v1/data/files", b"private data file", extra_environ=local)
    hidden = [name for name in kinto.files() if any(s.startswith(".") for s in name.split("/"))]
    assert hidden, kinto.files()
    for name in hidden:
        for path in (name, name.replace(".", "%2e"), name.replace("/", "%2F")):
            response = kinto.app.get("/v1/attachments/" + path, status="*")
            assert response.status_int == 404, (path, response.status)


SECRET = "s" * 32


@pytest.fixture
def fetching(tmp_path_factory, request):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.events.url_secret": SECRET}
    )
    kinto.create_collection()
    meta = kinto.upload(URL, CONTENT, "data.txt").json
    return kinto, kinto.key_of(meta["location"])


def _fetch(kinto, key, expires, signature, **headers):
    path = f"/v1/attachment-fetch/{key}?expires={expires}&signature={signature}"
    return kinto.app.get(path, headers=headers, status="*")


def test_signed_fetch_tampering(fetching):
    """HELD: a valid signature gives that key until then only."""
    kinto, key = fetching
    until = int(time.time()) + 600
    good = signed_urls.signature(SECRET, key, until)
    assert _fetch(kinto, key, until, good).body == CONTENT
    attempts = [
        (key, until + 1, good),
        (key, f"0{until}", good),  # the same number, written otherwise (verifies: same key)
        (key, f"{until}.0", good),
        (key, f" {until}", good),
        (key, f"+{until}", good),
        (key, until, good.upper()),
        (key, until, good[:-1]),
        (key, until, good + "0"),
        (key + "/../" + key.rsplit("/", 1)[-1], until, good),
        ("%2e%2e/" + key, until, good),
        (key, until, f"{good}&signature=0"),
        (key, f"{until}&expires=99999999999", good),
    ]
    for tampered_key, expires, signature in attempts:
        response = _fetch(kinto, tampered_key, expires, signature)
        if response.status_int == 200:
            # Only the very same key and expiry may be served.
            assert response.body == CONTENT and str(expires).lstrip("0").isdigit(), (
                tampered_key,
                expires,
                signature,
            )
            assert int(str(expires)) == until
        else:
            assert response.status_int in (400, 403, 404), (tampered_key, expires, response.status)
    # HEAD, ranges, conditions: as any download.
    head = kinto.app.head(
        f"/v1/attachment-fetch/{key}?expires={until}&signature={good}", status="*"
    )
    assert head.status_int == 200 and head.headers["Content-Length"] == str(len(CONTENT))
    assert _fetch(kinto, key, until, good, Range="bytes=1-2").body == CONTENT[1:3]


def test_signed_fetch_of_a_key_climbing_out_of_the_store(fetching):
    """HELD: even a URL the server would sign for a key with ``..`` (no key has one) serves
    nothing outside the store."""
    kinto, _ = fetching
    until = int(time.time()) + 600
    for key in ("../../../../etc/passwd", "blog/../../../etc/passwd", "/etc/passwd"):
        signature = signed_urls.signature(SECRET, key, until)
        quoted = signed_urls.signed_path(SECRET, key, until)
        response = kinto.app.get(f"/v1/attachment-fetch/{quoted}", status="*")
        assert response.status_int in (400, 403, 404), (key, response.status)
        assert b"root:" not in response.body
        response = _fetch(kinto, key.replace("..", "%2e%2e"), until, signature)
        assert response.status_int in (400, 403, 404), (key, response.status)


def test_a_private_record_s_etag_is_per_caller(stored):
    """HELD: a private file's answers are kept by its reader's cache only."""
    kinto, _ = stored
    response = _get(kinto)
    assert "private" in response.headers["Cache-Control"]
    assert "Authorization" in response.headers["Vary"]
    not_modified = _get(kinto, **{"If-None-Match": response.headers["ETag"]})
    assert "private" in not_modified.headers["Cache-Control"]
    assert "Authorization" in not_modified.headers["Vary"]


def test_hash_of_the_content_is_the_etag_after_replacement(stored):
    """HELD: the ETag changes with the content, and an old ETag no longer gets a 304."""
    kinto, meta = stored
    old_etag = f'"{meta["hash"]}"'
    new = os.urandom(500)
    kinto.upload(URL, new, "data.pdf", mimetype="application/pdf")
    response = _get(kinto, **{"If-None-Match": old_etag})
    assert (response.status_int, response.body) == (200, new)
    assert response.headers["ETag"] == f'"{hashlib.sha256(new).hexdigest()}"'
    resumed = _get(kinto, Range="bytes=10-", **{"If-Range": old_etag})
    assert (resumed.status_int, resumed.body) == (200, new)
    assert _get(kinto, Range="bytes=10-", **{"If-Match": old_etag}).status_int == 412


# A HEAD on signed downloads: answered with a redirect that a HEAD cannot follow.


def _sigv4_query_signature(url, method, secret="testing"):
    """The SigV4 query-string signature S3 computes for ``method`` on presigned ``url``
    (what S3 compares with ``X-Amz-Signature``)."""
    import hmac
    from urllib.parse import parse_qsl, quote, urlsplit

    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in sorted(params)
        if k != "X-Amz-Signature"
    )
    values = dict(params)
    canonical = "\n".join(
        [method, parts.path, query, f"host:{parts.netloc}\n", values["X-Amz-SignedHeaders"],
         "UNSIGNED-PAYLOAD"]
    )  # fmt: skip
    scope = values["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", values["X-Amz-Date"], scope,
         hashlib.sha256(canonical.encode()).hexdigest()]
    )  # fmt: skip
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), values["X-Amz-Signature"]


def test_a_head_on_signed_downloads_is_answered_not_sent_to_a_get_only_url(
    tmp_path_factory, request
):
    """Found by review (2026-12-05).

    docs/api.rst: ``GET`` / ``HEAD {record-url}/attachment`` give the file's
    ``Content-Length``, ``ETag``...; RFC 9110 §9.3.2: ``HEAD`` answers as ``GET``.

    With ``aws.presigned_downloads`` a ``HEAD`` gets the ``307`` of a ``GET``: to a URL
    presigned for ``GetObject``, whose SigV4 signature covers the method. S3 (and MinIO,
    GCS's V4 signatures likewise) answers ``403 SignatureDoesNotMatch`` to a ``HEAD`` of it:
    ``curl -I -L``, ``requests.head(allow_redirects=True)``, a page's ``fetch`` with
    ``method: "HEAD"`` all get a 403 for a file they may read. (moto checks no signature,
    so the signature is computed here as S3 computes it.) Fixed: a ``HEAD`` is never
    redirected: answered here, as a ``GET`` streamed."""
    from ..conftest import presigned_app

    kinto = presigned_app(tmp_path_factory, request)
    kinto.upload(URL, CONTENT, "data.pdf")
    got = kinto.app.get(URL + "/attachment", headers=ALICE, status=307)
    expected, given = _sigv4_query_signature(got.headers["Location"], "GET")
    assert expected == given  # The check is S3's: a GET of the URL is accepted.
    headed = kinto.app.head(URL + "/attachment", headers=ALICE, status="*")
    if headed.status_int == 307:
        expected, given = _sigv4_query_signature(headed.headers["Location"], "HEAD")
        assert expected == given, "a HEAD is sent to a URL that S3 signs for GET only: 403"
    else:
        assert headed.status_int == 200
        assert headed.headers["Content-Length"] == str(len(CONTENT))
