"""tus's concatenation and creation-defer-length under attack (a review of 2026-12-05): a final
upload naming parts it must not take, parts in use elsewhere, GCS finals, what a killed
final leaves, and what the documentation says of them."""

import hashlib
import os
import re
import threading
from pathlib import Path

import pytest
import webob
from kinto.core.utils import msec_time

from kinto_attachment import gc
from kinto_attachment.state import tus_uploads

from ..conftest import ALICE, BOB, Kinto, build_settings, cached_app, flush, make_app
from ..support.gcs_server import gcs_client, gcs_settings
from .test_resumable import RECORD, TUS, UPLOADS, create, head, metadata, patch
from .test_resumable_concatenation import final_upload, partial_upload, path_of


API_PAGE = Path(__file__).parent.parent.parent / "docs" / "api.rst"
GRACE_SECONDS = 60


@pytest.fixture
def kinto_local(tmp_path_factory, request):
    kinto = cached_app("memory", tmp_path_factory, request)
    kinto.create_collection()
    return kinto


@pytest.fixture(scope="module")
def gcs_app(gcs_server):
    """An app on the GCS emulator (memory backend), for the module."""
    extra = {"kinto.attachment.gc.orphans_grace_seconds": str(GRACE_SECONDS)}
    config = {**build_settings("memory", None, **extra), **gcs_settings(gcs_server)}
    del config["kinto.attachment.base_path"]
    bucket = gcs_client(gcs_server).bucket(config["kinto.attachment.gcloud.bucket_name"])
    return make_app(config), bucket


@pytest.fixture
def kinto_gcs(gcs_app):
    """The GCS app, its storage and bucket emptied, with the blog/articles collection."""
    app, bucket = gcs_app
    flush(app)
    for blob in bucket.list_blobs():
        blob.delete()
    kinto = Kinto(app)
    kinto.gcs_bucket = bucket
    kinto.create_collection()
    return kinto


def gcs_files(kinto):
    return sorted(blob.name for blob in kinto.gcs_bucket.list_blobs())


def gcs_key(location):
    return location[len("https://files.example.com/") :]


# Documentation.


def test_api_errors_table_does_not_refuse_a_partial_upload_named_twice():
    """Found by review (2026-12-05).

    docs/api.rst's errors table lists, under 400/107, "a final upload naming [...] a
    partial upload twice". docs/resumable-uploads.rst says the opposite ("one named twice
    joined twice (as tus allows)"), and so does the server since a3f7888: such a final upload
    is a 201 (tests/protocols/test_tus_conformance.py::
    test_final_upload_may_name_a_partial_upload_twice). A client developer reading the
    errors table is told a refusal that never comes.

    It was: the stale clause was still in the 400 row (left from 456cb39, when it was a
    400). Fixed: dropped "a partial upload twice," from that row of docs/api.rst."""
    stale = "a partial upload twice" in " ".join(API_PAGE.read_text().split())
    assert not stale, "docs/api.rst: a final upload naming a partial upload twice is a 201"


# Semantics.


def test_a_final_or_finished_upload_named_as_a_part_is_not_a_partial_upload(kinto_local):
    """Found by review (2026-12-05).

    docs/api.rst: a final upload naming "one that is not partial" is a 400 (errno 107,
    "Upload-Concat: {url} is not a partial upload."); its 404 is for a partial upload that is
    gone ("another user's, expired, or made into a final upload already"). An unfinished
    single upload named as a part gets that 400.

    It was: a *finished* upload of the same user and record, single or final, whose URL
    still answers HEAD 200 (``Upload-Concat: final;...`` for the final one), is a 404
    "unknown partial upload ... (expired, or made into a final upload already?)": the server
    says it does not know an upload it answers for, and a client (or its developer) is sent
    looking for an expiry. ``concatenation._partial`` reads only the unfinished uploads'
    states (``tus_uploads.get``), never the finished ones (``tus_uploads.finished``).

    Fixed: in ``_partial``, when no state is found, look up ``tus_uploads.finished(cache, id)``;
    if it is the user's upload of this record, refuse it with ``concat_not_partial`` (400)."""
    app = kinto_local.app
    final = final_upload(app, [partial_upload(app, b"abc")]).headers["Location"]
    assert head(app, path_of(final)).headers["Upload-Concat"].startswith("final;")
    _, single = create(app, 3)
    patch(app, single, b"xyz", 0)
    assert head(app, single).headers["Upload-Offset"] == "3"
    part = partial_upload(app, b"def")
    for url in (final, single):
        response = final_upload(app, [part, url], status="*")
        assert response.status_code == 400, (url, response.status, response.json)
        assert "is not a partial upload" in response.json["message"]
    assert head(app, path_of(part)).headers["Upload-Offset"] == "3"  # Left as it was.


# Attacks that held.


def _spellings(url):
    """``url`` (an absolute upload URL) written otherwise: another host or scheme, a query, a
    fragment, a path only, percent-encoded or upper-cased id, a doubled slash."""
    path = path_of(url)
    upload_id = url.rsplit("/", 1)[1]
    return [
        url,
        "https://evil.example" + path,
        "//evil.example" + path,
        "javascript:" + path,
        path,
        path + "?as=alice",
        path + "#alice",
        path.replace(upload_id, "%" + format(ord(upload_id[0]), "02x") + upload_id[1:]),
        path.replace(upload_id, upload_id.upper()),
        path.replace("/uploads/", "/uploads//"),
        path.replace("/uploads/", "/uploads/./"),
        path + "/",
    ]


def test_another_users_partial_upload_is_refused_however_named(kinto_local):
    """Held against a review (2026-12-05).

    Bob (who may write the record) names Alice's finished partial upload in his final
    upload, under every spelling of its URL, alone, twice, or after one of his own: never a
    201, never a 5xx, nothing of Alice's in the record; Alice's partial upload stays usable."""
    app = kinto_local.app
    app.put_json(RECORD, {"permissions": {"write": ["system.Authenticated"]}}, headers=ALICE)
    alices = partial_upload(app, b"alice's secret")
    before = kinto_local.files()
    for spelled in _spellings(alices):
        bobs = partial_upload(app, b"bob", headers=BOB)
        for urls in ([spelled], [spelled, spelled], [bobs, spelled]):
            response = final_upload(app, urls, status="*", headers=BOB)
            assert response.status_code in (400, 404), (urls, response.status)
        app.delete(path_of(bobs), headers={**BOB, **TUS}, status=204)
    assert kinto_local.files() == before
    assert "attachment" not in app.get(RECORD, headers=ALICE).json["data"]
    final_upload(app, [alices])
    assert app.get(RECORD + "/attachment", headers=ALICE).body == b"alice's secret"


def test_parts_of_other_records_or_routes_are_refused(kinto_local):
    """Held against a review (2026-12-05).

    a partial upload of another record named under this record's uploads (its id
    with this record's prefix: the prefix check passes, ``is_mine`` refuses), or a
    ``/data/files`` URL of the same id: refused, nothing made; both usable where they
    belong."""
    app = kinto_local.app
    other_uploads = UPLOADS.replace("/r1/", "/r2/")
    other = partial_upload(app, b"r2's", uploads=other_uploads)
    upload_id = other.rsplit("/", 1)[1]
    before = kinto_local.files()
    final_upload(app, [UPLOADS + "/" + upload_id], status=404)
    final_upload(app, ["/v1/data/files/" + upload_id], status=400)
    final_upload(app, ["/v1/buckets/blog/collections/articles/records/r2"], status=400)
    assert kinto_local.files() == before
    app.get(RECORD, headers=ALICE, status=404)
    final_upload(app, [other], uploads=other_uploads)
    assert app.get(RECORD.replace("/r1", "/r2") + "/attachment", headers=ALICE).body == b"r2's"


def test_parts_held_by_a_final_upload_refuse_every_other_request(kinto_local, monkeypatch):
    """Held against a review (2026-12-05).

    while a final upload concatenates its parts, a second final upload naming one
    of them, a termination and a PATCH of one are 423 (nothing removed under the first), a
    HEAD still answers; the first then makes the file, and the parts are gone."""
    app = kinto_local.app
    first, second = partial_upload(app, b"abc"), partial_upload(app, b"def")
    store_class = type(kinto_local.registry.attachment_store)
    concatenate = store_class.concatenate
    inside, release, answers = threading.Event(), threading.Event(), []

    def held(self, *args, **kwargs):
        inside.set()
        release.wait(10)
        return concatenate(self, *args, **kwargs)

    def run():
        headers = {**ALICE, **TUS, "Upload-Concat": f"final;{first} {second}"}
        headers["Upload-Metadata"] = metadata("whole.txt")
        answers.append(
            webob.Request.blank(UPLOADS, method="POST", headers=headers).get_response(app.app)
        )

    monkeypatch.setattr(store_class, "concatenate", held)
    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert inside.wait(10)
        monkeypatch.setattr(store_class, "concatenate", concatenate)
        final_upload(app, [second], status=423)
        app.delete(path_of(first), headers={**ALICE, **TUS}, status=423)
        patch(app, path_of(second), b"", 3, status=423)
        assert head(app, path_of(first)).headers["Upload-Offset"] == "3"
    finally:
        release.set()
        thread.join(10)
    assert answers[0].status_int == 201, answers[0].body
    assert app.get(RECORD + "/attachment", headers=ALICE).body == b"abcdef"
    for url in (first, second):
        head(app, path_of(url), status=404)
    assert tus_uploads.entries(kinto_local.registry.storage) == []


@pytest.mark.parametrize(
    "contents,order",
    [
        ([b"abc", b"defg"], [0, 1, 0, 0, 1]),  # A part named again, first or not.
        ([b"", b"x"], [0, 1, 0]),  # An empty first part (GCS: no object), named twice.
        ([b"x", b""], [1, 0, 1]),
        ([b"", b""], [0, 1]),  # All empty: an empty file.
        ([os.urandom(300 * 1024), b"", os.urandom(700 * 1024), b"z"], [3, 2, 1, 0, 2]),
        ([bytes([n]) * (n + 1) for n in range(19)], list(range(19)) * 2),  # 38: > 32 composed.
    ],
)
def test_gcs_final_uploads_of_odd_parts(kinto_gcs, contents, order):
    """Held against a review (2026-12-05).

    on GCS (compose, 32 sources a request), a final upload of empty, small, repeated
    and many parts makes exactly their bytes, in order, with their sha256 and size; nothing
    else is left in the bucket."""
    app = kinto_gcs.app
    urls = [partial_upload(app, content, whole=n % 2 == 0) for n, content in enumerate(contents)]
    final_upload(app, [urls[i] for i in order])
    whole = b"".join(contents[i] for i in order)
    attachment = app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert (attachment["size"], attachment["hash"]) == (
        len(whole),
        hashlib.sha256(whole).hexdigest(),
    )
    assert app.get(RECORD + "/attachment", headers=ALICE).body == whole
    assert gcs_files(kinto_gcs) == [gcs_key(attachment["location"])]
    assert tus_uploads.entries(kinto_gcs.registry.storage) == []


@pytest.mark.parametrize("killed_at", ["compose", "read-back"])
def test_what_a_killed_gcs_final_leaves_is_collected(kinto_gcs, monkeypatch, killed_at):
    """Held against a review (2026-12-05).

    on GCS, a process killed while composing a final upload, or while reading it back
    for the sha256 (no cleanup runs: the store's deletes do nothing), leaves a composed object
    that no state names: the collector takes it, the partial uploads stay, and the final
    upload sent again is made; only the attachment is left."""
    from kinto_attachment.storage import base as store_base
    from kinto_attachment.storage.gcs import GCSStore

    app = kinto_gcs.app
    contents = [os.urandom(1000), os.urandom(2000), os.urandom(10)]
    urls = [partial_upload(app, content) for content in contents]

    class Killed(Exception):
        pass

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(GCSStore, "delete", lambda self, key: None)
    monkeypatch.setattr(GCSStore, "delete_many", lambda self, keys: None)
    if killed_at == "read-back":
        monkeypatch.setattr(store_base, "feed", killed)
    else:
        compose = GCSStore.compose

        def composed_then_killed(self, *args, **kwargs):
            compose(self, *args, **kwargs)
            raise Killed

        monkeypatch.setattr(GCSStore, "compose", composed_then_killed)
    final_upload(app, urls, status=500)
    monkeypatch.undo()

    report = gc.collect(kinto_gcs.registry, now=msec_time() + (GRACE_SECONDS + 60) * 1000)
    assert report.expired_uploads == [] and report.dangling == []
    assert len(report.orphans) == 1 and report.orphans[0].size == 3010
    for url in urls:
        assert head(app, path_of(url)).headers["Upload-Offset"] != "0"
    final_upload(app, urls)
    attachment = app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert app.get(RECORD + "/attachment", headers=ALICE).body == b"".join(contents)
    assert gcs_files(kinto_gcs) == [gcs_key(attachment["location"])]


def test_deferred_partial_lengths_cannot_be_abused(kinto_local):
    """Held against a review (2026-12-05).

    a partial upload of deferred length: its Upload-Length told below its bytes,
    twice differently, non-numeric, negative or huge is a 4xx that changes nothing; told
    right, it joins a final upload; a final upload of deferred length is refused. (An
    empty PATCH at its end with another Upload-Length is a 204 that changes nothing, as
    tusd, which reads Upload-Length only while the length is deferred.)"""
    app = kinto_local.app
    response = app.post(
        UPLOADS,
        headers={**ALICE, **TUS, "Upload-Concat": "partial", "Upload-Defer-Length": "1"},
        status=201,
    )
    url = path_of(response.headers["Location"])
    patch(app, url, b"abcd", 0)
    for value, status in (("3", 400), ("-4", 400), ("+4", 400), ("4.0", 400), ("9" * 30, 400)):
        patch(app, url, b"", 4, status=status, **{"Upload-Length": value})
    assert head(app, url).headers["Upload-Defer-Length"] == "1"
    final_upload(app, [url], status=400)  # Unfinished while its length is unknown.
    patch(app, url, b"e", 4, **{"Upload-Length": "5"})
    final_upload(app, [url], status=400, **{"Upload-Defer-Length": "1"})
    final_upload(app, [url, url])
    assert app.get(RECORD + "/attachment", headers=ALICE).body == b"abcdeabcde"
    assert re.fullmatch(
        r"[0-9a-f]{64}", app.get(RECORD, headers=ALICE).json["data"]["attachment"]["hash"]
    )
