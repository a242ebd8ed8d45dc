"""A private ``/data/files`` in a real browser: what web pages can make Debian's Chromium send.

The live server is ``config/kinto.ini`` as shipped (private ``/data/files``, loopback trusted). A
browser on that machine lends its address to the pages it opens: a page of another site posts to
the route without reading the answer (``no-cors``), and a page whose name is rebound to the server
(``--host-resolver-rules``, what DNS rebinding achieves) sends same-origin requests and reads their
answers. Neither may read nor write; the server's own pages and programs keep working. The same
rules request by request: ``tests/data_files/test_data_files_pages.py``.
"""

import json
import re
import subprocess

import pytest
import requests

from ..support.live import REQUEST_TIMEOUT, client_env, running_server
from .test_browser import DRIVER, browser, copy_without_modules, npm_ci


pytestmark = pytest.mark.live

FETCH_TIMEOUT = 120
#: Chromium's own guard: a page of a public address may not reach a loopback one (Local
#: Network Access; it asks the user, which headless means no). Firefox and Safari have no
#: such guard, nor had Chromium before it: the server must hold without it.
WITHOUT_LOCAL_NETWORK_ACCESS_CHECKS = (
    "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,"
    "PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults"
)
ORIGINAL = b"the artifact a function dropped"


@pytest.fixture(scope="module")
def fetch_in_chromium(tmp_path_factory):
    """``tests/support/browser/fetch.js``: run a plan of pages and their ``fetch`` calls."""
    chromium = browser()
    folder = copy_without_modules(DRIVER, tmp_path_factory.mktemp("driver") / "driver")
    npm_ci(folder)

    def run(plan):
        result = subprocess.run(
            ["node", "fetch.js", json.dumps(plan)],
            cwd=folder,
            env={**client_env(folder), "CHROMIUM": chromium},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=FETCH_TIMEOUT,
        )
        assert result.returncode == 0, result
        return json.loads(result.stdout.strip().splitlines()[-1])

    return run


def text_post(url, body, mode="cors"):
    return {
        "url": url,
        "method": "POST",
        "body": body,
        "headers": {"Content-Type": "text/plain"},
        "mode": mode,
    }


def test_pages_can_neither_write_nor_read_private_files(tmp_path, fetch_in_chromium):
    (tmp_path / "server").mkdir()
    with running_server(tmp_path / "server") as server:
        kinto = f"http://localhost:{server.port}"
        # A program drops an artifact: no change for programs.
        uploaded = requests.post(
            f"{kinto}/data/files?id=artifact", data=ORIGINAL, timeout=REQUEST_TIMEOUT
        )
        assert uploaded.status_code == 200 and uploaded.text == "artifact"

        pages = fetch_in_chromium(
            {
                "resolve": {"evil.example": "127.0.0.1"},
                "args": [WITHOUT_LOCAL_NETWORK_ACCESS_CHECKS],
                "pages": [
                    # A page of another site, writing blind (no preflight for text/plain).
                    {
                        "url": "http://evil.example/cute-cats.html",
                        "fetches": [
                            text_post(f"{kinto}/data/files?id=artifact", "forged", "no-cors"),
                            text_post(f"{kinto}/v1/data/files?id=artifact", "forged", "no-cors"),
                            text_post(f"{kinto}/data/files?id=planted", "planted", "no-cors"),
                            {"url": f"{kinto}/data/files/artifact", "method": "DELETE"},
                            {"url": f"{kinto}/data/files"},
                        ],
                    },
                    # Its name rebound to the server: same-origin, it would read the answers.
                    {
                        "url": f"http://evil.example:{server.port}/cute-cats.html",
                        "fetches": [
                            {"url": "/data/files"},
                            {"url": "/v1/data/files"},
                            {"url": "/data/files/artifact"},
                            {"url": "/v1/data/files/artifact", "method": "HEAD"},
                            text_post("/data/files?id=artifact", "rebound"),
                            {"url": "/v1/data/files/artifact", "method": "DELETE"},
                        ],
                    },
                    # A page of the server's own origin.
                    {
                        "url": f"{kinto}/index.html",
                        "fetches": [
                            text_post("/data/files?id=own", "own"),
                            {"url": "/v1/data/files/own"},
                            {"url": "/data/files"},
                        ],
                    },
                ],
            }
        )

        artifact = requests.get(f"{kinto}/data/files/artifact", timeout=REQUEST_TIMEOUT)
        listed = requests.get(f"{kinto}/v1/data/files", timeout=REQUEST_TIMEOUT).json()
        log = server.output()

    cross_site, rebound, own = pages
    # Blind writes leave nothing; the page could not even send its DELETE, nor read a list.
    assert artifact.content == ORIGINAL
    assert sorted(entry["id"] for entry in listed) == ["artifact", "own"]
    assert [answer.get("type") for answer in cross_site[:3]] == ["opaque"] * 3
    assert all("error" in answer for answer in cross_site[3:]), cross_site
    # The rebound page is refused: a 403 that tells it nothing of the files.
    assert [answer["status"] for answer in rebound] == [403] * 6, rebound
    assert all("artifact" not in answer["text"] for answer in rebound)
    assert "data_files.allowed_hosts" in rebound[0]["text"]
    # The server's own page works as before.
    assert [answer["status"] for answer in own] == [200, 200, 200], own
    assert own[1]["text"] == "own"
    # The server logged the refusals of the page of another site, then of the rebound one.
    refusals = re.findall(r"\[request\.summary\] (\w+ \S+) 403 ", log)
    assert refusals == [
        "POST /data/files?id=artifact",
        "POST /v1/data/files?id=artifact",
        "POST /data/files?id=planted",
        "OPTIONS /data/files/artifact",  # The preflight of its DELETE.
        "GET /data/files",
        "GET /data/files",
        "GET /v1/data/files",
        "GET /data/files/artifact",
        "HEAD /v1/data/files/artifact",
        "POST /data/files?id=artifact",
        "DELETE /v1/data/files/artifact",
    ], log
