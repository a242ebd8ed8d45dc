"""Benchmarks, run side by side in one invocation: ``make bench`` (never part of ``make test``).

Servers, each a separate process on a free loopback port, all waitress with the same settings:

- ``reference``: waitress + a WSGI app that only streams the body to disk with sha256 and fsync
  (``bench/reference.py``), the practical limit of this stack;
- ``reference-wb``: the same, writing the way our local store does (write-behind: windows
  flushed as they fill and dropped from the page cache), the limit with that I/O strategy;
- ``peer``: Mozilla's kinto-attachment 8.0.0 from PyPI, in its own virtualenv (created here),
  same Kinto and same configuration apart from the include;
- ``ours``: kinto_attachment on the embedded default (memory backend, local files);
- ``ours-pg``: the same on PostgreSQL (``BENCH_PG``, default ``postgresql://postgres@127.0.0.1``);
- ``ours-s3``: the same with files in S3 (a moto server process, not measured).

For each upload: wall time of ``curl -F`` (as users upload), MiB/s, and the server's peak RSS
growth (``VmHWM`` of the server process, reset before each upload through ``clear_refs``).
Several rounds; medians reported, with ratios to the reference and to the peer measured in the
same run. Results go to ``bench/RESULTS.md`` and ``bench/chart.png``.
"""

import argparse
import concurrent.futures
import contextlib
import datetime
import hashlib
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import requests


HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
BIN = Path(sys.executable).parent
PEER_VENV = WORK / "peer-venv"
PEER_REQUIREMENTS = ["kinto==26.5.0", "kinto-attachment==8.0.0", "waitress", "setuptools"]
AUTH = ("alice", "passwd")
MiB = 1024 * 1024
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def wait_for(url, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}) before answering {url}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


class Server:
    """A server process, what it answers on, and how to upload to it."""

    def __init__(self, name, command, port, folder, kinto=True):
        self.name, self.port, self.folder, self.kinto = name, port, folder, kinto
        self.log = open(folder / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop())
        # Request bodies that waitress buffers go to TMPDIR: beside the files under test.
        env = {**os.environ, "TMPDIR": str(folder)}
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env
        )
        self.root = f"http://127.0.0.1:{port}" + ("/v1" if kinto else "")
        wait_for(self.root + ("/__heartbeat__" if kinto else "/files/none"), self.process)
        if kinto:
            requests.put(f"{self.root}/buckets/bench", auth=AUTH, timeout=10).raise_for_status()
            requests.put(
                f"{self.root}/buckets/bench/collections/files", auth=AUTH, timeout=10
            ).raise_for_status()

    def upload_url(self, record):
        if not self.kinto:
            return f"{self.root}/upload"
        return f"{self.root}/buckets/bench/collections/files/records/{record}/attachment"

    def clean(self, record):
        if self.kinto:
            requests.delete(self.upload_url(record), auth=AUTH, timeout=60)
        else:
            for path in (self.folder / f"{self.name}-files").iterdir():
                path.unlink()

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(15)
        self.log.close()


def kinto_ini(template, port, files, includes, extra=()):
    """config/kinto.ini on ``port``, files in ``files``, no size limit, more lines in extra."""
    text = (ROOT / "config" / template).read_text()
    text = re.sub(r"^port = 8888$", f"port = {port}", text, flags=re.MULTILINE)
    text = re.sub(r"^host = .*$", "host = 127.0.0.1", text, flags=re.MULTILINE)
    text = re.sub(
        r"^max_request_body_size = .*$",
        f"max_request_body_size = {8 * 1024**3}",
        text,
        flags=re.MULTILINE,
    )
    text = re.sub(
        r"^kinto\.includes = .*?\n(?=\S)",
        f"kinto.includes = {includes}\n",
        text,
        flags=re.MULTILINE | re.DOTALL,
    )
    text = re.sub(r"^kinto\.attachment\..*\n", "", text, flags=re.MULTILINE)
    lines = [
        f"kinto.attachment.base_path = {files}",
        f"kinto.attachment.base_url = http://127.0.0.1:{port}/v1/attachments/",
        "kinto.attachment.extensions = any",
        *extra,
    ]
    return text.replace("[loggers]", "\n".join(lines) + "\n\n[loggers]").replace(
        "level = INFO", "level = WARNING"
    )


def ensure_peer():
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    check = subprocess.run([str(python), "-c", "import kinto_attachment"], capture_output=True)
    if check.returncode != 0:
        pip = [str(PEER_VENV / "bin" / "pip"), "install", "-q", *PEER_REQUIREMENTS]
        subprocess.run(pip, check=True)
    return PEER_VENV / "bin"


def start_servers(names, folder):
    servers = {}
    for name in names:
        port = free_port()
        files = folder / f"{name}-files"
        files.mkdir()
        ini = folder / f"{name}.ini"
        if name.startswith("reference"):
            command = [sys.executable, str(HERE / "reference.py"), "--port", str(port)]
            command += ["--dir", str(files)] + (["--write-behind"] if name.endswith("-wb") else [])
            servers[name] = Server(name, command, port, folder, kinto=False)
            continue
        includes = "kinto.plugins.flush kinto_attachment"
        extra = ["kinto.attachment.serve_files = true"]
        template, bin_dir = "kinto.ini", BIN
        if name == "peer":
            bin_dir, extra = ensure_peer(), []
        elif name == "ours-pg":
            template = "postgresql.ini"
        elif name == "ours-s3":
            extra = s3_lines(folder)
        text = kinto_ini(template, port, files, includes, extra)
        if name == "ours-pg":
            text = re.sub(r"^pg_url = .*$", f"pg_url = {pg_database()}", text, flags=re.M)
        if name == "ours-s3":
            text = re.sub(r"^kinto\.attachment\.base_path = .*\n", "", text, flags=re.M)
        ini.write_text(text)
        if name == "ours-pg":
            subprocess.run([str(BIN / "kinto"), "migrate", "--ini", str(ini)], check=True)
        servers[name] = Server(name, [str(bin_dir / "pserve"), str(ini)], port, folder)
    return servers


_PG_DATABASE = []


def pg_database():
    """A fresh PostgreSQL database for the run (created once)."""
    if not _PG_DATABASE:
        import psycopg2

        name = f"kinto_bench_{uuid.uuid4().hex[:8]}"
        admin = psycopg2.connect(PG + "/postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        admin.close()
        _PG_DATABASE.append(f"{PG}/{name}")
    return _PG_DATABASE[0]


_MOTO = []


def s3_lines(folder):
    """Settings of ours-s3: a moto server process (its memory is not ours) and a bucket."""
    if not _MOTO:
        import boto3

        port = free_port()
        log = open(folder / "moto.log", "wb")  # noqa: SIM115 (lives as long as the run)
        process = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(endpoint, process)
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="x",
            aws_secret_access_key="x",
            region_name="us-east-1",
        ).create_bucket(Bucket="bench")
        _MOTO.append((process, endpoint))
    endpoint = _MOTO[0][1]
    return [
        "kinto.attachment.aws.bucket_name = bench",
        f"kinto.attachment.aws.endpoint_url = {endpoint}",
        "kinto.attachment.aws.access_key = x",
        "kinto.attachment.aws.secret_key = x",
        "kinto.attachment.aws.region = us-east-1",
        "kinto.attachment.aws.use_path_style = true",
    ]


def presigned_url(key):
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=_MOTO[0][1],
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
    )
    return client.generate_presigned_url("get_object", Params={"Bucket": "bench", "Key": key})


def make_file(folder, size):
    path = folder / f"upload-{size // MiB}MiB.bin"
    if not path.exists():
        with open(path, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
    return path


def upload_once(server, path, record):
    """One ``curl -F`` upload: (seconds, peak RSS growth in bytes, server CPU seconds)."""
    pid = server.process.pid
    reset_peak(pid)
    before = vm_value(pid, "VmRSS")
    cpu_before = cpu_seconds(pid)
    start = time.perf_counter()
    result = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", "alice:passwd"]
        + ["-F", f"attachment=@{path}", server.upload_url(record)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    elapsed = time.perf_counter() - start
    if result.stdout not in ("200", "201"):
        raise RuntimeError(f"{server.name}: upload answered {result.stdout} {result.stderr}")
    return elapsed, max(0, vm_value(pid, "VmHWM") - before), cpu_seconds(pid) - cpu_before


def bench_large(servers, sizes, rounds, folder):
    """Rounds interleave the servers (in a rotating order) so that the disk's state, the page
    cache's writeback and other noise fall on every server alike."""
    paths = {size: make_file(folder, size) for size in sizes}
    os.sync()  # The files just written must not be flushed during someone's upload.
    rows = []
    for size in sizes:
        measures = {name: ([], [], []) for name in servers}
        names = list(servers)
        for round_number in range(rounds):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                for values, value in zip(
                    measures[name], upload_once(servers[name], paths[size], "large"), strict=True
                ):
                    values.append(value)
                servers[name].clean("large")
        for name, (times, growths, cpus) in measures.items():
            row = {
                "server": name,
                "size": size,
                "seconds": statistics.median(times),
                "growth": max(growths),
                "cpu": statistics.median(cpus),
            }
            rows.append(row)
            print(f"  {name:12s} {size // MiB:5d} MiB  {row['seconds']:.2f} s", flush=True)
    return rows


def bench_small(servers, count, concurrency):
    content = os.urandom(4096)
    rows = []
    for name, server in servers.items():
        if name == "reference-wb":
            continue  # Write-behind starts at two windows (16 MiB): these are plain writes.
        for workers in (1, concurrency):
            local = threading.local()

            def post(i, server=server, local=local):
                if not hasattr(local, "session"):
                    local.session = requests.Session()
                # Kinto on PostgreSQL answers concurrent writes to one collection with
                # 409 "please retry" (plain record PUTs too): retry, as Kinto clients do.
                for _ in range(5):
                    response = local.session.post(
                        server.upload_url(f"small-{i}"),
                        files={"attachment": (f"f{i}.bin", content)},
                        auth=AUTH,
                        timeout=60,
                    )
                    if response.status_code != 409:
                        break
                if response.status_code >= 400:
                    raise RuntimeError(f"{server.name}: {response.status_code} {response.text}")

            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                list(pool.map(post, range(count)))
            elapsed = time.perf_counter() - start
            rows.append({"server": name, "workers": workers, "rps": count / elapsed})
            print(f"  {name:12s} x{workers}  {count / elapsed:.0f} req/s", flush=True)
            if server.kinto:
                records = f"{server.root}/buckets/bench/collections/files/records"
                requests.delete(records, auth=AUTH, timeout=120)
            else:
                server.clean(None)
    return rows


def bench_downloads(servers, size, rounds, folder):
    """Downloads of a stored file: the reference's static route, ours through Kinto
    (``GET {record}/attachment``, permission-checked) and ``/data/files/{id}`` (verified)."""
    path = make_file(folder, size)
    targets = []
    for name, server in servers.items():
        if name in ("peer", "reference-wb"):
            continue  # kinto-attachment serves no files; the two references serve alike.
        if not server.kinto:
            with open(path, "rb") as body:
                response = requests.post(server.upload_url(None), data=body, timeout=600)
            targets.append((name, "static file", f"{server.root}{response.json()['location']}"))
            continue
        with open(path, "rb") as body:
            uploaded = requests.post(
                server.upload_url("download"),
                files={"attachment": ("d.bin", body)},
                auth=AUTH,
                timeout=600,
            )
        uploaded.raise_for_status()
        if name == "ours-s3":
            # What we proxy, fetched from the S3 server itself: the bound of S3 downloads.
            key = uploaded.json()["location"].rsplit("/attachments/", 1)[1]
            targets.append((name, "S3 server directly", presigned_url(key)))
        with open(path, "rb") as body:
            data_file = f"http://127.0.0.1:{server.port}/data/files"
            requests.post(f"{data_file}?id=download", data=body, timeout=600).raise_for_status()
        targets.append((name, "record attachment", server.upload_url("download")))
        targets.append((name, "/data/files", f"{data_file}/download"))
    os.sync()
    rows = []
    for name, route, url in targets:
        pid = servers[name].process.pid
        direct = route == "S3 server directly"  # Our server is not involved: no auth.
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


def ratio(value, reference):
    return f"{value / reference:.2f}×" if reference else "n/a"


def versions():
    pip = subprocess.run(
        [str(BIN / "pip"), "list", "--format=freeze"], capture_output=True, text=True
    ).stdout
    wanted = ("kinto=", "waitress=", "python-multipart=", "boto3=", "moto=", "webob=")
    return ", ".join(line for line in pip.split() if line.lower().startswith(wanted))


def report(large, small, downloads, args):
    lines = [
        "# Benchmark results",
        "",
        f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 1024**3} GiB RAM, "
        f"Python {platform.python_version()}",
        f"- Versions: {versions()}; peer: kinto-attachment 8.0.0",
        f"- Rounds: {args.rounds} per case (medians); uploads with `curl -F`, fsync on; "
        + (
            "files and request buffers on tmpfs (software overhead, no disk)."
            if args.tmpfs
            else "files and request buffers on the disk."
        ),
    ]
    if large:
        lines += _large_section(large)
    if small:
        lines += _small_section(small, args)
    if downloads:
        lines += _downloads_section(downloads)
    if large:
        image = "chart.png" if args.output == "RESULTS.md" else args.output[:-3] + ".png"
        lines += ["", f"![throughput and memory]({image})", ""]
        chart(large, HERE / image)
    (HERE / args.output).write_text("\n".join(lines))


def _large_section(large):
    by = {(r["server"], r["size"]): r for r in large}
    lines = [
        "",
        "## Large uploads",
        "",
        "| server | size | median s | MiB/s | vs reference | vs reference-wb | vs peer "
        "| server CPU s | CPU vs reference | peak RSS growth |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in large:
        ref = by.get(("reference", row["size"]))
        ref_wb = by.get(("reference-wb", row["size"]))
        peer = by.get(("peer", row["size"]))
        lines.append(
            f"| {row['server']} | {row['size'] // MiB} MiB | {row['seconds']:.2f} "
            f"| {row['size'] / MiB / row['seconds']:.0f} "
            f"| {ratio(row['seconds'], ref['seconds']) if ref else 'n/a'} "
            f"| {ratio(row['seconds'], ref_wb['seconds']) if ref_wb else 'n/a'} "
            f"| {ratio(row['seconds'], peer['seconds']) if peer else 'n/a'} "
            f"| {row['cpu']:.2f} | {ratio(row['cpu'], ref['cpu']) if ref else 'n/a'} "
            f"| {row['growth'] / MiB:.1f} MiB |"
        )
    return lines


def _small_section(small, args):
    small_by = {(r["server"], r["workers"]): r["rps"] for r in small}
    lines = [
        "",
        f"## {args.small} uploads of 4 KiB (requests/s, python-requests clients)",
        "",
        "| server | sequential | vs peer | concurrent (8) | vs peer |",
        "|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["server"] for r in small):
        seq, conc = small_by[(name, 1)], small_by[(name, args.concurrency)]
        peer_seq, peer_conc = small_by.get(("peer", 1)), small_by.get(("peer", args.concurrency))
        lines.append(
            f"| {name} | {seq:.0f} | {ratio(seq, peer_seq) if peer_seq else 'n/a'} "
            f"| {conc:.0f} | {ratio(conc, peer_conc) if peer_conc else 'n/a'} |"
        )
    return lines


def _downloads_section(downloads):
    ref_download = next(r for r in downloads if r["server"] == "reference")
    ref_speed = ref_download["size"] / MiB / ref_download["seconds"]
    lines = [
        "",
        "## Downloads (the client hashes what it receives)",
        "",
        "| server | route | size | median s | MiB/s | vs static file | peak RSS growth |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in downloads:
        speed = row["size"] / MiB / row["seconds"]
        growth = "n/a" if row["growth"] is None else f"{row['growth'] / MiB:.1f} MiB"
        lines.append(
            f"| {row['server']} | {row['route']} | {row['size'] // MiB} MiB "
            f"| {row['seconds']:.2f} | {speed:.0f} | {speed / ref_speed:.2f}× | {growth} |"
        )
    return lines


def chart(large, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4))
    for name in dict.fromkeys(r["server"] for r in large):
        rows = [r for r in large if r["server"] == name]
        sizes = [r["size"] / MiB for r in rows]
        speed.plot(sizes, [r["size"] / MiB / r["seconds"] for r in rows], marker="o", label=name)
        memory.plot(sizes, [r["growth"] / MiB for r in rows], marker="o", label=name)
    for axis, title in ((speed, "upload throughput (MiB/s)"), (memory, "peak RSS growth (MiB)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("file size (MiB)")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    speed.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="16,256,1024", help="MiB, comma separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--servers",
        default="reference,reference-wb,peer,ours,ours-pg,ours-s3",
        help="comma separated",
    )
    parser.add_argument("--cases", default="large,small,downloads", help="comma separated")
    parser.add_argument(
        "--tmpfs",
        action="store_true",
        help="files and request buffers in /dev/shm: the software's own cost, without the disk",
    )
    parser.add_argument("--output", default="RESULTS.md", help="file name, in bench/")
    args = parser.parse_args()

    WORK.mkdir(exist_ok=True)
    root = Path("/dev/shm/kinto-attachment-bench") if args.tmpfs else WORK
    root.mkdir(exist_ok=True)
    folder = root / f"run-{os.getpid()}"
    folder.mkdir()
    cases = args.cases.split(",")
    servers = {}
    try:
        servers = start_servers(args.servers.split(","), folder)
        sizes = [int(s) * MiB for s in args.sizes.split(",")]
        large = small = downloads = []
        if "large" in cases:
            print("Large uploads", flush=True)
            large = bench_large(servers, sizes, args.rounds, folder)
        if "small" in cases:
            print("Small uploads", flush=True)
            small = bench_small(servers, args.small, args.concurrency)
        if "downloads" in cases:
            print("Downloads", flush=True)
            downloads = bench_downloads(servers, 256 * MiB, args.rounds, folder)
        report(large, small, downloads, args)
        print((HERE / args.output).read_text())
    finally:
        for server in servers.values():
            server.stop()
        for process, _ in _MOTO:
            process.terminate()
            process.wait(15)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
