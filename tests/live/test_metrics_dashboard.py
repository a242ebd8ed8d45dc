"""The shipped metrics configuration (``config/metrics.ini``) and Grafana dashboard
(``config/grafana/kinto-attachment.json``): every query of the dashboard names series, and
groups by labels, that a live server serving that configuration exports once it has uploaded,
downloaded, served ``/data/files`` and collected. A renamed metric or label fails here rather
than as an empty panel in production."""

import json
import re
import time
import uuid

import pytest
import requests

from ..support.live import ALICE, REQUEST_TIMEOUT, ROOT, create_collection, running_server


pytestmark = pytest.mark.live

DASHBOARD = ROOT / "config" / "grafana" / "kinto-attachment.json"
METRICS_INI = ROOT / "config" / "metrics.ini"
#: A series line of Prometheus' text format: name, labels, value.
SERIES = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? \S+$", re.M)
LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="')
#: What a PromQL expression names: metric names, and regular expressions on ``__name__``.
NAME_MATCHER = re.compile(r'__name__=~"([^"]+)"')
IDENTIFIER = re.compile(r"\b(kinto_[A-Za-z0-9_]+)\b")
GROUPING = re.compile(r"\bby \(([^)]*)\)")


def exported(text):
    """``{series name: set of its label names}`` of a ``/__metrics__`` answer."""
    series = {}
    for name, labels in SERIES.findall(text):
        series.setdefault(name, set()).update(LABEL.findall(labels or ""))
    return series


def queries():
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("metrics")
    with pytest.MonkeyPatch.context() as env:
        # Expired /data/files collected every second, so that a collection is counted.
        env.setenv("KINTO_ATTACHMENT_DATA_FILES_GC_INTERVAL_SECONDS", "1")
        with running_server(folder, extended_by=METRICS_INI) as live:
            yield live


@pytest.fixture(scope="module")
def scraped(server):
    """What the server exports after a little of everything the dashboard shows."""
    create_collection(server, "metrics", "files")
    record = f"{server.url}/buckets/metrics/collections/files/records/{uuid.uuid4()}"
    http = requests.Session()
    http.auth = ALICE
    attached = http.post(
        f"{record}/attachment",
        files={"attachment": ("notes.txt", b"hello metrics", "text/plain")},
        timeout=REQUEST_TIMEOUT,
    )
    assert attached.status_code == 201, attached.text
    refused = http.post(f"{record}/attachment", data=b"not a form", timeout=REQUEST_TIMEOUT)
    assert refused.status_code == 400, refused.text
    assert http.get(f"{record}/attachment", timeout=REQUEST_TIMEOUT).status_code == 200
    for query in ("id=kept", "id=expiring&ttl=1"):
        stored = http.post(f"{server.url}/data/files?{query}", data=b"x", timeout=REQUEST_TIMEOUT)
        assert stored.status_code == 200, stored.text
    assert http.get(f"{server.url}/data/files/kept", timeout=REQUEST_TIMEOUT).status_code == 200
    deadline = time.monotonic() + 30
    while True:
        text = requests.get(f"{server.url}/__metrics__", timeout=REQUEST_TIMEOUT).text
        series = exported(text)
        if "kinto_attachment_gc_removed_total" in series or time.monotonic() > deadline:
            return series
        time.sleep(0.5)


def test_the_metrics_configuration_exports_the_plugins_series(scraped):
    assert {"route", "status"} <= scraped["kinto_attachment_upload_seconds_bucket"]
    assert "kinto_attachment_gc_removed_total" in scraped, sorted(scraped)


@pytest.mark.parametrize(("title", "expr"), queries(), ids=[title for title, _ in queries()])
def test_every_query_names_exported_series_and_labels(scraped, title, expr):
    names = set(IDENTIFIER.findall(NAME_MATCHER.sub("", expr)))
    matched = [n for n in scraped if any(re.fullmatch(p, n) for p in NAME_MATCHER.findall(expr))]
    assert names or matched, f"{title}: {expr} names no series"
    missing = names - scraped.keys()
    assert not missing, f"{title}: {sorted(missing)} not exported"
    for pattern in NAME_MATCHER.findall(expr):
        assert any(re.fullmatch(pattern, n) for n in scraped), f"{title}: {pattern} matches none"
    labels = set().union(*(scraped[n] for n in names | set(matched)))
    for grouping in GROUPING.findall(expr):
        wanted = {label.strip() for label in grouping.split(",")} - {"le"}
        assert wanted <= labels, f"{title}: grouped by {sorted(wanted - labels)}, not exported"


def test_the_dashboard_is_importable_as_grafana_expects():
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
