"""Hostile and odd inputs: a clear 4xx in Kinto's JSON format, never a 500, never forged
metadata, and bounded resources (issue 11)."""

import json
import time

import pytest
import transaction
from kinto.core.errors import ERRORS
from pyramid.exceptions import ConfigurationError

from kinto_attachment import settings as attachment_settings
from kinto_attachment.state import tus_uploads

from .conftest import ALICE, BOB, PREVIOUS_URL, cached_app
from .data_files.test_data_files import LOCAL
from .uploads.test_refusals import FILE, form, raw_post
from .views.test_resumable import TUS, UPLOADS, create, metadata, patch


URL = PREVIOUS_URL
GRACE_SETTING = "kinto.attachment.gc.orphans_grace_seconds"
DEEP = '{"a":' * 2000


def assert_kinto_error(response, status, errno=None):
    assert response.status_code == status
    assert response.content_type == "application/json"
    assert response.json["code"] == status
    if errno is not None:
        assert response.json["errno"] == errno


# 1. Headers with more digits than Python converts.


def test_tus_upload_length_of_5000_digits(kinto):
    # 413 where the store caps the size (S3: 10,000 parts), 400 otherwise.
    kinto.create_collection()
    response, _ = create(kinto.app, "9" * 5000, status=(400, 413))
    if response.status_code == 400:
        assert_kinto_error(response, 400, ERRORS.INVALID_PARAMETERS.value)
        assert "Upload-Length is too large" in response.json["message"]
    else:
        assert_kinto_error(response, 413, ERRORS.REQUEST_TOO_LARGE.value)
    assert kinto.files() == []


def test_tus_upload_length_of_5000_digits_over_max_size_is_413(tmp_path_factory, request):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.max_size_bytes": "10"}
    )
    kinto.create_collection()
    response, _ = create(kinto.app, "1" + "0" * 4999, status=413)
    assert_kinto_error(response, 413, ERRORS.REQUEST_TOO_LARGE.value)


def test_tus_upload_offset_of_5000_digits(kinto):
    kinto.create_collection()
    _, url = create(kinto.app, 10)
    response = patch(kinto.app, url, b"x", "9" * 5000, status=400)
    assert_kinto_error(response, 400, ERRORS.INVALID_PARAMETERS.value)
    assert kinto.app.head(url, headers={**ALICE, **TUS}).headers["Upload-Offset"] == "0"


def test_leading_zeros_are_not_too_many_digits(kinto_memory):
    kinto_memory.create_collection()
    _, url = create(kinto_memory.app, "0" * 30 + "5")
    patch(kinto_memory.app, url, b"hello", "0" * 30)


# 2. JSON nested deeper than the parser's recursion limit.


@pytest.mark.parametrize("field", ["data", "permissions"])
def test_deeply_nested_form_field_is_400(with_previous, field):
    body = form((f'Content-Disposition: form-data; name="{field}"', DEEP.encode()), FILE)
    response = raw_post(with_previous, body)
    assert_kinto_error(response, 400, ERRORS.INVALID_POSTED_DATA.value)
    assert "nested too deeply" in response.json["message"]


@pytest.mark.parametrize("field", ["data", "permissions"])
def test_deeply_nested_tus_metadata_is_400(kinto, field):
    kinto.create_collection()
    response, _ = create(kinto.app, 5, status=400, meta=metadata(**{field: DEEP}))
    assert_kinto_error(response, 400, ERRORS.INVALID_PARAMETERS.value)
    assert kinto.files() == []


# 3. Boundaries longer than python-multipart accepts.


def test_boundary_over_256_bytes_is_400(with_previous):
    boundary = "b" * 257
    response = raw_post(with_previous, form(FILE, boundary=boundary), boundary=boundary)
    assert_kinto_error(response, 400, ERRORS.INVALID_PARAMETERS.value)
    assert "boundary exceeds 256 bytes" in response.json["message"]


def test_boundary_of_256_bytes_is_fine(kinto_memory):
    kinto_memory.create_collection()
    boundary = "b" * 256
    raw_post(kinto_memory, form(FILE, boundary=boundary), boundary=boundary, status=201)


# 4. Batch sub-requests on streamed routes.


def batch(kinto, method, path, **extra):
    spec = {"method": method, "path": path[len("/v1") :], **extra}
    response = kinto.app.post_json("/v1/batch", {"requests": [spec]}, headers=ALICE)
    return response.json["responses"][0]


@pytest.mark.parametrize("method", ["GET", "DELETE", "POST"])
def test_attachment_in_a_batch_is_refused_before_any_write(with_previous, method):
    answer = batch(with_previous, method, URL + "/attachment", body={"data": {}})
    assert answer["status"] == 400
    assert answer["body"]["errno"] == ERRORS.INVALID_PARAMETERS.value
    assert "cannot be part of a batch" in answer["body"]["message"]


@pytest.mark.parametrize("method", ["POST", "HEAD", "PATCH", "DELETE"])
def test_tus_in_a_batch_is_refused(with_previous, method):
    path = UPLOADS if method == "POST" else UPLOADS + "/0123"
    answer = batch(with_previous, method, path, headers={**TUS, "Upload-Length": "5"})
    assert answer["status"] == 400


def test_records_still_work_in_a_batch(with_previous):
    answer = batch(with_previous, "GET", URL)
    assert answer["status"] == 200


# 5. Forged attachment metadata through JSON-Patch or merge-patch.

FORGED = {"location": "https://evil.example.com/x", "hash": "0", "size": 1}


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "replace", "path": "/data", "value": {"attachment": FORGED}}],
        [{"op": "add", "path": "/data", "value": {"title": "no attachment"}}],
        [{"op": "replace", "path": "/data/attachment", "value": FORGED}],
        [{"op": "remove", "path": "/data/attachment"}],
        [{"op": "replace", "path": "/data/attachment/location", "value": FORGED["location"]}],
        [{"op": "replace", "path": "/data/attachment/size", "value": 1}],
        [
            {"op": "add", "path": "/data/title", "value": FORGED},
            {"op": "move", "from": "/data/title", "path": "/data/attachment"},
        ],
        [
            {"op": "add", "path": "/data/title", "value": FORGED},
            {"op": "copy", "from": "/data/title", "path": "/data/attachment"},
        ],
        [{"op": "move", "from": "/data/attachment", "path": "/data/moved"}],
        [
            {
                "op": "replace",
                "path": "",
                "value": {"data": {"attachment": FORGED}, "permissions": {}},
            }
        ],
        [
            {"op": "replace", "path": "/data/attach~0ment~1", "value": 1},
            {"op": "replace", "path": "/d~1ata", "value": 1},
        ],
    ],
    ids=[
        "replace-data",
        "add-data-without",
        "replace-attachment",
        "remove-attachment",
        "replace-location",
        "replace-size",
        "move-into",
        "copy-into",
        "move-out",
        "replace-root",
        "escaped-noise",
    ],
)
def test_json_patch_cannot_touch_the_attachment(with_previous, ops):
    kinto = with_previous
    response = kinto.app.patch(
        URL,
        json.dumps(ops),
        headers={**ALICE, "Content-Type": "application/json-patch+json"},
        status=400,
    )
    assert_kinto_error(response, 400)


def test_json_patch_with_escaped_attachment_path(with_previous):
    kinto = with_previous
    record = kinto.app.get(URL, headers=ALICE).json["data"]
    # "/data" replaced by an object whose key needs escapes, then moved onto "attachment".
    ops = [
        {"op": "add", "path": "/data/a~1b", "value": FORGED},
        {"op": "move", "from": "/data/a~1b", "path": "/data/attachment"},
    ]
    kinto.app.patch(
        URL,
        json.dumps(ops),
        headers={**ALICE, "Content-Type": "application/json-patch+json"},
        status=400,
    )
    assert kinto.app.get(URL, headers=ALICE).json["data"] == record


def test_json_patch_of_other_fields_still_works(kinto):
    kinto.create_collection()
    meta = kinto.upload(URL).json
    ops = [
        {"op": "add", "path": "/data/title", "value": "new"},
        {"op": "copy", "from": "/data/attachment", "path": "/data/copy"},
    ]
    kinto.app.patch(
        URL, json.dumps(ops), headers={**ALICE, "Content-Type": "application/json-patch+json"}
    )
    record = kinto.app.get(URL, headers=ALICE).json["data"]
    assert record["title"] == "new"
    assert record["attachment"] == meta


def test_json_patch_of_a_record_without_attachment_cannot_add_one(kinto):
    kinto.create_collection()
    kinto.app.put_json(URL, {"data": {"title": "plain"}}, headers=ALICE)
    record = kinto.app.get(URL, headers=ALICE).json["data"]
    ops = [{"op": "replace", "path": "/data", "value": {"attachment": FORGED}}]
    kinto.app.patch(
        URL,
        json.dumps(ops),
        headers={**ALICE, "Content-Type": "application/json-patch+json"},
        status=400,
    )
    assert kinto.app.get(URL, headers=ALICE).json["data"] == record


@pytest.mark.parametrize(
    "body",
    [{"data": {"attachment": {"location": FORGED["location"]}}}, {"data": {"attachment": None}}],
    ids=["merge-into", "merge-null"],
)
def test_merge_patch_cannot_touch_the_attachment(with_previous, body):
    with_previous.app.patch(
        URL,
        json.dumps(body),
        headers={**ALICE, "Content-Type": "application/merge-patch+json"},
        status=400,
    )


# 6. Unfinished tus uploads per user.


@pytest.fixture
def limited(backend, tmp_path_factory, request):
    kinto = cached_app(
        backend,
        tmp_path_factory,
        request,
        **{"kinto.attachment.resumable.max_uploads_per_user": "2"},
    )
    kinto.create_collection()
    kinto.app.patch_json(
        "/v1/buckets/blog/collections/articles",
        {"permissions": {"record:create": ["system.Authenticated"]}},
        headers=ALICE,
    )
    return kinto


def test_too_many_unfinished_uploads_is_429(limited):
    app = limited.app
    _, first = create(app, 10)
    create(app, 10)
    response, _ = create(app, 10, status=429)
    assert_kinto_error(response, 429, ERRORS.CLIENT_REACHED_CAPACITY.value)
    assert "Too many unfinished uploads (2, at most 2 per user)" in response.json["message"]
    assert 0 < int(response.headers["Retry-After"]) <= 86400
    assert response.headers["Tus-Resumable"] == "1.0.0"
    # Another user has a quota of their own.
    create(app, 10, headers=BOB)
    # A terminated upload frees its slot, and so does a completed one.
    app.delete(first, headers={**ALICE, **TUS}, status=204)
    _, third = create(app, 5)
    patch(app, third, b"hello", 0)
    create(app, 10)
    create(app, 10, status=429)


def test_expired_uploads_do_not_count(limited):
    app = limited.app
    create(app, 10)
    create(app, 10)
    storage = limited.registry.storage
    with transaction.manager:
        for upload in tus_uploads.entries(storage):
            tus_uploads.save(storage, {**upload, "expires": 1})
    create(app, 10)


def test_max_uploads_per_user_setting(monkeypatch):
    base = {"attachment.base_path": "/tmp"}
    key = "attachment.resumable.max_uploads_per_user"
    assert attachment_settings.parse(base).resumable_max_uploads_per_user == 20
    assert attachment_settings.parse({**base, key: "0"}).resumable_max_uploads_per_user == 0
    with pytest.raises(ConfigurationError, match="resumable.max_uploads_per_user"):
        attachment_settings.parse({**base, key: "-1"})
    monkeypatch.setenv("KINTO_ATTACHMENT_RESUMABLE_MAX_UPLOADS_PER_USER", "3")
    assert attachment_settings.parse(base).resumable_max_uploads_per_user == 3


def test_no_limit(tmp_path_factory, request):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.attachment.resumable.max_uploads_per_user": "0"},
    )
    kinto.create_collection()
    for _ in range(25):
        create(kinto.app, 10)


# 7. __flush__ takes every blob the plugin owns, and no upload's under way.


def _stray(kinto, key="stray/blob.txt"):
    """A blob no reference names: an upload's, stored and waiting for its record's lock."""
    staged = kinto.registry.attachment_store.stage(key, "text/plain")
    staged.write(b"stray")
    return staged.commit()


def _everything_referenced(kinto):
    kinto.create_collection()
    kinto.upload(kinto.record_url("a"))
    # /data/files, an unfinished tus upload (staged file or S3 multipart upload).
    kinto.app.post("/v1/data/files", b"%PDF data file", extra_environ=LOCAL, status=200)
    _, url = create(kinto.app, 10 * 1024 * 1024)
    patch(kinto.app, url, b"x" * (5 * 1024 * 1024), 0)
    assert len(kinto.files()) >= 3


def test_flush_deletes_every_blob_it_unreferences_not_an_upload_under_way(kinto):
    _everything_referenced(kinto)
    stray = _stray(kinto)
    kinto.app.post("/v1/__flush__", status=202)
    # The blob an upload stored before the flush took its lock outlives it: its record is
    # written once the flush has committed (the garbage collector takes it if none is).
    assert kinto.files() == [stray]


def test_flush_deletes_the_orphans_the_garbage_collector_would(
    backend, blobs, tmp_path_factory, request
):
    kinto = cached_app(backend, tmp_path_factory, request, blobs=blobs, **{GRACE_SETTING: "0"})
    _everything_referenced(kinto)
    _stray(kinto)
    time.sleep(0.01)
    kinto.app.post("/v1/__flush__", status=202)
    assert kinto.files() == []
