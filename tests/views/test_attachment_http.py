"""HTTP semantics of the record attachment routes, from a review (2026-12-05):
``{record-url}/attachment``, its tus uploads, and the files ``serve_files`` serves at their
``location``; the defects it found, and the attacks that held.
"""

import logging
import time

import pytest

from ..conftest import ALICE, cached_app, served_path, serving_app
from .test_resumable import create, head, patch


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def kinto_any(request, tmp_path_factory):
    kinto = cached_app(request.param, tmp_path_factory, request)
    kinto.create_collection()
    return kinto


@pytest.fixture
def kinto_memory(tmp_path_factory, request):
    kinto = cached_app("memory", tmp_path_factory, request)
    kinto.create_collection()
    return kinto


@pytest.fixture
def quiet_errors():
    """The 5xx under test log a traceback: not the test's output."""
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def _at_the_start_of_a_second():
    """Wait until the clock is early in a second: what follows (a few writes, some ms) then
    stays within it, as a client's quick sequence of requests does."""
    while time.time() % 1 > 0.15:
        time.sleep(0.01)


def _same_second(kinto, scenario, attempts=10):
    """Run ``scenario(record_url)`` (it returns the first download's response) until the
    writes it made all fall within one second (the first download's ``Last-Modified`` is the
    current one's): then the first download's response and the record's URL."""
    for attempt in range(attempts):
        url = kinto.record_url(f"same-second-{attempt}")
        _at_the_start_of_a_second()
        first = scenario(url)
        now = kinto.app.get(url + "/attachment", headers=ALICE)
        if now.headers["Last-Modified"] == first.headers["Last-Modified"]:
            return first, url
    pytest.fail(f"the writes never fell within one second in {attempts} attempts")


def test_delete_attachment_204_has_no_content_length(kinto_memory):
    """Found by review (2026-12-05).

    ``DELETE {record-url}/attachment`` answers ``204 No Content`` with
    ``Content-Length: 0`` (``delete_attachment`` returns Pyramid's ``request.response``, whose
    empty body keeps the header), the analogue of the ``Content-Length: 0`` on ``/data/files``
    304s fixed today. RFC 9110 §8.6: a server MUST NOT send ``Content-Length`` in a 204; strict
    clients and proxies treat it as a framing error. The tus 204s of the same record do not
    send it. Expected: the 204 carries no ``Content-Length`` (still its ``ETag`` and
    ``Last-Modified``)."""
    kinto = kinto_memory
    url = kinto.record_url()
    kinto.upload(url)
    deleted = kinto.app.delete(url + "/attachment", headers=ALICE, status=204)
    assert deleted.body == b""
    assert "ETag" in deleted.headers
    assert "Content-Length" not in deleted.headers, deleted.headers


def test_if_modified_since_after_the_attachment_was_deleted_and_uploaded_again(kinto_any):
    """Found by review (2026-12-05).

    file A is attached, a client downloads it (``Last-Modified: S``), then, within
    that second, the attachment is deleted and file B uploaded. ``attach``
    (``uploads/record.py``) records ``previous`` (the last version with another content) only
    when the record had a file just before (``before = ... if previous else None``): the
    version without attachment is not counted, so nothing says that the content changed in
    second S, and ``If-Modified-Since: S`` is answered ``304``. The client keeps A for B: a 304
    for another content. Expected: ``200`` with B (``previous`` is the version written by the
    delete: any version before the upload had another content, none counting)."""
    kinto = kinto_any

    def scenario(url):
        kinto.upload(url, b"content A", "a.txt")
        first = kinto.app.get(url + "/attachment", headers=ALICE)
        kinto.app.delete(url + "/attachment", headers=ALICE, status=204)
        kinto.upload(url, b"content B", "b.txt")
        return first

    first, url = _same_second(kinto, scenario)
    assert first.body == b"content A"
    since = {**ALICE, "If-Modified-Since": first.headers["Last-Modified"]}
    response = kinto.app.get(url + "/attachment", headers=since, status="*")
    assert response.status_int == 200, (response.status, "a 304 for content B to A's holder")
    assert response.body == b"content B"


def test_malformed_precondition_of_a_write_is_a_400_not_a_500(kinto_any):
    """Found by review (2026-12-05).

    An ``If-Match`` or ``If-None-Match`` that starts with ``*`` without being ``*`` alone
    (``*, "1"``, ``*x``) on ``POST`` / ``DELETE {record-url}/attachment`` or on a tus upload's
    last ``PATCH`` was a 500, once the whole file was received: the plugin hands the
    client's headers to Kinto's record write, whose check of them lets such values through,
    then fails on them. Expected: a 400 (Kinto's errno 107) before the body is read, the
    attachment there intact."""
    kinto = kinto_any
    url = kinto.record_url()
    meta = kinto.upload(url, b"kept", "kept.txt").json
    before = kinto.app.get(url, headers=ALICE).json["data"]
    statuses = {}
    for name in ("If-Match", "If-None-Match"):
        for value in ('*, "1"', "*x"):
            headers = {name: value}
            posted = kinto.upload(url, b"new", "new.txt", headers=headers, status="*")
            deleted = kinto.app.delete(
                url + "/attachment", headers={**ALICE, **headers}, status="*"
            )
            statuses[name, value] = (posted.status_int, deleted.status_int)
            assert posted.json["errno"] == 107, posted.json
    _, upload = create(kinto.app, 3)
    last = patch(kinto.app, upload, b"abc", 0, status="*", **{"If-Match": "*,*"})
    assert kinto.app.get(url, headers=ALICE).json["data"] == before
    assert kinto.read(meta["location"]) == b"kept"
    assert set(statuses.values()) == {(400, 400)}, statuses
    assert last.status_int == 400


def test_served_file_answers_405_to_methods_it_does_not_serve(tmp_path_factory, request):
    """Found by review (2026-12-05).

    with ``serve_files``, ``PUT``, ``POST`` or ``DELETE`` of an existing file's
    ``location`` (``/v1/attachments/{key}``) answer ``404 Not Found`` (``views/files.py``
    registers GET and OPTIONS views only, and Pyramid answers a method no view takes with a
    404): a client is told that the file it just downloaded does not exist. Kinto's routes and
    this plugin's others (``{record-url}/attachment``, the tus routes:
    ``errors.not_allowed``) answer ``405`` with ``Allow``. Expected: ``405``,
    ``Allow: GET, HEAD, OPTIONS``, Kinto's JSON error."""
    kinto = serving_app(tmp_path_factory, request)
    kinto.create_collection()
    location = kinto.upload(kinto.record_url(), b"served").json["location"]
    path = served_path(location)
    assert kinto.app.get(path).body == b"served"
    for method in ("PUT", "POST", "DELETE"):
        response = kinto.app.request(path, method=method, expect_errors=True)
        assert response.status_int == 405, (method, response.status)
        assert set(response.headers["Allow"].replace(" ", "").split(",")) == {
            "GET",
            "HEAD",
            "OPTIONS",
        }
        assert response.json["errno"] == 115
    assert kinto.app.get(path).body == b"served"


# --- Attacks that held -----------------------------------------------------------------------


def test_preconditions_of_writes_follow_kinto(kinto_any):
    """Held against a review (2026-12-05).

    ``If-None-Match: *`` on a record without attachment and on one with
    (412, errno 114: the record exists), on no record (201); a stale ``If-Match`` on
    ``DELETE`` (412, attachment intact); weak or listed ``If-Match`` (400, as Kinto's own
    ``PATCH``); a refused upload stores nothing."""
    kinto = kinto_any
    app = kinto.app
    bare, full, new = (kinto.record_url(r) for r in ("bare", "full", "new"))
    app.put_json(bare, {"data": {"title": "x"}}, headers=ALICE)
    meta = kinto.upload(full, b"kept", "kept.txt").json
    current = app.get(full, headers=ALICE).json["data"]["last_modified"]
    only_new = {**ALICE, "If-None-Match": "*"}
    for url in (bare, full):
        response = kinto.upload(url, b"x", "x.txt", headers=only_new, status=412)
        assert response.json["errno"] == 114
    kinto.upload(new, b"x", "x.txt", headers=only_new, status=201)
    stale = {**ALICE, "If-Match": f'"{current - 1}"'}
    assert app.delete(full + "/attachment", headers=stale, status=412).json["errno"] == 114
    for value in (f'W/"{current}"', f'"1", "{current}"', f'"{meta["hash"]}"'):
        kinto.upload(full, b"y", "y.txt", headers={**ALICE, "If-Match": value}, status=400)
        app.delete(full + "/attachment", headers={**ALICE, "If-Match": value}, status=400)
    assert app.get(full, headers=ALICE).json["data"]["attachment"] == meta
    assert app.get(bare, headers=ALICE).json["data"].get("attachment") is None
    assert len(kinto.files()) == 2


def test_head_answers_the_headers_of_get(kinto_memory):
    """Held against a review (2026-12-05).

    ``HEAD {record-url}/attachment`` has the headers of the ``GET`` for
    200, 206, 304 and 412 (Content-Length, ETag, Last-Modified, Content-Range, Cache-Control,
    Vary), without a body."""
    kinto = kinto_memory
    url = kinto.record_url()
    kinto.upload(url, b"0123456789", "a.txt")
    etag = kinto.app.get(url + "/attachment", headers=ALICE).headers["ETag"]
    for extra in ({}, {"Range": "bytes=2-4"}, {"If-None-Match": etag}, {"If-Match": '"x"'}):
        headers = {**ALICE, **extra}
        got = kinto.app.get(url + "/attachment", headers=headers, status="*")
        headed = kinto.app.head(url + "/attachment", headers=headers, status="*")
        assert headed.status == got.status
        assert headed.body == b""
        assert dict(headed.headers) == dict(got.headers)


def test_fields_no_write_can_take_leave_the_attachment(kinto_memory):
    """Held against a review (2026-12-05).

    ``data``/``permissions`` that Kinto's record write refuses (another
    id, permissions of a collection, no list, a bad ``last_modified``) are a 400 before
    anything is written: the attachment, the record and its permissions stay, no file is
    left."""
    kinto = kinto_memory
    url = kinto.record_url()
    meta = kinto.upload(url, b"kept", "kept.txt", data={"title": "t"}).json
    before = kinto.app.get(url, headers=ALICE).json
    refused = (
        ({"id": "other"}, None),
        ({"last_modified": "x"}, None),
        (None, {"create": ["system.Everyone"]}),
        (None, {"write": "system.Everyone"}),
    )
    for data, permissions in refused:
        kinto.upload(url, b"new", "new.txt", data=data, permissions=permissions, status=400)
    assert kinto.app.get(url, headers=ALICE).json == before
    assert kinto.files() == [kinto.key_of(meta["location"])]


def test_tus_precondition_of_the_last_patch(kinto_memory):
    """Held against a review (2026-12-05).

    ``If-None-Match: *`` on a tus upload's last ``PATCH`` to a record that
    exists is Kinto's 412, the attachment there intact, the upload still resumable."""
    kinto = kinto_memory
    url = kinto.record_url()
    meta = kinto.upload(url, b"kept", "kept.txt").json
    _, upload = create(kinto.app, 3)
    refused = patch(kinto.app, upload, b"abc", 0, status=412, **{"If-None-Match": "*"})
    assert refused.json["errno"] == 114
    assert head(kinto.app, upload).headers["Upload-Offset"] == "0"
    assert kinto.app.get(url, headers=ALICE).json["data"]["attachment"] == meta
    assert kinto.read(meta["location"]) == b"kept"
