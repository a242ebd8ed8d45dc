"""Cache headers: stored files (S3 and GCS objects, ``serve_files``) cached as their names allow,
downloads through the API as Kinto caches the record, never a signed URL kept past its life.

Every route that serves a file, on every store: ``{record}/attachment`` (local, S3, GCS, and
S3's presigned redirects), ``serve_files``, ``/data/files``; and Kinto's cache-expiry settings
compared with what Kinto itself answers for the record.
"""

import os
import re

import pytest
from kinto.core.utils import msec_time
from pyramid.exceptions import ConfigurationError

from kinto_attachment import gc
from kinto_attachment import settings as attachment_settings
from kinto_attachment.downloads import caching
from kinto_attachment.state import replaced
from kinto_attachment.uploads.policies import Policy

from ..conftest import (
    ALICE,
    BOB,
    build_settings,
    cached_app,
    make_app,
    presigned_app,
    s3_client,
    served_path,
    serving_app,
)
from ..support.gcs_server import gcs_client, gcs_settings
from ..views.test_resumable import create, patch


URL = "/v1/buckets/blog/collections/articles/records/r1"
COLLECTION = "/v1/buckets/blog/collections/articles"
PUBLIC = {"read": ["system.Everyone"]}
MiB = 1024 * 1024
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
SHORT = "public, max-age=3600"


# Settings.


def parse(kinto=None, **values):
    return attachment_settings.parse(
        {
            "attachment.base_path": "/tmp/files",
            **{f"attachment.{k}": v for k, v in values.items()},
            **(kinto or {}),
        }
    )


def test_random_names_are_immutable_by_default():
    assert parse().caching.files == "public, max-age=31536000, immutable"
    assert caching.files_cache_control([Policy()], 60) == caching.IMMUTABLE


@pytest.mark.parametrize(
    "values,expected",
    [
        ({"randomize": "false"}, SHORT),
        ({"resources.blog.articles.randomize": "false"}, SHORT),
        ({"resources.blog.randomize": "false", "files_cache_expires_seconds": "60"}, None),
        ({"randomize": "false", "files_cache_expires_seconds": "0"}, "public, no-cache"),
        # Randomized everywhere: the lifetime of reusable names does not apply.
        ({"files_cache_expires_seconds": "60"}, caching.IMMUTABLE),
    ],
)
def test_reusable_names_get_a_shorter_lifetime(values, expected):
    assert parse(**values).caching.files == (expected or "public, max-age=60")


def test_the_environment_sets_the_lifetime(monkeypatch):
    monkeypatch.setenv("KINTO_ATTACHMENT_FILES_CACHE_EXPIRES_SECONDS", "120")
    assert parse(randomize="false").caching.files == "public, max-age=120"


@pytest.mark.parametrize(
    "values,named",
    [
        ({"attachment.files_cache_expires_seconds": "-1"}, "attachment.files_cache_expires_"),
        ({"attachment.files_cache_expires_seconds": "soon"}, "attachment.files_cache_expires_"),
        ({"record_cache_expires_seconds": "soon"}, "kinto.record_cache_expires_seconds"),
        ({"blog_record_cache_expires_seconds": "1h"}, "kinto.blog_record_cache_expires_seconds"),
    ],
)
def test_bad_lifetimes_stop_start_up_naming_the_setting(values, named):
    with pytest.raises(ConfigurationError, match=re.escape(named)):
        parse(values)


def test_kinto_record_lifetimes_are_read_once():
    parsed = parse(
        {
            "record_cache_expires_seconds": 30,  # Kinto gives numbers of its ini as numbers.
            "blog_record_cache_expires_seconds": "20",
            "kinto.blog_record_cache_expires_seconds": "20",  # Kinto keeps both spellings.
            "blog.articles.record_cache_expires_seconds": "-1",
        }
    )
    assert dict(parsed.caching.record_expires) == {
        "record_cache_expires_seconds": 30,
        "blog_record_cache_expires_seconds": 20,
        "blog.articles.record_cache_expires_seconds": -1,
    }
    lifetime = parsed.caching.record_lifetime
    assert lifetime("blog", "articles", {}) is None  # Not positive: no lifetime.
    assert lifetime("blog", "other", {}) == 30  # Kinto's order: dotted names, then global.
    assert lifetime("site", "pages", {}) == 30
    assert lifetime("site", "pages", {"cache_expires": 90}) == 90  # The longest of both.
    assert lifetime("site", "pages", {"cache_expires": 10}) == 30


@pytest.mark.parametrize(
    "public,lifetime,expires,expected",
    [
        (True, None, None, ("no-cache", ())),
        (True, 60, None, ("public, max-age=60", ())),
        (True, 600, 300, ("public, max-age=150", ())),
        (True, 60, 300, ("public, max-age=60", ())),
        (True, None, 300, ("no-cache", ())),
        (True, 60, 1, ("no-cache", ())),
        (False, 60, None, ("private, no-cache", ("Authorization",))),
        (False, 60, 300, ("private, no-store", ("Authorization",))),
    ],
)
def test_record_file_headers(public, lifetime, expires, expected):
    assert caching.record_file(public, lifetime, expires) == expected


# {record}/attachment: Kinto's conventions for the record.


def upload(kinto, permissions=None, content=b"hello", url=URL, filename="hello.txt"):
    kinto.create_collection()
    return kinto.upload(url, content, filename, permissions=permissions).json


def download(kinto, headers=ALICE, status=200, **extra):
    return kinto.app.get(URL + "/attachment", headers={**headers, **extra}, status=status)


def vary(response):
    return [v.strip() for v in response.headers.get("Vary", "").split(",") if v.strip()]


def test_a_private_record_is_cached_by_its_reader_only(kinto):
    meta = upload(kinto)
    response = download(kinto)
    assert response.headers["Cache-Control"] == "private, no-cache"
    assert "Authorization" in vary(response)
    # As is the 304 (RFC 9110 §15.4.5: the headers the 200 would have).
    not_modified = download(kinto, status=304, **{"If-None-Match": f'"{meta["hash"]}"'})
    assert not_modified.headers["Cache-Control"] == "private, no-cache"
    assert "Authorization" in vary(not_modified)


def test_a_public_record_is_public_whoever_asks(kinto):
    upload(kinto, permissions=PUBLIC)
    for headers in ({}, ALICE, BOB):
        response = download(kinto, headers=headers)
        assert response.headers["Cache-Control"] == "no-cache"
        assert "Authorization" not in vary(response)


def test_a_public_record_of_the_default_bucket_is_cached_per_caller(tmp_path_factory, request):
    """Found by review (2026-12-05).

    ``/buckets/default/...`` names each user's own bucket: Alice's public file, cacheable an
    hour, was ``public`` without ``Vary: Authorization``, and a shared cache in front would
    give it to Bob at the same URL (or anybody's hostile file to the next user)."""
    includes = "kinto.plugins.default_bucket kinto.plugins.flush kinto_attachment"
    kinto = cached_app("memory", tmp_path_factory, request, **{"kinto.includes": includes})
    url = "/v1/buckets/default/collections/shared/records/r1"
    for who, content in ((ALICE, b"alice's"), (BOB, b"bob's")):
        kinto.upload(url, content, "a.txt", headers=who)
        kinto.app.patch_json(url, {"permissions": {"read": ["system.Everyone"]}}, headers=who)
        collection = "/v1/buckets/default/collections/shared"
        kinto.app.patch_json(collection, {"data": {"cache_expires": 3600}}, headers=who)
    for who, content in ((ALICE, b"alice's"), (BOB, b"bob's")):
        response = kinto.app.get(url + "/attachment", headers=who)
        assert response.body == content  # One URL, two files.
        assert "public" not in response.headers["Cache-Control"]
        assert "Authorization" in vary(response)


def test_readable_through_the_collection_is_public(kinto_memory):
    kinto = kinto_memory
    upload(kinto)
    kinto.app.patch_json(COLLECTION, {"permissions": PUBLIC}, headers=ALICE)
    assert download(kinto, headers=BOB).headers["Cache-Control"] == "no-cache"
    # Readable by every authenticated user is still not public: it depends on the caller.
    kinto.app.put_json(
        COLLECTION, {"permissions": {"read": ["system.Authenticated"]}}, headers=ALICE
    )
    assert download(kinto, headers=BOB).headers["Cache-Control"] == "private, no-cache"


def max_age(response):
    """What caches may keep a response for: its max-age, or 0 when it says not to keep it."""
    header = response.headers.get("Cache-Control", "")
    match = re.search(r"max-age=(\d+)", header)
    if "no-cache" in header or "no-store" in header or match is None:
        return 0
    return int(match.group(1))


KINTO_EXPIRY_SETTINGS = [
    {},
    {"kinto.record_cache_expires_seconds": "30"},
    {"kinto.blog_record_cache_expires_seconds": "20"},
    {"kinto.blog_articles_record_cache_expires_seconds": "10"},
    {"kinto.blog.record_cache_expires_seconds": "25"},
    {"kinto.blog.articles.record_cache_expires_seconds": "15"},
    {
        "kinto.record_cache_expires_seconds": "30",
        "kinto.blog_articles_record_cache_expires_seconds": "10",
        "kinto.other_record_cache_expires_seconds": "40",
    },
    {"kinto.blog.record_cache_expires_seconds": "0"},
]


@pytest.mark.parametrize("settings", KINTO_EXPIRY_SETTINGS)
@pytest.mark.parametrize("cache_expires", [None, 5, 50])
def test_kinto_record_lifetimes_apply_to_the_file(
    tmp_path_factory, request, settings, cache_expires
):
    """Whatever Kinto lets caches keep the record for, the file gets too."""
    kinto = cached_app("memory", tmp_path_factory, request, **settings)
    upload(kinto, permissions=PUBLIC)
    if cache_expires is not None:
        kinto.app.patch_json(COLLECTION, {"data": {"cache_expires": cache_expires}}, headers=ALICE)
    record = kinto.app.get(URL)
    response = download(kinto, headers={})
    assert max_age(response) == max_age(record)
    if max_age(record):
        assert response.headers["Cache-Control"] == f"public, max-age={max_age(record)}"
    # Kinto's answer to an authenticated reader is never cached; the public file is.
    assert (
        download(kinto, headers=BOB).headers["Cache-Control"]
        == (response.headers["Cache-Control"])
    )


# Presigned redirects: never cached longer than the URL lives.


@pytest.mark.parametrize(
    "expires,lifetime,expected",
    [("300", "3600", "public, max-age=150"), ("300", "60", "public, max-age=60")],
)
def test_presigned_redirects_expire_before_their_url(
    tmp_path_factory, request, expires, lifetime, expected
):
    kinto = presigned_app(
        tmp_path_factory,
        request,
        **{
            "kinto.attachment.aws.presigned_expires": expires,
            "kinto.record_cache_expires_seconds": lifetime,
        },
    )
    meta = kinto.upload(URL, b"hello", "hello.txt").json
    private = download(kinto, status=307)
    assert private.headers["Cache-Control"] == "private, no-store"
    assert "Authorization" in vary(private)
    # No validators: a cache revalidating a stale redirection would keep an expired URL.
    assert "ETag" not in private.headers and "Last-Modified" not in private.headers
    kinto.app.patch_json(URL, {"permissions": PUBLIC}, headers=ALICE)
    public = download(kinto, headers={}, status=307)
    assert public.headers["Cache-Control"] == expected
    assert "ETag" not in public.headers
    # A client that has the content still gets its 304.
    download(kinto, headers={}, status=304, **{"If-None-Match": f'"{meta["hash"]}"'})


# Stored files: serve_files.


def served(kinto, location, status=200, **headers):
    return kinto.app.get(served_path(location), headers=headers, status=status)


def test_served_files_are_immutable_with_validators(tmp_path_factory, request):
    kinto = serving_app(tmp_path_factory, request)
    meta = upload(kinto, content=b"0123456789")
    response = served(kinto, meta["location"])
    assert response.headers["Cache-Control"] == caching.IMMUTABLE
    etag, last_modified = response.headers["ETag"], response.headers["Last-Modified"]
    path = kinto.base_path + "/" + kinto.key_of(meta["location"])
    assert response.last_modified.timestamp() == int(os.stat(path).st_mtime)
    for condition in ({"If-None-Match": etag}, {"If-Modified-Since": last_modified}):
        not_modified = served(kinto, meta["location"], status=304, **condition)
        assert not_modified.body == b""
        assert (not_modified.headers["ETag"], not_modified.headers["Cache-Control"]) == (
            etag,
            caching.IMMUTABLE,
        )
    assert served(kinto, meta["location"], **{"If-None-Match": '"other"'}).body == b"0123456789"
    ranged = served(kinto, meta["location"], status=206, Range="bytes=2-3", **{"If-Range": etag})
    assert (ranged.body, ranged.headers["Cache-Control"]) == (b"23", caching.IMMUTABLE)
    assert served(kinto, meta["location"], Range="bytes=2-3", **{"If-Range": '"old"'}).body == (
        b"0123456789"
    )
    head = kinto.app.head(served_path(meta["location"]))
    assert (head.headers["ETag"], head.headers["Cache-Control"]) == (etag, caching.IMMUTABLE)


def test_a_head_on_a_served_file_finds_it_once(tmp_path_factory, request, monkeypatch):
    """The view's stat found the file: the response does not ask the store again."""
    kinto = serving_app(tmp_path_factory, request)
    meta = upload(kinto, content=b"0123456789")
    store, asked = kinto.registry.attachment_store, []
    stat = store.stat
    monkeypatch.setattr(store, "stat", lambda key: asked.append(key) or stat(key))
    head = kinto.app.head(served_path(meta["location"]))
    assert (head.headers["Content-Length"], asked) == ("10", [])
    kinto.app.head(URL + "/attachment", headers=ALICE)  # The record's: found by the store.
    assert asked == [kinto.key_of(meta["location"])]


def test_a_reused_name_is_served_short_and_with_another_etag(tmp_path_factory, request):
    kinto = serving_app(tmp_path_factory, request, **{"kinto.attachment.randomize": "false"})
    first = upload(kinto, content=b"first")
    before = served(kinto, first["location"])
    assert before.headers["Cache-Control"] == SHORT
    kinto.app.delete(URL + "/attachment", headers=ALICE)
    ended = msec_time() + (replaced.QUARANTINE_SECONDS + 1) * 1000
    gc.collect(kinto.registry, now=ended, orphans=False)  # The name's quarantine is over.
    second = kinto.upload(URL, b"other", "hello.txt").json
    assert second["location"] == first["location"]  # The name was free again.
    after = served(kinto, second["location"], **{"If-None-Match": before.headers["ETag"]})
    assert after.body == b"other"
    assert after.headers["ETag"] != before.headers["ETag"]


# /data/files: private to whoever may see the route.


@pytest.mark.parametrize("blobs", ["local", "s3"])
def test_data_files_are_private(tmp_path_factory, request, blobs):
    kinto = cached_app("memory", tmp_path_factory, request, blobs=blobs)
    file_id = kinto.app.post("/v1/data/files", b"data", extra_environ=LOCAL).text
    response = kinto.app.get(f"/v1/data/files/{file_id}", extra_environ=LOCAL)
    assert response.headers["Cache-Control"] == "private, no-cache"
    assert "Authorization" in vary(response)
    etag = response.headers["ETag"]
    not_modified = kinto.app.get(
        f"/v1/data/files/{file_id}",
        headers={"If-None-Match": etag},
        extra_environ=LOCAL,
        status=304,
    )
    assert not_modified.headers["Cache-Control"] == "private, no-cache"


# Stored files: the objects of S3 and GCS carry the header themselves.


def s3_head(kinto, location):
    endpoint = kinto.registry.attachment_store.client.meta.endpoint_url
    return s3_client(endpoint).head_object(Bucket=kinto.bucket, Key=kinto.key_of(location))


@pytest.mark.parametrize(
    "settings,expected",
    [
        ({}, caching.IMMUTABLE),
        ({"kinto.attachment.randomize": "false"}, SHORT),
        (
            {
                "kinto.attachment.resources.blog.randomize": "false",
                "kinto.attachment.files_cache_expires_seconds": "600",
            },
            "public, max-age=600",
        ),
        ({"kinto.attachment.aws.cache_control": "max-age=60"}, "max-age=60"),
    ],
)
@pytest.mark.parametrize("size", [10, 5 * MiB + 1])  # One PutObject; a multipart upload.
def test_s3_objects(tmp_path_factory, request, settings, expected, size):
    kinto = cached_app("memory", tmp_path_factory, request, blobs="s3", **settings)
    meta = upload(kinto, content=os.urandom(size), filename="data.txt")
    assert s3_head(kinto, meta["location"])["CacheControl"] == expected


def test_s3_objects_of_tus_uploads(tmp_path_factory, request):
    kinto = cached_app("memory", tmp_path_factory, request, blobs="s3")
    kinto.create_collection()
    _, url = create(kinto.app, 5)
    patch(kinto.app, url, b"hello", 0)
    meta = kinto.app.get(URL, headers=ALICE).json["data"]["attachment"]
    assert s3_head(kinto, meta["location"])["CacheControl"] == caching.IMMUTABLE


@pytest.mark.parametrize(
    "settings,expected",
    [
        ({}, caching.IMMUTABLE),
        ({"kinto.attachment.randomize": "false"}, SHORT),
        ({"kinto.attachment.gcloud.cache_control": "max-age=60"}, "max-age=60"),
    ],
)
def test_gcs_objects(gcs_server, settings, expected):
    config = {**build_settings("memory", None, **settings), **gcs_settings(gcs_server)}
    del config["kinto.attachment.base_path"]
    app = make_app(config)
    app.put_json("/v1/buckets/blog", {}, headers=ALICE)
    app.put_json("/v1/buckets/blog/collections/articles", {}, headers=ALICE)
    meta = app.post(
        URL + "/attachment", upload_files=[("attachment", "hello.txt", b"hi")], headers=ALICE
    ).json
    key = meta["location"][len("https://files.example.com/") :]
    bucket = config["kinto.attachment.gcloud.bucket_name"]
    blob = gcs_client(gcs_server).bucket(bucket).get_blob(key)
    assert blob.cache_control == expected
    # Downloads through the API are Kinto's, on GCS as elsewhere.
    response = app.get(URL + "/attachment", headers=ALICE)
    assert (response.body, response.headers["Cache-Control"]) == (b"hi", "private, no-cache")


def test_a_download_varies_on_the_origin(tmp_path_factory, request):
    """A public download, cached by CDNs, echoes an allowed ``Origin`` (Cornice): it varies
    on it, with or without one, so that no page is given another's answer (found by review,
    2026-12-05)."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{
            "kinto.record_cache_expires_seconds": "3600",
            "kinto.cors_origins": "https://a.example https://b.example",
        },
    )
    kinto.create_collection()
    kinto.upload(URL, b"hello", "hello.txt", permissions=PUBLIC)
    response = kinto.app.get(URL + "/attachment", headers={"Origin": "https://a.example"})
    assert response.headers["Cache-Control"] == SHORT
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"
    assert "Origin" in vary(response)
    assert "Origin" in vary(kinto.app.get(URL + "/attachment"))
