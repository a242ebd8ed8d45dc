"""Data written by the real kinto-attachment, for the tests of what this plugin does with it.

:func:`write_legacy_data` runs Mozilla's kinto-attachment 8.0.0 (Kinto 26.5, from the virtualenv
:func:`tests.support.live.ensure_peer` caches) with ``pserve`` on a fresh PostgreSQL database and a
fresh folder, drives it over HTTP as clients did (``curl -F attachment=@file``), stops it and
returns what it wrote (:class:`LegacyData`). What it wrote is also checked against what
kinto-attachment is known to do (links, ``location = urljoin(base_url, key)``, the replaced file
deleted), so that a change of the peer cannot silently make the tests vacuous.

kinto-attachment 9.x needs Python 3.12; its only change to stored data is its migration, which
moves the link rows from ``resource_name = ''`` to ``'attachments'`` and records its schema
version: :func:`convert_to_9x` runs that migration's exact SQL on a database written by 8.0.0.

The other helpers handle PostgreSQL databases (created, copied from a template, dropped) and
Kinto configuration files, for the peer and for this plugin's commands alike.
"""

import contextlib
import dataclasses
import hashlib
import os
import uuid
from pathlib import Path
from urllib.parse import urljoin

import requests

from ..conftest import BASE_SETTINGS, PG_SERVER
from . import live


#: kinto-attachment's links: objects of this parent...
LEGACY_PARENT = "__attachments__"
#: ...and of this resource name, before (6.x to 8.x) and after (9.x) its own migration.
RESOURCE_8X, RESOURCE_9X = "", "attachments"
#: Both servers use the same secret, so that the same credentials are the same user.
SECRET = BASE_SETTINGS["kinto.userid_hmac_secret"]
AUTH = ("alice", "secret")

#: kinto-attachment 9.x's migration (``src/kinto_attachment/migrations.py`` at its HEAD), verbatim.
MIGRATION_9X = """
INSERT INTO objects (id, resource_name, deleted, parent_id, data)
    SELECT id, 'attachments', deleted, parent_id, data
    FROM objects
    WHERE parent_id = '__attachments__' AND resource_name = ''
    ON CONFLICT do nothing;

DELETE FROM objects
    WHERE parent_id = '__attachments__' AND resource_name = '';

INSERT INTO metadata (name, value)
    VALUES ('kinto_attachment_schema_version', '2');
"""


# PostgreSQL databases.


def admin(*statements):
    """Run statements on the server's ``postgres`` database, outside any transaction."""
    import psycopg2

    connection = psycopg2.connect(PG_SERVER + "/postgres", connect_timeout=5)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()


def new_database(tag, template=None):
    """The URL of a new database (a copy of ``template``, a database name, if given)."""
    name = f"kinto_attachment_{tag}_{uuid.uuid4().hex[:8]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    admin(f'CREATE DATABASE "{name}"{copy}')
    return f"{PG_SERVER}/{name}"


def database_name(url):
    return url.rsplit("/", 1)[1]


def drop_database(url):
    admin(f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)')


def query(url, sql, params=None):
    """The rows of one statement on the database at ``url`` (committed, connection closed:
    a database with a connection cannot be a template)."""
    import psycopg2

    connection = psycopg2.connect(url, connect_timeout=5)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def legacy_links(url):
    """kinto-attachment's link rows: ``[(resource_name, id, data)]``, sorted."""
    return sorted(
        query(
            url,
            "SELECT resource_name, id, data FROM objects WHERE parent_id = %s AND NOT deleted",
            (LEGACY_PARENT,),
        )
    )


def convert_to_9x(url):
    """Leave the database at ``url`` as kinto-attachment 9.x's migration leaves it."""
    query(url, MIGRATION_9X)


# Configuration files.


def _ini_value(value):
    # configparser interpolates ``%``; continuation lines are not used here.
    return str(value).replace("%", "%%")


def ini_text(settings, port=0):
    """A Kinto configuration file: waitress on ``127.0.0.1:port``, the app's ``settings``, logs
    on stderr (waitress's "Serving on" line included, see :func:`tests.support.live.started`)."""
    app = "\n".join(f"{key} = {_ini_value(value)}" for key, value in settings.items())
    return f"""\
[server:main]
use = egg:waitress#main
host = 127.0.0.1
port = {port}

[app:main]
use = egg:kinto
{app}

[loggers]
keys = root, waitress

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = INFO
handlers = console

[logger_waitress]
level = INFO
handlers =
qualname = waitress

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(asctime)s %(levelname)-5.5s [%(name)s] %(message)s
"""


def postgresql_settings(pg_url):
    settings = {}
    for kind in ("storage", "permission", "cache"):
        settings[f"kinto.{kind}_backend"] = f"kinto.core.{kind}.postgresql"
        settings[f"kinto.{kind}_url"] = pg_url
    return settings


#: Its commands (``kinto migrate``...), run as every test runs one.
run_command = live.run_command


# The variants and what the peer writes.


@dataclasses.dataclass(frozen=True)
class Variant:
    """A configuration of kinto-attachment, which this plugin is then given as it is."""

    id: str
    base_url: str
    #: ``kinto.attachment.folder`` (a pattern of ``bucket_id`` and ``collection_id``).
    folder: str = ""
    randomize: bool = True

    def settings(self):
        """The ``kinto.attachment.*`` settings both servers are given."""
        settings = {
            "kinto.attachment.base_url": self.base_url,
            "kinto.attachment.randomize": "true" if self.randomize else "false",
        }
        if self.folder:
            settings["kinto.attachment.folder"] = self.folder
        return settings


#: Each setting that changes what kinto-attachment writes, in at least one variant (a variant
#: costs a run of the peer and a copy of every test).
VARIANTS = [
    # Random names (its default), at the root of the folder.
    Variant("slash", "https://cdn.example.com/files/"),
    # kinto-attachment joins with urljoin: "https://cdn.example.com/{key}", "files" dropped.
    Variant("no-slash", "https://cdn.example.com/files"),
    # The client's file names (made safe), "-1" added to a name already taken, in folders.
    Variant(
        "folder-named",
        "https://cdn.example.com/files/",
        folder="{bucket_id}/{collection_id}",
        randomize=False,
    ),
]
DEFAULT_VARIANT = VARIANTS[0]


@dataclasses.dataclass(frozen=True)
class Upload:
    """One ``POST {record}/attachment`` (``data``: the form's ``data`` field, JSON)."""

    filename: str
    content: bytes
    mimetype: str
    data: str | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
    """What is done to one record through kinto-attachment's API."""

    bucket: str
    collection: str
    record: str
    #: Uploaded in turn: all but the last are replaced (and deleted by kinto-attachment).
    uploads: tuple = ()
    #: Afterwards: "delete-file" (the file disappears from the folder behind its back),
    #: "detach" (``DELETE {record}/attachment``), or "copy-of:NAME" / "foreign" (no upload: a
    #: plain ``PUT`` of the record with NAME's attachment, as kinto-signer copies records, or
    #: with a location under another base URL).
    then: str | None = None

    @property
    def uri(self):
        return f"/buckets/{self.bucket}/collections/{self.collection}/records/{self.record}"


def _text(name, version=1):
    return f"{name} v{version}\n".encode() * 50


#: Every record written, by name. Uploads keep kinto-attachment's default extensions.
PLANS = {
    "kept": Plan(
        "site", "docs", "kept", (Upload("hello.txt", _text("kept"), "text/plain", '{"n": 1}'),)
    ),
    "replaced": Plan(
        "site",
        "docs",
        "replaced",
        (
            Upload("report.txt", _text("replaced", 1), "text/plain"),
            Upload("report.txt", _text("replaced", 2), "text/plain", '{"title": "v2"}'),
        ),
    ),
    "same-a": Plan("site", "docs", "same-a", (Upload("same.txt", _text("a"), "text/plain"),)),
    "same-b": Plan("site", "docs", "same-b", (Upload("same.txt", _text("b"), "text/plain"),)),
    "binary": Plan(
        "site", "docs", "binary", (Upload("logo.png", os.urandom(70_000), "image/png"),)
    ),
    "unicode": Plan(
        "site",
        "docs",
        "unicode",
        (Upload("Rapport final été.json", b'{"r\xc3\xa9sum\xc3\xa9": 1}\n', "application/json"),),
    ),
    "missing": Plan(
        "site",
        "docs",
        "missing",
        (Upload("lost.txt", _text("missing"), "text/plain"),),
        "delete-file",
    ),
    "detached": Plan(
        "site",
        "docs",
        "detached",
        (Upload("gone.txt", _text("detached"), "text/plain"),),
        "detach",
    ),
    "foreign": Plan("site", "docs", "foreign", then="foreign"),
    "copy": Plan("site", "preview", "copy", then="copy-of:binary"),
    "other-1": Plan("site", "other", "other-1", (Upload("o1.txt", _text("o1"), "text/plain"),)),
    "other-2": Plan("site", "other", "other-2", (Upload("o2.csv", b"a,b\n1,2\n", "text/csv"),)),
    "arch-1": Plan("archive", "old", "arch-1", (Upload("a1.txt", _text("a1"), "text/plain"),)),
    "arch-2": Plan("archive", "new", "arch-2", (Upload("a2.txt", _text("a2"), "text/plain"),)),
}
FOREIGN_LOCATION = "https://elsewhere.example.org/files/foreign.txt"


@dataclasses.dataclass(frozen=True)
class LegacyRecord:
    name: str
    bucket: str
    collection: str
    id: str
    #: The record's data as the peer served it at the end.
    data: dict
    #: The attachment's bytes (None: no attachment, or one that was never uploaded here).
    content: bytes | None
    #: The store-relative key of kinto-attachment's link (None: no link).
    key: str | None
    #: Keys of files uploaded to this record then replaced (deleted by kinto-attachment).
    replaced_keys: tuple = ()

    @property
    def uri(self):
        return f"/buckets/{self.bucket}/collections/{self.collection}/records/{self.id}"

    @property
    def attachment(self):
        return self.data.get("attachment")


@dataclasses.dataclass(frozen=True)
class LegacyData:
    """What kinto-attachment wrote: a database (a template: nobody connects to it) and a folder,
    to be copied by each test that changes them."""

    variant: Variant
    pg_url: str
    base_path: Path
    records: dict
    #: The link rows: ``[(resource_name, id, data)]``.
    links: list
    #: Relative paths of the files in ``base_path``.
    files: list
    #: What the peer logged.
    output: str

    def __getitem__(self, name):
        return self.records[name]


def files_under(base_path):
    base_path = Path(base_path)
    return sorted(str(p.relative_to(base_path)) for p in base_path.rglob("*") if p.is_file())


class _Client:
    def __init__(self, url):
        self.url = url

    def _call(self, method, path, expected, **kwargs):
        response = requests.request(
            method, self.url + path, auth=AUTH, timeout=live.REQUEST_TIMEOUT, **kwargs
        )
        assert response.status_code in expected, (
            method,
            path,
            response.status_code,
            response.text,
        )
        return response

    def put(self, path, body=None):
        return self._call("PUT", path, (200, 201), json=body or {}).json()

    def get(self, path):
        return self._call("GET", path, (200,)).json()

    def delete(self, path):
        return self._call("DELETE", path, (200, 204))

    def upload(self, path, upload):
        # What ``curl -F attachment=@file [-F data=...]`` sends.
        form = {"data": (None, upload.data)} if upload.data else {}
        files = {**form, "attachment": (upload.filename, upload.content, upload.mimetype)}
        return self._call("POST", path + "/attachment", (200, 201), files=files).json()


def _drive(client):
    """Write every plan through the peer's API; return the locations it answered, by name."""
    locations = {}
    for plan in PLANS.values():
        client.put(f"/buckets/{plan.bucket}")
        client.put(f"/buckets/{plan.bucket}/collections/{plan.collection}")
    for name, plan in PLANS.items():
        locations[name] = [client.upload(plan.uri, upload)["location"] for upload in plan.uploads]
    for plan in PLANS.values():
        if plan.then == "detach":
            client.delete(plan.uri + "/attachment")
        elif plan.then == "foreign":
            attachment = {
                "filename": "foreign.txt",
                "location": FOREIGN_LOCATION,
                "hash": hashlib.sha256(b"elsewhere").hexdigest(),
                "mimetype": "text/plain",
                "size": len(b"elsewhere"),
            }
            client.put(plan.uri, {"data": {"attachment": attachment}})
        elif plan.then and plan.then.startswith("copy-of:"):
            source = PLANS[plan.then.split(":", 1)[1]]
            attachment = client.get(source.uri)["data"]["attachment"]
            client.put(plan.uri, {"data": {"attachment": attachment, "copied": True}})
    return locations


def peer_settings(variant, pg_url, base_path):
    return {
        "kinto.includes": "kinto_attachment",
        "kinto.userid_hmac_secret": SECRET,
        "multiauth.policies": "basicauth",
        "kinto.bucket_create_principals": "system.Authenticated",
        **postgresql_settings(pg_url),
        "kinto.attachment.base_path": str(base_path),
        **variant.settings(),
    }


@contextlib.contextmanager
def running_peer(folder, settings):
    """kinto-attachment 8.0.0 with ``settings`` (its database migrated first), until exit."""
    peer_bin = live.ensure_peer()
    ini = Path(folder) / "peer.ini"
    ini.write_text(ini_text(settings))
    env = live.peer_env()
    migrated = run_command([peer_bin / "kinto", "migrate", "--ini", ini], folder, env=env)
    assert migrated.returncode == 0, migrated
    command = [str(peer_bin / "pserve"), str(ini)]
    with live.started(folder, ini, command=command, env=env) as server:
        server.wait_ready()
        yield server


def write_legacy_data(variant, folder):
    """Run kinto-attachment 8.0.0 configured as ``variant`` on a new database and a new folder
    (under ``folder``), write :data:`PLANS` with it, stop it: return what it wrote.

    The database is the caller's to drop (:func:`drop_database`).
    """
    folder = Path(folder)
    base_path = folder / "attachments"
    base_path.mkdir()
    pg_url = new_database(f"legacy_{variant.id.replace('-', '_')}")
    try:
        with running_peer(folder, peer_settings(variant, pg_url, base_path)) as server:
            client = _Client(server.origin + "/v1")
            locations = _drive(client)
            data = {name: client.get(plan.uri)["data"] for name, plan in PLANS.items()}
            output = server.output()
        links = legacy_links(pg_url)
        records = _records(variant, base_path, locations, data, links)
        for record in records.values():
            if PLANS[record.name].then == "delete-file":
                (base_path / record.key).unlink()
        files = files_under(base_path)
        legacy = LegacyData(variant, pg_url, base_path, records, links, files, output)
        _check(legacy)
    except BaseException:
        drop_database(pg_url)
        raise
    return legacy


def _records(variant, base_path, locations, data, links):
    key_of = {row["record_uri"]: row["location"] for _, _, row in links}
    records = {}
    for name, plan in PLANS.items():
        uploaded = [_key_of_location(variant.base_url, location) for location in locations[name]]
        content = plan.uploads[-1].content if plan.uploads else None
        if plan.then == "detach":
            content = None
        elif plan.then and plan.then.startswith("copy-of:"):
            source = PLANS[plan.then.split(":", 1)[1]]
            content = source.uploads[-1].content
        records[name] = LegacyRecord(
            name=name,
            bucket=plan.bucket,
            collection=plan.collection,
            id=plan.record,
            data=data[name],
            content=content,
            key=key_of.get(plan.uri),
            replaced_keys=tuple(uploaded[:-1]),
        )
    return records


def _key_of_location(base_url, location):
    """The key kinto-attachment stored at ``location`` (``urljoin(base_url, key)``)."""
    root = urljoin(base_url, ".")
    assert location.startswith(root), (location, base_url)
    return location[len(root) :]


def _check(legacy):
    """What kinto-attachment 8.0.0 is known to write: the tests rely on it."""
    variant, records = legacy.variant, legacy.records
    linked = {row["record_uri"] for _, _, row in legacy.links}
    assert {resource for resource, _, _ in legacy.links} == {RESOURCE_8X}, legacy.links
    for record in records.values():
        plan = PLANS[record.name]
        uploaded = bool(plan.uploads) and plan.then != "detach"
        assert (record.uri in linked) == uploaded, (record, legacy.links)
        for key in record.replaced_keys:
            # Without random names, the new file may take the name the old one freed.
            if key != record.key:
                assert not (legacy.base_path / key).exists(), f"kinto-attachment kept {key}"
        if not uploaded:
            continue
        attachment = record.attachment
        assert attachment["location"] == urljoin(variant.base_url, record.key), attachment
        assert attachment["hash"] == hashlib.sha256(record.content).hexdigest()
        assert attachment["size"] == len(record.content)
        if variant.folder:
            assert record.key.startswith(f"{record.bucket}/{record.collection}/"), record.key
        if not variant.randomize:
            stem = os.path.splitext(record.key)[0].rsplit("/", 1)[-1]
            assert not _looks_random(stem), record.key
        if plan.then == "delete-file":
            assert not (legacy.base_path / record.key).exists()
        else:
            assert (legacy.base_path / record.key).read_bytes() == record.content, record
    if not variant.randomize:
        assert records["same-b"].key.endswith("same-1.txt"), records["same-b"]
        assert records["unicode"].key.endswith("Rapport_final_ete.json"), records["unicode"]
    assert records["copy"].attachment == records["binary"].attachment
    assert records["foreign"].attachment["location"] == FOREIGN_LOCATION


def _looks_random(stem):
    try:
        uuid.UUID(stem)
    except ValueError:
        return False
    return True
