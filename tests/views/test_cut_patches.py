"""PATCHes cut short (their bytes kept) and partial uploads named twice, on every store and
backend, as a review tried them (2026-12-05): the offset recorded is always the bytes stored,
the file's sha256 right, and a refusal still keeps nothing."""

import functools
import hashlib
import io
import os

import pytest

from ..conftest import ALICE
from .test_resumable import RECORD, TUS, UPLOADS, create, head, patch, raw_patch
from .test_resumable_concatenation import PARTIAL, final_upload, partial_upload, path_of


MiB = 1024 * 1024
KiB = 1024


@pytest.fixture
def kinto_tus(kinto):
    kinto.create_collection()
    return kinto


@pytest.fixture
def kinto_gcs(gcs_server):
    from ..storage.test_gcs import gcs_app

    return gcs_app(gcs_server)


class Cut:
    """A body stream giving ``data`` then raising ``error`` (None: EOF)."""

    def __init__(self, data, error=None):
        self._io = io.BytesIO(data)
        self._error = error

    def read(self, size=-1):
        chunk = self._io.read(size)
        if not chunk and self._error is not None:
            raise self._error
        return chunk


#: A PATCH of ``body`` (bytes, or a :class:`Cut` stream) chunked bodies the server ends.
raw = functools.partial(raw_patch, terminated=True)


def offset_of(kinto, url):
    return int(head(kinto.app, url).headers["Upload-Offset"])


def finish_and_check(kinto, url, content):
    offset = offset_of(kinto, url)
    if offset < len(content):
        patch(kinto.app, url, content[offset:], offset)
    attachment = kinto.app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert kinto.read(attachment["location"]) == content
    assert attachment["hash"] == hashlib.sha256(content).hexdigest()
    assert attachment["size"] == len(content)
    return attachment


def cut_sequence(kinto, content, cuts):
    """Chunks of ``content``: (start, announced, sent) each, cut when sent < announced."""
    _, url = create(kinto.app, len(content))
    for start, announced, sent in cuts:
        assert offset_of(kinto, url) == start
        response = raw(kinto, url, content[start : start + sent], announced, start)
        expected = 204 if sent == announced else 400
        assert response.status_code == expected, response.body
        assert response.headers["Upload-Offset"] == str(start + sent)
        assert response.headers["Tus-Resumable"] == "1.0.0"
        assert offset_of(kinto, url) == start + sent
    return url


# Checked, no defect (kept as the scenarios most likely to corrupt a file).


def test_checked_cuts_with_deferred_hashing_and_part_boundaries(kinto_tus):
    """Cuts in deferred-hash chunks, at the S3 part boundary (5 MiB), after 0 bytes, and a
    complete chunk in between; sha256 and bytes of the finished file right."""
    content = os.urandom(14 * MiB + 7)
    cuts = [
        (0, MiB, MiB),  # whole, hashed behind
        (MiB, 6 * MiB, 4 * MiB),  # cut exactly at 5 MiB (one S3 part)
        (5 * MiB, 2 * MiB, 0),  # cut after 0 bytes
        (5 * MiB, 8 * MiB, 3 * MiB + 11),  # cut mid part
        (8 * MiB + 11, MiB, MiB),
    ]
    url = cut_sequence(kinto_tus, content, cuts)
    finish_and_check(kinto_tus, url, content)


def test_checked_cuts_on_gcs_at_chunk_boundaries(kinto_gcs):
    content = os.urandom(2 * MiB + 5)
    cuts = [
        (0, MiB, 256 * KiB),
        (256 * KiB, MiB, 0),
        (256 * KiB, MiB, 512 * KiB + 1),
        (768 * KiB + 1, 100, 100),
    ]
    url = cut_sequence(kinto_gcs, content, cuts)
    finish_and_check(kinto_gcs, url, content)


def test_checked_interrupted_chunked_body_keeps_its_bytes(kinto_tus):
    content = os.urandom(3 * MiB)
    _, url = create(kinto_tus.app, len(content))
    response = raw(kinto_tus, url, Cut(content[: MiB + 3], OSError("gone")), None, 0)
    assert response.status_code == 400
    assert offset_of(kinto_tus, url) == MiB + 3
    finish_and_check(kinto_tus, url, content)


def test_checked_refusals_during_the_body_keep_nothing(kinto_tus):
    content = os.urandom(2 * MiB)
    _, url = create(kinto_tus.app, len(content))
    patch(kinto_tus.app, url, content[:MiB], 0)
    # A wrong checksum over a full body: 460, nothing kept.
    checksum = "sha1 " + "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
    response = raw(
        kinto_tus, url, content[MiB : MiB + 100], 100, MiB, **{"Upload-Checksum": checksum}
    )
    assert response.status_code == 460
    assert offset_of(kinto_tus, url) == MiB
    # A cut body with a checksum: refused, nothing kept.
    response = raw(
        kinto_tus, url, content[MiB : MiB + 100], 1000, MiB, **{"Upload-Checksum": checksum}
    )
    assert response.status_code == 400
    assert offset_of(kinto_tus, url) == MiB
    # More than the upload's length in a chunked body: 413, nothing kept.
    response = raw(kinto_tus, url, Cut(content[MiB:] + b"xx"), None, MiB)
    assert response.status_code == 413
    assert offset_of(kinto_tus, url) == MiB
    finish_and_check(kinto_tus, url, content)


def test_checked_store_failure_while_appending_a_cut_body(kinto_tus, monkeypatch):
    content = os.urandom(2 * MiB)
    _, url = create(kinto_tus.app, len(content))
    store = kinto_tus.registry.attachment_store
    append = store.append

    def failing(state, offset, chunks):
        append(state, offset, chunks)
        raise OSError("disk gone")

    monkeypatch.setattr(store, "append", failing)
    response = raw(kinto_tus, url, content[:1000], 5000, 0)
    assert response.status_code == 503
    monkeypatch.undo()
    assert offset_of(kinto_tus, url) == 0
    finish_and_check(kinto_tus, url, content)


def test_checked_deferred_length_cut(kinto_tus):
    content = os.urandom(MiB + 10)
    response = kinto_tus.app.post(
        UPLOADS,
        headers={
            **ALICE,
            **TUS,
            "Upload-Defer-Length": "1",
            "Upload-Metadata": "filename YS50eHQ=",
        },
        status=201,
    )
    url = path_of(response.headers["Location"])
    response = raw(kinto_tus, url, content[:500], MiB, 0)
    assert response.status_code == 400
    assert offset_of(kinto_tus, url) == 500
    response = raw(
        kinto_tus,
        url,
        content[500:1000],
        len(content) - 500,
        500,
        **{"Upload-Length": str(len(content))},
    )
    assert response.status_code == 400
    assert offset_of(kinto_tus, url) == 1000
    assert head(kinto_tus.app, url).headers["Upload-Length"] == str(len(content))
    finish_and_check(kinto_tus, url, content)


def test_checked_partial_cut_then_named_twice(kinto_tus):
    app = kinto_tus.app
    a = os.urandom(3 * MiB + 1)
    b = os.urandom(100)
    response = app.post(
        UPLOADS, headers={**ALICE, **TUS, **PARTIAL, "Upload-Length": str(len(a))}, status=201
    )
    url_a = response.headers["Location"]
    response = raw(kinto_tus, path_of(url_a), a[: 2 * MiB + 5], len(a), 0)
    assert response.status_code == 400
    patch(app, path_of(url_a), a[2 * MiB + 5 :], 2 * MiB + 5)
    url_b = partial_upload(app, b)
    final_upload(app, [url_a, url_b, url_a, url_a])
    whole = a + b + a + a
    attachment = app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert kinto_tus.read(attachment["location"]) == whole
    assert attachment["hash"] == hashlib.sha256(whole).hexdigest()
    assert kinto_tus.files() == [kinto_tus.key_of(attachment["location"])]


def test_checked_partial_named_twice_on_gcs(kinto_gcs):
    app = kinto_gcs.app
    a, b = os.urandom(300 * KiB + 1), os.urandom(10)
    url_a, url_b = partial_upload(app, a), partial_upload(app, b)
    final_upload(app, [url_a, url_a, url_b, url_a])
    whole = a + a + b + a
    attachment = app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert kinto_gcs.read(attachment["location"]) == whole
    assert attachment["hash"] == hashlib.sha256(whole).hexdigest()


def test_checked_s3_large_partial_named_twice(kinto_tus):
    app = kinto_tus.app
    a = os.urandom(5 * MiB + 3)
    url_a, url_e = partial_upload(app, a), partial_upload(app, b"")
    final_upload(app, [url_e, url_a, url_e, url_a])
    whole = a + a
    attachment = app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert kinto_tus.read(attachment["location"]) == whole
    assert attachment["hash"] == hashlib.sha256(whole).hexdigest()
    assert kinto_tus.files() == [kinto_tus.key_of(attachment["location"])]


def test_an_interrupted_body_that_completes_the_upload_is_not_answered_as_refused(kinto_tus):
    """Found by review (2026-12-05).

    A chunked body whose reading failed (client gone, or framing invalid: gunicorn's
    InvalidChunkSize) after exactly the upload's remaining bytes: the upload is completed and
    the record's attachment replaced, in a transaction that commits, yet the answer is the
    400 ``body_interrupted``. A refusal with side effects: either it completed (204) or it
    was refused (nothing changed)."""
    app = kinto_tus.app
    content = os.urandom(1000)
    _, url = create(app, len(content))
    response = raw(kinto_tus, url, Cut(content, OSError("gone")), None, 0)
    record = app.get(RECORD, headers=ALICE).json["data"]
    completed = "attachment" in record
    assert (response.status_code, completed) in ((204, True), (400, False)), (
        response.status_code,
        completed,
    )
