"""What the command line's tests share: :func:`run_command` runs ``kinto-attachment`` in the
test's process (so that coverage sees it); :class:`Hostile` is a hostile server, loopback HTTP
(or HTTPS, with a certificate made for the test by :func:`certificate` and trusted through
``REQUESTS_CA_BUNDLE``) in a thread, answering what the test says and keeping what it was
sent.

The test gives a function ``answer(request)`` that returns ``(status, headers, body)``; the
body is bytes, or an iterable of bytes sent as they come (until the client hangs up), with no
``Content-Length`` unless the headers give one (``Connection: close`` ends the connection
after the body, however long the ``Content-Length`` said it was). Each request is kept in
:attr:`Hostile.requests` with its headers and the number of body bytes that came.
"""

import dataclasses
import datetime
import http.server
import ipaddress
import ssl
import subprocess
import threading

from kinto_attachment.cli.main import main


VARIABLES = ("KINTO_SERVER", "KINTO_AUTH", "KINTO_BUCKET", "KINTO_COLLECTION", "XDG_CACHE_HOME")


def run_command(monkeypatch, capsys, env, *args):
    """``kinto-attachment args...`` with the ``KINTO_*`` variables of ``env``: a
    ``CompletedProcess`` with its exit code, stdout and stderr."""
    for name in VARIABLES:
        monkeypatch.setenv(name, env[name])
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's refusal of the command line.
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


@dataclasses.dataclass
class Request:
    method: str
    path: str
    headers: dict
    #: Body bytes received (read whole when the request announced a ``Content-Length``).
    body: bytes = b""


class Hostile:
    """``answer`` served on ``127.0.0.1`` (a free port) until :meth:`close`; ``tls``: a
    ``(certificate file, key file)`` pair to serve HTTPS."""

    def __init__(self, answer, tls=None):
        self.requests = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one_request(self):
                self.raw_requestline = self.rfile.readline(65537)
                if not self.raw_requestline or not self.parse_request():
                    self.close_connection = True
                    return
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command, self.path, dict(self.headers), self.rfile.read(length)
                )
                owner.requests.append(request)
                status, headers, body = answer(request)
                self.send_response(status)
                chunks = [body] if isinstance(body, bytes) else body
                if isinstance(body, bytes) and "Content-Length" not in headers:
                    headers = {**headers, "Content-Length": str(len(body))}
                if "Content-Length" not in headers:
                    self.close_connection = True  # The body ends when the connection does.
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    for chunk in chunks:
                        self.wfile.write(chunk)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def certificate(folder):
    """``(certificate file, key file)`` of a self-signed certificate for ``127.0.0.1``, made
    with ``cryptography`` (which moto, of the test extra, requires)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)
