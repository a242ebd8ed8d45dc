"""The report of ``bench/run.py``: markdown tables and a chart of what it measured.

``run.py`` measures and hands its rows here; nothing here starts a server or times anything.
Rows are dicts: large uploads ``{server, size, seconds, growth, cpu}``, small uploads
``{server, workers, rps}``, downloads ``{server, route, size, seconds, growth}`` (bytes and
seconds; ``growth`` None where our server is not involved), resumable uploads ``{server, size,
chunk, parts, tus, multipart}``, refusals ``{server, status, seconds, sent}``, events ``{server,
workers, round, rps}``, records ``{kind, workers, round, rps, conflicts}``.
"""

import datetime
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path


MiB = 1024 * 1024
BIN = Path(sys.executable).parent


def write(path, large, small, downloads, tus, refusals, events, records, args):
    """``path`` (markdown) and, with large uploads, its chart beside it (``chart.png`` for
    ``RESULTS.md``, ``NAME.png`` for ``NAME.md``)."""
    lines = header(args)
    if large:
        lines += large_section(large)
    if small:
        lines += small_section(small, args.small, args.concurrency)
    if downloads:
        lines += downloads_section(downloads)
    if tus:
        lines += tus_section(tus)
    if refusals:
        lines += refusals_section(refusals)
    if events:
        lines += events_section(events, args.small)
    if records:
        lines += records_section(records, args.small)
    if large:
        image = "chart.png" if path.name == "RESULTS.md" else path.stem + ".png"
        lines += ["", f"![throughput and memory]({image})", ""]
        chart(large, path.parent / image)
    path.write_text("\n".join(lines))


def ratio(value, reference):
    return f"{value / reference:.2f}×" if reference else "n/a"


def verdict(met):
    """Whether a target of issue 29 is met, in a table."""
    return "met" if met else "**not met**"


def versions():
    pip = subprocess.run(
        [str(BIN / "pip"), "list", "--format=freeze"], capture_output=True, text=True
    ).stdout
    wanted = (
        "kinto=", "waitress=", "gunicorn=", "pyuwsgi=", "python-multipart=", "boto3=", "moto=",
        "google-cloud-storage=", "webob=",
    )  # fmt: skip
    return ", ".join(line for line in pip.split() if line.lower().startswith(wanted))


def header(args):
    return [
        "# Benchmark results",
        "",
        f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 1024**3} GiB RAM, "
        f"Python {platform.python_version()}",
        f"- Versions: {versions()}; peer: kinto-attachment 8.0.0",
        f"- Rounds: {args.rounds} per case, {args.tus_rounds} for resumable uploads "
        f"(medians); uploads with `curl -F`, fsync on; "
        + (
            "files and request buffers on tmpfs (software overhead, no disk)."
            if args.tmpfs
            else "files and request buffers on the disk."
        ),
        "- What each server is, and what limits each case: [README.rst](README.rst).",
    ]


#: The bound each of our servers is measured against: the raw sink of the same WSGI server,
#: or a direct upload to the same store.
OWN_BOUND = {
    "ours": "reference",
    "ours-pg": "reference",
    "ours-gunicorn": "reference-gunicorn",
    "ours-uwsgi": "reference-uwsgi",
    "ours-s3": "s3-direct",
    "ours-s3-gunicorn": "s3-direct",
    "ours-s3-uwsgi": "s3-direct",
    "ours-gcs": "gcs-direct",
}


def large_section(large):
    by = {(r["server"], r["size"]): r for r in large}
    lines = [
        "",
        "## Large uploads",
        "",
        "| server | size | median s | MiB/s | vs reference | vs reference-wb | vs own bound "
        "| vs peer | server CPU s | CPU vs reference | peak RSS growth |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in large:
        ref = by.get(("reference", row["size"]))
        ref_wb = by.get(("reference-wb", row["size"]))
        bound = by.get((OWN_BOUND.get(row["server"]), row["size"]))
        peer = by.get(("peer", row["size"]))
        lines.append(
            f"| {row['server']} | {row['size'] // MiB} MiB | {row['seconds']:.2f} "
            f"| {row['size'] / MiB / row['seconds']:.0f} "
            f"| {ratio(row['seconds'], ref['seconds']) if ref else 'n/a'} "
            f"| {ratio(row['seconds'], ref_wb['seconds']) if ref_wb else 'n/a'} "
            f"| {ratio(row['seconds'], bound['seconds']) if bound else 'n/a'} "
            f"| {ratio(row['seconds'], peer['seconds']) if peer else 'n/a'} "
            f"| {row['cpu']:.2f} | {ratio(row['cpu'], ref['cpu']) if ref else 'n/a'} "
            f"| {row['growth'] / MiB:.1f} MiB |"
        )
    return lines + floor_lines(large)


#: A large upload under a streaming server against that server's read-only floor: at most
#: this many times its time, and at most this peak RSS growth, from 1 GiB up (issue 29, for
#: gunicorn, the best shipped streaming server).
FLOOR_TARGET, FLOOR_GROWTH, FLOOR_FROM = 1.5, 32 * MiB, 1024 * MiB


def floor_lines(large):
    """``ours-NAME`` against ``floor-NAME`` (the same server reading the body and storing
    nothing), for each streaming server with both measured."""
    by = {(r["server"], r["size"]): r for r in large}
    floor_of = {r["server"]: "floor-" + r["server"].removeprefix("ours-") for r in large}
    pairs = [
        (row, by[floor_of[row["server"]], row["size"]])
        for row in large
        if row["server"].startswith("ours-") and (floor_of[row["server"]], row["size"]) in by
    ]
    if not pairs:
        return []
    cores = os.cpu_count()
    lines = [
        "",
        f"Against the server's read-only floor (targets from {FLOOR_FROM // MiB} MiB: time "
        f"≤ {FLOOR_TARGET}× the floor's, peak RSS growth ≤ {FLOOR_GROWTH // MiB} MiB). CPU s: "
        "the server's and curl's CPU seconds, server + curl (medians); ÷ cores: their sum "
        f"spread over the machine's {cores} cores, a wall time no upload can go below (the "
        "kernel's writeback threads come on top).",
        "",
        "| server | size | median s | floor s | vs floor | CPU s | floor's CPU s "
        f"| CPU ÷ {cores} cores | peak RSS growth | target |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, floor in pairs:
        met = row["seconds"] <= FLOOR_TARGET * floor["seconds"] and row["growth"] <= FLOOR_GROWTH
        target = verdict(met) if row["size"] >= FLOOR_FROM else f"(from {FLOOR_FROM // MiB} MiB)"
        cpu = row["cpu"] + row["client_cpu"]
        lines.append(
            f"| {row['server']} | {row['size'] // MiB} MiB | {row['seconds']:.2f} "
            f"| {floor['seconds']:.2f} | {ratio(row['seconds'], floor['seconds'])} "
            f"| {row['cpu']:.2f} + {row['client_cpu']:.2f} "
            f"| {floor['cpu']:.2f} + {floor['client_cpu']:.2f} | {cpu / cores:.2f} s "
            f"| {row['growth'] / MiB:.1f} MiB | {target} |"
        )
    return lines


def small_section(small, count, concurrency):
    small_by = {(r["server"], r["workers"]): r["rps"] for r in small}
    lines = [
        "",
        f"## {count} uploads of 4 KiB (requests/s, python-requests clients)",
        "",
        f"| server | sequential | vs peer | concurrent ({concurrency}) | vs peer |",
        "|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["server"] for r in small):
        seq, conc = small_by[(name, 1)], small_by[(name, concurrency)]
        peer_seq, peer_conc = small_by.get(("peer", 1)), small_by.get(("peer", concurrency))
        lines.append(
            f"| {name} | {seq:.0f} | {ratio(seq, peer_seq) if peer_seq else 'n/a'} "
            f"| {conc:.0f} | {ratio(conc, peer_conc) if peer_conc else 'n/a'} |"
        )
    return lines


def downloads_section(downloads):
    """Speeds relative to the reference's static file (absent: no ratio)."""
    ref_download = next((r for r in downloads if r["server"] == "reference"), None)
    ref_speed = ref_download and ref_download["size"] / MiB / ref_download["seconds"]
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
            f"| {row['seconds']:.2f} | {speed:.0f} | {ratio(speed, ref_speed)} | {growth} |"
        )
    return lines


#: tus throughput against multipart (multipart time / tus time), by ``(parts, chunk)``: plain
#: sequential 8 MiB chunks on every shipped server, and 4 parallel parts (issue 29).
TUS_TARGETS = {(1, 8 * MiB): 0.8, (4, 8 * MiB): 1.0}


def cpus(pair):
    """Server + client CPU seconds."""
    return " + ".join(f"{seconds:.2f}" for seconds in pair)


def tus_section(tus):
    lines = [
        "",
        "## Resumable uploads (tus) against multipart, same file and server",
        "",
        "Sequential: one upload, one kept-alive connection. Parallel: tus-js-client's "
        "`parallelUploads` (partial uploads sent at once, then the final one joining them). "
        "CPU s: the server's and the client's (Python's `http.client`, tus-js-client's node, "
        "curl for multipart), medians; on 2 cores, their sum halved is a wall time no upload "
        "goes below.",
        "",
        "| server | size | parts | chunk | tus s | multipart s "
        "| tus throughput vs multipart | target | tus CPU s | multipart CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in tus:
        speed = row["multipart"] / row["tus"]
        target = TUS_TARGETS.get((row["parts"], row["chunk"]))
        parts = "sequential" if row["parts"] == 1 else f"{row['parts']} parallel"
        lines.append(
            f"| {row['server']} | {row['size'] // MiB} MiB | {parts} | {row['chunk'] // MiB} MiB "
            f"| {row['tus']:.2f} | {row['multipart']:.2f} | {speed:.2f}× "
            f"| {f'≥ {target}×: {verdict(speed >= target)}' if target else ''} "
            f"| {cpus(row['tus_cpu'])} | {cpus(row['multipart_cpu'])} |"
        )
    return lines


def refusals_section(refusals):
    lines = [
        "",
        "## An anonymous POST announcing 2 GB",
        "",
        "| server | answer | seconds | body sent by the client before it |",
        "|---|---|---|---|",
    ]
    for row in refusals:
        lines.append(
            f"| {row['server']} | {row['status']} | {row['seconds']:.2f} "
            f"| {row['sent'] / MiB:.1f} MiB |"
        )
    return lines


#: Throughput of 4 KiB uploads with events on, against events off, that the events case
#: must keep.
EVENTS_TARGET = 0.9


def events_section(events, count):
    """Medians of the rounds, events on against off, sequential and concurrent."""
    off, on = "ours-pg", "ours-pg-events"
    lines = [
        "",
        f"## Events: {count} uploads of 4 KiB on PostgreSQL, `redis` destination on and off",
        "",
        f"| clients | rounds | {off} req/s | {on} req/s | on vs off (target ≥ {EVENTS_TARGET}×) |",
        "|---|---|---|---|---|",
    ]
    for workers in dict.fromkeys(r["workers"] for r in events):
        rps = {
            name: [r["rps"] for r in events if r["server"] == name and r["workers"] == workers]
            for name in (off, on)
        }
        median_off, median_on = (statistics.median(rps[name]) for name in (off, on))
        lines.append(
            f"| {workers} | {len(rps[off])} | {median_off:.0f} | {median_on:.0f} "
            f"| {ratio(median_on, median_off)} |"
        )
    return lines


#: Throughput of 4 KiB uploads against plain record ``PUT``s that the records case must keep.
RECORDS_TARGET = 0.8


def records_section(records, count):
    """Medians of the rounds: uploads creating and replacing against record ``PUT``s."""
    lines = [
        "",
        f"## {count} uploads of 4 KiB on PostgreSQL against {count} record `PUT`s (ours-pg)",
        "",
        "| clients | rounds | `PUT` req/s | create req/s | replace req/s "
        f"| create vs `PUT` | replace vs `PUT` (target ≥ {RECORDS_TARGET}×) | 409s retried |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for workers in dict.fromkeys(r["workers"] for r in records):
        mine = [r for r in records if r["workers"] == workers]
        rps = {
            kind: statistics.median(r["rps"] for r in mine if r["kind"] == kind)
            for kind in ("put", "create", "replace")
        }
        conflicts = {
            kind: sum(r["conflicts"] for r in mine if r["kind"] == kind)
            for kind in ("put", "create", "replace")
        }
        rounds = sum(1 for r in mine if r["kind"] == "put")
        lines.append(
            f"| {workers} | {rounds} | {rps['put']:.0f} | {rps['create']:.0f} "
            f"| {rps['replace']:.0f} | {ratio(rps['create'], rps['put'])} "
            f"| {ratio(rps['replace'], rps['put'])} "
            f"| {conflicts['put']} / {conflicts['create']} / {conflicts['replace']} |"
        )
    return lines


def chart(large, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4))
    # One color per server (the default cycle has 10): tab20's dark shades, then its light ones.
    pairs = plt.get_cmap("tab20").colors
    colors = pairs[0::2] + pairs[1::2]
    for index, name in enumerate(dict.fromkeys(r["server"] for r in large)):
        rows = [r for r in large if r["server"] == name]
        sizes = [r["size"] / MiB for r in rows]
        # Bounds (references, direct clients, the peer) dashed; this plugin's servers solid.
        style = {"marker": "o", "label": name, "color": colors[index % len(colors)],
                 "linestyle": "-" if name.startswith("ours") else "--"}  # fmt: skip
        speed.plot(sizes, [r["size"] / MiB / r["seconds"] for r in rows], **style)
        memory.plot(sizes, [r["growth"] / MiB for r in rows], **style)
    for axis, title in ((speed, "upload throughput (MiB/s)"), (memory, "peak RSS growth (MiB)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("file size (MiB)")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    speed.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
