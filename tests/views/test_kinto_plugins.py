"""kinto_attachment combined with Kinto's own features and plugins as deployments combine them
(a review of 2026-12-05): ``readonly`` nodes, the ``default_bucket``, ``history`` and
``accounts`` plugins, JSON schemas of collections and buckets, deletions with ``If-Match``.

Kinto 26 (the version installed) has no ``kinto.plugins.quotas`` any more: nothing to test."""

import base64
import threading
import time

import pytest
import transaction

from kinto_attachment import locks
from kinto_attachment.uploads import record as record_step

from ..conftest import ALICE, BOB, build_settings, cached_app, make_app
from ..support.threads import in_another_thread
from .test_resumable import metadata


PLUGINS = "kinto.plugins.default_bucket kinto.plugins.history kinto.plugins.flush kinto_attachment"
TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {"Content-Type": "application/offset+octet-stream"}
TITLE_REQUIRED = {
    "type": "object",
    "required": ["title"],
    "properties": {"title": {"type": "string"}},
}


@pytest.fixture
def kinto(tmp_path_factory, request):
    return cached_app("memory", tmp_path_factory, request, **{"kinto.includes": PLUGINS})


def _new_threads(before):
    return sorted(t.name for t in threading.enumerate() if t not in before and t.is_alive())


def test_a_readonly_server_runs_no_background_writer(tmp_path):
    """Found by review (2026-12-05).

    Kinto's ``readonly = true`` (a read replica: Remote Settings' readers run so, with
    kinto-attachment included) means no write. The plugin honours it in some places: the
    heartbeat's store probe does not write (docs/api.rst), promises are never recorded
    (docs/gc.rst: "a read-only server never"), ``kinto migrate`` "adopts nothing and writes
    nothing" (docs/migrating.rst). It was: a readonly server still starts the garbage
    collector thread (``kinto_attachment/gc/__init__.py`` ``start_collector``, no readonly
    check) and the events dispatcher's lanes (``events/__init__.py`` ``start_dispatcher``).
    Each collector round writes: it adopts kinto-attachment's data and writes the adoption
    marker (checked by hand: ``gc.collect`` on a readonly app makes ``adoption.done`` true), it
    deletes expired ``/data/files`` and tus rows, claims replaced blobs, and deletes store
    objects; each dispatcher round claims, marks and purges outbox rows. On a replica every
    round fails ("cannot execute ... in a read-only transaction", a traceback logged every
    ``gc_interval_seconds`` / ``poll_seconds`` for ever); on a shared writable database the
    readonly node adopts and deletes behind the operator's back. Now neither starts
    (``shared.read_only``), as ``promises.includeme`` already did."""
    before = set(threading.enumerate())
    settings = build_settings(
        "memory",
        str(tmp_path),
        **{
            "kinto.readonly": "true",
            "kinto.attachment.data_files.gc_interval_seconds": "3600",
            "kinto.attachment.events.destinations": "webhook",
            "kinto.attachment.events.webhook.url": "http://127.0.0.1:9/hook",
            "kinto.attachment.events.webhook.secret": "s" * 32,
            "kinto.attachment.events.url_secret": "u" * 32,
            "kinto.attachment.events.poll_seconds": "3600",
            "kinto.http_host": "kinto.example.com",
        },
    )
    app = make_app(settings)
    registry = app.app.registry
    try:
        started = _new_threads(before)
    finally:
        stop = getattr(registry, "attachment_gc_stop", None)
        if stop is not None:
            stop.set()
        dispatcher = getattr(registry, "attachment_dispatcher", None)
        if dispatcher is not None:
            dispatcher.stop()
    assert not [name for name in started if name.startswith("attachment-")], started


def test_readonly_refuses_every_upload_and_stores_nothing(tmp_path_factory, request):
    """Held against a review (2026-12-05).

    Kinto's readonly mode refuses every write (``restrict_http_methods_if_readonly``,
    a 405 at ``NewRequest``): multipart uploads (a bucket of its own, the default bucket),
    attachment deletes, tus creations and ``/data/files`` uploads, before any byte is
    stored."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.includes": PLUGINS, "kinto.readonly": "true"},
    )
    for url in (
        "/v1/buckets/default/collections/c/records/r1",
        "/v1/buckets/b/collections/c/records/r1",
    ):
        kinto.upload(url, status=405)
        kinto.app.delete(url + "/attachment", headers=ALICE, status=405)
        kinto.app.post(
            url + "/attachment/uploads",
            b"hello",
            headers={**ALICE, **TUS, **CHUNK, "Upload-Length": "5", "Upload-Metadata": metadata()},
            status=405,
        )
    kinto.app.post(
        "/v1/data/files", b"abc", headers={**ALICE, "Content-Type": "text/plain"}, status=405
    )
    assert kinto.files() == []


def test_schemas_bind_uploads_through_the_default_bucket(kinto):
    """Held against a review (2026-12-05).

    a collection's JSON schema refuses an upload creating a record without a
    required field, multipart or tus, through ``/buckets/default`` too, and nothing stays in
    the store. (Kinto 26's own ``PUT`` of a record through ``/buckets/default`` skips the
    collection's schema when the collection exists: ``create_collection`` puts ``{}`` in
    ``bound_data["collections"]``, which the record resource takes for the collection. The
    upload's record step puts the collection it read under the lock there, and is checked.)"""
    collection = "/v1/buckets/default/collections/tasks"
    kinto.app.put_json(collection, {"data": {"schema": TITLE_REQUIRED}}, headers=ALICE)
    kinto.upload(collection + "/records/r1", status=400)
    kinto.app.post(
        collection + "/records/r2/attachment/uploads",
        b"hello",
        headers={**ALICE, **TUS, **CHUNK, "Upload-Length": "5", "Upload-Metadata": metadata()},
        status=400,
    )
    assert kinto.files() == []
    kinto.upload(collection + "/records/r1", data={"title": "ok"}, status=201)


def test_a_bucket_record_schema_binds_the_attachment_metadata(kinto):
    """Held against a review (2026-12-05).

    the bucket's ``record:schema`` applies to the ``attachment`` an upload writes (a
    size limit written as a schema: 400, nothing stored, the previous file kept), and to the
    ``null`` a ``DELETE {record}/attachment`` writes (a clean 400, the file kept)."""
    kinto.create_collection()
    schema = {
        "type": "object",
        "properties": {"attachment": {"type": "object", "properties": {"size": {"maximum": 3}}}},
    }
    kinto.app.patch_json("/v1/buckets/blog", {"data": {"record:schema": schema}}, headers=ALICE)
    url = kinto.record_url("r1")
    location = kinto.upload(url, content=b"ab", status=201).json["location"]
    kinto.upload(url, content=b"abcd", status=400)
    kinto.app.delete(url + "/attachment", headers=ALICE, status=400)
    assert kinto.files() == [kinto.key_of(location)]
    assert kinto.app.get(url + "/attachment", headers=ALICE).body == b"ab"


def test_history_of_default_bucket_uploads(kinto):
    """Held against a review (2026-12-05).

    uploads and deletes through ``/buckets/default`` (streamed to the user's bucket
    by a subrequest) reach Kinto's history like any write, under the record's real URI, and
    Bob, who may not read Alice's bucket, reads none of its entries."""
    url = "/v1/buckets/default/collections/tasks/records/r1"
    kinto.upload(url, content=b"one", filename="a.txt")
    kinto.app.delete(url + "/attachment", headers=ALICE, status=204)
    bucket = kinto.app.get("/v1/", headers=ALICE).json["user"]["bucket"]
    entries = kinto.app.get(f"/v1/buckets/{bucket}/history", headers=ALICE).json["data"]
    records = [e for e in reversed(entries) if e["resource_name"] == "record"]
    assert [e["action"] for e in records] == ["create", "update"]
    assert {e["uri"] for e in records} == {f"/buckets/{bucket}/collections/tasks/records/r1"}
    assert records[0]["target"]["data"]["attachment"]["filename"] == "a.txt"
    assert records[1]["target"]["data"]["attachment"] is None
    kinto.app.get(f"/v1/buckets/{bucket}/history", headers=BOB, status=403)


def test_deletions_with_stale_if_match_keep_the_file(kinto):
    """Held against a review (2026-12-05).

    a ``DELETE`` of the bucket, the collection, the records, the record or its
    attachment with an ``If-Match`` of another version is Kinto's 412, and the file stays;
    plural deletes (``DELETE /buckets``, ``.../collections``) take their records' files."""
    kinto.create_collection()
    url = kinto.record_url("r1")
    location = kinto.upload(url).json["location"]
    stale = {**ALICE, "If-Match": '"1"'}
    for path in (
        "/v1/buckets/blog",
        "/v1/buckets/blog/collections/articles",
        "/v1/buckets/blog/collections/articles/records",
        url,
        url + "/attachment",
    ):
        kinto.app.delete(path, headers=stale, status=412)
    assert kinto.exists(location)
    other = kinto.upload("/v1/buckets/default/collections/t/records/r1").json["location"]
    kinto.app.delete("/v1/buckets/blog/collections", headers=ALICE, status=200)
    assert not kinto.exists(location)
    kinto.app.delete("/v1/buckets", headers=ALICE, status=200)
    assert not kinto.exists(other)


ACCOUNTS = {
    "kinto.includes": "kinto.plugins.accounts kinto.plugins.flush kinto_attachment",
    "multiauth.policies": "account",
    "multiauth.policy.account.use": "kinto.plugins.accounts.AccountsPolicy",
    "kinto.account_create_principals": "system.Everyone",
    "kinto.account_write_principals": "account:admin",
}


def test_an_account_deleted_while_its_upload_streams_stores_nothing(
    tmp_path_factory, request, monkeypatch
):
    """Held against a review (2026-12-05).

    Kinto's accounts plugin: Alice's account is deleted (its cached credentials
    with it, as ``on_account_changed`` does) while her upload streams. The check under the
    record's lock authenticates again (``_forget_principals``): refused (401), nothing
    stored, no record made in her name."""
    kinto = cached_app("memory", tmp_path_factory, request, **ACCOUNTS)
    alice = {"Authorization": "Basic " + base64.b64encode(b"alice:secret-pass").decode()}
    kinto.app.put_json("/v1/accounts/alice", {"data": {"password": "secret-pass"}}, status=201)
    kinto.create_collection(headers=alice)
    original, done = locks.hold, []

    def hold(registry, path, **kwargs):
        original(registry, path, **kwargs)
        if path == ("buckets", "blog", "articles", "r1") and not done:
            done.append(True)
            time.sleep(record_step.RECHECK_SECONDS + 0.05)  # The body took its time.

            def delete_account():
                with transaction.manager:
                    registry.storage.delete(
                        resource_name="account", parent_id="alice", object_id="alice"
                    )
                    registry.cache.flush()

            in_another_thread(delete_account)

    monkeypatch.setattr(locks, "hold", hold)
    response = kinto.upload(kinto.record_url("r1"), headers=alice, status="*")
    monkeypatch.undo()
    assert done and response.status_int == 401, response.status
    assert kinto.files() == []
    assert (
        kinto.registry.storage.list_all(
            resource_name="record", parent_id="/buckets/blog/collections/articles"
        )
        == []
    )
