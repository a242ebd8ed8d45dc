"""The ``kinto-attachment`` command against a hostile server (:class:`.cli_support.Hostile`):
nothing is written outside ``--folder`` whatever ids, file names and sizes it lists; a bad
record is reported and skipped, the others downloaded; planted links are never written
through; a download never holds more than the record's size; the credentials go to the
origin of ``--server`` only, and never from ``https`` to ``http``."""

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
import types
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import urllib3
from pyramid.authentication import extract_http_basic_credentials

from kinto_attachment.cli import downloads, remote, uploads
from kinto_attachment.cli import files as cli_files
from kinto_attachment.cli import folder as folder_module
from kinto_attachment.cli.names import DOWNLOADED, PARTS, aside_of, record_id_of
from kinto_attachment.cli.origins import parse_auth

from ..support.cli_support import Hostile, certificate, run_command


CONTENT = b"what every attachment of the hostile server holds\n"
DIGEST = hashlib.sha256(CONTENT).hexdigest()
SIZE = len(CONTENT)
RECORDS = "/v1/buckets/b/collections/c/records"
#: The first page the command asks for: pages of a bounded number of records.
LISTING = f"{RECORDS}?_limit={remote.PAGE_RECORDS}"
PASSWORD = "s3cret-password"
CREDENTIALS = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
MiB = 1024 * 1024


def attachment(filename, size=SIZE, digest=DIGEST):
    return {"filename": filename, "size": size, "hash": digest, "mimetype": "text/plain"}


def kinto(records, content=CONTENT, extra=None):
    """A fake Kinto listing ``records``: each one answered at its URL, every attachment
    (whatever its URL) with ``content``; ``extra(request)`` answers first when it answers."""

    def answer(request):
        if extra is not None and (answered := extra(request)) is not None:
            return answered
        path = urlsplit(request.path).path
        if path == RECORDS:
            return (
                200,
                {"Content-Type": "application/json"},
                json.dumps({"data": records}).encode(),
            )
        if path.endswith("/attachment"):
            return 200, {"Content-Type": "application/octet-stream"}, content
        if path.startswith(RECORDS + "/"):
            wanted = unquote(path[len(RECORDS) + 1 :])
            for record in records:
                if isinstance(record, dict) and record.get("id") == wanted:
                    body = json.dumps({"data": record}).encode()
                    return 200, {"Content-Type": "application/json"}, body
        return 404, {"Content-Type": "application/json"}, b'{"code": 404, "errno": 110}'

    return answer


def against(monkeypatch, capsys, tmp_path):
    """``run(server, *args, auth=..., server_url=...)``: the command against ``server`` (a
    :class:`Hostile`), on its collection b/c, as alice unless ``auth`` says otherwise."""

    def run_against(server, *args, auth=f"alice:{PASSWORD}", server_url=None):
        env = {
            "KINTO_SERVER": server_url or f"{server.origin}/v1",
            "KINTO_AUTH": auth,
            "KINTO_BUCKET": "b",
            "KINTO_COLLECTION": "c",
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
        }
        return run_command(monkeypatch, capsys, env, *args)

    return run_against


@pytest.fixture
def run(monkeypatch, capsys, tmp_path):
    """:func:`against`."""
    return against(monkeypatch, capsys, tmp_path)


def tree(root):
    """``{relative path: bytes or 'link -> target'}`` of everything under ``root``, but the
    record of what the downloads wrote (tested in test_cli.py)."""
    found = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder, name)
            relative = str(path.relative_to(root))
            if relative == DOWNLOADED:
                continue
            if path.is_symlink():
                found[relative] = f"link -> {os.readlink(path)}"
            elif path.is_file():
                found[relative] = path.read_bytes()
    return found


def test_download_never_writes_outside_the_folder(tmp_path, run):
    """Ids and file names that are paths (``..``, absolute, with separators), empty names,
    the same name twice: every file lands inside ``--folder``, under a name of its own."""
    base = tmp_path / "deep" / "er"
    base.mkdir(parents=True)
    folder = base / "out"
    records = [
        {"id": "../../escaped-by-id", "attachment": attachment("")},
        {"id": str(tmp_path / "absolute-id"), "attachment": attachment(".")},
        {"id": "dots", "attachment": attachment("..")},
        {"id": "sneaky", "attachment": attachment("../../escaped-by-name.txt")},
        {"id": "rooted", "attachment": attachment(str(tmp_path / "rooted.txt"))},
        {"id": "windows", "attachment": attachment("..\\..\\escaped-windows.txt")},
        {"id": "twin-1", "attachment": attachment("same.txt")},
        {"id": "twin-2", "attachment": attachment("same.txt")},
        {"id": "device", "attachment": attachment("CON.txt")},
        {"id": "reserved", "attachment": attachment(PARTS)},
    ]
    before = tree(tmp_path)

    with Hostile(kinto(records)) as server:
        result = run(server, "download", "--folder", str(folder))

    assert result.returncode == 0, result.stderr
    new = set(tree(tmp_path)) - set(before)
    assert [path for path in new if not path.startswith("deep/er/out")] == []
    written = tree(folder)
    assert set(written.values()) == {CONTENT}
    assert sorted(written) == sorted(
        [
            "_._.._escaped-by-id",
            "_",
            "__",
            "_._.._escaped-by-name.txt",
            str(tmp_path / "rooted.txt").replace("/", "_"),
            "_._.._escaped-windows.txt",
            "same.txt",
            "twin-2-same.txt",
            "_CON.txt",
            "_" + PARTS[1:],
        ]
    )
    assert result.stdout.count("downloaded ") == len(records)


def test_a_bad_record_is_reported_and_the_others_downloaded(tmp_path, run):
    """A NUL in a file name, an invalid size or sha256, a record that is no record: each is
    reported (or renamed), the others are downloaded, the exit code says some failed."""
    folder = tmp_path / "out"
    records = [
        {"id": "nul", "attachment": attachment("in\x00side.txt")},
        {"id": "escape", "attachment": attachment("\x1b[31mred\x1b[0m.txt")},
        {"id": "no-size", "attachment": attachment("a.txt", size="16")},
        {"id": "negative", "attachment": attachment("b.txt", size=-1)},
        {"id": "no-hash", "attachment": attachment("c.txt", digest="../../x")},
        {"id": "text", "attachment": "not an object"},
        {"id": 42, "attachment": attachment("number.txt")},
        "not a record",
        {"id": "none", "attachment": None},
        {"id": "good", "attachment": attachment("good.txt")},
    ]

    with Hostile(kinto(records)) as server:
        result = run(server, "download", "--folder", str(folder))

    assert result.returncode == 1
    assert tree(folder) == {
        "in_side.txt": CONTENT,
        "_[31mred_[0m.txt": CONTENT,
        "good.txt": CONTENT,
    }
    errors = result.stderr.splitlines()
    assert "kinto-attachment: no-size: the record's attachment has no valid size" in errors
    assert "kinto-attachment: negative: the record's attachment has no valid size" in errors
    assert "kinto-attachment: no-hash: the record's attachment has no valid sha256" in errors
    assert "kinto-attachment: text: the record's attachment is no object" in errors
    assert "kinto-attachment: the server: listed 'not a record' as a record" in errors
    assert any(e.startswith("kinto-attachment: the server: listed {'id': 42") for e in errors)
    assert len(errors) == 6, result.stderr
    assert "skipped none: no attachment" in result.stdout
    assert "\x1b" not in result.stdout + result.stderr
    assert "downloaded _[31mred_[0m.txt (escape)" in result.stdout


def test_planted_links_are_never_written_through(tmp_path, run):
    """Links planted where the download writes (the part file, the final name, a subfolder)
    are replaced or refused: the files they point to are untouched."""
    folder, outside = tmp_path / "out", tmp_path / "outside"
    (folder / PARTS).mkdir(parents=True)
    outside.mkdir()
    victims = {name: outside / name for name in ("part", "old-part", "final", "dir")}
    for victim in victims.values():
        if victim.name != "dir":
            victim.write_bytes(b"precious\n")
    (folder / PARTS / f"{DIGEST}.part").symlink_to(victims["part"])
    (folder / "a.txt.part").symlink_to(victims["old-part"])  # Where older versions wrote.
    (folder / "a.txt").symlink_to(victims["final"])
    victims["dir"].mkdir()
    (folder / "sub").symlink_to(victims["dir"], target_is_directory=True)
    path = "sub/b.txt"
    records = [
        {"id": "a", "attachment": attachment("a.txt")},
        {
            "id": record_id_of(path),
            "attachment": attachment("b.txt"),
            "synced_from": {"folder": "site", "path": path},
        },
    ]

    with Hostile(kinto(records)) as server:
        result = run(server, "download", "--folder", str(folder))

    assert result.returncode == 1
    assert "kinto-attachment: sub/b.txt: sub: not a folder (a link?): not followed" in (
        result.stderr
    )
    assert tree(outside) == {
        "part": b"precious\n",
        "old-part": b"precious\n",
        "final": b"precious\n",
    }
    assert not (folder / "a.txt").is_symlink()
    assert (folder / "a.txt").read_bytes() == CONTENT
    assert not (folder / PARTS).exists()  # Emptied, then removed.


def test_a_linked_parts_folder_is_refused(tmp_path, run):
    folder, outside = tmp_path / "out", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / PARTS).symlink_to(outside, target_is_directory=True)
    records = [{"id": "a", "attachment": attachment("a.txt")}]

    with Hostile(kinto(records)) as server:
        result = run(server, "download", "--folder", str(folder))

    assert result.returncode == 1
    assert f"{PARTS}: not a folder (a link?): not followed" in result.stderr
    assert tree(outside) == {}
    assert not (folder / "a.txt").exists()


def test_a_download_never_exceeds_the_announced_size(tmp_path, run):
    """A record announcing 16 bytes whose server streams without end: the command stops at
    16 bytes (what it wrote never held more), fails the sha256 and keeps nothing."""
    folder = tmp_path / "out"
    largest = [0]

    def endless():
        for _ in range(64):  # 64 MiB at most, so that a client that reads on ends too.
            for part in folder.rglob("*.part"):
                with contextlib.suppress(FileNotFoundError):
                    largest[0] = max(largest[0], part.stat().st_size)
            yield b"x" * MiB

    def stream(request):
        if request.path.endswith("/attachment"):
            return 200, {"Content-Type": "application/octet-stream"}, endless()
        return None

    records = [{"id": "endless", "attachment": attachment("endless.bin", size=16)}]
    with Hostile(kinto(records, extra=stream)) as server:
        result = run(server, "download", "--folder", str(folder))

    assert largest[0] <= 16
    assert result.returncode == 1
    assert "endless.bin: the downloaded file does not have the record's sha256" in result.stderr
    assert tree(folder) == {}


def test_a_download_that_sent_too_little_is_resumed(tmp_path, run):
    """A body shorter than the record's size is kept, and continued with ``Range`` by the
    next run; a ``206`` for another range than asked is refused."""
    folder = tmp_path / "out"
    answers = [
        (200, {"Content-Length": "10"}, CONTENT[:10]),
        (206, {"Content-Range": f"bytes 3-{len(CONTENT) - 1}/{len(CONTENT)}"}, CONTENT[3:]),
        (206, {"Content-Range": f"bytes 10-{len(CONTENT) - 1}/{len(CONTENT)}"}, CONTENT[10:]),
    ]

    def partial(request):
        return answers.pop(0) if request.path.endswith("/attachment") else None

    records = [{"id": "short", "attachment": attachment("short.txt")}]
    with Hostile(kinto(records, extra=partial)) as server:
        first = run(server, "download", "--folder", str(folder))
        second = run(server, "download", "--folder", str(folder))
        third = run(server, "download", "--folder", str(folder))
        ranges = [r.headers.get("Range") for r in server.requests if "attachment" in r.path]

    assert first.returncode == 1
    assert f"sent 10 of the record's {len(CONTENT)} bytes" in first.stderr
    assert second.returncode == 1 and "the server sent another range" in second.stderr
    assert third.returncode == 0, third.stderr
    assert tree(folder) == {"short.txt": CONTENT}
    assert ranges == [None, "bytes=10-", "bytes=10-"]


@pytest.fixture
def tls(tmp_path, monkeypatch):
    """A certificate for ``127.0.0.1`` that the command trusts."""
    files = certificate(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", files[0])
    return files


def spy():
    """A plain HTTP server that keeps what it receives and accepts every tus chunk."""

    def answer(request):
        offset = int(request.headers.get("Upload-Offset", 0)) + len(request.body)
        return 204, {"Upload-Offset": str(offset), "Tus-Resumable": "1.0.0"}, b""

    return Hostile(answer)


def tus_server(location, file_digest):
    """A fake Kinto that creates tus uploads at ``location`` and then lists the record with
    the file's sha256."""

    def answer(request):
        if request.method == "POST" and request.path.endswith("/attachment/uploads"):
            return 201, {"Location": location, "Tus-Resumable": "1.0.0"}, b""
        if request.method == "GET":
            record = {"id": "r", "attachment": attachment("big.bin", digest=file_digest)}
            return 200, {"Content-Type": "application/json"}, json.dumps({"data": record}).encode()
        return 404, {}, b""

    return answer


def big_file(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(9 * MiB))  # Over 8 MiB: a tus upload.
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_tus_location_from_https_to_http_is_refused(tmp_path, tls, run):
    """``--server https://…`` and a tus creation answering ``Location: http://…``: no byte
    of the file nor the credentials go there; the command says why."""
    path, digest = big_file(tmp_path)
    with spy() as plain:
        answer = tus_server(f"{plain.origin}/files/1", digest)
        with Hostile(answer, tls=tls) as server:
            result = run(server, "upload", str(path), "--record", "r", "--force")
        assert plain.requests == []
    assert result.returncode == 1
    assert "refused to go from https to http" in result.stderr
    assert f"{plain.origin}/files/1" in result.stderr


def test_a_tus_location_elsewhere_gets_no_credentials(tmp_path, tls, run):
    """A tus ``Location`` on another origin (here another port) is followed without the
    credentials; the server's own origin gets them."""
    path, digest = big_file(tmp_path)

    def accept(request):
        offset = int(request.headers.get("Upload-Offset", 0)) + len(request.body)
        return 204, {"Upload-Offset": str(offset), "Tus-Resumable": "1.0.0"}, b""

    with Hostile(accept, tls=tls) as elsewhere:
        with Hostile(tus_server(f"{elsewhere.origin}/files/1", digest), tls=tls) as server:
            result = run(server, "upload", str(path), "--record", "r", "--force")
            own = server.requests
        received = elsewhere.requests

    assert result.returncode == 0, result.stderr
    assert [r.method for r in received] == ["PATCH", "PATCH"]
    assert sum(len(r.body) for r in received) == 9 * MiB
    assert all("Authorization" not in r.headers for r in received)
    assert all(r.headers.get("Authorization") == CREDENTIALS for r in own)


def test_redirects_and_pages_elsewhere_get_no_credentials(tmp_path, tls, run):
    """A download redirected to another origin, a ``Next-Page`` on another origin: followed
    without the credentials. A redirect from https to http is refused."""

    def cdn(request):
        return (200, {}, CONTENT) if request.path.startswith("/files/") else None

    with spy() as plain, Hostile(kinto([], extra=cdn), tls=tls) as elsewhere:
        records = [
            {"id": "cdn", "attachment": attachment("cdn.txt")},
            {"id": "down", "attachment": attachment("down.txt")},
        ]

        def redirect(request):
            if request.path.endswith("/cdn/attachment"):
                return 302, {"Location": f"{elsewhere.origin}/files/cdn.txt"}, b""
            if request.path.endswith("/down/attachment"):
                return 302, {"Location": f"{plain.origin}/files/down.txt"}, b""
            if urlsplit(request.path).path == RECORDS:
                body = json.dumps({"data": records}).encode()
                following = f"{elsewhere.origin}{RECORDS}?page=2"
                return 200, {"Content-Type": "application/json", "Next-Page": following}, body
            return None

        with Hostile(kinto(records, extra=redirect), tls=tls) as server:
            result = run(server, "download", "--folder", str(tmp_path / "out"))
            own = server.requests
        assert plain.requests == []
        received = elsewhere.requests

    assert result.returncode == 1
    assert "refused to go from https to http" in result.stderr
    assert tree(tmp_path / "out") == {"cdn.txt": CONTENT}
    assert sorted(urlsplit(r.path).path for r in received) == ["/files/cdn.txt", RECORDS]
    assert all("Authorization" not in r.headers for r in received)
    assert all(r.headers.get("Authorization") == CREDENTIALS for r in own)


def test_malformed_answers_are_failures_not_tracebacks(tmp_path, run):
    """No JSON, pages that go round, a tus server that does not move on: one line each."""
    file = tmp_path / "big.bin"
    file.write_bytes(b"\0" * (9 * MiB))

    def answer(request):
        path = urlsplit(request.path).path
        if request.method == "POST":
            return 201, {"Location": "/v1/files/1"}, b""
        if request.method == "PATCH":
            return 204, {"Upload-Offset": request.headers["Upload-Offset"]}, b""
        if path == RECORDS:
            return 200, {"Next-Page": request.path}, b'{"data": []}'
        return 200, {}, b"<html>not JSON</html>"

    with Hostile(answer) as server:
        listing = run(server, "download", "--folder", str(tmp_path / "out"))
        record = run(server, "rm", "--id", "r")
        stuck = run(server, "upload", str(file), "--id", "r", "--force")

    assert listing.returncode == 1 and "the server's pages go round" in listing.stderr
    assert record.returncode == 1 and "no JSON object" in record.stderr
    assert stuck.returncode == 1 and "the server answered Upload-Offset '0'" in stuck.stderr


def test_sync_deletes_and_marks_only_with_if_match(tmp_path, run):
    """``--delete`` sends ``If-Match`` (a record listed without ``last_modified`` is never
    deleted: the precondition cannot hold); a forged mark (copied to another id, or naming
    a path no folder holds) is nobody's; what cannot be synced is reported."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "same.txt").write_bytes(CONTENT)
    os.mkfifo(site / "pipe")
    (site / os.fsdecode(b"\xff.txt")).write_bytes(b"not UTF-8")
    (site / "mem").symlink_to("/proc/self/mem")  # A file whose reading fails.
    records = [
        {"id": record_id_of("same.txt"), "attachment": attachment("same.txt"), "last_modified": 7},
        {"id": record_id_of("gone.txt"), "synced_from": {"folder": "site", "path": "gone.txt"}},
        {"id": "copied", "synced_from": {"folder": "site", "path": "forged.txt"}},
        {"id": record_id_of("../up"), "synced_from": {"folder": "site", "path": "../up"}},
        {"id": record_id_of("mem"), "attachment": attachment("mem")},
    ]

    def refuse(request):
        if request.method in ("PATCH", "DELETE"):
            return (
                412,
                {"Content-Type": "application/json"},
                b'{"message": "Resource was modified meanwhile"}',
            )
        return None

    with Hostile(kinto(records, extra=refuse)) as server:
        result = run(server, "sync", str(site), "--delete", "--follow-symlinks")
        writes = [(r.method, r.path, r.headers.get("If-Match")) for r in server.requests[1:]]

    assert result.returncode == 1
    assert writes == [
        ("PATCH", f"{RECORDS}/{record_id_of('same.txt')}", '"7"'),
        ("DELETE", f"{RECORDS}/{record_id_of('gone.txt')}", '"unknown"'),
    ]
    assert result.stdout.splitlines() == [
        "skipped mem: Input/output error",
        "skipped pipe: not a regular file",
        "skipped \\udcff.txt: its name is not UTF-8",
    ]
    assert result.stderr.splitlines() == [
        "kinto-attachment: same.txt: 412 Resource was modified meanwhile "
        f"(PATCH {server.origin}{RECORDS}/{record_id_of('same.txt')})",
        "kinto-attachment: gone.txt: 412 Resource was modified meanwhile "
        f"(DELETE {server.origin}{RECORDS}/{record_id_of('gone.txt')})",
    ]


def test_parts_left_by_other_runs(tmp_path, run):
    """A part that holds the whole file is renamed without a request; one too long, or hard
    linked elsewhere, is replaced; a final name hard linked elsewhere, the record's file, is
    left as it is (never written through)."""
    folder, outside = tmp_path / "out", tmp_path / "outside"
    (folder / PARTS).mkdir(parents=True)
    outside.mkdir()
    (folder / PARTS / f"{DIGEST}.part").write_bytes(CONTENT)
    other = hashlib.sha256(b"other").hexdigest()
    (folder / PARTS / f"{other}.part").write_bytes(b"other and more")
    (outside / "hard").write_bytes(CONTENT)
    os.link(outside / "hard", folder / "linked.txt")
    records = [
        {"id": "whole", "attachment": attachment("whole.txt")},
        {"id": "long", "attachment": attachment("long.txt", size=5, digest=other)},
        {"id": "linked", "attachment": attachment("linked.txt")},
    ]

    def other_content(request):
        return (200, {}, b"other") if request.path.endswith("/long/attachment") else None

    with Hostile(kinto(records, extra=other_content)) as server:
        result = run(server, "download", "--folder", str(folder))
        fetched = [r.path for r in server.requests if r.path.endswith("/attachment")]

    assert result.returncode == 0, result.stderr
    assert fetched == [f"{RECORDS}/long/attachment"]
    assert tree(folder) == {"whole.txt": CONTENT, "long.txt": b"other", "linked.txt": CONTENT}
    assert (outside / "hard").read_bytes() == CONTENT


def test_a_body_cut_short_is_kept_to_resume(tmp_path, run):
    def cut(request):
        if request.path.endswith("/attachment"):
            return 200, {"Content-Length": str(SIZE), "Connection": "close"}, CONTENT[:10]
        return None

    with Hostile(kinto([{"id": "cut", "attachment": attachment("cut.txt")}], extra=cut)) as s:
        result = run(s, "download", "--folder", str(tmp_path / "out"))

    assert result.returncode == 1
    assert "kinto-attachment: cut.txt: GET " in result.stderr and "IncompleteRead" in result.stderr
    assert tree(tmp_path / "out") == {f"{PARTS}/{DIGEST}.part": CONTENT[:10]}


def test_names_and_ids_against_a_listing_with_junk(tmp_path, run):
    """A name found only among download's names, an id that is no record, a record answered
    under another id, a page that is no list, an error that is no JSON."""
    records = ["junk", {"id": "h", "attachment": attachment("hello.txt")}]

    def odd(request):
        path = urlsplit(request.path).path
        if path.endswith("/records/liar"):
            return 200, {"Content-Type": "application/json"}, b'{"data": {"id": "other"}}'
        if path.endswith("/records/broken"):
            return 500, {"Content-Type": "text/html"}, b"<h1>oops</h1>"
        if path == "/v1/buckets/b/collections/empty/records":
            return 200, {"Content-Type": "application/json"}, b'{"data": {"not": "a list"}}'
        return None

    with Hostile(kinto(records, extra=odd)) as server:
        found = run(server, "download", "hello.txt", "--id", "nope", "--folder", str(tmp_path))
        liar = run(server, "rm", "--id", "liar")
        broken = run(server, "rm", "--id", "broken")
        empty = run(server, "-c", "empty", "download", "--folder", str(tmp_path))
        bad_server = run(server, "--server", "ftp://127.0.0.1/v1", "rm", "x")

    assert found.returncode == 1
    assert found.stderr == "kinto-attachment: nope: no such record\n"
    assert (tmp_path / "hello.txt").read_bytes() == CONTENT
    assert liar.returncode == 1 and "the server answered another record" in liar.stderr
    assert broken.returncode == 1
    assert f"500 Internal Server Error (GET {server.origin}{RECORDS}/broken)" in broken.stderr
    assert empty.returncode == 1 and "the server listed no records" in empty.stderr
    assert bad_server.returncode == 2  # A wrong command line.
    assert (
        bad_server.stderr
        == "kinto-attachment: --server: not an http(s) URL: 'ftp://127.0.0.1/v1'\n"
    )


def test_tus_answers_that_cannot_be_used(tmp_path, run):
    """A creation without ``Location``; an upload completed whose record has no attachment."""
    file = tmp_path / "big.bin"
    file.write_bytes(b"\0" * (9 * MiB))

    def nowhere(request):
        return 201, {}, b""

    def empty_record(request):
        if request.method == "POST":
            return 201, {"Location": "/v1/files/1"}, b""
        if request.method == "PATCH":
            offset = int(request.headers["Upload-Offset"]) + len(request.body)
            return 204, {"Upload-Offset": str(offset)}, b""
        return 200, {"Content-Type": "application/json"}, b'{"data": {"id": "r"}}'

    with Hostile(nowhere) as server:
        first = run(server, "upload", str(file), "--id", "r", "--force")
    with Hostile(empty_record) as server:
        second = run(server, "upload", str(file), "--id", "r", "--force")

    assert first.returncode == 1 and "created an upload without a Location" in first.stderr
    assert second.returncode == 1
    assert "the upload completed, but the record has no attachment" in second.stderr


def test_command_lines_refused_before_any_request(tmp_path, run):
    odd = tmp_path / os.fsdecode(b"\xfe.bin")
    odd.write_bytes(b"x")
    with Hostile(kinto([])) as server:
        not_json = run(server, "upload", str(odd), "--data", "{")
        not_utf8 = run(server, "upload", str(odd))
        no_name = run(server, "sync", "/", "--dry-run")
        assert server.requests == []
    assert not_json.returncode == 2 and "not JSON" in not_json.stderr
    assert not_utf8.returncode == 2 and "not a UTF-8 name" in not_utf8.stderr
    assert no_name.returncode == 2 and "has no name: give it one with --as NAME" in no_name.stderr


@pytest.mark.parametrize("rate", ["inf", "1e400K", "nan", "0", "-1M", "0.5"])
def test_a_limit_rate_that_is_no_rate_is_a_usage_error(tmp_path, run, rate):
    """Infinite (argparse lets ``OverflowError`` out), not a number, or under a byte a
    second (which would mean no limit): a wrong command line, before any request."""
    with Hostile(kinto([])) as server:
        result = run(server, f"--limit-rate={rate}", "download", "--folder", str(tmp_path))
        assert server.requests == []
    assert result.returncode == 2
    assert "not a rate of at least 1 byte a second" in result.stderr


@pytest.mark.parametrize(
    "arguments,said",
    [
        (["--retries", "-1", "rm", "x"], "not a whole number of 0 or more: '-1'"),
        (["--retries", "three", "rm", "x"], "not a whole number of 0 or more: 'three'"),
        (["upload", "hello.txt", "--id", ""], "an empty record id"),
        (["rm", "--id", ""], "an empty record id"),
        (["download", "--id", "", "--folder", "."], "an empty record id"),
    ],
    ids=["negative-retries", "no-number", "upload-id", "rm-id", "download-id"],
)
def test_option_values_that_are_mistakes_are_usage_errors(tmp_path, run, arguments, said):
    """Found by review (2026-12-05): ``--retries -1`` was taken (as no retry, unsaid), and an
    empty ``--id`` (``--id "$ID"``, the variable unset) as no ``--id`` at all: upload then
    named the record after the file."""
    (tmp_path / "hello.txt").write_bytes(b"hello")
    with Hostile(kinto([])) as server:
        result = run(server, *[a.replace("hello.txt", str(tmp_path / a)) for a in arguments])
        assert server.requests == []
    assert result.returncode == 2 and said in result.stderr, result.stderr


def test_a_server_url_without_the_api_prefix_says_so(tmp_path, run):
    """Found by review (2026-12-05): ``--server http://host`` (no ``/v1``) failed with Kinto's
    redirection to ``/v1/...`` and nothing more; a query in it went into every URL made
    after it (``/v1?x=1/buckets/...``): refused."""
    file = tmp_path / "hello.txt"
    file.write_bytes(b"hello")

    def redirect(request):
        if not request.path.startswith("/v1/"):
            return 307, {"Location": "/v1" + request.path}, b""
        return None

    with Hostile(kinto([], extra=redirect)) as server:
        bare = run(server, "upload", str(file), server_url=server.origin)
        query = run(server, "rm", "x", server_url=f"{server.origin}/v1?x=1")
    assert bare.returncode == 1
    assert "is --server the URL of Kinto's API, such as http://localhost:8888/v1?" in bare.stderr
    assert query.returncode == 2 and "without ? nor #" in query.stderr


def test_a_part_another_download_writes_is_left_alone(tmp_path, run):
    """Two downloads into one folder at once: the second does not append to the first's
    part (it fails, and the first goes on)."""
    folder = tmp_path / "out"
    (folder / PARTS).mkdir(parents=True)
    part = folder / PARTS / f"{DIGEST}.part"
    part.write_bytes(CONTENT[:5])
    with (
        open(part, "rb") as held,
        Hostile(kinto([{"id": "a", "attachment": attachment("a.txt")}])) as server,
    ):
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run(server, "download", "--folder", str(folder))
    assert result.returncode == 1
    assert f"{PARTS}/{DIGEST}.part is being written by another download" in result.stderr
    assert part.read_bytes() == CONTENT[:5]


def test_a_record_id_that_is_no_utf8_fails_alone(tmp_path, run):
    """JSON may hold ``"\\ud800"``: an id that has no URL is that record's failure; the
    others are downloaded."""
    records = [
        {"id": "\ud800evil", "attachment": attachment("evil.txt")},
        {"id": "fine", "attachment": attachment("fine.txt")},
    ]
    with Hostile(kinto(records)) as server:
        result = run(server, "download", "--folder", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "kinto-attachment: evil.txt: not a record id (not UTF-8)" in result.stderr
    assert tree(tmp_path / "out") == {"fine.txt": CONTENT}


@pytest.mark.parametrize("command", ["download", "rm"])
def test_a_name_that_is_no_utf8_is_no_such_record(tmp_path, run, command):
    """A NAME of bytes that are no UTF-8 (surrogate-escaped by Python) names no record."""
    with Hostile(kinto([])) as server:
        result = run(server, command, os.fsdecode(b"\xff"), "--id", os.fsdecode(b"\xfe"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "kinto-attachment: \\udcff: no such file or record",
        "kinto-attachment: \\udcfe: no such record",
    ]


def test_a_file_name_that_is_no_utf8_is_sent_with_replacement_characters(
    tmp_path, run, monkeypatch
):
    """``upload`` refuses a name that is no UTF-8 unless given its record with ``--id``; then
    the name the server is told (multipart ``filename``, tus ``filename`` metadata) has
    U+FFFD for the bytes that are no UTF-8."""
    from kinto_attachment.cli import uploads

    odd = tmp_path / os.fsdecode(b"\xff.txt")
    odd.write_bytes(b"hello")
    with Hostile(kinto([])) as server:
        multipart = run(server, "upload", str(odd), "--id", "r")
        monkeypatch.setattr(uploads, "CHUNK_SIZE", 4)  # A tus upload for a small file.
        tus = run(server, "upload", str(odd), "--id", "r")
        posted, created = (r for r in server.requests if r.method == "POST")
    assert multipart.returncode == 1 and tus.returncode == 1
    assert "Traceback" not in multipart.stderr + tus.stderr
    assert 'filename="\ufffd.txt"'.encode() in posted.body
    metadata = dict(item.split(" ") for item in created.headers["Upload-Metadata"].split(","))
    assert base64.b64decode(metadata["filename"]).decode() == "\ufffd.txt"


@pytest.mark.parametrize("status", [200, 500])
def test_deeply_nested_json_is_no_answer(tmp_path, run, status):
    """JSON nested deeper than the parser recurses is no JSON object (a listing) and no
    message (an error): one line, no traceback."""

    def answer(request):
        return status, {"Content-Type": "application/json"}, b"[" * 200_000

    with Hostile(answer) as server:
        result = run(server, "download", "--folder", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"kinto-attachment: the server's answer is no JSON object ({server.origin}{LISTING})"
        if status == 200
        else f"kinto-attachment: 500 Internal Server Error (GET {server.origin}{LISTING})"
    ]


@pytest.mark.parametrize("header", ["Next-Page", "Location"])
def test_a_url_from_the_server_that_urljoin_refuses_is_a_failure(tmp_path, run, header):
    """``http://[::1/x`` in a ``Next-Page`` or a redirect's ``Location``: urljoin() raises
    before the URL can be checked; it is refused like any URL that is none."""

    def answer(request):
        if header == "Location":
            return 302, {"Location": "http://[::1/x"}, b""
        return 200, {"Next-Page": "http://[::1/x"}, b'{"data": []}'

    with Hostile(answer) as server:
        result = run(server, "download", "--folder", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr == (
        f"kinto-attachment: {server.origin}{LISTING}: not an http(s) URL: 'http://[::1/x'\n"
    )


@pytest.mark.parametrize("held", ["null", "[]", '{"k": 1}', "[" * 100_000])
def test_a_state_file_that_holds_no_urls_keeps_nothing(tmp_path, run, monkeypatch, held):
    """A state file that is no object of URLs is as if empty: the upload is created anew,
    and its URL kept."""
    from kinto_attachment.cli import uploads

    monkeypatch.setattr(uploads, "CHUNK_SIZE", 4)  # A tus upload for a small file.
    state = tmp_path / "uploads.json"
    state.write_text(held)
    file = tmp_path / "f.bin"
    file.write_bytes(b"0123456789")

    def created(request):
        if request.method == "POST":
            return 201, {"Location": "/v1/files/1"}, b""
        if request.method == "PATCH":
            return 503, {}, b""  # The upload stops here: its URL stays in the state file.
        return 404, {}, b""

    with Hostile(created) as server:
        result = run(server, "--retries", "0", "--state", str(state), "upload", str(file))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert list(json.loads(state.read_text()).values()) == [f"{server.origin}/v1/files/1"]


def test_download_never_writes_nor_replaces_a_hidden_file(tmp_path, run):
    """Hidden names (a mark ``.git/config``: with ``core.fsmonitor`` set, the next ``git
    status`` would run the server's command; a file name ``.bashrc``; an id ``.profile``)
    are mapped to visible ones (``_bashrc``), as other unsafe names are, even when asked by
    that name: the folder's hidden files are left as they are."""
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / ".git" / "config").write_text("[core]\n\tbare = false\n")
    (project / ".bashrc").write_text("# mine\n")
    evil = b"[core]\n\tfsmonitor = touch /tmp/pwned\n"
    digest = hashlib.sha256(evil).hexdigest()
    records = [
        {
            "id": record_id_of(".git/config"),
            "attachment": attachment("config", size=len(evil), digest=digest),
            "synced_from": {"folder": "x", "path": ".git/config", "sha256": digest},
        },
        {
            "id": record_id_of(".bashrc"),
            "attachment": attachment(".bashrc", size=len(evil), digest=digest),
        },
        {"id": ".profile", "attachment": {"size": len(evil), "hash": digest}},
    ]
    with Hostile(kinto(records, content=evil)) as server:
        every = run(server, "download", "--folder", str(project))
        named = run(server, "download", ".bashrc", "--folder", str(tmp_path / "named"))
    assert every.returncode == 0 and named.returncode == 0
    assert tree(project) == {
        ".git/config": b"[core]\n\tbare = false\n",
        ".bashrc": b"# mine\n",
        "config": evil,
        "_bashrc": evil,
        "_profile": evil,
    }
    assert tree(tmp_path / "named") == {"_bashrc": evil}


def test_sync_recognises_its_own_marks_on_names_no_component_keeps(tmp_path, run):
    """``10:30.txt``, ``what?.txt``, ``CON.txt``, ``a.``: ordinary names on Linux, synced
    with their path in the mark. That mark is the sync's own: (1) another folder's record
    of such a path is a conflict, not overwritten, (2) this folder's unchanged record is not
    marked again, (3) ``--delete`` deletes it once its file is gone; ``download`` maps the
    name as any other (``10_30.txt``)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "10:30.txt").write_bytes(b"this folder's version\n")
    (site / "what?.txt").write_bytes(CONTENT)
    (site / "CON.txt").write_bytes(CONTENT)
    other_digest = hashlib.sha256(b"the other folder's version\n").hexdigest()

    def marked(path, folder, digest):
        return {
            "id": record_id_of(path),
            "last_modified": 1,
            "attachment": attachment(path, digest=digest),
            "synced_from": {"folder": folder, "path": path, "sha256": digest},
        }

    records = [
        marked("10:30.txt", "other", other_digest),  # Another folder's: a conflict.
        marked("what?.txt", "site", DIGEST),  # This folder's, unchanged: nothing to do.
        marked("CON.txt", "site", DIGEST),
        marked("gone:file.txt", "site", DIGEST),  # This folder's, file gone: to delete.
    ]
    with Hostile(kinto(records)) as server:
        result = run(server, "sync", str(site), "--dry-run", "--delete")
        out = tmp_path / "out"
        download = run(server, "download", "--id", record_id_of("what?.txt"), "--folder", str(out))
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [
        ["unchanged", "CON.txt"],
        ["unchanged", "what?.txt"],
        ["conflict", "10:30.txt"],
        ["delete", "gone:file.txt"],
    ]
    assert download.returncode == 0 and tree(out) == {"what_.txt": CONTENT}


def test_a_file_removed_after_the_plan_fails_alone_the_rest_is_done(tmp_path, run, monkeypatch):
    """A file removed between the plan and its upload fails alone (exit code 1): the other
    new file is uploaded; the gone record is not deleted (a sync whose uploads failed deletes
    nothing: see test_sync_and_files.py), and said."""
    from kinto_attachment.cli import sync

    site = tmp_path / "site"
    site.mkdir()
    (site / "a.txt").write_bytes(CONTENT)
    (site / "b.txt").write_bytes(b"b\n")
    gone = {
        "id": record_id_of("gone.txt"),
        "last_modified": 3,
        "attachment": attachment("gone.txt"),
        "synced_from": {"folder": "site", "path": "gone.txt", "sha256": DIGEST},
    }
    planned = sync.plan

    def plan_then_remove(*args, **kwargs):
        result = planned(*args, **kwargs)
        (site / "b.txt").unlink()  # the folder changes while syncing
        return result

    monkeypatch.setattr(sync, "plan", plan_then_remove)
    with Hostile(kinto([gone])) as server:
        result = run(server, "sync", str(site), "--delete")
        methods = [(r.method, urlsplit(r.path).path) for r in server.requests]
    assert result.returncode == 1
    assert "kinto-attachment: b.txt: [Errno 2] No such file or directory" in result.stderr
    assert ("POST", f"{RECORDS}/{record_id_of('a.txt')}/attachment") in methods
    assert "DELETE" not in {method for method, _ in methods}
    assert "gone.txt: record " in result.stderr and "not deleted" in result.stderr


def test_a_retry_after_is_honoured_up_to_a_minute(tmp_path, run, monkeypatch):
    """``Retry-After: 86400`` makes each retry wait a minute, not a day."""
    slept = []
    monkeypatch.setattr(time, "sleep", lambda seconds: slept.append(seconds))

    def answer(request):
        return 503, {"Retry-After": "86400"}, b""

    with Hostile(answer) as server:
        result = run(server, "download", "--folder", str(tmp_path / "out"))
    assert result.returncode == 1
    assert slept == [60, 60, 60]  # --retries 3 (the default)


@pytest.mark.parametrize("where", ["listing", "error body of a download"])
def test_an_endless_answer_is_read_up_to_a_bound(tmp_path, run, where, monkeypatch):
    """A listing is read up to 16 MiB (then refused), an error's answer up to 64 KiB (for its
    message): a server that never ends its body does not grow the command without bound
    (here the body stops at 96 MiB).

    What the server sent counts what the kernel took for the command too: its receive
    buffer, which grows to ``net.ipv4.tcp_rmem``'s maximum (32 MiB on the project's
    machines) while the command reads fast, took 36 MiB once, under load. The command's
    sockets get a fixed buffer (256 KiB) here, so that what was sent is what was read, give
    or take the server's own buffer (4 MiB at most)."""
    connection_class = urllib3.connection.HTTPConnection
    initialised = connection_class.__init__

    def with_a_small_buffer(self, *args, **kwargs):
        initialised(self, *args, **kwargs)
        buffer = (socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        self.socket_options = [*(self.socket_options or ()), buffer]

    monkeypatch.setattr(connection_class, "__init__", with_a_small_buffer)
    sent = []

    def endless():
        yield b'{"data": ['
        for _ in range(96):
            sent.append(1)
            yield b" " * MiB

    def answer(request):
        path = urlsplit(request.path).path
        if where == "listing" or path.endswith("/attachment"):
            return (404 if where != "listing" else 200), {}, endless()
        return kinto([{"id": "a", "attachment": attachment("a.txt")}])(request)

    with Hostile(answer) as server:
        result = run(server, "download", "--folder", str(tmp_path / "out"))
    assert result.returncode == 1
    assert len(sent) < 32, f"the command read {len(sent)} MiB of one answer"
    if where == "listing":
        assert "the server's answer is over 16 MiB" in result.stderr


@pytest.mark.parametrize("status", [302, 503])
def test_an_endless_redirect_or_retried_answer_is_not_read_to_its_end(tmp_path, run, status):
    """The body of a redirect (requests reads it whole before following it) and of an answer
    that is retried (urllib3 reads it to its end first) is no part of any answer: it is not
    read, so that a server that never ends it neither grows nor holds the command."""
    sent = []

    def endless():
        for _ in range(96):
            sent.append(1)
            yield b" " * MiB

    def answer(request):
        url = urlsplit(request.path)
        if url.path.endswith("/records") and "again" not in url.query:
            headers = {"Retry-After": "0"}
            if status == 302:  # To the listing itself, then answered.
                headers = {"Location": f"{url.path}?again=1"}
            return status, headers, endless()
        return None

    with Hostile(kinto([], extra=answer)) as server:
        result = run(server, "download", "--folder", str(tmp_path / "out"))
    assert result.returncode == (0 if status == 302 else 1), result.stderr
    # What the socket's buffers took before the command closed it, a few MiB an answer.
    assert len(sent) < 32, f"the command read {len(sent)} MiB of answers it had no use of"


def test_a_collection_larger_than_an_answer_is_listed_by_pages(tmp_path, run):
    """Kinto lists up to 10,000 records a page unless asked for fewer (``_limit``): records
    of 8 KiB would make a page of 80 MiB, over what the command reads of one answer. It asks
    for pages of :data:`~kinto_attachment.cli.remote.PAGE_RECORDS` records, and lists them
    all."""
    padding = "x" * 8192
    records = [{"id": f"r{n:04d}", "padding": padding} for n in range(2500)]
    pages = []

    def paged(request):
        url = urlsplit(request.path)
        if url.path != RECORDS:
            return None
        query = parse_qs(url.query)
        limit = int(query.get("_limit", ["10000"])[0])
        start = int(query.get("_token", ["0"])[0])
        pages.append(limit)
        headers = {"Content-Type": "application/json"}
        if start + limit < len(records):
            headers["Next-Page"] = f"{RECORDS}?_limit={limit}&_token={start + limit}"
        return 200, headers, json.dumps({"data": records[start : start + limit]}).encode()

    with Hostile(kinto(records, extra=paged)) as server:
        result = run(server, "download", "--folder", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("no attachment") == len(records)
    assert pages == [remote.PAGE_RECORDS] * 3


def test_download_keeps_a_file_of_the_folder_that_has_a_second_name(tmp_path, run):
    """A file put in the folder by hand that also has another name (``ln``, ``cp -al``
    snapshots, ``rsync --link-dest`` backups, deduplicating tools) is a file of the folder as
    any other: kept, since no download wrote it."""
    folder = tmp_path / "out"
    folder.mkdir()
    mine = folder / "a.txt"
    mine.write_bytes(b"mine, edited here\n")
    os.link(mine, tmp_path / "a.txt.snapshot")

    with Hostile(kinto([{"id": "a", "attachment": attachment("a.txt")}])) as server:
        result = run(server, "download", "--folder", str(folder))

    assert mine.read_bytes() == b"mine, edited here\n", "a file no download wrote was replaced"
    assert result.returncode == 1, result.stdout


@pytest.mark.parametrize("before", [None, "an earlier download"])
def test_a_file_saved_just_before_the_download_takes_its_name_is_kept(
    tmp_path, run, monkeypatch, before
):
    """An editor saves the file the instant before the download takes its name (after every
    check): the name is given only if nothing took it (``link``), so the saved file stays,
    and the verified download waits for the next run."""
    folder = tmp_path / "out"
    records = [{"id": "late", "attachment": attachment("late.txt")}]
    if before:
        folder.mkdir()
        (folder / "late.txt").write_bytes(b"old")
        (folder / DOWNLOADED).write_text(
            json.dumps({"late.txt": hashlib.sha256(b"old").hexdigest()})
        )
    give_name = cli_files.link_unless_taken

    def saved_just_before(name, source, target, directory):
        if target == "late.txt":
            (folder / "late.txt").write_bytes(b"saved by an editor\n")
        return give_name(name, source, target, directory)

    monkeypatch.setattr(cli_files, "link_unless_taken", saved_just_before)
    with Hostile(kinto(records)) as server:
        result = run(server, "download", "--folder", str(folder))
    assert result.returncode == 1 and "written there during the download: kept" in result.stderr
    assert (folder / "late.txt").read_bytes() == b"saved by an editor\n"
    assert [p.name for p in (folder / PARTS).iterdir()] == [f"{DIGEST}.part"]


def test_a_file_changed_during_its_download_is_put_back(tmp_path, run, monkeypatch):
    """The earlier download's file, changed while the new one came (after it was hashed):
    set aside to be replaced, it is found changed and given its name back."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "late.txt").write_bytes(b"old")
    (folder / DOWNLOADED).write_text(json.dumps({"late.txt": hashlib.sha256(b"old").hexdigest()}))
    fetch = downloads._fetch

    def edited_meanwhile(*args, **kwargs):
        fetch(*args, **kwargs)
        (folder / "late.txt").write_bytes(b"edited meanwhile")

    monkeypatch.setattr(downloads, "_fetch", edited_meanwhile)
    with Hostile(kinto([{"id": "late", "attachment": attachment("late.txt")}])) as server:
        result = run(server, "download", "--folder", str(folder))
    assert result.returncode == 1 and "changed during the download: kept" in result.stderr
    assert (folder / "late.txt").read_bytes() == b"edited meanwhile"


def test_a_folder_whose_record_of_downloads_cannot_be_written(tmp_path, run, monkeypatch):
    """A folder one may read, not write (the record of downloads fails): the files are
    there all the same, a warning says what later runs will not replace; a run with no news
    writes nothing at all."""
    folder = tmp_path / "out"
    records = [{"id": "a", "attachment": attachment("a.txt")}]

    def refused(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(folder_module.Folder, "_save", refused)
    with Hostile(kinto(records)) as server:
        first = run(server, "download", "--folder", str(folder))
    assert first.returncode == 0 and (folder / "a.txt").read_bytes() == CONTENT
    assert f"{DOWNLOADED} not written ([Errno 13] Permission denied)" in first.stderr

    monkeypatch.undo()
    with Hostile(kinto(records)) as server:
        run(server, "download", "--folder", str(folder))
        saved = (folder / DOWNLOADED).stat().st_mtime_ns
        again = run(server, "download", "--folder", str(folder))
    assert again.returncode == 0 and "unchanged a.txt" in again.stdout
    assert (folder / DOWNLOADED).stat().st_mtime_ns == saved


def earlier_download(folder, content=b"old"):
    """``late.txt`` in ``folder``, as a download wrote it."""
    folder.mkdir(exist_ok=True)
    (folder / "late.txt").write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    (folder / DOWNLOADED).write_text(json.dumps({"late.txt": digest}))


def test_an_interrupted_publish_gives_the_file_set_aside_back(tmp_path, run, monkeypatch):
    """The earlier download's file is set aside (into the parts folder) before the new one
    takes its name: interrupted there (Ctrl-C), it gets its name back, so a change made to it
    during the download is never lost, and the next run keeps it."""
    folder = tmp_path / "out"
    earlier_download(folder)
    fetch = downloads._fetch

    def edited_meanwhile(*args, **kwargs):
        fetch(*args, **kwargs)
        (folder / "late.txt").write_bytes(b"edited meanwhile")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(downloads, "_fetch", edited_meanwhile)
    monkeypatch.setattr(cli_files, "stamp_at", interrupted)
    records = [{"id": "late", "attachment": attachment("late.txt")}]
    with Hostile(kinto(records)) as server:
        first = run(server, "download", "--folder", str(folder))
    assert first.returncode == 130, first.stderr
    assert (folder / "late.txt").read_bytes() == b"edited meanwhile"
    monkeypatch.undo()
    with Hostile(kinto(records)) as server:
        second = run(server, "download", "--folder", str(folder))
    assert second.returncode == 1 and "a file that differs" in second.stderr
    assert (folder / "late.txt").read_bytes() == b"edited meanwhile"


@pytest.mark.parametrize("killed", ["once set aside", "once the new file had its name"])
def test_a_file_a_killed_run_set_aside_is_given_back_or_dropped(tmp_path, run, killed):
    """A run killed (``kill -9``) with the earlier file set aside: the next run gives it its
    name back (and keeps it, since it was edited); killed once the new download had the name,
    the file set aside was the earlier download's, and goes."""
    folder = tmp_path / "out"
    earlier_download(folder)
    (folder / PARTS).mkdir()
    aside = folder / PARTS / aside_of("late.txt")
    if killed == "once set aside":
        (folder / "late.txt").rename(aside)
        aside.write_bytes(b"edited meanwhile")
    else:
        (folder / "late.txt").rename(aside)
        (folder / "late.txt").write_bytes(CONTENT)
    records = [{"id": "late", "attachment": attachment("late.txt")}]
    with Hostile(kinto(records)) as server:
        result = run(server, "download", "--folder", str(folder))
    if killed == "once set aside":
        assert result.returncode == 1 and "a file that differs" in result.stderr
        assert (folder / "late.txt").read_bytes() == b"edited meanwhile"
    else:
        assert result.returncode == 0 and "unchanged late.txt" in result.stdout
        assert (folder / "late.txt").read_bytes() == CONTENT
    assert not aside.exists()


def test_a_file_set_aside_that_is_no_download_is_kept_and_said(tmp_path, run):
    """Set aside by a killed run, its name taken since, and no download's: kept in the parts
    folder, and said, never dropped."""
    folder = tmp_path / "out"
    earlier_download(folder)
    (folder / PARTS).mkdir()
    aside = folder / PARTS / aside_of("late.txt")
    aside.write_bytes(b"somebody's")
    with Hostile(kinto([{"id": "late", "attachment": attachment("late.txt")}])) as server:
        result = run(server, "download", "--folder", str(folder))
    assert result.returncode == 1 and "an earlier run set a file aside: kept as" in result.stderr
    assert aside.read_bytes() == b"somebody's"


def test_a_password_that_is_not_latin1_is_sent_not_a_traceback(tmp_path, run):
    """Found by review (2026-12-05).

    A password outside Latin-1 (``alice:пароль``, an emoji...) makes every command die
    with a ``UnicodeEncodeError`` traceback before any request: ``parse_auth`` hands
    ``(user, password)`` to requests, whose Basic auth encodes it as Latin-1. Kinto (Pyramid's
    ``extract_http_basic_credentials``) decodes Basic credentials as UTF-8 first, and curl
    sends them as UTF-8, so such an account works everywhere but in this command, which
    promises one line of error, never a traceback. Fault: ``origins.parse_auth`` (the tuple
    given to requests). Fix: build the ``Authorization: Basic`` header from
    ``f"{user}:{password}".encode("utf-8")`` (a :class:`Header`); a ``Bearer`` token that is
    not Latin-1 must be a usage error (exit code 2), not a traceback."""
    password = "пароль"
    with Hostile(kinto([])) as server:
        result = run(
            server, "download", "--folder", str(tmp_path / "out"), auth=f"alice:{password}"
        )
        sent = [r.headers.get("Authorization") for r in server.requests]
    expected = "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()
    assert result.returncode == 0, result.stderr
    assert sent and set(sent) == {expected}


def test_a_bearer_token_that_is_not_latin1_is_a_usage_error_not_a_traceback(tmp_path, run):
    """Found by review (2026-12-05).

    ``--auth "Bearer токен"`` (a token pasted with a non-Latin-1 character) dies with a
    ``UnicodeEncodeError`` traceback from http.client, which encodes header values as
    Latin-1. A header cannot carry it: the command line is wrong, exit code 2 with one line.
    Fault: ``origins.parse_auth`` / ``Remote.__init__`` (never checked). Fix: refuse such a
    value in ``Remote.__init__`` (it already turns its :class:`Failure` into a usage error)."""
    with Hostile(kinto([])) as server:
        result = run(server, "download", "--folder", str(tmp_path / "out"), auth="Bearer токен")
    assert result.returncode == 2
    assert result.stderr.startswith("kinto-attachment: ")
    assert len(result.stderr.splitlines()) == 1


def test_a_server_whose_upload_goes_back_does_not_make_the_command_loop_forever(
    tmp_path, run, monkeypatch
):
    """Found by review (2026-12-05).

    ``_send`` promises "``remote.retries`` times in a row at most", but the count of failures
    is reset by every chunk the server accepts, and after a failure the offset HEAD answers
    may be *lower* than one the server already acknowledged (``_resumed`` accepts 0..size).
    A broken server (a node that lost its staged bytes, a cluster whose HEAD is answered from
    a stale replica) that accepts a chunk, fails the next, then says the upload is back at 0,
    makes the command send the same chunks forever: it never ends, never fails. Here the
    server gives up after 40 PATCHes; with ``--retries 1`` the command should have failed
    after a handful. Fault: ``uploads._send`` (``failures = 0`` after any 204, and
    ``_resumed(remote, url, size)`` with lowest 0). Fix: an offset below one the server
    acknowledged is a :class:`Failure` (the server lost bytes it had taken), or count the
    failures until the upload goes beyond the furthest offset reached."""
    monkeypatch.setattr(uploads, "CHUNK_SIZE", 4)  # A tus upload of 3 chunks for 12 bytes.
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    file = tmp_path / "data.bin"
    file.write_bytes(b"0123456789ab")
    patches = []

    def forgetful(request):
        if request.method == "POST":
            return 201, {"Location": "/v1/uploads/1", "Tus-Resumable": "1.0.0"}, b""
        if request.method == "PATCH":
            patches.append(request.headers["Upload-Offset"])
            if len(patches) > 40:
                return 404, {"Content-Type": "application/json"}, b'{"code": 404}'
            if request.headers["Upload-Offset"] == "0":
                return 204, {"Upload-Offset": "4", "Tus-Resumable": "1.0.0"}, b""
            return 500, {"Content-Type": "application/json"}, b'{"message": "lost"}'
        if request.method == "HEAD":
            if len(patches) > 40:
                return 404, {}, b""
            return 200, {"Upload-Offset": "0", "Upload-Length": "12"}, b""
        return 404, {"Content-Type": "application/json"}, b'{"code": 404}'

    with Hostile(forgetful) as server:
        result = run(server, "--retries", "1", "upload", str(file), "--id", "r", "--force")
    assert result.returncode == 1
    assert len(patches) <= 6, f"{len(patches)} PATCHes: the command went round {patches[:8]}..."


def test_a_bucket_name_that_is_no_utf8_is_a_failure_not_a_traceback(tmp_path, run):
    """Found by review (2026-12-05).

    ``-b`` given bytes that are no UTF-8 (a shell variable read from a file in another
    encoding; Python surrogate-escapes them) makes ``download`` and ``sync`` die with a
    ``UnicodeEncodeError`` traceback from ``quote`` in ``Remote.records_url``
    (``record_url`` catches it for ids, ``records_url`` does not). Fault:
    ``remote.Remote.records_url`` / ``Remote.__init__``. Fix: refuse a bucket or collection
    that is no UTF-8 in ``Remote.__init__`` (a usage error, exit code 2), as ``--server`` is."""
    with Hostile(kinto([])) as server:
        bucket = os.fsdecode(b"\xffbucket")
        result = run(server, "-b", bucket, "download", "--folder", str(tmp_path / "out"))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_options_of_every_command_go_before_or_after_it(monkeypatch):
    """Found by review (2026-12-05).

    docs/cli.rst lists ``--server``, ``--limit-rate``... beside each command's own options,
    but they were refused after the command (``upload big.bin --limit-rate 5M``: exit code
    2). Either place works; after the command overrides before it, and the environment's
    values stay the defaults."""
    from kinto_attachment.cli import arguments

    for name in ("KINTO_SERVER", "KINTO_AUTH", "KINTO_BUCKET", "KINTO_COLLECTION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KINTO_BUCKET", "from-env")
    args = arguments.parse(
        ["-c", "before", "upload", "big.bin", "--limit-rate", "5M", "-c", "after"]
    )
    assert (args.limit_rate, args.collection, args.bucket) == (5 * 1024**2, "after", "from-env")
    assert args.server == arguments.DEFAULT_SERVER and args.retries == 3
    assert arguments.parse(["--retries", "1", "rm", "x", "-c", "c"]).retries == 1
    monkeypatch.delenv("KINTO_BUCKET")
    with pytest.raises(SystemExit) as refused:
        arguments.parse(["upload", "big.bin", "-c", "c"])
    assert refused.value.code == 2


def test_auth_without_a_colon_is_still_a_user_with_an_empty_password():
    """Found by review (2026-12-05).

    ``--auth alice`` (no ``:``) was sent as Basic ``alice:`` (requests' tuple of
    ``partition(":")``): Kinto's basicauth made it a user. The UTF-8 fix sends the value as
    given, base64 of ``alice`` with no ``:``, which Pyramid's
    ``extract_http_basic_credentials`` cannot split: the request is silently anonymous
    (a 401/403, or anonymous writes in a collection open to everyone). Fault:
    ``origins.parse_auth`` (``credentials = value.encode("utf-8")``). Fix: encode
    ``user + ":" + password`` from ``value.partition(":")`` (or refuse a value with no
    ``:`` as a usage error)."""
    header = parse_auth("alice")
    request = types.SimpleNamespace(headers={"Authorization": header.value})
    credentials = extract_http_basic_credentials(request)
    assert credentials is not None, header.value
    assert tuple(credentials) == ("alice", "")
