"""An upload writes its record as Kinto writes any record (:func:`kinto_attachment.state.
records.write` calls Kinto's record resource in process, not through the router): the
uploader becomes the new record's writer, Kinto's history plugin sees every change with the
user who made it, a collection's schema is enforced, a disabled record ``PUT`` stays
disabled."""

import pytest

from ..conftest import ALICE, BOB, cached_app


#: What the uploader's Basic Auth is, to Kinto: ``basicauth:`` and a digest of it.
def userid_of(kinto, headers):
    return kinto.app.get("/v1/", headers=headers).json["user"]["id"]


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def with_history(request, tmp_path_factory):
    includes = "kinto.plugins.flush kinto.plugins.history kinto_attachment"
    kinto = cached_app(request.param, tmp_path_factory, request, **{"kinto.includes": includes})
    kinto.create_collection()
    return kinto


def history(kinto):
    """The history entries of the record ``r1``, oldest first."""
    entries = kinto.app.get("/v1/buckets/blog/history", headers=ALICE).json["data"]
    return [e for e in reversed(entries) if e.get("record_id") == "r1"]


def test_the_uploader_alone_may_write_the_record_it_created(with_history):
    kinto = with_history
    url = kinto.record_url("r1")
    kinto.upload(url, permissions={"read": ["system.Everyone"]})
    permissions = kinto.app.get(url, headers=ALICE).json["permissions"]
    assert permissions == {"read": ["system.Everyone"], "write": [userid_of(kinto, ALICE)]}
    kinto.upload(url, headers=BOB, status=403)
    assert kinto.app.get(url).json["data"]["attachment"]["filename"] == "hello.txt"


def test_history_tells_each_change_and_who_made_it(with_history):
    kinto = with_history
    url = kinto.record_url("r1")
    kinto.upload(url, b"first", "a.txt")
    kinto.upload(url, b"second", "b.txt")
    kinto.app.delete(f"{url}/attachment", headers=ALICE, status=204)
    entries = history(kinto)
    assert [e["action"] for e in entries] == ["create", "update", "update"]
    assert {e["user_id"] for e in entries} == {userid_of(kinto, ALICE)}
    assert {e["uri"] for e in entries} == {"/buckets/blog/collections/articles/records/r1"}
    files = [(e["target"]["data"]["attachment"] or {}).get("filename") for e in entries]
    assert files == ["a.txt", "b.txt", None]


def test_a_disabled_record_put_refuses_uploads_that_create(tmp_path_factory, request):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.object_record_put_enabled": "false"}
    )
    kinto.create_collection()
    kinto.upload(kinto.record_url("r1"), status=405)
    assert kinto.files() == []
