"""The ``kinto-attachment`` command against a live server: uploads (small ones multipart,
large ones tus) resumed after a kill, downloads resumed and verified, sync plans, progress on
a terminal, exit codes, memory."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
import unicodedata
import uuid
from pathlib import Path

import pytest
import requests

from kinto_attachment.cli import downloads, resumes
from kinto_attachment.cli.names import DOWNLOADED, PARTS, record_id_of

from ..support.cli_support import run_command
from ..support.live import (
    ALICE,
    _read_terminal,
    create_collection,
    running_server,
    sha256_of,
    write_random_file,
)
from ..support.tcpproxy import TcpProxy


COMMAND = str(Path(sys.executable).parent / "kinto-attachment")
MiB = 1024 * 1024
BUCKET = "cli"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("cli-server")) as live:
        yield live


@pytest.fixture
def proxy(server):
    """Counts what the command sends to the server."""
    relay = TcpProxy("127.0.0.1", server.port)
    yield relay
    relay.close()


@pytest.fixture
def collection(server):
    name = f"c{uuid.uuid4().hex[:8]}"
    create_collection(server, BUCKET, name)
    return name


def environment(server, collection, tmp_path, proxy=None):
    port = proxy.port if proxy else server.port
    return {
        **os.environ,
        "KINTO_SERVER": f"http://127.0.0.1:{port}/v1",
        "KINTO_AUTH": ":".join(ALICE),
        "KINTO_BUCKET": BUCKET,
        "KINTO_COLLECTION": collection,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }


@pytest.fixture
def run(monkeypatch, capsys):
    """The command, run in this process (so that coverage sees it) with ``env``. The tests
    that kill it, or measure it, start the installed command in a process of its own."""
    return lambda env, *args: run_command(monkeypatch, capsys, env, *args)


def record(server, collection, record_id):
    url = f"{server.url}/buckets/{BUCKET}/collections/{collection}/records/{record_id}"
    response = requests.get(url, auth=ALICE, timeout=30)
    return response.json()["data"] if response.status_code == 200 else None


def test_upload_small_and_large_then_nothing_is_sent_again(
    server, proxy, collection, tmp_path, run
):
    small = tmp_path / "notes.txt"
    small.write_bytes(b"small file\n" * 100)
    medium = tmp_path / "photo.jpg"  # Multipart too, read by more than one 1 MiB block.
    write_random_file(medium, 3 * MiB + 5)
    large = tmp_path / "data.bin"
    write_random_file(large, 20 * MiB)  # Three tus chunks.
    files = (small, medium, large)
    env = environment(server, collection, tmp_path, proxy)

    result = run(env, "upload", *map(str, files), "--data", '{"title": "t"}')
    assert result.returncode == 0, result.stderr
    for path in files:
        stored = record(server, collection, record_id_of(path.name))
        assert stored["attachment"]["size"] == path.stat().st_size
        assert stored["attachment"]["hash"] == sha256_of(path)
        assert stored["title"] == "t"
        assert f"uploaded {path.name}" in result.stdout
    assert proxy.sent > 23 * MiB
    assert not json.loads((tmp_path / "cache/kinto-attachment/uploads.json").read_text())

    before = proxy.sent
    again = run(env, "upload", *map(str, files))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("unchanged") == 3
    assert proxy.sent - before < 64 * 1024  # Three record reads, no file.


def test_an_upload_killed_half_way_resumes_where_it_stopped(
    server, proxy, collection, tmp_path, run
):
    large = tmp_path / "big.bin"
    write_random_file(large, 40 * MiB)
    env = environment(server, collection, tmp_path, proxy)
    state = tmp_path / "cache/kinto-attachment/uploads.json"
    first = subprocess.Popen(
        [COMMAND, "--limit-rate", "8M", "upload", str(large)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill it once the server has a chunk or more of the upload.
    deadline = time.monotonic() + 60
    offset = 0
    while offset < 8 * MiB and time.monotonic() < deadline:
        time.sleep(0.2)
        urls = json.loads(state.read_text()) if state.exists() else {}
        for url in urls.values():
            head = requests.head(url, headers={"Tus-Resumable": "1.0.0"}, auth=ALICE, timeout=30)
            offset = int(head.headers.get("Upload-Offset", 0))
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert 8 * MiB <= offset < 40 * MiB, offset
    assert record(server, collection, record_id_of("big.bin")) is None

    before = proxy.sent
    second = run(env, "upload", str(large))
    assert second.returncode == 0, second.stderr
    stored = record(server, collection, record_id_of("big.bin"))
    assert stored["attachment"]["hash"] == sha256_of(large)
    # Only the rest was sent again (the bytes the kill cut short, at most one chunk, too).
    assert proxy.sent - before <= 40 * MiB - offset + 9 * MiB
    assert json.loads(state.read_text()) == {}


def test_resume_entries_of_changed_or_gone_files_are_dropped(tmp_path):
    """Found by review (2026-12-05).

    An entry is keyed by its file's size and time: once the file changed or is gone, no run
    can resume it, yet it was kept forever (the state file only grew). Each new entry drops
    those; an unchanged file's entry stays. The file is written through a temporary file of
    the process's own, fsynced (two runs at once shared one temporary name)."""
    kept, edited, gone = (tmp_path / name for name in ("kept.bin", "edited.bin", "gone.bin"))
    for path in (kept, edited, gone):
        path.write_bytes(b"x" * 10)

    def key(path):
        stat = path.stat()
        file = ["https://kinto/records/r", str(path), stat.st_size, stat.st_mtime_ns]
        return json.dumps([*file, "options"])

    state = resumes.State(str(tmp_path / "uploads.json"))
    keys = {path.name: key(path) for path in (kept, edited, gone)}
    for name, k in keys.items():
        state.put(k, f"https://kinto/uploads/{name}")
    edited.write_bytes(b"y" * 11)
    gone.unlink()
    state.put(
        json.dumps(["https://kinto/records/s", "/new", 1, 1, "o"]), "https://kinto/uploads/new"
    )

    entries = json.loads((tmp_path / "uploads.json").read_text())
    assert keys["kept.bin"] in entries
    assert keys["edited.bin"] not in entries and keys["gone.bin"] not in entries
    left = sorted(p.name for p in tmp_path.iterdir())  # No temporary file: the lock's only.
    assert left == ["edited.bin", "kept.bin", "uploads.json", "uploads.json.lock"]


def upload_one(server, collection, name, content, status=201):
    url = f"{server.url}/buckets/{BUCKET}/collections/{collection}/records/{record_id_of(name)}"
    response = requests.post(
        url + "/attachment", files={"attachment": (name, content)}, auth=ALICE, timeout=60
    )
    assert response.status_code == status, response.text
    return response.json()


def test_download_resumes_and_verifies(server, collection, tmp_path, run):
    content = os.urandom(30 * MiB)
    upload_one(server, collection, "dataset.bin", content)
    upload_one(server, collection, "readme.txt", b"read me")
    env = environment(server, collection, tmp_path)
    target = tmp_path / "out"
    first = subprocess.Popen(
        [COMMAND, "--limit-rate", "8M", "download", "--folder", str(target)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    part = target / PARTS / f"{hashlib.sha256(content).hexdigest()}.part"
    deadline = time.monotonic() + 60
    while (not part.exists() or part.stat().st_size < 4 * MiB) and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    kept = part.stat().st_size
    assert 4 * MiB <= kept < 30 * MiB
    assert not (target / "dataset.bin").exists()

    second = run(env, "download", "--folder", str(target))
    assert second.returncode == 0, second.stderr
    assert (target / "dataset.bin").read_bytes() == content
    assert (target / "readme.txt").read_bytes() == b"read me"
    assert not part.exists()
    third = run(env, "download", "--folder", str(target))
    assert third.stdout.count("unchanged") == 2, third.stdout

    # A file changed here is no download's: kept, unless --overwrite.
    (target / "readme.txt").write_bytes(b"tampered")
    fourth = run(env, "download", "--folder", str(target), record_id_of("readme.txt"))
    assert fourth.returncode == 1 and "kept (--overwrite replaces it)" in fourth.stderr
    assert (target / "readme.txt").read_bytes() == b"tampered"
    fifth = run(env, "download", "--overwrite", "--folder", str(target), "readme.txt")
    assert fifth.returncode == 0 and "downloaded readme.txt" in fifth.stdout
    assert (target / "readme.txt").read_bytes() == b"read me"


def test_download_replaces_only_what_a_download_wrote(server, collection, tmp_path, run):
    """A record whose file changed on the server is downloaded again over the file an earlier
    download wrote; a file changed or put here by someone else is kept, the others go on."""
    for name in ("a.txt", "b.txt", "c.txt"):
        upload_one(server, collection, name, f"first {name}".encode())
    env = environment(server, collection, tmp_path)
    target = tmp_path / "out"
    target.mkdir()
    (target / "c.txt").write_bytes(b"mine, not downloaded")
    first = run(env, "download", "--folder", str(target))
    assert first.returncode == 1 and "c.txt: a file that differs" in first.stderr
    assert (target / "c.txt").read_bytes() == b"mine, not downloaded"
    assert (target / "a.txt").read_bytes() == b"first a.txt"
    for name in ("a.txt", "b.txt", "c.txt"):
        upload_one(server, collection, name, f"second {name}".encode(), status=200)
    (target / "b.txt").write_bytes(b"edited here")

    second = run(env, "download", "--folder", str(target))

    assert second.returncode == 1, second.stdout
    assert (target / "a.txt").read_bytes() == b"second a.txt"
    assert (target / "b.txt").read_bytes() == b"edited here"
    assert (target / "c.txt").read_bytes() == b"mine, not downloaded"
    assert "downloaded a.txt" in second.stdout
    assert "b.txt: a file that differs" in second.stderr
    assert "c.txt: a file that differs" in second.stderr
    assert sorted(p.name for p in target.iterdir()) == [DOWNLOADED, "a.txt", "b.txt", "c.txt"]
    assert json.loads((target / DOWNLOADED).read_text()) == {
        "a.txt": {
            "sha256": hashlib.sha256(b"second a.txt").hexdigest(),
            "record": record_id_of("a.txt"),
        },
        "b.txt": {
            "sha256": hashlib.sha256(b"first b.txt").hexdigest(),
            "record": record_id_of("b.txt"),
        },
    }


def test_a_file_made_during_its_download_is_kept(server, collection, tmp_path, run, monkeypatch):
    """The check comes before the bytes: a file written there meanwhile (an editor saving)
    is not replaced; the verified part waits for the next run."""
    upload_one(server, collection, "late.txt", b"the record's")
    env = environment(server, collection, tmp_path)
    target = tmp_path / "out"
    fetch = downloads._fetch

    def fetch_while_someone_saves(*args, **kwargs):
        fetch(*args, **kwargs)
        (target / "late.txt").write_bytes(b"saved meanwhile")

    monkeypatch.setattr(downloads, "_fetch", fetch_while_someone_saves)
    first = run(env, "download", "--folder", str(target))
    assert first.returncode == 1 and "written there during the download: kept" in first.stderr
    assert (target / "late.txt").read_bytes() == b"saved meanwhile"
    monkeypatch.setattr(downloads, "_fetch", fetch)
    second = run(env, "download", "--overwrite", "--folder", str(target))
    assert second.returncode == 0 and (target / "late.txt").read_bytes() == b"the record's"
    assert not (target / PARTS).exists()


def test_an_unreadable_record_of_downloads_replaces_nothing(server, collection, tmp_path, run):
    upload_one(server, collection, "d.txt", b"first")
    env = environment(server, collection, tmp_path)
    target = tmp_path / "out"
    assert run(env, "download", "--folder", str(target)).returncode == 0
    upload_one(server, collection, "d.txt", b"second", status=200)
    (target / DOWNLOADED).write_text("{not json")
    again = run(env, "download", "--folder", str(target))
    assert again.returncode == 1 and (target / "d.txt").read_bytes() == b"first"


def test_sync_plans_then_applies(server, proxy, collection, tmp_path, run):
    folder = tmp_path / "site"
    (folder / "fonts").mkdir(parents=True)
    (folder / "index.txt").write_bytes(b"v1")
    (folder / "fonts/a.woff2").write_bytes(b"font a")
    (folder / ".git").mkdir()
    (folder / ".git/config").write_bytes(b"not published")
    env = environment(server, collection, tmp_path, proxy)

    font, index = record_id_of("fonts/a.woff2"), record_id_of("index.txt")
    plan = run(env, "sync", str(folder), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines() == [
        f"new        fonts/a.woff2 ({font})",
        f"new        index.txt ({index})",
    ]
    assert record(server, collection, index) is None

    assert run(env, "sync", str(folder)).returncode == 0
    synced = record(server, collection, font)
    assert synced["attachment"]["size"] == 6
    assert synced["synced_from"] == {
        "folder": "site",
        "path": "fonts/a.woff2",
        "sha256": hashlib.sha256(b"font a").hexdigest(),
    }

    (folder / "index.txt").write_bytes(b"v2")
    (folder / "fonts/a.woff2").unlink()
    plan = run(env, "sync", str(folder), "--delete", "--dry-run")
    gone = font
    assert plan.stdout.splitlines() == [
        f"changed    index.txt ({index})",
        f"delete     fonts/a.woff2 ({font})",
    ]

    before = proxy.sent
    applied = run(env, "sync", str(folder), "--delete")
    assert applied.returncode == 0, applied.stderr
    assert f"deleted record fonts/a.woff2 ({font})" in applied.stdout.splitlines()
    assert record(server, collection, gone) is None
    index = record(server, collection, record_id_of("index.txt"))["attachment"]
    assert index["hash"] == hashlib.sha256(b"v2").hexdigest()
    unchanged = run(env, "sync", str(folder), "--delete")
    assert unchanged.stdout.splitlines() == [
        "unchanged index.txt (" + record_id_of("index.txt") + ")"
    ]
    assert proxy.sent - before < 64 * 1024


def test_rm_and_errors_exit_codes(server, collection, tmp_path, run):
    upload_one(server, collection, "a.txt", b"a")
    upload_one(server, collection, "b.txt", b"b")
    env = environment(server, collection, tmp_path)

    assert run(env, "rm", "--attachment-only", record_id_of("a.txt")).returncode == 0
    assert record(server, collection, record_id_of("a.txt"))["attachment"] is None
    assert run(env, "rm", record_id_of("b.txt")).returncode == 0
    assert record(server, collection, record_id_of("b.txt")) is None

    missing = run(env, "rm", "nope")
    assert missing.returncode == 1
    assert missing.stderr == "kinto-attachment: nope: no such file or record\n"
    refused = run({**env, "KINTO_AUTH": "mallory:x"}, "download", record_id_of("a.txt"))
    assert refused.returncode == 1
    bad = tmp_path / "x.exe"
    bad.write_bytes(b"MZ")
    nowhere = run({**env, "KINTO_COLLECTION": "missing"}, "upload", str(bad))
    assert nowhere.returncode == 1
    # One line: the file, the status and the server's own message.
    assert nowhere.stderr.startswith("kinto-attachment: x.exe: 404 collection "), nowhere.stderr
    assert len(nowhere.stderr.splitlines()) == 1
    usage = run(env, "upload", str(bad), str(bad), "--id", "r")
    assert usage.returncode == 2 and "one file" in usage.stderr
    assert run(env, "rm").returncode == 2
    assert run(env, "upload", "--data", "[1]", str(bad)).returncode == 2


def test_progress_on_a_terminal(server, collection, tmp_path):
    large = tmp_path / "shown.bin"
    write_random_file(large, 12 * MiB)
    env = environment(server, collection, tmp_path)
    master, slave = os.openpty()
    process = subprocess.Popen(
        [COMMAND, "--limit-rate", "12M", "upload", str(large)],
        env={**env, "COLUMNS": "120", "TERM": "xterm"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    output = _read_terminal(master, process, timeout=120).decode(errors="replace")
    assert process.returncode == 0, output
    assert "shown.bin" in output and "total" in output
    assert "MB/s" in output or "MiB/s" in output, output
    assert "uploaded shown.bin" in output


def test_memory_stays_flat(server, collection, tmp_path):
    """A 200 MiB file up and down: the command's peak memory does not follow its size."""
    large = tmp_path / "huge.bin"
    write_random_file(large, 200 * MiB)
    env = environment(server, collection, tmp_path)
    for args in (["upload", str(large)], ["download", "--folder", str(tmp_path / "back")]):
        measured = subprocess.run(
            ["/usr/bin/time", "-f", "%M", COMMAND, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert measured.returncode == 0, measured.stderr
        peak_kib = int(measured.stderr.strip().splitlines()[-1])
        assert peak_kib < 120 * 1024, f"{args[0]}: peak RSS {peak_kib} KiB"
    assert sha256_of(tmp_path / "back/huge.bin") == sha256_of(large)


def test_a_connection_lost_mid_upload_is_resumed_in_the_same_run(
    server, proxy, collection, tmp_path, run
):
    large = tmp_path / "flaky.bin"
    write_random_file(large, 24 * MiB)
    env = environment(server, collection, tmp_path, proxy)
    state = tmp_path / "cache/kinto-attachment/uploads.json"
    results = []
    uploading = threading.Thread(
        target=lambda: results.append(run(env, "--limit-rate", "8M", "upload", str(large)))
    )
    uploading.start()
    offset, deadline = 0, time.monotonic() + 60
    while offset < 8 * MiB and time.monotonic() < deadline:
        time.sleep(0.1)
        for url in (json.loads(state.read_text()) if state.exists() else {}).values():
            head = requests.head(url, headers={"Tus-Resumable": "1.0.0"}, auth=ALICE, timeout=30)
            offset = int(head.headers.get("Upload-Offset", 0))
    proxy.down()  # The second chunk is on its way: its connection is cut.
    time.sleep(0.3)
    proxy.up()
    uploading.join(120)
    (result,) = results
    assert result.returncode == 0, result.stderr
    stored = record(server, collection, record_id_of("flaky.bin"))
    assert stored["attachment"]["hash"] == sha256_of(large)


def test_options_and_connection_errors(server, collection, tmp_path, run):
    env = environment(server, collection, tmp_path)
    file = tmp_path / "f.txt"
    file.write_bytes(b"f")
    assert run(env, "--limit-rate", "1.5K", "upload", str(file)).returncode == 0
    assert run(env, "--limit-rate", "fast", "upload", str(file)).returncode == 2
    assert run(env, "upload", str(tmp_path / "missing.txt")).returncode == 2
    assert run(env, "sync", str(tmp_path / "missing")).returncode == 2
    bearer = run({**env, "KINTO_AUTH": "Bearer not-a-token"}, "rm", "x")
    assert bearer.returncode == 1 and ": 401 " in bearer.stderr
    down = run({**env, "KINTO_SERVER": "http://127.0.0.1:9/v1"}, "--retries", "0", "rm", "x")
    assert down.returncode == 1 and "ConnectionError" in down.stderr
    absent = run(env, "download", "--folder", str(tmp_path / "d"), "absent")
    assert absent.returncode == 1 and "absent: no such file or record" in absent.stderr


def test_limit_rate_paces_uploads_and_downloads_alike(monkeypatch):
    """``--limit-rate`` holds each way: the transfer sleeps whenever it is ahead of the rate."""
    from kinto_attachment.cli import pace as pacing

    now, slept = [100.0], []
    monkeypatch.setattr(pacing.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(
        pacing.time, "sleep", lambda s: (slept.append(s), now.__setitem__(0, now[0] + s))
    )
    pace = pacing.Pace(2 * MiB)
    pace.passed(1 * MiB)
    pace.passed(1 * MiB)
    assert slept == [0.5, 0.5]
    now[0] += 3  # Slower than the rate: no sleep.
    pace.passed(1 * MiB)
    assert slept[-1] == 0.0
    now[0] += 60  # Idle a minute (a retry's wait): it catches up on one second, no more.
    del slept[:]
    for _ in range(4):  # 8 MiB: 4 s at the rate.
        pace.passed(2 * MiB)
    assert sum(slept) == pytest.approx(3.0)
    pacing.Pace(None).passed(10 * MiB)
    assert len(slept) == 4


def test_an_upload_stored_otherwise_than_the_file_is_a_failure(monkeypatch, tmp_path, capsys):
    """The sha256 the server stored is checked against the file's: a file changed while it
    was sent, or a body cut short on the way, is no success."""
    from kinto_attachment.cli import main as cli
    from kinto_attachment.cli.progress import Bars

    file = tmp_path / "notes.txt"
    file.write_bytes(b"what the file holds")
    monkeypatch.setattr(cli.uploads, "upload", lambda *args, **kwargs: {"hash": "0" * 64})
    args = types.SimpleNamespace(force=True, state=str(tmp_path / "state.json"), limit_rate=None)
    with Bars(file.stat().st_size) as bars:
        failed = cli._upload(
            None, args, bars, [(str(file), "notes.txt", "notes", None, None, None)]
        )
    assert failed
    expected = hashlib.sha256(b"what the file holds").hexdigest()
    assert (
        f"the server stored sha256 {'0' * 64}, the file has {expected}" in capsys.readouterr().err
    )


def test_limit_rate_spans_the_chunks_of_a_resumable_upload(monkeypatch, tmp_path):
    """The time between two chunks (the server's answer, the next request) counts towards
    the rate: 3 chunks at 8 MiB/s, each answered 1 s after its last byte, take 3 s paced + 1 s
    for the last answer, not 3 × (1 s + 1 s)."""
    from kinto_attachment.cli import pace, uploads

    now = [0.0]
    monkeypatch.setattr(pace.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(pace.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))
    file = tmp_path / "three-chunks.bin"
    file.write_bytes(os.urandom(3 * uploads.CHUNK_SIZE))

    class Server:
        def request(self, method, url, expected, headers, data):
            while data.read(pace.CHUNK):
                pass
            now[0] += 1  # Its fsync and answer, then the client's next request.
            offset = int(headers["Upload-Offset"]) + len(data)
            return types.SimpleNamespace(status_code=204, headers={"Upload-Offset": str(offset)})

    sent = []
    expected = uploads.Expected(sha256_of(file), 3 * uploads.CHUNK_SIZE)
    uploads._send(
        Server(), "url", file, 0, 3 * uploads.CHUNK_SIZE, sent.append, 8 * MiB, {}, expected
    )
    assert sum(sent) == 3 * uploads.CHUNK_SIZE
    assert now[0] == pytest.approx(4.0)


def attach_by_hand(server, collection, record_id, filename, content):
    """An attachment made without the command (as with curl): a record it never created."""
    url = f"{server.url}/buckets/{BUCKET}/collections/{collection}/records/{record_id}"
    response = requests.post(
        url + "/attachment", files={"attachment": (filename, content)}, auth=ALICE, timeout=60
    )
    assert response.status_code in (200, 201), response.text
    return response.json()["hash"]


def test_sync_delete_deletes_only_what_this_folder_synced(server, collection, tmp_path, run):
    """Observation 1: records attached by hand, by ``upload`` or by another folder's sync are
    never deleted; the plan names the file and the record; a plain sync tells what is gone."""
    env = environment(server, collection, tmp_path)
    attach_by_hand(server, collection, "manual-upload", "manual.txt", b"by hand")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"uploaded alone")
    assert run(env, "upload", str(notes)).returncode == 0
    site, other = tmp_path / "site", tmp_path / "other"
    (site / "sub").mkdir(parents=True)
    (site / "a.txt").write_bytes(b"a")
    (site / "sub/b.txt").write_bytes(b"b")
    (site / "d.txt").write_bytes(b"d")
    other.mkdir()
    (other / "c.txt").write_bytes(b"c")
    assert run(env, "sync", str(site)).returncode == 0
    assert run(env, "sync", str(other)).returncode == 0
    a, b, c, d = (record_id_of(name) for name in ("a.txt", "sub/b.txt", "c.txt", "d.txt"))

    # Its file replaced by hand since, the record of d.txt is no longer this folder's file.
    attach_by_hand(server, collection, record_id_of("d.txt"), "d.txt", b"replaced by hand")
    (site / "d.txt").unlink()
    (site / "sub/b.txt").unlink()
    plain = run(env, "sync", str(site))
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines() == [
        f"unchanged a.txt ({a})",
        f"gone sub/b.txt ({b}) would delete with --delete",
        f"kept d.txt ({d}) its attachment is no longer the file this folder's sync attached",
    ]
    assert record(server, collection, b) is not None
    plan = run(env, "sync", str(site), "--delete", "--dry-run")
    assert plan.stdout.splitlines() == [
        f"unchanged  a.txt ({a})",
        f"delete     sub/b.txt ({b})",
        f"kept       d.txt ({d}) its attachment is no longer the file this folder's sync attached",
    ]

    applied = run(env, "sync", str(site), "--delete")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [
        f"unchanged a.txt ({a})",
        f"deleted record sub/b.txt ({b})",
        f"kept d.txt ({d}) its attachment is no longer the file this folder's sync attached",
    ]
    assert record(server, collection, b) is None
    for kept in ("manual-upload", record_id_of("notes.txt"), c, a, d):
        assert record(server, collection, kept)["attachment"], kept
    for kept, folder, content in ((a, "site", b"a"), (c, "other", b"c")):
        assert record(server, collection, kept)["synced_from"] == {
            "folder": folder,
            "path": "a.txt" if kept == a else "c.txt",
            "sha256": hashlib.sha256(content).hexdigest(),
        }
    # An empty folder of another name deletes nothing either.
    (tmp_path / "empty").mkdir()
    nothing = run(env, "sync", str(tmp_path / "empty"), "--delete")
    assert nothing.returncode == 0 and nothing.stdout == ""
    assert record(server, collection, a) and record(server, collection, c)


def test_folders_never_overwrite_each_others_records(server, collection, tmp_path, run):
    """Two folders with a file at the same path: the second does not overwrite the record the
    first one's sync marked (unless told it is that folder, ``--as``). A record of an
    unchanged file that ``upload`` made gets the folder's mark."""
    env = environment(server, collection, tmp_path)
    site, other = tmp_path / "site", tmp_path / "other"
    for folder, content in ((site, b"site's"), (other, b"other's")):
        folder.mkdir()
        (folder / "index.txt").write_bytes(content)
    (site / "same.txt").write_bytes(b"same")
    same = tmp_path / "same.txt"
    same.write_bytes(b"same")
    assert run(env, "upload", str(same)).returncode == 0
    index, adopted = record_id_of("index.txt"), record_id_of("same.txt")

    first = run(env, "sync", str(site))
    assert first.returncode == 0, first.stderr
    assert f"marked same.txt ({adopted})" in first.stdout.splitlines()
    assert record(server, collection, adopted)["synced_from"]["folder"] == "site"
    plan = run(env, "sync", str(other), "--dry-run")
    assert plan.stdout.splitlines() == [
        f"conflict   index.txt ({index}) synced from folder 'site', left as it is"
        " (--as 'site' to sync it)"
    ]
    second = run(env, "sync", str(other), "--delete")
    assert second.returncode == 1
    assert second.stderr == (
        f"kinto-attachment: index.txt: record {index} synced from folder 'site', left as it is"
        " (--as 'site' to sync it)\n"
    )
    stored = record(server, collection, index)
    assert stored["attachment"]["hash"] == hashlib.sha256(b"site's").hexdigest()
    assert record(server, collection, adopted) is not None

    renamed = run(env, "sync", str(other), "--as", "site", "--delete")
    assert renamed.returncode == 0, renamed.stderr
    assert f"deleted record same.txt ({adopted})" in renamed.stdout.splitlines()
    stored = record(server, collection, index)
    assert stored["attachment"]["hash"] == hashlib.sha256(b"other's").hexdigest()


def test_sync_does_not_follow_links_out_of_the_folder(server, collection, tmp_path, run):
    """Observation 7: a link to a file outside FOLDER is reported and skipped (and its record,
    if a sync with ``--follow-symlinks`` made it, is not deleted as gone); links inside are
    followed; a link to a folder it is in is skipped."""
    env = environment(server, collection, tmp_path)
    secret = tmp_path / "id_ed25519"
    secret.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    site = tmp_path / "site"
    (site / "docs").mkdir(parents=True)
    (site / "docs/real.txt").write_bytes(b"real")
    (site / "notes.txt").symlink_to(secret)
    (site / "alias.txt").symlink_to(site / "docs/real.txt")
    (site / "docs/loop").symlink_to(site, target_is_directory=True)
    (site / "broken").symlink_to(tmp_path / "nowhere")
    notes = record_id_of("notes.txt")

    result = run(env, "sync", str(site))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "skipped broken: a broken symbolic link",
        "skipped docs/loop: a link to a folder it is in",
        "skipped notes.txt: a symbolic link out of the folder (--follow-symlinks to follow it)",
        f"uploaded alias.txt ({record_id_of('alias.txt')}) sha256 "
        + hashlib.sha256(b"real").hexdigest(),
        f"uploaded docs/real.txt ({record_id_of('docs/real.txt')}) sha256 "
        + hashlib.sha256(b"real").hexdigest(),
    ]
    assert record(server, collection, notes) is None

    followed = run(env, "sync", str(site), "--follow-symlinks")
    assert followed.returncode == 0, followed.stderr
    assert record(server, collection, notes)["attachment"]["hash"] == sha256_of(secret)
    kept = run(env, "sync", str(site), "--delete")
    assert kept.returncode == 0, kept.stderr
    assert record(server, collection, notes) is not None


def test_one_way_to_name_things(server, collection, tmp_path, run):
    """Observation 8: ``rm`` and ``download`` take the names ``upload`` and ``sync`` used and
    record ids; ``download`` recreates subfolders; a whole collection's download skips records
    without an attachment."""
    env = environment(server, collection, tmp_path)
    small = tmp_path / "small-07.dat"
    small.write_bytes(b"small")
    assert run(env, "upload", str(small)).returncode == 0
    removed = run(env, "rm", "small-07.dat")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == f"deleted record small-07.dat ({record_id_of('small-07.dat')})\n"
    assert record(server, collection, record_id_of("small-07.dat")) is None

    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "sub/a.dat").write_bytes(b"in a subfolder")
    (site / "top.txt").write_bytes(b"at the top")
    assert run(env, "sync", str(site)).returncode == 0
    attach_by_hand(server, collection, "by-hand", "hello.txt", b"hello")
    bare = f"{server.url}/buckets/{BUCKET}/collections/{collection}/records/bare"
    assert requests.put(bare, json={"data": {}}, auth=ALICE, timeout=30).status_code == 201

    everything = run(env, "download", "--folder", str(tmp_path / "all"))
    assert everything.returncode == 0, everything.stderr
    assert "skipped bare: no attachment" in everything.stdout.splitlines()
    assert (tmp_path / "all/sub/a.dat").read_bytes() == b"in a subfolder"
    assert (tmp_path / "all/top.txt").read_bytes() == b"at the top"
    assert (tmp_path / "all/hello.txt").read_bytes() == b"hello"

    named = run(
        env,
        "download",
        "./sub/a.dat",
        "hello.txt",
        "--id",
        "by-hand",
        "--folder",
        str(tmp_path / "some"),
    )
    assert named.returncode == 0, named.stderr
    assert sorted(
        str(p.relative_to(tmp_path / "some")) for p in (tmp_path / "some").rglob("*")
    ) == [
        DOWNLOADED,
        "hello.txt",
        "sub",
        "sub/a.dat",
    ]
    missing = run(env, "download", "bare", "nowhere.txt", "--folder", str(tmp_path / "none"))
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        "kinto-attachment: nowhere.txt: no such file or record",
        "kinto-attachment: bare: no attachment",
    ]

    # "greeting" is the name of a file upload attached, and the id of another record.
    greeting = tmp_path / "greeting"
    greeting.write_bytes(b"a file named greeting")
    assert run(env, "upload", str(greeting)).returncode == 0
    assert run(env, "upload", str(small), "--id", "greeting").returncode == 0
    ambiguous = run(env, "rm", "greeting")
    assert ambiguous.returncode == 1
    both = ", ".join(sorted([record_id_of("greeting"), "greeting"]))
    assert ambiguous.stderr == (
        f"kinto-attachment: greeting: names several records ({both}): give the record with --id\n"
    )
    assert run(env, "rm", "--id", "greeting", "sub/a.dat").returncode == 0
    assert record(server, collection, "greeting") is None
    assert record(server, collection, record_id_of("sub/a.dat")) is None
    assert record(server, collection, record_id_of("greeting")) is not None


def _killed_after_a_chunk(env, args, state):
    """Run the installed command with ``args`` and kill it once the server holds a chunk or
    more of its tus upload (as ``Ctrl-C``, a lost laptop lid, ``kill -9``)."""
    process = subprocess.Popen(
        [COMMAND, "--limit-rate", "8M", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline, offset = time.monotonic() + 60, 0
    while offset < 8 * MiB and time.monotonic() < deadline:
        time.sleep(0.2)
        for url in (json.loads(state.read_text()) if state.exists() else {}).values():
            head = requests.head(url, headers={"Tus-Resumable": "1.0.0"}, auth=ALICE, timeout=30)
            offset = int(head.headers.get("Upload-Offset", 0))
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 8 * MiB <= offset < 40 * MiB, offset


def test_a_resumed_upload_gets_the_data_and_permissions_of_the_run_that_finishes_it(
    server, collection, tmp_path, run
):
    """Found by review (2026-12-05).

    The resume key (``uploads.upload``: record URL, path, size, mtime) does not include
    ``--data`` nor ``--permissions``, which the server took from the tus ``Upload-Metadata``
    when the upload was *created*. A user who interrupts ``upload big.bin --permissions
    '{"read": ["system.Everyone"]}'`` because the permissions were wrong, and runs it again
    without them (or with ``--data`` corrected), gets the old ones: the record is made
    world-readable, with the old data, and the command says ``uploaded`` with exit code 0.
    The same goes for ``sync --as NAME`` after an interrupted ``sync`` (the record gets the
    old folder name in ``synced_from``). Fault: ``uploads.upload`` / ``_resumed`` (the
    upload's metadata never compared). Fix: compare the ``Upload-Metadata`` HEAD answers with
    the one this run would send (or key the entry by it too), and start over when it
    differs."""
    large = tmp_path / "big.bin"
    write_random_file(large, 40 * MiB)
    env = environment(server, collection, tmp_path)
    state = tmp_path / "cache/kinto-attachment/uploads.json"
    _killed_after_a_chunk(
        env,
        [
            "upload",
            str(large),
            "--data",
            '{"lang": "en"}',
            "--permissions",
            '{"read": ["system.Everyone"]}',
        ],
        state,
    )

    again = run(env, "upload", str(large), "--data", '{"lang": "fr"}')

    assert again.returncode == 0, again.stderr
    url = (
        f"{server.url}/buckets/{BUCKET}/collections/{collection}/records/{record_id_of('big.bin')}"
    )
    stored = requests.get(url, auth=ALICE, timeout=30).json()
    assert stored["data"]["attachment"]["hash"] == sha256_of(large)
    public = "system.Everyone" in stored["permissions"].get("read", [])
    assert (stored["data"]["lang"], public) == ("fr", False), "the first run's were applied"


def test_a_resumed_upload_of_a_file_rewritten_with_its_size_and_time_is_not_spliced(
    server, collection, tmp_path, run
):
    """Found by review (2026-12-05).

    The resume key trusts size + mtime to say the file is the one whose first bytes the
    server holds. A file rewritten with the same size and modification time (``rsync -t``,
    ``cp -p``, ``tar x``, a reproducible build's ``SOURCE_DATE_EPOCH``) after an interrupted
    ``sync`` is resumed: the server gets the *old* first chunk and the *new* rest, and
    attaches that splice, a file that never existed, to the record, replacing what was
    there. ``sync`` even knew the new sha256 (its plan, the mark it sends) and hashed the
    new file's prefix again (:class:`uploads.Expected`), but never compared it with what the
    upload was created for. The command then fails ("the server stored sha256 ..."), and the
    record's mark holds the *old* sha256, so every later sync calls it ``diverged`` and
    leaves the broken file there for good. Fault: ``uploads.upload`` (resume key without
    the content's sha256 when it is known; the upload's ``synced_from`` not compared). Fix:
    put the sha256 (when known: always for ``sync``) in the key, or compare the
    ``Upload-Metadata`` of HEAD with this run's, and start over when they differ."""
    site = tmp_path / "site"
    site.mkdir()
    large = site / "big.bin"
    write_random_file(large, 40 * MiB)
    env = environment(server, collection, tmp_path)
    state = tmp_path / "cache/kinto-attachment/uploads.json"
    _killed_after_a_chunk(env, ["sync", str(site)], state)

    times = large.stat()
    write_random_file(large, 40 * MiB)  # Same size, other bytes, the old time given back.
    os.utime(large, ns=(times.st_atime_ns, times.st_mtime_ns))
    again = run(env, "sync", str(site))

    stored = record(server, collection, record_id_of("big.bin"))
    later = run(env, "sync", str(site))
    outcome = (
        again.returncode,
        stored["attachment"]["hash"] == sha256_of(large),
        later.returncode,
    )
    assert outcome == (0, True, 0), again.stderr + later.stderr


def test_sync_delete_keeps_the_record_of_a_file_whose_name_is_only_normalised_otherwise(
    server, collection, tmp_path, run
):
    """Found by review (2026-12-05).

    A record id is ``uuid5(path)`` of the path's code points as the file system lists them,
    and ``sync --delete`` takes a mark's path for gone when no file has exactly those code
    points. The same folder lists ``café.txt`` NFC on Linux (and from most tools) and NFD
    from macOS HFS+ (or once copied from there by rsync/zip/a USB stick): a sync from the
    other machine uploads the file again onto a *new* record and deletes the record synced
    before, whose file is right there (the two names are one for a user, one for ``key``,
    which ``download`` and ``rm`` use, and one on macOS). Each machine's sync then flips the
    collection back: the record's id changes every time, and what was added to it by hand
    (fields, permissions, history) is deleted with it. This breaks "the same file always
    lands on the same record, from any machine" (``sync`` module) and deletes a record while
    its file is in the folder. Fault: ``names.record_id_of`` and ``sync.plan``/``sync.there``
    (exact code points). Fix: derive the id from ``unicodedata.normalize("NFC", path)`` (the
    same for every name already NFC, i.e. nearly all) and compare the paths of marks with
    the folder's NFC-normalised."""
    site = tmp_path / "site"
    site.mkdir()
    composed = unicodedata.normalize("NFC", "café.txt")
    decomposed = unicodedata.normalize("NFD", composed)
    (site / composed).write_bytes(b"menu\n")
    env = environment(server, collection, tmp_path)
    first = run(env, "sync", str(site))
    assert first.returncode == 0, first.stderr
    assert record(server, collection, record_id_of(composed)) is not None

    (site / composed).rename(site / decomposed)  # The folder, as macOS HFS+ lists it.
    again = run(env, "sync", str(site), "--delete")

    assert again.returncode == 0, again.stderr
    assert record(server, collection, record_id_of(composed)) is not None, again.stdout
