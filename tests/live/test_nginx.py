"""The nginx recipe, ``config/nginx.conf``, as shipped, in Debian's nginx in front of Kinto.

Only its address, the files folder and Kinto's port are changed; Kinto stores files in that
folder and names them at nginx's ``/attachments/`` (``base_url``). Files then come from nginx
with the headers Kinto gives stored files (:mod:`kinto_attachment.downloads.caching`), validators,
ranges, safe types and CORS, and the API through its proxy. Debian's ``nginx`` must be
installed (``apt-get install nginx``; ``NGINX`` names another binary): without it these tests
are skipped, except under ``CI=true`` where they fail.
"""

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from kinto_attachment.downloads import caching
from kinto_attachment.uploads.policies import Policy
from kinto_attachment.web import media_types

from ..support.live import (
    ALICE,
    REQUEST_TIMEOUT,
    ROOT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    PortTaken,
    free_port,
    live_config,
    started,
)


pytestmark = pytest.mark.live

RECIPE = ROOT / "config" / "nginx.conf"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: Where Debian's nginx.conf takes its types from, as the recipe expects its http block to.
MIME_TYPES = Path("/etc/nginx/mime.types")
RECORDS = "/v1/buckets/site/collections/files/records"
PUBLIC = '{"read": ["system.Everyone"]}'
ORIGIN = "https://app.example.com"


def nginx_binary():
    """nginx's path, or skip (fail under CI) saying what to install. ``NGINX`` names the binary
    (``.ci/run`` sets it); else it is looked for on PATH, then in /usr/sbin (Debian's place,
    often off a user's PATH)."""
    named = os.environ.get("NGINX")
    if named:
        nginx = shutil.which(named)
    else:
        nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    missing = [
        what
        for what, absent in [
            (f"nginx ({named or 'PATH, /usr/sbin'})", nginx is None),
            (str(MIME_TYPES), not MIME_TYPES.exists()),
        ]
        if absent
    ]
    if missing:
        message = (
            f"{' and '.join(missing)} not found: the recipe's tests need Debian's nginx "
            "(apt-get install nginx)"
        )
        if IN_CI:
            pytest.fail(message + " (CI=true: these tests must run)", pytrace=False)
        pytest.skip(message)
    return nginx


def substitute(text, pattern, replacement, where):
    text, count = re.subn(pattern, lambda _: replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise AssertionError(f"{where}: {count} lines match {pattern!r}, expected 1")
    return text


def recipe(port, kinto_port, base_path):
    """The shipped recipe, listening on ``127.0.0.1:port`` in front of Kinto on
    ``kinto_port``, serving ``base_path``."""
    text = RECIPE.read_text()
    for pattern, replacement in (
        (r"^    listen 80;$", f"    listen 127.0.0.1:{port};"),
        (r"^    server 127\.0\.0\.1:8888;$", f"    server 127.0.0.1:{kinto_port};"),
        (r"^        alias /var/lib/kinto/attachments/;$", f"        alias {base_path}/;"),
    ):
        text = substitute(text, pattern, replacement, RECIPE)
    return text


#: The rest of a Debian nginx.conf (its worker_connections included), for a process of the
#: test's user in its own folder.
MAIN = """\
daemon off;
master_process off;
pid {folder}/nginx.pid;
error_log stderr notice;
events {{
    worker_connections 768;
}}
http {{
    include {mime_types};
    default_type application/octet-stream;
    access_log off;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/kinto.conf;
}}
"""


@contextlib.contextmanager
def running_nginx(nginx, folder, port):
    """nginx on ``folder/nginx.conf`` until exit, once it accepts connections on ``port``."""
    log = folder / "nginx.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [nginx, "-p", f"{folder}/", "-c", str(folder / "nginx.conf"), "-e", "stderr"],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None:
                text = log.read_text(errors="replace")
                if "Address already in use" in text:
                    raise PortTaken(text)
                pytest.fail(f"nginx exited with {process.returncode}:\n{text}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"nginx did not listen on {port}:\n{log.read_text()}", pytrace=False)
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


@dataclasses.dataclass
class Deployment:
    #: nginx's root: the API at ``/v1/``, the files at ``/attachments/``.
    url: str
    base_path: Path

    def request(self, method, path, status=200, **kwargs):
        url = path if path.startswith("http") else self.url + path
        response = requests.request(method, url, timeout=REQUEST_TIMEOUT, **kwargs)
        assert response.status_code == status, (method, url, response.status_code, response.text)
        return response

    def upload(self, record, filename, content, permissions=PUBLIC):
        response = self.request(
            "POST",
            f"{RECORDS}/{record}/attachment",
            status=201,
            auth=ALICE,
            files={"attachment": (filename, content)},
            data={"permissions": permissions},
        )
        # Kinto's URLs name the proxy: it forwards the Host with its port.
        assert response.headers["Location"] == f"{self.url}{RECORDS}/{record}"
        return response.json()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    nginx = nginx_binary()
    for attempt in range(3):
        folder = tmp_path_factory.mktemp("nginx")
        base_path = folder / "attachments"
        base_path.mkdir()
        # Kinto names nginx's port in base_url: it is chosen first.
        port = free_port()
        ini = live_config(0, base_path)
        ini = substitute(
            ini,
            r"^kinto\.attachment\.base_url = .*$",
            f"kinto.attachment.base_url = http://127.0.0.1:{port}/attachments/",
            "kinto.ini",
        )
        ini = substitute(ini, r"^kinto\.attachment\.serve_files = true$", "", "kinto.ini")
        (folder / "kinto.ini").write_text(ini)
        with started(folder, folder / "kinto.ini", 0, base_path) as kinto:
            kinto.wait_ready()
            (folder / "kinto.conf").write_text(recipe(port, kinto.port, base_path))
            main = MAIN.format(folder=folder, mime_types=MIME_TYPES)
            (folder / "nginx.conf").write_text(main)
            try:
                with running_nginx(nginx, folder, port):
                    served = Deployment(f"http://127.0.0.1:{port}", base_path)
                    for path in ("/v1/buckets/site", "/v1/buckets/site/collections/files"):
                        served.request("PUT", path, status=201, auth=ALICE, json={})
                    yield served
                    return
            except PortTaken:
                if attempt == 2:
                    raise


def test_the_recipe_sends_what_kinto_stores():
    """The recipe's Cache-Control is that of stored files by default, and its comment gives
    the one for names that can be reused."""
    text = RECIPE.read_text()
    sent = re.findall(r'^\s*add_header Cache-Control "([^"]+)";$', text, flags=re.MULTILINE)
    assert sent == [caching.Caching().files]
    reusable = [Policy(randomize=False)]
    short = caching.files_cache_control(reusable, caching.FILES_CACHE_EXPIRES_SECONDS)
    assert f'"{short}"' in text
    assert f"kinto.attachment.{caching.FILES_SETTING}" in text


def test_a_missing_nginx_fails_under_ci(monkeypatch):
    """Under CI=true the recipe's tests fail, never skip, when nginx is missing; a wrong
    ``NGINX`` counts as missing."""
    monkeypatch.setenv("NGINX", "/nonexistent/nginx")
    monkeypatch.setattr(sys.modules[__name__], "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        nginx_binary()
    monkeypatch.setattr(sys.modules[__name__], "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/nginx"):
        nginx_binary()


def test_files_come_from_nginx_with_the_headers_of_stored_files(deployment):
    content = b"Hello from nginx!"
    meta = deployment.upload("hello", "hello.txt", content)
    assert meta["location"].startswith(deployment.url + "/attachments/")
    response = deployment.request("GET", meta["location"], headers={"Origin": ORIGIN})
    assert response.content == content
    headers = response.headers
    assert headers["Cache-Control"] == caching.IMMUTABLE
    assert headers["ETag"] and headers["Last-Modified"]
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"] == "text/plain"
    assert "Content-Disposition" not in headers
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "Content-Range" in headers["Access-Control-Expose-Headers"]


def test_conditional_requests_and_ranges(deployment):
    content = bytes(range(256)) * 4
    location = deployment.upload("ranged", "data.txt", content)["location"]
    first = deployment.request("GET", location)
    etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]
    for condition in ({"If-None-Match": etag}, {"If-Modified-Since": last_modified}):
        not_modified = deployment.request("GET", location, status=304, headers=condition)
        assert not_modified.headers["Cache-Control"] == caching.IMMUTABLE
        assert not_modified.headers["ETag"] == etag
    changed = deployment.request("GET", location, headers={"If-None-Match": '"other"'})
    assert changed.content == content
    ranged = deployment.request("GET", location, status=206, headers={"Range": "bytes=10-19"})
    assert ranged.content == content[10:20]
    assert ranged.headers["Content-Range"] == f"bytes 10-19/{len(content)}"
    assert ranged.headers["Cache-Control"] == caching.IMMUTABLE
    suffix = deployment.request("GET", location, status=206, headers={"Range": "bytes=-4"})
    assert suffix.content == content[-4:]
    same = deployment.request(
        "GET", location, status=206, headers={"Range": "bytes=0-1", "If-Range": etag}
    )
    assert same.content == content[:2]
    other = deployment.request("GET", location, headers={"Range": "bytes=0-1", "If-Range": '"x"'})
    assert other.content == content
    # Several ranges: the whole file, as Kinto answers them.
    several = deployment.request("GET", location, headers={"Range": "bytes=0-1,5-6"})
    assert several.content == content
    deployment.request("GET", location, status=416, headers={"Range": "bytes=5000-"})


@pytest.mark.parametrize(
    "filename",
    [
        "notes.txt",
        "data.json",
        "photo.png",
        "photo.jpg",
        "doc.pdf",
        "clip.mp4",
        "song.mp3",
        "page.html",
        "logo.svg",
        "app.js",
        "style.css",
        "feed.xml",
        "blob.bin",
    ],
)
def test_only_safe_types_are_shown_inline(deployment, filename):
    record = filename.replace(".", "-")
    location = deployment.upload(record, filename, b"<script>alert(1)</script>")["location"]
    response = deployment.request("GET", location)
    inline = media_types.is_inline(response.headers["Content-Type"])
    assert response.headers.get("Content-Disposition") == (None if inline else "attachment")
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "hidden", [".data-files/abc", ".uploads/upload.part", "site/files/.upload-x.part", ".env"]
)
def test_kinto_own_files_are_not_served(deployment, hidden):
    path = deployment.base_path / hidden
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an attachment")
    deployment.request("GET", f"/attachments/{hidden}", status=404)


def test_preflight(deployment):
    response = deployment.request(
        "OPTIONS",
        "/attachments/any.txt",
        status=204,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range, if-none-match",
        },
    )
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "range" in allowed and "if-none-match" in allowed


def test_the_api_through_the_proxy(deployment):
    content = os.urandom(3 * 1024 * 1024 + 7)  # Streamed through: no request buffering.
    meta = deployment.upload("big", "big.txt", content)
    assert meta["hash"] == hashlib.sha256(content).hexdigest()
    response = deployment.request("GET", f"{RECORDS}/big/attachment")
    assert response.content == content
    # Kinto's answer for the record's file (public, no record lifetime set), untouched.
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["ETag"] == f'"{meta["hash"]}"'


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_data_files_are_not_published_through_the_proxy(deployment, method):
    """Found by review (2026-12-05).

    ``/data/files`` is private to ``trusted_networks`` (loopback by default): through the
    recipe, every client came from nginx's loopback address, and could list, read, write and
    delete the private files. The recipe keeps the route to the callers that reach Kinto
    directly."""
    for path in ("/v1/data/files", "/v1/data/files/some-id", "/v1/data/files/"):
        response = deployment.request(method, path, status=404)
        assert response.headers["Content-Type"].startswith("text/html")  # nginx's answer.


@pytest.mark.parametrize("method", ["FOO", "PROPFIND", "X-ANYTHING"])
def test_only_the_methods_kinto_serves_reach_it(deployment, method):
    """Kinto labels its request metrics with the method as sent: the recipe lets none other
    through, so that no client makes up a series per request."""
    response = deployment.request(method, "/v1/", status=405)
    assert response.headers["Content-Type"].startswith("text/html")  # nginx's, not Kinto's JSON
