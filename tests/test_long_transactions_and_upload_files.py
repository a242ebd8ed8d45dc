"""Kinto's PostgreSQL sessions without the idle timeout (whatever backend, ``PGOPTIONS``,
PgBouncer), a local upload file held while it is written and finished, a finished upload's
cache entry, and ``/data/files``' ACLs and preconditions (found by, or held against, a review
of 2026-12-05's fixes)."""

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest
import requests
import sqlalchemy
import transaction
import webob
from kinto.core import scripts as kinto_scripts

from kinto_attachment.state import tus_uploads

from .conftest import ALICE, IN_CI, Kinto, build_settings, dispose, make_app, own_database
from .live.test_live_concurrency import new_collection, record_of
from .live.test_live_crash import (  # The live crash scenarios' fixtures.
    crashable,  # noqa: F401 (a fixture)
    expect,
    tus_last_patch_killed,
    tus_offset,
    tus_patch,
)
from .support.live import ALICE as LIVE_ALICE
from .views.test_resumable import RECORD, create, head, patch
from .views.test_resumable_under_attack import _pausing_patch, _PausingBody


def _show(client, name):
    """``SHOW name`` on the session requests of this thread use (``client``'s)."""
    try:
        with client.connect() as session:
            return session.execute(sqlalchemy.text(f"SHOW {name}")).scalar()
    finally:
        transaction.abort()


def _database_sets(url, **settings):
    """``ALTER DATABASE ... SET`` each setting (what a managed service's defaults do)."""
    import psycopg2

    name = url.rsplit("/", 1)[1]
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for key, value in settings.items():
                cursor.execute(f"ALTER DATABASE \"{name}\" SET {key} = '{value}'")
    finally:
        connection.close()


# 1. PostgreSQL connections opened without idle_in_transaction_session_timeout.


@pytest.mark.postgresql
def test_the_permission_backend_on_its_own_database_keeps_the_idle_timeout(tmp_path):
    """Found by a review of a fix (2026-12-05).

    It was: only the storage backend's connections were opened without the idle timeout;
    a permission backend on a database of its own (its own engine, in the request's
    transaction too) kept it: a last PATCH slower than it was a 503. Fixed: every
    PostgreSQL backend's engine."""
    base_path = str(tmp_path / "store")
    os.makedirs(base_path)
    with own_database("review_lt_st") as url, own_database("review_lt_perm") as perm_url:
        _database_sets(url, idle_in_transaction_session_timeout="500ms")
        _database_sets(perm_url, idle_in_transaction_session_timeout="500ms")
        settings = build_settings("postgresql", base_path, pg=url)
        settings["kinto.permission_url"] = perm_url
        node = Kinto(make_app(settings), base_path)
        try:
            assert (
                _show(node.registry.storage.client, "idle_in_transaction_session_timeout") == "0"
            )
            node.create_collection()
            _, upload = create(node.app, 10)
            started, release, result = threading.Event(), threading.Event(), []
            thread = threading.Thread(
                target=_pausing_patch,
                args=(node.app, upload, b"A" * 5, b"a" * 5, 0, result, started, release),
            )
            thread.start()
            assert started.wait(30)
            time.sleep(1.5)  # Longer than the database's idle timeout.
            release.set()
            thread.join(30)
            response = result[0]
            assert not isinstance(response, Exception), response
            assert response.status_code == 204, (response.status, response.body[:300])
            attachment = node.app.get(RECORD, headers=ALICE).json["data"]["attachment"]
            assert node.read(attachment["location"]) == b"AAAAAaaaaa"
            permission = _show(
                node.registry.permission.client, "idle_in_transaction_session_timeout"
            )
            assert permission == "0", permission
        finally:
            transaction.abort()
            dispose(node)


@pytest.mark.postgresql
def test_the_libpq_pgoptions_of_the_environment_still_apply(tmp_path, monkeypatch):
    """Found by a review of a fix (2026-12-05).

    It was: the timeout went in the connection's ``options``, which made libpq ignore
    ``PGOPTIONS`` (an operator's ``statement_timeout``, ``search_path``). Fixed: it is set
    by a statement once connected, the options left as they are."""
    base_path = str(tmp_path / "store")
    os.makedirs(base_path)
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=123456")
    with own_database("review_lt_env") as url:
        node = Kinto(make_app(build_settings("postgresql", base_path, pg=url)), base_path)
        try:
            storage = node.registry.storage.client
            assert _show(storage, "idle_in_transaction_session_timeout") == "0"
            assert _show(storage, "statement_timeout") == "123456ms"
        finally:
            transaction.abort()
            dispose(node)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _pgbouncer(tmp_path, pool_mode="transaction"):
    """A PgBouncer (its default startup parameters) in front of the test server; its URL."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        message = "pgbouncer is not installed (apt-get install pgbouncer)"
        if IN_CI:
            pytest.fail(message + " (CI=true: the test must run)", pytrace=False)
        pytest.skip(message)
    from .conftest import PG_SERVER

    server = sqlalchemy.engine.make_url(PG_SERVER)
    port = _free_port()
    folder = tmp_path / "pgbouncer"
    folder.mkdir()
    (folder / "users.txt").write_text(f'"{server.username}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.host} port={server.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        f"pool_mode = {pool_mode}\nunix_socket_dir =\n"
    )
    os.chmod(tmp_path, 0o755)
    for path in (folder, folder / "users.txt", folder / "pgbouncer.ini"):
        os.chmod(path, 0o755)
    command = [binary, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root.
        command[1:1] = ["-u", "nobody"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "pgbouncer did not start"
            time.sleep(0.05)
        yield f"postgresql://{server.username}@127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.postgresql
@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_kinto_behind_pgbouncer_still_connects(tmp_path, pool_mode):
    """Found by a review of a fix (2026-12-05).

    It was: PgBouncer refuses a connection that sends ``options`` (its default): with the
    timeout given there, Kinto behind it could not start. Fixed: set by a statement once
    connected."""
    base_path = str(tmp_path / "store")
    os.makedirs(base_path)
    with own_database("review_lt_pgb") as direct, _pgbouncer(tmp_path, pool_mode) as bouncer:
        url = f"{bouncer}/{direct.rsplit('/', 1)[1]}"
        node = None
        try:
            node = Kinto(make_app(build_settings("postgresql", base_path, pg=url)), base_path)
            node.create_collection()
            node.upload(RECORD, b"through pgbouncer")
            assert node.app.get(RECORD + "/attachment", headers=ALICE).body == b"through pgbouncer"
        finally:
            transaction.abort()
            if node is not None:
                dispose(node)
            else:  # The engine of the URL, kept by Kinto for the process.
                from kinto.core.storage.postgresql import client

                for clients in client._CLIENTS.values():
                    for kept in clients.values():
                        with contextlib.suppress(Exception):
                            kept.session_factory.session_factory.kw["bind"].dispose()


class _SlowBody:
    """A body of ``pieces``; ``started`` is set before the last one, which comes ``pause``
    seconds later."""

    def __init__(self, pieces, pause, started):
        self._pieces = list(pieces)
        self._pause, self._started = pause, started

    def read(self, size=-1):
        if not self._pieces:
            return b""
        if len(self._pieces) == 1:
            self._started.set()
            time.sleep(self._pause)
        return self._pieces.pop(0)


# 2. A local append holds the upload's file (flock, st_nlink).


def test_an_upload_on_a_disk_without_locks_is_not_refused(kinto_memory, monkeypatch):
    """Found by a review of a fix (2026-12-05).

    It was: an append's ``flock`` failing for want of locks (NFS without its lock manager:
    ``ENOLCK``) refused every PATCH (503). Fixed: such a disk is written unlocked (Kinto's
    lock alone keeps requests apart)."""
    kinto = kinto_memory
    kinto.create_collection()

    def no_lock_manager(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_lock_manager)
    _, url = create(kinto.app, 10)
    response = patch(kinto.app, url, b"0123456789", 0, status="*")
    assert response.status_code == 204, (response.status, response.body[:300])
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"0123456789"


def test_a_finish_racing_an_append_of_a_lost_lock_never_serves_other_bytes(
    kinto_memory, monkeypatch
):
    """Found by a review of a fix (2026-12-05).

    It was: the ``flock`` of an append ends with it, before the request hashes what it wrote
    and links the file as the attachment: an append whose upload lock was lost (a failover)
    could write in between, and the record named the sha256 of bytes no longer there.
    Fixed: the finish holds the file, and refuses one written since the last append (a 503:
    the client sends its last chunk again). Never a hash of other bytes."""
    from kinto_attachment.storage.local.store import LocalStore

    kinto = kinto_memory
    kinto.create_collection()
    app = kinto.app
    _, url = create(app, 10)
    patch(app, url, b"01234", 0)

    finishing, go_on = threading.Event(), threading.Event()
    real_finish = LocalStore.finish

    def paused_finish(self, state):
        if threading.current_thread() is not main:
            finishing.set()
            go_on.wait(30)
        return real_finish(self, state)

    main = threading.current_thread()
    monkeypatch.setattr(LocalStore, "finish", paused_finish)
    results = []

    def last_patch():
        try:
            results.append(patch(app, url, b"BBBBB", 5, status="*"))
        finally:
            transaction.abort()

    thread = threading.Thread(target=last_patch)
    thread.start()
    try:
        assert finishing.wait(30)
        # Its lock lost (a session ended, a failover): nothing in the database keeps it out.
        monkeypatch.setattr(tus_uploads, "lock", lambda registry, upload_id: None)
        upload = tus_uploads.get(kinto.registry.storage, url.rsplit("/", 1)[1])
        state = upload["store"]
        kinto.registry.attachment_store.append(state, 5, [b"AAAAA"])
    except Exception as e:  # noqa: BLE001 (refused: what should happen)
        refused = e
    else:
        refused = None
    finally:
        go_on.set()
        thread.join(30)
    assert results and results[0].status_code in (204, 503), results
    if results[0].status_code == 503:  # Its file written since: nothing recorded.
        assert app.get(RECORD, headers=ALICE, status=404)  # No record made.
        monkeypatch.undo()
        patch(app, url, b"BBBBB", 5)
    else:
        assert refused is not None, "the lost-lock append wrote beside a finishing request"
    attachment = app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    served = app.get(RECORD + "/attachment", headers=ALICE, status="*")
    assert hashlib.sha256(served.body).hexdigest() == attachment["hash"], served.body


@pytest.mark.live
@pytest.mark.postgresql
@pytest.mark.parametrize("crashable", ["local"], indirect=True)
def test_an_upload_whose_last_patch_was_killed_in_its_commit_can_be_resumed(crashable):  # noqa: F811
    """Found by a review of a fix (2026-12-05).

    It was: after a ``kill -9`` in the last PATCH's commit (its state rolled back, the
    second name its finish gave the file left for the collector), the resumed PATCH was
    refused ``410`` by a check that took a file with two names for a finished upload's.
    Fixed: that check is gone (the database says whether the upload is finished): 204,
    the attachment whole."""
    server = crashable.server
    path = new_collection(server) + "/resumed-after-crash"
    content = os.urandom(300_000)
    url = tus_last_patch_killed(crashable, path, content)
    server = crashable.server
    assert tus_offset(url) == (200, "200000")
    resumed = tus_patch(url, 200_000, content[200_000:])
    expect(resumed, 204)
    status, record = record_of(server, path)
    assert status == 200
    downloaded = requests.get(f"{server.url}{path}/attachment", auth=LIVE_ALICE, timeout=30)
    assert downloaded.content == content
    assert record["attachment"]["hash"] == hashlib.sha256(content).hexdigest()


# 4. /data/files: no ACL for the plugin's own objects; preconditions after the body.


def _public_grants(client, bucket, key):
    grants = client.get_object_acl(Bucket=bucket, Key=key)["Grants"]
    return [
        grant
        for grant in grants
        if grant["Grantee"].get("URI", "").endswith(("/global/AllUsers", "/AuthenticatedUsers"))
    ]


def test_a_multipart_data_file_on_s3_is_private_and_an_attachment_public(
    tmp_path_factory, request, monkeypatch
):
    """Held against a review (2026-12-05).

    on S3, a ``/data/files`` body larger than a part (a multipart upload) is
    created without the attachments' ACL (moto cannot tell the ACL of such an object: its
    CreateMultipartUpload is looked at), and a record's attachment still gets it (the fix
    did not take it from attachments)."""
    from kinto_attachment.state import data_file_entries

    from .conftest import cached_app, s3_client
    from .data_files.test_data_files import post

    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        blobs="s3",
        **{"kinto.attachment.aws.part_size": str(5 * 1024 * 1024)},
    )
    store = kinto.registry.attachment_store
    created = []
    real = store.client.create_multipart_upload

    def spied(**kwargs):
        created.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(store.client, "create_multipart_upload", spied)
    content = os.urandom(6 * 1024 * 1024)
    post(kinto, content, query="?id=big")
    key = data_file_entries.get(kinto.registry.storage, "big")["key"]
    assert key.startswith(".data-files/")
    assert [c["Key"] for c in created] == [key]
    assert "ACL" not in created[0], created[0]
    kinto.create_collection()
    meta = kinto.upload(RECORD, b"small", "small.txt").json
    client = s3_client(store.client.meta.endpoint_url)
    assert _public_grants(client, kinto.bucket, kinto.key_of(meta["location"])) != []


@pytest.mark.parametrize("size", [10, 300 * 1024])
def test_a_data_file_on_gcs_is_private(gcs_server, size):
    """Held against a review (2026-12-05).

    on GCS (acl ``publicRead``), a ``/data/files`` body, sent in one request or
    through a resumable session, is stored without ``allUsers``."""
    from kinto_attachment.state import data_file_entries

    from .data_files.test_data_files import post
    from .storage.test_gcs import gcs_app
    from .support.gcs_server import gcs_client

    kinto = gcs_app(gcs_server, acl="publicRead")
    post(kinto, os.urandom(size), query="?id=gcs")
    key = data_file_entries.get(kinto.registry.storage, "gcs")["key"]
    blob = gcs_client(gcs_server).bucket(kinto.bucket).get_blob(key)
    blob.acl.reload()
    assert [entry for entry in blob.acl if entry["entity"] == "allUsers"] == []


def test_a_conditional_upload_whose_entry_changed_during_its_body_stores_nothing(
    kinto_memory,
):
    """Held against a review (2026-12-05).

    an ``If-None-Match: *`` upload passes the check before its body; another
    upload of the id ends meanwhile: after the body it is a 412, its blob is deleted, the
    other's entry and bytes are served, and the transfer budget is given back."""
    from .data_files.test_data_files import LOCAL, get, post

    kinto = kinto_memory
    started, release, result = threading.Event(), threading.Event(), []

    def conditional():
        request = webob.Request.blank(
            "/v1/data/files?id=raced",
            method="POST",
            environ=dict(LOCAL),
            headers={"If-None-Match": "*"},
        )
        request.environ["wsgi.input"] = _PausingBody(b"mine-", b"late", started, release)
        request.environ["CONTENT_LENGTH"] = "9"
        try:
            result.append(request.get_response(kinto.app.app))
        finally:
            transaction.abort()

    thread = threading.Thread(target=conditional)
    thread.start()
    try:
        assert started.wait(30)
        post(kinto, b"the other one", query="?id=raced")
    finally:
        release.set()
        thread.join(30)
    assert result[0].status_code == 412, result[0].status
    assert get(kinto, "raced").body == b"the other one"
    assert len(kinto.files()) == 1, kinto.files()
    assert kinto.registry.transfer_limiter.in_use == 0


# 3. A finished upload's cache entry counts once committed.


def test_a_finished_upload_is_told_done_and_an_unconfirmed_entry_only_while_it_is_attached(
    kinto,
):
    """Held against a review (2026-12-05).

    right after the last ``PATCH`` the upload's ``HEAD`` says it is done, the last
    ``PATCH`` sent again (empty, at its end) is a 204; an entry left unconfirmed (a process
    killed between the commit and its after-commit hook) counts while the record's
    attachment is the upload's, and no longer once another upload replaced it; through the
    XX"""
    kinto.create_collection()
    app = kinto.app
    _, url = create(app, 10)
    patch(app, url, b"01234", 0)
    patch(app, url, b"56789", 5)
    assert head(app, url).headers["Upload-Offset"] == "10"
    patch(app, url, b"", 10)
    upload_id = url.rsplit("/", 1)[1]
    cache = kinto.registry.cache
    key = f"attachment-upload-finished:{upload_id}"
    entry = cache.get(key)
    assert entry["confirmed"] is True
    cache.set(key, {**entry, "confirmed": False}, 600)
    assert head(app, url).headers["Upload-Offset"] == "10"
    transaction.abort()
    kinto.upload(RECORD, b"another file", "other.txt")
    head(app, url, status=404)
    transaction.abort()


def _multipart(content, filename="a.txt", boundary="b0undary"):
    """``(body, boundary)`` of a form whose one part is the file ``content``."""
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=attachment; "
        f'filename="{filename}"\r\nContent-Type: text/plain\r\n\r\n'
    ).encode()
    return head + content + f"\r\n--{boundary}--\r\n".encode(), boundary


@pytest.mark.postgresql
@pytest.mark.parametrize("route", ["attachment", "data-files"])
def test_an_upload_holds_no_database_connection_while_its_body_comes(tmp_path, route):
    """An upload whose body takes minutes (a large file, a slow client) held its request's
    transaction, and so a connection of the database's pool, from the permission check before
    its body to its commit: as many slow uploads as the pool has connections (SQLAlchemy's
    default: 5, and 10 more) and every other request of the process waited for one, then
    failed (a 503). The checks before the body end their transaction; the upload's writes,
    after the body, take a connection again."""
    base_path = str(tmp_path / "store")
    pool = {
        "kinto.storage_pool_size": "1",
        "kinto.storage_max_overflow": "0",
        "kinto.storage_pool_timeout": "2",
    }
    with own_database("kinto_attachment_idle_bodies") as url:
        settings = build_settings("postgresql", base_path, pg=url, **pool)
        kinto_scripts.migrate({"registry": make_app(settings).app.registry})  # The tag.
        node = Kinto(make_app(settings), base_path)
        try:
            node.create_collection()
            transaction.abort()  # What this thread read: the pool's one connection is free.
            content = b"slow body " * 1000
            if route == "attachment":
                body, boundary = _multipart(content)
                path = node.record_url("r1") + "/attachment"
                headers = {**ALICE, "Content-Type": f"multipart/form-data; boundary={boundary}"}
            else:  # Conditional: the entry is read before the body.
                body, path = content, "/v1/data/files?id=slow"
                headers = {"Content-Type": "text/plain", "If-None-Match": "*"}
            started, release, result = threading.Event(), threading.Event(), []

            def upload():
                request = webob.Request.blank(path, method="POST", headers=headers)
                request.environ["REMOTE_ADDR"] = "127.0.0.1"  # /data/files' own callers.
                request.environ["wsgi.input"] = _PausingBody(
                    body[:1000], body[1000:], started, release
                )
                request.environ["CONTENT_LENGTH"] = str(len(body))
                try:
                    result.append(request.get_response(node.app.app))
                finally:
                    transaction.abort()

            uploading = threading.Thread(target=upload)
            uploading.start()
            try:
                assert started.wait(30)
                # Another request of the process meanwhile: the pool's one connection is free.
                listed = node.app.get(node.record_url("r1").rsplit("/", 1)[0], headers=ALICE)
                assert listed.status_int == 200
            finally:
                release.set()
                uploading.join(30)
            [response] = result
            assert response.status_int == (201 if route == "attachment" else 200), response.body
            if route == "attachment":
                stored = node.app.get(node.record_url("r1") + "/attachment", headers=ALICE)
                assert stored.body == content
        finally:
            dispose(node)
