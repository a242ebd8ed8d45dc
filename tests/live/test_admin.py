"""Kinto Admin (``admin/``, what ``make admin`` builds and serves) in a real browser.

The admin is built as ``make admin`` builds it (``npm ci``, then ``admin/build.mjs``: Kinto Admin
from the npm registry, bundled by esbuild), once, then from a cache kept outside the work tree
under a name that changes with ``admin/``'s files. It is served by Python's ``http.server`` on
another origin than the API, as ``make admin`` serves it beside ``make serve``.
``tests/support/browser/admin.js`` uses it in Debian's Chromium, headless, as a person would:
signs in with Basic Auth, creates a bucket and a collection with attachments enabled, creates a
record with a file, replaces it, deletes it. After each step the test checks through the API
what the server stored. The screenshot of the record's page with its attachment is kept in
``var/test-artifacts/`` (or ``$KINTO_ATTACHMENT_TEST_ARTIFACTS``).

Chromium, node and npm must be installed: without them the test is skipped, except under
``CI=true`` where it fails.
"""

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ..support.live import (
    ALICE,
    ROOT,
    built_once,
    client_env,
    get,
    running_server,
    sha256_of,
    started,
    write_random_file,
)
from .test_browser import (
    ARTIFACTS,
    DRIVER,
    NPM_TIMEOUT,
    SERVING,
    browser,
    copy_without_modules,
    npm_ci,
)


pytestmark = pytest.mark.live

ADMIN = ROOT / "admin"
#: Where the builds of ``admin/`` are kept between runs, one per content of its files.
ADMIN_CACHE = Path(
    os.environ.get("KINTO_ATTACHMENT_ADMIN_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kinto-attachment-admin"
)
#: What a build leaves in ``admin/`` (gitignored): not what the build is made from.
BUILT = ("node_modules", "build")
DRIVE_TIMEOUT = 300
#: What Chromium says a file of unknown type is.
BINARY = "application/octet-stream"


def admin_sources():
    """``admin/``'s own files (relative path, content), in a stable order."""
    return sorted(
        (str(path.relative_to(ADMIN)), path.read_bytes())
        for path in ADMIN.rglob("*")
        if path.is_file() and path.relative_to(ADMIN).parts[0] not in BUILT
    )


def built_admin():
    """The folder of Kinto Admin's build (``index.html``...), built on first use."""
    digest = hashlib.sha256()
    for name, content in admin_sources():
        digest.update(f"{name}\0{len(content)}\0".encode() + content)
    folder = ADMIN_CACHE / f"admin-{digest.hexdigest()[:16]}"

    def build(folder):
        copy_without_modules(ADMIN, folder)
        npm_ci(folder, "--ignore-scripts")
        subprocess.run(
            ["node", "build.mjs"],
            check=True,
            cwd=folder,
            env=client_env(folder),
            stdin=subprocess.DEVNULL,
            timeout=NPM_TIMEOUT,
        )

    return built_once(folder, build) / "build"


@pytest.fixture(scope="module")
def admin_origin(tmp_path_factory):
    """The build served as ``make admin`` serves it, on a free port."""
    browser()
    build = built_admin()
    folder = tmp_path_factory.mktemp("admin")
    command = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]
    command += ["--directory", str(build), "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with started(folder, None, env=env, command=command, serving=SERVING) as server:
        server.wait_bound()
        yield server.origin


@pytest.fixture(scope="module")
def admin_driver(tmp_path_factory):
    """``tests/support/browser/admin.js``, with playwright-core installed beside it."""
    chromium = browser()
    folder = copy_without_modules(DRIVER, tmp_path_factory.mktemp("driver") / "driver")
    npm_ci(folder)
    return folder, chromium


class Steps:
    """``admin.js`` (or another page ``script`` beside it) running: each of its steps read,
    checked by the test, then let go on."""

    def __init__(self, driver, arguments, log, script="admin.js"):
        folder, chromium = driver
        self.log, self.script = log, script
        with open(log, "wb") as errors:
            self.process = subprocess.Popen(
                ["node", script, *map(str, arguments)],
                cwd=folder,
                env={**client_env(folder), "CHROMIUM": chromium},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        # Each step of the page has its own timeout; this one bounds the whole run.
        self.watchdog = threading.Timer(DRIVE_TIMEOUT, self.process.kill)
        self.watchdog.start()

    def next(self, expected):
        """Wait for the page's step ``expected``; what ``admin.js`` says of it."""
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(10)
            pytest.fail(
                f"{self.script} ended ({self.process.returncode}) before step {expected!r}:\n"
                + self.log.read_text(errors="replace"),
                pytrace=False,
            )
        said = json.loads(line)
        assert said["step"] == expected, said
        return said

    def go_on(self):
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def close(self):
        """Wait for the end of the script (which ends early once its stdin is closed)."""
        self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.watchdog.cancel()


def attachment_of(record):
    attachment = record["attachment"]
    return attachment and {k: attachment[k] for k in ("filename", "hash", "size", "mimetype")}


def described(path, sha256, mimetype):
    """What :func:`attachment_of` a record whose file is ``path`` is."""
    return {
        "filename": path.name,
        "hash": sha256,
        "size": path.stat().st_size,
        "mimetype": mimetype,
    }


def test_upload_replace_and_delete_an_attachment_in_kinto_admin(
    admin_origin, admin_driver, tmp_path
):
    first, second = tmp_path / "scan.bin", tmp_path / "scan-2.png"
    first_sha256 = write_random_file(first, 300 * 1024)
    second_sha256 = write_random_file(second, 200 * 1024)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "admin-attachment.png"
    screenshot.unlink(missing_ok=True)
    (tmp_path / "server").mkdir()
    with running_server(tmp_path / "server") as server:
        alice = get(f"{server.url}/", auth=ALICE).json()["user"]["id"]
        arguments = [f"{admin_origin}/", server.url + "/", ":".join(ALICE), first, second]
        steps = Steps(admin_driver, [*arguments, screenshot], tmp_path / "admin.log")
        try:
            steps.next("signed-in")
            steps.go_on()

            bucket_id = steps.next("bucket")["bucket"]
            bucket = get(f"{server.url}/buckets/{bucket_id}").json()
            assert bucket["permissions"]["write"] == [alice], bucket
            steps.go_on()

            said = steps.next("collection")
            collection_url = f"{server.url}/buckets/{bucket_id}/collections/{said['collection']}"
            collection = get(collection_url).json()["data"]
            assert collection["attachment"] == {"enabled": True, "required": False}
            steps.go_on()

            steps.next("uploaded")
            [record] = get(f"{collection_url}/records").json()["data"]
            record_url = f"{collection_url}/records/{record['id']}"
            assert record["title"] == "A scan"
            assert attachment_of(record) == described(first, first_sha256, BINARY)
            first_location = record["attachment"]["location"]
            assert sha256_of(server.path_of(first_location)) == first_sha256
            steps.go_on()

            steps.next("replaced")
            [replaced] = get(f"{collection_url}/records").json()["data"]
            assert (replaced["id"], replaced["title"]) == (record["id"], "A scan")
            assert attachment_of(replaced) == described(second, second_sha256, "image/png")
            second_location = replaced["attachment"]["location"]
            assert hashlib.sha256(get(second_location).content).hexdigest() == second_sha256
            # The replaced file is gone (config/kinto.ini: no grace period).
            get(first_location, status=404)
            kept = server.path_of(second_location).relative_to(server.base_path)
            assert server.files() == [str(kept)]
            steps.go_on()

            steps.next("deleted")
            deleted = get(record_url).json()["data"]
            assert deleted["title"] == "A scan" and deleted["attachment"] is None, deleted
            get(second_location, status=404)
            assert server.files() == []
            steps.go_on()

            assert steps.next("done")["errors"] == []
        finally:
            steps.close()
    assert steps.process.returncode == 0, steps.log.read_text()
    assert screenshot.read_bytes().startswith(b"\x89PNG")


def test_make_admin_runs_what_the_test_above_runs():
    """``make admin`` builds with ``npm_ci(..., "--ignore-scripts")`` and ``build.mjs``, and
    serves with ``http.server``, as :func:`built_admin` and ``admin_origin`` do."""
    # Under ``make test``, MAKEFLAGS and MAKELEVEL would make it a sub-make that names folders.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry_run = subprocess.run(
        ["make", "--always-make", "--dry-run", "--no-print-directory", "admin", "PYTHON=python3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert dry_run.stdout.splitlines() == [
        "cd admin && npm ci --no-audit --no-fund --ignore-scripts && node build.mjs",
        "python3 -m http.server --bind 127.0.0.1 --directory admin/build 8889",
    ]
