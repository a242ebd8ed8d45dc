"""``make serve-pg`` on a fresh database: the Makefile's own recipe, step by step.

The recipe's commands are read from the Makefile and run as it runs them (``PG_URL`` through
Kinto's ``KINTO_*_URL`` environment variables), on a database of the test's own that does not
exist yet (dropped at the end), and on a copy of ``config/postgresql.ini`` that only differs by
its port and files folder (:func:`~tests.support.live.live_config`). One upload then goes
through the server.
"""

import configparser
import os
import re

import psycopg2
import pytest
import requests

from ..conftest import own_database
from ..support.live import (
    ALICE,
    BIN,
    REQUEST_TIMEOUT,
    ROOT,
    live_config,
    run_command,
    started,
)


pytestmark = [pytest.mark.live, pytest.mark.postgresql]

POSTGRESQL_CONFIG = ROOT / "config" / "postgresql.ini"
ADOPTION_REPORT = "kinto-attachment links that were made ours: 0"


def recipe(target):
    """The commands of ``target`` in the Makefile, and the variables it exports to them."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    exports = {}
    for line in lines:
        if found := re.match(rf"^{re.escape(target)}: export (\w+) = (.*)$", line):
            exports[found.group(1)] = found.group(2)
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{target}: \$\(", line))
    commands = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        commands.append(line.strip())
    return commands, exports


@pytest.fixture
def database():
    """A PostgreSQL URL naming a database that does not exist yet, dropped afterwards."""
    with own_database("kinto_attachment_serve_pg", create=False) as url:
        yield url


def run(command, folder, env):
    """Run ``command``; what it wrote, on stdout and stderr."""
    result = run_command(command, folder, env=env)
    assert result.returncode == 0, result
    return result.stdout + result.stderr


def test_serve_pg_creates_migrates_and_serves_a_fresh_database(database, tmp_path):
    commands, exports = recipe("serve-pg")
    ini = "config/postgresql.ini"
    assert commands == [
        "mkdir -p var/attachments-pg",
        f"$(BIN)/python config/createdb.py {ini}",
        f"$(BIN)/kinto migrate --ini {ini}",
        f"$(BIN)/pserve {ini}",
    ]
    assert exports == {
        f"KINTO_{backend}_URL": "$(PG_URL)" for backend in ("STORAGE", "CACHE", "PERMISSION")
    }
    env = {**os.environ, **{name: database for name in exports}}
    base_path = tmp_path / "attachments"
    base_path.mkdir()
    copy = tmp_path / "postgresql.ini"
    copy.write_text(live_config(0, base_path, template=POSTGRESQL_CONFIG))

    created = run([BIN / "python", ROOT / "config" / "createdb.py", copy], tmp_path, env)
    assert "created" in created and "already exists" not in created
    again = run([BIN / "python", ROOT / "config" / "createdb.py", copy], tmp_path, env)
    assert "already exists" in again
    migrated = run([BIN / "kinto", "migrate", "--ini", copy], tmp_path, env)
    # The adoption report, once (Kinto logs it; nothing prints it again).
    assert migrated.count(ADOPTION_REPORT) == 1, migrated

    with started(tmp_path, copy, env=env) as server:
        server.wait_bound()
        server.wait_ready()
        record = f"{server.url}/buckets/default/collections/notes/records/hello"
        response = requests.post(
            f"{record}/attachment",
            files={"attachment": ("hello.txt", b"Hello, Kinto!", "text/plain")},
            auth=ALICE,
            timeout=REQUEST_TIMEOUT,
        )
        assert response.status_code == 201, response.text
        download = requests.get(f"{record}/attachment", auth=ALICE, timeout=REQUEST_TIMEOUT)
        assert download.content == b"Hello, Kinto!"
        # Stored in the test's database, not in the one config/postgresql.ini names.
        with psycopg2.connect(database) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM objects WHERE resource_name = 'record'")
            assert cursor.fetchone() == (1,)
        # The flush plugin, as in config/kinto.ini.
        flush = requests.post(f"{server.url}/__flush__", timeout=REQUEST_TIMEOUT)
        assert flush.status_code == 202, flush.text


def test_postgresql_ini_has_the_plugins_of_kinto_ini():
    """Only the backends and what sharing them changes differ, and the folder of the files:
    one instance's, never another's (docs/gc.rst)."""

    def settings(name):
        parser = configparser.RawConfigParser()
        parser.read(ROOT / "config" / name)
        return dict(parser["app:main"])

    memory, postgresql = settings("kinto.ini"), settings("postgresql.ini")
    assert memory["kinto.includes"].split() == postgresql["kinto.includes"].split()
    differing = {
        k for k in memory.keys() | postgresql.keys() if memory.get(k) != postgresql.get(k)
    }
    backends = {f"kinto.{b}_{kind}" for b in ("storage", "cache", "permission")
                for kind in ("backend", "url")}  # fmt: skip
    assert differing == backends | {
        "pg_url",
        "kinto.attachment.gc.replaced_grace_seconds",
        "kinto.attachment.base_path",
    }
    assert memory["kinto.attachment.base_path"] != postgresql["kinto.attachment.base_path"]
