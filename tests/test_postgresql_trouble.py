"""kinto_attachment under PostgreSQL trouble (read-only, lock timeouts, killed connections,
serialization failures, an exhausted pool): a clear 503, no orphan the collector would not
take, no referenced file deleted. Held against a review (2026-12-06)."""

import os

import psycopg2
import pytest
import sqlalchemy
from sqlalchemy import event

from kinto_attachment import gc

from .conftest import ALICE, PG_SERVER, Kinto, build_settings, dispose, make_app, own_database


pytestmark = pytest.mark.postgresql

FAR_FUTURE = 4102444800000  # 2100: every grace is over.


@pytest.fixture
def kinto(tmp_path):
    base_path = str(tmp_path / "files")
    os.makedirs(base_path)
    with own_database("pg_trouble") as url:
        kinto = Kinto(make_app(build_settings("postgresql", base_path, pg=url)), base_path)
        kinto.url = url
        kinto.dbname = url.rsplit("/", 1)[1]
        kinto.create_collection()
        try:
            yield kinto
        finally:
            dispose(kinto)


def admin(statement):
    conn = psycopg2.connect(PG_SERVER + "/postgres")
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(statement)
    conn.close()


def reconnect(kinto):
    """New sessions get the database's new settings."""
    engine = kinto.registry.storage.client.session_factory.session_factory.kw["bind"]
    engine.dispose()


def collected_files(kinto):
    """The files left once the collector ran with every grace over."""
    gc.collect(kinto.registry, now=FAR_FUTURE)
    return kinto.files()


def assert_consistent(kinto, expected_location, expected_content):
    record = kinto.app.get(kinto.record_url(), headers=ALICE).json["data"]
    assert record["attachment"]["location"] == expected_location
    assert kinto.read(expected_location) == expected_content
    assert collected_files(kinto) == [kinto.key_of(expected_location)]


@pytest.mark.parametrize("setting", ["default_transaction_read_only = on"])
def test_read_only_database_gives_503_and_keeps_the_attachment(kinto, setting):
    """Attacks an upload replacing a file while the database is read-only (a replica promoted
    the wrong way, maintenance): 503, the old file still served, no leftover the collector
    keeps."""
    first = kinto.upload(kinto.record_url(), b"first").json["location"]
    admin(f'ALTER DATABASE "{kinto.dbname}" SET {setting}')
    reconnect(kinto)
    try:
        response = kinto.upload(kinto.record_url(), b"second", status="*")
        assert response.status_int == 503, response.text[:500]
        assert response.json["errno"]
        deleted = kinto.app.delete(kinto.record_url() + "/attachment", headers=ALICE, status="*")
        assert deleted.status_int == 503, deleted.text[:500]
        assert kinto.read(first) == b"first"
    finally:
        admin(f'ALTER DATABASE "{kinto.dbname}" RESET ALL')
        reconnect(kinto)
    assert_consistent(kinto, first, b"first")


def test_lock_timeout_on_the_record_row_gives_503(kinto):
    """Attacks an upload whose record write hits lock_timeout (another session holds the
    record's row: a long migration, a DBA's transaction): 503 (55P03), old attachment intact,
    no leftover the collector keeps."""
    first = kinto.upload(kinto.record_url(), b"first").json["location"]
    admin(f"ALTER DATABASE \"{kinto.dbname}\" SET lock_timeout = '300ms'")
    reconnect(kinto)
    holder = psycopg2.connect(kinto.url)
    try:
        with holder.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM objects WHERE id = 'r1' AND resource_name = 'record' FOR UPDATE"
            )
            response = kinto.upload(kinto.record_url(), b"second", status="*")
        assert response.status_int == 503, response.text[:500]
    finally:
        holder.rollback()
        holder.close()
        admin(f'ALTER DATABASE "{kinto.dbname}" RESET ALL')
        reconnect(kinto)
    assert_consistent(kinto, first, b"first")


def test_statement_timeout_gives_503(kinto):
    """Attacks statement_timeout on the database: a statement of the upload exceeding it
    (here the link's write, slowed by a held lock on the links' parent) gives a 503, nothing
    lost, no leftover."""
    first = kinto.upload(kinto.record_url(), b"first").json["location"]
    admin(f"ALTER DATABASE \"{kinto.dbname}\" SET statement_timeout = '300ms'")
    reconnect(kinto)
    holder = psycopg2.connect(kinto.url)
    try:
        with holder.cursor() as cursor:
            cursor.execute("SET statement_timeout = 0")
            cursor.execute(
                "SELECT 1 FROM objects WHERE id = 'r1' AND resource_name = 'record' FOR UPDATE"
            )
            response = kinto.upload(kinto.record_url(), b"second", status="*")
        assert response.status_int == 503, response.text[:500]
    finally:
        holder.rollback()
        holder.close()
        admin(f'ALTER DATABASE "{kinto.dbname}" RESET ALL')
        reconnect(kinto)
    assert_consistent(kinto, first, b"first")


def _kill_on(kinto, marker, times=1):
    """Terminate the backend of the connection about to send a statement containing
    ``marker`` (the first ``times`` of them)."""
    left = [times]

    def before(conn, cursor, statement, parameters, context, executemany):
        text = f"{statement} {parameters!r}"
        if left[0] and marker in text:
            left[0] -= 1
            pid = conn.connection.dbapi_connection.get_backend_pid()
            admin(f"SELECT pg_terminate_backend({pid})")

    event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", before)
    return lambda: event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", before)


@pytest.mark.parametrize(
    "marker", ["attachment-blob", "pg_advisory", "INSERT INTO objects", "DELETE FROM objects"]
)
def test_connection_killed_mid_upload_gives_503(kinto, marker):
    """Attacks a connection terminated (pg_terminate_backend: a failover, a DBA) in the
    middle of a replacing upload, at the link's write, the replaced entry's write or the
    lock: 503, old file intact and served, next request works, no leftover."""
    first = kinto.upload(kinto.record_url(), b"first").json["location"]
    stop = _kill_on(kinto, marker)
    try:
        response = kinto.upload(kinto.record_url(), b"second", status="*")
    finally:
        stop()
    assert response.status_int == 503, response.text[:500]
    assert_consistent(kinto, first, b"first")
    # The pool recovered.
    again = kinto.upload(kinto.record_url(), b"third").json["location"]
    assert kinto.read(again) == b"third"


def test_connection_killed_mid_delete_of_collection_gives_503(kinto):
    """Attacks a connection terminated while a collection's deletion pops its links: 503,
    every record and file kept."""
    first = kinto.upload(kinto.record_url(), b"first").json["location"]
    stop = _kill_on(kinto, "attachment-blob")
    try:
        response = kinto.app.delete(
            "/v1/buckets/blog/collections/articles", headers=ALICE, status="*"
        )
    finally:
        stop()
    assert response.status_int == 503, response.text[:500]
    assert_consistent(kinto, first, b"first")


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
def test_serialization_or_deadlock_gives_503(kinto, sqlstate):
    """Attacks a serialization failure or a deadlock reported by PostgreSQL in the middle of
    an upload (raised by the server itself, through a statement that raises it): 503, old
    file intact, no leftover."""
    first = kinto.upload(kinto.record_url(), b"first").json["location"]
    left = [1]

    def before(conn, cursor, statement, parameters, context, executemany):
        if left[0] and "attachment-blob" in f"{statement} {parameters!r}":
            left[0] -= 1
            cursor.execute(
                f"DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{sqlstate}'; END $$"
            )

    event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", before)
    try:
        response = kinto.upload(kinto.record_url(), b"second", status="*")
    finally:
        event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", before)
    assert response.status_int == 503, response.text[:500]
    assert_consistent(kinto, first, b"first")


def test_pool_exhausted_gives_503(kinto):
    """Attacks a pool with every connection taken by others (storage_pool_size 2, no
    overflow... here all of them held by threads): a request gives 503 within the pool
    timeout, not 500, and nothing is left."""
    first = kinto.upload(kinto.record_url(), b"first").json["location"]
    engine = kinto.registry.storage.client.session_factory.session_factory.kw["bind"]
    pool = engine.pool
    held = []
    try:
        old_timeout = pool._timeout
        pool._timeout = 1
        while True:
            try:
                held.append(engine.raw_connection())
            except sqlalchemy.exc.TimeoutError:
                break
            if len(held) > 50:
                break
        response = kinto.upload(kinto.record_url(), b"second", status="*")
    finally:
        for conn in held:
            conn.close()
        pool._timeout = old_timeout
    assert response.status_int == 503, response.text[:500]
    assert_consistent(kinto, first, b"first")


def test_connection_killed_after_commit_while_quarantining(kinto):
    """Attacks a connection terminated after the upload committed, while the replaced
    file's name is put in quarantine (its own transaction): the upload is answered as done,
    the new file served, and the old one, not deleted then, is taken by the collector (no
    leftover for good)."""
    first = kinto.upload(kinto.record_url(), b"first").json["location"]
    stop = _kill_on(kinto, "attachment-replaced")
    try:
        response = kinto.upload(kinto.record_url(), b"second", status="*")
    finally:
        stop()
    assert response.status_int in (200, 201), response.text[:500]
    second = response.json["location"]
    assert_consistent(kinto, second, b"second")
    del first
