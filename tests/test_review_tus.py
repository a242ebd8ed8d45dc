import os
import pytest
from .conftest import ALICE, BOB, cached_app
from .views.test_resumable import CHUNK, RECORD, TUS, UPLOADS, metadata, patch, head, create
from .views.test_resumable_concatenation import final_upload, partial_upload, path_of


@pytest.fixture(params=["memory", "postgresql"])
def k(request, tmp_path_factory):
    kinto = cached_app(request.param, tmp_path_factory, request)
    kinto.create_collection()
    return kinto


def show(r):
    print(r.status, r.headers.get("Content-Type"), r.body[:300])


def test_explore(k):
    app = k.app
    urls = [partial_upload(app, b"abc"), partial_upload(app, b"def")]
    base = urls[0].rsplit("/", 1)[0]
    for extra in [
        base + "/" + "a" * 5000,
        base + "/" + "\xe9\xe9",
        base + "/%00",
        base + "/" + "x" * 300,
    ]:
        r = final_upload(app, [urls[0], extra], status="*")
        show(r)
    for uid in ["a" * 5000, "x" * 300, "%C3%A9", "%00", "%ED%A0%80"]:
        r = app.head(UPLOADS + "/" + uid, headers={**ALICE, **TUS}, status="*")
        print("HEAD", r.status)
        r = app.patch(UPLOADS + "/" + uid, b"x", headers={**ALICE, **TUS, **CHUNK, "Upload-Offset": "0"}, status="*")
        print("PATCH", r.status)
        r = app.delete(UPLOADS + "/" + uid, headers={**ALICE, **TUS}, status="*")
        print("DELETE", r.status)
