"""Resumable uploads with real tus clients against a live server: tuspy and tus-js-client.

Each client runs its example of docs/resumable-uploads.rst as written. A first run is
interrupted half-way (the client process stops), a second run of the same example resumes the
same upload, and the record's hash is then the file's. A third run finds the upload done (its
URL answers ``HEAD`` with the whole length) and sends nothing.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import requests

from ..support.live import (
    ALICE,
    COMMAND_TIMEOUT,
    client_env,
    documented_examples,
    run_bash,
    running_server,
    scratch_folder,
    sha256_of,
)


pytestmark = [pytest.mark.live, pytest.mark.usefixtures("checkout_left_as_it_was")]

SIZE = 20_000_000
PART = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("tus-server")) as live:
        yield live


@pytest.fixture(scope="module")
def readme():
    return documented_examples()


@pytest.fixture
def workdir(server, readme, tmp_path):
    """The scratch folder of docs/getting-started.rst, after its setup and the big file's."""
    folder = scratch_folder(readme["scratch"], tmp_path)
    for code in (readme["setup"].against(server.port), readme["large-setup"].code):
        result = run_bash(code, folder)
        assert result.returncode == 0, result
    assert (folder / "big.bin").stat().st_size == SIZE
    return folder


def record_of(server, record_id):
    url = f"{server.url}/buckets/website/collections/assets/records/{record_id}"
    response = requests.get(url, auth=ALICE, timeout=30)
    return response.json()["data"] if response.status_code == 200 else None


def offset_of(upload_url):
    response = requests.head(
        upload_url, auth=ALICE, headers={"Tus-Resumable": "1.0.0"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return int(response.headers["Upload-Offset"])


def stored_url(path):
    """The one upload URL a client stored to resume (tuspy or tus-js-client JSON)."""
    text = json.dumps(json.loads(path.read_text()))
    urls = {word.strip('"') for word in text.split() if "/attachment/uploads/" in word}
    urls = {url.rstrip('",}') for url in urls}
    assert len(urls) == 1, text
    return urls.pop()


def run(command, cwd, **env):
    result = subprocess.run(
        command,
        cwd=cwd,
        env={**client_env(cwd), **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    return result


def assert_completed(server, record_id, workdir, upload_url):
    record = record_of(server, record_id)
    assert record is not None
    attachment = record["attachment"]
    assert attachment["hash"] == sha256_of(workdir / "big.bin")
    assert attachment["size"] == SIZE
    download = requests.get(
        f"{server.url}/buckets/website/collections/assets/records/{record_id}/attachment",
        auth=ALICE,
        timeout=60,
    )
    assert hashlib.sha256(download.content).hexdigest() == attachment["hash"]
    # The upload is over: its URL tells it is done, and nothing of it is left on disk.
    assert offset_of(upload_url) == SIZE
    assert not [f for f in server.files() if f.startswith(".uploads/")]
    return record


def assert_run_again_sends_nothing(server, record, command, workdir, upload_url, **env):
    """A client that stored the URL runs again: it finds the upload done, prints its URL."""
    again = run(command, workdir, **env)
    assert again.returncode == 0, again
    assert again.stdout.strip() == upload_url
    assert record_of(server, record["id"]) == record  # Not even touched.


def test_tuspy_resumes_an_interrupted_upload(server, readme, workdir):
    code = readme["tuspy"].against(server.port)
    # The first run stops after two chunks: the process ends, the upload is half done.
    interrupted = code.replace("uploader.upload()", f"uploader.upload(stop_at={2 * PART})")
    assert interrupted != code
    (workdir / "interrupted.py").write_text(interrupted)
    first = run([sys.executable, "interrupted.py"], workdir)
    assert first.returncode == 0, first
    upload_url = stored_url(workdir / "tus-uploads.json")
    assert offset_of(upload_url) == 2 * PART
    assert record_of(server, "big-file") is None

    (workdir / "upload.py").write_text(code)
    second = run([sys.executable, "upload.py"], workdir)
    assert second.returncode == 0, second
    assert second.stdout.strip() == upload_url  # The same upload, resumed.
    record = assert_completed(server, "big-file", workdir, upload_url)
    assert record["kind"] == "dataset"
    assert_run_again_sends_nothing(
        server, record, [sys.executable, "upload.py"], workdir, upload_url
    )


@pytest.fixture(scope="module")
def tus_js(tmp_path_factory):
    """tus-js-client installed from the npm registry, as the documentation says."""
    npm = shutil.which("npm")
    node = shutil.which("node")
    if not (npm and node):
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if not path)
        message = f"{missing} not found on PATH: the tus-js-client test needs node and npm"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + " (CI=true: this test must run)", pytrace=False)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("tus-js")
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent", "tus-js-client@4"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result
    return folder / "node_modules"


INTERRUPT = """
// Preloaded by the test: the first run stops the process once two chunks are sent.
const tus = require("tus-js-client");
const start = tus.Upload.prototype.start;
tus.Upload.prototype.start = function () {
  this.options.onChunkComplete = (size, sent) => {
    if (sent >= 2 * 5 * 1024 * 1024) process.exit(3);
  };
  return start.call(this);
};
"""


def test_tus_js_client_resumes_an_interrupted_upload(server, readme, workdir, tus_js):
    (workdir / "upload.js").write_text(readme["tus-js"].against(server.port))
    (workdir / "interrupt.js").write_text(INTERRUPT)
    node_path = {"NODE_PATH": str(tus_js)}
    first = run(
        ["node", "--require", "./interrupt.js", "upload.js", "big.bin"], workdir, **node_path
    )
    assert first.returncode == 3, first
    upload_url = stored_url(workdir / "tus-js-uploads.json")
    assert offset_of(upload_url) == 2 * PART
    assert record_of(server, "big-file-js") is None

    second = run(["node", "upload.js", "big.bin"], workdir, **node_path)
    assert second.returncode == 0, second
    assert second.stdout.strip() == upload_url
    record = assert_completed(server, "big-file-js", workdir, upload_url)
    assert record["attachment"]["mimetype"] == "application/octet-stream"
    command = ["node", "upload.js", "big.bin"]
    assert_run_again_sends_nothing(server, record, command, workdir, upload_url, **node_path)


def test_tus_js_client_through_a_proxy_that_blocks_patch(server, readme, workdir, tus_js):
    """``overridePatchMethod``: every chunk is a POST with ``X-HTTP-Method-Override``."""
    code = readme["tus-js"].against(server.port).replace("big-file-js", "big-file-override")
    overriding = code.replace("chunkSize:", "overridePatchMethod: true,\n  chunkSize:")
    assert overriding != code
    (workdir / "upload.js").write_text(overriding)
    result = run(["node", "upload.js", "big.bin"], workdir, NODE_PATH=str(tus_js))
    assert result.returncode == 0, result
    upload_url = result.stdout.strip()
    assert_completed(server, "big-file-override", workdir, upload_url)
    path = re.escape(upload_url[len(f"http://localhost:{server.port}") :])
    chunks = re.findall(rf"\[request\.summary\] POST {path} 204 ", server.output())
    assert len(chunks) == -(-SIZE // PART), server.output()


def test_examples_are_there(readme):
    assert readme["tuspy"].language == "python"
    assert readme["tus-js"].language == "javascript"
    assert os.path.basename(readme["large-setup"].code.split()[-1]) == "big.bin"
