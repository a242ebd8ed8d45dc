"""``kinto-attachment-gc`` run with settings that differ from the servers' where a collection
must honour them (events, URL lifetimes: :mod:`kinto_attachment.state.promises`) refuses; a
``base_path`` that does not exist is refused, never created. Found by a review of operators'
mistakes (2026-12-05): the command went by its own settings, and lost what the servers had
promised to keep."""

import contextlib
import os
import time

import pytest
import transaction
from kinto.core.utils import msec_time

from kinto_attachment import adoption, gc
from kinto_attachment.gc import command
from kinto_attachment.state import outbox, promises

from .conftest import Kinto, build_settings, flush, make_app, own_database
from .events.conftest import Receiver


pytestmark = pytest.mark.postgresql

URL_SECRET = "a-test-secret-of-enough-length"
WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
RECORD = "/v1/buckets/blog/collections/articles/records/r1"


@contextlib.contextmanager
def servers(tmp_path, **extra):
    """A server app on a database of its own (dropped after), files under tmp_path/files."""
    with own_database("review_operator") as url:
        base_path = str(tmp_path / "files")
        settings = build_settings("postgresql", base_path, pg=url, **extra)
        app = make_app(settings)
        kinto = Kinto(app, base_path)
        dispatcher = getattr(kinto.registry, "attachment_dispatcher", None)
        if dispatcher is not None:
            dispatcher.stop()
        flush(app)
        kinto.create_collection()
        # As ``kinto migrate`` leaves it (the adoption marker went with the flush).
        kinto.registry.attachment_adopted = False
        adoption.adopt(kinto.registry)
        promises.record(kinto.registry)  # As a server does when it starts (flushed above).
        kinto.pg_url = url
        try:
            yield kinto
        finally:
            if dispatcher is not None:
                dispatcher.stop()


def run_gc(ini, *args):
    try:
        return command.main(["--ini", str(ini), *args])
    except SystemExit as exit_:
        return exit_.code


def events_settings(**extra):
    """Events on, to a webhook that is down (nothing listens on port 1)."""
    settings = {
        "kinto.attachment.events.destinations": "webhook",
        "kinto.attachment.events.webhook.url": "http://127.0.0.1:1/hook",
        "kinto.attachment.events.webhook.secret": WEBHOOK_SECRET,
        "kinto.attachment.events.url_secret": URL_SECRET,
        "kinto.attachment.events.retry_seconds": "0",
        "kinto.attachment.events.timeout_seconds": "1",
        "kinto.attachment.events.max_attempts": "1",
    }
    settings.update(extra)
    return settings


def refused(ini, capsys, *settings):
    """The command refuses, naming ``settings``."""
    assert run_gc(ini) == 2
    err = capsys.readouterr().err
    assert "does not configure what the servers promise" in err, err
    for name in settings:
        assert f"  {name}: the servers'" in err, err


def test_a_blob_a_dead_event_holds_is_kept(tmp_path, capsys):
    """The webhook was down: the first version's ``stored`` event died, and a dead event
    keeps its blob until it is retried or purged (docs/events.rst). The operator's cron ini
    reads the servers' database and files but names no destination (the servers have theirs
    from their environment): the command deleted the blob (its own settings said no event
    holds anything). It refuses now; given the servers' settings, it keeps the blob."""
    with servers(tmp_path, **events_settings()) as kinto:
        old = kinto.upload(RECORD, b"version one", filename="one.txt").json
        kinto.upload(RECORD, b"version two", filename="two.txt")
        kinto.registry.attachment_dispatcher.run_once()  # Webhook down: both events dead.
        with transaction.manager:
            dead = list(outbox.rows(kinto.registry.storage, outbox.DEAD))
        assert kinto.key_of(old["location"]) in {row.get("key") for row in dead}

        refused(kinto.write_ini(tmp_path / "gc.ini"), capsys, "events.destinations")
        assert kinto.exists(old["location"])
        assert run_gc(kinto.write_ini(tmp_path / "gc.ini", **events_settings())) == 0
        assert kinto.exists(old["location"]), "deleted while its dead event still holds it"


def test_a_name_stays_taken_while_an_event_url_names_it(tmp_path, capsys):
    """``randomize = false``: once a replaced file is deleted, its name stays taken until the
    URLs that may name it have expired (an event's fetch URL: a day). Deleted by a command
    without the servers' events settings, the name was kept a minute only: the next upload
    of that name was what the event's URL served. The command refuses; with the servers'
    settings, the name outlives the servers' next collection."""
    receiver = Receiver()
    settings = events_settings(
        **{
            "kinto.attachment.events.webhook.url": f"http://127.0.0.1:{receiver.port}/hook",
            "kinto.attachment.events.fetch_grace_seconds": "0",
            "kinto.attachment.randomize": "false",
            "kinto.attachment.gc.replaced_grace_seconds": "1",
        }
    )
    try:
        with servers(tmp_path, **settings) as kinto:
            first = kinto.upload(RECORD, b"version one", filename="report.txt").json
            kinto.registry.attachment_dispatcher.run_once()
            [event] = receiver.events()
            fetch = event["data"]["url"]
            fetch = fetch[fetch.index("/v1/") :]
            kinto.upload(RECORD, b"version two", filename="other.txt")
            kinto.registry.attachment_dispatcher.run_once()
            time.sleep(1.2)

            refused(
                kinto.write_ini(tmp_path / "gc.ini"),
                capsys,
                "events.destinations",
                "events.url_expires_seconds",
            )
            assert kinto.exists(first["location"])
            assert run_gc(kinto.write_ini(tmp_path / "gc.ini", **settings)) == 0
            assert not kinto.exists(first["location"])  # Replaced and past its grace.

            # A minute and a second later (the URL is valid for a day), the servers' collector.
            gc.collect(kinto.registry, now=msec_time() + 61_000, orphans=False)
            other = RECORD.replace("r1", "someone-else")
            kinto.upload(other, b"someone else's file", filename="report.txt")
            response = kinto.app.get(fetch, expect_errors=True)
            assert response.body != b"someone else's file"
    finally:
        receiver.close()


def test_data_files_expire_with_their_deleted_event(tmp_path, capsys):
    """An expired ``/data/files`` entry is told to the processing services
    (``org.kinto.attachment.deleted``): a command without the servers' destinations
    expired it silently. It refuses; with the servers' settings, the event is recorded."""
    with servers(tmp_path, **events_settings()) as kinto:
        kinto.app.post(
            "/v1/data/files?id=f&ttl=1", b"data", extra_environ={"REMOTE_ADDR": "127.0.0.1"}
        )
        time.sleep(1.2)
        refused(kinto.write_ini(tmp_path / "gc.ini"), capsys, "events.destinations")
        assert run_gc(kinto.write_ini(tmp_path / "gc.ini", **events_settings())) == 0
        assert "Expired data files (removed): 1" in capsys.readouterr().out
        with transaction.manager:
            rows = list(outbox.rows(kinto.registry.storage))
        told = [(r["event"]["type"], r["event"]["subject"]) for r in rows]
        assert ("org.kinto.attachment.deleted", "/data/files/f") in told, told


def test_a_base_path_that_does_not_exist_is_refused(tmp_path, capsys):
    """The command's ``base_path`` does not exist (a typo; the volume not mounted on the cron
    job's machine): refused, exit code 2, the folder not created, nothing claimed. It was
    created, the servers' replaced entries claimed and their files "deleted" from it, and the
    command said so, exit code 0."""
    with servers(tmp_path, **{"kinto.attachment.gc.replaced_grace_seconds": "1"}) as kinto:
        old = kinto.upload(RECORD, b"version one", filename="one.txt").json
        kinto.upload(RECORD, b"version two", filename="two.txt")
        time.sleep(1.2)
        ini = kinto.write_ini(tmp_path / "gc.ini")
        typo = str(tmp_path / "file")
        ini.write_text(ini.read_text().replace(kinto.base_path, typo))

        code = run_gc(ini)
        out, err = capsys.readouterr()
        assert (code, os.path.exists(typo)) == (2, False), out + err
        assert "cannot be listed" in err
        assert kinto.exists(old["location"])
        # The replaced entry is still the servers' to collect.
        assert run_gc(kinto.write_ini(tmp_path / "gc.ini")) == 0
        assert not kinto.exists(old["location"])
