"""Authorization and information disclosure on the plugin's routes, as an attacker with an
account of their own, or none, tries them.

Found by review (2026-12-05): attacks that found the plugin right, kept so that it stays so.
"""

import base64

import pytest

from ..conftest import ALICE, BOB, build_settings, cached_app, make_app


TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {"Content-Type": "application/offset+octet-stream"}
ORIGIN = "http://localhost"
STRANGER = {"REMOTE_ADDR": "203.0.113.7"}
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
DEFAULT_BUCKET = {
    "kinto.includes": "kinto.plugins.default_bucket kinto.plugins.flush kinto_attachment"
}


def tus_metadata(filename="a.txt"):
    return "filename " + base64.b64encode(filename.encode()).decode()


def userid(app, headers):
    return app.get("/v1/", headers=headers).json["user"]["id"]


@pytest.fixture
def kinto(tmp_path_factory, request):
    kinto = cached_app("memory", tmp_path_factory, request, **DEFAULT_BUCKET)
    kinto.create_collection()
    return kinto


def test_record_permissions_are_kintos(kinto):
    """per-object permissions as Kinto applies them to the record.

    Read only: no upload, no delete; record-level write (collection unreadable): upload,
    download, delete; a reader of r3 gets nothing of r1; unreadable existing and missing
    records both 403 (Kinto's own GET hides existence the same way)."""
    app = kinto.app
    bob = userid(app, BOB)
    r1, r2, r3 = (kinto.record_url(r) for r in ("r1", "r2", "r3"))
    kinto.upload(r1, b"alice's secret", "s.txt")
    app.put_json(r2, {"data": {}, "permissions": {"write": [bob]}}, headers=ALICE)
    app.put_json(r3, {"data": {}, "permissions": {"read": [bob]}}, headers=ALICE)
    kinto.upload(r3, b"readable", "r.txt")

    kinto.upload(r3, b"bob", "b.txt", headers=BOB, status=403)
    app.delete(r3 + "/attachment", headers=BOB, status=403)
    app.post(
        r3 + "/attachment/uploads",
        headers={**BOB, **TUS, "Upload-Length": "1", "Upload-Metadata": tus_metadata()},
        status=403,
    )
    assert app.get(r3 + "/attachment", headers=BOB).body == b"readable"

    kinto.upload(r2, b"bob's", "b.txt", headers=BOB, status=200)
    assert app.get(r2 + "/attachment", headers=BOB).body == b"bob's"
    app.delete(r2 + "/attachment", headers=BOB, status=204)

    for url in (r1, kinto.record_url("missing")):
        for method in ("get", "head", "delete"):
            getattr(app, method)(url + "/attachment", headers=BOB, status=403)
        # Conditions and ranges come after the permission: no 304, 206 or 412 leak.
        app.get(url + "/attachment", headers={**BOB, "If-None-Match": "*"}, status=403)
        app.get(url + "/attachment", headers={**BOB, "Range": "bytes=0-0"}, status=403)
    assert kinto.read(app.get(r1, headers=ALICE).json["data"]["attachment"]["location"]) == (
        b"alice's secret"
    )


def test_other_users_uploads_are_unknown_to_them(kinto):
    """Bob, who may write the record, cannot HEAD, PATCH, DELETE (or
    do so through X-HTTP-Method-Override) Alice's upload, unfinished or finished: the same
    404 as an unknown id, nothing of its offset or metadata. Upload ids are 128 random bits."""
    app = kinto.app
    url = kinto.record_url("r1")
    app.put_json(url, {"data": {}, "permissions": {"write": [userid(app, BOB)]}}, headers=ALICE)
    created = app.post(
        url + "/attachment/uploads",
        headers={**ALICE, **TUS, "Upload-Length": "4", "Upload-Metadata": tus_metadata()},
        status=201,
    )
    upload = created.headers["Location"][len(ORIGIN) :]
    assert len(upload.rsplit("/", 1)[1]) == 32
    unknown = url + "/attachment/uploads/" + "0" * 32

    def bob_sees(path):
        head = app.head(path, headers={**BOB, **TUS}, status=404)
        assert "Upload-Offset" not in head.headers and "Upload-Metadata" not in head.headers
        patched = app.patch(
            path, b"zz", headers={**BOB, **TUS, **CHUNK, "Upload-Offset": "0"}, status=404
        )
        deleted = app.delete(path, headers={**BOB, **TUS}, status=404)
        overridden = app.post(
            path, b"", headers={**BOB, **TUS, "X-HTTP-Method-Override": "DELETE"}, status=404
        )
        return patched.json, deleted.json, overridden.json

    assert bob_sees(upload) == bob_sees(unknown)
    app.patch(upload, b"ab", headers={**ALICE, **TUS, **CHUNK, "Upload-Offset": "0"}, status=204)
    app.patch(upload, b"cd", headers={**ALICE, **TUS, **CHUNK, "Upload-Offset": "2"}, status=204)
    assert bob_sees(upload) == bob_sees(unknown)  # Finished now.
    assert app.head(upload, headers={**ALICE, **TUS}).headers["Upload-Offset"] == "4"


def test_default_bucket_is_each_users_own(kinto):
    """``/buckets/default`` is the caller's bucket for attachments and
    uploads; Alice's real bucket id is Kinto's 403 to Bob; downloads through it are never
    publicly cacheable."""
    app = kinto.app
    record = "/v1/buckets/default/collections/c/records/x"
    kinto.upload(record, b"alice's", "a.txt")
    created = app.post(
        record + "/attachment/uploads",
        headers={**ALICE, **TUS, "Upload-Length": "4", "Upload-Metadata": tus_metadata()},
        status=201,
    )
    real = created.headers["Location"][len(ORIGIN) :]
    upload_id = real.rsplit("/", 1)[1]
    real_record = real.split("/attachment/")[0]

    app.get(record + "/attachment", headers=BOB, status=404)  # Bob's own, empty.
    app.head(record + "/attachment/uploads/" + upload_id, headers={**BOB, **TUS}, status=404)
    app.get(real_record + "/attachment", headers=BOB, status=403)
    app.head(real, headers={**BOB, **TUS}, status=403)
    mine = app.get(record + "/attachment", headers=ALICE)
    assert mine.body == b"alice's"
    assert mine.headers["Cache-Control"] == "private, no-cache"


def test_hidden_data_files_tell_nothing_of_ids(kinto):
    """a stranger gets the same 404 for an existing and an unknown id,
    whatever the method or headers (HEAD, Range, conditions), and cannot write or delete."""
    app = kinto.app
    app.post("/v1/data/files?id=exists", b"private", extra_environ=LOCAL, status=200)

    def answers(file_id):
        path = "/v1/data/files/" + file_id
        seen = []
        for headers in ({}, {"Range": "bytes=0-0"}, {"If-None-Match": "*"}, {"If-Match": "*"}):
            for method in ("get", "head", "delete"):
                response = getattr(app, method)(
                    path, headers=headers, extra_environ=STRANGER, status="*"
                )
                seen.append((response.status_int, response.body))
        response = app.post(
            "/v1/data/files?id=" + file_id, b"x", extra_environ=STRANGER, status="*"
        )
        seen.append((response.status_int, response.body))
        return seen

    assert answers("exists") == answers("unknown")
    assert {status for status, _ in answers("exists")} == {404}
    assert app.get("/v1/data/files/exists", extra_environ=LOCAL).body == b"private"


def test_public_endpoints_leak_no_paths_or_secrets(tmp_path):
    """the capability, OpenAPI, heartbeat and version answers name no
    server path nor secret, anonymous as they are."""
    base_path = tmp_path / "SERVERPATH"
    base_path.mkdir()
    settings = build_settings(
        "memory",
        str(base_path),
        **{
            "kinto.attachment.events.url_secret": "URL-SECRET-VALUE",
            "kinto.attachment.serve_files": "true",
        },
    )
    app = make_app(settings)
    for path in ("/v1/", "/v1/__api__", "/v1/__heartbeat__", "/v1/__version__"):
        text = app.get(path, status="*").text
        for secret in ("SERVERPATH", "URL-SECRET-VALUE", settings["kinto.userid_hmac_secret"]):
            assert secret not in text, (path, secret)
