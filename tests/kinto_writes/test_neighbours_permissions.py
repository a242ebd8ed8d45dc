"""Deleting a bucket, a collection or a record keeps the permissions of its neighbours whose ids
differ where the deleted one's has a ``_`` (Kinto's PostgreSQL permission backend deletes by
``LIKE`` on the object's id, where ``_`` matches any character)."""

import pytest

from ..conftest import ALICE, BOB, cached_app


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("deleted", "neighbour"),
    [
        ("/buckets/a_c", "/buckets/abc"),
        ("/buckets/blog/collections/x_y", "/buckets/blog/collections/xzy"),
        (
            "/buckets/blog/collections/articles/records/r_1",
            "/buckets/blog/collections/articles/records/r01",
        ),
    ],
)
def test_deleting_an_object_keeps_its_neighbours_permissions(
    tmp_path_factory, request, deleted, neighbour
):
    kinto = cached_app("postgresql", tmp_path_factory, request)
    kinto.create_collection()
    app = kinto.app
    for path in sorted({deleted, neighbour}, key=len):
        for ancestor in _ancestors(path):
            app.put_json(f"/v1{ancestor}", {}, headers=ALICE, status="*")
        app.put_json(f"/v1{path}", {"permissions": {"read": ["system.Everyone"]}}, headers=ALICE)
    app.delete(f"/v1{deleted}", headers=ALICE, status=200)
    kept = app.get(f"/v1{neighbour}", headers=ALICE, status="*")
    assert kept.status_int == 200, kept.text
    assert kept.json["permissions"]["read"] == ["system.Everyone"]
    assert app.get(f"/v1{neighbour}", headers=BOB, status="*").status_int == 200


def _ancestors(path):
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(2, len(parts), 2)]


@pytest.mark.postgresql
def test_deleting_a_bucket_still_deletes_the_permissions_under_it(tmp_path_factory, request):
    """The escaped ids keep Kinto's ``*``: a deleted bucket's collections and records lose
    their permissions with it."""
    kinto = cached_app("postgresql", tmp_path_factory, request)
    app, everyone = kinto.app, {"permissions": {"read": ["system.Everyone"]}}
    app.put_json("/v1/buckets/a_c", {}, headers=ALICE)
    app.put_json("/v1/buckets/a_c/collections/c_1", everyone, headers=ALICE)
    app.put_json("/v1/buckets/a_c/collections/c_1/records/r_1", everyone, headers=ALICE)
    app.delete("/v1/buckets/a_c", headers=ALICE)
    permission = kinto.registry.permission
    for path in (
        "/buckets/a_c",
        "/buckets/a_c/collections/c_1",
        "/buckets/a_c/collections/c_1/records/r_1",
    ):
        assert permission.get_object_permissions(path) == {}, path
