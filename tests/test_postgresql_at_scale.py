"""kinto_attachment on PostgreSQL at scale (thousands of records, links, files): held against a
review (2026-12-06), which found that a plural ``DELETE`` took a lock per record
(``tests/test_plural_deletes_at_scale.py``); statements per record are bounded here since."""

import os
import time

import pytest
import sqlalchemy
import transaction

from .conftest import ALICE, Kinto, build_settings, dispose, make_app, own_database
from .support.statements import recorded


pytestmark = pytest.mark.postgresql

COLLECTION = "/buckets/blog/collections/articles"


@pytest.fixture
def kinto(tmp_path):
    base_path = str(tmp_path / "files")
    os.makedirs(base_path)
    with own_database("pg_scale") as url:
        kinto = Kinto(make_app(build_settings("postgresql", base_path, pg=url)), base_path)
        kinto.url = url
        kinto.create_collection()
        try:
            yield kinto
        finally:
            dispose(kinto)


def sql(kinto, statement, **params):
    storage = kinto.registry.storage
    with transaction.manager, storage.client.connect() as session:
        result = session.execute(sqlalchemy.text(statement), params)
        return result.fetchall() if result.returns_rows else None


def bulk_records(kinto, count, attachments=True, collection=COLLECTION, prefix="r"):
    """``count`` records (``{prefix}{i}``), each with an attachment, its link and its file when
    ``attachments``: as uploads leave them, written with SQL."""
    base_url = kinto.registry.attachment_settings.base_url
    bucket_id, collection_id = collection.split("/")[2], collection.split("/")[4]
    sql(
        kinto,
        """
        INSERT INTO objects (id, parent_id, resource_name, last_modified, data, deleted)
        SELECT :prefix || i, :collection, 'record',
               timestamp '2026-01-01' + i * interval '1 millisecond',
               CASE WHEN :attachments THEN jsonb_build_object('attachment', jsonb_build_object(
                   'location', :base_url || :prefix || 'bulk-' || i || '.txt',
                   'hash', repeat('0', 64), 'size', 5, 'filename', 'f.txt',
                   'mimetype', 'text/plain')) ELSE '{}'::jsonb END,
               false
        FROM generate_series(0, :count - 1) AS i
        """,
        prefix=prefix,
        collection=collection,
        attachments=attachments,
        base_url=base_url,
        count=count,
    )
    if not attachments:
        return []
    sql(
        kinto,
        """
        INSERT INTO objects (id, parent_id, resource_name, last_modified, data, deleted)
        SELECT substr(encode(sha256(convert_to(:prefix || 'bulk-' || i || '.txt', 'UTF8')),
                             'hex'), 1, 32),
               'attachment:' || :collection || '/records/' || :prefix || i, 'attachment-blob',
               timestamp '2026-01-01' + i * interval '1 millisecond',
               jsonb_build_object('key', :prefix || 'bulk-' || i || '.txt',
                                  'bucket_id', :bucket_id, 'collection_id', :collection_id,
                                  'record_id', :prefix || i, 'hash', repeat('0', 64),
                                  'since', 1767225600000),
               false
        FROM generate_series(0, :count - 1) AS i
        """,
        prefix=prefix,
        collection=collection,
        bucket_id=bucket_id,
        collection_id=collection_id,
        count=count,
    )
    keys = [f"{prefix}bulk-{i}.txt" for i in range(count)]
    for key in keys:
        with open(os.path.join(kinto.base_path, key), "wb") as f:
            f.write(b"hello")
    return keys


def test_plural_delete_of_many_plain_records(kinto):
    """HELD. A plural DELETE of 1000 plain records (Kinto takes up to
    ``storage_max_fetch_size``, 10000, at once) succeeds as on plain Kinto."""
    bulk_records(kinto, 1000, attachments=False)
    response = kinto.app.delete("/v1" + COLLECTION + "/records", headers=ALICE, expect_errors=True)
    assert response.status_int == 200, response.text[:500]
    assert len(response.json["data"]) == 1000


def test_plural_delete_of_many_records_with_attachments(kinto):
    """HELD. A plural DELETE over 1000 records with attachments: it succeeds, deletes every
    file, only after its commit, in about a statement per file (21,018 for 3,000 before the
    review's fix: 7 a record)."""
    keys = bulk_records(kinto, 1000)
    store = kinto.registry.attachment_store
    committed_when_deleted = []
    original = store.delete_many

    def spy(names):
        names = list(names)
        # Another connection: are the records gone (committed) when the files go?
        engine = sqlalchemy.create_engine(kinto.url.replace("postgresql:", "postgresql+psycopg2:"))
        with engine.connect() as other:
            left = other.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM objects WHERE resource_name = 'record'"
                    " AND parent_id = :c AND NOT deleted"
                ),
                {"c": COLLECTION},
            ).scalar()
        engine.dispose()
        committed_when_deleted.append(left)
        return original(names)

    store.delete_many = spy
    try:
        started = time.monotonic()
        with recorded() as sent:
            response = kinto.app.delete(
                "/v1" + COLLECTION + "/records", headers=ALICE, expect_errors=True
            )
        elapsed = time.monotonic() - started
    finally:
        del store.delete_many
    assert response.status_int == 200, response.text[:500]
    assert len(response.json["data"]) == 1000
    assert kinto.files() == []
    assert committed_when_deleted and set(committed_when_deleted) == {0}
    assert len(sent) < 1000 + 100, len(sent)
    assert elapsed < 60
    del keys


def test_delete_bucket_with_many_attachments(kinto):
    """HELD. DELETE of a bucket whose collections hold 2000 records with attachments: it
    succeeds (links popped by pages), deletes every file after commit, in about a statement
    per file."""
    kinto.app.put_json("/v1/buckets/blog/collections/other", {}, headers=ALICE)
    bulk_records(kinto, 1000)
    bulk_records(kinto, 1000, collection="/buckets/blog/collections/other", prefix="o")
    assert len(kinto.files()) == 2000
    with recorded() as sent:
        started = time.monotonic()
        response = kinto.app.delete("/v1/buckets/blog", headers=ALICE, expect_errors=True)
        elapsed = time.monotonic() - started
    assert response.status_int == 200, response.text[:500]
    assert kinto.files() == []
    assert len(sent) < 2000 + 100, len(sent)
    assert elapsed < 60
    left = sql(kinto, "SELECT count(*) FROM objects WHERE resource_name = 'attachment-blob'")
    assert left[0][0] == 0


def test_like_wildcards_in_ids_do_not_reach_other_buckets(kinto):
    """HELD. LIKE injection in links.pop's prefix search: ``_`` is a LIKE wildcard and a
    legal bucket/collection id character. Deleting bucket ``a_c`` (prefix
    ``attachment:/buckets/a_c/%``) and collection ``x_y`` must not unlink nor delete the
    files of bucket ``abc`` / collection ``xzy``."""
    for bucket in ("a_c", "abc"):
        kinto.create_collection(bucket=bucket, collection="x_y")
        kinto.app.put_json(f"/v1/buckets/{bucket}/collections/xzy", {}, headers=ALICE)
    kept = {}
    for bucket in ("a_c", "abc"):
        for collection in ("x_y", "xzy"):
            url = kinto.record_url("r1", bucket=bucket, collection=collection)
            kept[(bucket, collection)] = kinto.upload(url, bucket.encode() + collection.encode())
    kinto.app.delete("/v1/buckets/abc/collections/x_y", headers=ALICE)
    kinto.app.delete("/v1/buckets/a_c", headers=ALICE)
    location = kept[("abc", "xzy")].json["location"]
    assert kinto.read(location) == b"abcxzy"
    assert kinto.files() == [kinto.key_of(location)]
    links = sql(kinto, "SELECT parent_id FROM objects WHERE resource_name = 'attachment-blob'")
    assert links == [("attachment:/buckets/abc/collections/xzy/records/r1",)]
