"""Data loss and corruption on the remote stores (S3 on moto's server, GCS on
fake-gcs-server), as a review tried them (2026-12-05). Real servers only, reached through
loopback proxies that cut answers; no SDK is mocked (callables of the real clients are at
most wrapped, to act at a chosen instant)."""

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import sqlalchemy

from kinto_attachment import adoption, gc
from kinto_attachment.state import data_file_entries, instance

from ..conftest import (
    ALICE,
    build_settings,
    make_app,
    own_database,
    s3_client,
    s3_settings,
)
from ..support.gcs_server import gcs_settings
from ..support.tcpproxy import TcpProxy
from ..views.test_resumable import create, metadata, patch
from .test_remote_store_edges import store_app
from .test_store_outages import _key, _stored, _upload


URL = "/v1/buckets/blog/collections/articles/records/r1"
OTHER = "/v1/buckets/blog/collections/articles/records/r2"
KiB = 1024
MiB = 1024 * KiB
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}


def _s3_app(request, **extra):
    settings = s3_settings(request.getfixturevalue("s3_server"))
    settings.update({f"kinto.attachment.{k}": v for k, v in extra.items()})
    return store_app(settings)


def _gcs_app(request, **extra):
    settings = gcs_settings(request.getfixturevalue("gcs_server"), chunk_size=str(256 * KiB))
    settings.update({f"kinto.attachment.{k}": v for k, v in extra.items()})
    return store_app(settings)


def _app(kind, request, **extra):
    return (_s3_app if kind == "s3" else _gcs_app)(request, **extra)


def _object_headers(app, key):
    """The headers the bucket itself serves the object with (its public URL)."""
    store = app.app.registry.attachment_store
    if hasattr(store, "client") and hasattr(store.client, "meta"):
        client = s3_client(store.client.meta.endpoint_url)
        head = client.head_object(Bucket=store.bucket, Key=key)
        return {
            "type": head.get("ContentType"),
            "disposition": head.get("ContentDisposition"),
        }
    blob = store.bucket.get_blob(key)
    return {"type": blob.content_type, "disposition": blob.content_disposition}


#: Types a browser renders as a page (scripts run in the bucket's origin).
RENDERED = (
    "text/html",
    "image/svg+xml",
    "application/xhtml+xml",
    "text/xml",
    "application/xml",
    "application/javascript",
    "text/javascript",
    "",
)


def _renders(headers):
    served = (headers["type"] or "").split(";")[0].strip().lower()
    return served in RENDERED and not (headers["disposition"] or "").startswith("attachment")


@pytest.mark.parametrize("kind", ["s3", "gcs"])
@pytest.mark.parametrize(
    "declared,filename",
    [
        ("text/html", "a.html"),
        ("image/svg+xml", "a.svg"),
        ("text/plain", "a.html"),
        ("application/xhtml+xml", "a.xhtml"),
        (None, "a.html"),
    ],
)
def test_objects_are_never_rendered_from_the_buckets_origin(kind, request, declared, filename):
    """What the bucket itself serves (its public URL, ``base_url``) for
    a multipart upload, a tus upload and a ``/data/files`` upload of a page with a script:
    never a type a browser renders without ``Content-Disposition: attachment``."""
    app = _app(kind, request, extensions="any")
    content = b"<script>alert(document.domain)</script>"
    app.delete(URL, headers=ALICE, status="*")
    spec = ("attachment", filename, content) + ((declared,) if declared else ())
    meta = app.post(URL + "/attachment", upload_files=[spec], headers=ALICE).json
    assert not _renders(_object_headers(app, _key(app, meta["location"])))
    app.delete(URL, headers=ALICE, status="*")
    _, url = create(
        app, len(content), meta=metadata(filename, **({"filetype": declared} if declared else {}))
    )
    patch(app, url, content, 0)
    attachment = app.get(URL, headers=ALICE).json["data"]["attachment"]
    assert not _renders(_object_headers(app, _key(app, attachment["location"])))
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if declared:
        headers["Content-Type"] = declared
    app.post("/v1/data/files?id=page", content, headers=headers, extra_environ=LOCAL)
    entry = data_file_entries.get(app.app.registry.storage, "page")
    assert not _renders(_object_headers(app, entry["key"]))


# A commit whose answer is lost: the record may well be committed.


@pytest.fixture
def s3_on_cut_postgresql(s3_server):
    """An app on PostgreSQL reached through a proxy (to lose a COMMIT's answer), files on S3."""
    with own_database("kinto_attachment_review") as url:
        base, name = url.rsplit("/", 1)
        host, port = base.rsplit("@", 1)[1].rsplit(":", 1)
        proxy = TcpProxy(host, int(port))
        proxied = f"{base.rsplit('@', 1)[0]}@127.0.0.1:{proxy.port}/{name}"
        settings = build_settings("postgresql", None, pg=proxied)
        del settings["kinto.attachment.base_path"]
        settings["kinto.attachment.extensions"] = "any"
        settings.update(s3_settings(s3_server))
        app = make_app(settings)
        app.put_json("/v1/buckets/blog", {}, headers=ALICE)
        app.put_json("/v1/buckets/blog/collections/articles", {}, headers=ALICE)
        try:
            yield proxy, app
        finally:
            proxy.close()
            engine = _engine(app)
            engine.dispose()


def _engine(app):
    return app.app.registry.storage.client.session_factory.session_factory.kw["bind"]


@pytest.mark.postgresql
def test_a_commit_whose_answer_is_lost_does_not_delete_the_file_its_record_names(
    s3_on_cut_postgresql,
):
    """Found by review (2026-12-05).

    The upload's blob is stored, its record written, and PostgreSQL commits; the answer to
    ``COMMIT`` is lost (the connection drops). The transaction counted as failed, and the new
    blob was deleted, although the record that names it was committed. A blob is deleted
    only once it is proved unreferenced: after a commit of unknown outcome it is left to the
    garbage collector (an orphan if the commit did not happen)."""

    proxy, app = s3_on_cut_postgresql
    armed, writers = [], set()

    def on_execute(conn, cursor, statement, parameters, context, executemany):
        text = str(parameters)
        if armed and "INSERT INTO objects" in statement and "'record'" in text:
            writers.add(id(conn))  # The connection of the request's transaction.

    def on_commit(conn):
        if armed and id(conn) in writers:
            armed.clear()
            proxy.cut_after = 0  # PostgreSQL commits; its answer never comes back.

    engine = _engine(app)
    sqlalchemy.event.listen(engine, "before_cursor_execute", on_execute)
    sqlalchemy.event.listen(engine, "commit", on_commit)
    try:
        armed.append(1)
        response = _upload(app, URL, b"the record's file", "report.txt", status="*")
    finally:
        sqlalchemy.event.remove(engine, "commit", on_commit)
        sqlalchemy.event.remove(engine, "before_cursor_execute", on_execute)
        proxy.cut_after = None
    assert writers, "no record written"
    assert proxy.cuts, "the COMMIT's answer was not cut"
    assert response.status_int >= 500  # The client is told the upload failed.
    record = app.get(URL, headers=ALICE, status="*")
    assert record.status_int == 200, "PostgreSQL committed the record"
    attachment = record.json["data"]["attachment"]
    assert _stored(app, attachment["location"]) == b"the record's file", (
        "the record was committed, and its file deleted"
    )
    app.get(URL + "/attachment", headers=ALICE, status=200)


ODD_NAMES = [
    "a b+c%20d.txt",
    "..",
    "../../etc/passwd.txt",
    "Rapport Été.txt",
    "Rapport E\u0301te\u0301.txt",
    "REPORT.TXT",
    "report.txt",
    "%2e%2e%2f.txt",
    "\u6587\u66f8.txt",
    "x" * 600 + ".txt",
    "\U0001f600" * 300 + ".txt",
    "a\\b\\c.txt",
    ".hidden.txt",
    "__uploads__.txt",
    "con.txt",
]


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_odd_file_names_get_distinct_safe_keys_and_no_5xx(kind, request):
    """Odd client file names (``randomize = false``) become distinct keys
    of ``[A-Za-z0-9._-]``, never overwrite one another, and download whole."""
    extra = {"randomize": "false", "extensions": "any"}
    if kind == "s3":
        extra["aws.presigned_downloads"] = "true"
    app = _app(kind, request, **extra)
    keys = {}
    for number, name in enumerate(ODD_NAMES):
        url = f"/v1/buckets/blog/collections/articles/records/r{number}"
        content = f"file {number}".encode()
        response = _upload(app, url, content, name, status="*")
        assert response.status_int < 500, (name, response.status_int, response.body[:200])
        if response.status_int >= 400:
            continue
        key = _key(app, response.json["location"])
        assert re.fullmatch(r"[A-Za-z0-9._/-]+", key), key
        assert key not in keys, (name, keys.get(key))
        keys[key] = name
        got = app.get(url + "/attachment", headers=ALICE, status=(200, 307))
        if got.status_int == 307:
            assert requests.get(got.location, timeout=10).content == content
        else:
            assert got.body == content
    for key, name in keys.items():
        number = ODD_NAMES.index(name)
        with app.app.registry.attachment_store.open(key) as f:
            assert f.read() == f"file {number}".encode(), name


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_gc_over_several_pages_deletes_orphans_only(kind, request):
    """More than one listing page (1,000 keys), orphans deleted by
    batches while the listing goes on, referenced files sorted among them, a tus upload in
    progress (its working object, its S3 multipart upload): only the orphans go, and the
    upload finishes with exact bytes."""
    app = _app(kind, request, **{"gc.orphans_grace_seconds": "60"})
    registry = app.app.registry
    store = registry.attachment_store
    named = {}
    for number in range(3):
        url = f"/v1/buckets/blog/collections/articles/records/r{number}"
        named[url] = _upload(app, url, f"named {number}".encode(), "a.txt").json["location"]
    adoption.adopt(registry)
    content = os.urandom(6 * MiB if kind == "s3" else 600 * KiB)
    half = len(content) // 2 + 7
    _, tus_url = create(app, len(content))
    patch(app, tus_url, content[:half], 0)

    def put(key):
        staged = store.stage(key, "text/plain", random=True)
        staged.write(b"orphan")
        return staged.commit()

    orphans = [f"{instance.random_name(registry)}.txt" for _ in range(1100)]
    orphans += [f"blog/articles/{instance.random_name(registry)}.bin" for _ in range(100)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, orphans))
    report = gc.collect(registry, now=data_file_entries.msec_time() + 120_000)
    left = {b.key for b in store.iter_blobs()}
    for url, location in named.items():
        assert _stored(app, location) is not None, url
        app.get(url + "/attachment", headers=ALICE, status=200)
    assert not set(orphans) & left, "orphans left"
    assert len(report.orphans) == len(orphans)
    patch(app, tus_url, content[half:], half)
    attachment = app.get(URL, headers=ALICE).json["data"]["attachment"]
    assert attachment["hash"] == hashlib.sha256(content).hexdigest()
    assert _stored(app, attachment["location"]) == content
