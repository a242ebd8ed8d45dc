"""``/data/files`` across nodes (a read-only replica, two writers), on S3, and against
hostile headers, ids and slow bodies (found by, or held against, a review of 2026-12-05)."""

import contextlib
import os

import pytest
import transaction

from kinto_attachment.state import data_file_entries

from ..conftest import Kinto, build_settings, dispose, make_app, own_database
from .test_data_files import LOCAL, get, listing, post


@contextlib.contextmanager
def writer_and_replica(tmp_path):
    """A writer node and a read-only node (``kinto.readonly = true``) whose PostgreSQL
    sessions are read-only, as on a hot standby; one store."""
    base_path = str(tmp_path / "store")
    os.makedirs(base_path)
    with own_database("review_df_replica") as url:
        writer = Kinto(make_app(build_settings("postgresql", base_path, pg=url)), base_path)
        replica_url = url + "?options=-c%20default_transaction_read_only%3Don"
        settings = build_settings(
            "postgresql", base_path, pg=replica_url, **{"kinto.readonly": "true"}
        )
        for kind in ("permission", "cache"):
            settings[f"kinto.{kind}_backend"] = f"kinto.core.{kind}.memory"
            del settings[f"kinto.{kind}_url"]
        replica = Kinto(make_app(settings), base_path)
        try:
            yield writer, replica
        finally:
            transaction.abort()
            dispose(writer, replica)


@pytest.mark.postgresql
@pytest.mark.parametrize("why", ["entry-of-an-earlier-version", "blob-copied"])
def test_a_read_only_node_serves_an_intact_file_it_must_verify(tmp_path, why):
    """Found by review (2026-12-05).

    It was: a read-only node (``kinto.readonly``, its sessions read-only as on a hot standby)
    answered 503 to an intact file whose blob version was not the one recorded (an entry of
    an earlier release, a blob copied to a new disk): it hashed the blob again, then wrote
    the verification down, which the replica refused. Fixed: a read-only node verifies and
    writes nothing: 200."""
    with writer_and_replica(tmp_path) as (writer, replica):
        post(writer, b"the artifact", query="?id=art")
        entry = data_file_entries.get(writer.registry.storage, "art")
        transaction.abort()
        if why == "blob-copied":
            path = os.path.join(writer.base_path, entry["key"])
            stat = os.stat(path)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        else:
            with transaction.manager:
                legacy = {k: v for k, v in entry.items() if k != "verified"}
                data_file_entries.put(writer.registry.storage, "art", legacy, entry)
        response = get(replica, "art", status="*")
        assert response.status_code == 200, response.status
        assert response.body == b"the artifact"


@pytest.mark.postgresql
def test_two_nodes_replacing_an_id_under_downloads_serve_whole_versions(tmp_path):
    """Held against a review (2026-12-05).

    node B uploads one id again and again (no grace: each replaced blob is deleted
    at commit) while node A downloads it: every download is one version, whole (never a
    mix, a 404 or a 5xx), every upload succeeds, and at the end one blob is left, the
    entry's."""
    import threading

    from ..conftest import two_nodes

    versions = [bytes([65 + i]) * (50_000 + i) for i in range(8)]
    with two_nodes(tmp_path, "review_df_nodes") as (node_a, node_b):
        post(node_b, versions[0], query="?id=hot")
        failures, done = [], threading.Event()

        def uploader():
            try:
                for _round in range(3):
                    for version in versions[1:] + versions[:1]:
                        response = post(node_b, version, query="?id=hot", status="*")
                        if response.status_code != 200:
                            failures.append(("upload", response.status))
            finally:
                done.set()

        thread = threading.Thread(target=uploader)
        thread.start()
        downloads = 0
        try:
            while not done.is_set() or downloads < 5:
                response = get(node_a, "hot", status="*")
                downloads += 1
                if response.status_code != 200 or response.body not in versions:
                    failures.append(("download", response.status, len(response.body)))
        finally:
            thread.join(60)
        assert not failures, failures[:5]
        transaction.abort()
        entry = data_file_entries.get(node_a.registry.storage, "hot")
        transaction.abort()
        assert node_a.files() == [entry["key"]]
        assert [e["id"] for e in listing(node_a)] == ["hot"]


def test_private_data_files_are_not_stored_world_readable_on_s3(tmp_path_factory, request):
    """Found by review (2026-12-05).

    It was: on S3, ``/data/files`` blobs were stored with the attachments' ACL
    (``public-read`` by default): readable from the bucket, without credentials and past
    their time to live, by whoever learnt a name (events, access logs). Fixed: the
    plugin's own objects (``.data-files/``) get no ACL."""
    from ..conftest import cached_app, s3_client

    kinto = cached_app("memory", tmp_path_factory, request, blobs="s3")
    post(kinto, b"a private temporary artifact", query="?id=secret")
    key = data_file_entries.get(kinto.registry.storage, "secret")["key"]
    assert key.startswith(".data-files/")
    client = s3_client(kinto.registry.attachment_store.client.meta.endpoint_url)
    grants = client.get_object_acl(Bucket=kinto.bucket, Key=key)["Grants"]
    public = [
        grant
        for grant in grants
        if grant["Grantee"].get("URI", "").endswith(("/global/AllUsers", "/AuthenticatedUsers"))
    ]
    assert public == [], f"{key} is world-readable: {public}"


def test_a_long_content_disposition_is_refused_unparsed(kinto_memory):
    """Found by review (2026-12-05).

    It was: a ``Content-Disposition`` of 120 KB (within waitress's head limit) made of ``;``
    in a quoted ``filename`` took seconds of CPU to parse (the email package's parsing is
    quadratic), the whole process stalled meanwhile. Fixed: one over 8 KiB is a 400, not
    parsed; one of 8 KiB still names the file."""
    header = 'attachment; filename="' + "a;" * 60_000 + '"'
    refused = post(
        kinto_memory, b"x", query="?id=cd", status=400, **{"Content-Disposition": header}
    )
    assert refused.json["details"][0]["name"] == "Content-Disposition"
    longest = 'attachment; filename="' + "a" * (8192 - 27) + '.txt"'
    assert len(longest) == 8192
    post(kinto_memory, b"x", query="?id=cd", **{"Content-Disposition": longest})
    assert get(kinto_memory, "cd").body == b"x"


def test_no_answer_leaks_transfer_budget(kinto):
    """Held against a review (2026-12-05).

    HEAD, 304, 206, 416, a failed write precondition, a 413, a refused id and a
    truncated body each give back whatever they took of the transfer budget, and refused
    writes leave the file and the store as they were (on every storage and file backend)."""
    import io

    import webob

    limiter = kinto.registry.transfer_limiter
    post(kinto, b"0123456789", query="?id=t")
    etag = get(kinto, "t").headers["ETag"]
    kinto.app.head("/v1/data/files/t", extra_environ=LOCAL)
    get(kinto, "t", status=304, **{"If-None-Match": etag})
    assert get(kinto, "t", status=206, Range="bytes=1-2").body == b"12"
    get(kinto, "t", status=416, Range="bytes=20-")
    post(kinto, b"other", query="?id=t", status=412, **{"If-Match": '"' + "0" * 64 + '"'})
    post(kinto, b"other", query="?id=t", status=412, **{"If-None-Match": "*"})
    post(kinto, b"other", query="?id=t%C3%A9", status=400)
    post(kinto, b"other", query="?id=" + "x" * 129, status=400)
    truncated = webob.Request.blank("/v1/data/files?id=t", method="POST", environ=dict(LOCAL))
    truncated.body_file = io.BytesIO(b"cut")
    truncated.environ["CONTENT_LENGTH"] = "5000"
    assert truncated.get_response(kinto.app.app).status_code == 400
    assert limiter.in_use == 0
    assert get(kinto, "t").body == b"0123456789"
    assert len(kinto.files()) == 1


@pytest.mark.parametrize(
    "file_id", ["-", "_", ".a", "a.", "A", "a", "x" * 128, "1", "01", "1e3", "true", "null"]
)
def test_odd_but_valid_ids_are_distinct_files(kinto_memory, file_id):
    """Held against a review (2026-12-05).

    ids that differ only by case, numeric-looking or JSON-looking ids, dots at the
    ends and the longest id are distinct files, each served its own content."""
    post(kinto_memory, b"other case", query="?id=" + file_id.swapcase())
    post(kinto_memory, file_id.encode(), query=f"?id={file_id}")
    assert get(kinto_memory, file_id).body == file_id.encode()
    ids = {entry["id"] for entry in listing(kinto_memory)}
    assert file_id in ids


class _SlowBody:
    """A request body that comes in ``pieces``, ``pause`` seconds apart (a client on a slow
    link, under a server that hands the body over as it comes: gunicorn, uWSGI)."""

    def __init__(self, pieces, pause):
        self._pieces = list(pieces)
        self._pause = pause

    def read(self, size=-1):
        import time

        if not self._pieces:
            return b""
        time.sleep(self._pause)
        return self._pieces.pop(0)


@pytest.mark.postgresql
def test_a_slow_upload_holds_no_database_transaction_while_its_body_comes(tmp_path):
    """Found by review (2026-12-05).

    It was: every upload read its id's entry before its body, which opened the request's
    transaction, idle as long as the body came: a PostgreSQL server with
    ``idle_in_transaction_session_timeout`` ended the session, and the upload, received
    whole, was refused (503). Fixed: the entry is read before the body only for a
    conditional upload, and Kinto's connections are opened without that timeout."""
    import webob

    base_path = str(tmp_path / "store")
    os.makedirs(base_path)
    with own_database("review_df_idle") as url:
        limited = url + "?options=-c%20idle_in_transaction_session_timeout%3D500"
        node = Kinto(make_app(build_settings("postgresql", base_path, pg=limited)), base_path)
        try:
            upload = webob.Request.blank(
                "/v1/data/files?id=slow", method="POST", environ=dict(LOCAL)
            )
            upload.body_file_raw = _SlowBody([b"a" * 10, b"b" * 10, b"c" * 10], 0.6)
            upload.environ["wsgi.input"] = upload.body_file_raw
            upload.environ["CONTENT_LENGTH"] = "30"
            response = upload.get_response(node.app.app)
            assert response.status_code == 200, (response.status, response.body[:200])
            assert get(node, "slow").body == b"a" * 10 + b"b" * 10 + b"c" * 10
        finally:
            transaction.abort()
            dispose(node)
