"""Readable request logs (:mod:`kinto_attachment.request_log`): one line per request."""

import configparser
import logging
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
import requests

from kinto_attachment.request_log import SummaryFormatter

from ..conftest import ALICE
from ..support.live import REQUEST_TIMEOUT, running_server


#: Kinto's configurations (``uwsgi.ini`` is uWSGI's own).
CONFIGS = sorted(
    path
    for path in (Path(__file__).parents[2] / "config").glob("*.ini")
    if "[app:main]" in path.read_text()
)
FORMAT = "%(levelname)s [%(name)s] %(message)s"


@pytest.fixture
def summaries(kinto_memory):
    """The request summaries Kinto logs while the test runs, formatted as the configs do."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(SummaryFormatter(FORMAT))
    logger = logging.getLogger("request.summary")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)


def test_one_line_per_request(kinto_memory, summaries):
    kinto_memory.create_collection()
    url = kinto_memory.record_url()
    summaries.clear()
    kinto_memory.upload(url, b"0123456789", "digits.txt")
    kinto_memory.app.get(url + "/attachment?x=1", headers=ALICE)
    kinto_memory.app.get(url + "/attachment", status=401)
    upload, download, refused = summaries
    assert upload.startswith(f"INFO [request.summary] POST {url}/attachment 201 ")
    assert " user=basicauth:" in upload
    assert " in=" in upload and " in=-" not in upload
    assert download.startswith(f"INFO [request.summary] GET {url}/attachment?x=1 200 ")
    assert download.endswith(" in=- out=10")
    assert refused.startswith(f"INFO [request.summary] GET {url}/attachment 401 ")
    assert " user=- " in refused and refused.endswith(" errno=104")
    assert all("\n" not in line for line in summaries)


#: What an anonymous client would like the log to say after its own line.
FORGED = "INFO [request.summary] DELETE /v1/buckets/prod 200 3ms user=basicauth:admin in=- out=-"


@pytest.mark.parametrize(
    "url",
    [
        "/v1/__heartbeat__?x=%0A" + quote(FORGED),
        "/v1/__heartbeat__?x=%0D%0A" + quote(FORGED) + "&y=%1B[2K%1B[1A",  # Terminal codes.
        "/v1/__heartbeat__?" + quote("\n" + FORGED) + "=1",  # In a name.
        "/v1/%0A" + quote(FORGED, safe="/"),
        "/v1/x%E2%80%A8" + quote(FORGED, safe="/"),  # U+2028, a line separator.
        "/v1/x%C2%85%E2%80%AE" + quote(FORGED, safe="/"),  # NEL, and bidi override.
        # Spaces that would make fields: the line would read "... 200 3ms user=...".
        "/v1/__heartbeat__?x=" + quote(" 200 3ms user=basicauth:admin in=- out=- "),
    ],
)
def test_what_clients_send_cannot_forge_lines(kinto_memory, summaries, url):
    kinto_memory.app.get(url, status="*")
    (line,) = summaries
    assert line.isprintable(), line
    # One field each: method, URL, status, duration, user, in, out (and errno).
    fields = line.removeprefix("INFO [request.summary] ").split(" ")
    assert len(fields) in (7, 8), line
    method, target, status, _, user, *_ = fields
    assert (method, user) == ("GET", "user=-") and status in ("200", "404"), line
    # The URL as it was sent: what it was is still readable.
    assert unquote(target).startswith("/v1/"), line
    assert "user=basicauth:admin in=- out=-" in unquote(target), line


def record(**facts):
    defaults = {"method": "GET", "path": "/v1/", "code": 200, "t": 1, "msg": ""}
    return logging.makeLogRecord({**defaults, **facts})


def test_every_field_a_client_sends_is_escaped():
    line = SummaryFormatter("%(message)s").format(
        record(
            method="GET\nX",
            path="/v1/a b\\c\x00\u202e",  # Kinto encodes it; written as it comes anyway.
            querystring={"k\r": "v\t", "é": "\x7f", "&": "="},
            uid="id\n2",
            authn_type="account\x1b",
            errno=110,
        )
    )
    assert line.isprintable(), line
    assert line.split(" ") == [
        "GET\\nX",
        "/v1/a\\x20b\\\\c\\x00\\u202e?k%0D=v%09&%C3%A9=%7F&%26=%3D",
        "200",
        "1ms",
        "user=account\\x1b:id\\n2",
        "in=-",
        "out=-",
        "errno=110",
    ]


def test_other_records_as_the_format_says():
    record = logging.makeLogRecord({"name": "kinto", "levelname": "INFO", "msg": "hello %s"})
    record.args = ("world",)
    assert SummaryFormatter(FORMAT).format(record) == "INFO [kinto] hello world"


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_shipped_configs_use_it(path):
    config = configparser.ConfigParser(interpolation=None)
    config.read(path)
    assert config["formatter_generic"]["class"] == "kinto_attachment.request_log.SummaryFormatter"


@pytest.mark.live
def test_live_a_forged_line_stays_in_its_request(tmp_path):
    """The observation of issue 25 against the shipped configuration: an anonymous request
    whose query holds a line break and a summary of its own."""
    with running_server(tmp_path) as server:
        target = f"{server.origin}/v1/__heartbeat__?x=%0A{quote(FORGED)}&y=%1B%5B2K"
        assert requests.get(target, timeout=REQUEST_TIMEOUT).status_code == 200
        server.stop()
        log = server.output()
    (line,) = [line for line in log.splitlines() if "__heartbeat__?x=" in line]
    assert line.isprintable(), line
    fields = line.split("[request.summary] ", 1)[1].split(" ")
    assert len(fields) == 7 and fields[2] == "200" and fields[4] == "user=-", line
    assert "DELETE /v1/buckets/prod" not in log.replace(line, ""), log
