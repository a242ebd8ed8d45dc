"""Held against a review (2026-12-06): ``links.pop_records`` / ``legacy.links_of_records``
(record deletions popped by pages of 1,000): every deleted record's links and files go after
the commit, nothing of another record, collection or bucket (LIKE wildcards, prefixes, > 1000
records, batches over two collections, kinto-attachment's rows, the default bucket), on both
backends."""

import pytest
import transaction

from kinto_attachment.state import legacy, links

from .conftest import ALICE, cached_app
from .kinto_writes.conftest import PLUGINS
from .test_adoption import legacy_record


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def backend(request):
    return request.param


@pytest.fixture
def kinto(backend, tmp_path_factory, request):
    kinto = cached_app(backend, tmp_path_factory, request)
    kinto.registry.attachment_adopted = False  # The marker went with the previous test's data.
    return kinto


def _links(kinto):
    with transaction.manager:
        ours = links.all_links(kinto.registry.storage)
        old = list(legacy.every(kinto.registry.storage))
    return sorted(
        (link["bucket_id"], link["collection_id"], link["record_id"]) for link in [*ours, *old]
    )


def _put_records(kinto, collection, ids, bucket="blog"):
    with transaction.manager:
        for record_id in ids:
            kinto.registry.storage.create(
                resource_name="record",
                parent_id=f"/buckets/{bucket}/collections/{collection}",
                obj={"id": record_id, "n": 1},
            )


def test_wildcard_and_prefix_ids_lose_nothing_of_their_neighbours(kinto):
    """Attack: ``_`` is a LIKE wildcard and ``r1`` a prefix of ``r10``: a plural delete of
    ``a_c``'s ``r_1`` must take its file only, not ``abc``'s, ``a_cx``'s, nor ``r_10``'s,
    ``rx1``'s (nor the bucket ``b_og``'s twin ``blog``)."""
    for bucket, collection in [
        ("b_og", "a_c"),
        ("b_og", "abc"),
        ("b_og", "a_cx"),
        ("blog", "a_c"),
    ]:
        kinto.create_collection(bucket=bucket, collection=collection)
    uploaded = {}
    for bucket, collection, record in [
        ("b_og", "a_c", "r_1"),
        ("b_og", "a_c", "r_10"),
        ("b_og", "a_c", "rx1"),
        ("b_og", "abc", "r_1"),
        ("b_og", "abc", "rx1"),
        ("b_og", "a_cx", "r_1"),
        ("blog", "a_c", "r_1"),
    ]:
        url = kinto.record_url(record, bucket=bucket, collection=collection)
        uploaded[(bucket, collection, record)] = kinto.upload(url, record.encode()).json[
            "location"
        ]
    records = "/v1/buckets/b_og/collections/a_c/records"
    deleted = kinto.app.delete(records + "?in_id=r_1,rx1", headers=ALICE).json["data"]
    assert sorted(r["id"] for r in deleted) == ["r_1", "rx1"]
    gone = {("b_og", "a_c", "r_1"), ("b_og", "a_c", "rx1")}
    for ids, location in uploaded.items():
        assert kinto.exists(location) == (ids not in gone), ids
    assert _links(kinto) == sorted(set(uploaded) - gone)


def test_more_than_a_thousand_records_take_every_file_and_row(kinto):
    """Attack: a plural delete of 1,100 records (pages of 1,000 ids): the files and links of
    records on both pages (ours and kinto-attachment's rows) go; another collection's
    records of the same ids keep theirs."""
    kinto.create_collection()
    kinto.create_collection(collection="other")
    ids = [f"r{i:04d}" for i in range(1100)]
    attached = ["r0000", "r0999", "r1000", "r1099", "r0500"]
    old = ["r0001", "r1050"]
    _put_records(kinto, "articles", [i for i in ids if i not in attached + old])
    locations = [kinto.upload(kinto.record_url(r), r.encode()).json["location"] for r in attached]
    old_keys = [legacy_record(kinto, record_id=r, content=r.encode())["key"] for r in old]
    kept = [
        kinto.upload(kinto.record_url(r, collection="other"), b"kept").json["location"]
        for r in ("r0000", "r1099")
    ]
    kept_old = legacy_record(kinto, record_id="r1050", collection="other", content=b"kept old")
    deleted = kinto.app.delete(
        "/v1/buckets/blog/collections/articles/records", headers=ALICE
    ).json["data"]
    assert len(deleted) == 1100
    assert not any(kinto.exists(location) for location in locations)
    store = kinto.registry.attachment_store
    assert not any(store.exists(key) for key in old_keys)
    assert all(kinto.exists(location) for location in kept)
    assert store.exists(kept_old["key"])
    assert _links(kinto) == [
        ("blog", "other", "r0000"),
        ("blog", "other", "r1050"),
        ("blog", "other", "r1099"),
    ]


def test_a_batch_deleting_records_of_two_collections_takes_each_ones_files(kinto):
    """Attack: one batch deleting records of two collections (same ids in both, and a
    kinto-attachment row): two events, each popped by its own collection; a third
    collection's record of the same id, and an undeleted record, keep their files."""
    for collection in ("c1", "c2", "c3"):
        kinto.create_collection(collection=collection)
    files = {}
    for collection, record in [("c1", "r1"), ("c1", "r2"), ("c2", "r1"), ("c3", "r1")]:
        url = kinto.record_url(record, collection=collection)
        files[(collection, record)] = kinto.upload(url, b"x").json["location"]
    old = legacy_record(kinto, record_id="r2", collection="c2", content=b"old c2")
    base = "/buckets/blog/collections"
    response = kinto.app.post_json(
        "/v1/batch",
        {
            "requests": [
                {"method": "DELETE", "path": f"{base}/c1/records/r1"},
                {"method": "DELETE", "path": f"{base}/c2/records/r1"},
                {"method": "DELETE", "path": f"{base}/c2/records/r2"},
            ]
        },
        headers=ALICE,
    )
    assert [r["status"] for r in response.json["responses"]] == [200, 200, 200]
    assert not kinto.exists(files[("c1", "r1")])
    assert not kinto.exists(files[("c2", "r1")])
    assert not kinto.registry.attachment_store.exists(old["key"])
    assert kinto.exists(files[("c1", "r2")])
    assert kinto.exists(files[("c3", "r1")])
    assert _links(kinto) == [("blog", "c1", "r2"), ("blog", "c3", "r1")]


def test_the_default_bucket_plural_delete_takes_its_records_files(
    backend, tmp_path_factory, request
):
    """Attack: a plural delete through Kinto's default bucket (a subrequest, the payload's
    bucket the user's own): its records' files and links go, another collection's stay."""
    kinto = cached_app(backend, tmp_path_factory, request, **{"kinto.includes": PLUGINS})
    base = "/v1/buckets/default/collections"
    kinto.app.put_json(f"{base}/c1", {}, headers=ALICE)
    kinto.app.put_json(f"{base}/c2", {}, headers=ALICE)
    gone = kinto.upload(f"{base}/c1/records/r1", b"one").json["location"]
    kept = kinto.upload(f"{base}/c2/records/r1", b"two").json["location"]
    kinto.app.delete(f"{base}/c1/records", headers=ALICE, status=200)
    assert not kinto.exists(gone)
    assert kinto.exists(kept)
    assert [ids[1:] for ids in _links(kinto)] == [("c2", "r1")]
