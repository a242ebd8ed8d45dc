"""The attachment API, on the memory and PostgreSQL backends."""

import hashlib

import pytest

from ..conftest import ALICE, BOB


def sha256(content):
    return hashlib.sha256(content).hexdigest()


def test_upload_creates_the_record_with_metadata_and_data(kinto):
    kinto.create_collection()
    url = kinto.record_url("r1")
    response = kinto.upload(url, b"hello world", "greeting.txt", data={"theme": "orange"})

    meta = response.json
    assert meta["filename"] == "greeting.txt"
    assert meta["hash"] == sha256(b"hello world")
    assert meta["size"] == 11
    assert meta["mimetype"] == "text/plain"
    assert meta["location"].startswith("https://files.example.com/")
    assert meta["location"].endswith(".txt")
    assert response.headers["Location"].endswith(url)

    record = kinto.app.get(url, headers=ALICE).json["data"]
    assert record["attachment"] == meta
    assert record["theme"] == "orange"
    assert kinto.read(meta["location"]) == b"hello world"


def test_upload_applies_permissions(kinto):
    kinto.create_collection()
    url = kinto.record_url("shared")
    kinto.upload(url, permissions={"read": ["system.Everyone"]})
    assert kinto.app.get(url).json["data"]["attachment"]["size"] == 5


def test_upload_on_existing_record_keeps_its_other_fields(kinto):
    kinto.create_collection()
    url = kinto.record_url("r1")
    kinto.app.put_json(url, {"data": {"title": "Hi", "n": 1}}, headers=ALICE)
    kinto.upload(url, data={"n": 2})
    record = kinto.app.get(url, headers=ALICE).json["data"]
    assert record["title"] == "Hi"
    assert record["n"] == 2
    assert record["attachment"]["filename"] == "hello.txt"


def test_replacement_deletes_the_old_file_after_commit(kinto):
    kinto.create_collection()
    url = kinto.record_url()
    first = kinto.upload(url, b"first", "a.txt").json
    second = kinto.upload(url, b"second", "b.txt").json
    assert not kinto.exists(first["location"])
    assert kinto.read(second["location"]) == b"second"
    assert kinto.files() == [kinto.key_of(second["location"])]


def test_delete_attachment(kinto):
    kinto.create_collection()
    url = kinto.record_url()
    meta = kinto.upload(url).json
    response = kinto.app.delete(url + "/attachment", headers=ALICE, status=204)
    assert response.body == b""
    assert kinto.app.get(url, headers=ALICE).json["data"]["attachment"] is None
    assert not kinto.exists(meta["location"])
    assert kinto.files() == []


def test_delete_attachment_of_record_without_one_writes_null(kinto):
    """As kinto-attachment (and docs/api.rst): the record says it has no attachment, and the
    answer carries its new version. Found by review (2026-12-05): the record was left as it
    was, without the field."""
    kinto.create_collection()
    url = kinto.record_url()
    kinto.app.put_json(url, {"data": {"title": "x"}}, headers=ALICE)
    deleted = kinto.app.delete(url + "/attachment", headers=ALICE, status=204)
    after = kinto.app.get(url, headers=ALICE)
    assert after.json["data"]["attachment"] is None
    assert after.json["data"]["title"] == "x"
    assert deleted.headers["ETag"] == after.headers["ETag"]
    # Written again (as kinto-attachment): a stale If-Match is refused, as for any write.
    stale = {**ALICE, "If-Match": '"1"'}
    kinto.app.delete(url + "/attachment", headers=stale, status=412)
    again = kinto.app.delete(url + "/attachment", headers=ALICE, status=204)
    assert again.headers["ETag"] == kinto.app.get(url, headers=ALICE).headers["ETag"]


def test_a_client_asking_for_light_answers_still_gets_the_version(kinto):
    """``Response-Behavior: light`` (or ``diff``) is Kinto's to apply to its own answers: the
    plugin's write of the record reads it whole. Found by review (2026-12-05): a ``500``."""
    kinto.create_collection()
    url = kinto.record_url()
    kinto.upload(url)
    for behavior in ("light", "diff"):
        headers = {**ALICE, "Response-Behavior": behavior}
        replaced = kinto.upload(url, headers=headers, status=200)
        assert replaced.json["filename"] == "hello.txt"
        assert replaced.headers["ETag"] == kinto.app.get(url, headers=ALICE).headers["ETag"]
        deleted = kinto.app.delete(url + "/attachment", headers=headers, status=204)
        assert deleted.headers["ETag"] == kinto.app.get(url, headers=ALICE).headers["ETag"]


def test_upload_and_delete_answers_carry_the_records_version(kinto):
    """``ETag`` and ``Last-Modified`` of the record written, as Kinto's own writes and
    kinto-attachment's answers: a client learns the new version without reading it again.
    Found by review (2026-12-05)."""
    kinto.create_collection()
    url = kinto.record_url()
    uploaded = kinto.upload(url)
    record = kinto.app.get(url, headers=ALICE)
    assert uploaded.headers["ETag"] == record.headers["ETag"]
    assert uploaded.headers["Last-Modified"] == record.headers["Last-Modified"]
    deleted = kinto.app.delete(url + "/attachment", headers=ALICE, status=204)
    record = kinto.app.get(url, headers=ALICE)
    assert deleted.headers["ETag"] == record.headers["ETag"] != uploaded.headers["ETag"]


def test_delete_attachment_of_unknown_record_is_404(kinto):
    kinto.create_collection()
    response = kinto.app.delete(
        kinto.record_url("nope") + "/attachment", headers=ALICE, status=404
    )
    assert response.json["errno"] == 111
    assert response.json["details"] == {"id": "nope", "resource_name": "record"}


def test_deleting_the_record_deletes_the_file(kinto):
    kinto.create_collection()
    url = kinto.record_url()
    kinto.upload(url)
    kinto.app.delete(url, headers=ALICE)
    assert kinto.files() == []


def test_deleting_all_records_of_a_collection_deletes_their_files(kinto):
    kinto.create_collection()
    for rid in ("a", "b", "c"):
        kinto.upload(kinto.record_url(rid))
    kinto.app.delete("/v1/buckets/blog/collections/articles/records", headers=ALICE)
    assert kinto.files() == []


def test_deleting_a_collection_deletes_only_its_files(kinto):
    kinto.create_collection("blog", "articles")
    kinto.create_collection("blog", "other")
    kinto.upload(kinto.record_url("a", collection="articles"))
    kept = kinto.upload(kinto.record_url("b", collection="other")).json
    kinto.app.delete("/v1/buckets/blog/collections/articles", headers=ALICE)
    assert kinto.files() == [kinto.key_of(kept["location"])]


def test_deleting_a_bucket_deletes_only_its_files(kinto):
    # ``a_b`` would match ``aXb`` in a SQL LIKE: links are filtered by exact ids too.
    kinto.create_collection("a_b", "c")
    kinto.create_collection("aXb", "c")
    kinto.upload(kinto.record_url("r", bucket="a_b", collection="c"))
    kept = kinto.upload(kinto.record_url("r", bucket="aXb", collection="c")).json
    kinto.app.delete("/v1/buckets/a_b", headers=ALICE)
    assert kinto.files() == [kinto.key_of(kept["location"])]


def test_deleting_all_buckets_deletes_all_files(kinto):
    kinto.create_collection("one", "c")
    kinto.create_collection("two", "c")
    kinto.upload(kinto.record_url("r", bucket="one", collection="c"))
    kinto.upload(kinto.record_url("r", bucket="two", collection="c"))
    kinto.app.delete("/v1/buckets", headers=ALICE)
    assert kinto.files() == []


def test_flush_deletes_every_file(kinto):
    kinto.create_collection()
    kinto.create_collection("other", "c")
    kinto.upload(kinto.record_url("a"))
    kinto.upload(kinto.record_url("b", bucket="other", collection="c"))
    kinto.app.post("/v1/__flush__", status=202)
    assert kinto.files() == []


def test_attachment_cannot_be_edited_through_the_record(kinto):
    kinto.create_collection()
    url = kinto.record_url()
    meta = kinto.upload(url).json
    forged = {**meta, "location": "https://evil.example.com/x"}
    for method in (kinto.app.patch_json, kinto.app.put_json):
        response = method(url, {"data": {"attachment": forged}}, headers=ALICE, status=400)
        assert response.json["errno"] == 109
        assert "Attachment metadata cannot be modified" in response.json["message"]
    kinto.app.patch_json(url, {"data": {"attachment": None}}, headers=ALICE, status=400)
    assert kinto.app.get(url, headers=ALICE).json["data"]["attachment"] == meta


@pytest.mark.parametrize("meanwhile", ["replaced", "deleted"])
def test_a_write_on_a_stale_record_is_a_412_not_an_attachment_edit(kinto, meanwhile):
    """Found by review (2026-12-05).

    Kinto Admin sends back the record it loaded (its old ``attachment`` included) with
    ``If-Match``: once the file was replaced or deleted meanwhile, that is Kinto's ``412``
    ("modified meanwhile", as kinto-attachment answers), not a ``400`` for an attachment the
    user never touched. With the current version, the edit is refused as before."""
    kinto.create_collection()
    url = kinto.record_url()
    kinto.upload(url)
    loaded = kinto.app.get(url, headers=ALICE).json["data"]
    if meanwhile == "replaced":
        kinto.upload(url, b"newer", "newer.txt")
    else:
        kinto.app.delete(url + "/attachment", headers=ALICE, status=204)
    current = kinto.app.get(url, headers=ALICE).json["data"]
    stale = {**ALICE, "If-Match": f'"{loaded["last_modified"]}"'}

    kinto.app.put_json(url, {"data": {**loaded, "title": "t"}}, headers=stale, status=412)
    kinto.app.put_json(
        url, {"data": {**loaded}}, headers={**ALICE, "If-None-Match": "*"}, status=412
    )
    fresh = {**ALICE, "If-Match": f'"{current["last_modified"]}"'}
    kinto.app.put_json(url, {"data": {**loaded, "title": "t"}}, headers=fresh, status=400)
    assert kinto.app.get(url, headers=ALICE).json["data"] == current


def test_other_fields_stay_editable(kinto):
    kinto.create_collection()
    url = kinto.record_url()
    meta = kinto.upload(url).json
    kinto.app.patch_json(url, {"data": {"title": "new"}}, headers=ALICE)
    # A PUT that sends the attachment back unchanged (as admin UIs do) is fine too.
    kinto.app.put_json(url, {"data": {"title": "newer", "attachment": meta}}, headers=ALICE)
    record = kinto.app.get(url, headers=ALICE).json["data"]
    assert record["title"] == "newer"
    assert record["attachment"] == meta


def test_a_record_cannot_be_created_with_a_forged_attachment(kinto):
    kinto.create_collection()
    forged = {"location": "https://evil.example.com/x", "hash": "0", "size": 1}
    kinto.app.post_json(
        "/v1/buckets/blog/collections/articles/records",
        {"data": {"attachment": forged}},
        headers=ALICE,
        status=400,
    )


def test_permissions(kinto):
    kinto.create_collection()
    url = kinto.record_url()
    # Anonymous, or a stranger, cannot create a record in alice's collection.
    kinto.upload(url, headers={}, status=401)
    response = kinto.upload(url, headers=BOB, status=403)
    assert response.json["errno"] == 121
    kinto.upload(url)
    # Bob cannot replace or delete alice's attachment either.
    kinto.upload(url, headers=BOB, status=403)
    kinto.app.delete(url + "/attachment", headers=BOB, status=403)
    # Once allowed to write the record, he can.
    kinto.app.patch_json(url, {"permissions": {"write": ["system.Authenticated"]}}, headers=ALICE)
    kinto.upload(url, b"bob's", "bob.txt", headers=BOB)
    kinto.app.delete(url + "/attachment", headers=BOB, status=204)


def test_record_create_permission_on_collection_is_enough_to_create(kinto):
    kinto.create_collection()
    kinto.app.patch_json(
        "/v1/buckets/blog/collections/articles",
        {"permissions": {"record:create": ["system.Authenticated"]}},
        headers=ALICE,
    )
    kinto.upload(kinto.record_url("bobs"), headers=BOB)


def test_missing_bucket_or_collection(kinto):
    kinto.create_collection()
    response = kinto.upload(kinto.record_url(collection="missing"), status=404)
    assert response.json["details"] == {"id": "missing", "resource_name": "collection"}
    # Not allowed on an unknown bucket: 403 as for any Kinto object, nothing leaks.
    kinto.upload(kinto.record_url(bucket="missing"), headers=BOB, status=403)
    assert kinto.files() == []


def test_collection_schema_is_enforced(kinto):
    kinto.create_collection()
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}},
        "required": ["title"],
    }
    kinto.app.patch_json(
        "/v1/buckets/blog/collections/articles", {"data": {"schema": schema}}, headers=ALICE
    )
    kinto.upload(kinto.record_url("bad"), data={"nope": 1}, status=400)
    assert kinto.files() == []
    kinto.upload(kinto.record_url("good"), data={"title": "ok"})
    assert len(kinto.files()) == 1


def test_capability_and_heartbeat(kinto):
    capability = kinto.app.get("/v1/").json["capabilities"]["attachments"]
    assert capability["base_url"] == "https://files.example.com/"
    assert capability["version"]
    assert kinto.app.get("/v1/__heartbeat__").json["attachments"] is True
    assert kinto.files() == []


def test_unicode_and_hostile_filenames_stay_inside_the_store(kinto):
    kinto.create_collection()
    for name in ("../../etc/passwd.txt", "..\\..\\boot.ini.txt", "Été à Noël ☃.txt"):
        meta = kinto.upload(kinto.record_url(), b"x", name).json
        assert meta["filename"] == name
        key = kinto.key_of(meta["location"])
        assert "/" not in key and not key.startswith(".")
        assert kinto.files() == [key]
