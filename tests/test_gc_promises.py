"""``kinto-attachment-gc`` run with settings that differ from the servers' where a collection
must honour them (events, URL lifetimes: :mod:`kinto_attachment.state.promises`) refuses; a
``base_path`` that does not exist is refused, never created. Found by a review of operators'
mistakes (2026-12-05): the command went by its own settings, and lost what the servers had
promised to keep."""

import contextlib
import os
import re
import time

import psycopg2
import pytest
import transaction
from kinto.__main__ import main as kinto_cli
from kinto.core.utils import msec_time

from kinto_attachment import adoption, gc
from kinto_attachment import settings as attachment_settings
from kinto_attachment.gc import command
from kinto_attachment.state import outbox, promises
from kinto_attachment.storage import StoreKind

from .conftest import (
    ALICE,
    Kinto,
    build_settings,
    dispose,
    flush,
    make_app,
    own_database,
    s3_settings,
)
from .events.conftest import Receiver
from .support.third_party_store import FolderOptions, WrappedStore
from .support.threads import in_another_thread


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
        "kinto.http_host": "localhost",
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

        refused(kinto.write_ini(tmp_path / "gc.ini"), capsys, promises.SETTINGS["destinations"])
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
                promises.SETTINGS["destinations"],
                promises.SETTINGS["quarantine"],
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
        refused(kinto.write_ini(tmp_path / "gc.ini"), capsys, promises.SETTINGS["destinations"])
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


#: A cron job's ini: no collector thread in this test process.
QUIET = {"kinto.attachment.data_files.gc_interval_seconds": "0"}


def test_a_base_path_another_command_made_is_refused(tmp_path, capsys):
    """Found by review (2026-12-05).

    ``kinto purge-deleted`` (Kinto gives it no ``command``: it loads the application as a
    server does) run with the cron job's ini, whose ``base_path`` does not exist, creates it;
    the collector then found an empty store, claimed the servers' replaced entries and
    reported their files removed from it (theirs left for good). Refused now: an empty store
    while records name files."""
    with servers(tmp_path, **{"kinto.attachment.gc.replaced_grace_seconds": "1"}) as kinto:
        old = kinto.upload(RECORD, b"version one", filename="one.txt").json
        kinto.upload(RECORD, b"version two", filename="two.txt")
        time.sleep(1.2)
        ini = kinto.write_ini(tmp_path / "gc.ini", **QUIET)
        elsewhere = str(tmp_path / "not-mounted")
        ini.write_text(ini.read_text().replace(kinto.base_path, elsewhere))
        kinto_cli(["purge-deleted", "--ini", str(ini), "record", "10"])
        assert os.path.isdir(elsewhere)  # Made by Kinto's command, as a server makes it.

        for dry_run in ([], ["--dry-run"]):
            code = run_gc(ini, *dry_run)
            out, err = capsys.readouterr()
            assert code == 2, out + err
            assert "the store holds no file, while records" in err and out == ""
        # The replaced entry is still the servers' to collect, from their store.
        assert kinto.exists(old["location"])
        assert run_gc(kinto.write_ini(tmp_path / "servers.ini", **QUIET)) == 0
        assert not kinto.exists(old["location"])


def dead_event_blob(kinto):
    """A replaced first version whose ``stored`` event died (webhook down): its blob must
    stay while the dead event holds it. Its location."""
    old = kinto.upload(RECORD, b"version one", filename="one.txt").json
    kinto.upload(RECORD, b"version two", filename="two.txt")
    kinto.registry.attachment_dispatcher.run_once()
    with transaction.manager:
        dead = list(outbox.rows(kinto.registry.storage, outbox.DEAD))
    assert kinto.key_of(old["location"]) in {row.get("key") for row in dead}
    return old["location"]


def test_a_kinto_command_of_the_cron_records_no_promise(tmp_path):
    """Found by review (2026-12-05).

    ``kinto purge-deleted`` loads the application as a server would (Kinto gives it no
    ``command``): recording at start-up wrote the cron job's settings (no events) over the
    servers', and the collector then deleted a blob a dead event holds. Only a process that
    serves records now."""
    with servers(tmp_path, **events_settings()) as kinto:
        location = dead_event_blob(kinto)
        cron_ini = kinto.write_ini(tmp_path / "cron.ini", **QUIET)
        assert run_gc(cron_ini) == 2  # Refused, as it should be...
        kinto_cli(["purge-deleted", "--ini", str(cron_ini), "record", "10"])

        code = run_gc(cron_ini)
        assert (code, kinto.exists(location)) == (2, True), (
            "the GC collected with the cron's settings: the servers' promises were overwritten"
        )


def test_http_host_without_events_is_no_promise(tmp_path, capsys):
    """Found by review (2026-12-05).

    ``http_host`` and ``http_scheme`` only name the events' ``source``: without events, a
    cron job's configuration without them (servers behind a proxy) was refused."""
    extra = {"kinto.http_host": "kinto.example.com", "kinto.http_scheme": "https"}
    with servers(tmp_path, **extra) as kinto:
        code = run_gc(kinto.write_ini(tmp_path / "cron.ini", **QUIET))
        err = capsys.readouterr().err
        assert code == 0, err


def test_a_server_started_before_kinto_migrate_promises_once_it_serves(tmp_path):
    """Found by review (2026-12-05).

    A server started before ``kinto migrate`` made the schema (docker-compose) recorded
    nothing, for as long as it ran: the collector went by a cron job's settings. A server
    records at its first request, and again later should the storage refuse."""
    with own_database("review_premigrate") as url:
        base_path = str(tmp_path / "files")
        settings = build_settings("postgresql", base_path, pg=url, **events_settings())
        app = make_app(settings)  # ApplicationCreated before the schema: nothing recorded.
        kinto = Kinto(app, base_path)
        dispatcher = kinto.registry.attachment_dispatcher
        dispatcher.stop()
        try:
            cron_ini = kinto.write_ini(tmp_path / "cron.ini", **QUIET)
            kinto_cli(["migrate", "--ini", str(cron_ini)])
            kinto.create_collection()
            served(kinto.registry)
            location = dead_event_blob(kinto)
            code = run_gc(cron_ini)
            assert (code, kinto.exists(location)) == (2, True), (
                "a server that serves promised nothing: the GC went by the cron's settings"
            )
        finally:
            dispatcher.stop()
            dispose(kinto)


def test_a_readonly_server_records_nothing(tmp_path):
    """Found by review (2026-12-05).

    A read-only server (``kinto.readonly``: no uploads, no events) replaced the writers'
    record with its own: the collector with its settings deleted a blob a writer's dead
    event holds."""
    with servers(tmp_path, **events_settings()) as writer:
        location = dead_event_blob(writer)
        settings = build_settings(
            "postgresql", writer.base_path, pg=writer.pg_url, **{"kinto.readonly": "true"}
        )
        make_app(settings).get("/v1/")  # A reader serves.
        with transaction.manager:
            found = writer.registry.storage.get(**promises.OBJECT, object_id=promises.OBJECT_ID)
        assert found["settings"]["events"] is True, (
            "a read-only server wrote its settings over the writers'"
        )
        code = run_gc(writer.write_ini(tmp_path / "reader.ini", **QUIET))
        assert (code, writer.exists(location)) == (2, True)


class UnlistedStore(WrappedStore):
    """Another package's store that is no IListableStore (docs/stores.rst: optional; the
    collector then lists nothing, store_check.unreachable lets it be)."""

    @property
    def iter_blobs(self):
        raise AttributeError("iter_blobs")

    @property
    def iter_pending(self):
        raise AttributeError("iter_pending")

    @property
    def abort_pending(self):
        raise AttributeError("abort_pending")


class UnlistedOptions(FolderOptions):
    pass


KIND = StoreKind(
    description="unlisted folder",
    chosen_by="unlisted.folder",
    section="unlisted.",
    table=UnlistedOptions,
    store=(__name__, "UnlistedStore"),
)


def test_a_flush_on_a_store_that_is_not_listable(tmp_path):
    """Found by review (2026-12-05).

    A store without ``iter_blobs`` (``IListableStore`` is optional): the flush's listing of
    the blobs it holds under its lock was a ``500``."""
    settings = build_settings("memory", "unused", **QUIET)
    del settings["kinto.attachment.base_path"]
    settings["kinto.attachment.store"] = __name__
    settings["kinto.attachment.unlisted.folder"] = str(tmp_path / "files")
    kinto = Kinto(make_app(settings), str(tmp_path / "files"))
    kinto.create_collection()
    kinto.upload(RECORD, b"version one", filename="one.txt")
    response = kinto.app.post("/v1/__flush__", expect_errors=True)
    assert response.status_int == 202, response.status
    kinto.app.get("/v1/buckets/blog", headers=ALICE, status=(403, 404))


def test_the_refusal_names_the_settings_of_bucket_events(tmp_path, capsys):
    """Found by review (2026-12-05).

    Events of one bucket only, a cron job's configuration without them: the refusal named
    no setting one can set."""
    bucket_events = {
        **events_settings(),
        "kinto.attachment.resources.blog.events.destinations": "webhook",
    }
    del bucket_events["kinto.attachment.events.destinations"]
    with servers(tmp_path, **bucket_events) as kinto:
        assert run_gc(kinto.write_ini(tmp_path / "cron.ini", **QUIET)) == 2
        err = capsys.readouterr().err
        assert "kinto.attachment.resources.*.events.destinations" in err, err


def served(registry, timeout=10):
    """Once the server recorded its promises (aside, after a request)."""
    deadline = time.monotonic() + timeout
    while not getattr(registry, "attachment_promised", False):
        assert time.monotonic() < deadline, "the server recorded no promise"
        time.sleep(0.05)


@pytest.mark.parametrize("path", ["/v1/__lbheartbeat__", "/v1/__heartbeat__", "/v1/"])
def test_a_first_request_waits_for_no_record(tmp_path, path):
    """Found by review (2026-12-05).

    A server's first request recorded its promises before it was answered: with their row
    locked by another transaction (another node's flush; a database slow to answer), the
    load balancer's heartbeat, Kinto's and a plain read waited for as long. They are
    recorded aside now."""
    with own_database("promises_aside") as url:
        settings = build_settings(
            "postgresql",
            str(tmp_path / "files"),
            pg=url,
            **QUIET,
            **{"kinto.heartbeat_timeout_seconds": "1"},
        )
        first = make_app(settings)
        first.get("/v1/")
        served(first.app.registry)
        second = make_app(settings)  # Another process: it has recorded nothing yet.
        holder = psycopg2.connect(url)
        try:
            with holder.cursor() as cursor:
                cursor.execute(
                    "SELECT id FROM objects WHERE resource_name = %s FOR UPDATE",
                    (promises.OBJECT["resource_name"],),
                )
                assert cursor.fetchall()
            answer = in_another_thread(lambda: second.get(path, expect_errors=True), 4)
        finally:
            holder.rollback()
            holder.close()
        assert answer.status_int in (200, 503)
        served(second.app.registry)  # Once the lock is gone.


def test_a_record_of_another_format_is_refused(tmp_path, capsys):
    """Found by review (2026-12-05).

    Servers that recorded their promises in another format (another version of the plugin)
    promised something the command cannot read: it was let through (nothing compared)."""
    with servers(tmp_path, **events_settings()) as kinto:
        with transaction.manager:
            kinto.registry.storage.update(
                **promises.OBJECT,
                object_id=promises.OBJECT_ID,
                obj={"settings": {"events.destinations": ["webhook"], "events": True}},
            )
        refused(kinto.write_ini(tmp_path / "gc.ini", **events_settings()), capsys, promises.FORMAT)


@pytest.mark.parametrize("expires,code", [("30", 0), ("300", 2)])
def test_signed_downloads_lengthen_the_quarantine_promised(
    expires, code, tmp_path, s3_server, capsys
):
    """Found by review (2026-12-05).

    Servers presigning downloads, a cron job's configuration that does not: for 30 s, both
    keep a deleted file's name 60 s (the least), which was refused all the same (a
    command's quarantine may be as long or longer); for 300 s the command would keep it
    less, and the refusal names the store's settings, not ``redirect_expires`` (no setting
    one can set)."""
    with own_database("promises_s3") as url:
        s3 = s3_settings(s3_server)
        settings = build_settings("postgresql", "unused", pg=url, **QUIET, **s3)
        del settings["kinto.attachment.base_path"]
        server_settings = {
            **settings,
            "kinto.attachment.aws.presigned_downloads": "true",
            "kinto.attachment.aws.presigned_expires": expires,
        }
        kinto = Kinto(make_app(server_settings), None, s3["kinto.attachment.aws.bucket_name"])
        promises.record(kinto.registry)
        ini = tmp_path / "cron.ini"
        ini.write_text(
            "[app:main]\nuse = egg:kinto\n"
            + "".join(
                f"{name} = {value}\n"
                for name, value in settings.items()
                if name.startswith(("kinto.storage", "kinto.permission", "kinto.cache"))
                or name.startswith(("kinto.attachment.aws.", "kinto.userid"))
            )
            + "kinto.includes = kinto_attachment\n"
            + "kinto.attachment.base_url = https://files.example.com/\n"
        )
        assert run_gc(ini) == code
        if code:
            assert "aws.presigned_expires" in capsys.readouterr().err


def test_a_refusal_names_settings_that_exist():
    """Found by review (2026-12-05).

    The refusal of a configuration that keeps names taken for less time than the servers
    named ``gcloud.signed_downloads_expires``, which does not exist: set as told, it stopped
    the servers at start-up (``unknown setting``). Every store setting it names parses."""
    message = promises.SETTINGS["quarantine"]
    named = re.findall(r"\bkinto\.attachment\.((?:aws|gcloud)\.[a-z_]+)", message)
    assert len(named) == 2, message
    for name in named:
        store = name.split(".")[0]
        attachment_settings.parse(
            {f"attachment.{store}.bucket_name": "b", f"attachment.{name}": "300"}
        )
