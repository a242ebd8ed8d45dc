"""Kinto's own writes and batches, through the ``default`` bucket too, behave with
kinto_attachment as plain Kinto's (an app without it in kinto.includes), and do not deadlock:
a second review of 2026-12-05's fixes of the writes waiting for our locks. Those marked HELD
are attacks the code withstood."""

import time

import pytest

from ..conftest import ALICE, BOB, build_settings, cached_app, make_app
from .conftest import PLAIN_PLUGINS, PLUGINS
from .pauses import in_thread, paused_batch, paused_lock_write


def both(ours, plain_plugins):
    return [("ours", ours.app), ("plain", plain_plugins)]


def buckets_of(app, headers):
    """The ids of the buckets ``headers``' user can read, without creating any."""
    return sorted(b["id"] for b in app.get("/v1/buckets", headers=headers).json["data"])


def batch_answer(response):
    if response.status_int != 200:
        return response.status_int
    return [r["status"] for r in response.json["responses"]]


# ---------------------------------------------------------------------------------------------
# Batches through the default bucket (lock_batch's _create_implicitly)
# ---------------------------------------------------------------------------------------------


def test_an_invalid_collection_id_in_a_default_bucket_batch_is_its_subrequests_400(
    ours, plain_plugins
):
    """Found by a review of a fix (2026-12-05).

    It was: A batch whose one sub-request names an invalid collection id in the ``default`` bucket:
    plain Kinto answers 200, that sub-request 400 and the other one 201. Fixed: a batch
    creates nothing before its sub-requests (a write through the default bucket locks
    before Kinto's view creates)."""
    batch = {
        "requests": [
            {"method": "PUT", "path": "/buckets/default/collections/in@valid/records/r"},
            {"method": "PUT", "path": "/buckets/default/collections/ok/records/r"},
        ]
    }
    answers = {}
    for name, app in both(ours, plain_plugins):
        answers[name] = batch_answer(app.post_json("/v1/batch", batch, headers=BOB, status="*"))
    assert answers["plain"] == [400, 201]
    assert answers["ours"] == answers["plain"]


def test_a_default_bucket_batch_creating_a_collection_with_if_none_match(ours, plain_plugins):
    """Found by a review of a fix (2026-12-05).

    It was: A batch in the ``default`` bucket that creates a collection (``If-None-Match: *``, with
    its attributes) and then writes a record in it: plain Kinto creates the collection
    (201); it must not already exist when its sub-request comes. Fixed: as above."""
    batch = {
        "requests": [
            {
                "method": "PUT",
                "path": "/buckets/default/collections/c",
                "headers": {"If-None-Match": "*"},
                "body": {"data": {"title": "mine"}},
            },
            {"method": "PUT", "path": "/buckets/default/collections/c/records/r"},
        ]
    }
    answers = {}
    for name, app in both(ours, plain_plugins):
        answers[name] = batch_answer(app.post_json("/v1/batch", batch, headers=BOB, status="*"))
        title = app.get("/v1/buckets/default/collections/c", headers=BOB).json["data"]
        answers[name] = (answers[name], title.get("title"))
    assert answers["plain"] == ([201, 201], "mine")
    assert answers["ours"] == answers["plain"]


def test_a_default_bucket_batch_creating_a_collection_emits_one_event_and_history_entry(
    ours, plain_plugins
):
    """As above without a precondition: the collection is created once (one ``create``
    history entry, whose target has the attributes sent), as plain Kinto does."""
    batch = {
        "requests": [
            {
                "method": "PUT",
                "path": "/buckets/default/collections/c",
                "body": {"data": {"title": "mine"}},
            },
            {"method": "PUT", "path": "/buckets/default/collections/c/records/r"},
        ]
    }
    answers = {}
    for name, app in both(ours, plain_plugins):
        statuses = batch_answer(app.post_json("/v1/batch", batch, headers=BOB))
        bucket = app.get("/v1/", headers=BOB).json["user"]["bucket"]
        history = app.get(f"/v1/buckets/{bucket}/history", headers=BOB).json["data"]
        entries = sorted((e["resource_name"], e["action"], e["uri"]) for e in history)
        answers[name] = (statuses, entries)
    assert answers["ours"] == answers["plain"]


def test_a_batch_kinto_refuses_whole_creates_no_default_bucket_nor_collection(ours, plain_plugins):
    """Found by a review of a fix (2026-12-05).

    It was: A batch Kinto refuses as a whole (400: an invalid method in one sub-request) must write
    nothing: plain Kinto creates neither the ``default`` bucket nor its collection. Fixed:
    as above."""
    batch = {
        "requests": [
            {"method": "PUT", "path": "/buckets/default/collections/c/records/r"},
            {"method": "FOO", "path": "/buckets/default/collections/c/records/s"},
        ]
    }
    answers = {}
    for name, app in both(ours, plain_plugins):
        status = app.post_json("/v1/batch", batch, headers=BOB, status="*").status_int
        answers[name] = (status, buckets_of(app, BOB))
    assert answers["plain"] == (400, [])
    assert answers["ours"] == answers["plain"]


def test_a_batch_subrequest_of_another_user_creates_nothing_for_the_batchs_user(
    ours, plain_plugins
):
    """Found by a review of a fix (2026-12-05).

    It was: A sub-request's own ``Authorization`` header makes it another user's (Kinto's
    ``build_request`` merges the sub-request's headers over the batch's): Bob's sub-request
    in Alice's batch writes into Bob's ``default`` bucket. Plain Kinto creates no bucket for
    Alice; with kinto_attachment, ``lock_batch`` names Alice's default bucket and creates it,
    with the collection, for her. Fixed: as above."""
    batch = {
        "requests": [
            {
                "method": "PUT",
                "path": "/buckets/default/collections/c/records/r",
                "headers": BOB,
            }
        ]
    }
    answers = {}
    for name, app in both(ours, plain_plugins):
        statuses = batch_answer(app.post_json("/v1/batch", batch, headers=ALICE))
        answers[name] = (statuses, buckets_of(app, ALICE), len(buckets_of(app, BOB)))
    assert answers["plain"] == ([201], [], 1)
    assert answers["ours"] == answers["plain"]


def test_anonymous_default_bucket_batch_as_plain_kinto(ours, plain_plugins):
    """HELD. An anonymous batch into the ``default`` bucket: every sub-request refused as
    plain Kinto refuses it, nothing created."""
    batch = {
        "requests": [
            {"method": "PUT", "path": "/buckets/default/collections/c/records/r"},
            {"method": "GET", "path": "/buckets/default/collections/c/records"},
        ]
    }
    answers = {}
    for name, app in both(ours, plain_plugins):
        answers[name] = batch_answer(app.post_json("/v1/batch", batch, status="*"))
    assert answers["ours"] == answers["plain"]


def test_a_default_bucket_batch_beside_a_failing_subrequest_as_plain_kinto(ours, plain_plugins):
    """HELD. A ``default`` bucket batch whose other sub-request fails (a 404, an invalid
    record id, a 412): statuses and what is left as plain Kinto's. (A record id that ends
    with its collection's id, ``d/records/in@valid``, is taken by plain Kinto's default
    bucket view for a ``PUT`` of the collection: it creates no collection, and its record
    write is a 404; ``_create_implicitly`` creates it. Not kept as a finding: Kinto's bug.)"""
    batch = {
        "requests": [
            {"method": "PUT", "path": "/buckets/default/collections/c/records/r"},
            {"method": "DELETE", "path": "/buckets/default/collections/c/records/missing"},
            {"method": "PUT", "path": "/buckets/default/collections/x/records/in@valid"},
            {
                "method": "PUT",
                "path": "/buckets/default/collections/e/records/x",
                "headers": {"If-Match": '"1"'},
            },
        ]
    }
    answers = {}
    for name, app in both(ours, plain_plugins):
        statuses = batch_answer(app.post_json("/v1/batch", batch, headers=BOB, status="*"))
        collections = app.get("/v1/buckets/default/collections", headers=BOB).json["data"]
        answers[name] = (statuses, sorted(c["id"] for c in collections))
    assert answers["ours"] == answers["plain"]


SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}},
    "required": ["n"],
}


def test_schema_validation_through_the_default_bucket_as_plain_kinto(ours, plain_plugins):
    """Found by a review of a fix (2026-12-05).

    It was: A collection of the ``default`` bucket with a JSON schema
    (``experimental_collection_schema_validation``): an invalid record created through the
    ``default`` bucket, alone and in a batch, and an existing record patched invalid: the
    answers as plain Kinto's (which, as it happens, validates none of them: its default
    bucket view hands the Record resource ``{}`` for an existing collection). Fixed: the
    collection a write that waited reads again replaces the factory's copy, but the default
    bucket view's ``{}``."""
    answers = {}
    for name, app in both(ours, plain_plugins):
        app.put_json(
            "/v1/buckets/default/collections/s", {"data": {"schema": SCHEMA}}, headers=BOB
        )
        base = "/v1/buckets/default/collections/s/records"
        valid = app.put_json(f"{base}/ok", {"data": {"n": 1}}, headers=BOB, status="*")
        single = app.put_json(f"{base}/bad", {"data": {"n": "x"}}, headers=BOB, status="*")
        patched = app.patch_json(f"{base}/ok", {"data": {"n": "y"}}, headers=BOB, status="*")
        batch = {"requests": [{"method": "PUT", "path": f"{base[3:]}/b2", "body": {"data": {}}}]}
        batched = batch_answer(app.post_json("/v1/batch", batch, headers=BOB))
        answers[name] = (valid.status_int, single.status_int, patched.status_int, batched)
    assert answers["ours"] == answers["plain"], answers


def test_readonly_refuses_batches_and_writes_as_plain_kinto(tmp_path_factory):
    """HELD. ``readonly = true``: a ``default`` bucket batch and a record ``PUT`` are refused
    (405) as plain Kinto refuses them, and nothing is created."""
    answers = []
    for includes in (PLUGINS, PLAIN_PLUGINS):
        settings = build_settings(
            "memory",
            str(tmp_path_factory.mktemp("ro")),
            **{"kinto.includes": includes, "kinto.readonly": "true"},
        )
        app = make_app(settings)
        batch = {
            "requests": [{"method": "PUT", "path": "/buckets/default/collections/c/records/r"}]
        }
        answers.append(
            (
                app.post_json("/v1/batch", batch, headers=BOB, status="*").status_int,
                app.put_json(
                    "/v1/buckets/default/collections/c/records/r", {}, headers=BOB, status="*"
                ).status_int,
                app.get("/v1/buckets", headers=BOB).json["data"],
            )
        )
    assert answers[0] == answers[1]


# ---------------------------------------------------------------------------------------------
# Writes that waited (_read_again's dropped collection)
# ---------------------------------------------------------------------------------------------


def test_a_default_bucket_put_that_waited_behind_its_collections_delete(ours, monkeypatch):
    """Bob deletes his default bucket's collection ``c`` (by its real bucket id) while his
    other client ``PUT``s a record through ``/buckets/default``. Plain Kinto's default
    bucket never answers 404 for a collection: whichever comes first, the ``PUT`` creates
    the collection when it is missing (201). Here the ``PUT`` waits for the collection's
    lock; ``_read_again`` then drops the collection the default bucket view made sure of,
    and the Record resource finds it gone: 404."""
    app = ours.app
    app.put_json("/v1/buckets/default/collections/c", {}, headers=BOB)
    bucket = app.get("/v1/", headers=BOB).json["user"]["bucket"]
    locked, go = paused_lock_write(monkeypatch, "collection-object", "DELETE")
    out = {}
    deleter = in_thread(
        out,
        "delete",
        lambda: app.delete(f"/v1/buckets/{bucket}/collections/c", headers=BOB, status="*"),
    )
    assert locked.wait(20)
    url = "/v1/buckets/default/collections/c/records/r1"
    writer = in_thread(
        out, "put", lambda: app.put_json(url, {"data": {}}, headers=BOB, status="*")
    )
    time.sleep(1.0)
    go.set()
    deleter.join(30)
    writer.join(30)
    monkeypatch.undo()
    assert out["delete"].status_int == 200
    assert out["put"].status_int == 201, out["put"].text


def test_a_put_that_waited_behind_a_collection_delete_then_recreated_by_a_batch(ours, monkeypatch):
    """HELD. The collection's ``DELETE`` and its re-creation are one batch (collection
    ``DELETE`` then ``PUT``); Alice's ``PUT`` of a record waited for the batch: the record is
    created in the new collection (201), as plain Kinto after the batch."""
    app = ours.app
    ours.create_collection()
    collection = "/v1/buckets/blog/collections/articles"
    locked, go = paused_batch(monkeypatch)
    batch = {
        "requests": [
            {"method": "DELETE", "path": collection[3:]},
            {"method": "PUT", "path": collection[3:], "body": {"data": {"schema": SCHEMA}}},
        ]
    }
    out = {}
    batcher = in_thread(out, "batch", lambda: app.post_json("/v1/batch", batch, headers=ALICE))
    assert locked.wait(20)
    url = f"{collection}/records/r1"
    writer = in_thread(
        out, "put", lambda: app.put_json(url, {"data": {"n": "x"}}, headers=ALICE, status="*")
    )
    time.sleep(1.0)
    go.set()
    batcher.join(30)
    writer.join(30)
    monkeypatch.undo()
    assert batch_answer(out["batch"]) == [200, 201]
    # The collection it writes in is the new one: its schema applies (plain Kinto: 400).
    assert out["put"].status_int == 400, out["put"].text


# ---------------------------------------------------------------------------------------------
# PostgreSQL: deadlocks
# ---------------------------------------------------------------------------------------------


def revived_collection_race(kinto, monkeypatch, route, method, holder, writer_call):
    """Bob's default bucket collection ``c`` deleted earlier (a tombstone); ``holder()``
    (paused once it holds its lock) and ``writer_call()``, a write through ``/buckets/default``
    that revives ``c`` (an ``INSERT .. ON CONFLICT DO UPDATE`` of the tombstone: the row is
    locked until its transaction ends) before it waits for the holder's lock."""
    locked, go = paused_lock_write(monkeypatch, route, method)
    out = {}
    first = in_thread(out, "holder", holder)
    assert locked.wait(20)
    second = in_thread(out, "write", writer_call)
    time.sleep(1.0)
    go.set()
    first.join(40)
    second.join(40)
    monkeypatch.undo()
    return out


def _bobs_tombstoned_collection(app):
    app.put_json("/v1/buckets/default/collections/c", {}, headers=BOB)
    bucket = app.get("/v1/", headers=BOB).json["user"]["bucket"]
    app.delete(f"/v1/buckets/{bucket}/collections/c", headers=BOB)
    return bucket


def _statuses(out):
    statuses = []
    for response in out.values():
        statuses.append(response.status_int)
        if response.status_int == 200 and "responses" in (response.json or {}):
            statuses += [r["status"] for r in response.json["responses"]]
    return statuses


@pytest.mark.postgresql
@pytest.mark.parametrize(
    "write",
    [
        "put",
        "batch",
        "upload",
    ],
)
def test_a_bucket_delete_and_a_default_bucket_write_reviving_a_collection(
    tmp_path_factory, request, monkeypatch, write
):
    """Bob deletes his default bucket (by its id) while his other client writes a record of
    a collection he deleted earlier through ``/buckets/default``: the write's default bucket
    view (or the batch's ``_create_implicitly``) revives the collection's tombstone, a row
    it holds until it ends, then waits for the bucket's lock; the bucket's delete purges the
    bucket's tombstones (``on_buckets_deleted``), the revived row among them: each waits for
    the other, PostgreSQL aborts one (503). Plain Kinto (no lock): both answer. Fixed: a
    write through the default bucket takes its locks before Kinto's view creates anything;
    a batch no longer creates anything before its locks; an upload commits what the default
    bucket's view created before its body."""
    kinto = cached_app("postgresql", tmp_path_factory, request, **{"kinto.includes": PLUGINS})
    app = kinto.app
    bucket = _bobs_tombstoned_collection(app)
    url = "/v1/buckets/default/collections/c/records/r1"
    if write == "put":
        call = lambda: app.put_json(url, {"data": {}}, headers=BOB, status="*")  # noqa: E731
    elif write == "batch":
        batch = {"requests": [{"method": "PUT", "path": url[3:], "body": {"data": {}}}]}
        call = lambda: app.post_json("/v1/batch", batch, headers=BOB, status="*")  # noqa: E731
    else:
        call = lambda: kinto.upload(url, content=b"x", headers=BOB, status="*")  # noqa: E731
    out = revived_collection_race(
        kinto,
        monkeypatch,
        "bucket-object",
        "DELETE",
        lambda: app.delete(f"/v1/buckets/{bucket}", headers=BOB, status="*"),
        call,
    )
    statuses = _statuses(out)
    assert all(s < 500 for s in statuses), (statuses, {k: v.text[:200] for k, v in out.items()})


@pytest.mark.postgresql
def test_a_flush_and_a_default_bucket_write_reviving_a_collection(
    tmp_path_factory, request, monkeypatch
):
    """As above with ``POST /__flush__`` (root lock, then ``DELETE FROM objects``, which
    waits for the revived row) in the bucket delete's place."""
    kinto = cached_app("postgresql", tmp_path_factory, request, **{"kinto.includes": PLUGINS})
    app = kinto.app
    _bobs_tombstoned_collection(app)
    url = "/v1/buckets/default/collections/c/records/r1"
    out = revived_collection_race(
        kinto,
        monkeypatch,
        "flush",
        "POST",
        lambda: app.post("/v1/__flush__", status="*"),
        lambda: app.put_json(url, {"data": {}}, headers=BOB, status="*"),
    )
    statuses = _statuses(out)
    assert all(s < 500 for s in statuses), (statuses, {k: v.text[:200] for k, v in out.items()})


@pytest.mark.postgresql
def test_a_bucket_plural_delete_and_an_upload_into_a_new_bucket(
    tmp_path_factory, request, monkeypatch
):
    """HELD. ``DELETE /buckets`` (Alice's) paused under its lock while Alice's upload creates
    the first record of a brand-new bucket's new collection: no 5xx."""
    kinto = cached_app("postgresql", tmp_path_factory, request, **{"kinto.includes": PLUGINS})
    app = kinto.app
    kinto.create_collection("nb", "nc")
    locked, go = paused_lock_write(monkeypatch, "bucket-plural", "DELETE")
    out = {}
    first = in_thread(out, "bulk", lambda: app.delete("/v1/buckets", headers=ALICE, status="*"))
    assert locked.wait(20)
    url = "/v1/buckets/nb/collections/nc/records/r1"
    second = in_thread(out, "upload", lambda: kinto.upload(url, content=b"x", status="*"))
    time.sleep(1.0)
    go.set()
    first.join(40)
    second.join(40)
    monkeypatch.undo()
    statuses = _statuses(out)
    assert all(s < 500 for s in statuses), (statuses, {k: v.text[:200] for k, v in out.items()})
    assert kinto.files() == [] or out["upload"].status_int < 300


@pytest.mark.postgresql
def test_a_collection_plural_delete_and_a_collection_put_in_a_new_bucket(
    tmp_path_factory, request, monkeypatch
):
    """HELD. ``DELETE /buckets/nb/collections`` paused under its lock while a ``PUT`` of a
    collection and a batch writing a record of another one run in the new bucket: no 5xx."""
    kinto = cached_app("postgresql", tmp_path_factory, request, **{"kinto.includes": PLUGINS})
    app = kinto.app
    app.put_json("/v1/buckets/nb", {}, headers=ALICE)
    app.put_json("/v1/buckets/nb/collections/old", {}, headers=ALICE)
    locked, go = paused_lock_write(monkeypatch, "collection-plural", "DELETE")
    out = {}
    first = in_thread(
        out, "bulk", lambda: app.delete("/v1/buckets/nb/collections", headers=ALICE, status="*")
    )
    assert locked.wait(20)
    second = in_thread(
        out,
        "put",
        lambda: app.put_json("/v1/buckets/nb/collections/new", {}, headers=ALICE, status="*"),
    )
    batch = {
        "requests": [
            {"method": "PUT", "path": "/buckets/nb/collections/old/records/r", "body": {}},
        ]
    }
    third = in_thread(
        out, "batch", lambda: app.post_json("/v1/batch", batch, headers=ALICE, status="*")
    )
    time.sleep(1.0)
    go.set()
    for thread in (first, second, third):
        thread.join(40)
    monkeypatch.undo()
    statuses = _statuses(out)
    assert all(s < 500 for s in statuses), (statuses, {k: v.text[:200] for k, v in out.items()})
