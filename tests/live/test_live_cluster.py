"""Live cluster: two ``pserve`` processes sharing one PostgreSQL database and one S3 bucket.

Both run ``config/postgresql.ini`` as shipped, except for their port, their host (loopback),
the test database and the files, which go to a fresh bucket of a moto S3 server instead of
``base_path``, in parts of S3's smallest size, and the objects a record stops referencing,
deleted as soon as the change commits (``gc.replaced_grace_seconds = 0``: the grace is tested
in ``tests/live/test_live_downloads.py``). Whatever one process writes, the other must see:
records, attachment metadata, bytes, and the deletion of those objects.
"""

import hashlib
import os
import uuid
from urllib.parse import unquote

import pytest
import requests

from kinto_attachment.state import data_file_entries

from ..conftest import s3_client
from ..support.live import ALICE, REQUEST_TIMEOUT, create_collection, get
from .test_live_concurrency import S3_PART_SIZE, cluster_of, database


pytestmark = [pytest.mark.live, pytest.mark.postgresql]

MiB = 1024 * 1024
BUCKET = "cluster"
#: Objects deleted at commit, not a grace later.
NO_GRACE = ("kinto.attachment.gc.replaced_grace_seconds = 0",)


# The cluster.


@pytest.fixture(scope="module")
def cluster(request, pg_url, s3_server, tmp_path_factory):
    """``(A, B, S3 bucket name)``: two servers on one database and one bucket (the nodes of
    ``tests/live/test_live_concurrency.py``)."""
    folder = tmp_path_factory.mktemp("live-cluster")
    with (
        database("cluster_s3", request.config, folder) as pg,
        cluster_of(folder, "s3", pg, s3_server, extra_lines=NO_GRACE) as nodes,
    ):
        a, b = (node.server for node in nodes.nodes)
        yield a, b, nodes.store.bucket


@pytest.fixture(scope="module")
def s3(s3_server):
    return s3_client(s3_server)


@pytest.fixture
def collection(cluster):
    """A new collection, created through A, and the URL path of its records."""
    a, _, _ = cluster
    name = f"c{uuid.uuid4().hex[:8]}"
    create_collection(a, BUCKET, name)
    return f"/buckets/{BUCKET}/collections/{name}/records"


# Helpers.


def upload(server, path, content, filename="file.bin"):
    response = requests.post(
        f"{server.url}{path}/attachment",
        files={"attachment": (filename, content)},
        auth=ALICE,
        timeout=REQUEST_TIMEOUT,
    )
    # Created (201) or replaced (200).
    assert response.status_code in (200, 201), (server.port, response.status_code, response.text)
    return response.json()


def attachment_of(server, path):
    return get(server.url + path).json()["data"]["attachment"]


def key_of(location, s3_server, bucket):
    prefix = f"{s3_server}/{bucket}/"
    assert location.startswith(prefix), (location, prefix)
    return unquote(location[len(prefix) :])


def s3_exists(s3, bucket, key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError as e:
        if e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def s3_sha256(s3, bucket, key):
    digest = hashlib.sha256()
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    for chunk in body.iter_chunks(MiB):
        digest.update(chunk)
    return digest.hexdigest()


def s3_keys(s3, bucket):
    """Every object of the bucket, the heartbeats' transient probes excepted."""
    keys = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return {k for k in keys if not k.startswith("__heartbeat__-")}


def download_sha256(location):
    response = requests.get(location, timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200, (location, response.status_code, response.text)
    return hashlib.sha256(response.content).hexdigest()


# The tests.


def test_upload_through_a_is_seen_by_b(cluster, collection, s3, s3_server):
    a, b, bucket = cluster
    content = os.urandom(4096)
    record = f"{collection}/shared"

    uploaded = upload(a, record, content, filename="shared.bin")

    assert uploaded["hash"] == hashlib.sha256(content).hexdigest()
    assert uploaded["size"] == len(content)
    assert attachment_of(b, record) == uploaded
    assert attachment_of(a, record) == uploaded
    assert download_sha256(uploaded["location"]) == uploaded["hash"]
    key = key_of(uploaded["location"], s3_server, bucket)
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(content)


def test_multipart_upload_through_b_is_seen_by_a(cluster, collection, s3, s3_server):
    a, b, bucket = cluster
    size = 4 * S3_PART_SIZE + 123
    content = os.urandom(size)
    digest = hashlib.sha256(content).hexdigest()
    record = f"{collection}/big"

    uploaded = upload(b, record, content, filename="big.bin")

    assert uploaded["hash"] == digest
    assert uploaded["size"] == size
    assert attachment_of(a, record) == uploaded
    key = key_of(uploaded["location"], s3_server, bucket)
    assert s3_sha256(s3, bucket, key) == digest
    # A multipart upload: the ETag of such an object ends with its number of parts.
    assert s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"').endswith("-5")
    assert download_sha256(uploaded["location"]) == digest
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_deletions_through_one_server_are_seen_by_the_other(cluster, collection, s3, s3_server):
    a, b, bucket = cluster
    first, second = f"{collection}/first", f"{collection}/second"
    first_key = key_of(upload(b, first, b"first")["location"], s3_server, bucket)
    second_key = key_of(upload(b, second, b"second")["location"], s3_server, bucket)
    assert s3_exists(s3, bucket, first_key)
    assert s3_exists(s3, bucket, second_key)

    deleted = requests.delete(b.url + first, auth=ALICE, timeout=REQUEST_TIMEOUT)

    assert deleted.status_code == 200, deleted.text
    assert not s3_exists(s3, bucket, first_key)
    get(a.url + first, status=404)

    detached = requests.delete(f"{a.url}{second}/attachment", auth=ALICE, timeout=REQUEST_TIMEOUT)

    assert detached.status_code == 204, detached.text
    assert not s3_exists(s3, bucket, second_key)
    assert attachment_of(b, second) is None
    assert attachment_of(a, second) is None


def test_replacement_through_the_other_server_deletes_the_old_object(
    cluster, collection, s3, s3_server
):
    a, b, bucket = cluster
    record = f"{collection}/replaced"
    before = s3_keys(s3, bucket)

    old = upload(a, record, b"old content", filename="old.txt")
    old_key = key_of(old["location"], s3_server, bucket)
    assert s3_keys(s3, bucket) == before | {old_key}

    new = upload(b, record, b"new content, longer", filename="new.txt")

    new_key = key_of(new["location"], s3_server, bucket)
    assert new_key != old_key
    assert s3_keys(s3, bucket) == before | {new_key}
    assert new["hash"] == hashlib.sha256(b"new content, longer").hexdigest()
    assert new["filename"] == "new.txt"
    assert attachment_of(a, record) == new
    assert attachment_of(b, record) == new
    assert download_sha256(new["location"]) == new["hash"]


def test_data_files_are_shared_by_the_nodes(cluster, s3):
    a, b, bucket = cluster
    root_a, root_b = (f"http://localhost:{s.port}/data/files" for s in (a, b))
    content = os.urandom(3 * MiB)
    posted = requests.post(
        f"{root_a}?id=shared-001&ttl=600000",
        data=content,
        headers={
            "Content-Type": "application/pdf",
            "Content-Disposition": 'attachment; filename="report.pdf"',
        },
        timeout=REQUEST_TIMEOUT,
    )
    assert (posted.status_code, posted.text) == (200, "shared-001")

    fetched = requests.get(f"{root_b}/shared-001", timeout=REQUEST_TIMEOUT)
    assert fetched.status_code == 200
    assert fetched.content == content
    assert fetched.headers["Content-Type"] == "application/pdf"
    (entry,) = [
        e for e in requests.get(root_b, timeout=REQUEST_TIMEOUT).json() if e["id"] == "shared-001"
    ]
    assert entry["hash"] == hashlib.sha256(content).hexdigest()
    objects = {k for k in s3_keys(s3, bucket) if k.startswith(data_file_entries.KEY_FOLDER + "/")}
    assert len(objects) == 1

    assert requests.delete(f"{root_b}/shared-001", timeout=REQUEST_TIMEOUT).status_code == 204
    assert requests.get(f"{root_a}/shared-001", timeout=REQUEST_TIMEOUT).status_code == 404
    assert not any(k.startswith(data_file_entries.KEY_FOLDER + "/") for k in s3_keys(s3, bucket))
