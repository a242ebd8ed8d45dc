"""What must hold between the references and the stored files, checked from outside.

Independent of the plugin's own code (its GC included): the references are read straight from
Kinto's ``objects`` table with psycopg2 (or, for the memory backend, through the HTTP API), the
files straight from the folder, from the S3 bucket with boto3, or from the GCS bucket with
google-cloud-storage. The result names

- **orphans**: stored objects that no reference names (S3 incomplete multipart uploads and
  local ``.upload-*.part`` files included), the files of tus uploads in progress excepted
  when their upload state names them;
- **dangling** references: a record's ``attachment.location``, a link, a ``/data/files``
  entry, a retained or replaced blob or a tus upload state naming an object that is not
  stored;
- **inconsistent** links: an attachment with no link, or a link its record no longer points at
  (the blob would leak once the record or its parents are deleted).

Run it when the servers are idle: an upload in flight is an orphan until it commits.
"""

import dataclasses
import hashlib
import os
from urllib.parse import unquote

import requests


#: Transient probes of the heartbeat, deleted by the request that writes them.
HEARTBEAT_PREFIX = "__heartbeat__-"
MULTIPART_PREFIX = "multipart:"


@dataclasses.dataclass
class Report:
    orphans: list
    dangling: list
    inconsistent: list = dataclasses.field(default_factory=list)
    #: How many references and stored objects were seen (to tell an empty check from a
    #: clean one).
    references: int = 0
    stored: int = 0

    @property
    def clean(self):
        return not (self.orphans or self.dangling or self.inconsistent)

    def __str__(self):
        return (
            f"{self.references} references, {self.stored} stored objects; "
            f"orphans={self.orphans} dangling={self.dangling} inconsistent={self.inconsistent}"
        )

    def assert_clean(self):
        assert self.clean, str(self)

    def since(self, baseline):
        """What is wrong now and was not at ``baseline``: a server shared by several tests may
        keep what an earlier failure left, which is that test's to report, not this one's."""
        return Report(
            [o for o in self.orphans if o not in set(baseline.orphans)],
            [d for d in self.dangling if d not in baseline.dangling],
            [i for i in self.inconsistent if i not in baseline.inconsistent],
            references=self.references,
            stored=self.stored,
        )


# Stores.


class LocalFolder:
    """Files under ``base_path``; keys are their ``/``-separated relative paths."""

    def __init__(self, base_path):
        self.base_path = os.path.realpath(base_path)

    def objects(self):
        found = set()
        for root, _, names in os.walk(self.base_path):
            for name in names:
                path = os.path.relpath(os.path.join(root, name), self.base_path)
                found.add(path.replace(os.sep, "/"))
        return found

    def unfinished(self):
        """Local files have no separate unfinished state: ``.part`` files are objects."""
        return set()

    def sha256(self, key):
        digest = hashlib.sha256()
        with open(os.path.join(self.base_path, key), "rb") as f:
            while data := f.read(1024 * 1024):
                digest.update(data)
        return digest.hexdigest()


class S3Bucket:
    """Objects and incomplete multipart uploads of one bucket."""

    def __init__(self, client, bucket):
        self.client = client
        self.bucket = bucket

    def objects(self):
        found = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            found.update(o["Key"] for o in page.get("Contents", []))
        return found

    def unfinished(self):
        """``(key, upload_id)`` of every multipart upload not completed nor aborted."""
        found = set()
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket):
            found.update((u["Key"], u["UploadId"]) for u in page.get("Uploads", []))
        return found

    def sha256(self, key):
        digest = hashlib.sha256()
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        for chunk in body.iter_chunks(1024 * 1024):
            digest.update(chunk)
        return digest.hexdigest()


class GCSBucket:
    """Objects of one Google Cloud Storage bucket (a ``google.cloud.storage`` bucket)."""

    def __init__(self, bucket):
        self.bucket = bucket

    def objects(self):
        return {blob.name for blob in self.bucket.list_blobs()}

    def unfinished(self):
        """Nothing: a resumable upload session is no object, GCS lists none, and one that is
        never finished expires by itself after a week."""
        return set()


def key_of(location, base_urls):
    """The stored key a location names, or None when no base URL serves it."""
    for base_url in base_urls:
        if location.startswith(base_url):
            return unquote(location[len(base_url) :])
    return None


# References.


@dataclasses.dataclass
class References:
    #: ``(record uri, key or None, location)`` of every record with an attachment.
    records: list = dataclasses.field(default_factory=list)
    #: ``(record uri, key)`` of every link.
    links: list = dataclasses.field(default_factory=list)
    #: ``(kind, name, key)``: data files, retained blobs, replaced blobs kept for a while.
    others: list = dataclasses.field(default_factory=list)
    #: The store state of every tus upload in progress.
    uploads: list = dataclasses.field(default_factory=list)


LINK_PARENT_PREFIX = "attachment:"


def postgresql_references(pg_url, base_urls):
    """Everything Kinto's PostgreSQL ``objects`` table says is stored, in one snapshot."""
    import psycopg2

    found = References()
    connection = psycopg2.connect(pg_url, connect_timeout=10)
    try:
        connection.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with connection.cursor() as cursor:
            cursor.execute(
                """
                SELECT resource_name, parent_id, id, data
                  FROM objects
                 WHERE NOT deleted
                   AND resource_name IN ('record', 'attachment-blob', 'data-file',
                                         'attachment-upload', 'attachment-retained',
                                         'attachment-replaced')
                """
            )
            for resource_name, parent_id, object_id, data in cursor:
                if resource_name == "record":
                    location = (data.get("attachment") or {}).get("location")
                    if location:
                        uri = f"{parent_id}/records/{object_id}"
                        found.records.append((uri, key_of(location, base_urls), location))
                elif resource_name == "attachment-blob":
                    uri = parent_id.removeprefix(LINK_PARENT_PREFIX)
                    found.links.append((uri, data["key"]))
                elif resource_name == "attachment-upload":
                    found.uploads.append(data.get("store") or {})
                elif data.get("quarantine"):
                    continue  # A name kept taken once its blob is deleted: names no blob.
                else:
                    found.others.append((resource_name, object_id, data.get("key")))
    finally:
        connection.close()
    return found


def http_references(api_url, auth, base_urls):
    """References a user can read through the API: the attachments of every record."""
    found = References()
    for bucket in _listing(f"{api_url}/buckets", auth):
        bucket_url = f"{api_url}/buckets/{bucket['id']}"
        for collection in _listing(f"{bucket_url}/collections", auth):
            collection_uri = f"/buckets/{bucket['id']}/collections/{collection['id']}"
            for record in _listing(f"{api_url}{collection_uri}/records", auth):
                location = (record.get("attachment") or {}).get("location")
                if location:
                    uri = f"{collection_uri}/records/{record['id']}"
                    found.records.append((uri, key_of(location, base_urls), location))
    return found


def _listing(url, auth):
    while url:
        response = requests.get(url, auth=auth, timeout=30)
        response.raise_for_status()
        yield from response.json()["data"]
        url = response.headers.get("Next-Page")


# The check.


def _upload_names(state):
    """Stored names an upload state holds: every string value naming an object (its temp
    file, its S3 tail, its key), and its multipart upload."""
    names = {v for k, v in state.items() if isinstance(v, str) and k != "upload_id"}
    unfinished = set()
    if state.get("upload_id"):
        unfinished.add((state.get("key"), state["upload_id"]))
    return names, unfinished


def check(references, store, links_known=True):
    """The :class:`Report` of ``references`` against what ``store`` holds."""
    objects = store.objects()
    unfinished = store.unfinished()
    referenced, dangling, inconsistent = set(), [], []

    def refer(what, key):
        if key is None:
            dangling.append((what, "no base URL serves it"))
            return
        referenced.add(key)
        if key not in objects:
            dangling.append((what, key))

    for uri, key, _ in references.records:
        refer(f"record {uri}", key)
    for uri, key in references.links:
        refer(f"link of {uri}", key)
    for kind, name, key in references.others:
        refer(f"{kind} {name}", key)

    in_progress, in_progress_unfinished = set(), set()
    for state in references.uploads:
        names, parts = _upload_names(state)
        in_progress |= names
        in_progress_unfinished |= parts
        # The files an unfinished upload writes to must be there.
        for field in ("temp", "tail"):
            if state.get(field) and state[field] not in objects:
                dangling.append((f"upload {field}", state[field]))
        finished = state.get("key") in objects
        for part in parts:
            if part not in unfinished and not finished:
                dangling.append(("upload multipart", part))

    if links_known:
        record_keys = {uri: key for uri, key, _ in references.records}
        linked = {}
        for uri, key in references.links:
            linked.setdefault(uri, set()).add(key)
        for uri, key in record_keys.items():
            if key is not None and key not in linked.get(uri, set()):
                inconsistent.append(("attachment without link", uri, key))
        for uri, keys in linked.items():
            for key in keys - {record_keys.get(uri)}:
                inconsistent.append(("link not the record's attachment", uri, key))

    orphans = sorted(
        key for key in objects - referenced - in_progress if not key.startswith(HEARTBEAT_PREFIX)
    )
    orphans += sorted(
        f"{MULTIPART_PREFIX}{key}#{upload_id}"
        for key, upload_id in unfinished - in_progress_unfinished
    )
    count = (
        len(references.records)
        + len(references.links)
        + len(references.others)
        + len(references.uploads)
    )
    return Report(
        orphans,
        sorted(dangling, key=str),
        sorted(inconsistent, key=str),
        references=count,
        stored=len(objects) + len(unfinished),
    )


def check_postgresql(pg_url, store, base_urls):
    """Orphans and dangling references of a PostgreSQL database and its store."""
    return check(postgresql_references(pg_url, base_urls), store)


def check_http(api_url, auth, store, base_urls):
    """The same for the memory backend, the references read through the API (no links)."""
    return check(http_references(api_url, auth, base_urls), store, links_known=False)


def record_links(pg_url, bucket_id, collection_id, record_id):
    """The keys the links of one record name."""
    import psycopg2

    parent = f"{LINK_PARENT_PREFIX}/buckets/{bucket_id}/collections/{collection_id}"
    parent += f"/records/{record_id}"
    connection = psycopg2.connect(pg_url, connect_timeout=10)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT data->>'key' FROM objects"
                " WHERE resource_name = 'attachment-blob' AND parent_id = %s AND NOT deleted",
                (parent,),
            )
            return sorted(row[0] for row in cursor)
    finally:
        connection.close()


def records_under(pg_url, collection_uri):
    """Ids of the records (tombstones excepted) of one collection."""
    import psycopg2

    connection = psycopg2.connect(pg_url, connect_timeout=10)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM objects"
                " WHERE resource_name = 'record' AND parent_id = %s AND NOT deleted",
                (collection_uri,),
            )
            return sorted(row[0] for row in cursor)
    finally:
        connection.close()


def replaced_keys(pg_url):
    """The keys recorded as replaced: no longer referenced, kept ``gc.replaced_grace_seconds``
    for the downloads reading them, then deleted by the collector."""
    import psycopg2

    connection = psycopg2.connect(pg_url, connect_timeout=10)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT data->>'key' FROM objects"
                " WHERE resource_name = 'attachment-replaced' AND NOT deleted"
                " AND NOT data ? 'quarantine'"
            )
            return {row[0] for row in cursor}
    finally:
        connection.close()
