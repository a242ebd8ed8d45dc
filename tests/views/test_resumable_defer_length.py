"""tus's creation-defer-length: an upload created before its length is known (a stream), told
by a later PATCH."""

import hashlib
import os

import pytest

from ..conftest import ALICE, cached_app
from .test_resumable import CHUNK, RECORD, TUS, UPLOADS, MiB, head, metadata, patch


DEFER = {"Upload-Defer-Length": "1"}


@pytest.fixture
def kinto_tus(kinto):
    kinto.create_collection()
    return kinto


def create_deferred(app, body=None, status=201, **extra):
    headers = {**ALICE, **TUS, **DEFER, "Upload-Metadata": metadata(), **extra}
    if body is not None:
        headers.update(CHUNK)
    response = app.post(UPLOADS, body or b"", headers=headers, status=status)
    if status != 201:
        return response
    return response, response.headers["Location"][len("http://localhost") :]


def test_the_length_is_told_by_a_later_patch(kinto_tus):
    app = kinto_tus.app
    content = os.urandom(2 * MiB + 5)
    response, url = create_deferred(app, body=content[:MiB])  # With creation-with-upload.
    assert response.headers["Upload-Offset"] == str(MiB)
    response = head(app, url)
    assert response.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in response.headers
    patch(app, url, content[MiB : 2 * MiB], MiB)
    app.get(RECORD, headers=ALICE, status=404)
    length = {"Upload-Length": str(len(content))}
    patch(app, url, content[2 * MiB :], 2 * MiB, **length)
    attachment = app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert attachment["hash"] == hashlib.sha256(content).hexdigest()
    assert attachment["size"] == len(content)
    assert kinto_tus.read(attachment["location"]) == content
    assert kinto_tus.files() == [kinto_tus.key_of(attachment["location"])]
    response = head(app, url)  # Finished: its length is known.
    assert response.headers["Upload-Length"] == response.headers["Upload-Offset"]
    assert "Upload-Defer-Length" not in response.headers


def test_the_length_told_ahead_of_the_last_bytes(tmp_path_factory, request):
    kinto = cached_app("memory", tmp_path_factory, request)
    kinto.create_collection()
    _, url = create_deferred(kinto.app)
    patch(kinto.app, url, b"123", 0, **{"Upload-Length": "10"})
    response = head(kinto.app, url)
    assert (response.headers["Upload-Length"], response.headers["Upload-Offset"]) == ("10", "3")
    assert "Upload-Defer-Length" not in response.headers
    # Told once: the same again is fine, another is not.
    patch(kinto.app, url, b"45", 3, **{"Upload-Length": "10"})
    refused = patch(kinto.app, url, b"67", 5, status=400, **{"Upload-Length": "11"})
    assert "Upload-Length is 10 already" in refused.json["message"]
    patch(kinto.app, url, b"678901", 5, status=413)  # Past it.
    patch(kinto.app, url, b"67890", 5)
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"1234567890"


def test_an_empty_file_of_deferred_length(tmp_path_factory, request):
    kinto = cached_app("memory", tmp_path_factory, request)
    kinto.create_collection()
    _, url = create_deferred(kinto.app)
    patch(kinto.app, url, b"", 0, **{"Upload-Length": "0"})
    attachment = kinto.app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert attachment["hash"] == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    "headers,message",
    [
        ({**DEFER, "Upload-Length": "5"}, "not both"),
        ({"Upload-Defer-Length": "0"}, "Upload-Defer-Length must be 1"),
        ({"Upload-Defer-Length": "yes"}, "Upload-Defer-Length must be 1"),
        ({}, "Upload-Length must be a non-negative integer"),
    ],
)
def test_bad_creations(tmp_path_factory, request, headers, message):
    kinto = cached_app("memory", tmp_path_factory, request)
    kinto.create_collection()
    response = kinto.app.post(
        UPLOADS,
        headers={**ALICE, **TUS, "Upload-Metadata": metadata(), **headers},
        status=400,
    )
    assert message in response.json["message"]
    assert response.json["errno"] == 107
    assert kinto.files() == []


def test_bad_lengths_in_a_patch(tmp_path_factory, request):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.max_size_bytes": "10"}
    )
    kinto.create_collection()
    _, url = create_deferred(kinto.app, body=b"12345")
    for value in ("4", "x", "-1"):
        response = patch(kinto.app, url, b"6", 5, status=400, **{"Upload-Length": value})
        assert "Upload-Length" in response.json["message"]
    response = patch(kinto.app, url, b"6", 5, status=413, **{"Upload-Length": "11"})
    assert response.json["errno"] == 113
    response = patch(kinto.app, url, b"67", 5, status=413, **{"Upload-Length": "6"})
    assert "goes 1 bytes past Upload-Length" in response.json["message"]
    assert head(kinto.app, url).headers["Upload-Defer-Length"] == "1"  # Nothing changed.


def test_the_size_limit_holds_while_the_length_is_unknown(tmp_path_factory, request):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.max_size_bytes": "10"}
    )
    kinto.create_collection()
    _, url = create_deferred(kinto.app)
    patch(kinto.app, url, b"1234567", 0)
    patch(kinto.app, url, b"8901", 7, status=413)
    assert head(kinto.app, url).headers["Upload-Offset"] == "7"
    patch(kinto.app, url, b"890", 7, **{"Upload-Length": "10"})
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"1234567890"
