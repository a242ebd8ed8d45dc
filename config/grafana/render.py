"""Render the dashboard (``kinto-attachment.json``) as Grafana would draw it, from real data:
``docs/_static/grafana-dashboard.png``, the picture of ``docs/metrics.rst``.

Serves ``config/metrics.ini`` (as the tests do: a live copy on a free port), has a Prometheus
(Debian's ``prometheus``, on PATH) scrape it every second, runs a minute of mixed traffic
(uploads small and large, some refused, downloads and ranges, ``/data/files`` with short
lives for the collector), then evaluates every query of every panel over that minute through
Prometheus' HTTP API and draws them in the dashboard's own grid. So the picture shows what the
shipped queries return, not a mock-up. Run from the repository root, in the test virtualenv
with matplotlib: ``.venv/bin/python config/grafana/render.py [SECONDS]``.
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests


ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # tests.support.live: how the tests start a live server.

from tests.support.live import (  # noqa: E402
    ALICE,
    create_collection,
    free_port,
    running_server,
)


DASHBOARD = ROOT / "config" / "grafana" / "kinto-attachment.json"
OUTPUT = ROOT / "docs" / "_static" / "grafana-dashboard.png"
KiB = 1024
#: What ``$__rate_interval`` stands for at a one-second scrape (Grafana: 4 scrapes at least).
RATE_INTERVAL = "10s"


def traffic(server, seconds):
    """Several clients uploading, replacing, downloading, being refused, for ``seconds``."""
    create_collection(server, "render", "files")
    records = f"{server.url}/buckets/render/collections/files/records"
    stop = time.monotonic() + seconds

    def client(seed):
        rng = random.Random(seed)
        http = requests.Session()
        http.auth = ALICE
        ids = [str(uuid.uuid4()) for _ in range(5)]
        while time.monotonic() < stop:
            record = f"{records}/{rng.choice(ids)}/attachment"
            size = rng.choice([4 * KiB, 64 * KiB, 1024 * KiB, 8192 * KiB])
            http.post(record, files={"attachment": ("data.bin", os.urandom(size))}, timeout=60)
            if rng.random() < 0.1:
                http.post(record, data=b"not a form", timeout=60)
            http.get(record, timeout=60)
            http.get(record, headers={"Range": "bytes=0-1023"}, timeout=60)
            name = uuid.uuid4().hex
            http.post(f"{server.url}/data/files?id={name}&ttl=3000", data=os.urandom(32 * KiB))
            http.get(f"{server.url}/data/files/{name}", timeout=60)
            time.sleep(rng.random() / 4)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def prometheus(folder, target):
    """Debian's Prometheus scraping ``target`` every second, and the URL of its API."""
    port = free_port()
    config = folder / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "kinto",
                        "metrics_path": "/v1/__metrics__",
                        "static_configs": [{"targets": [target]}],
                    }
                ],
            }
        )
    )
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api/v1"
    for _ in range(100):
        try:
            requests.get(f"{url}/status/runtimeinfo", timeout=1).raise_for_status()
            return process, url
        except requests.RequestException:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("prometheus did not start")


def query_range(api, expr, start, end):
    """``[(legend labels, [(t, value)...])...]`` of ``expr`` between ``start`` and ``end``."""
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    answer = requests.get(
        f"{api}/query_range",
        params={"query": expr, "start": start, "end": end, "step": 1},
        timeout=30,
    ).json()
    if answer["status"] != "success":
        raise RuntimeError(f"{expr}: {answer}")
    return [
        (series["metric"], [(float(t) - start, float(v)) for t, v in series["values"]])
        for series in answer["data"]["result"]
    ]


def legend(template, labels):
    text = template
    for name, value in labels.items():
        text = text.replace("{{" + name + "}}", value)
    return text


def draw(dashboard, api, start, end):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    figure = pyplot.figure(figsize=(16, rows * 0.42), facecolor="#181b1f")
    grid = figure.add_gridspec(rows, 24, hspace=2.5, wspace=1.2)
    for panel in dashboard["panels"]:
        x, y, w, h = (panel["gridPos"][k] for k in ("x", "y", "w", "h"))
        if panel["type"] == "row":
            header = figure.add_subplot(grid[y, :])
            header.axis("off")
            header.text(0, 0, panel["title"], color="#d8d9da", size=13)
            continue
        axes = figure.add_subplot(grid[y + 1 : y + h, x : x + w], facecolor="#181b1f")
        axes.set_title(panel["title"], color="#d8d9da", loc="left", size=10)
        axes.tick_params(colors="#8e8e8e", labelsize=7)
        for side in axes.spines.values():
            side.set_color("#2c3235")
        axes.grid(color="#2c3235")
        for target in panel["targets"]:
            for labels, points in query_range(api, target["expr"], start, end):
                if points:
                    times, values = zip(*points, strict=True)
                    axes.plot(times, values, label=legend(target["legendFormat"], labels))
        axes.set_xlabel(f"seconds ({panel['fieldConfig']['defaults']['unit']})", size=7)
        axes.xaxis.label.set_color("#8e8e8e")
        if axes.lines:
            columns = 2 if len(axes.lines) < 8 else 5
            axes.legend(fontsize=6, facecolor="#181b1f", labelcolor="#d8d9da", ncol=columns)
    figure.suptitle(dashboard["title"], color="#d8d9da", x=0.01, ha="left", size=15)
    OUTPUT.parent.mkdir(exist_ok=True)
    figure.savefig(OUTPUT, dpi=80, facecolor=figure.get_facecolor(), bbox_inches="tight")


def main(seconds=60):
    dashboard = json.loads(DASHBOARD.read_text())
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        os.environ["KINTO_ATTACHMENT_DATA_FILES_GC_INTERVAL_SECONDS"] = "2"
        metrics_ini = ROOT / "config" / "metrics.ini"
        (folder / "server").mkdir()
        with running_server(folder / "server", extended_by=metrics_ini) as server:
            scraper, api = prometheus(folder, f"127.0.0.1:{server.port}")
            try:
                start = time.time()
                traffic(server, seconds)
                time.sleep(3)  # the last scrapes
                draw(dashboard, api, start, time.time())
            finally:
                scraper.kill()
                scraper.wait()
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
