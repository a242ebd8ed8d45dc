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
import uuid
from pathlib import Path

import pytest
import requests

from kinto_attachment.cli.main import main
from kinto_attachment.cli.remote import record_id_of

from .live import (
    ALICE,
    _read_terminal,
    create_collection,
    running_server,
    sha256_of,
    write_random_file,
)
from .tcpproxy import TcpProxy


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

    def run_here(env, *args):
        for name in ("KINTO_SERVER", "KINTO_AUTH", "KINTO_BUCKET", "KINTO_COLLECTION"):
            monkeypatch.setenv(name, env[name])
        monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's refusal of the command line.
            code = e.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run_here


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


def upload_one(server, collection, name, content):
    url = f"{server.url}/buckets/{BUCKET}/collections/{collection}/records/{record_id_of(name)}"
    response = requests.post(
        url + "/attachment", files={"attachment": (name, content)}, auth=ALICE, timeout=60
    )
    assert response.status_code == 201, response.text
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
    part = target / "dataset.bin.part"
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

    # A file that does not have the record's sha256 is downloaded again, then verified.
    (target / "readme.txt").write_bytes(b"tampered")
    fourth = run(env, "download", "--folder", str(target), record_id_of("readme.txt"))
    assert fourth.returncode == 0 and "downloaded readme.txt" in fourth.stdout
    assert (target / "readme.txt").read_bytes() == b"read me"


def test_sync_plans_then_applies(server, proxy, collection, tmp_path, run):
    folder = tmp_path / "site"
    (folder / "fonts").mkdir(parents=True)
    (folder / "index.txt").write_bytes(b"v1")
    (folder / "fonts/a.woff2").write_bytes(b"font a")
    (folder / ".git").mkdir()
    (folder / ".git/config").write_bytes(b"not published")
    env = environment(server, collection, tmp_path, proxy)

    plan = run(env, "sync", str(folder), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines() == ["new        fonts/a.woff2", "new        index.txt"]
    assert record(server, collection, record_id_of("index.txt")) is None

    assert run(env, "sync", str(folder)).returncode == 0
    assert record(server, collection, record_id_of("fonts/a.woff2"))["attachment"]["size"] == 6

    (folder / "index.txt").write_bytes(b"v2")
    (folder / "fonts/a.woff2").unlink()
    plan = run(env, "sync", str(folder), "--delete", "--dry-run")
    gone = record_id_of("fonts/a.woff2")
    assert plan.stdout.splitlines() == ["changed    index.txt", f"delete     record {gone}"]

    before = proxy.sent
    applied = run(env, "sync", str(folder), "--delete")
    assert applied.returncode == 0, applied.stderr
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
    assert missing.stderr.startswith("kinto-attachment: nope: 404 ")
    refused = run({**env, "KINTO_AUTH": "mallory:x"}, "download", record_id_of("a.txt"))
    assert refused.returncode == 1
    bad = tmp_path / "x.exe"
    bad.write_bytes(b"MZ")
    nowhere = run({**env, "KINTO_COLLECTION": "missing"}, "upload", str(bad))
    assert nowhere.returncode == 1
    # One line: the file, the status and the server's own message.
    assert nowhere.stderr.startswith("kinto-attachment: x.exe: 404 collection "), nowhere.stderr
    assert len(nowhere.stderr.splitlines()) == 1
    usage = run(env, "upload", str(bad), str(bad), "--record", "r")
    assert usage.returncode == 2 and "one file" in usage.stderr
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
    assert absent.returncode == 1 and "absent: no such record" in absent.stderr


def test_limit_rate_paces_uploads_and_downloads_alike(monkeypatch):
    """``--limit-rate`` holds each way: the transfer sleeps whenever it is ahead of the rate."""
    from kinto_attachment.cli import remote

    now, slept = [100.0], []
    monkeypatch.setattr(remote.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(
        remote.time, "sleep", lambda s: (slept.append(s), now.__setitem__(0, now[0] + s))
    )
    pace = remote.Pace(2 * MiB)
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
    remote.Pace(None).passed(10 * MiB)
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
        failed = cli._upload(None, args, bars, [(str(file), "notes.txt", "notes")])
    assert failed
    expected = hashlib.sha256(b"what the file holds").hexdigest()
    assert (
        f"the server stored sha256 {'0' * 64}, the file has {expected}" in capsys.readouterr().err
    )


def test_limit_rate_spans_the_chunks_of_a_resumable_upload(monkeypatch, tmp_path):
    """The time between two chunks (the server's answer, the next request) counts towards
    the rate: 3 chunks at 8 MiB/s, each answered 1 s after its last byte, take 3 s paced + 1 s
    for the last answer, not 3 × (1 s + 1 s)."""
    from kinto_attachment.cli import remote, uploads

    now = [0.0]
    monkeypatch.setattr(remote.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(remote.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))
    file = tmp_path / "three-chunks.bin"
    file.write_bytes(os.urandom(3 * uploads.CHUNK_SIZE))

    class Server:
        def request(self, method, url, expected, headers, data):
            while data.read(remote.CHUNK):
                pass
            now[0] += 1  # Its fsync and answer, then the client's next request.
            offset = int(headers["Upload-Offset"]) + len(data)
            return types.SimpleNamespace(headers={"Upload-Offset": str(offset)})

    sent = []
    uploads._send(Server(), "url", file, 0, 3 * uploads.CHUNK_SIZE, sent.append, 8 * MiB)
    assert sum(sent) == 3 * uploads.CHUNK_SIZE
    assert now[0] == pytest.approx(4.0)
