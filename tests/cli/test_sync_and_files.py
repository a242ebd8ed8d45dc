"""The ``kinto-attachment`` command line against files that change, folders synced under
several names, Unicode forms, permissions and terminals, and a hostile server: a review
(2026-12-05), its findings and the attacks the command withstood. They run against a live
Kinto (the module's ``server``) or a hostile one (:class:`Hostile`, a real HTTP server in a
thread)."""

import hashlib
import os
import subprocess
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from kinto_attachment.cli import sync as cli_sync
from kinto_attachment.cli.names import record_id_of

from ..support.cli_support import Hostile
from .test_cli import (  # noqa: F401 (fixtures: a live server, a collection of it, run)
    BUCKET,
    collection,
    environment,
    record,
    run,
    server,
)
from .test_cli_hostile import RECORDS, against, attachment, kinto


COMMAND = str(Path(sys.executable).parent / "kinto-attachment")


def sha256(content):
    return hashlib.sha256(content).hexdigest()


@pytest.fixture
def hostile(monkeypatch, capsys, tmp_path):
    """``hostile(fake, *args)``: the command against a :class:`Hostile` server's b/c."""
    return against(monkeypatch, capsys, tmp_path)


def test_a_file_emptied_after_its_hash_is_not_attached_empty(
    server,  # noqa: F811 (the fixture imported above)
    collection,  # noqa: F811
    tmp_path,
    run,  # noqa: F811
    monkeypatch,
):
    """Found by review (2026-12-05).

    the check that the bytes sent are the file hashed before
    (``uploads.Expected``) runs only as bytes are read; a file emptied between its hash and
    its upload (an editor saving by truncate-then-write, a log rotated by ``truncate``) has
    ``size`` 0, ``Reader.read`` reads nothing, and nothing is checked.

    Consequence: the multipart upload goes, the server replaces the record's attachment by an
    empty file, and the record of a ``sync`` gets a ``synced_from.sha256`` that is not its
    file (the documented promise: "refused before its last byte goes (the server writes
    nothing) ... nor a ``synced_from`` that is not its file").

    Expected: refused before anything is sent (the sha256 of an empty file is not the one
    planned): the record keeps its attachment."""
    site = tmp_path / "site"
    site.mkdir()
    path = site / "report.txt"
    path.write_bytes(b"version one\n")
    env = environment(server, collection, tmp_path)
    first = run(env, "sync", str(site))
    assert first.returncode == 0, first.stderr
    record_id = record_id_of("report.txt")
    before = record(server, collection, record_id)["attachment"]["hash"]

    path.write_bytes(b"version two, being saved\n")
    planned = cli_sync.plan

    def plan_then_truncate(*args, **kwargs):
        result = planned(*args, **kwargs)
        with open(path, "r+b") as f:  # An editor's save: truncate, then write (not yet).
            f.truncate(0)
        return result

    monkeypatch.setattr(cli_sync, "plan", plan_then_truncate)
    second = run(env, "sync", str(site))
    stored = record(server, collection, record_id)
    assert second.returncode == 1, second.stdout
    assert stored["attachment"]["hash"] == before, "the record got an empty file"
    assert stored["synced_from"]["sha256"] == stored["attachment"]["hash"]


def test_sync_as_an_empty_name_is_refused_not_the_folders_own_name(
    server,  # noqa: F811
    collection,  # noqa: F811
    tmp_path,
    run,  # noqa: F811
):
    """Found by review (2026-12-05).

    ``sync FOLDER --as ""`` (a script's ``--as "$NAME"`` with the variable unset)
    silently takes the folder's own name (``args.folder_name or basename(...)`` in
    ``main.mirror``); the command refuses ``--id ""`` for that very reason
    (``arguments._record_id``: "a mistake, not a request for the default").

    Consequence: with ``--delete``, the sync takes itself for another folder, the one whose
    sync used that default name, and deletes that folder's records whose files it does not
    hold: another folder's published files are gone.

    Expected: ``--as ""`` is a wrong command line (exit code 2), nothing deleted."""
    env = environment(server, collection, tmp_path)
    published = tmp_path / "a" / "site"
    published.mkdir(parents=True)
    (published / "index.html").write_bytes(b"<h1>the site</h1>\n")
    first = run(env, "sync", str(published))
    assert first.returncode == 0, first.stderr

    staging = tmp_path / "b" / "site"  # Meant to be synced as "$NAME" (unset): "site-b".
    staging.mkdir(parents=True)
    (staging / "draft.html").write_bytes(b"<h1>draft</h1>\n")
    second = run(env, "sync", str(staging), "--as", "", "--delete")
    assert record(server, collection, record_id_of("index.html")) is not None, second.stdout
    assert second.returncode == 2


def test_upload_of_an_unchanged_file_gives_the_record_the_data_and_permissions(
    server,  # noqa: F811
    collection,  # noqa: F811
    tmp_path,
    run,  # noqa: F811
):
    """Found by review (2026-12-05).

    ``upload FILE --data ... --permissions ...`` of a file whose record already
    has its sha256 prints ``unchanged`` and exits ``0`` (``main._upload`` skips it before
    looking at ``--data``/``--permissions``): what was asked for is silently not done.

    Consequence: an operator who re-runs the documented command to fix a record's data, or
    to withdraw a read permission (``--permissions '{"read": []}'``), is told it worked;
    the record keeps the old data and stays readable by whom it was.

    Expected: the record gets the data and permissions (a ``PATCH``, the file need not be
    sent again), or the command fails and says ``--force`` is needed (exit code 1)."""
    env = environment(server, collection, tmp_path)
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello\n")
    first = run(env, "upload", str(path), "--id", "greeting", "--data", '{"lang": "en"}')
    assert first.returncode == 0, first.stderr

    again = run(env, "upload", str(path), "--id", "greeting", "--data", '{"lang": "fr"}')
    stored = record(server, collection, "greeting")
    assert again.returncode == 0, again.stderr
    assert "updated hello.txt (greeting), its file unchanged" in again.stdout
    assert stored["lang"] == "fr"
    assert stored["attachment"]["hash"] == sha256(b"hello\n")
    unchanged = run(env, "upload", str(path), "--id", "greeting")
    assert "unchanged hello.txt (greeting)" in unchanged.stdout


def test_sync_delete_keeps_the_record_of_a_file_there_in_another_unicode_form(tmp_path, hostile):
    """Found by review (2026-12-05).

    ``sync.plan`` links a file named in another Unicode form to the record its
    sync gave it only when the file's own record id has no record; when it has one (the
    file uploaded by ``upload`` from a Mac, whose name is decomposed), the folder's own record
    of that file is taken for gone (``sync.there`` looks for its path in its own form only)
    and ``--delete`` deletes it.

    Consequence: the record that the first sync gave ``café.txt`` is deleted while
    ``café.txt`` is in the folder; the documentation says "a name is the same in any Unicode
    form ... is one file, synced onto the record that the first sync gave it" and that a
    record is deleted only when "nothing at all is at that path in the folder any more".

    Expected: that record is not deleted (``kept``/``unchanged``), exit code 0 or 1 but no
    ``DELETE``."""
    composed = unicodedata.normalize("NFC", "café.txt")
    decomposed = unicodedata.normalize("NFD", "café.txt")
    content = b"a cafe menu\n"
    digest = sha256(content)
    site = tmp_path / "site"
    site.mkdir()
    (site / decomposed).write_bytes(content)  # As the folder came from a Mac.
    records = [
        {  # What the first sync gave the file (on Linux: composed).
            "id": record_id_of(composed),
            "last_modified": 10,
            "attachment": attachment(composed, len(content), digest),
            "synced_from": {"folder": "site", "path": composed, "sha256": digest},
        },
        {  # ``upload café.txt`` on the Mac.
            "id": record_id_of(decomposed),
            "last_modified": 11,
            "attachment": attachment(decomposed, len(content), digest),
        },
    ]

    def accept_writes(request):
        if request.method in ("DELETE", "PATCH"):
            return 200, {"Content-Type": "application/json"}, b'{"data": {}}'
        return None

    with Hostile(kinto(records, content, extra=accept_writes)) as fake:
        result = hostile(fake, "sync", str(site), "--delete")
        deleted = [unquote(urlsplit(r.path).path) for r in fake.requests if r.method == "DELETE"]
    assert f"{RECORDS}/{record_id_of(composed)}" not in deleted, result.stdout


def test_a_download_that_replaces_a_file_keeps_its_permissions(tmp_path, hostile):
    """Found by review (2026-12-05).

    a download that replaces a file (its record changed on the server) gives the
    name to a new part file created ``0o666`` less the umask (``Folder.part``/``publish``):
    the mode the user gave the file is lost.

    Consequence: a file the user made private (``chmod 600 secrets.env``: credentials,
    keys, personal data) becomes readable by every user of the machine (``0644``) at the
    next download of a new version; an executable script loses its ``x``.

    Expected: the new file gets the permission bits of the file it replaces (as ``sed -i``,
    editors and ``rsync`` keep them), ``0600`` here."""
    folder = tmp_path / "out"

    def version(content, modified):
        digest = sha256(content)
        return [
            {
                "id": "s",
                "last_modified": modified,
                "attachment": attachment("secrets.env", len(content), digest),
            }
        ]

    with Hostile(kinto(version(b"TOKEN=one\n", 1), b"TOKEN=one\n")) as fake:
        first = hostile(fake, "download", "--folder", str(folder))
    assert first.returncode == 0, first.stderr
    (folder / "secrets.env").chmod(0o600)

    with Hostile(kinto(version(b"TOKEN=two\n", 2), b"TOKEN=two\n")) as fake:
        second = hostile(fake, "download", "--folder", str(folder))
    assert second.returncode == 0, second.stderr
    assert (folder / "secrets.env").read_bytes() == b"TOKEN=two\n"
    mode = (folder / "secrets.env").stat().st_mode & 0o777
    assert mode == 0o600, f"the private file is now {oct(mode)}"


def test_a_name_the_terminal_cannot_encode_is_no_traceback(tmp_path):
    """Found by review (2026-12-05).

    result lines are printed with ``print`` (``progress.Bars.print``) to a
    stdout whose encoding may not hold every name (a Latin-1 locale, ``LANG=de_DE``
    ISO-8859-1, or ``PYTHONIOENCODING``); a file name from the server such as ``日本語.txt``
    raises ``UnicodeEncodeError``, which ``main`` does not catch.

    Consequence: a Python traceback, and the run stops at that record: the records listed
    after it are not downloaded (a ``sync`` stops the same way between its uploads and its
    deletions).

    Expected: the name printed with what cannot be encoded escaped (``errors=
    "backslashreplace"``), every record downloaded, exit code 0."""
    records = [
        {"id": "a", "attachment": attachment("日本語.txt")},
        {"id": "b", "attachment": attachment("after.txt")},
    ]
    folder = tmp_path / "out"
    with Hostile(kinto(records)) as fake:
        env = {
            **os.environ,
            "KINTO_SERVER": f"{fake.origin}/v1",
            "KINTO_AUTH": "alice:secret",
            "KINTO_BUCKET": "b",
            "KINTO_COLLECTION": "c",
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "PYTHONIOENCODING": "iso8859-1",
        }
        result = subprocess.run(
            [COMMAND, "download", "--folder", str(folder)],
            env=env,
            capture_output=True,
            timeout=60,
        )
    stderr = result.stderr.decode(errors="replace")
    assert "Traceback" not in stderr, stderr
    assert (folder / "after.txt").exists(), stderr
    assert result.returncode == 0, stderr


def test_a_delete_redirected_elsewhere_is_not_followed(tmp_path, hostile):
    """Held against a review (2026-12-05).

    ``rm`` against a server that answers the ``DELETE`` with ``307`` to another
    host: the write follows no redirect, so neither the credentials nor the deletion reach
    the other host; the command fails with a message (exit code 1), no traceback."""
    with Hostile(lambda request: (200, {}, b"{}")) as elsewhere:
        target = f"{elsewhere.origin}{RECORDS}/greeting"

        def redirect_writes(request):
            if request.method == "DELETE":
                return 307, {"Location": target}, b""
            return None

        records = [{"id": "greeting", "last_modified": 5, "attachment": attachment("hello.txt")}]
        with Hostile(kinto(records, extra=redirect_writes)) as fake:
            result = hostile(fake, "rm", "--id", "greeting")
        assert result.returncode == 1
        assert "307" in result.stderr and "Traceback" not in result.stderr
        assert elsewhere.requests == []


def test_forged_marks_with_paths_out_of_the_folder_are_nobodys(tmp_path, hostile):
    """Held against a review (2026-12-05).

    A listing whose records carry this folder's mark with a path out of it
    (``../x``, absolute, a hidden part), each with the id derived from that path: none is
    taken for this folder's, so ``sync --delete`` deletes none of them (nor looks for their
    files out of the folder)."""
    site = tmp_path / "site"
    site.mkdir()
    (tmp_path / "outside.txt").write_bytes(b"x")
    forged = ["../outside.txt", "/etc/hostname", ".git/config", "a/../../outside.txt"]
    records = [
        {
            "id": record_id_of(path),
            "last_modified": 1,
            "attachment": attachment("x.txt"),
            "synced_from": {"folder": "site", "path": path, "sha256": attachment("x")["hash"]},
        }
        for path in forged
    ]
    with Hostile(kinto(records)) as fake:
        result = hostile(fake, "sync", str(site), "--delete")
        methods = {r.method for r in fake.requests}
    assert result.returncode == 0, result.stderr
    assert methods == {"GET"}, result.stdout


def test_sync_delete_deletes_nothing_after_a_failed_upload(tmp_path, hostile):
    """Found by review (2026-12-05).

    A file renamed in the folder: its old name's record is gone from the folder, its new
    name's upload is refused (a ``413``, a ``412``, the file changing meanwhile). ``sync
    --delete`` deleted the old record all the same: the file's content was then on the
    server under no name. As ``rsync --delete`` after an error, a sync whose uploads failed
    deletes nothing (each gone record said, exit code 1); the next run, once its uploads
    succeed, does."""
    content = b"the report, renamed\n"
    digest = sha256(content)
    site = tmp_path / "site"
    site.mkdir()
    (site / "report-final.txt").write_bytes(content)
    records = [
        {
            "id": record_id_of("report-draft.txt"),
            "last_modified": 10,
            "attachment": attachment("report-draft.txt", len(content), digest),
            "synced_from": {"folder": "site", "path": "report-draft.txt", "sha256": digest},
        }
    ]

    def refuse_uploads(request):
        if request.method == "POST" and urlsplit(request.path).path.endswith("/attachment"):
            body = b'{"code": 413, "errno": 113, "message": "too large"}'
            return 413, {"Content-Type": "application/json"}, body
        if request.method == "DELETE":
            return 200, {"Content-Type": "application/json"}, b'{"data": {}}'
        return None

    with Hostile(kinto(records, content, extra=refuse_uploads)) as fake:
        result = hostile(fake, "sync", str(site), "--delete")
        methods = [r.method for r in fake.requests]
    assert "DELETE" not in methods, result.stdout
    assert result.returncode == 1
    assert "not deleted: it holds a file of the folder that is not on" in result.stderr


def test_sync_delete_deletes_nothing_when_a_renamed_file_was_not_uploaded(tmp_path, hostile):
    """Found by review (2026-12-05), of that day's fixes.

    ``cli.main.mirror`` now keeps the records of gone files when an UPLOAD of the run
    failed ("a file renamed, its new name's upload refused: its only copy"), but only then:
    ``unsent`` is ``_upload``'s result. A file whose new name's record is a conflict
    (another folder's sync marked it) or diverged is never uploaded, is reported (exit 1),
    and the old name's record is deleted all the same.

    Consequence: the file renamed ``report-draft.txt`` -> ``report-final.txt`` (whose
    record another folder synced) is, after ``sync --delete``, on the server under no name:
    the data loss the fix was for, by another path.

    Correct: any file of the folder left without its record by this run (upload failed,
    conflict, diverged) blocks the deletions, as ``rsync --delete`` after an error: no
    ``DELETE`` is sent, exit code 1."""
    content = b"the report, renamed\n"
    digest = hashlib.sha256(content).hexdigest()
    site = tmp_path / "site"
    site.mkdir()
    (site / "report-final.txt").write_bytes(content)
    other = b"another folder's report\n"
    other_digest = hashlib.sha256(other).hexdigest()
    records = [
        {
            "id": record_id_of("report-draft.txt"),
            "last_modified": 10,
            "attachment": attachment("report-draft.txt", len(content), digest),
            "synced_from": {"folder": "site", "path": "report-draft.txt", "sha256": digest},
        },
        {
            "id": record_id_of("report-final.txt"),
            "last_modified": 11,
            "attachment": attachment("report-final.txt", len(other), other_digest),
            "synced_from": {
                "folder": "drafts",
                "path": "report-final.txt",
                "sha256": other_digest,
            },
        },
    ]

    def accept_deletes(request):
        if request.method == "DELETE":
            return 200, {"Content-Type": "application/json"}, b'{"data": {}}'
        return None

    with Hostile(kinto(records, content, extra=accept_deletes)) as fake:
        result = hostile(fake, "sync", str(site), "--delete")
        methods = [r.method for r in fake.requests]
    assert result.returncode == 1, result.stderr
    assert "DELETE" not in methods, result.stdout + result.stderr


def test_sync_delete_still_deletes_when_a_file_conflicts_with_another_folder(tmp_path, hostile):
    """Found by review (2026-12-05), of that day's fixes.

    ``cli.main.mirror`` now sets ``unsent`` whenever the plan has a conflict or a
    diverged file (``unsent |= bool(plan.conflicts or plan.diverged)``), and ``unsent`` stops
    every delete of ``--delete``. A conflict is persistent: two folders synced into one
    collection that both hold a ``readme.txt`` (of different contents) conflict at every run,
    and nothing the user can do but renaming a file ends it (the message even advises
    ``--as`` the other folder's name, which would sync the wrong folder).

    Consequence: from then on ``sync --delete`` of either folder never deletes anything
    (exit 1 every run, "run again once it is": it never is): records of files removed from
    the folder stay on the server for good, however unrelated to the conflict.

    Correct: a gone record is kept only when it may be the only copy of a file this run left
    without its record, i.e. its attachment's hash is the sha256 of a conflicting, diverged or
    unsent file; ``old.txt``'s record (content no file of the folder has) is deleted."""
    mine, theirs, removed = b"site's readme\n", b"drafts' readme\n", b"an old page\n"
    site = tmp_path / "site"
    site.mkdir()
    (site / "readme.txt").write_bytes(mine)
    records = [
        {
            "id": record_id_of("readme.txt"),
            "last_modified": 10,
            "attachment": attachment("readme.txt", len(theirs), sha256(theirs)),
            "synced_from": {"folder": "drafts", "path": "readme.txt", "sha256": sha256(theirs)},
        },
        {
            "id": record_id_of("old.txt"),
            "last_modified": 11,
            "attachment": attachment("old.txt", len(removed), sha256(removed)),
            "synced_from": {"folder": "site", "path": "old.txt", "sha256": sha256(removed)},
        },
    ]

    def accept_deletes(request):
        if request.method == "DELETE":
            return 200, {"Content-Type": "application/json"}, b'{"data": {}}'
        return None

    with Hostile(kinto(records, mine, extra=accept_deletes)) as fake:
        result = hostile(fake, "sync", str(site), "--delete")
        deleted = [urlsplit(r.path).path for r in fake.requests if r.method == "DELETE"]
    assert any(path.endswith("/" + record_id_of("old.txt")) for path in deleted), (
        result.stdout + result.stderr
    )
