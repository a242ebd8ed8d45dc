"""Benchmarks, run side by side in one invocation: ``make bench`` (never part of ``make test``).

Servers (``bench/servers.py``), each a process on a loopback port of the kernel's choice, all
waitress with the same settings:

- ``reference``: waitress + a WSGI app that only streams the body to disk with sha256 and fsync
  (``bench/reference.py``), the practical limit of this stack;
- ``reference-wb``: the same, writing the way our local store does (write-behind: windows
  flushed as they fill and dropped from the page cache), the limit with that I/O strategy;
- ``peer``: Mozilla's kinto-attachment 8.0.0 from PyPI, in its own virtualenv (created here),
  same Kinto and same configuration apart from the include;
- ``ours``: kinto_attachment on the embedded default (memory backend, local files);
- ``ours-pg``: the same on PostgreSQL (``BENCH_PG``, default ``postgresql://postgres@127.0.0.1``);
- ``ours-s3``: the same with files in S3 (a moto server process, not measured);
- ``ours-gcs``: the same with files in Google Cloud Storage (a fake-gcs-server process, not
  measured), beside ``gcs-direct``: the same file uploaded to the same emulator by
  google-cloud-storage itself (its resumable upload, 8 MiB chunks), the bound of ours-gcs;
  ``s3-direct`` likewise for ours-s3 (boto3's ``upload_fileobj`` to the same moto server);
- ``ours-gunicorn``, ``ours-uwsgi``: ``ours`` under the streaming servers, from their shipped
  configurations (``config/gunicorn.conf.py``, ``config/uwsgi.ini``), beside
  ``reference-gunicorn`` and ``reference-uwsgi``: the reference app (the raw sink) under each,
  their own bounds (``bench/sink_wsgi.py``), and ``floor-gunicorn`` and ``floor-uwsgi``: the
  same app reading the body by the blocks our uploads read it in and storing nothing, each
  server's read-only floor (large uploads only). Their memory is the worker's;
- ``ours-s3-uwsgi``: ``ours-s3`` under uWSGI, on the same moto server (no request buffer).

Besides uploads of large and small files and downloads: a 1 GiB (the largest size) resumable
upload in 8 MiB chunks, in 64 MiB chunks, and by tus-js-client in 4 parallel parts (8 MiB
chunks), against the multipart upload of the same file on the same server (``ours`` and each
``ours-NAME`` of a streaming server), and an anonymous POST announcing 2 GB (how fast the 401,
how much body went before it).

For each upload: wall time of ``curl -F`` (as users upload), MiB/s, and the server's peak RSS
growth (``VmHWM`` of the server process, reset before each upload through ``clear_refs``).
Several rounds; medians reported, with ratios to the reference and to the peer measured in the
same run. This module measures; ``bench/report.py`` renders ``bench/RESULTS.md`` and
``bench/chart.png``.
"""

import argparse
import base64
import concurrent.futures
import contextlib
import functools
import hashlib
import http.client
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests


HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # ``python bench/run.py``: bench/ and tests/ as packages.

from bench import report  # noqa: E402
from bench.servers import AUTH, STREAMING, WORK, start_servers  # noqa: E402
from kinto_attachment.protocols.tus import CHUNK_TYPE  # noqa: E402
from tests.support import live  # noqa: E402


MiB = 1024 * 1024


def vm_value(pid, name):
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{name}:\s+(\d+) kB$", status, re.MULTILINE).group(1)) * 1024


def cpu_seconds(pid):
    """User + system CPU time of a process so far (steadier than wall time on a noisy disk)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid):
    """Make VmHWM restart from the current RSS (Linux ``clear_refs`` 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def make_file(folder, size):
    path = folder / f"upload-{size // MiB}MiB.bin"
    if not path.exists():
        live.write_random_file(path, size)
    return path


#: Times an upload to a server in front of an emulator (moto, fake-gcs-server) is tried again
#: when our server answers 503: its store failed (moto answers 500 to an ``UploadPart`` now and
#: then, a ``KeyError`` of its own), and our server said so, as it must. Each retry is printed
#: with the end of the server's log, which tells whose failure it was.
EMULATOR_RETRIES = 2


def upload_once(server, path, record):
    """One ``curl -F`` upload: (seconds, peak RSS growth in bytes, server CPU seconds, curl's
    CPU seconds); for a client uploading straight to the store, its own measures (its CPU
    seconds as the server's, None as curl's)."""
    if server.direct:
        return (*server.upload(path), None)
    return _retried(server, lambda: _upload_once(server, path, record))


def _retried(server, attempt):
    """``attempt()``, tried again (:data:`EMULATOR_RETRIES`) while it raises
    :class:`StoreUnavailable` on a server in front of an emulator; printed each time."""
    emulated = server.s3_endpoint or server.gcs_endpoint
    for number in range(EMULATOR_RETRIES + 1):
        try:
            return attempt()
        except StoreUnavailable:
            if not emulated or number == EMULATOR_RETRIES:
                raise
            print(f"  {server.name}: 503, tried again; the end of its log:")
            print(server.live.output()[-3000:])


class StoreUnavailable(RuntimeError):
    """Our server answered 503: its store failed."""


def _upload_once(server, path, record):
    pid = server.pid
    reset_peak(pid)
    before = vm_value(pid, "VmRSS")
    cpu_before = cpu_seconds(pid)
    client_before = children_cpu_seconds()
    start = time.perf_counter()
    result = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", "alice:passwd"]
        + ["-F", f"attachment=@{path}", server.upload_url(record)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    elapsed = time.perf_counter() - start
    client_cpu = children_cpu_seconds() - client_before
    if result.stdout not in ("200", "201"):
        error = StoreUnavailable if result.stdout == "503" else RuntimeError
        raise error(f"{server.name}: upload answered {result.stdout} {result.stderr}")
    growth = max(0, vm_value(pid, "VmHWM") - before)
    return elapsed, growth, cpu_seconds(pid) - cpu_before, client_cpu


def children_cpu_seconds():
    """CPU seconds of this process's waited-for children (curl, once it has ended; the
    servers are waited for only when the run ends)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_large(servers, sizes, rounds, folder):
    """Rounds interleave the servers (in a rotating order) so that the disk's state, the page
    cache's writeback and other noise fall on every server alike."""
    paths = {size: make_file(folder, size) for size in sizes}
    os.sync()  # The files just written must not be flushed during someone's upload.
    rows = []
    for size in sizes:
        measures = {name: ([], [], [], []) for name in servers}
        names = list(servers)
        for round_number in range(rounds):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                for values, value in zip(
                    measures[name], upload_once(servers[name], paths[size], "large"), strict=True
                ):
                    values.append(value)
                servers[name].clean("large")
        for name, (times, growths, cpus, client_cpus) in measures.items():
            row = {
                "server": name,
                "size": size,
                "seconds": statistics.median(times),
                "growth": max(growths),
                "cpu": statistics.median(cpus),
                "client_cpu": None if None in client_cpus else statistics.median(client_cpus),
            }
            rows.append(row)
            print(f"  {name:12s} {size // MiB:5d} MiB  {row['seconds']:.2f} s", flush=True)
    return rows


#: Attempts of one request of a throughput case, and the longest pause before the second (s).
RETRIES, RETRY_PAUSE = 8, 0.005


def throughput(server, count, workers, send):
    """``count`` requests ``send(session, i)`` by ``workers`` clients: ``(requests per second,
    connections dropped and retried, 409s retried)``."""
    local, dropped, conflicts = threading.local(), [], []

    def one(i):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        # Kinto on PostgreSQL answers concurrent writes to one collection with 409 "please
        # retry" (plain record PUTs too): retry, as Kinto clients do, after a random pause
        # that doubles (clients retrying at once would collide again), and count them. A
        # connection dropped under a request (seen with uWSGI's raw sink) is retried too, and
        # counted.
        response = None
        for attempt in range(RETRIES):
            try:
                response = send(local.session, i)
            except requests.ConnectionError:
                dropped.append(i)
                local.session = requests.Session()
                continue
            if response.status_code != 409:
                break
            conflicts.append(i)
            time.sleep(random.uniform(0, RETRY_PAUSE * 2**attempt))
        if response is None:
            raise RuntimeError(f"{server.name}: request {i}: every connection dropped")
        if response.status_code >= 400:
            raise RuntimeError(f"{server.name}: {response.status_code} {response.text}")

    server.analyze()
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(count)))
    return count / (time.perf_counter() - start), len(dropped), len(conflicts)


def upload_small(server, content, count, workers, prefix="small"):
    """``count`` uploads of ``content`` to records ``{prefix}-{i}`` by ``workers`` clients:
    ``(requests per second, connections dropped and retried)``."""

    def post(session, i):
        return session.post(
            server.upload_url(f"{prefix}-{i}"),
            files={"attachment": (f"f{i}.bin", content)},
            auth=AUTH,
            timeout=60,
        )

    rps, dropped, _ = throughput(server, count, workers, post)
    return rps, dropped


def bench_small(servers, count, concurrency):
    content = os.urandom(4096)
    rows = []
    for name, server in servers.items():
        if name == "reference-wb" or name.startswith("floor") or server.direct:
            # Write-behind starts at two windows (16 MiB): these are plain writes. A floor
            # stores nothing.
            continue
        for workers in (1, concurrency):
            rps, dropped = upload_small(server, content, count, workers)
            rows.append({"server": name, "workers": workers, "rps": rps})
            retried = f" ({dropped} dropped connections retried)" if dropped else ""
            print(f"  {name:12s} x{workers}  {rps:.0f} req/s{retried}", flush=True)
            if server.kinto:
                records = f"{server.root}/buckets/bench/collections/files/records"
                requests.delete(records, auth=AUTH, timeout=120)
            else:
                server.clean(None)
    return rows


def bench_records(server, count, concurrency, rounds):
    """4 KiB uploads on PostgreSQL (``ours-pg``) creating records, then replacing their
    files, against plain record ``PUT``s of the same server carrying what an upload writes (a
    file's metadata), sequential and concurrent, in rounds that alternate which goes first:
    what an upload costs beyond the record write it makes. 409s retried are counted."""
    content = os.urandom(4096)
    digest = hashlib.sha256(content).hexdigest()

    def record(session, i, prefix):
        url = server.upload_url(f"{prefix}-{i}").removesuffix("/attachment")
        metadata = {"filename": f"f{i}.bin", "hash": digest, "size": len(content),
                    "mimetype": "application/octet-stream", "location": f"{url}.bin"}  # fmt: skip
        return session.put(url, json={"data": {"file": metadata}}, auth=AUTH, timeout=60)

    def upload(session, i, prefix):
        return session.post(
            server.upload_url(f"{prefix}-{i}"),
            files={"attachment": (f"f{i}.bin", content)},
            auth=AUTH,
            timeout=60,
        )

    rows = []
    for round_number in range(rounds):
        for workers in (1, concurrency):
            prefix = f"records-{round_number}-{workers}"
            kinds = [
                ("put", functools.partial(record, prefix=prefix + "-put")),
                ("create", functools.partial(upload, prefix=prefix)),
                ("replace", functools.partial(upload, prefix=prefix)),
            ]
            if round_number % 2:
                kinds = kinds[1:] + kinds[:1]
            for kind, send in kinds:
                rps, _, conflicts = throughput(server, count, workers, send)
                rows.append({"kind": kind, "workers": workers, "round": round_number,
                             "rps": rps, "conflicts": conflicts})  # fmt: skip
                print(f"  round {round_number} {kind:8s} x{workers}  {rps:.0f} req/s"
                      f"  ({conflicts} 409s retried)", flush=True)  # fmt: skip
    return rows


#: The servers of the events case: the same PostgreSQL configuration, events off and on.
EVENTS_PAIR = ("ours-pg", "ours-pg-events")


def bench_events(servers, count, concurrency, rounds):
    """4 KiB uploads on PostgreSQL with events off and with the ``redis`` destination on, in
    alternating rounds (new records each round: no deletes, whose events would be delivered
    during the next round), sequential and concurrent: what recording and delivering events
    costs uploads."""
    content = os.urandom(4096)
    rows = []
    for round_number in range(rounds):
        order = EVENTS_PAIR if round_number % 2 == 0 else EVENTS_PAIR[::-1]
        for workers in (1, concurrency):
            for name in order:
                prefix = f"events-{round_number}-{workers}"
                rps, _ = upload_small(servers[name], content, count, workers, prefix)
                rows.append({"server": name, "workers": workers, "round": round_number,
                             "rps": rps})  # fmt: skip
                print(f"  round {round_number} {name:15s} x{workers}  {rps:.0f} req/s",
                      flush=True)  # fmt: skip
    return rows


def _require_ok(server, response):
    """A failed setup request says which server answered what, and the end of its log (the
    run's folder goes with the run)."""
    if not response.ok:
        error = StoreUnavailable if response.status_code == 503 else RuntimeError
        raise error(f"{server.name}: {response.request.method} {response.url}: "
                    f"{response.status_code} {response.text[:500]}\n"
                    f"{server.live.output()[-3000:]}")  # fmt: skip
    return response


def set_up(server, send):
    """The response of ``send()``, a setup request that must succeed: tried again, as an
    upload is, when our server in front of an emulator answers 503."""
    return _retried(server, lambda: _require_ok(server, send()))


def bench_downloads(servers, size, rounds, folder):
    """Downloads of a stored file: the reference's static route, ours through Kinto
    (``GET {record}/attachment``, permission-checked) and ``/data/files/{id}`` (verified)."""
    path = make_file(folder, size)
    targets = []
    for name, server in servers.items():
        if name in ("peer", "reference-wb") or name.startswith("floor") or server.direct:
            continue  # kinto-attachment and floors serve no files; the references serve alike.
        if not server.kinto:
            with open(path, "rb") as body:
                response = requests.post(server.upload_url(None), data=body, timeout=600)
            _require_ok(server, response)
            targets.append((name, "static file", f"{server.root}{response.json()['location']}"))
            continue

        def attach(server=server):
            with open(path, "rb") as body:
                return requests.post(
                    server.upload_url("download"),
                    files={"attachment": ("d.bin", body)},
                    auth=AUTH,
                    timeout=600,
                )

        uploaded = set_up(server, attach)
        key = uploaded.json()["location"].rsplit("/attachments/", 1)[-1]
        if name == "ours-s3":
            # What we proxy, fetched from the S3 server itself: the bound of S3 downloads.
            targets.append((name, "S3 server directly", server.presigned_url(key)))
        if name == "ours-gcs":
            targets.append((name, "GCS server directly", server.direct_url(unquote(key))))
        data_file = f"{server.live.origin}/data/files"

        def post_data_file(data_file=data_file):
            with open(path, "rb") as body:
                return requests.post(f"{data_file}?id=download", data=body, timeout=600)

        set_up(server, post_data_file)
        targets.append((name, "record attachment", server.upload_url("download")))
        targets.append((name, "/data/files", f"{data_file}/download"))
    os.sync()
    rows = []
    for name, route, url in targets:
        pid = servers[name].pid
        direct = route.endswith("server directly")  # Our server is not involved: no auth.
        times, growths = [], []
        for _ in range(rounds):
            reset_peak(pid)
            before = vm_value(pid, "VmRSS")
            start = time.perf_counter()
            digest = hashlib.sha256()
            auth = None if direct else AUTH
            with requests.get(url, auth=auth, stream=True, timeout=600) as download:
                download.raise_for_status()
                for chunk in download.iter_content(MiB):
                    digest.update(chunk)
            times.append(time.perf_counter() - start)
            growths.append(max(0, vm_value(pid, "VmHWM") - before))
        row = {
            "server": name,
            "route": route,
            "size": size,
            "seconds": statistics.median(times),
            "growth": None if direct else max(growths),
        }
        rows.append(row)
        print(f"  {name:12s} {route:18s} {row['seconds']:.2f} s", flush=True)
    return rows


def tus_once(server, path, chunk):
    """Seconds of one resumable upload of ``path`` in ``chunk``-byte PATCHes.

    The client does what ``curl`` does for the multipart upload it is compared with: one
    kept-alive connection, the file read by 1 MiB into one reused buffer as it is sent. A
    client that allocates each chunk anew (``requests`` with ``data=f.read(chunk)``, as tuspy
    does) adds 3-4 ms of its own per 8 MiB chunk on this machine, which is not the server's.
    """
    name = base64.b64encode(path.name.encode()).decode()
    size = path.stat().st_size
    tus = {"Tus-Resumable": "1.0.0"}
    authorization = "Basic " + base64.b64encode(":".join(AUTH).encode()).decode()
    buffer = memoryview(bytearray(MiB))
    start = time.perf_counter()
    created = requests.post(
        server.upload_url("tus") + "/uploads",
        auth=AUTH,
        headers={**tus, "Upload-Length": str(size), "Upload-Metadata": f"filename {name}"},
        timeout=60,
    )
    created.raise_for_status()
    location = urlsplit(created.headers["Location"])
    connection = http.client.HTTPConnection(location.hostname, location.port, timeout=600)
    with open(path, "rb", buffering=0) as f, contextlib.closing(connection):
        for offset in range(0, size, chunk):
            count = min(chunk, size - offset)
            connection.putrequest("PATCH", location.path, skip_accept_encoding=True)
            headers = {**tus, "Authorization": authorization, "Upload-Offset": offset,
                       "Content-Length": count, "Content-Type": CHUNK_TYPE}  # fmt: skip
            for header, value in headers.items():
                connection.putheader(header, value)
            connection.endheaders()
            while count:  # The chunk is read as it is sent, as curl does.
                read = f.readinto(buffer[:count])
                connection.send(buffer[:read])
                count -= read
            answer = connection.getresponse()
            answer.read()
            if answer.status != 204:
                raise RuntimeError(f"{server.name}: PATCH at {offset}: {answer.status}")
    return time.perf_counter() - start


def with_cpu(server, function, *args):
    """``(seconds, server CPU seconds, client CPU seconds)`` of ``function(*args)``, which
    returns the seconds it took: the client's are those of this thread and of the children
    it waited for (tus-js-client's node)."""
    server_before, thread_before = cpu_seconds(server.pid), time.thread_time()
    children_before = children_cpu_seconds()
    seconds = function(*args)
    client = time.thread_time() - thread_before + children_cpu_seconds() - children_before
    return seconds, cpu_seconds(server.pid) - server_before, client


def medians(pairs):
    """The median of each member of ``pairs``."""
    return tuple(statistics.median(values) for values in zip(*pairs, strict=True))


def tus_parallel_once(server, path, parts, chunk, node_modules):
    """Seconds of one upload of ``path`` by tus-js-client in ``parts`` partial uploads sent at
    once, in ``chunk``-byte PATCHes, then joined (``bench/tus_parallel.js``, which times
    itself from the upload's start to its success)."""
    script = HERE / "tus_parallel.js"
    command = ["node", str(script), server.upload_url("tus") + "/uploads", str(path),
               str(parts), str(chunk), ":".join(AUTH)]  # fmt: skip
    env = {**os.environ, "NODE_PATH": str(node_modules)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise RuntimeError(f"{server.name}: tus-js-client: {done.stderr[-2000:]}")
    return float(done.stdout)


#: tus chunk sizes measured: the issue's 8 MiB, and a larger one to show what each request
#: costs (the fixed part is paid 8 times less often).
TUS_CHUNKS = (8 * MiB, 64 * MiB)
#: tus-js-client's ``parallelUploads`` measured: 4 parts (issue 29), in the 8 MiB chunks of the
#: sequential case rather than its default (one PATCH per part), so that the two rows differ by
#: the parallelism alone, and as a resumable client sets a chunk size: to bound what a dropped
#: connection costs and what a proxy must take in one request.
TUS_PARALLEL = (4, 8 * MiB)


def bench_tus(servers, size, rounds, folder):
    """Resumable uploads in chunks of each of :data:`TUS_CHUNKS`, and in parallel parts
    (:data:`TUS_PARALLEL`), against the multipart upload of the same file, on the same server,
    interleaved: what resuming costs, and what parallel parts buy."""
    if not (shutil.which("node") and shutil.which("npm")):
        raise SystemExit("the tus case needs node and npm (tus-js-client's parallel uploads)")
    node_modules = live.ensure_tus_js()
    path = make_file(folder, size)
    kinds = [(1, chunk) for chunk in TUS_CHUNKS] + [TUS_PARALLEL]
    rows = []
    for name in ("ours", *(f"ours-{s}" for s in STREAMING)):
        if name not in servers:
            continue
        server = servers[name]
        times = {kind: [] for kind in kinds}
        form_times, form_cpus = [], []
        for _ in range(rounds):
            for chunk in TUS_CHUNKS:
                times[1, chunk].append(with_cpu(server, tus_once, server, path, chunk))
                server.clean("tus")
            once = with_cpu(server, tus_parallel_once, server, path, *TUS_PARALLEL, node_modules)
            times[TUS_PARALLEL].append(once)
            server.clean("tus")
            seconds, _, server_cpu, client_cpu = upload_once(server, path, "form")
            form_times.append(seconds)
            form_cpus.append((server_cpu, client_cpu))
            server.clean("form")
        multipart, multipart_cpu = statistics.median(form_times), medians(form_cpus)
        for parts, chunk in kinds:
            measured = times[parts, chunk]
            row = {"server": name, "size": size, "chunk": chunk, "parts": parts,
                   "tus": statistics.median(m[0] for m in measured),
                   "tus_cpu": medians(m[1:] for m in measured),
                   "multipart": multipart, "multipart_cpu": multipart_cpu}  # fmt: skip
            rows.append(row)
            print(f"  {name:12s} tus {parts} x {chunk // MiB} MiB {row['tus']:.2f} s, "
                  f"multipart {multipart:.2f} s")  # fmt: skip
    return rows


def bench_refusals(servers, length=2_000_000_000):
    """An anonymous POST announcing ``length`` bytes: how long until the 401, and how much of
    its body the client could send meanwhile (what the server or its buffers took)."""
    rows = []
    for name, server in servers.items():
        if not server.kinto or name == "peer":
            continue
        path = server.upload_url("refused").removeprefix(server.live.origin)
        start = time.perf_counter()
        line, sent = live.post_without_reading(server.live, path, length)
        rows.append({"server": name, "status": line, "seconds": time.perf_counter() - start,
                     "sent": sent})  # fmt: skip
        print(f"  {name:12s} {line}: {sent / MiB:.1f} MiB sent")
    return rows


def measure(servers, cases, args, folder):
    """``(large, small, downloads, tus, refusals, events, records)``: the rows of each case
    (empty when not run)."""
    sizes = [int(s) * MiB for s in args.sizes.split(",")]
    large = small = downloads = tus = refusals = events = records = []
    if "large" in cases:
        print("Large uploads", flush=True)
        large = bench_large(servers, sizes, args.rounds, folder)
    if "small" in cases:
        print("Small uploads", flush=True)
        small = bench_small(servers, args.small, args.concurrency)
    if "downloads" in cases:
        print("Downloads", flush=True)
        downloads = bench_downloads(servers, args.download_size * MiB, args.rounds, folder)
    if "tus" in cases:
        print("Resumable uploads", flush=True)
        tus = bench_tus(servers, max(sizes), args.tus_rounds, folder)
    if "refusals" in cases:
        print("Refusals", flush=True)
        refusals = bench_refusals(servers)
    if "events" in cases:
        missing = set(EVENTS_PAIR) - set(servers)
        if missing:
            raise SystemExit(f"the events case needs the servers {', '.join(sorted(missing))}")
        print("Events", flush=True)
        events = bench_events(servers, args.small, args.concurrency, args.rounds)
    if "records" in cases:
        if "ours-pg" not in servers:
            raise SystemExit("the records case needs the server ours-pg")
        print("Uploads against record PUTs", flush=True)
        records = bench_records(
            servers["ours-pg"], args.small, args.concurrency, args.records_rounds
        )
    return large, small, downloads, tus, refusals, events, records


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="16,256,1024", help="MiB, comma separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--tus-rounds",
        type=int,
        default=5,
        # Each is short, and an upload waiting for an fsync every chunk is the case the disk's
        # latency spikes hit most: more rounds steady its median.
        help="rounds of the resumable case",
    )
    parser.add_argument(
        "--records-rounds",
        type=int,
        default=5,
        # A round's batches take seconds each, and this machine's speed wanders by a fifth
        # over a minute: a slow spell falls on one batch of a round, not on its others.
        help="rounds of the records case",
    )
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--servers",
        # Not ours-gcs: a 1 GiB upload to the GCS emulator takes minutes (RESULTS-gcs.md).
        default="reference,reference-wb,peer,ours,ours-pg,ours-s3,ours-s3-uwsgi,"
        "reference-gunicorn,floor-gunicorn,ours-gunicorn,reference-uwsgi,floor-uwsgi,ours-uwsgi,"
        "ours-pg-events",
        help="comma separated (more: ours-gcs)",
    )
    parser.add_argument(
        "--cases",
        default="large,small,downloads,tus,refusals,events,records",
        help="comma separated",
    )
    parser.add_argument(
        "--tmpfs",
        action="store_true",
        help="files and request buffers in /dev/shm: the software's own cost, without the disk",
    )
    parser.add_argument("--download-size", type=int, default=256, help="MiB")
    parser.add_argument("--output", default="RESULTS.md", help="file name, in bench/")
    args = parser.parse_args()

    WORK.mkdir(exist_ok=True)
    root = Path("/dev/shm/kinto-attachment-bench") if args.tmpfs else WORK
    root.mkdir(exist_ok=True)
    folder = root / f"run-{os.getpid()}"
    folder.mkdir()
    cases = args.cases.split(",")
    try:
        with contextlib.ExitStack() as stack:
            servers = start_servers(args.servers.split(","), folder, stack)
            rows = measure(servers, cases, args, folder)
        report.write(HERE / args.output, *rows, args)
        print((HERE / args.output).read_text())
    except Exception:
        print_server_errors(folder)
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def print_server_errors(folder):
    """The tracebacks the servers logged, before their folder goes: what a failed run's
    answer (a 503, a dropped connection) came from."""
    for log in sorted(folder.glob("server-*.log")):
        text = log.read_text(errors="replace")
        if "Traceback" in text:
            start = text.index("Traceback")
            print(f"--- {log.name}, its first traceback:")
            print(text[max(0, start - 2000) : start + 6000])


if __name__ == "__main__":
    main()
