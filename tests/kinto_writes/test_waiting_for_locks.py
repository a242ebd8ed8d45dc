"""Kinto's own writes that waited for our locks behave as plain Kinto's (an app without
kinto_attachment) would after the write they waited for, and never deadlock: a review of
2026-12-05's fixes (writes authorised again once locked: ``write_locks._read_again``;
timestamp rows read before the locks: ``state.timestamps``). Those marked HELD are attacks
the code withstood."""

import json
import time

import pytest

from ..conftest import ALICE, BOB, cached_app
from .conftest import PLUGINS
from .pauses import in_thread, paused_batch, paused_lock_write
from .test_attachments import (
    COLLECTION,
    RECORDS,
    paused_creation,
    userid,
)


# ---------------------------------------------------------------------------------------------
# Found by a review of a fix
# ---------------------------------------------------------------------------------------------


def test_a_put_that_waited_behind_a_collection_delete_creates_no_record_in_it(kinto, monkeypatch):
    """Found by a review of a fix (2026-12-05).

    It was: A ``PUT`` of a new record waits for the record's lock while Alice's ``DELETE`` of its
    collection holds the collection. Once locked, ``_read_again`` reads the record again (still
    missing: nothing to authorise again), but not its collection: Kinto's Record resource took
    the collection from ``bound_data``, cached by the route factory before the wait, and
    creates the record in a collection that no longer exists (201). Plain Kinto after the
    delete answers 404; the orphan record comes back, permissions and all, with the next
    collection of that name. Fixed: a record to create is written after its collection is
    read again (the factory's copy of it dropped)."""
    app = kinto.app
    locked, go = paused_lock_write(monkeypatch, "collection-object", "DELETE")
    out = {}
    deleter = in_thread(out, "delete", lambda: app.delete(COLLECTION, headers=ALICE, status="*"))
    assert locked.wait(20)
    writer = in_thread(
        out,
        "put",
        lambda: app.put_json(f"{RECORDS}/r2", {"data": {"t": 1}}, headers=ALICE, status="*"),
    )
    time.sleep(1.0)  # The PUT is past Kinto's factory, waiting for the lock.
    go.set()
    deleter.join(30)
    writer.join(30)
    monkeypatch.undo()
    assert out["delete"].status_int == 200
    # Made again: the record written into the deleted one must not be there.
    app.put_json(COLLECTION, {}, headers=ALICE, status=201)
    listed = app.get(RECORDS, headers=ALICE).json["data"]
    assert out["put"].status_int == 404, out["put"].text
    assert listed == [], f"an orphan record of the deleted collection: {listed}"


@pytest.mark.postgresql
@pytest.mark.parametrize("other", ["kinto_put", "upload", "batch"])
def test_a_bulk_record_delete_of_a_new_collection_and_a_write_of_its_first_record(
    tmp_path_factory, request, monkeypatch, other
):
    """Found by a review of a fix (2026-12-05).

    It was: ``DELETE {collection}/records`` holds the collection exclusively (``_lock_path``),
    then its view's Record resource reads the collection's records timestamp, which nobody
    made beforehand (its route factory instantiates no resource for a plural DELETE). A write
    of the collection's first record inserted that row before it waited for the collection:
    Kinto's factory (a ``PUT``), or since abcda6a the upload's and the batch's own
    ``timestamps.ensure`` (uncommitted now, in their transaction). Each waits for the other:
    PostgreSQL's deadlock detector aborts one (5xx). Plain Kinto has no lock: no deadlock.
    Fixed: a plural ``DELETE`` reads the timestamp it will read before it locks."""
    kinto = cached_app("postgresql", tmp_path_factory, request)
    kinto.create_collection()  # New: no records timestamp row yet.
    app = kinto.app
    locked, go = paused_lock_write(monkeypatch, "record-plural", "DELETE")
    out = {}
    bulk = in_thread(out, "bulk", lambda: app.delete(RECORDS, headers=ALICE, status="*"))
    assert locked.wait(20)
    url = f"{RECORDS}/r1"
    if other == "kinto_put":
        call = lambda: app.put_json(url, {"data": {"t": 1}}, headers=ALICE, status="*")  # noqa: E731
    elif other == "upload":
        call = lambda: kinto.upload(url, content=b"x", status="*")  # noqa: E731
    else:
        batch = {"requests": [{"method": "PUT", "path": url[3:], "body": {"data": {}}}]}
        call = lambda: app.post_json("/v1/batch", batch, headers=ALICE, status="*")  # noqa: E731
    writer = in_thread(out, "write", call)
    time.sleep(1.0)  # The write made the row (uncommitted), and waits for the collection.
    go.set()
    bulk.join(30)
    writer.join(30)
    monkeypatch.undo()
    statuses = [out["bulk"].status_int, out["write"].status_int]
    if other == "batch" and out["write"].status_int == 200:
        statuses += [r["status"] for r in out["write"].json["responses"]]
    assert all(s < 500 for s in statuses), (statuses, out["bulk"].text[:200])


@pytest.mark.postgresql
@pytest.mark.parametrize(
    "other",
    [
        "kinto_put",
        "upload",
    ],
)
def test_a_default_bucket_batch_and_a_write_of_the_same_record_in_a_new_collection(
    tmp_path_factory, request, monkeypatch, other
):
    """Found by a review of a fix (2026-12-05).

    It was: Bob's ``POST /batch`` writing ``/buckets/default/collections/new/records/r1`` locks r1
    first (``lock_batch`` rewrites ``default``); its sub-request then goes through Kinto's
    ``default_bucket`` view, which creates the collection (an INSERT). Bob's other client
    writes r1 through the default bucket too (a ``PUT``, or an upload): the default bucket view
    created the collection first (INSERT, uncommitted), then waits for r1's lock. The batch's
    INSERT of the same collection waits for that transaction: a deadlock, one 5xx. Plain
    Kinto: the second INSERT waits for the first to commit, both answer. Fixed for Kinto's
    writes: one through the default bucket takes its locks before Kinto's view creates
    anything; an upload there commits what the default bucket's view created before its body.
    """
    kinto = cached_app("postgresql", tmp_path_factory, request, **{"kinto.includes": PLUGINS})
    app = kinto.app
    app.get("/v1/buckets/default", headers=BOB)  # Bob's bucket exists already.
    locked, go = paused_batch(monkeypatch)
    url = "/v1/buckets/default/collections/new/records/r1"
    batch = {"requests": [{"method": "PUT", "path": url[3:], "body": {"data": {"n": 1}}}]}
    out = {}
    batcher = in_thread(
        out, "batch", lambda: app.post_json("/v1/batch", batch, headers=BOB, status="*")
    )
    assert locked.wait(20)
    if other == "kinto_put":
        call = lambda: app.put_json(url, {"data": {"n": 2}}, headers=BOB, status="*")  # noqa: E731
    else:
        call = lambda: kinto.upload(url, content=b"x", headers=BOB, status="*")  # noqa: E731
    writer = in_thread(out, "write", call)
    time.sleep(1.0)  # The write created the collection (uncommitted), waits for r1's lock.
    go.set()
    batcher.join(30)
    writer.join(30)
    monkeypatch.undo()
    statuses = [out["batch"].status_int, out["write"].status_int]
    if out["batch"].status_int == 200:
        statuses += [r["status"] for r in out["batch"].json["responses"]]
    assert all(s < 500 for s in statuses), (statuses, out["batch"].text[:300])


def test_a_write_that_waited_is_authorised_again_with_the_principals_of_then(kinto, monkeypatch):
    """Found by a review of a fix (2026-12-05).

    It was: Bob may write the collection as a member of Alice's group ``editors``. His ``PATCH`` of
    r1 waits for r1's lock, held by Alice's batch that takes him out of the group and changes
    r1. The record changed: ``_read_again`` authorises again, but with the principals Kinto's
    groupfinder kept in ``bound_data`` before the wait (the upload's ``lock_record`` drops
    them: ``_forget_principals``): Bob, no longer an editor, writes r1 and becomes its owner.
    Plain Kinto, after Alice's batch: 403. Fixed: the principals are worked out again."""
    app = kinto.app
    bob = userid(app, BOB)
    app.put_json("/v1/buckets/blog/groups/editors", {"data": {"members": [bob]}}, headers=ALICE)
    app.patch_json(
        COLLECTION, {"permissions": {"write": ["/buckets/blog/groups/editors"]}}, headers=ALICE
    )
    url = f"{RECORDS}/r1"
    app.put_json(url, {"data": {"t": 0}}, headers=ALICE, status=201)
    locked, go = paused_batch(monkeypatch)
    batch = {
        "requests": [
            {
                "method": "PUT",
                "path": "/buckets/blog/groups/editors",
                "body": {"data": {"members": []}},
            },
            {"method": "PATCH", "path": url[3:], "body": {"data": {"t": 1}}},
        ]
    }
    out = {}
    batcher = in_thread(
        out, "batch", lambda: app.post_json("/v1/batch", batch, headers=ALICE, status="*")
    )
    assert locked.wait(20)
    writer = in_thread(
        out, "patch", lambda: app.patch_json(url, {"data": {"t": 2}}, headers=BOB, status="*")
    )
    time.sleep(1.0)
    go.set()
    batcher.join(30)
    writer.join(30)
    monkeypatch.undo()
    assert [r["status"] for r in out["batch"].json["responses"]] == [200, 200]
    # Bob is no editor any more: any other record of the collection is refused him now.
    app.put_json(f"{RECORDS}/r2", {"data": {}}, headers=ALICE, status=201)
    app.patch_json(f"{RECORDS}/r2", {"data": {"t": 2}}, headers=BOB, status=403)
    record = app.get(url, headers=ALICE).json
    assert out["patch"].status_int == 403, out["patch"].text
    assert record["data"]["t"] == 1
    assert bob not in record["permissions"].get("write", [])


# ---------------------------------------------------------------------------------------------
# HELD
# ---------------------------------------------------------------------------------------------


def race_creation(kinto, monkeypatch, write, url=f"{RECORDS}/r1"):
    """HELD helper: ``write()`` sent while Alice's upload creating ``url`` holds its lock."""
    app = kinto.app
    app.put_json(f"{RECORDS}/other", {"data": {}}, headers=ALICE, status=201)
    thread, go, result = paused_creation(kinto, monkeypatch, url)
    out = {}
    writer = in_thread(out, "write", write)
    time.sleep(1.0)
    go.set()
    thread.join(30)
    writer.join(30)
    monkeypatch.undo()
    return result["upload"], out["write"]


def test_anonymous_write_of_a_record_created_meanwhile_is_a_401(kinto, monkeypatch):
    """HELD. Everyone may create records: an anonymous ``PUT`` of r1 (a creation when
    checked) waits for Alice's upload creating r1; authorised again on the record now there,
    refused as plain Kinto refuses an anonymous write of Alice's record: 401 (not 403)."""
    app = kinto.app
    app.patch_json(
        COLLECTION, {"permissions": {"record:create": ["system.Everyone"]}}, headers=ALICE
    )
    url = f"{RECORDS}/r1"
    uploaded, put = race_creation(
        kinto, monkeypatch, lambda: app.put_json(url, {"data": {"x": 1}}, status="*")
    )
    assert uploaded.status_int == 201
    assert put.status_int == 401, put.text
    assert put.json["errno"] == 104
    assert "x" not in app.get(url, headers=ALICE).json["data"]


def test_if_none_match_star_on_a_record_created_meanwhile_is_a_412(kinto, monkeypatch):
    """HELD. Bob may only create records: ``PUT`` with ``If-None-Match: *`` of r1 created
    meanwhile by Alice's upload is a 412 (``create`` is what Kinto asks of it then too)."""
    app = kinto.app
    bob = userid(app, BOB)
    app.patch_json(COLLECTION, {"permissions": {"record:create": [bob]}}, headers=ALICE)
    url = f"{RECORDS}/r1"
    uploaded, put = race_creation(
        kinto,
        monkeypatch,
        lambda: app.put_json(
            url, {"data": {"x": 1}}, headers={**BOB, "If-None-Match": "*"}, status="*"
        ),
    )
    assert uploaded.status_int == 201
    assert put.status_int == 412, put.text
    assert "__permissions__" not in put.json["details"]["existing"]


def test_if_match_of_a_record_replaced_meanwhile_is_a_412(kinto, monkeypatch):
    """HELD. Alice's ``PATCH`` with ``If-Match`` of the version she read waits for her own
    upload replacing the file: 412, the record as it is now in the details."""
    app = kinto.app
    url = f"{RECORDS}/r1"
    first = kinto.upload(url, content=b"v1").json
    etag = f'"{first["last_modified"]}"' if "last_modified" in first else None
    etag = etag or app.get(url, headers=ALICE).headers["ETag"]
    thread, go, result = paused_creation(kinto, monkeypatch, url, content=b"v2")
    out = {}
    writer = in_thread(
        out,
        "patch",
        lambda: app.patch_json(
            url, {"data": {"t": 1}}, headers={**ALICE, "If-Match": etag}, status="*"
        ),
    )
    time.sleep(1.0)
    go.set()
    thread.join(30)
    writer.join(30)
    monkeypatch.undo()
    assert result["upload"].status_int == 200
    assert out["patch"].status_int == 412, out["patch"].text
    current = app.get(url, headers=ALICE).json["data"]
    assert out["patch"].json["details"]["existing"]["last_modified"] == current["last_modified"]


def test_a_put_with_only_record_create_creates_as_plain_kinto(kinto, plain):
    """HELD. Without any concurrency: a ``PUT`` creating a record with only ``record:create``
    answers as plain Kinto (201, the creator its writer); a second ``PUT`` of it by the same
    user too (200: he is its writer)."""
    for app in (kinto.app, plain):
        bob = userid(app, BOB)
        app.patch_json(COLLECTION, {"permissions": {"record:create": [bob]}}, headers=ALICE)
    answers = []
    for app in (kinto.app, plain):
        created = app.put_json(f"{RECORDS}/b1", {"data": {"x": 1}}, headers=BOB, status="*")
        again = app.put_json(f"{RECORDS}/b1", {"data": {"x": 2}}, headers=BOB, status="*")
        alice = app.put_json(f"{RECORDS}/a1", {"data": {}}, headers=ALICE, status="*")
        theirs = app.put_json(f"{RECORDS}/a1", {"data": {"x": 3}}, headers=BOB, status="*")
        missing = app.delete(f"{RECORDS}/nope", headers=BOB, status="*")
        answers.append(
            [
                (r.status_int, sorted(r.json.get("permissions", {}).get("write", [])))
                for r in (created, again, alice, theirs, missing)
            ]
        )
    assert answers[0] == answers[1]


def test_json_patch_test_of_permissions_and_group_writer_patch_as_plain_kinto(kinto, plain):
    """HELD. A JSON-Patch whose ``test`` op names the record's permissions, and a ``PATCH`` by
    a user whose write comes from a group: answers and stored permissions as plain Kinto's."""
    results = []
    for app in (kinto.app, plain):
        bob = userid(app, BOB)
        app.put_json("/v1/buckets/blog/groups/eds", {"data": {"members": [bob]}}, headers=ALICE)
        app.patch_json(
            COLLECTION, {"permissions": {"write": ["/buckets/blog/groups/eds"]}}, headers=ALICE
        )
        url = f"{RECORDS}/r1"
        app.put_json(url, {"data": {}, "permissions": {"read": ["x"]}}, headers=ALICE)
        ops = [
            # Kinto's JSON-Patch sees a principals' list as {principal: principal}.
            {"op": "test", "path": "/permissions/read", "value": {"x": "x"}},
            {"op": "add", "path": "/permissions/read/y", "value": "y"},
            {"op": "add", "path": "/data/t", "value": 1},
        ]
        headers = {**ALICE, "Content-Type": "application/json-patch+json"}
        first = app.patch(url, json.dumps(ops), headers=headers, status="*")
        bad = [{"op": "test", "path": "/permissions/read", "value": {"nobody": "nobody"}}]
        second = app.patch(url, json.dumps(bad), headers=headers, status="*")
        by_group = app.patch_json(url, {"data": {"t": 2}}, headers=BOB, status="*")
        stored = app.get(url, headers=ALICE).json["permissions"]
        results.append(
            (
                first.status_int,
                sorted(first.json.get("permissions", {}).get("read", [])),
                second.status_int,
                by_group.status_int,
                by_group.json.get("permissions"),
                {k: sorted(v) for k, v in stored.items()},
            )
        )
    assert results[0][:-1] == results[1][:-1]
    ours, theirs = results
    assert sorted(ours[-1]) == sorted(theirs[-1])
    assert ours[-1]["read"] == theirs[-1]["read"]


def test_a_put_that_waited_for_a_record_whose_permissions_changed_is_authorised_again(
    kinto, monkeypatch
):
    """HELD. Bob may write r1 (its own ACE); Alice's batch holding r1 takes it away. His
    ``PUT`` that waited is authorised again on the record as it is: 403."""
    app = kinto.app
    bob = userid(app, BOB)
    url = f"{RECORDS}/r1"
    app.put_json(url, {"data": {}, "permissions": {"write": [bob]}}, headers=ALICE)
    locked, go = paused_batch(monkeypatch)
    batch = {
        "requests": [
            {"method": "PATCH", "path": url[3:], "body": {"permissions": {"write": []}}},
        ]
    }
    out = {}
    batcher = in_thread(
        out, "batch", lambda: app.post_json("/v1/batch", batch, headers=ALICE, status="*")
    )
    assert locked.wait(20)
    writer = in_thread(
        out, "put", lambda: app.put_json(url, {"data": {"b": 1}}, headers=BOB, status="*")
    )
    time.sleep(1.0)
    go.set()
    batcher.join(30)
    writer.join(30)
    monkeypatch.undo()
    assert out["put"].status_int == 403, out["put"].text
    assert "b" not in app.get(url, headers=ALICE).json["data"]


def test_history_of_a_write_that_waited_names_the_record_it_changed(
    backend, tmp_path_factory, request, monkeypatch
):
    """HELD. With the history plugin: Alice's ``PATCH`` waiting for her upload that replaces
    the file: its history entry's ``old`` is the record as the upload left it (the file the
    upload wrote), not as the route factory read it."""
    kinto = cached_app(backend, tmp_path_factory, request, **{"kinto.includes": PLUGINS})
    kinto.create_collection()
    app = kinto.app
    url = f"{RECORDS}/r1"
    kinto.upload(url, content=b"v1")
    thread, go, result = paused_creation(kinto, monkeypatch, url, content=b"v2")
    out = {}
    writer = in_thread(
        out, "patch", lambda: app.patch_json(url, {"data": {"t": 1}}, headers=ALICE, status="*")
    )
    time.sleep(1.0)
    go.set()
    thread.join(30)
    writer.join(30)
    monkeypatch.undo()
    assert out["patch"].status_int == 200, out["patch"].text
    location = result["upload"].json["location"]
    assert app.get(url, headers=ALICE).json["data"]["attachment"]["location"] == location
    history = app.get("/v1/buckets/blog/history?resource_name=record", headers=ALICE).json
    entry = history["data"][0]
    assert entry["action"] == "update" and entry["target"]["data"]["t"] == 1
    assert entry["target"]["data"]["attachment"]["location"] == location


@pytest.mark.postgresql
def test_one_connection_uploads_batches_and_writes_on_new_collections(tmp_path_factory, request):
    """HELD. ``kinto.storage_pool_size = 1`` (no overflow beyond Kinto's default): an upload
    creating a new collection's first record, a batch on another new collection, a ``PUT``
    through the default bucket, in a row: no pool timeout (``timestamps.ensure`` reads in the
    request's own connection)."""
    kinto = cached_app(
        "postgresql",
        tmp_path_factory,
        request,
        **{
            "kinto.storage_pool_size": "1",
            "kinto.storage_max_overflow": "0",
            "kinto.includes": PLUGINS,
        },
    )
    kinto.create_collection()
    app = kinto.app
    started = time.monotonic()
    kinto.upload(f"{RECORDS}/r1", content=b"x", status=201)
    kinto.create_collection("blog", "c2")
    batch = {
        "requests": [
            {"method": "PUT", "path": "/buckets/blog/collections/c3", "body": {}},
            {"method": "PUT", "path": "/buckets/blog/collections/c3/records/a", "body": {}},
            {"method": "PUT", "path": "/buckets/default/collections/d/records/a", "body": {}},
        ]
    }
    answers = app.post_json("/v1/batch", batch, headers=ALICE).json["responses"]
    assert [r["status"] for r in answers] == [201, 201, 201]
    kinto.upload("/v1/buckets/default/collections/e/records/r", content=b"y", status=201)
    assert time.monotonic() - started < 20
