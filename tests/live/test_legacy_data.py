"""This plugin on what Mozilla's kinto-attachment left: its records, its links and its files.

Each variant of kinto-attachment's configuration (:data:`tests.support.legacy.VARIANTS`) is run for
real once per session (:func:`tests.support.legacy.write_legacy_data`); its database is then a
template that each test copies, with its folder, before starting this plugin on them (in-process,
with the same settings). The states tested:

- ``8.x``: as kinto-attachment 6.x to 8.x leave it (links of ``resource_name = ''``);
- ``9.x``: then through kinto-attachment 9.x's own migration (``'attachments'``);
- ``... migrated``: then through ``kinto migrate`` of this plugin.

9.x only changes how links are stored, which the base URL, folder and naming variants do not
affect: it is tested on the first variant.

The commands (``kinto migrate [--dry-run]``, ``kinto-attachment-gc``) run on their own copies
while the states are built, in threads (each is a process that takes a second to start): their
tests check the results. The tests that send requests get a copy each (a shared one for those
that change nothing) and an app of their own.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import webtest
from kinto import main as kinto_main

from kinto_attachment.state import links as link_state

from ..conftest import ALICE, build_settings
from ..support import legacy
from ..support.legacy import DEFAULT_VARIANT, VARIANTS
from ..support.live import BIN


pytestmark = pytest.mark.postgresql

BEFORE = ("8.x", "9.x")
COMBOS = [(variant, state) for variant in VARIANTS for state in ("8.x", "8.x migrated")] + [
    (DEFAULT_VARIANT, "9.x"),
    (DEFAULT_VARIANT, "9.x migrated"),
]
UNMIGRATED = [(variant, state) for variant, state in COMBOS if state in BEFORE]
#: Each variant and each state once: for the tests that change a site beyond what replacing
#: and deleting a record show on every combination (each test opens a copy: seconds).
SAMPLED = [
    (VARIANTS[0], "8.x"),
    (VARIANTS[1], "8.x migrated"),
    (VARIANTS[2], "8.x"),
    (DEFAULT_VARIANT, "9.x migrated"),
]
#: Records whose file kinto-attachment wrote, linked, and left in place.
DOWNLOADABLE = [
    "kept",
    "replaced",
    "same-a",
    "same-b",
    "binary",
    "unicode",
    "other-1",
    "other-2",
    "arch-1",
    "arch-2",
]
#: Records whose download must be a 404: a location under another base URL, a file missing
#: from the folder, an attachment removed (``DELETE {record}/attachment``).
NOT_DOWNLOADABLE = ["foreign", "missing", "detached"]
DAY = 86400


def _combo_id(combo):
    variant, state = combo
    return f"{variant.id}-{state.replace(' ', '-')}"


# Legacy data and its states: built once per session, copied by each test.


@dataclasses.dataclass
class CommandRun:
    """One of this plugin's commands, run on a copy of a state (its database since dropped,
    its folder kept): the command's result, and the copy before and after it (snapshots)."""

    site: "Site"
    result: subprocess.CompletedProcess
    before: tuple
    after: tuple

    @property
    def output(self):
        return self.result.stdout + self.result.stderr


class States:
    """Session-wide: the data kinto-attachment wrote per variant, its states (each a template
    database, which nobody connects to, and a folder), and the runs of this plugin's commands
    on copies of them (``kinto migrate [--dry-run]``, ``kinto-attachment-gc``), whose results
    the tests then check.

    All of it is built at once, by chains in threads (the peers and the commands are processes
    of their own): one chain per variant from its 8.x state, one from 9.x. Whatever fails is
    raised in the tests that use it, and only there.
    """

    def __init__(self, root):
        self.root = root
        self.databases = []
        self.built = {}
        self._lock = threading.Lock()
        variants = {variant.id: variant for variant, _ in COMBOS}
        chains = sorted({(variant.id, state.split()[0]) for variant, state in COMBOS})
        with concurrent.futures.ThreadPoolExecutor(len(variants) + len(chains)) as pool:
            self._legacy = {i: pool.submit(self._write, v) for i, v in variants.items()}
            for future in [pool.submit(self._chain, variants[i], first) for i, first in chains]:
                future.result()

    def _write(self, variant):
        folder = self.root / f"legacy-{variant.id}"
        folder.mkdir()
        data = legacy.write_legacy_data(variant, folder)
        self._created(data.pg_url)
        return data

    def _chain(self, variant, first):
        """``first`` ("8.x" or "9.x"), then its migrated state, and the commands on each."""

        def data():
            return self._legacy[variant.id].result()

        def base():
            if first == "8.x":
                return data().pg_url, data().base_path
            return self._derive(data(), "9.x", data().pg_url, data().base_path)

        migrated = f"{first} migrated"
        self._put((variant.id, first), base)
        self._put((variant.id, first, "gc"), lambda: self._gc(data(), first))
        self._put(
            (variant.id, first, "dry-run"),
            lambda: self._run(data(), first, "dry-run", "kinto", "migrate", "--dry-run"),
        )
        self._put(
            (variant.id, migrated),
            lambda: self._derive(data(), migrated, *self.state(variant, first)),
        )
        self._put((variant.id, migrated, "gc"), lambda: self._gc(data(), migrated))
        self._put(
            (variant.id, migrated, "again"),
            lambda: self._run(data(), migrated, "again", "kinto", "migrate"),
        )

    def _put(self, key, build):
        try:
            self.built[key] = build()
        except Exception as e:
            self.built[key] = e

    def _derive(self, data, state, pg_url, base_path):
        """A copy of ``pg_url`` and ``base_path`` in ``state``: through kinto-attachment 9.x's
        migration ("9.x") or this plugin's ("... migrated")."""
        variant = data.variant
        tag = f"{state.replace('.', '').replace(' ', '_')}_{variant.id.replace('-', '_')}"
        copy = legacy.new_database(tag, template_of(pg_url))
        self._created(copy)
        folder = self.root / tag
        folder.mkdir()
        copy_folder(base_path, folder / "attachments")
        if state == "9.x":
            legacy.convert_to_9x(copy)
        else:
            ini = write_ini(folder, our_settings(data, copy, folder / "attachments"))
            result = legacy.run_command([BIN / "kinto", "migrate", "--ini", ini], folder)
            assert result.returncode == 0, f"kinto migrate failed:\n{result.stderr}"
        return copy, folder / "attachments"

    def _run(self, data, state, tag, *command, prepare=None):
        folder = self.root / f"{tag}-{data.variant.id}-{state.replace(' ', '-')}"
        folder.mkdir()
        site = open_site(self, (data.variant, state), folder, app=False)
        self._created(site.pg_url)
        try:
            if prepare is not None:
                prepare(site)
            before = site.snapshot()
            result = site.run(*command)
            return CommandRun(site, result, before, site.snapshot())
        finally:
            legacy.drop_database(site.pg_url)

    def _gc(self, data, state):
        return self._run(data, state, "gc", "kinto-attachment-gc", prepare=plant_orphan)

    def _created(self, pg_url):
        with self._lock:
            self.databases.append(pg_url)

    def _get(self, key):
        built = self.built[key]
        if isinstance(built, Exception):
            raise built
        return built

    def data(self, variant):
        return self._legacy[variant.id].result()

    def state(self, variant, state):
        """``(database URL, folder)`` of ``variant`` in ``state``."""
        return self._get((variant.id, state))

    def command(self, variant, state, name):
        """The :class:`CommandRun` ``name`` ("gc", "dry-run", "again") on ``state``."""
        return self._get((variant.id, state, name))

    def close(self):
        for pg_url in self.databases:
            legacy.drop_database(pg_url)


ORPHAN = "orphan.txt"


def plant_orphan(site):
    """A file nothing references, and every file two days old: past any grace period."""
    (site.base_path / ORPHAN).write_bytes(b"nobody references me\n")
    old = time.time() - 2 * DAY
    for path in site.base_path.rglob("*"):
        os.utime(path, (old, old))


def template_of(pg_url):
    return legacy.database_name(pg_url)


def copy_folder(source, destination):
    """A copy of a folder of attachments, with the files' modification times."""
    shutil.copytree(source, destination, copy_function=shutil.copy2)


@pytest.fixture(scope="session")
def states(pg_url, tmp_path_factory):
    """``pg_url``: skipped (or failed under CI) when PostgreSQL is unavailable."""
    states = States(tmp_path_factory.mktemp("legacy"))
    yield states
    states.close()


# This plugin on a copy.


def our_settings(data, pg_url, base_path, **extra):
    """This plugin's settings: kinto-attachment's, on the copy (no grace period for orphans,
    so that garbage collection would take any file that nothing references)."""
    return build_settings(
        "postgresql",
        str(base_path),
        pg=pg_url,
        **{
            "kinto.userid_hmac_secret": legacy.SECRET,
            **data.variant.settings(),
            "kinto.attachment.gc.orphans_grace_seconds": "0",
            **extra,
        },
    )


def write_ini(folder, settings):
    ini = Path(folder) / "kinto.ini"
    ini.write_text(legacy.ini_text(settings))
    return ini


@dataclasses.dataclass
class Site:
    """This plugin on a copy of a state of the legacy data."""

    data: legacy.LegacyData
    state: str
    folder: Path
    base_path: Path
    pg_url: str
    ini: Path
    app: object = None

    def __getitem__(self, name):
        return self.data[name]

    def url(self, record):
        return "/v1" + record.uri

    def path(self, key):
        return self.base_path / key

    def files(self):
        return legacy.files_under(self.base_path)

    def request(self, method, url, **kwargs):
        kwargs.setdefault("headers", ALICE)
        return getattr(self.app, method)(url, expect_errors=True, **kwargs)

    def download(self, record, method="get"):
        return self.request(method, self.url(record) + "/attachment")

    def upload(self, url, filename, content, mimetype="text/plain"):
        response = self.app.post(
            url + "/attachment",
            upload_files=[("attachment", filename, content, mimetype)],
            headers=ALICE,
            expect_errors=True,
        )
        assert response.status_int in (200, 201), (url, response.status, response.text)
        return response.json

    def run(self, *arguments):
        """One of this project's commands on this site's configuration."""
        return legacy.run_command(
            [BIN / arguments[0], *arguments[1:], "--ini", self.ini], self.folder
        )

    def snapshot(self):
        """Every object and metadata row of the database, and every file with its content."""
        objects = legacy.query(
            self.pg_url,
            "SELECT resource_name, parent_id, id, deleted, data::text, last_modified FROM objects",
        )
        metadata = legacy.query(self.pg_url, "SELECT name, value FROM metadata")
        files = {name: self.path(name).read_bytes() for name in self.files()}
        return sorted(objects), sorted(metadata), files


def close_app(app, pg_url):
    """Close this app's connections (Kinto keeps one client per database URL)."""
    from kinto.core.storage.postgresql import client as pg_client

    name = legacy.database_name(pg_url)
    for clients in pg_client._CLIENTS.values():
        for url in [url for url in clients if url.endswith("/" + name)]:
            client = clients.pop(url)
            client.session_factory.remove()
            client.session_factory.bind.dispose()


@pytest.fixture
def extra_settings():
    """More settings of this plugin (parametrized by some tests)."""
    return {}


def open_site(states, combo, folder, extra_settings=None, app=True):
    """This plugin (in-process, unless not ``app``) on a copy of ``combo``'s database and
    folder, configured by an ini file in ``folder`` for its commands."""
    variant, state = combo
    data = states.data(variant)
    template, source = states.state(variant, state)
    pg_url = legacy.new_database("site", template_of(template))
    base_path = folder / "attachments"
    copy_folder(source, base_path)
    settings = our_settings(data, pg_url, base_path, **(extra_settings or {}))
    site = Site(data, state, folder, base_path, pg_url, write_ini(folder, settings))
    if app:
        try:
            # The database already has its schema: no initialize_schema() as make_app does.
            site.app = webtest.TestApp(kinto_main({}, **settings))
        except BaseException:
            legacy.drop_database(pg_url)
            raise
    return site


def close_site(site):
    if site.app is not None:
        close_app(site.app, site.pg_url)
    legacy.drop_database(site.pg_url)


@pytest.fixture(params=COMBOS, ids=_combo_id)
def site(request, states, tmp_path, extra_settings):
    """This plugin on its own copy of one variant in one state."""
    site = open_site(states, request.param, tmp_path, extra_settings)
    yield site
    close_site(site)


@pytest.fixture(scope="module", params=COMBOS, ids=_combo_id)
def unchanged_site(request, states, tmp_path_factory):
    """Like ``site``, shared by the tests that change nothing."""
    site = open_site(states, request.param, tmp_path_factory.mktemp("unchanged"))
    yield site
    close_site(site)


# Checks.


def assert_serves(site, record, content=None):
    """``GET`` and ``HEAD {record}/attachment`` serve exactly the record's file."""
    content = record.content if content is None else content
    attachment = record.attachment
    response = site.download(record)
    assert response.status_int == 200, (record.name, response.status, response.text[:500])
    assert response.body == content, record.name
    assert hashlib.sha256(response.body).hexdigest() == attachment["hash"], record.name
    head = site.download(record, "head")
    assert head.status_int == 200, (record.name, head.status)
    assert head.body == b""
    assert int(head.headers["Content-Length"]) == attachment["size"], record.name


def assert_json_404(response, what):
    assert response.status_int == 404, (what, response.status, response.text[:500])
    assert response.content_type == "application/json", (what, response.content_type)
    body = response.json
    assert body["code"] == 404 and body["error"] and "errno" in body, (what, body)


def assert_kept(site, *names):
    """The files of these records are still there, unchanged."""
    for name in names:
        record = site[name]
        path = site.path(record.key)
        assert path.is_file(), f"{name}: {record.key} was deleted"
        assert path.read_bytes() == record.content, f"{name}: {record.key} was changed"


def assert_deleted(site, *names):
    for name in names:
        key = site[name].key
        assert not site.path(key).exists(), f"{name}: {key} is still in the folder"


def location_key(site, location):
    """The key of a location this plugin wrote: as kinto-attachment's, the key resolved
    against ``base_url`` (``urljoin``: without a trailing slash, its last segment goes)."""
    base_url = urllib.parse.urljoin(site.data.variant.base_url, ".")
    assert location.startswith(base_url), (location, base_url)
    return location[len(base_url) :]


# Downloads.


def test_download_serves_the_legacy_file(unchanged_site):
    site = unchanged_site
    for name in DOWNLOADABLE:
        assert_serves(site, site[name])


def test_download_of_an_unlinked_copy_serves_the_file_its_location_names(unchanged_site):
    site = unchanged_site
    """A record copied with its attachment (as kinto-signer copies records): no link, the
    file is found from its ``location``, which kinto-attachment wrote."""
    copy = site["copy"]
    assert copy.key is None
    assert_serves(site, copy)


def test_download_of_a_foreign_missing_or_removed_attachment_is_a_json_404(unchanged_site):
    site = unchanged_site
    for name in NOT_DOWNLOADABLE:
        record = site[name]
        assert_json_404(site.download(record), f"GET {name}")
        head = site.download(record, "head")
        assert head.status_int == 404, (f"HEAD {name}", head.status)


# Replacing and deleting.


def test_replacing_deletes_the_legacy_file(site):
    for name in ("kept", "unicode"):
        record = site[name]
        assert site.path(record.key).is_file()
        new = f"new content of {name}\n".encode()
        attachment = site.upload(site.url(record), "new.txt", new)
        assert_deleted(site, name)
        assert site.path(location_key(site, attachment["location"])).read_bytes() == new
        response = site.download(record)
        assert response.status_int == 200 and response.body == new, (name, response.status)
    assert_kept(site, "replaced", "same-a", "binary")


@pytest.mark.parametrize("site", SAMPLED, ids=_combo_id, indirect=True)
@pytest.mark.parametrize("extra_settings", [{"kinto.attachment.keep_old_files": "true"}])
def test_replacing_keeps_the_legacy_file_with_keep_old_files(site):
    record = site["kept"]
    new = b"new content\n"
    site.upload(site.url(record), "new.txt", new)
    assert_kept(site, "kept")
    response = site.download(record)
    assert response.status_int == 200 and response.body == new, response.status


def test_deleting_a_record_deletes_its_legacy_file(site):
    for name in ("kept", "unicode"):
        response = site.request("delete", site.url(site[name]))
        assert response.status_int == 200, (name, response.status, response.text)
        assert_deleted(site, name)
    assert_kept(site, "replaced", "same-a", "same-b", "binary")


@pytest.mark.parametrize("site", SAMPLED, ids=_combo_id, indirect=True)
def test_deleting_an_unlinked_copy_keeps_the_file_its_original_references(site):
    """kinto-attachment never deletes a file for a record it has no link of; here the file
    is also the attachment of the record that was copied."""
    response = site.request("delete", site.url(site["copy"]))
    assert response.status_int == 200, (response.status, response.text)
    assert_kept(site, "binary")
    assert_serves(site, site["binary"])


@pytest.mark.parametrize("site", SAMPLED, ids=_combo_id, indirect=True)
def test_deleting_a_collection_deletes_the_legacy_files_of_its_records(site):
    response = site.request("delete", "/v1/buckets/site/collections/other")
    assert response.status_int == 200, (response.status, response.text)
    assert_deleted(site, "other-1", "other-2")
    assert_kept(site, "kept", "replaced", "binary", "arch-1", "arch-2")


@pytest.mark.parametrize("site", SAMPLED, ids=_combo_id, indirect=True)
def test_deleting_a_bucket_deletes_the_legacy_files_of_its_records(site):
    response = site.request("delete", "/v1/buckets/archive")
    assert response.status_int == 200, (response.status, response.text)
    assert_deleted(site, "arch-1", "arch-2")
    assert_kept(site, "kept", "replaced", "binary", "other-1", "other-2")


@pytest.mark.parametrize("site", SAMPLED, ids=_combo_id, indirect=True)
def test_flush_deletes_the_legacy_files(site):
    response = site.request("post", "/v1/__flush__")
    assert response.status_int == 202, (response.status, response.text)
    assert_deleted(site, *DOWNLOADABLE)


@pytest.mark.parametrize("site", SAMPLED, ids=_combo_id, indirect=True)
def test_new_uploads_leave_the_legacy_files_alone(site):
    """New uploads (named as legacy files were, when names are not random) take new keys."""
    uploads = {"fresh-1": "same.txt", "fresh-2": "hello.txt", "fresh-3": "report.txt"}
    for record_id, filename in uploads.items():
        content = f"{record_id}\n".encode()
        attachment = site.upload(
            f"/v1/buckets/site/collections/docs/records/{record_id}", filename, content
        )
        assert site.path(location_key(site, attachment["location"])).read_bytes() == content
    assert_kept(site, *DOWNLOADABLE)
    for name in DOWNLOADABLE:
        assert_serves(site, site[name])


# Garbage collection.


@pytest.mark.parametrize("combo", COMBOS, ids=_combo_id)
def test_garbage_collection_keeps_every_file_a_legacy_record_references(states, combo):
    run = states.command(*combo, "gc")
    assert run.result.returncode == 0, run.output
    site = run.site
    for name in DOWNLOADABLE:
        record = site[name]
        path = site.path(record.key)
        assert path.is_file(), f"{name}: {record.key} was collected\n{run.output}"
        assert path.read_bytes() == record.content, name
    # The copy's file (the binary record's) is kept above. A file nothing references is an
    # orphan once adopted (``kinto migrate``): the collector did run, on this folder. Before,
    # the first adoption keeps it and lists it: kinto-attachment left it (``keep_old_files``
    # leaves files so), and we cannot know why.
    if combo in UNMIGRATED:
        assert site.path(ORPHAN).exists(), run.output
        assert f"  {ORPHAN}\n" in run.output and "never removed: " in run.output
    else:
        assert not site.path(ORPHAN).exists(), run.output


# This plugin's migration.


def our_links(snapshot):
    """``{(record URI, key)}`` of this plugin's links in a :meth:`Site.snapshot`."""
    return {
        (parent[len(link_state.PARENT_PREFIX) :], json.loads(data)["key"])
        for resource, parent, _, deleted, data, _ in snapshot[0]
        if resource == link_state.RESOURCE and not deleted
    }


def legacy_rows(snapshot):
    return [row for row in snapshot[0] if row[1] == legacy.LEGACY_PARENT and not row[3]]


def changes(before, after, run):
    """What a command changed (rows or files, before then after), and what it said."""
    gone = [row for row in before if row not in after]
    new = [row for row in after if row not in before]
    return f"changed by {run.result.args[1:]}:\n- {gone}\n+ {new}\n{run.output}"


@pytest.mark.parametrize("combo", UNMIGRATED, ids=_combo_id)
def test_migrate_makes_the_legacy_links_ours_idempotently(states, combo):
    variant, state = combo
    data = states.data(variant)
    # The first run made the migrated state; this is a second one, on a copy of it.
    run = states.command(variant, f"{state} migrated", "again")
    expected = {(row["record_uri"], row["location"]) for _, _, row in data.links}
    converted = our_links(run.before)
    assert expected <= converted, f"not converted: {sorted(expected - converted)}"
    assert run.result.returncode == 0, run.output
    (objects, metadata, files), after = run.before, run.after
    contents = [row[:5] for row in objects]
    assert [row[:5] for row in after[0]] == contents, changes(contents, after[0], run)
    assert after[1] == metadata, changes(metadata, after[1], run)
    assert after[2] == files, changes(sorted(files), sorted(after[2]), run)
    # Not even a timestamp.
    assert after[0] == objects, changes(objects, after[0], run)


@pytest.mark.parametrize("combo", UNMIGRATED, ids=_combo_id)
def test_migrate_dry_run_changes_nothing_and_reports_counts(states, combo):
    run = states.command(*combo, "dry-run")
    assert run.result.returncode == 0, run.output
    count = len(legacy_rows(run.before))
    assert count == len(states.data(combo[0]).links)
    for before, after in zip(run.before, run.after, strict=True):
        assert after == before, changes(before, after, run)
    reported = [
        line
        for line in run.output.splitlines()
        if re.search(rf"\b{count}\b", line) and re.search("link", line, re.IGNORECASE)
    ]
    assert reported, f"no line reports the {count} kinto-attachment links:\n{run.output}"


def test_legacy_data_is_what_kinto_attachment_wrote(states):
    """The fixture's own check: each variant ran, and its data is shaped as expected."""
    for variant in VARIANTS:
        data = states.data(variant)
        assert data.links and all(resource == legacy.RESOURCE_8X for resource, _, _ in data.links)
        names = {json.dumps(row, sort_keys=True) for _, _, row in data.links}
        assert len(names) == len(data.links)
    pg_url, _ = states.state(DEFAULT_VARIANT, "9.x")
    rows = legacy.legacy_links(pg_url)
    assert {resource for resource, _, _ in rows} == {legacy.RESOURCE_9X}
    assert len(rows) == len(states.data(DEFAULT_VARIANT).links)
    version = legacy.query(
        pg_url, "SELECT value FROM metadata WHERE name = 'kinto_attachment_schema_version'"
    )
    assert version == [("2",)]
