"""Data loss and corruption on the remote stores (S3 on moto's server, GCS on
fake-gcs-server), as a review tried them (2026-12-05). Real servers only, reached through
loopback proxies that cut answers; no SDK is mocked (callables of the real clients are at
most wrapped, to act at a chosen instant)."""

import hashlib
import json
import os
import re
import threading
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
from ..support.gcs_server import gcs_settings, running
from ..support.live import free_port
from ..support.tcpproxy import TcpProxy
from ..views.test_resumable import create, metadata, patch
from .test_remote_store_edges import store_app


URL = "/v1/buckets/blog/collections/articles/records/r1"
OTHER = "/v1/buckets/blog/collections/articles/records/r2"
KiB = 1024
MiB = 1024 * KiB
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}}}


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


def _key(app, location):
    base = app.app.registry.attachment_settings.base_url
    assert location.startswith(base), location
    return location[len(base) :]


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


# A delete of a chosen name, sent again by the SDK after its answer was lost, once the name
# was given to another record's file.


def _in_thread(action):
    results, failures = [], []

    def run():
        try:
            results.append(action())
        except BaseException as e:  # pragma: no cover
            failures.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not failures, failures
    return results[0]


def _upload(app, url, content, filename, status=(200, 201), data=None):
    params = [("data", json.dumps(data))] if data is not None else []
    return app.post(
        url + "/attachment",
        params=params,
        upload_files=[("attachment", filename, content)],
        headers=ALICE,
        status=status,
    )


@pytest.fixture
def s3_proxied(s3_server):
    host, port = s3_server.removeprefix("http://").rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    settings = s3_settings(f"http://127.0.0.1:{proxy.port}")
    settings["kinto.attachment.aws.max_attempts"] = "3"
    settings["kinto.attachment.randomize"] = "false"
    yield proxy, store_app(settings)
    proxy.close()


@pytest.fixture
def gcs_proxied(tmp_path):
    port = free_port()
    proxy = TcpProxy("127.0.0.1", port)
    external = f"http://127.0.0.1:{proxy.port}"
    with running(tmp_path, port=port, external_url=external) as direct:
        settings = gcs_settings(direct, chunk_size=str(256 * KiB), retry_seconds="10")
        settings["kinto.attachment.gcloud.endpoint_url"] = external
        settings["kinto.attachment.randomize"] = "false"
        yield proxy, store_app(settings)
    proxy.close()


def _stored(app, location):
    store = app.app.registry.attachment_store
    try:
        with store.open(_key(app, location)) as f:
            return f.read()
    except FileNotFoundError:
        return None


def test_s3_retried_delete_of_a_refused_uploads_blob_spares_the_next_file_of_its_name(
    s3_proxied,
):
    """Found by review (2026-12-05).

    r1's upload stores ``report.txt`` then its transaction fails (the collection's JSON
    schema refuses the record): the blob is deleted after the abort. S3 deletes it, the
    answer is lost, botocore sends the ``DeleteObjects`` again; meanwhile r2 uploads a file
    named ``report.txt``. It got the free name, and the retry deleted r2's file: the name is
    held while the delete may be sent (r2 gets ``report-1.txt``), r2's file is there."""
    proxy, app = s3_proxied
    app.patch_json(
        "/v1/buckets/blog/collections/articles", {"data": {"schema": SCHEMA}}, headers=ALICE
    )
    store = app.app.registry.attachment_store
    sends, taken = [], []

    def before_send(**kwargs):
        sends.append(1)
        if len(sends) == 1:
            proxy.cut_after = 0
        elif len(sends) == 2:
            proxy.cut_after = None
            taken.append(
                _in_thread(lambda: _upload(app, OTHER, b"r2's own file", "report.txt").json)
            )

    store.client.meta.events.register("before-send.s3.DeleteObjects", before_send)
    try:
        _upload(app, URL, b"refused", "report.txt", status=400, data={"title": 5})
    finally:
        store.client.meta.events.unregister("before-send.s3.DeleteObjects", before_send)
        proxy.cut_after = None
    assert len(sends) >= 2, sends
    other = taken[0]
    assert other["location"].endswith("/report-1.txt"), other  # report.txt is held.
    assert app.get(OTHER, headers=ALICE).json["data"]["attachment"] == other
    assert _stored(app, other["location"]) == b"r2's own file", "r2's file was deleted"


def test_gcs_retried_delete_of_a_refused_uploads_blob_spares_the_next_file_of_its_name(
    gcs_proxied,
):
    """Found by review (2026-12-05).

    As on S3: the blob of an upload whose transaction failed is deleted by name through a
    batch request that ``store.retried`` sends again when its answer is lost; meanwhile r2
    got the free name, and the retry deleted r2's file. The name is held now."""
    proxy, app = gcs_proxied
    app.patch_json(
        "/v1/buckets/blog/collections/articles", {"data": {"schema": SCHEMA}}, headers=ALICE
    )
    store = app.app.registry.attachment_store
    post = store.session.post
    sends, taken = [], []

    def watched(url, *args, **kwargs):
        if "/batch/" in url:
            sends.append(1)
            if len(sends) == 1:
                proxy.cut_after = 0
            elif len(sends) == 2:
                proxy.cut_after = None
                taken.append(
                    _in_thread(lambda: _upload(app, OTHER, b"r2's own file", "report.txt").json)
                )
        return post(url, *args, **kwargs)

    store.session.post = watched
    try:
        _upload(app, URL, b"refused", "report.txt", status=400, data={"title": 5})
    finally:
        store.session.post = post
        proxy.cut_after = None
    assert len(sends) >= 2, sends
    other = taken[0]
    assert other["location"].endswith("/report-1.txt"), other  # report.txt is held.
    assert app.get(OTHER, headers=ALICE).json["data"]["attachment"] == other
    assert _stored(app, other["location"]) == b"r2's own file", "r2's file was deleted"


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


def test_a_record_deleted_while_s3_is_unreachable_leaves_its_file_to_the_collector(s3_proxied):
    """The record's deletion commits (200), its blob's deletion fails
    after the commit; the blob is left for the collector, which removes it, and the name is
    never given to another file while the old one is still there."""
    proxy, app = s3_proxied
    registry = app.app.registry
    adoption.adopt(registry)
    keep = _upload(app, OTHER, b"r2's file", "keep.txt").json
    old = _upload(app, URL, b"r1's file", "report.txt").json
    proxy.down()
    try:
        app.delete(URL, headers=ALICE, status=200)
    finally:
        proxy.up()
    app.get(URL, headers=ALICE, status=404)
    assert _stored(app, old["location"]) == b"r1's file"  # Left behind.
    again = _upload(app, URL, b"r1's new file", "report.txt").json
    assert again["location"] != old["location"]
    gc.collect(registry, now=data_file_entries.msec_time() + 2 * 86400 * 1000)
    assert _stored(app, old["location"]) is None
    assert _stored(app, again["location"]) == b"r1's new file"
    assert _stored(app, keep["location"]) == b"r2's file"
