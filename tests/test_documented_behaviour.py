"""What the documentation says, held to: a newcomer's review that followed it literally
(2026-12-05) found each of these places where the documentation, or a shipped configuration
it recommends, said something the server did not do (the docstrings say what the page says,
what happened, and what it cost).
"""

import configparser
import importlib.util
import os
import re
import signal
import time

import pytest
import requests
from pyramid.exceptions import ConfigurationError

from kinto_attachment import settings as attachment_settings
from kinto_attachment.downloads.caching import IMMUTABLE
from kinto_attachment.setting_values import MAX_SECONDS

from .support.live import ALICE, REQUEST_TIMEOUT, ROOT, live_config, running_server


DOCS = ROOT / "docs"
CONFIG = ROOT / "config"


#: Every setting whose value is a number of seconds (docs/settings.rst), with what it needs
#: beside it to be read at all.
EVENTS = {
    "attachment.base_path": "/tmp",
    "attachment.events.destinations": "redis",
    "attachment.events.redis.url": "redis://127.0.0.1:6379/0",
    "attachment.events.url_secret": "a-long-random-secret-shared-by-every-node",
    "http_host": "files.example.com",
}
LOCAL = {"attachment.base_path": "/tmp"}
S3 = {"attachment.aws.bucket_name": "b"}
GCS = {"attachment.gcloud.bucket_name": "b", "attachment.gcloud.endpoint_url": "http://x"}
SECONDS_SETTINGS = [
    ("gc.orphans_grace_seconds", LOCAL),
    ("gc.orphans_interval_seconds", LOCAL),
    ("gc.replaced_grace_seconds", LOCAL),
    ("files_cache_expires_seconds", LOCAL),
    ("data_files.transfer_wait_seconds", LOCAL),
    ("data_files.transfer_idle_seconds", LOCAL),
    ("events.url_expires_seconds", EVENTS),
    ("events.fetch_grace_seconds", EVENTS),
    ("events.max_age_seconds", EVENTS),
    ("events.retry_seconds", EVENTS),
    ("events.timeout_seconds", EVENTS),
    ("aws.connect_timeout", S3),
    ("aws.read_timeout", S3),
    ("gcloud.connect_timeout", GCS),
    ("gcloud.read_timeout", GCS),
    ("gcloud.retry_seconds", GCS),
]


def test_settings_doc_promises_ten_years_at_most():
    """The sentence the next test holds the settings to."""
    text = " ".join((DOCS / "settings.rst").read_text().split())
    assert "Settings of seconds are at most ten years." in text


@pytest.mark.parametrize("name, context", SECONDS_SETTINGS, ids=[n for n, _ in SECONDS_SETTINGS])
def test_a_setting_of_seconds_over_ten_years_stops_start_up(name, context):
    """docs/settings.rst ("Per bucket or collection", the paragraph after the extension
    groups) says: "Settings of seconds are at most ten years." ``settings.py`` says why
    (``MAX_SECONDS``): "any wait a thread does, any date an answer writes stays
    representable".

    What happens: only ``resumable.expires_seconds``, ``data_files.gc_interval_seconds`` and
    ``events.poll_seconds`` are bounded. Every other setting of seconds takes any value:
    ``gc.*`` (``GC_SETTINGS``: ``as_number(int, 0)``), ``files_cache_expires_seconds``,
    ``events.url_expires_seconds``/``fetch_grace_seconds``/``max_age_seconds``/
    ``retry_seconds``/``timeout_seconds``, ``data_files.transfer_wait_seconds``/
    ``transfer_idle_seconds``, ``aws.connect_timeout``/``read_timeout``,
    ``gcloud.connect_timeout``/``read_timeout``/``retry_seconds``.

    Consequence (seen live): ``KINTO_ATTACHMENT_EVENTS_TIMEOUT_SECONDS=1000000000000`` (an
    operator's "never time out") starts the server without a word, then every delivery of
    every event fails with ``OverflowError: timestamp out of range for platform time_t``
    (the socket timeout), is retried and dies after ``max_attempts``: events are lost to
    their workers, where start-up should have refused the setting, naming it.

    Fix: give each of these parsers ``MAX_SECONDS`` as maximum (``as_number(int, 0,
    MAX_SECONDS)``...), as ``poll_seconds`` and ``gc_interval_seconds`` have it.
    """
    settings = {**context, f"attachment.{name}": str(MAX_SECONDS + 1)}
    with pytest.raises(ConfigurationError, match=re.escape(name)):
        attachment_settings.parse(settings)


def app_settings(ini):
    """The ``[app:main]`` settings of a shipped ini as Kinto reads them (without ``kinto.``)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ini)
    return {
        key.removeprefix("kinto."): value
        for key, value in parser["app:main"].items()
        if key.startswith("kinto.attachment.")
    }


@pytest.mark.parametrize("ini", ["s3.ini", "gcs.ini"])
def test_shipped_cloud_configs_cache_chosen_names_as_docs_say(ini):
    """docs/caching.rst, "Cache headers": stored files with random names are
    ``public, max-age=31536000, immutable`` ("S3 and GCS objects"), but where "some
    ``randomize = false``" they are ``public, max-age=3600`` (``files_cache_expires_seconds``),
    because "a deleted file's name can be given to another file later"; caching.rst
    "Deletion and caches" adds that replacing a file twice gives its first name back.
    docs/settings.rst shows ``kinto.attachment.resources.blog.articles.randomize = false``
    as the way to get chosen names. The plugin does compute ``max-age=3600`` then.

    What happens: ``config/s3.ini`` and ``config/gcs.ini``, the "ready configurations" of
    docs/stores.rst, hard-code ``aws.cache_control`` / ``gcloud.cache_control = public,
    max-age=31536000, immutable``, which "replaces the header of new objects, whatever
    ``randomize`` says". Seen live with ``config/s3.ini`` on moto and
    ``KINTO_ATTACHMENT_RANDOMIZE=false``: ``latest.json`` is stored with ``Cache-Control:
    public, max-age=31536000, immutable``; once its name is given again to other bytes, CDNs
    and browsers keep serving the old bytes at that location for a year (``immutable``:
    browsers do not even revalidate). No warning at start-up.

    Fix: drop the two ``cache_control`` lines from the shipped inis (the plugin's default is
    the same header with random names and the right one otherwise), or warn at start-up when
    ``cache_control`` says ``immutable`` while a policy does not randomize names.
    """
    settings = app_settings(CONFIG / ini)
    settings["attachment.resources.blog.articles.randomize"] = "false"
    parsed = attachment_settings.parse(settings)
    assert parsed.caching.files != IMMUTABLE  # What the plugin itself would send.
    stored = parsed.store.options.cache_control or parsed.caching.files
    assert stored == parsed.caching.files, (
        f"config/{ini}: new objects get {stored!r}, where docs/caching.rst promises "
        f"{parsed.caching.files!r} once names can come back (randomize = false)"
    )


def boots(live):
    return live.output().count("Running kinto ")


def test_gunicorn_memory_backend_never_runs_in_two_workers(tmp_path):
    """docs/production.rst, "What to tune", Workers: "With the memory backend keep one worker
    process: each would have its own data, and its garbage collector would delete the files the
    others store, so ``wsgi.py`` refuses to start in several". ``gunicorn.conf.py`` passes the
    worker count on in ``on_starting`` (``KINTO_PROCESSES``), read once, when the master
    starts.

    What happens: gunicorn adds workers while it runs (``kill -TTIN`` on the master, as its
    documentation says for scaling; gunicorn 27's control socket too). The new worker loads
    ``wsgi.py`` with ``KINTO_PROCESSES=1`` still in its environment and starts a second memory
    backend: seen live, a file just uploaded (``201``) answers ``404`` to 7 of 8 downloads
    that follow, and each worker's records, permissions and tus uploads are its own; its
    collector runs on the shared ``base_path``.

    Fix: refuse the change where it happens, e.g. a ``nworkers_changed`` hook in
    ``gunicorn.conf.py`` that puts ``server.num_workers`` back to 1 (with an error in the log)
    for a memory backend, or make the memory backend hold an exclusive lock (``flock``) on a
    file of ``base_path`` so that a second process refuses to start, whatever started it.
    """
    with running_server(tmp_path, server="gunicorn") as live:
        assert boots(live) == 1, live.output()
        os.kill(live.process.pid, signal.SIGTTIN)  # One worker more, as gunicorn documents.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if "workers refused" in live.output():
                break  # gunicorn.conf.py kept one worker (its error is in the log).
            if live.output().count("Booting worker") >= 2:
                time.sleep(3)  # Time for the new worker to load the app (or to refuse it).
                break
            time.sleep(0.1)
        url = f"{live.url}/buckets/default/collections/notes/records/split/attachment"
        response = requests.post(
            url, files={"attachment": ("hello.txt", b"Hello, Kinto!")}, auth=ALICE,
            timeout=REQUEST_TIMEOUT,
        )  # fmt: skip
        assert response.status_code == 201, response.text
        statuses = []
        for _ in range(20):
            with requests.Session() as session:  # A new connection: any worker may take it.
                statuses.append(
                    session.get(
                        url, auth=ALICE, timeout=REQUEST_TIMEOUT, headers={"Connection": "close"}
                    ).status_code  # fmt: skip
                )
        assert statuses == [200] * 20, (
            f"{boots(live)} memory backends running; downloads of the file just uploaded: "
            f"{statuses}"
        )


def test_every_404_of_the_plugin_has_kintos_404_body(tmp_path):
    """docs/api.rst ("Errors") said every error has Kinto's JSON body with a ``message``: the
    ``404``s (errno 111) have Kinto's own ``404`` body, without ``message``, as Kinto's record
    ``404`` (a client reads both alike): the page says so now, and this holds them to it."""
    with running_server(tmp_path) as live:
        records = f"{live.url}/buckets/default/collections/notes/records"
        for path in ("/buckets/site", "/buckets/site/collections/c"):
            created = requests.put(f"{live.url}{path}", auth=ALICE, timeout=REQUEST_TIMEOUT)
            assert created.status_code == 201, created.text
        answers = {
            "DELETE attachment of a missing record": requests.delete(
                f"{records}/nothere/attachment", auth=ALICE, timeout=REQUEST_TIMEOUT
            ),
            "upload into a missing collection": requests.post(
                f"{live.url}/buckets/site/collections/nope/records/x/attachment",
                files={"attachment": ("a.txt", b"a")},
                auth=ALICE,
                timeout=REQUEST_TIMEOUT,
            ),
            "GET /v1/data/files/{unknown}": requests.get(
                f"{live.url}/data/files/unknown", timeout=REQUEST_TIMEOUT
            ),
            "Kinto's own record 404": requests.get(
                f"{live.url}/buckets/site/collections/c/records/missing",
                auth=ALICE,
                timeout=REQUEST_TIMEOUT,
            ),
        }
        for what, response in answers.items():
            assert response.status_code == 404, (what, response.status_code, response.text)
            body = response.json()
            assert set(body) == {"code", "errno", "error", "details"}, (what, body)
            assert body["errno"] == (110 if what.startswith("Kinto's") else 111), (what, body)
    text = " ".join((DOCS / "api.rst").read_text().split())
    assert "a ``404`` of a missing record, collection, bucket or file (errno 111)" in text


def _gunicorn_conf():
    spec = importlib.util.spec_from_file_location(
        "review_gunicorn_conf", ROOT / "config" / "gunicorn.conf.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gunicorn_sees_the_memory_backend_kinto_uses_by_default(tmp_path, monkeypatch):
    """Found by review (2026-12-05), of that day's fixes.

    ``config/gunicorn.conf.py``'s ``_memory_backend`` reads
    ``kinto.storage_backend`` from the ini and takes its absence for "not memory", but Kinto's
    default storage backend is the memory one (``kinto.DEFAULT_SETTINGS``), which
    ``config/wsgi.py`` checks on the built registry itself.

    Consequence: a configuration that leaves the backend to Kinto's default serves from
    memory, yet ``kill -TTIN`` adds workers (``nworkers_changed`` lets them through, and
    ``wsgi.py``'s guard reads the worker count of the start, ``KINTO_PROCESSES=1``): each
    worker has its own records, and each one's collector deletes the others' files as
    orphans.

    Correct: the backend as Kinto resolves it (its default included): ``_memory_backend()``
    is true, the workers stay one."""
    text = live_config(0, tmp_path / "attachments")
    text, count = re.subn(r"^kinto\.storage_backend = .*$\n", "", text, flags=re.M)
    assert count == 1
    ini = tmp_path / "kinto.ini"
    ini.write_text(text)
    monkeypatch.setenv("KINTO_INI", str(ini))
    monkeypatch.delenv("KINTO_STORAGE_BACKEND", raising=False)
    assert _gunicorn_conf()._memory_backend()
