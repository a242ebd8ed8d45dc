"""The servers of ``bench/run.py``, each a process on a port of the kernel's choice.

They start the way the live tests start theirs (:func:`tests.support.live.started`, port 0, the
bound port read from the server's output) on the configuration the live tests use
(:func:`tests.support.live.live_config`), adjusted for measuring: no size limit, no request log.
The peer (Mozilla's kinto-attachment) runs from the virtualenv
:func:`tests.support.live.ensure_peer` builds and caches.
"""

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import requests

from tests.support import live


HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
BIN = live.BIN
AUTH = ("alice", "passwd")
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
S3_CREDENTIALS = {
    "aws_access_key_id": "x",
    "aws_secret_access_key": "x",
    "region_name": "us-east-1",
}


class Server:
    """A started server (a :class:`tests.support.live.LiveServer`) and how to upload to it."""

    #: Not a server: a client uploading straight to the store (see :class:`DirectGCS`).
    direct = False

    def __init__(
        self, name, live_server, kinto=True, s3_endpoint=None, gcs_endpoint=None, pg_url=None
    ):
        self.name, self.live, self.kinto, self.s3_endpoint = name, live_server, kinto, s3_endpoint
        self.gcs_endpoint, self.pg_url = gcs_endpoint, pg_url
        self.process, self.port = live_server.process, live_server.port
        self.files = live_server.base_path
        self.root = live_server.origin + ("/v1" if kinto else "")
        if kinto:
            requests.put(f"{self.root}/buckets/bench", auth=AUTH, timeout=10).raise_for_status()
            requests.put(
                f"{self.root}/buckets/bench/collections/files", auth=AUTH, timeout=10
            ).raise_for_status()

    @property
    def pid(self):
        """The process that serves requests: gunicorn's and uWSGI's worker (the one child of
        their master process), waitress itself."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        workers = children.read_text().split() if children.exists() else []
        return int(workers[0]) if workers else self.process.pid

    def upload_url(self, record):
        if not self.kinto:
            return f"{self.root}/upload"
        return f"{self.root}/buckets/bench/collections/files/records/{record}/attachment"

    def presigned_url(self, key):
        """A download of ``key`` straight from the S3 server (ours-s3 only)."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.s3_endpoint, **S3_CREDENTIALS)
        return client.generate_presigned_url("get_object", Params={"Bucket": "bench", "Key": key})

    def direct_url(self, key):
        """A download of ``key`` straight from the GCS emulator (ours-gcs only)."""
        return f"{self.gcs_endpoint}/bench/{quote(key)}"

    def analyze(self):
        """``ANALYZE`` the server's PostgreSQL database (if it has one), as autovacuum would
        on any deployment: it is off on the test machines' PostgreSQL, and the planner, left
        with the statistics of empty tables, reads every record of a collection to find one
        (each request slower than the one before, whichever is measured last the slowest)."""
        if self.pg_url is None:
            return
        import psycopg2

        connection = psycopg2.connect(self.pg_url)
        try:
            connection.autocommit = True
            connection.cursor().execute("ANALYZE")
        finally:
            connection.close()

    def clean(self, record):
        if self.kinto:
            requests.delete(self.upload_url(record), auth=AUTH, timeout=60)
        else:
            for path in self.files.iterdir():
                path.unlink()


#: Servers that stream request bodies: ``ours-NAME`` runs the plugin under them,
#: ``reference-NAME`` the raw sink (``bench/sink_wsgi.py``), ``floor-NAME`` the same app
#: reading the body and storing nothing (its ``--floor``).
STREAMING = ("gunicorn", "uwsgi")


def kinto_ini(template, files, includes, extra=()):
    """config/``template`` as the live tests run it (port 0, loopback, files in ``files``), with
    no size limit, ``includes``, more lines in ``extra`` and quieter logs (no request log)."""
    text = live.live_config(0, files, template=ROOT / "config" / template)
    for pattern, replacement, count in [
        (r"^max_request_body_size = .*$", f"max_request_body_size = {8 * 1024**3}", 1),
        (r"^kinto\.includes = (?:.*\n[ \t]+)*.*$", f"kinto.includes = {includes}", 1),
        # Our settings go, but for base_path and base_url (from live_config).
        (r"^kinto\.attachment\.(?!base_path |base_url ).*\n", "", 0),
        (r"^keys = root, kinto, kinto_errors, kinto_attachment$", r"\g<0>, waitress", 1),
        # Plain log lines: the peer has no kinto_attachment.request_log.
        (r"^class = kinto_attachment\.request_log\.SummaryFormatter\n", "", 1),
    ]:
        text, found = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if count and found != count:
            raise AssertionError(f"{template}: {found} matches of {pattern!r}, expected {count}")
    lines = ["kinto.attachment.extensions = any", *extra]
    text = text.replace("[loggers]", "\n".join(lines) + "\n\n[loggers]")
    # waitress stays at INFO: its "Serving on" line names the port it bound.
    waitress = "[logger_waitress]\nlevel = INFO\nhandlers =\nqualname = waitress\n"
    return text.replace("level = INFO", "level = WARNING") + "\n" + waitress


#: A file whose record lets go of it is deleted once the transaction commits, rather than
#: ``gc.replaced_grace_seconds`` later (10 minutes by default, for the downloads that may be
#: reading it): the large and resumable cases upload tens of GiB within 10 minutes, which
#: filled the machine's disk (a 503 from ``ENOSPC``). Deleting is after the timed upload,
#: whichever way. The PostgreSQL servers keep the default: the ``records`` case measures what
#: replacing a file costs as deployed (its replaced entry written in the transaction), and
#: their large files are few.
NO_GRACE = "kinto.attachment.gc.replaced_grace_seconds = 0"


def start_servers(names, folder, stack):
    """``{name: Server}``, started one after the other on ports of the kernel's choice; each
    stops when ``stack`` (a :class:`contextlib.ExitStack`) closes."""
    # Request bodies that waitress buffers go to TMPDIR: beside the files under test.
    env = {**os.environ, "TMPDIR": str(folder)}
    servers = {}
    for name in names:
        files = folder / f"{name}-files"
        files.mkdir()
        ini, s3_endpoint, gcs_endpoint, kinto = folder / f"{name}.ini", None, None, True
        pg_url = None
        serving, port, server_env = live.SERVING, 0, env
        streaming = name.rsplit("-", 1)[-1] if name.endswith(STREAMING) else None
        # ``ours-s3-uwsgi``: ``ours-s3`` under uWSGI (every server in S3 shares one moto).
        store = name.removesuffix(f"-{streaming}") if streaming else name
        if streaming:
            port, serving = live.free_port(), live.LISTENING[streaming]
        if name.startswith(("reference", "floor")) and streaming:
            floor = str(int(name.startswith("floor")))
            server_env = {**env, "SINK_DIR": str(files), "SINK_FLOOR": floor}
            command = live.streaming_command(streaming, folder, port, (HERE, "sink_wsgi"))
            kinto = False
        elif name.startswith("reference"):
            command = [sys.executable, str(HERE / "reference.py"), "--port", "0"]
            command += ["--dir", str(files)] + (["--write-behind"] if name.endswith("-wb") else [])
            kinto = False
        else:
            includes = "kinto.plugins.flush kinto_attachment"
            extra = ["kinto.attachment.serve_files = true"]
            template, bin_dir = "kinto.ini", BIN
            if name == "peer":
                bin_dir, extra = live.ensure_peer(), []
            elif name == "ours-pg":
                template = "postgresql.ini"
            elif name == "ours-pg-events":
                template, extra = "postgresql.ini", extra + events_lines(stack)
            elif store == "ours-s3":
                if "s3-direct" not in servers:
                    servers["s3-direct"] = DirectS3(moto(folder, stack))
                s3_endpoint = servers["s3-direct"].endpoint
                extra = s3_lines(s3_endpoint)
            elif name == "ours-gcs":
                gcs_endpoint = fake_gcs(folder, stack)
                extra = gcs_lines(gcs_endpoint)
            if name != "peer" and template != "postgresql.ini":
                extra = [*extra, NO_GRACE]
            text = kinto_ini(template, files, includes, extra)
            if template == "postgresql.ini":
                pg_url = pg_database(stack)
                text = re.sub(r"^pg_url = .*$", f"pg_url = {pg_url}", text, flags=re.M)
            if store in ("ours-s3", "ours-gcs"):
                text = re.sub(r"^kinto\.attachment\.base_path = .*\n", "", text, flags=re.M)
            ini.write_text(text)
            if template == "postgresql.ini":
                subprocess.run([str(BIN / "kinto"), "migrate", "--ini", str(ini)], check=True)
            command = [str(bin_dir / "pserve"), str(ini)]
            if streaming:
                server_env = {**env, "KINTO_INI": str(ini)}
                command = live.streaming_command(
                    streaming, folder, port, (ROOT / "config", "wsgi")
                )
        started = live.started(folder, ini, port, files, server_env, command, serving)
        live_server = stack.enter_context(started)
        live_server.wait_ready() if kinto else live_server.wait_bound()
        servers[name] = Server(name, live_server, kinto, s3_endpoint, gcs_endpoint, pg_url)
        if gcs_endpoint:
            servers["gcs-direct"] = DirectGCS(gcs_endpoint)
    return servers


#: Where ``ours-pg-events`` sends its events (the Redis of the test machines by default).
EVENTS_REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")


def events_lines(stack):
    """Settings of ours-pg-events: its events to a Redis stream of its own, deleted when
    ``stack`` closes."""
    import redis

    stream = f"kinto-attachment-bench-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(EVENTS_REDIS)
    stack.callback(client.close)
    stack.callback(client.delete, stream)
    return [
        "kinto.attachment.events.destinations = redis",
        f"kinto.attachment.events.redis.url = {EVENTS_REDIS}",
        f"kinto.attachment.events.redis.stream = {stream}",
        "kinto.attachment.events.url_secret = a-bench-secret-of-enough-length",
        # Required with events on local disk: the fetch URLs' address (no worker follows them
        # here; the files' locations are base_url's).
        "kinto.http_host = localhost",
    ]


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


def fake_gcs(folder, stack):
    """The endpoint of a fake-gcs-server with a ``bench`` bucket: a process of its own (as the
    tests start it), not measured."""
    from tests.support.gcs_server import new_bucket, running

    endpoint = stack.enter_context(running(folder))
    new_bucket(endpoint, "bench")
    return endpoint


def gcs_lines(endpoint):
    """Settings of ours-gcs: files in the ``bench`` bucket of the emulator at ``endpoint``."""
    return [
        "kinto.attachment.gcloud.bucket_name = bench",
        f"kinto.attachment.gcloud.endpoint_url = {endpoint}",
    ]


def direct_script(setup, upload, cleanup):
    """A program uploading the file of ``argv[2]`` to the store at ``argv[1]`` with the store's
    own client (``setup`` makes ``client``; ``upload`` sends ``path`` as ``key``; ``cleanup``
    deletes it), printing its seconds, peak RSS growth and CPU seconds, measured as
    ``run.py`` measures servers."""
    return "\n".join([DIRECT_PRELUDE, setup, DIRECT_START, upload, DIRECT_END, cleanup])


DIRECT_PRELUDE = """
import json, resource, sys, time, uuid
from pathlib import Path


def vm(name):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024


def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


endpoint, path = sys.argv[1:]
key = f"direct-{uuid.uuid4().hex}"
"""
DIRECT_START = """
Path("/proc/self/clear_refs").write_text("5")
before, cpu_before, start = vm("VmRSS"), cpu(), time.perf_counter()
"""
DIRECT_END = """
seconds = time.perf_counter() - start
print(json.dumps([seconds, max(0, vm("VmHWM") - before), cpu() - cpu_before]))
"""
#: google-cloud-storage's own resumable upload, in the chunks ours-gcs uses by default (8 MiB)
#: and with the same CRC32C and precondition.
DIRECT_GCS_UPLOAD = direct_script(
    setup="""
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

client = storage.Client(
    project="bench",
    credentials=AnonymousCredentials(),
    client_options={"api_endpoint": endpoint},
)
blob = client.bucket("bench").blob(key, chunk_size=8 << 20)
""",
    upload='blob.upload_from_filename(path, checksum="crc32c", if_generation_match=0)',
    cleanup="blob.delete()",
)
#: boto3's own ``upload_fileobj`` (its managed multipart upload, default settings).
DIRECT_S3_UPLOAD = direct_script(
    setup="""
import boto3

client = boto3.client(
    "s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x",
    region_name="us-east-1",
)
""",
    upload="""
with open(path, "rb") as f:
    client.upload_fileobj(f, "bench", key)
""",
    cleanup='client.delete_object(Bucket="bench", Key=key)',
)


class DirectGCS:
    """The bound of ours-gcs: the same file uploaded to the same emulator by the
    google-cloud-storage client itself, in a process of its own."""

    name = "gcs-direct"
    kinto = False
    direct = True
    script = DIRECT_GCS_UPLOAD

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def upload(self, path):
        """``(seconds, peak RSS growth, CPU seconds)`` of one upload."""
        command = [sys.executable, "-c", self.script, self.endpoint, str(path)]
        done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=900)
        return tuple(json.loads(done.stdout))

    def clean(self, record):
        """Nothing: the upload deletes its object."""


class DirectS3(DirectGCS):
    """The bound of ours-s3: the same file uploaded to the same moto server by boto3's
    ``upload_fileobj``, in a process of its own."""

    name = "s3-direct"
    script = DIRECT_S3_UPLOAD
