"""CORS on the routes a page uses to download: ``{record}/attachment`` and ``serve_files``.

A page of another origin must be allowed to read a download and its headers (what the file is
called, its version, which part of it came), and to fetch a ``location`` served by
``serve_files``. The tus routes are tested in ``test_resumable.py``; the whole path in a real
browser in ``test_browser.py``.
"""

import pytest

from ..conftest import ALICE, served_path, serving_app


ORIGIN = {"Origin": "https://app.example.com"}
RECORD = "/v1/buckets/blog/collections/articles/records/r1"


def exposed(response):
    return {name.strip() for name in response.headers["Access-Control-Expose-Headers"].split(",")}


@pytest.fixture
def kinto(tmp_path_factory, request):
    kinto = serving_app(tmp_path_factory, request)
    kinto.create_collection()
    return kinto


def test_upload_exposes_its_location(kinto):
    response = kinto.upload(RECORD, headers={**ALICE, **ORIGIN})
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN["Origin"])
    assert "Location" in exposed(response)


def test_download_exposes_its_headers(kinto):
    kinto.upload(RECORD, b"0123456789", "digits.txt")
    headers = {**ALICE, **ORIGIN, "Range": "bytes=2-4"}
    response = kinto.app.get(RECORD + "/attachment", headers=headers, status=206)
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN["Origin"])
    wanted = {"Content-Disposition", "ETag", "Last-Modified", "Content-Range", "Accept-Ranges"}
    assert wanted <= exposed(response)


def test_download_preflight(kinto):
    response = kinto.app.options(
        RECORD + "/attachment",
        headers={
            **ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, range, if-none-match",
        },
    )
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "range", "if-none-match"} <= set(allowed.split(","))


def test_served_files_are_for_every_allowed_origin(kinto):
    location = kinto.upload(RECORD, b"0123456789", "digits.txt").json["location"]
    path = served_path(location)
    response = kinto.app.get(path, headers={**ORIGIN, "Range": "bytes=0-1"}, status=206)
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN["Origin"]
    assert "Origin" in response.headers["Vary"]
    wanted = {"Content-Disposition", "Content-Range", "Accept-Ranges", "Content-Length"}
    assert wanted <= exposed(response)
    # Without Origin (not a cross-origin fetch): nothing to say.
    assert "Access-Control-Allow-Origin" not in kinto.app.get(path).headers
    # A missing file's 404 too: a page tells it from a network error.
    missing = kinto.app.get("/v1/attachments/missing.txt", headers=ORIGIN, status=404)
    assert missing.headers["Access-Control-Allow-Origin"] == ORIGIN["Origin"]


def test_served_files_preflight(kinto):
    headers = {**ORIGIN, "Access-Control-Request-Method": "GET"}
    response = kinto.app.options("/v1/attachments/any.txt", headers=headers, status=204)
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN["Origin"]
    assert "GET" in response.headers["Access-Control-Allow-Methods"]
    assert {"Range", "If-None-Match"} <= {
        name.strip() for name in response.headers["Access-Control-Allow-Headers"].split(",")
    }


def test_served_files_to_listed_origins_only(tmp_path_factory, request):
    kinto = serving_app(
        tmp_path_factory, request, **{"kinto.cors_origins": "https://app.example.com"}
    )
    kinto.create_collection()
    path = served_path(kinto.upload(RECORD).json["location"])
    assert "Access-Control-Allow-Origin" in kinto.app.get(path, headers=ORIGIN).headers
    other = kinto.app.get(path, headers={"Origin": "https://evil.example.org"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_forms_of_unlisted_sites_upload_nothing(tmp_path_factory, request):
    """A form of another site (a multipart ``POST``: no preflight) made the browser send a
    user's cached credentials: with ``cors_origins`` listing the sites allowed, an unlisted
    one's upload is refused (Kinto's own check, as for its JSON writes) and writes nothing;
    a listed one's goes through. Checked after a review (2026-12-05) feared the form."""
    kinto = serving_app(
        tmp_path_factory, request, **{"kinto.cors_origins": "https://app.example.com"}
    )
    kinto.create_collection()
    form = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "cross-site"}
    refused = kinto.upload(
        RECORD, headers={**ALICE, **form, "Origin": "https://evil.example.org"}, status=400
    )
    assert "https://evil.example.org not allowed" in refused.json["message"]
    assert kinto.app.get(RECORD, headers=ALICE, status=404)
    assert kinto.files() == []
    assert kinto.upload(RECORD, headers={**ALICE, **form, **ORIGIN}).status_code == 201
