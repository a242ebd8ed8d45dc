"""An upload writes its record as Kinto writes any record (:func:`kinto_attachment.state.
records.write` calls Kinto's record resource in process, not through the router): the
uploader becomes the new record's writer, Kinto's history plugin sees every change with the
user who made it, a collection's schema is enforced, a disabled record ``PUT`` stays
disabled."""

import pytest

from ..conftest import ALICE, BOB, cached_app
from .test_resumable import create, head, metadata, patch


#: What the uploader's Basic Auth is, to Kinto: ``basicauth:`` and a digest of it.
def userid_of(kinto, headers):
    return kinto.app.get("/v1/", headers=headers).json["user"]["id"]


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def with_history(request, tmp_path_factory):
    includes = "kinto.plugins.flush kinto.plugins.history kinto_attachment"
    kinto = cached_app(request.param, tmp_path_factory, request, **{"kinto.includes": includes})
    kinto.create_collection()
    return kinto


def history(kinto):
    """The history entries of the record ``r1``, oldest first."""
    entries = kinto.app.get("/v1/buckets/blog/history", headers=ALICE).json["data"]
    return [e for e in reversed(entries) if e.get("record_id") == "r1"]


def test_the_uploader_alone_may_write_the_record_it_created(with_history):
    kinto = with_history
    url = kinto.record_url("r1")
    kinto.upload(url, permissions={"read": ["system.Everyone"]})
    permissions = kinto.app.get(url, headers=ALICE).json["permissions"]
    assert permissions == {"read": ["system.Everyone"], "write": [userid_of(kinto, ALICE)]}
    kinto.upload(url, headers=BOB, status=403)
    assert kinto.app.get(url).json["data"]["attachment"]["filename"] == "hello.txt"


def test_history_tells_each_change_and_who_made_it(with_history):
    kinto = with_history
    url = kinto.record_url("r1")
    kinto.upload(url, b"first", "a.txt")
    kinto.upload(url, b"second", "b.txt")
    kinto.app.delete(f"{url}/attachment", headers=ALICE, status=204)
    entries = history(kinto)
    assert [e["action"] for e in entries] == ["create", "update", "update"]
    assert {e["user_id"] for e in entries} == {userid_of(kinto, ALICE)}
    assert {e["uri"] for e in entries} == {"/buckets/blog/collections/articles/records/r1"}
    files = [(e["target"]["data"]["attachment"] or {}).get("filename") for e in entries]
    assert files == ["a.txt", "b.txt", None]


def test_a_disabled_record_put_refuses_uploads_that_create(tmp_path_factory, request):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.object_record_put_enabled": "false"}
    )
    kinto.create_collection()
    kinto.upload(kinto.record_url("r1"), status=405)
    assert kinto.files() == []


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def kinto_any(request, tmp_path_factory):
    kinto = cached_app(request.param, tmp_path_factory, request)
    kinto.create_collection()
    return kinto


def test_an_upload_honours_the_preconditions_of_kinto_writes(kinto_any):
    """``If-Match`` and ``If-None-Match`` of an upload are those of the record's write (the
    command line's sync sends them: a record another client wrote since it listed the
    collection is not overwritten): refused, nothing is stored and the attachment stays."""
    kinto = kinto_any
    url = kinto.record_url("r1")
    kinto.upload(url, b"first", "a.txt", headers={**ALICE, "If-Match": '"1"'}, status=412)
    assert kinto.files() == []
    kinto.upload(url, b"first", "a.txt", headers={**ALICE, "If-None-Match": "*"})
    written = kinto.app.get(url, headers=ALICE).json["data"]["last_modified"]
    stale = {**ALICE, "If-Match": f'"{written - 1}"'}
    for headers in (stale, {**ALICE, "If-None-Match": "*"}):
        response = kinto.upload(url, b"second", "b.txt", headers=headers, status=412)
        assert response.json["errno"] == 114
    assert kinto.app.get(url, headers=ALICE).json["data"]["attachment"]["filename"] == "a.txt"
    assert len(kinto.files()) == 1
    current = {**ALICE, "If-Match": f'"{written}"'}
    assert kinto.upload(url, b"second", "b.txt", headers=current).json["filename"] == "b.txt"


def test_a_resumable_upload_honours_the_preconditions_of_its_last_patch(kinto_any):
    """The last ``PATCH`` of a tus upload writes the record: its ``If-Match`` is checked
    then; refused, the upload stays as it was, its last chunk may be sent again."""

    kinto = kinto_any
    url = kinto.record_url("r1")
    kinto.upload(url, b"first", "a.txt")
    written = kinto.app.get(url, headers=ALICE).json["data"]["last_modified"]
    _, upload = create(kinto.app, 6)
    patch(kinto.app, upload, b"abc", 0)
    stale = {"If-Match": f'"{written - 1}"'}
    assert patch(kinto.app, upload, b"def", 3, status=412, **stale).json["errno"] == 114
    assert head(kinto.app, upload).headers["Upload-Offset"] == "3"
    assert kinto.app.get(url, headers=ALICE).json["data"]["attachment"]["filename"] == "a.txt"
    patch(kinto.app, upload, b"def", 3, **{"If-Match": f'"{written}"'})
    assert kinto.app.get(url, headers=ALICE).json["data"]["attachment"]["size"] == 6


#: A ``last_modified`` Kinto's storage cannot hold (PostgreSQL: bigint out of range once
#: bumped; memory: an error in Kinto's timestamp code). Kinto's own record views fail as well,
#: but the plugin promises to refuse what no write can store (``state/storable.py``,
#: ``records.check``), and the rule is a 4xx for every bad input.
UNSTORABLE_DATA = '{"last_modified": 9223372036854775807}'


@pytest.mark.parametrize("blobs", ["local"])
def test_upload_with_an_unstorable_last_modified_is_a_4xx(kinto):
    """Found by review (2026-12-05): a multipart ``data`` part with an out-of-range
    ``last_modified`` reaches Kinto's record write and fails there: ``503`` "retry later" on
    PostgreSQL (a retry never helps), ``500`` on memory. Expected: a ``400`` in Kinto's format,
    nothing stored."""
    kinto.create_collection()
    response = kinto.upload(kinto.record_url(), data=UNSTORABLE_DATA, status="*")
    assert response.status_int == 400, response.status
    assert response.json["code"] == 400
    assert kinto.files() == []


@pytest.mark.parametrize("blobs", ["local"])
def test_tus_upload_with_an_unstorable_last_modified_is_refused_at_creation(kinto):
    """Found by review (2026-12-05): ``records.check`` accepts at creation ``data`` that
    no write of the record can take (an out-of-range ``last_modified``): the upload takes all
    its bytes, then its last ``PATCH`` fails with a 5xx each time it is sent (503 "retry later"
    on PostgreSQL), never finishing and holding one of the user's
    ``resumable.max_uploads_per_user`` slots until it expires. Expected: ``400`` at creation,
    as for the other values ``records.check`` refuses."""
    kinto.create_collection()
    response, upload = create(kinto.app, 5, meta=metadata(data=UNSTORABLE_DATA), status="*")
    if response.status_int == 201:  # Then, at least, the last PATCH must not be a 5xx.
        upload = response.headers["Location"][len("http://localhost") :]
        last = patch(kinto.app, upload, b"hello", 0, status="*")
        assert last.status_int < 500, last.status
    assert response.status_int == 400, response.status
