"""The browser example (``examples/browser``) in a real browser: Debian's Chromium, headless.

The page is served by the documentation's own commands (``npm ci``, ``npm start``) from a copy of
the folder, on another origin than the API (so CORS is what a real deployment meets), and
``tests/support/browser/drive.js`` (playwright-core, which downloads no browser) uses it as a
person would: picks a file, starts, pauses, resumes, downloads. The test then checks what the
server stored, what the page downloaded, and the server's request log; the screenshot is kept in
``var/test-artifacts/`` (or ``$KINTO_ATTACHMENT_TEST_ARTIFACTS``).

Chromium, node and npm must be installed (``apt-get install chromium nodejs npm``): without
them the test is skipped, except under ``CI=true`` where it fails.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from ..support.live import (
    ALICE,
    REQUEST_TIMEOUT,
    ROOT,
    client_env,
    documented_examples,
    running_server,
    write_random_file,
)


pytestmark = [pytest.mark.live, pytest.mark.usefixtures("checkout_left_as_it_was")]

EXAMPLE = ROOT / "examples" / "browser"
DRIVER = ROOT / "tests" / "support" / "browser"
ARTIFACTS = Path(
    os.environ.get("KINTO_ATTACHMENT_TEST_ARTIFACTS") or ROOT / "var" / "test-artifacts"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SIZE = 24 * 1024 * 1024
#: Small chunks: many requests, so that the pause lands while the upload runs.
CHUNK_SIZE = 128 * 1024
NPM_TIMEOUT = 300
DRIVE_TIMEOUT = 240
#: What ``npm start`` prints once it listens (Python's http.server), with the port it bound.
SERVING = re.compile(r"Serving HTTP on 127\.0\.0\.1 port (\d+)")


def browser():
    """Chromium's path, or skip (fail under CI) saying what to install."""
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    missing = [
        name
        for name, found in (
            ("chromium", chromium),
            ("node", shutil.which("node")),
            ("npm", shutil.which("npm")),
        )
        if not found
    ]
    if missing:
        message = (
            f"{', '.join(missing)} not found: the browser test needs Debian's chromium, node "
            "and npm (apt-get install chromium nodejs npm; or set CHROMIUM to a Chromium)"
        )
        if IN_CI:
            pytest.fail(message + " (CI=true: this test must run)", pytrace=False)
        pytest.skip(message)
    return chromium


def copy_without_modules(source, destination):
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("node_modules"))
    return destination


def npm_ci(folder, *options):
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", *options],
        cwd=folder,
        env=client_env(folder),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT,
    )
    assert result.returncode == 0, result
    # Installs cleanly on the Node.js of these machines (20): no "Unsupported engine".
    assert "EBADENGINE" not in result.stdout + result.stderr, result


@pytest.fixture(scope="module")
def chromium():
    return browser()


@pytest.fixture(scope="module")
def page_origin(chromium, tmp_path_factory):
    """The documented commands in a copy of examples/browser; ``npm start`` on a free port."""
    commands = documented_examples()["browser"].code.splitlines()
    assert commands[0] == "cd examples/browser", commands
    assert [line.split("#")[0].strip() for line in commands[1:]] == ["npm ci", "npm start"]
    folder = copy_without_modules(EXAMPLE, tmp_path_factory.mktemp("browser") / "browser")
    npm_ci(folder)
    log = folder.parent / "npm-start.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            ["npm", "start"],
            cwd=folder,
            env={**client_env(folder), "PORT": "0", "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # npm, its shell and Python: stopped together.
        )
    try:
        deadline = time.monotonic() + 30
        while not (found := SERVING.search(log.read_text())):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield f"http://127.0.0.1:{found.group(1)}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


@pytest.fixture(scope="module")
def drive(chromium, tmp_path_factory):
    """``tests/support/browser/drive.js``, with playwright-core installed beside it."""
    folder = copy_without_modules(DRIVER, tmp_path_factory.mktemp("driver") / "driver")
    npm_ci(folder)

    def run(url, file, screenshot):
        result = subprocess.run(
            ["node", "drive.js", url, str(file), str(screenshot)],
            cwd=folder,
            env={**client_env(folder), "CHROMIUM": chromium},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=DRIVE_TIMEOUT,
        )
        assert result.returncode == 0, result
        return json.loads(result.stdout.strip().splitlines()[-1])

    return run


def test_upload_pause_resume_and_download_in_chromium(page_origin, drive, tmp_path):
    file = tmp_path / "photo.bin"
    sha256 = write_random_file(file, SIZE)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "browser-upload.png"
    screenshot.unlink(missing_ok=True)
    (tmp_path / "server").mkdir()
    with running_server(tmp_path / "server") as server:
        query = f"server={server.url}&bucket=browser&collection=uploads&chunkSize={CHUNK_SIZE}"
        shown = drive(f"{page_origin}/index.html?{query}", file, screenshot)
        log = server.output()
        record_url = (
            f"{server.url}/buckets/browser/collections/uploads/records/{shown['record']['id']}"
        )
        stored = requests.get(record_url, auth=ALICE, timeout=REQUEST_TIMEOUT).json()["data"]

    assert shown["errors"] == []
    # Paused half-way, and nothing moved while paused.
    assert shown["paused"]["paused"] and 0 < shown["paused"]["sent"] < SIZE, shown
    assert shown["stillPaused"]["sent"] == shown["paused"]["sent"], shown
    # The stored file is the picked one, with the record's fields from Upload-Metadata.
    attachment = stored["attachment"]
    assert (attachment["hash"], attachment["size"]) == (sha256, SIZE)
    assert (attachment["filename"], stored["title"]) == ("photo.bin", "photo.bin")
    assert shown["record"] == stored
    # Downloaded through {record}/attachment, and fetched from `location` (serve_files), by
    # the page of another origin: the bytes and the headers a script reads.
    assert shown["downloaded"]["sha256"] == sha256
    assert "photo.bin: sha256 verified" in shown["downloaded"]["verdict"]  # Content-Disposition
    assert shown["fetched"]["status"] == 200 and shown["fetched"]["sha256"] == sha256
    stored_name = attachment["location"].rsplit("/", 1)[-1]
    assert stored_name in shown["fetched"]["disposition"]
    assert "is the attachment of record" in shown["status"]
    # The resume asked the server where the upload was (HEAD), as the request log tells.
    uploads = re.escape(record_url[len(server.url.rsplit("/v1", 1)[0]) :]) + "/attachment/uploads/"
    assert re.search(rf"\[request\.summary\] HEAD {uploads}\w+ 200 \d+ms user=basicauth:", log), (
        log
    )
    assert re.search(rf"\[request\.summary\] PATCH {uploads}\w+ 204 ", log), log
    assert screenshot.read_bytes().startswith(b"\x89PNG")
