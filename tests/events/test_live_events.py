"""A real server (``pserve`` on the shipped ``config/kinto.ini``, events turned on by Kinto's
environment variables) sends its events to Redis from its dispatcher thread, and serves the
signed URLs they carry to a client without credentials."""

import hashlib
import json
import os

import psycopg2
import pytest
import requests

from ..conftest import own_database
from ..support.live import (
    ALICE,
    BIN,
    ROOT,
    create_collection,
    live_config,
    run_command,
    running_server,
)
from .conftest import redis_events_for_live_servers


INDEX = "idx_attachment_events_pending"


def test_a_live_server_streams_its_events_to_redis(tmp_path, monkeypatch, redis_stream):
    client, stream = redis_stream
    redis_events_for_live_servers(monkeypatch, stream)
    content = bytes(range(256)) * 64
    with running_server(tmp_path, http_host=True) as server:
        create_collection(server, "blog", "articles")
        record = server.url + "/buckets/blog/collections/articles/records/live"
        uploaded = requests.post(
            record + "/attachment",
            files={"attachment": ("data.csv", content, "text/csv")},
            auth=ALICE,
            timeout=30,
        )
        assert uploaded.status_code == 201, uploaded.text
        found = client.xread({stream: "0"}, count=1, block=10_000)
        assert found, "no event within 10 seconds"
        [[_, [(_, fields)]]] = found
        event = json.loads(fields[b"event"])
        assert event["subject"] == "/buckets/blog/collections/articles/records/live"
        fetched = requests.get(event["data"]["url"], timeout=30)  # No credentials.
        assert fetched.status_code == 200
        assert hashlib.sha256(fetched.content).hexdigest() == event["data"]["attachment"]["hash"]
        ranged = requests.get(event["data"]["url"], headers={"Range": "bytes=256-511"}, timeout=30)
        assert ranged.status_code == 206 and ranged.content == content[256:512]


@pytest.mark.postgresql
def test_kinto_migrate_indexes_the_outbox_and_leaves_it_alone(tmp_path, monkeypatch):
    """``kinto migrate`` creates the index of the outbox's pending rows, which claims read.
    It builds the app, whose dispatcher would claim rows from tables that do not exist yet on
    a new database: the dispatcher waits for its first round, by which time the command is
    gone, rather than logging a failure with a traceback."""
    redis_events_for_live_servers(monkeypatch, "never-written")
    monkeypatch.delenv("KINTO_ATTACHMENT_EVENTS_POLL_SECONDS")
    with own_database("kinto_attachment_migrate") as database:
        names = ("KINTO_STORAGE_URL", "KINTO_CACHE_URL", "KINTO_PERMISSION_URL")
        # Never served: an address only for the start-up's checks (events on local disk).
        env = {**os.environ, **dict.fromkeys(names, database), "KINTO_HTTP_HOST": "localhost"}
        ini = tmp_path / "postgresql.ini"
        ini.write_text(live_config(0, tmp_path, template=ROOT / "config" / "postgresql.ini"))
        migrated = run_command([BIN / "kinto", "migrate", "--ini", ini], tmp_path, env=env)
        with psycopg2.connect(database) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [INDEX])
            [[definition]] = cursor.fetchall()
    assert "WHERE ((resource_name = 'attachment-event'::text)" in definition, definition
    assert migrated.returncode == 0, migrated
    assert "Events: dispatch failed" not in migrated.stdout + migrated.stderr
