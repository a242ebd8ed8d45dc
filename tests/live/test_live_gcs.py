"""Live cluster on Google Cloud Storage: two ``pserve`` processes sharing one PostgreSQL database
and one GCS bucket (fake-gcs-server, over HTTP).

Both run ``config/postgresql.ini`` as shipped, except for their port, their host (loopback),
the test database and the files, which go to a fresh bucket of the emulator instead of
``base_path`` (as ``tests/live/test_live_cluster.py`` does with S3, deleting objects a record
stops referencing at commit too). Whatever one process writes, the other must see: records,
bytes sent in one request or in a tus upload continued on the other node, downloads and
ranges, and the deletion of objects a record stops referencing.
"""

import base64
import hashlib
import os
import uuid
from urllib.parse import unquote

import pytest
import requests

from kinto_attachment.state import data_file_entries

from ..support.live import ALICE, REQUEST_TIMEOUT, create_collection, get
from .test_live_cluster import NO_GRACE, attachment_of, upload
from .test_live_concurrency import cluster_of, database


pytestmark = [pytest.mark.live, pytest.mark.postgresql]

MiB = 1024 * 1024
#: GCSOptions.chunk_size when ``kinto.attachment.gcloud.chunk_size`` is not set.
DEFAULT_CHUNK_SIZE = 8 * MiB
BUCKET = "cluster"
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture(scope="module")
def cluster(request, pg_url, gcs_server, tmp_path_factory):
    """``(A, B, nodes)``: two servers on one database and one bucket (the nodes of
    ``tests/live/test_live_concurrency.py``, on GCS)."""
    folder = tmp_path_factory.mktemp("live-gcs")
    with (
        database("cluster_gcs", request.config, folder) as pg,
        cluster_of(folder, "gcs", pg, gcs_server, extra_lines=NO_GRACE) as nodes,
    ):
        a, b = (node.server for node in nodes.nodes)
        yield a, b, nodes


@pytest.fixture(scope="module")
def bucket(cluster):
    return cluster[2].store.bucket


@pytest.fixture
def collection(cluster):
    a, _, _ = cluster
    name = f"c{uuid.uuid4().hex[:8]}"
    create_collection(a, BUCKET, name)
    return f"/buckets/{BUCKET}/collections/{name}/records"


def key_of(location, gcs_server, bucket):
    prefix = f"{gcs_server}/{bucket.name}/"
    assert location.startswith(prefix), (location, prefix)
    return unquote(location[len(prefix) :])


def names(bucket):
    """Every object of the bucket, the heartbeats' transient probes excepted."""
    return {b.name for b in bucket.list_blobs() if not b.name.startswith("__heartbeat__-")}


def test_an_upload_through_a_is_downloaded_through_b(cluster, collection, bucket, gcs_server):
    a, b, _ = cluster
    content = os.urandom(4096)
    record = f"{collection}/shared"

    uploaded = upload(a, record, content, filename="shared.bin")

    assert uploaded["hash"] == hashlib.sha256(content).hexdigest()
    assert attachment_of(b, record) == uploaded
    proxied = get(f"{b.url}{record}/attachment")
    assert proxied.content == content
    # The location is the object in the bucket, which the emulator serves.
    assert requests.get(uploaded["location"], timeout=REQUEST_TIMEOUT).content == content
    key = key_of(uploaded["location"], gcs_server, bucket)
    assert bucket.get_blob(key).size == len(content)


def test_a_large_upload_through_b_streams_in_chunks_and_a_serves_ranges(
    cluster, collection, bucket, gcs_server
):
    a, b, _ = cluster
    size = 2 * DEFAULT_CHUNK_SIZE + 123
    content = os.urandom(size)
    record = f"{collection}/big"

    uploaded = upload(b, record, content, filename="big.bin")

    assert uploaded["hash"] == hashlib.sha256(content).hexdigest()
    assert attachment_of(a, record) == uploaded
    blob = bucket.get_blob(key_of(uploaded["location"], gcs_server, bucket))
    assert blob.size == size
    ranged = requests.get(
        f"{a.url}{record}/attachment",
        auth=ALICE,
        headers={"Range": f"bytes={DEFAULT_CHUNK_SIZE - 10}-{DEFAULT_CHUNK_SIZE + 9}"},
        timeout=REQUEST_TIMEOUT,
    )
    assert ranged.status_code == 206
    assert ranged.content == content[DEFAULT_CHUNK_SIZE - 10 : DEFAULT_CHUNK_SIZE + 10]


def test_a_tus_upload_started_on_a_is_finished_on_b(cluster, collection, bucket, gcs_server):
    """After each chunk, the database names every object the bucket holds (the upload's
    composed object in between), and nothing it names is missing."""
    a, b, nodes = cluster
    content = os.urandom(3 * MiB + 5)
    record = f"{collection}/resumed"
    before, baseline = names(bucket), nodes.check()
    created = requests.post(
        f"{a.url}{record}/attachment/uploads",
        auth=ALICE,
        headers={
            **TUS,
            "Upload-Length": str(len(content)),
            "Upload-Metadata": "filename " + base64.b64encode(b"resumed.bin").decode(),
        },
        timeout=REQUEST_TIMEOUT,
    )
    assert created.status_code == 201, created.text
    path = created.headers["Location"].split("/v1", 1)[1]
    for server, start, end in ((a, 0, MiB), (b, MiB, len(content))):
        sent = requests.patch(
            f"{server.url}{path}",
            data=content[start:end],
            auth=ALICE,
            headers={
                **TUS,
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": str(start),
            },
            timeout=REQUEST_TIMEOUT,
        )
        assert sent.status_code == 204, sent.text
        report = nodes.check().since(baseline)
        report.assert_clean()
        assert report.stored > baseline.stored  # The upload's object, then the attachment.

    attachment = attachment_of(a, record)
    assert attachment["hash"] == hashlib.sha256(content).hexdigest()
    assert get(f"{a.url}{record}/attachment").content == content
    key = key_of(attachment["location"], gcs_server, bucket)
    assert names(bucket) == before | {key}  # No part of the upload is left.


def test_each_node_deletes_what_the_other_stored(cluster, collection, bucket, gcs_server):
    """A replacement, then a deletion, each through the node that did not store the object:
    the bucket always holds the one object the record names, then none."""
    a, b, _ = cluster
    record = f"{collection}/replaced"
    before = names(bucket)
    for server, content in ((a, b"old content"), (b, b"new content, longer")):
        stored = upload(server, record, content, filename="file.txt")
        assert names(bucket) == before | {key_of(stored["location"], gcs_server, bucket)}
    answer = requests.delete(a.url + record, auth=ALICE, timeout=REQUEST_TIMEOUT)
    assert (answer.status_code, names(bucket)) == (200, before)
    get(b.url + record, status=404)


def test_data_files_are_shared_by_the_nodes(cluster, bucket):
    a, b, _ = cluster
    root_a, root_b = (f"http://localhost:{s.port}/data/files" for s in (a, b))
    content = os.urandom(3 * MiB)
    posted = requests.post(
        f"{root_a}?id=shared-gcs&ttl=600000",
        data=content,
        headers={"Content-Type": "application/pdf"},
        timeout=REQUEST_TIMEOUT,
    )
    assert (posted.status_code, posted.text) == (200, "shared-gcs")
    fetched = requests.get(f"{root_b}/shared-gcs", timeout=REQUEST_TIMEOUT)
    assert fetched.status_code == 200 and fetched.content == content
    folder = data_file_entries.KEY_FOLDER + "/"
    assert len([n for n in names(bucket) if n.startswith(folder)]) == 1
    assert requests.delete(f"{root_b}/shared-gcs", timeout=REQUEST_TIMEOUT).status_code == 204
    assert requests.get(f"{root_a}/shared-gcs", timeout=REQUEST_TIMEOUT).status_code == 404
    assert not any(n.startswith(folder) for n in names(bucket))
