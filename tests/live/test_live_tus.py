"""Resumable uploads with real tus clients against a live server: tuspy and tus-js-client.

Each client runs its example of docs/resumable-uploads.rst as written (tus-js-client's also
with ``parallelUploads``, which uses concatenation). A first run is
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
    ensure_tus_js,
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


@pytest.fixture
def setup_workdir(server, readme, tmp_path):
    """The scratch folder of docs/getting-started.rst after its setup only (no big file)."""
    folder = scratch_folder(readme["scratch"], tmp_path)
    result = run_bash(readme["setup"].against(server.port), folder)
    assert result.returncode == 0, result
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


def assert_attached(server, record_id, path, size):
    """The record's attachment is the file at ``path`` (``size`` bytes), and downloads as it;
    the record."""
    record = record_of(server, record_id)
    assert record is not None
    attachment = record["attachment"]
    assert attachment["hash"] == sha256_of(path)
    assert attachment["size"] == size
    download = requests.get(
        f"{server.url}/buckets/website/collections/assets/records/{record_id}/attachment",
        auth=ALICE,
        timeout=60,
    )
    assert hashlib.sha256(download.content).hexdigest() == attachment["hash"]
    return record


def assert_completed(server, record_id, workdir, upload_url):
    record = assert_attached(server, record_id, workdir / "big.bin", SIZE)
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
def tus_js():
    """tus-js-client installed from the npm registry, as the documentation says (kept in the
    cache the benchmarks share)."""
    npm = shutil.which("npm")
    node = shutil.which("node")
    if not (npm and node):
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if not path)
        message = f"{missing} not found on PATH: the tus-js-client test needs node and npm"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + " (CI=true: this test must run)", pytrace=False)
        pytest.skip(message)
    return ensure_tus_js()


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


PARALLEL_INTERRUPT = """
// Preloaded by the test: the first run stops the process once the parallel upload's URLs are
// stored (tus-js-client stores them when every partial upload has one) and a few chunks are
// sent. The partial uploads inherit the options, this callback too.
const fs = require("fs");
const tus = require("tus-js-client");
const start = tus.Upload.prototype.start;
let chunks = 0;
tus.Upload.prototype.start = function () {
  this.options.onChunkComplete = () => {
    chunks += 1;
    const stored = fs.existsSync("tus-js-parallel.json")
      ? fs.readFileSync("tus-js-parallel.json", "utf8")
      : "";
    if (chunks >= 3 && stored.includes("parallelUploadUrls")) process.exit(3);
  };
  return start.call(this);
};
"""


def test_tus_js_client_parallel_uploads_resume(server, readme, setup_workdir, tus_js):
    """``parallelUploads: 4``: partial uploads sent at once, then the final one
    (concatenation). Interrupted, then run again: the same partial uploads resume."""
    size = 4 * 1024 * 1024 + 3
    (setup_workdir / "parallel.bin").write_bytes(os.urandom(size))
    code = readme["tus-js"].against(server.port).replace("big-file-js", "parallel-js")
    code = code.replace("tus-js-uploads.json", "tus-js-parallel.json")
    parallel = re.sub(r"\n\s*uploadSize: size,", "\n  parallelUploads: 4,", code)
    parallel = parallel.replace("chunkSize: 5 * 1024 * 1024", "chunkSize: 256 * 1024")
    assert "parallelUploads" in parallel and "256 * 1024" in parallel
    (setup_workdir / "parallel.js").write_text(parallel)
    (setup_workdir / "interrupt.js").write_text(PARALLEL_INTERRUPT)
    node_path = {"NODE_PATH": str(tus_js)}
    command = ["node", "parallel.js", "parallel.bin"]

    first = run(["node", "--require", "./interrupt.js", *command[1:]], setup_workdir, **node_path)
    assert first.returncode == 3, first
    stored = json.loads((setup_workdir / "tus-js-parallel.json").read_text())
    (partials,) = [entry["parallelUploadUrls"] for entry in stored.values()]
    assert len(partials) == 4
    assert record_of(server, "parallel-js") is None
    sent = sum(offset_of(url) for url in partials)
    assert 0 < sent < size

    second = run(command, setup_workdir, **node_path)
    assert second.returncode == 0, second
    final_url = second.stdout.strip()
    assert_attached(server, "parallel-js", setup_workdir / "parallel.bin", size)
    head = requests.head(final_url, auth=ALICE, headers={"Tus-Resumable": "1.0.0"}, timeout=30)
    assert head.headers["Upload-Concat"] == "final;" + " ".join(partials)
    assert head.headers["Upload-Offset"] == str(size)
    # The partial uploads resumed: four created in all, and the final one; all gone now.
    uploads = re.escape(
        "/v1/buckets/website/collections/assets/records/parallel-js/attachment/uploads"
    )
    created = re.findall(rf"\[request\.summary\] POST {uploads} 201 ", server.output())
    assert len(created) == 5, server.output()
    for url in partials:
        assert (
            requests.head(url, auth=ALICE, headers={"Tus-Resumable": "1.0.0"}).status_code == 404
        )
    assert not [f for f in server.files() if f.startswith(".uploads/")]
