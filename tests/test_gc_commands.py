"""The operator commands (``kinto-attachment-gc``, ``kinto-attachment-events``) against an
operator's mistakes and a store's failures: what they delete, what they report, how they
refuse. From a review (2026-12-05): the defects it found, and an attack the code withstood."""

import time

import pytest

from kinto_attachment.events import command as events_command
from kinto_attachment.gc import command
from kinto_attachment.state import data_file_entries, instance

from .conftest import Kinto, build_settings, make_app, own_database, s3_client, s3_settings
from .support.tcpproxy import TcpProxy
from .test_gc_promises import run_gc, servers


LOCAL = {"REMOTE_ADDR": "127.0.0.1"}


def run(main, argv):
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


BROKEN_INIS = {
    # A configuration named as many operators name theirs: plaster picks a loader by the
    # extension, and there is none for ``.conf``.
    "conf-extension": ("kinto.conf", "[app:main]\nuse = egg:kinto\n"),
    # Not an ini at all (an env file given by mistake).
    "no-section-header": ("gc.ini", "KINTO_STORAGE_URL=postgresql://127.0.0.1/kinto\n"),
    # A logging section left half written (``[loggers]`` without its handlers/formatters).
    "half-logging": ("gc.ini", "[app:main]\nuse = egg:kinto\n[loggers]\nkeys = root\n"),
    # The servers' log file, in a folder that does not exist on the cron's machine.
    "log-folder-missing": (
        "gc.ini",
        "[app:main]\nuse = egg:kinto\n"
        "[loggers]\nkeys = root\n[handlers]\nkeys = file\n[formatters]\nkeys = plain\n"
        "[logger_root]\nlevel = INFO\nhandlers = file\n"
        "[handler_file]\nclass = FileHandler\nargs = ('/nonexistent/kinto/gc.log',)\n"
        "formatter = plain\n[formatter_plain]\nformat = %%(message)s\n",
    ),
}


@pytest.mark.parametrize("main", [command.main, events_command.main], ids=["gc", "events"])
@pytest.mark.parametrize("mistake", sorted(BROKEN_INIS))
def test_an_ini_whose_logging_or_loader_fails_is_refused_without_a_traceback(
    tmp_path, capsys, main, mistake
):
    """Found by review (2026-12-05).

    ``shared.registry_of`` calls ``pyramid.paster.setup_logging(ini)`` before (and
    outside) the ``try`` that turns a configuration that does not load into the UNLOADABLE
    refusal. A ``--ini`` with an extension plaster has no loader for (``kinto.conf``), a file
    that is not an ini, a half-written ``[loggers]`` section or a log file in a folder missing
    on the cron's machine end the command in a Python traceback (plaster's LoaderNotFound,
    configparser's MissingSectionHeaderError, KeyError, FileNotFoundError) and exit code 1,
    which the commands reserve for a backend lost *while collecting*. Correct: the same
    one-line refusal as any configuration that does not load, exit code 2."""
    name, text = BROKEN_INIS[mistake]
    ini = tmp_path / name
    ini.write_text(text)
    args = ["--ini", str(ini)] + (["list"] if main is events_command.main else [])

    code = run(main, args)  # A traceback escapes here.

    err = capsys.readouterr().err
    assert code == 2 and "refused" in err, err


def test_an_expired_data_file_keeps_the_servers_replaced_grace_under_the_command(tmp_path, capsys):
    """Found by review (2026-12-05).

    ``gc._collect_data_files`` hands an expired entry's blob to
    ``lifecycle.unreferenced``, which reads ``gc.replaced_grace_seconds`` from the *command's*
    configuration. That setting is not among the promises the servers record
    (``state.promises.promised``), so a cron ini that says ``0`` (as ``config/kinto.ini``
    does, the file an operator copies and points at PostgreSQL) deletes the blob at once,
    while the servers promise their downloads (and the ``307`` signed URLs they handed out
    before the expiry) ``gc.replaced_grace_seconds`` (600) more (docs/data-files.rst,
    docs/consistency.rst). Correct: record the grace with the other promises and refuse
    (UNPROMISED) a command whose grace is shorter, or defer the blob by the servers' grace."""
    with servers(tmp_path, **{"kinto.attachment.gc.replaced_grace_seconds": "600"}) as kinto:
        kinto.app.post("/v1/data/files?id=report&ttl=1", b"report", extra_environ=LOCAL)
        entry = data_file_entries.get(kinto.registry.storage, "report")
        time.sleep(0.05)  # Expired (a ttl of 1 ms).
        ini = kinto.write_ini(
            tmp_path / "gc.ini", **{"kinto.attachment.gc.replaced_grace_seconds": "0"}
        )

        code = run_gc(ini)

        out = capsys.readouterr().out
        still_there = kinto.registry.attachment_store.exists(entry["key"])
        assert code == 2 and still_there, (
            "the expired file's blob was deleted at once, inside the servers' 600 s grace:\n" + out
        )


@pytest.mark.postgresql
def test_a_failed_abort_of_an_incomplete_s3_upload_is_reported_failed(
    tmp_path, s3_server, capsys, monkeypatch
):
    """Found by review (2026-12-05).

    the orphan pass aborts abandoned S3 multipart uploads with
    ``store.abort_pending`` → ``S3Store.abort_upload``, which swallows every failure (it
    logs a warning and remembers the upload for ``_retry_aborts``, a retry that only a later
    ``stage()`` of the same process starts: never, in a command). ``gc.orphans.collect``
    appends the upload to ``report.aborted`` before the call and never learns it failed: the
    command prints ``Incomplete multipart uploads (removed): 1`` and exits ``0`` while the
    upload (and its parts, billed by S3) is still there, e.g. with credentials lacking
    ``s3:AbortMultipartUpload`` or S3 unreachable for a moment. An orphan whose delete fails
    makes the same command exit 1 (STORE_FAILED). Correct: the command's abort raises
    (``StorageUnavailable``), so it reports the failure and exits 1; or it reports only the
    uploads actually aborted."""
    host, port = s3_server.rsplit(":", 1)
    proxy = TcpProxy(host.split("//")[1], int(port))
    endpoint = f"http://127.0.0.1:{proxy.port}"
    try:
        with own_database("review_abort") as url:
            settings = build_settings("postgresql", None, pg=url)
            del settings["kinto.attachment.base_path"]
            settings.update(s3_settings(endpoint))
            settings["kinto.attachment.gc.orphans_grace_seconds"] = "1"
            bucket = settings["kinto.attachment.aws.bucket_name"]
            kinto = Kinto(make_app(settings), None, bucket)
            kinto.create_collection()
            kinto.upload(kinto.record_url("r1"), b"attached")
            client = s3_client(s3_server)
            key = f"blog/articles/{instance.tagged_name(instance.tag(kinto.registry))}.bin"
            upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            time.sleep(2.1)  # Past the grace of a second.
            ini = tmp_path / "gc.ini"
            ini.write_text(
                "[app:main]\nuse = egg:kinto\n"
                + "".join(
                    f"kinto.{kind}_backend = kinto.core.{kind}.postgresql\n"
                    f"kinto.{kind}_url = {url}\n"
                    for kind in ("storage", "permission", "cache")
                )
                + "kinto.userid_hmac_secret = test-secret\n"
                + "kinto.includes = kinto_attachment\n"
                + "kinto.attachment.base_url = https://files.example.com/\n"
                + "".join(
                    f"{name} = {value}\n"
                    for name, value in settings.items()
                    if name.startswith("kinto.attachment.aws.")
                    or name.startswith("kinto.attachment.gc.")
                )
            )
            abandoned = instance.Sorting.abandoned

            def outage_before_the_abort(self, pending):
                proxy.down()  # S3 unreachable (or the abort refused) once listed.
                yield from abandoned(self, pending)

            monkeypatch.setattr(instance.Sorting, "abandoned", outage_before_the_abort)

            code = run_gc(ini)

            out = capsys.readouterr().out
            proxy.up()
            uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            still_pending = upload_id in {u["UploadId"] for u in uploads}
            assert still_pending  # The abort did fail.
            assert code == 1 and "Incomplete multipart uploads (removed): 1" not in out, (
                f"exit code {code}, yet the upload is still there:\n{out}"
            )
    finally:
        proxy.close()


@pytest.mark.parametrize("main", [command.main, events_command.main], ids=["gc", "events"])
def test_a_relative_base_path_is_refused_from_any_working_directory(
    tmp_path, capsys, monkeypatch, main
):
    """Held against a review (2026-12-05).

    A cron job started in another working directory than the servers' would resolve
    a relative ``base_path`` to another folder (an empty one: every record's file missing, or
    another instance's). The setting is refused when the application loads: exit code 2, a
    one-line refusal naming it, nothing read."""
    elsewhere = tmp_path / "cron-cwd"
    (elsewhere / "var" / "attachments").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    ini = tmp_path / "gc.ini"
    ini.write_text(
        "[app:main]\nuse = egg:kinto\n"
        "kinto.storage_backend = kinto.core.storage.postgresql\n"
        "kinto.storage_url = postgresql://postgres@127.0.0.1:1/nowhere\n"
        "kinto.userid_hmac_secret = test-secret\n"
        "kinto.includes = kinto_attachment\n"
        "kinto.attachment.base_path = var/attachments\n"
    )
    args = ["--ini", str(ini)] + (["list"] if main is events_command.main else [])

    assert run(main, args) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "base_path" in err and "relative" in err, err


@pytest.mark.postgresql
def test_commands_that_write_refuse_a_read_only_nodes_configuration(tmp_path, capsys):
    """Found by review (2026-12-05).

    A read-only node (``kinto.readonly``, often on a replica) writes nothing: its servers
    start no collector nor dispatcher. Its configuration given to a command that writes (a
    cron job copied from a reader's files) is refused, naming why; what only reads (``gc
    --dry-run``, ``events list``) runs."""
    from .conftest import postgresql_ini

    with own_database("readonly_commands") as url:
        make_app(build_settings("postgresql", str(tmp_path / "files"), pg=url))  # Schema.
        (tmp_path / "files").mkdir(exist_ok=True)
        ini = tmp_path / "reader.ini"
        ini.write_text(postgresql_ini(url, tmp_path / "files") + "kinto.readonly = true\n")
        for main, argv in [
            (command.main, []),
            (events_command.main, ["retry"]),
            (events_command.main, ["purge", "--all"]),
        ]:
            assert run(main, ["--ini", str(ini), *argv]) == 2, argv
            assert "read-only node (kinto.readonly)" in capsys.readouterr().err
        assert run(command.main, ["--ini", str(ini), "--dry-run"]) == 0
        assert run(events_command.main, ["--ini", str(ini), "list"]) == 0
