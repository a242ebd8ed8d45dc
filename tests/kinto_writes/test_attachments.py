"""What happens to attachments when records, collections and buckets are written through
Kinto's own endpoints (record views, ``/batch``, the ``default`` bucket, bulk deletes), not
through ``{record}/attachment``: an adversarial review's tests (2026-12-05). Those marked HELD
are attacks the code withstood."""

import json
import threading
import time

import pytest

from kinto_attachment.uploads import record as record_step

from ..conftest import ALICE, BOB, basic_auth, cached_app
from .pauses import paused_batch


CAROL = basic_auth("carol")
COLLECTION = "/v1/buckets/blog/collections/articles"
RECORDS = f"{COLLECTION}/records"


def userid(app, headers):
    return app.get("/v1/", headers=headers).json["user"]["id"]


def bobs_bucket(kinto):
    """Bob's own bucket ``bobs``, collection ``c``."""
    kinto.create_collection("bobs", "c", headers=BOB)
    return "/v1/buckets/bobs/collections/c/records"


def paused_creation(kinto, monkeypatch, url, content=b"alice's file"):
    """Alice's upload that creates ``url``, paused once it holds the record's lock (between
    ``lock_record`` and its write): any Kinto write of the record waits for it meanwhile."""
    locked, go = threading.Event(), threading.Event()
    original = record_step.lock_record

    def lock_record(request, context):
        found = original(request, context)
        locked.set()
        assert go.wait(20)
        return found

    monkeypatch.setattr(record_step, "lock_record", lock_record)
    result = {}

    def run():
        result["upload"] = kinto.upload(url, content=content, filename="a.txt", status="*")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert locked.wait(20)
    return thread, go, result


def race_creation(kinto, monkeypatch, write):
    """``write()`` (Bob's) sent while Alice's upload creating r1 holds its lock, then Alice's
    upload let go; both answers."""
    app = kinto.app
    # Not the first record of the collection: see the last test of this file.
    app.put_json(f"{RECORDS}/other", {"data": {}}, headers=ALICE, status=201)
    url = f"{RECORDS}/r1"
    thread, go, result = paused_creation(kinto, monkeypatch, url)
    out = {}
    writer = threading.Thread(target=lambda: out.setdefault("write", write(url)), daemon=True)
    writer.start()
    time.sleep(1.0)  # Bob's request is past Kinto's permission check, waiting for the lock.
    go.set()
    thread.join(30)
    writer.join(30)
    monkeypatch.undo()
    return result["upload"], out["write"]


def test_a_reader_deletes_a_record_created_while_his_delete_waited_for_its_lock(
    kinto, monkeypatch
):
    """Found by review (2026-12-05).

    It was: Bob may only read the collection. His ``DELETE`` of a record that does not
    exist yet passes Kinto's check (Kinto lets a write of a missing record through when the
    parent is readable, to answer 404: ``kinto.core.authorization``, Kinto/kinto#918);
    ``write_locks.lock_write`` then waits for the record's lock, held by Alice's upload that
    creates it, and reads the record again: Kinto's view deletes Alice's new record, and the
    plugin deletes her file after commit. Fixed: a record created, changed or deleted while a
    write waited for its lock is authorised again (403 here), as if the write came after."""
    app = kinto.app
    bob = userid(app, BOB)
    app.patch_json(COLLECTION, {"permissions": {"read": [bob]}}, headers=ALICE)

    uploaded, deleted = race_creation(
        kinto, monkeypatch, lambda url: app.delete(url, headers=BOB, status="*")
    )
    assert uploaded.status_int == 201, uploaded.text
    location = uploaded.json["location"]
    assert kinto.exists(location), f"Alice's file deleted by a reader ({deleted.status})"
    assert deleted.status_int in (403, 404, 412), f"a reader deleted it: {deleted.text}"
    assert app.get(f"{RECORDS}/r1", headers=ALICE, status="*").status_int == 200


def test_a_reader_patches_a_record_created_while_his_patch_waited_and_becomes_its_writer(
    kinto, monkeypatch
):
    """Found by review (2026-12-05).

    It was: as above, with a ``PATCH``: the reader's data was written into Alice's new
    record and Kinto added him to its ``write`` principals (the writer of a record is its
    owner), after which he could replace or delete its attachment. Fixed: as above."""
    app = kinto.app
    bob = userid(app, BOB)
    app.patch_json(COLLECTION, {"permissions": {"read": [bob]}}, headers=ALICE)

    uploaded, patched = race_creation(
        kinto,
        monkeypatch,
        lambda url: app.patch_json(url, {"data": {"title": "bob"}}, headers=BOB, status="*"),
    )
    assert uploaded.status_int == 201, uploaded.text
    assert patched.status_int in (403, 404, 412), f"a reader wrote it: {patched.text}"
    record = app.get(f"{RECORDS}/r1", headers=ALICE).json
    assert "title" not in record["data"]
    assert bob not in record["permissions"].get("write", [])
    # And so he may not delete the file either.
    app.delete(f"{RECORDS}/r1/attachment", headers=BOB, status=403)


PATCHES = {
    "json-patch": (
        "application/json-patch+json",
        '[{"op": "add", "path": "/data/title", "value": "x"}]',
    ),
    "merge-patch": (
        "application/merge-patch+json",
        '{"data": {"title": "x"}, "permissions": {"read": ["system.Authenticated"]}}',
    ),
}


@pytest.mark.parametrize("patch", PATCHES, ids=list(PATCHES))
def test_a_patch_of_a_record_keeps_the_permissions_it_does_not_name(kinto, patch):
    """Found by review (2026-12-05).

    It was: Kinto's JSON-Patch and merge-patch start from the stored record's
    permissions (``__permissions__``, which its route factory's ``model.get_object`` adds):
    a JSON-Patch of ``/data/title`` keeps every principal, a merge-patch of ``read`` keeps
    ``write`` (Kinto alone does, checked on an app without the plugin).
    ``write_locks.lock_write`` replaces ``context.current_object`` with the bare stored record
    (``records.stored``: no ``__permissions__``), which Kinto's view then uses
    (``_get_object_or_404``): its ``process_object`` sees no permissions, and writes back
    empty ``read``/``write`` lists: every reader and co-writer of the record is dropped (the
    patcher is added back as the owner). Bob lost his download of Alice's file, Carol her
    write. Fixed: the record is read again as Kinto's factory reads it, permissions and all."""
    app = kinto.app
    bob, carol = userid(app, BOB), userid(app, CAROL)
    url = f"{RECORDS}/r1"
    kinto.upload(url, content=b"shared", permissions={"read": [bob], "write": [carol]})
    assert app.get(url + "/attachment", headers=BOB).body == b"shared"
    content_type, body = PATCHES[patch]
    app.patch(url, body, headers={**ALICE, "Content-Type": content_type}, status=200)

    permissions = app.get(url, headers=ALICE).json["permissions"]
    assert carol in permissions.get("write", []), permissions
    if patch == "json-patch":
        assert bob in permissions.get("read", []), permissions
        assert app.get(url + "/attachment", headers=BOB).body == b"shared"


# ---------------------------------------------------------------------------------------------
# HELD
# ---------------------------------------------------------------------------------------------


def forged_writes(app, url, forged, stored=None):
    """Every way Kinto's record views take a body, each setting ``attachment`` to ``forged``
    (``stored``: the record's current version, for JSON-Patch forms that need one)."""
    json_patch = {"Content-Type": "application/json-patch+json"}
    merge = {"Content-Type": "application/merge-patch+json"}
    plural = url.rsplit("/", 1)[0]
    rid = url.rsplit("/", 1)[1]

    ops = [
        [{"op": "add", "path": "/data/attachment", "value": forged}],
        [{"op": "replace", "path": "/data", "value": {"attachment": forged}}],
        [
            {"op": "add", "path": "/data/x", "value": forged},
            {"op": "move", "from": "/data/x", "path": "/data/attachment"},
        ],
    ]
    yield lambda h: app.put_json(url, {"data": {"attachment": forged}}, headers=h, status="*")
    yield lambda h: app.patch_json(url, {"data": {"attachment": forged}}, headers=h, status="*")
    yield lambda h: app.patch(
        url, json.dumps({"data": {"attachment": forged}}), headers={**h, **merge}, status="*"
    )
    for op in ops:
        yield lambda h, op=op: app.patch(
            url, json.dumps(op), headers={**h, **json_patch}, status="*"
        )
    yield lambda h: app.post_json(
        plural, {"data": {"id": rid, "attachment": forged}}, headers=h, status="*"
    )
    yield lambda h: app.post_json(
        "/v1/batch",
        {
            "requests": [
                {"method": "PUT", "path": url[3:], "body": {"data": {"attachment": forged}}}
            ]
        },
        headers=h,
        status="*",
    )


def test_a_hand_written_attachment_naming_anothers_file_is_refused_and_deletes_nothing(kinto):
    """HELD. Bob, who owns his bucket, writes by hand into his records an ``attachment``
    that names Alice's file (same location, hash, size) on every form of write: each is
    refused (400) before it is written, on a new record, on a record without file and on a
    record with a file of his own. Then he deletes his attachment, his records, his bucket:
    Alice's file is there, and served to her only."""
    app = kinto.app
    alices = kinto.upload(f"{RECORDS}/r1", content=b"alice's secret").json
    records = bobs_bucket(kinto)
    app.put_json(f"{records}/plain", {"data": {"title": "plain"}}, headers=BOB, status=201)
    kinto.upload(f"{records}/own", content=b"bob's", headers=BOB)
    for rid in ("new", "plain", "own"):
        url = f"{records}/{rid}"
        before = app.get(url, headers=BOB, status="*").json
        for write in forged_writes(app, url, alices):
            response = write(BOB)
            statuses = [response.status_int]
            if "responses" in (response.json or {}):
                statuses = [r["status"] for r in response.json["responses"]]
            assert all(s == 400 for s in statuses), (rid, response.text[:300])
        assert app.get(url, headers=BOB, status="*").json == before
    app.delete(f"{records}/own/attachment", headers=BOB, status=204)
    app.delete(f"{records}/own", headers=BOB, status=200)
    app.delete(f"{records}/plain", headers=BOB, status=200)
    app.delete("/v1/buckets/bobs", headers=BOB, status=200)
    assert kinto.read(alices["location"]) == b"alice's secret"
    assert app.get(f"{RECORDS}/r1/attachment", headers=ALICE).body == b"alice's secret"
    app.get(f"{RECORDS}/r1/attachment", headers=BOB, status=403)
    assert kinto.files() == [kinto.key_of(alices["location"])]


def test_a_put_that_drops_the_attachment_is_refused_and_keeps_the_file(kinto):
    """HELD. kinto-attachment keeps the file when a plain record update drops the field;
    here a ``PUT`` without ``attachment`` (``data: {}``, or data without it) is refused, so
    the record keeps naming its file, which stays. A ``PUT`` without ``data`` keeps the
    stored record (Kinto), file included."""
    app = kinto.app
    url = f"{RECORDS}/r1"
    meta = kinto.upload(url, content=b"kept").json
    before = app.get(url, headers=ALICE).json["data"]
    app.put_json(url, {"data": {"title": "new"}}, headers=ALICE, status=400)
    app.put_json(url, {"data": {}}, headers=ALICE, status=400)
    app.put_json(url, {"permissions": {"read": ["system.Authenticated"]}}, headers=ALICE)
    after = app.get(url, headers=ALICE).json["data"]
    assert after["attachment"] == before["attachment"]
    assert kinto.read(meta["location"]) == b"kept"
    # Once the file is deleted through its route, a plain PUT goes through.
    app.delete(url + "/attachment", headers=ALICE, status=204)
    assert not kinto.exists(meta["location"])
    app.put_json(url, {"data": {"title": "new"}}, headers=ALICE, status=200)


def test_batch_record_deletes_beside_failing_subrequests_take_only_their_files(kinto):
    """HELD. ``POST /batch``: a record delete, a delete with a stale ``If-Match`` (412), a
    delete of a missing record (404) and a refused ``attachment`` edit (400): 200, the batch
    commits, the deleted record's file goes, the others stay."""
    app = kinto.app
    gone = kinto.upload(f"{RECORDS}/gone", content=b"gone").json["location"]
    stale = kinto.upload(f"{RECORDS}/stale", content=b"stale").json["location"]
    edited = kinto.upload(f"{RECORDS}/edited", content=b"edited").json["location"]
    requests = [
        {"method": "DELETE", "path": "/buckets/blog/collections/articles/records/gone"},
        {
            "method": "DELETE",
            "path": "/buckets/blog/collections/articles/records/stale",
            "headers": {"If-Match": '"1"'},
        },
        {"method": "DELETE", "path": "/buckets/blog/collections/articles/records/nowhere"},
        {
            "method": "PATCH",
            "path": "/buckets/blog/collections/articles/records/edited",
            "body": {"data": {"attachment": None}},
        },
    ]
    response = app.post_json("/v1/batch", {"requests": requests}, headers=ALICE, status=200)
    assert [r["status"] for r in response.json["responses"]] == [200, 412, 404, 400]
    assert not kinto.exists(gone)
    assert kinto.read(stale) == b"stale"
    assert kinto.read(edited) == b"edited"
    assert app.get(f"{RECORDS}/edited/attachment", headers=ALICE).body == b"edited"


@pytest.mark.rolls_back
@pytest.mark.parametrize("target", ["bucket", "collection", "records", "record"])
def test_a_batch_rolled_back_keeps_the_files_of_what_it_deleted(kinto, target):
    """HELD (PostgreSQL). A batch deleting a bucket, a collection, a collection's records or a
    record, then failing with a 500 (a sub-request Kinto cannot serve: ``If-None-Match: *x``
    fails in Kinto's header schema): the whole batch is rolled back, the records still name
    their files, which are all there."""
    app = kinto.app
    kinto.create_collection("other", "c")
    locations = [
        kinto.upload(kinto.record_url(rid), content=rid.encode()).json["location"]
        for rid in ("r1", "r2")
    ]
    path = {
        "bucket": "/buckets/blog",
        "collection": "/buckets/blog/collections/articles",
        "records": "/buckets/blog/collections/articles/records",
        "record": "/buckets/blog/collections/articles/records/r1",
    }[target]
    requests = [
        {"method": "DELETE", "path": path},
        {
            "method": "PUT",
            "path": "/buckets/other/collections/c/records/x",
            "body": {"data": {}},
            "headers": {"If-None-Match": "*x"},
        },
    ]
    response = app.post_json("/v1/batch", {"requests": requests}, headers=ALICE, status="*")
    assert response.status_int >= 500, response.text[:300]
    for rid, location in zip(("r1", "r2"), locations, strict=True):
        assert app.get(kinto.record_url(rid) + "/attachment", headers=ALICE).body == rid.encode()
        assert kinto.exists(location)


def test_the_default_bucket_and_history_delete_only_their_own_files(kinto_plugins):
    """HELD. Through ``/buckets/default``: a record delete takes its file, a collection delete
    its records' files, the whole default bucket its files; another user's default bucket and
    Alice's ``blog`` keep theirs. History keeps the entries (metadata only), readable only by
    the bucket's owner."""
    kinto = kinto_plugins
    app = kinto.app
    default = "/v1/buckets/default/collections"
    alices = kinto.upload(f"{RECORDS}/r1", content=b"alice").json["location"]
    bobs = kinto.upload(f"{default}/t/records/b1", content=b"bob", headers=BOB).json["location"]
    mine = [
        kinto.upload(f"{default}/{c}/records/{r}", content=f"{c}{r}".encode()).json["location"]
        for c, r in (("t", "r1"), ("t", "r2"), ("u", "r1"), ("v", "r1"))
    ]
    app.delete(f"{default}/t/records/r1", headers=ALICE, status=200)
    assert not kinto.exists(mine[0]) and kinto.exists(mine[1])
    app.delete(f"{default}/t", headers=ALICE, status=200)
    assert not kinto.exists(mine[1]) and kinto.exists(mine[2])
    app.delete(f"{default}/u/records", headers=ALICE, status=200)
    assert not kinto.exists(mine[2]) and kinto.exists(mine[3])
    bucket = app.get("/v1/", headers=ALICE).json["user"]["bucket"]
    history = app.get(f"/v1/buckets/{bucket}/history", headers=ALICE).json["data"]
    assert any(e["action"] == "delete" and e["resource_name"] == "record" for e in history)
    app.get(f"/v1/buckets/{bucket}/history", headers=BOB, status=403)
    app.delete("/v1/buckets/default", headers=ALICE, status=200)
    assert not kinto.exists(mine[3])
    assert kinto.read(bobs) == b"bob"
    assert kinto.read(alices) == b"alice"
    assert app.get(f"{default}/t/records/b1/attachment", headers=BOB).body == b"bob"


def test_a_bulk_delete_by_a_record_creator_takes_only_the_files_of_his_records(kinto):
    """HELD. Bob may create records in Alice's collection (``record:create``) and read it:
    ``DELETE .../records`` deletes only the records he may write (his), and their files;
    Alice's record and file stay. ``DELETE /buckets`` by Bob takes only his buckets."""
    app = kinto.app
    bob = userid(app, BOB)
    app.patch_json(
        COLLECTION, {"permissions": {"record:create": [bob], "read": [bob]}}, headers=ALICE
    )
    alices = kinto.upload(f"{RECORDS}/a1", content=b"alice").json["location"]
    bobs = kinto.upload(f"{RECORDS}/b1", content=b"bob", headers=BOB).json["location"]
    response = app.delete(RECORDS, headers=BOB, status=200)
    assert [r["id"] for r in response.json["data"]] == ["b1"]
    assert not kinto.exists(bobs)
    assert kinto.read(alices) == b"alice"
    own = kinto.upload(bobs_bucket(kinto) + "/x", content=b"own", headers=BOB).json["location"]
    app.delete("/v1/buckets", headers=BOB, status=200)
    assert not kinto.exists(own)
    assert app.get(f"{RECORDS}/a1/attachment", headers=ALICE).body == b"alice"


def test_readers_and_anonymous_creators_cannot_replace_or_delete_an_attachment(kinto):
    """HELD. Bob may read Alice's record; everyone (anonymous too) may create records in the
    collection: neither Bob nor an anonymous client may replace (``POST``) or delete
    (``DELETE``) the attachment of Alice's existing record, nor its record through Kinto
    (``PUT``, ``PATCH``, ``DELETE``), nor by a ``POST`` of its id on the plural endpoint."""
    app = kinto.app
    bob = userid(app, BOB)
    app.patch_json(
        COLLECTION,
        {"permissions": {"record:create": ["system.Everyone"], "read": [bob]}},
        headers=ALICE,
    )
    url = f"{RECORDS}/r1"
    location = kinto.upload(url, content=b"alice").json["location"]
    before = app.get(url, headers=ALICE).json
    for headers in (BOB, {}):
        status = (401, 403)
        kinto.upload(url, content=b"evil", headers=headers, status=status)
        app.delete(url + "/attachment", headers=headers, status=status)
        app.put_json(url, {"data": {"title": "evil"}}, headers=headers, status=status)
        app.patch_json(url, {"data": {"title": "evil"}}, headers=headers, status=status)
        app.delete(url, headers=headers, status=status)
        posted = app.post_json(
            RECORDS, {"data": {"id": "r1", "title": "evil"}}, headers=headers, status="*"
        )
        assert posted.status_int in (200, 401, 403), posted.text
    assert app.get(url, headers=ALICE).json == before
    assert kinto.read(location) == b"alice"


@pytest.mark.postgresql
def test_a_record_write_racing_the_upload_that_creates_a_collections_first_record(
    tmp_path_factory, request, monkeypatch
):
    """Found by review (2026-12-05).

    It was (PostgreSQL): the first write of a collection's records inserts the records'
    timestamp row of the collection (Kinto's ``resource_timestamp`` upsert). Alice's upload
    creating the collection's first record holds the record's lock (``lock_record``), then
    writes the record; Alice's own ``PATCH`` of that record from another client, meanwhile,
    reads the collection's timestamp in Kinto's route factory/resource (inserting the row,
    uncommitted) before ``write_locks.lock_write`` waits for the record's lock: the upload's
    write then waits for that row: PostgreSQL's deadlock detector kills one of them, a 5xx
    (``DeadlockDetected``). Fixed: an upload creating a record reads (so makes) the timestamp
    row before it takes the record's lock (:mod:`kinto_attachment.state.timestamps`): one
    waits for the other, both answer without a 5xx."""
    kinto = cached_app("postgresql", tmp_path_factory, request)
    kinto.create_collection()
    app = kinto.app
    url = f"{RECORDS}/r1"
    thread, go, result = paused_creation(kinto, monkeypatch, url)
    out = {}

    def write():
        out["write"] = app.put_json(url, {"data": {"title": "t"}}, headers=ALICE, status="*")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    time.sleep(1.0)
    go.set()
    thread.join(30)
    writer.join(30)
    statuses = [result["upload"].status_int, out["write"].status_int]
    if result["upload"].status_int >= 500:  # Its blob is gone with it (held): no orphan.
        assert kinto.files() == []
    assert all(s < 500 for s in statuses), (statuses, out["write"].text[:200])


@pytest.mark.postgresql
def test_a_record_write_racing_a_batch_that_writes_a_new_collections_first_records(
    tmp_path_factory, request, monkeypatch
):
    """Found by a review of a fix (2026-12-05).

    A ``POST /batch`` takes the locks of all its writes before the first runs
    (``write_locks.lock_batch``), then each sub-request's resource reads its timestamp: the
    same deadlock as above with a batch in the upload's place (Bob's ``PUT`` of r1, read the
    new collection's timestamp, waits for r1's lock, held by the batch, whose sub-request then
    waits for that timestamp). Fixed: the batch reads the timestamps its sub-requests read
    before it locks."""
    kinto = cached_app("postgresql", tmp_path_factory, request)
    kinto.create_collection()
    app = kinto.app
    locked, go = paused_batch(monkeypatch)
    out = {}
    batch = {
        "requests": [
            {"method": "PUT", "path": f"{RECORDS[3:]}/r1", "body": {"data": {"n": 1}}},
            {"method": "PUT", "path": f"{RECORDS[3:]}/r2", "body": {"data": {"n": 2}}},
        ]
    }
    batcher = threading.Thread(
        target=lambda: out.setdefault(
            "batch", app.post_json("/v1/batch", batch, headers=ALICE, status="*")
        ),
        daemon=True,
    )
    batcher.start()
    assert locked.wait(20)
    writer = threading.Thread(
        target=lambda: out.setdefault(
            "write", app.put_json(f"{RECORDS}/r1", {"data": {"n": 3}}, headers=ALICE, status="*")
        ),
        daemon=True,
    )
    writer.start()
    time.sleep(1.0)  # The PUT read the timestamp, and waits for r1's lock.
    go.set()
    batcher.join(30)
    writer.join(30)
    statuses = [out["write"].status_int] + [r["status"] for r in out["batch"].json["responses"]]
    assert all(s < 500 for s in statuses), (statuses, out["batch"].text[:300])
    assert app.get(f"{RECORDS}/r1", headers=ALICE).json["data"]["n"] == 3
