"""The servers of ``bench/run.py``, each a process on a port of the kernel's choice.

They start the way the live tests start theirs (:func:`tests.live.started`, port 0, the bound
port read from the server's output) on the configuration the live tests use
(:func:`tests.live.live_config`), adjusted for measuring: no size limit, no request log.
"""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import requests

from tests import live


HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
BIN = live.BIN
PEER_VENV = WORK / "peer-venv"
PEER_REQUIREMENTS = ["kinto==26.5.0", "kinto-attachment==8.0.0", "waitress", "setuptools"]
AUTH = ("alice", "passwd")
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
S3_CREDENTIALS = {
    "aws_access_key_id": "x",
    "aws_secret_access_key": "x",
    "region_name": "us-east-1",
}


class Server:
    """A started server (a :class:`tests.live.LiveServer`) and how to upload to it."""

    def __init__(self, name, live_server, kinto=True, s3_endpoint=None):
        self.name, self.live, self.kinto, self.s3_endpoint = name, live_server, kinto, s3_endpoint
        self.process, self.port = live_server.process, live_server.port
        self.files = live_server.base_path
        self.root = live_server.origin + ("/v1" if kinto else "")
        if kinto:
            requests.put(f"{self.root}/buckets/bench", auth=AUTH, timeout=10).raise_for_status()
            requests.put(
                f"{self.root}/buckets/bench/collections/files", auth=AUTH, timeout=10
            ).raise_for_status()

    def upload_url(self, record):
        if not self.kinto:
            return f"{self.root}/upload"
        return f"{self.root}/buckets/bench/collections/files/records/{record}/attachment"

    def presigned_url(self, key):
        """A download of ``key`` straight from the S3 server (ours-s3 only)."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.s3_endpoint, **S3_CREDENTIALS)
        return client.generate_presigned_url("get_object", Params={"Bucket": "bench", "Key": key})

    def clean(self, record):
        if self.kinto:
            requests.delete(self.upload_url(record), auth=AUTH, timeout=60)
        else:
            for path in self.files.iterdir():
                path.unlink()


def kinto_ini(template, files, includes, extra=()):
    """config/``template`` as the live tests run it (port 0, loopback, files in ``files``), with
    no size limit, ``includes``, more lines in ``extra`` and quieter logs (no request log)."""
    text = live.live_config(0, files, template=ROOT / "config" / template)
    for pattern, replacement, count in [
        (r"^max_request_body_size = .*$", f"max_request_body_size = {8 * 1024**3}", 1),
        (r"^kinto\.includes = (?:.*\n[ \t]+)*.*$", f"kinto.includes = {includes}", 1),
        # Our settings go, but for base_path and base_url (from live_config).
        (r"^kinto\.attachment\.(?!base_path |base_url ).*\n", "", 0),
        (r"^keys = root, kinto, kinto_attachment$", r"\g<0>, waitress", 1),
    ]:
        text, found = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if count and found != count:
            raise AssertionError(f"{template}: {found} matches of {pattern!r}, expected {count}")
    lines = ["kinto.attachment.extensions = any", *extra]
    text = text.replace("[loggers]", "\n".join(lines) + "\n\n[loggers]")
    # waitress stays at INFO: its "Serving on" line names the port it bound.
    waitress = "[logger_waitress]\nlevel = INFO\nhandlers =\nqualname = waitress\n"
    return text.replace("level = INFO", "level = WARNING") + "\n" + waitress


def ensure_peer():
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    check = subprocess.run([str(python), "-c", "import kinto_attachment"], capture_output=True)
    if check.returncode != 0:
        pip = [str(PEER_VENV / "bin" / "pip"), "install", "-q", *PEER_REQUIREMENTS]
        subprocess.run(pip, check=True)
    return PEER_VENV / "bin"


def start_servers(names, folder, stack):
    """``{name: Server}``, started one after the other on ports of the kernel's choice; each
    stops when ``stack`` (a :class:`contextlib.ExitStack`) closes."""
    # Request bodies that waitress buffers go to TMPDIR: beside the files under test.
    env = {**os.environ, "TMPDIR": str(folder)}
    servers = {}
    for name in names:
        files = folder / f"{name}-files"
        files.mkdir()
        ini, s3_endpoint, kinto = folder / f"{name}.ini", None, True
        if name.startswith("reference"):
            command = [sys.executable, str(HERE / "reference.py"), "--port", "0"]
            command += ["--dir", str(files)] + (["--write-behind"] if name.endswith("-wb") else [])
            kinto = False
        else:
            includes = "kinto.plugins.flush kinto_attachment"
            extra = ["kinto.attachment.serve_files = true"]
            template, bin_dir = "kinto.ini", BIN
            if name == "peer":
                bin_dir, extra = ensure_peer(), []
            elif name == "ours-pg":
                template = "postgresql.ini"
            elif name == "ours-s3":
                s3_endpoint = moto(folder, stack)
                extra = s3_lines(s3_endpoint)
            text = kinto_ini(template, files, includes, extra)
            if name == "ours-pg":
                text = re.sub(r"^pg_url = .*$", f"pg_url = {pg_database(stack)}", text, flags=re.M)
            if name == "ours-s3":
                text = re.sub(r"^kinto\.attachment\.base_path = .*\n", "", text, flags=re.M)
            ini.write_text(text)
            if name == "ours-pg":
                subprocess.run([str(BIN / "kinto"), "migrate", "--ini", str(ini)], check=True)
            command = [str(bin_dir / "pserve"), str(ini)]
        started = live.started(folder, ini, base_path=files, env=env, command=command)
        live_server = stack.enter_context(started)
        live_server.wait_ready() if kinto else live_server.wait_bound()
        servers[name] = Server(name, live_server, kinto, s3_endpoint)
    return servers


def pg_database(stack):
    """A fresh PostgreSQL database, dropped when ``stack`` closes (after the server stopped)."""
    import psycopg2

    name = f"kinto_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(PG + "/postgres")
    admin.autocommit = True
    stack.callback(admin.close)
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    stack.callback(admin.cursor().execute, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return f"{PG}/{name}"


def moto(folder, stack):
    """The endpoint of a moto server with a ``bench`` bucket. A process of its own (unlike the
    tests' ``s3_server`` thread): its CPU and memory are neither ours nor the clients'."""
    import boto3

    command = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", "0"]
    server = stack.enter_context(live.started(folder, None, command=command, serving=live.RUNNING))
    endpoint = f"http://127.0.0.1:{server.wait_bound()}"
    boto3.client("s3", endpoint_url=endpoint, **S3_CREDENTIALS).create_bucket(Bucket="bench")
    return endpoint


def s3_lines(endpoint):
    """Settings of ours-s3: files in the ``bench`` bucket of the moto server at ``endpoint``."""
    return [
        "kinto.attachment.aws.bucket_name = bench",
        f"kinto.attachment.aws.endpoint_url = {endpoint}",
        "kinto.attachment.aws.access_key = x",
        "kinto.attachment.aws.secret_key = x",
        "kinto.attachment.aws.region = us-east-1",
        "kinto.attachment.aws.use_path_style = true",
    ]
