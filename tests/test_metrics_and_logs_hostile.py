"""What clients cannot do to the metrics and the request log: make series of ids they
invent, read a signed URL's signature in the log."""

import logging
import time
import uuid

import pytest
from kinto.plugins import prometheus

from kinto_attachment.request_log import SummaryFormatter
from kinto_attachment.web import signed_urls

from .conftest import Kinto, build_settings, make_app
from .test_metrics import INCLUDES, scrape


URL_SECRET = "a-review-secret-of-enough-length"


@pytest.fixture(scope="module")
def kinto(tmp_path_factory):
    prometheus.reset_registry()
    base_path = str(tmp_path_factory.mktemp("attachments"))
    settings = build_settings(
        "memory",
        base_path,
        **{
            "kinto.includes": INCLUDES,
            "kinto.attachment.events.url_secret": URL_SECRET,
        },
    )
    kinto = Kinto(make_app(settings), base_path)
    kinto.create_collection()
    yield kinto
    prometheus.reset_registry()


def _label_values(scraped, name):
    return {dict(labels).get(name) for _, labels in scraped} - {None, ""}


def test_anonymous_preflights_make_no_series_of_the_ids_they_name(kinto):
    """An anonymous CORS preflight (``OPTIONS``) of ``{record-url}/attachment``,
    ``.../attachment/uploads`` or ``.../attachment/uploads/{id}`` is answered for any bucket
    and collection, existing or not, and Kinto labels its request metrics with the URL's
    ids below 400: each invented id would make series kept for the process's life (memory,
    the scrape). The preflights' ids are forgotten before Kinto reads them."""
    before = _label_values(scrape(kinto.app), "bucket_id")
    preflight = {
        "Origin": "https://anyone.example",
        "Access-Control-Request-Method": "POST",
        "Tus-Resumable": "1.0.0",
    }
    invented = {f"made-up-{uuid.uuid4().hex[:8]}" for _ in range(5)}
    for bucket in invented:
        record = f"/v1/buckets/{bucket}/collections/c/records/r"
        kinto.app.options(record + "/attachment", headers=preflight, status="*")
        kinto.app.options(record + "/attachment/uploads", headers=preflight, status="*")
        kinto.app.options(record + "/attachment/uploads/u", headers=preflight, status="*")
    after = _label_values(scrape(kinto.app), "bucket_id")
    assert not (after - before) & invented, sorted((after - before) & invented)


@pytest.fixture
def summaries():
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(SummaryFormatter("%(message)s"))
    logger = logging.getLogger("request.summary")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)


def test_the_signature_of_a_fetch_url_is_masked_in_the_request_log(kinto, summaries):
    """``GET /v1/attachment-fetch/{key}?expires=...&signature=...`` needs no credentials: the
    URL gives its file for ``url_expires_seconds`` to whoever reads it, log readers included.
    The log writes ``signature=-`` (the line, and Kinto's ``querystring`` for JSON logs)."""
    location = kinto.upload(kinto.record_url("secret"), b"private bytes", "p.txt").json["location"]
    key = kinto.key_of(location)
    path = signed_urls.signed_path(URL_SECRET, key, time.time() + 3600)
    signature = path.rsplit("signature=", 1)[1]
    summaries.clear()
    response = kinto.app.get("/v1" + signed_urls.PATH + path)
    assert response.body == b"private bytes"
    (line,) = [line for line in summaries if "attachment-fetch" in line]
    assert signature not in line, line
    assert "signature=-" in line
