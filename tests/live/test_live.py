"""Live tests: ``pserve`` on the shipped configuration, driven by HTTPie, curl and kinto-http.

The documented examples (README.rst and docs/) are run as written (only their port differs), so
the documentation and the tests cannot drift apart; docs/getting-started.rst is run whole, in
its order.
"""

import filecmp
import hashlib
import json
import mimetypes
import os
import socket

import kinto_http
import pytest
import requests

import kinto_attachment
from kinto_attachment.web.streams import CHUNK_SIZE

from ..support.live import (
    ALICE,
    REQUEST_TIMEOUT,
    ROOT,
    code_blocks,
    create_collection,
    curl,
    documented_examples,
    get,
    run_bash,
    run_python,
    running_server,
    scratch_folder,
    sha256_of,
    write_random_file,
)


pytestmark = [pytest.mark.live, pytest.mark.usefixtures("checkout_left_as_it_was")]

MiB = 1024 * 1024
HELLO = b"Hello, Kinto!"
ASSETS = "/buckets/website/collections/assets"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("live-server")) as live:
        yield live


@pytest.fixture(scope="module")
def readme():
    """The documented examples, by name (README.rst and docs/)."""
    return documented_examples()


@pytest.fixture(scope="module")
def workdir(server, readme, tmp_path_factory):
    """The scratch folder of docs/getting-started.rst, where its setup example ran: bucket,
    collection and hello.txt exist."""
    cwd = scratch_folder(readme["scratch"], tmp_path_factory.mktemp("readme"))
    result = run_bash(readme["setup"].against(server.port), cwd)
    assert result.returncode == 0, result
    assert (cwd / "hello.txt").read_bytes() == HELLO
    get(server.url + ASSETS)
    return cwd


def record_data(server, path, auth=ALICE):
    return get(server.url + path, auth=auth).json()["data"]


def curl_upload(record_url, filename, cwd):
    """``curl -u alice:passwd -F attachment=@filename {record_url}/attachment``."""
    return curl(
        "-u", "alice:passwd", "-F", f"attachment=@{filename}", record_url + "/attachment", cwd=cwd
    )


def assert_hello(server, attachment, filename="hello.txt"):
    """``attachment`` describes hello.txt, and its location serves the same bytes."""
    assert attachment["hash"] == hashlib.sha256(HELLO).hexdigest()
    assert attachment["size"] == len(HELLO)
    assert attachment["mimetype"] == "text/plain"
    assert attachment["filename"] == filename
    download = requests.get(attachment["location"], timeout=REQUEST_TIMEOUT)
    assert download.status_code == 200, attachment
    assert download.content == HELLO
    assert server.path_of(attachment["location"]).read_bytes() == HELLO


def test_documented_examples_are_marked(readme):
    """Each example is on its page, and none is lost when a page moves."""
    assert {name: (example.page, example.language) for name, example in readme.items()} == {
        "readme": ("README.rst", "bash"),
        "scratch": (GETTING_STARTED, "bash"),
        "setup": (GETTING_STARTED, "bash"),
        "httpie": (GETTING_STARTED, "bash"),
        "download": (GETTING_STARTED, "bash"),
        "curl": (GETTING_STARTED, "bash"),
        "python": (GETTING_STARTED, "python"),
        "delete": (GETTING_STARTED, "bash"),
        "slimfaas": ("docs/data-files.rst", "bash"),
        "large-setup": ("docs/resumable-uploads.rst", "bash"),
        "tuspy": ("docs/resumable-uploads.rst", "python"),
        "tus-js": ("docs/resumable-uploads.rst", "javascript"),
        "browser": ("docs/resumable-uploads.rst", "bash"),
        "cli": ("docs/cli.rst", "bash"),
    }


GETTING_STARTED = "docs/getting-started.rst"
#: The commands of the first page that no test runs: the server is started as ``make serve``
#: starts it (:func:`running_server`), and the clients' virtualenv is on every command's PATH.
NOT_RUN = ("make serve", ". .venv/bin/activate")


def test_getting_started_runs_as_written(tmp_path_factory):
    """Every command of the first page, in the page's order, on a fresh server: as a newcomer
    types them, each one after the other, from the root of the clone into the page's scratch
    folder."""
    blocks = code_blocks(ROOT / GETTING_STARTED)
    commands = [b for b in blocks if b.language in ("bash", "python")]
    unmarked = [" ".join(b.code.split()[:2]) for b in commands if b.name is None]
    assert unmarked == list(NOT_RUN), (
        f"mark the commands of {GETTING_STARTED}: `.. live-test: NAME`"
    )
    home, cwd = tmp_path_factory.mktemp("getting-started"), ROOT
    outputs = {}
    with running_server(tmp_path_factory.mktemp("getting-started-server")) as server:
        for block in commands:
            if block.name is None:
                continue
            if block.name == "scratch":
                cwd = scratch_folder(block, home)
                continue
            run = run_python if block.language == "python" else run_bash
            result = run(block.against(server.port), cwd)
            assert result.returncode == 0, (block.page, block.line, result)
            outputs[block.name] = result.stdout

        assert "201 Created" in outputs["httpie"]
        # HTTPie exits 0 on an error status: each of the two GETs must have answered 200.
        assert outputs["download"].count("HTTP/1.1 200 OK") == 2, outputs["download"]
        record, download = outputs["download"].split("HTTP/1.1 200 OK")[1:]
        assert (
            '"lang": "en"' in record and '"hash": "' + hashlib.sha256(HELLO).hexdigest() in record
        )
        assert download.rstrip().endswith(HELLO.decode())
        assert json.loads(outputs["curl"])["size"] == len(HELLO)
        assert "204 No Content" in outputs["delete"]
        assert record_data(server, ASSETS + "/records/hello-python")["attachment"] is None
        assert_hello(server, record_data(server, ASSETS + "/records/hello-curl")["attachment"])
        # The files of the HTTPie and curl uploads; the Python one's was deleted.
        assert len(server.files()) == 2, server.files()


def test_readme_front_page(server, readme, tmp_path):
    """README.rst's one example, from the root of the clone into a scratch folder: the default
    bucket, nothing created beforehand."""
    result = run_bash(readme["readme"].against(server.port), ROOT, home=tmp_path)

    assert result.returncode == 0, result
    reply = json.loads(result.stdout)
    assert_hello(server, reply)
    record = record_data(server, "/buckets/default/collections/notes/records/hello")
    assert record["attachment"] == reply


def test_readme_httpie(server, readme, workdir):
    result = run_bash(readme["httpie"].against(server.port), workdir)

    assert result.returncode == 0, result
    assert "201 Created" in result.stdout, result
    record = record_data(server, ASSETS + "/records/c2ce1975-0e52-4b2f-a5db-80166aeca689")
    assert record["type"] == "greeting"
    assert record["lang"] == "en"
    assert_hello(server, record["attachment"])


def test_readme_curl(server, readme, workdir):
    result = run_bash(readme["curl"].against(server.port), workdir)

    assert result.returncode == 0, result
    reply = json.loads(result.stdout)
    assert reply["hash"] == hashlib.sha256(HELLO).hexdigest()
    assert reply["size"] == len(HELLO)
    record = record_data(server, ASSETS + "/records/hello-curl")
    assert record["name"] == "Mac Fly"
    assert record["age"] == 42
    assert record["attachment"] == reply
    assert_hello(server, record["attachment"])


def test_readme_python(server, readme, workdir):
    example = readme["python"]
    result = run_python(example.against(server.port), workdir)

    assert result.returncode == 0, result
    location = result.stdout.strip()
    download = requests.get(location, timeout=REQUEST_TIMEOUT)
    assert download.status_code == 200, result
    assert download.content == HELLO
    # permissions={"read": ["system.Everyone"]}: readable without credentials.
    record = record_data(server, ASSETS + "/records/hello-python", auth=None)
    assert record["type"] == "greeting"
    assert record["attachment"]["location"] == location
    assert_hello(server, record["attachment"])


def test_readme_command_line(server, readme, workdir):
    result = run_bash(readme["cli"].against(server.port), workdir)

    assert result.returncode == 0, result
    assert "uploaded hello.txt (greeting)" in result.stdout, result
    assert "new        welcome.txt" in result.stdout, result
    assert "uploaded welcome.txt" in result.stdout, result
    assert (workdir / "mirror/hello.txt").read_bytes() == HELLO
    assert "deleted attachment of greeting" in result.stdout, result
    record = record_data(server, ASSETS + "/records/greeting")
    assert record["lang"] == "en" and record["attachment"] is None


def test_kinto_http_client(server, tmp_path):
    client = kinto_http.Client(server_url=server.url, auth=ALICE)
    client.create_bucket(id="kinto-http", if_not_exists=True)
    client.create_collection(id="docs", bucket="kinto-http", if_not_exists=True)
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"title": "Report", "values": list(range(1000))}))
    where = {"id": "report", "bucket": "kinto-http", "collection": "docs"}

    uploaded = client.add_attachment(filepath=str(path), data={"title": "Report"}, **where)

    assert uploaded["hash"] == sha256_of(path)
    assert uploaded["size"] == path.stat().st_size
    assert uploaded["filename"] == "report.json"
    assert uploaded["mimetype"] == "application/json"
    record = client.get_record(**where)["data"]
    assert record["title"] == "Report"
    assert record["attachment"] == uploaded
    downloaded = client.download_attachment(record, filepath=str(tmp_path / "downloaded"))
    assert filecmp.cmp(downloaded, path, shallow=False)

    stored = server.path_of(uploaded["location"])
    client.remove_attachment(**where)
    assert client.get_record(**where)["data"]["attachment"] is None
    assert not stored.exists()


def test_upload_larger_than_a_chunk_streams_to_disk_then_delete(server, tmp_path):
    create_collection(server, "live", "big")
    url = f"{server.url}/buckets/live/collections/big/records/big-curl"
    size = 5 * MiB + 12345
    assert size > CHUNK_SIZE
    digest = write_random_file(tmp_path / "big.bin", size)

    status, reply = curl_upload(url, "big.bin", cwd=tmp_path)

    assert status == 201, reply
    assert reply["hash"] == digest
    assert reply["size"] == size
    stored = server.path_of(reply["location"])
    assert filecmp.cmp(stored, tmp_path / "big.bin", shallow=False)
    assert record_data(server, url.removeprefix(server.url))["attachment"] == reply

    status, body = curl("-u", "alice:passwd", "-X", "DELETE", url + "/attachment", cwd=tmp_path)

    assert status == 204, body
    assert not stored.exists()
    assert record_data(server, url.removeprefix(server.url))["attachment"] is None
    assert not [name for name in server.files() if name.endswith(".part")]


def test_upload_to_the_default_bucket(server, tmp_path):
    (tmp_path / "hello.txt").write_bytes(HELLO)
    url = f"{server.url}/buckets/default/collections/tasks/records/r1"

    status, reply = curl_upload(url, "hello.txt", cwd=tmp_path)

    assert status == 201, reply
    assert_hello(server, reply)
    record = get(url).json()["data"]
    assert record["attachment"] == reply


def test_server_memory_does_not_grow_with_the_upload(tmp_path_factory, tmp_path):
    size = 64 * MiB
    limit = 40 * MiB
    # A server of its own, so that no other test's peak hides this one's.
    with running_server(tmp_path_factory.mktemp("memory-server")) as server:
        create_collection(server, "memory", "uploads")
        url = f"{server.url}/buckets/memory/collections/uploads/records"
        write_random_file(tmp_path / "warm-up.bin", 2 * CHUNK_SIZE)
        status, reply = curl_upload(url + "/warm-up", "warm-up.bin", cwd=tmp_path)
        assert status == 201, reply
        try:
            digest = write_random_file(tmp_path / "huge.bin", size)
            before = server.vm_hwm()

            status, reply = curl_upload(url + "/huge", "huge.bin", cwd=tmp_path)

            growth = server.vm_hwm() - before
        finally:
            (tmp_path / "huge.bin").unlink(missing_ok=True)
        assert status == 201, reply
        assert reply["hash"] == digest
        assert reply["size"] == size
        assert growth < limit, (
            f"peak memory grew by {growth / MiB:.1f} MiB during a {size // MiB} MiB upload"
        )

        # Downloads stream too: through Kinto, and through /data/files.
        for download_url in (url + "/huge/attachment", f"{server.url}/data/files/huge"):
            if "data/files" in download_url:
                with open(server.path_of(reply["location"]), "rb") as body:
                    posted = requests.post(
                        f"{server.url}/data/files?id=huge", data=body, timeout=REQUEST_TIMEOUT
                    )
                assert posted.status_code == 200, posted.text
            before = server.vm_hwm()
            received = hashlib.sha256()
            with requests.get(
                download_url, auth=ALICE, stream=True, timeout=REQUEST_TIMEOUT
            ) as response:
                assert response.status_code == 200, response.text
                assert response.headers["Content-Length"] == str(size)
                assert "Transfer-Encoding" not in response.headers
                for chunk in response.iter_content(CHUNK_SIZE):
                    received.update(chunk)
            growth = server.vm_hwm() - before
            assert received.hexdigest() == digest
            assert growth < limit, (
                f"peak memory grew by {growth / MiB:.1f} MiB while serving {download_url}"
            )

        deleted = requests.delete(url + "/huge/attachment", auth=ALICE, timeout=REQUEST_TIMEOUT)
        assert deleted.status_code == 204, deleted.text
        assert not server.path_of(reply["location"]).exists()


def test_readme_slimfaas(server, readme, workdir):
    result = run_bash(readme["slimfaas"].against(server.port), workdir)

    assert result.returncode == 0, result
    report = (workdir / "report.pdf").read_bytes()
    assert report.startswith(b"%PDF-1.7")
    assert (workdir / "out.bin").read_bytes() == report
    # The listing, before the final DELETE, had both files: the generated id and ours.
    listed = json.loads(result.stdout[result.stdout.index("[") : result.stdout.rindex("]") + 1])
    ids = {entry["id"] for entry in listed}
    assert "my-file-001" in ids and len(ids) == 2
    generated = (ids - {"my-file-001"}).pop()
    assert result.stdout.startswith(generated)
    for entry in listed:
        assert entry["filename"] == "report.pdf"
        assert entry["mimetype"] == "application/pdf"
        assert entry["hash"] == hashlib.sha256(report).hexdigest()
    gone = requests.get(f"http://localhost:{server.port}/data/files/my-file-001", timeout=10)
    assert gone.status_code == 404
    kept = requests.get(f"http://localhost:{server.port}/data/files/{generated}", timeout=10)
    assert kept.content == report


def test_client_disconnect_mid_upload_leaves_nothing(server, tmp_path):
    """A client that goes away half-way: no file, no record, the previous attachment intact."""
    create_collection(server, "website", "disconnects")
    path = "/v1/buckets/website/collections/disconnects/records/cut"
    write_random_file(tmp_path / "first.bin", 1000)
    status, previous = curl_upload(
        f"{server.url}/buckets/website/collections/disconnects/records/cut",
        "first.bin",
        cwd=tmp_path,
    )
    assert status == 201, previous
    files_before = server.files()

    boundary = "cut-here"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="attachment"; filename="cut.bin"\r\n\r\n'
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(
            (
                f"POST {path}/attachment HTTP/1.1\r\n"
                f"Host: localhost:{server.port}\r\n"
                "Authorization: Basic YWxpY2U6cGFzc3dk\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {10 * MiB}\r\n\r\n"
            ).encode()
            + head
            + os.urandom(3 * MiB)
        )
    # The server must still answer, and have kept nothing of the cut upload.
    record = get(f"{server.url}/buckets/website/collections/disconnects/records/cut").json()
    assert record["data"]["attachment"] == previous
    assert server.files() == files_before


def test_kinto_http_py_add_attachment_of_an_untyped_file_is_text_plain(server, tmp_path):
    """Found by review (2026-12-05).

    ``kinto_http.Client.add_attachment(id=..., filepath=...)`` of a file whose type Python
    cannot guess (no extension, such as ``LICENSE``; likewise ``.ftl``, ``.lz4``...).

    kinto-http.py passes ``mimetype=None`` to requests (``client.py``, ``add_attachment``:
    ``mimetype, _ = mimetypes.guess_type(filepath)``, then
    ``files=[("attachment", (filename, file, mimetype))]``), so the file part has no
    ``Content-Type`` header. RFC 7578 §4.4 says such a part is ``text/plain``, and that is
    what kinto-attachment records: ``save_file`` (kinto-attachment 8.0.0,
    ``src/kinto_attachment/utils.py``) takes ``mimetype = overriden_mimetypes.get(extension,
    content.type)``, where ``content`` is the part's ``cgi.FieldStorage``, whose ``type``
    defaults to ``"text/plain"`` for a part without ``Content-Type`` (``cgi.py``: ``elif
    self.outerboundary or method != 'POST': ctype, pdict = "text/plain", {}``). Run against a
    real kinto-attachment 8.0.0 server (Kinto 26.5, the peer virtualenv of
    ``tests/support/live.py``), this very call answers ``"mimetype": "text/plain"`` for
    ``noext``, ``x.ftl`` and ``x.lz4``.

    Here the user sees ``"mimetype": "application/octet-stream"`` in the reply and in the
    record, and the file is then served as ``application/octet-stream`` (a download, not a
    text shown in the browser). ``docs/migrating.rst`` does not list this difference;
    ``docs/api.rst`` admits only that a *declared* ``application/octet-stream`` is replaced
    by a guess, not that an undeclared type stops being ``text/plain``.
    """
    client = kinto_http.Client(
        server_url=server.url, auth=ALICE, bucket="kinto-http", collection="untyped"
    )
    client.create_bucket(if_not_exists=True)
    client.create_collection(if_not_exists=True)
    path = tmp_path / "LICENSE"
    path.write_text("Some text a user uploads with kinto-http.py.\n")
    assert mimetypes.guess_type(str(path)) == (None, None)  # kinto-http sends no type.

    uploaded = client.add_attachment(id="untyped", filepath=str(path))

    record = client.get_record(id="untyped")["data"]
    assert uploaded["size"] == path.stat().st_size
    assert record["attachment"] == uploaded
    assert uploaded["mimetype"] == "text/plain"


def test_the_version_of_the_shipped_configuration(server):
    """Found by review (2026-12-05).

    ``GET /v1/__version__`` (Dockerflow's, which monitors probe) of ``config/kinto.ini`` was a
    500 and a traceback in the log at each request: no ``version.json`` where Kinto looks.
    The package's own answers where a deployment has none."""
    response = requests.get(server.url + "/__version__", timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "kinto-attachment-streaming"
    assert response.json()["version"] == kinto_attachment.__version__
