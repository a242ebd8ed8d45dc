"""Readable request logs (:mod:`kinto_attachment.request_log`): one line per request."""

import configparser
import logging
from pathlib import Path

import pytest

from kinto_attachment.request_log import SummaryFormatter

from .conftest import ALICE


#: Kinto's configurations (``uwsgi.ini`` is uWSGI's own).
CONFIGS = sorted(
    path
    for path in (Path(__file__).parent.parent / "config").glob("*.ini")
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


def test_other_records_as_the_format_says():
    record = logging.makeLogRecord({"name": "kinto", "levelname": "INFO", "msg": "hello %s"})
    record.args = ("world",)
    assert SummaryFormatter(FORMAT).format(record) == "INFO [kinto] hello world"


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_shipped_configs_use_it(path):
    config = configparser.ConfigParser(interpolation=None)
    config.read(path)
    assert config["formatter_generic"]["class"] == "kinto_attachment.request_log.SummaryFormatter"
