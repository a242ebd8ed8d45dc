"""tus's concatenation: partial uploads sent apart (in parallel), made one file by a final
upload, which becomes the record's attachment."""

import hashlib
import os

import pytest
import transaction
from kinto.core.utils import msec_time

from kinto_attachment import gc
from kinto_attachment.state import replaced, tus_uploads
from kinto_attachment.storage.local.store import LocalStaged, LocalStore
from kinto_attachment.views import tus_steps

from ..conftest import ALICE, BOB, cached_app, held_elsewhere
from .test_resumable import (
    CHUNK,
    RECORD,
    TUS,
    UPLOADS,
    WHEN,
    MiB,
    fail_next_finish,
    head,
    metadata,
    patch,
)


PARTIAL = {"Upload-Concat": "partial"}


@pytest.fixture
def kinto_tus(kinto):
    kinto.create_collection()
    return kinto


@pytest.fixture
def kinto_local(tmp_path_factory, request):
    """Memory backend, local files: where refusals are checked."""
    kinto = cached_app("memory", tmp_path_factory, request)
    kinto.create_collection()
    return kinto


def partial_upload(app, content, headers=ALICE, uploads=UPLOADS, whole=False):
    """A finished partial upload of ``content`` (sent with its creation if ``whole``, else in
    two PATCHes); its URL."""
    request_headers = {**headers, **TUS, **PARTIAL, "Upload-Length": str(len(content))}
    if whole:
        request_headers.update(CHUNK)
    response = app.post(uploads, content if whole else b"", headers=request_headers, status=201)
    url = response.headers["Location"]
    if content and not whole:
        path = url[len("http://localhost") :]
        half = len(content) // 2
        patch(app, path, content[:half], 0, headers=headers)
        patch(app, path, content[half:], half, headers=headers)
    return url


def final_upload(app, urls, status=201, headers=ALICE, meta=None, uploads=UPLOADS, **extra):
    return app.post(
        uploads,
        headers={
            **headers,
            **TUS,
            "Upload-Concat": "final;" + " ".join(urls),
            "Upload-Metadata": metadata("whole.txt") if meta is None else meta,
            **extra,
        },
        status=status,
    )


def path_of(url):
    return url[len("http://localhost") :]


def test_partial_uploads_become_one_attachment(kinto_tus):
    app = kinto_tus.app
    contents = [os.urandom(MiB + 3), b"", os.urandom(1000), os.urandom(2 * MiB)]
    urls = [partial_upload(app, c, whole=n % 2 == 0) for n, c in enumerate(contents)]
    # Finished, a partial upload waits: it is no attachment, and takes no more bytes.
    response = head(app, path_of(urls[0]))
    assert response.headers["Upload-Concat"] == "partial"
    assert response.headers["Upload-Offset"] == response.headers["Upload-Length"] == str(MiB + 3)
    assert "Upload-Expires" in response.headers
    app.get(RECORD, headers=ALICE, status=404)
    patch(app, path_of(urls[2]), b"x", 1000, status=409)

    meta = metadata("whole.txt", filetype="text/x-whole", data='{"title": "joined"}')
    response = final_upload(app, urls, meta=meta)
    whole = b"".join(contents)
    assert response.headers["Upload-Offset"] == str(len(whole))
    assert "Upload-Expires" not in response.headers
    record = app.get(RECORD, headers=ALICE).json["data"]
    attachment = record["attachment"]
    assert record["title"] == "joined"
    assert attachment["hash"] == hashlib.sha256(whole).hexdigest()
    assert (attachment["size"], attachment["filename"]) == (len(whole), "whole.txt")
    assert attachment["mimetype"] == "text/x-whole"
    assert kinto_tus.read(attachment["location"]) == whole
    # The partial uploads are gone, bytes and state: only the attachment is left.
    assert kinto_tus.files() == [kinto_tus.key_of(attachment["location"])]
    assert tus_uploads.entries(kinto_tus.registry.storage) == []
    for url in urls:
        head(app, path_of(url), status=404)
    # The final upload tells what it is made of, and takes no PATCH.
    final = path_of(response.headers["Location"])
    response = head(app, final)
    assert response.headers["Upload-Concat"] == "final;" + " ".join(urls)
    assert response.headers["Upload-Offset"] == response.headers["Upload-Length"]
    assert response.headers["Upload-Metadata"] == meta
    refused = patch(app, final, b"x", len(whole), status=403)
    assert "takes no PATCH" in refused.json["message"]


def test_a_partial_upload_named_twice_is_joined_twice(kinto_tus):
    """Found by review (2026-12-05): "The same partial upload MAY be present multiple times
    in the Upload-Concat header" (tus 1.0.0), as tusd takes it; it was a 400. The first
    named again later too (the local store grows the first's file: read again as it grows),
    however its URL is spelled; each partial upload goes once."""
    app = kinto_tus.app
    first, second = os.urandom(MiB + 7), os.urandom(1000)
    a, b = partial_upload(app, first), partial_upload(app, second, whole=True)
    final_upload(app, [a, b, path_of(a), b, a])
    whole = first + second + first + second + first
    attachment = app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert attachment["hash"] == hashlib.sha256(whole).hexdigest()
    assert kinto_tus.read(attachment["location"]) == whole
    assert kinto_tus.files() == [kinto_tus.key_of(attachment["location"])]
    assert tus_uploads.entries(kinto_tus.registry.storage) == []


def test_final_upload_takes_paths_too_and_replaces_the_attachment(kinto_local):
    app = kinto_local.app
    previous = kinto_local.upload(RECORD, b"previous", "previous.txt").json
    urls = [path_of(partial_upload(app, b"abc")), path_of(partial_upload(app, b"def"))]
    final_upload(app, urls)
    assert app.get(RECORD + "/attachment", headers=ALICE).body == b"abcdef"
    assert not kinto_local.exists(previous["location"])


@pytest.mark.parametrize("named", ["by-id", "default"])
def test_final_upload_in_the_default_bucket_takes_its_urls_either_way(
    tmp_path_factory, request, named
):
    """Partial uploads made under ``/buckets/default/...`` are named by their ``Location``
    (the bucket's id), or by the URL a client wrote (``default``): the latter was a 400."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.includes": "kinto.plugins.default_bucket kinto.plugins.flush kinto_attachment"},
    )
    record = "/v1/buckets/default/collections/notes/records/n1"
    uploads = record + "/attachment/uploads"
    parts = [os.urandom(100), os.urandom(50)]
    urls = [partial_upload(kinto.app, part, uploads=uploads) for part in parts]
    if named == "default":
        urls = [uploads + "/" + url.rsplit("/", 1)[1] for url in urls]
    final_upload(kinto.app, urls, uploads=uploads)
    attachment = kinto.app.get(record, headers=ALICE).json["data"]["attachment"]
    assert attachment["hash"] == hashlib.sha256(b"".join(parts)).hexdigest()


def test_partial_uploads_need_what_uploads_need(kinto_local):
    """Same permissions and quota as any upload; no filename needed (tus-js-client sends
    no metadata with them)."""
    app = kinto_local.app
    headers = {**TUS, **PARTIAL, "Upload-Length": "3"}
    app.post(UPLOADS, headers=headers, status=401)
    app.post(UPLOADS, headers={**BOB, **headers}, status=403)
    app.post(UPLOADS, headers={**ALICE, **headers, "Upload-Metadata": "bad !!"}, status=400)
    assert kinto_local.files() == []


def test_partial_uploads_count_in_the_quota(tmp_path_factory, request):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.attachment.resumable.max_uploads_per_user": "2"},
    )
    kinto.create_collection()
    urls = [partial_upload(kinto.app, b"a"), partial_upload(kinto.app, b"b")]
    headers = {**ALICE, **TUS, **PARTIAL, "Upload-Length": "1"}
    kinto.app.post(UPLOADS, headers=headers, status=429)
    final_upload(kinto.app, urls)  # Consumed: their slots are free.
    partial_upload(kinto.app, b"c")


def refused_final(app, urls, status, message, **kwargs):
    response = final_upload(app, urls, status=status, **kwargs)
    assert message in response.json["message"], response.json
    assert response.headers["Tus-Resumable"] == "1.0.0"
    return response


def test_refused_final_uploads_leave_the_partial_uploads_usable(kinto_local):
    app = kinto_local.app
    kinto_local.app.patch_json(
        "/v1/buckets/blog/collections/articles",
        {"permissions": {"record:create": ["system.Authenticated"]}},
        headers=ALICE,
    )
    first, second = partial_upload(app, b"12345"), partial_upload(app, b"678")
    unfinished = app.post(
        UPLOADS, headers={**ALICE, **TUS, **PARTIAL, "Upload-Length": "9"}, status=201
    ).headers["Location"]
    single = app.post(
        UPLOADS,
        headers={**ALICE, **TUS, "Upload-Length": "9", "Upload-Metadata": metadata()},
        status=201,
    ).headers["Location"]
    other_record = partial_upload(app, b"x", uploads=UPLOADS.replace("/r1/", "/r2/"))
    bobs = partial_upload(app, b"bob's", headers=BOB)
    unknown = first.rsplit("/", 1)[0] + "/0123456789abcdef"
    before = kinto_local.files()

    refused_final(app, [first, unknown], 404, f"unknown partial upload {unknown}")
    refused_final(app, [first, bobs], 404, f"unknown partial upload {bobs}")
    refused_final(app, [first, other_record], 400, f"{other_record} is no upload of this record")
    refused_final(app, [first, unfinished], 400, f"{unfinished} is not finished")
    refused_final(app, [first, single], 400, f"{single} is not a partial upload")
    refused_final(app, [first, "nonsense"], 400, "nonsense is no upload of this record")
    # Not even a URL (urlsplit refuses it): no upload either.
    refused_final(app, [first, "http://[::1/x"], 400, "http://[::1/x is no upload of this")
    refused_final(app, [], 400, "Upload-Concat must be")
    refused_final(app, [first], 400, "filename is required", meta="")
    refused_final(app, [first], 400, "extension is not allowed", meta=metadata("virus.exe"))
    refused_final(app, [first], 400, "no Upload-Length", **{"Upload-Length": "5"})
    refused_final(app, [first], 400, "no Upload-Length", **{"Upload-Defer-Length": "1"})
    refused_final(app, [first], 400, "carries no bytes", **CHUNK)
    # Another user, even one who may write the record, cannot use Alice's.
    refused_final(app, [first, second], 404, "unknown partial upload", headers=BOB)
    final_upload(app, [first], status=401, headers={})
    app.get(RECORD, headers=ALICE, status=404)
    assert kinto_local.files() == before  # Nothing made, nothing lost.

    final_upload(app, [first, second])
    assert app.get(RECORD + "/attachment", headers=ALICE).body == b"12345678"
    # Consumed: they make no other final upload.
    refused_final(app, [first], 404, f"unknown partial upload {first}")


def test_final_upload_over_the_size_limit(tmp_path_factory, request):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.max_size_bytes": "10"}
    )
    kinto.create_collection()
    urls = [partial_upload(kinto.app, b"123456"), partial_upload(kinto.app, b"789012")]
    response = final_upload(kinto.app, urls, status=413)
    assert response.json["errno"] == 113
    final_upload(kinto.app, urls[:1])


def test_a_locked_partial_upload_is_423(kinto_local):
    url = partial_upload(kinto_local.app, b"12345")
    with held_elsewhere(kinto_local.registry, ("uploads", url.rsplit("/", 1)[-1])):
        final_upload(kinto_local.app, [url], status=423)
    final_upload(kinto_local.app, [url])


def test_partial_upload_of_deferred_length(kinto_local):
    app = kinto_local.app
    response = app.post(
        UPLOADS, headers={**ALICE, **TUS, **PARTIAL, "Upload-Defer-Length": "1"}, status=201
    )
    url = response.headers["Location"]
    patch(app, path_of(url), b"abc", 0)
    final_upload(app, [url], status=400)  # Unfinished while its length is unknown.
    patch(app, path_of(url), b"", 3, **{"Upload-Length": "3"})
    final_upload(app, [url, partial_upload(app, b"def")])
    assert app.get(RECORD + "/attachment", headers=ALICE).body == b"abcdef"


def test_expired_partial_uploads_are_collected(kinto_local, monkeypatch):
    url = partial_upload(kinto_local.app, b"12345")
    assert kinto_local.files()
    later = msec_time() + 86400 * 1000 + 1
    monkeypatch.setattr(tus_steps, "msec_time", lambda: later)  # The clock of expirations.
    final_upload(kinto_local.app, [url], status=404)
    assert len(gc.collect(kinto_local.registry, now=later).expired_uploads) == 1
    assert kinto_local.files() == []


def test_terminated_partial_uploads_are_gone(kinto_local):
    url = partial_upload(kinto_local.app, b"12345")
    kinto_local.app.delete(path_of(url), headers={**ALICE, **TUS}, status=204)
    final_upload(kinto_local.app, [url], status=404)
    assert kinto_local.files() == []


def test_a_final_upload_deletes_no_state_but_its_parts(kinto_local, monkeypatch):
    """Made whole, a final upload was never saved: its request deletes the states of its
    partial uploads, and no other object (not a no-op delete of its own)."""
    urls = [partial_upload(kinto_local.app, content) for content in (b"abc", b"defg")]
    storage = kinto_local.registry.storage
    deleted, delete = [], storage.delete

    def recording(*args, **kwargs):
        deleted.append((kwargs["resource_name"], kwargs["object_id"]))
        return delete(*args, **kwargs)

    monkeypatch.setattr(storage, "delete", recording)
    final_upload(kinto_local.app, urls)
    parts = [(tus_uploads.RESOURCE, url.rsplit("/", 1)[-1]) for url in urls]
    assert sorted(deleted) == sorted(parts)


# A final upload that fails: the partial uploads stay, and nothing of it is left behind.


def test_a_concatenation_failing_midway_leaves_the_partial_uploads(kinto_local, monkeypatch):
    """A store failing in the middle of the copy (the second part): a 503, no final blob, the
    partial uploads as they were; the final upload sent again is made."""
    app = kinto_local.app
    urls = [partial_upload(app, b"12345"), partial_upload(app, b"678"), partial_upload(app, b"9")]
    before = kinto_local.files()
    copy, copied = LocalStore._copy, []

    def failing_copy(self, *args):
        if copied:
            raise OSError("disk failed")
        copied.append(args)
        return copy(self, *args)

    monkeypatch.setattr(LocalStore, "_copy", failing_copy)
    response = final_upload(app, urls, status=503)
    assert response.json["code"] == 503
    assert kinto_local.files() == before
    for url in urls:
        assert head(app, path_of(url)).headers["Upload-Offset"] != "0"
    monkeypatch.setattr(LocalStore, "_copy", copy)
    final_upload(app, urls)
    assert app.get(RECORD + "/attachment", headers=ALICE).body == b"123456789"


@pytest.mark.parametrize("when", WHEN)
def test_a_final_upload_whose_commit_failed_is_made_again(kinto_tus, monkeypatch, when):
    app = kinto_tus.app
    previous = kinto_tus.upload(RECORD, b"previous", "previous.txt").json
    contents = [os.urandom(MiB), os.urandom(1000)]
    urls = [partial_upload(app, c) for c in contents]
    before = kinto_tus.files()
    fail_next_finish(monkeypatch, when)
    response = final_upload(app, urls, status="*")
    assert response.status_code == 503, response.body
    assert app.get(RECORD, headers=ALICE).json["data"]["attachment"] == previous
    # No final blob; the partial uploads as they were (their S3 objects may be completed).
    after = kinto_tus.files()
    assert [key for key in after if key not in before and "partial" not in key] == []
    for url, content in zip(urls, contents, strict=True):
        assert head(app, path_of(url)).headers["Upload-Offset"] == str(len(content))

    final_upload(app, urls)
    attachment = app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert attachment["hash"] == hashlib.sha256(b"".join(contents)).hexdigest()
    assert kinto_tus.read(attachment["location"]) == b"".join(contents)
    assert kinto_tus.files() == [kinto_tus.key_of(attachment["location"])]


GRACE_SECONDS = 60


@pytest.mark.parametrize("blobs", ["local", "s3"])
def test_what_a_killed_final_creation_leaves_is_collected(
    tmp_path_factory, request, monkeypatch, blobs
):
    """A process killed while concatenating runs no cleanup: its half-made blob (a staged file;
    an S3 multipart upload) is named by no state, so the garbage collector finds it, while the
    partial uploads, still recorded, stay; the final upload sent again is made."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        blobs=blobs,
        **{"kinto.attachment.gc.orphans_grace_seconds": str(GRACE_SECONDS)},
    )
    kinto.create_collection()
    app = kinto.app
    urls = [partial_upload(app, b"12345"), partial_upload(app, b"678")]

    class Killed(Exception):
        pass

    def killed(*args, **kwargs):
        raise Killed

    if blobs == "local":
        monkeypatch.setattr(LocalStaged, "abort", lambda self: None)
        copy = LocalStore._copy
        monkeypatch.setattr(
            LocalStore, "_copy", lambda self, *a: copy(self, *a) if a[-1] is None else killed()
        )
    else:
        from kinto_attachment.storage.s3 import S3Store

        monkeypatch.setattr(S3Store, "abort_upload", lambda self, key, upload_id: True)
        monkeypatch.setattr(S3Store, "_send", killed)
    final_upload(app, urls, status=500)  # Killed, as far as the store knows.
    monkeypatch.undo()

    later = msec_time() + (GRACE_SECONDS + 60) * 1000
    report = gc.collect(kinto.registry, now=later)
    assert report.expired_uploads == [] and report.dangling == []
    if blobs == "local":
        assert [(o.temporary, o.size) for o in report.orphans] == [(True, 5)]
    else:
        assert [p.key.endswith(".txt") for p in report.aborted] == [True]  # Not a partial's.
    final_upload(app, urls)
    attachment = app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert kinto.read(attachment["location"]) == b"12345678"
    assert kinto.files() == [kinto.key_of(attachment["location"])]


def test_s3_final_upload_is_never_completed_under_a_name_reserved_meanwhile(
    tmp_path_factory, request, monkeypatch
):
    """Found by review (2026-12-05).

    ``randomize = false`` on S3: the name a final upload chose became reserved while S3
    composed it (a file deleted under it meanwhile, whose signed URLs may still be in use):
    the object was completed under it all the same, and those URLs served the new file. Its
    name is checked again before completing now, as every long write does: a 503, and the
    final upload sent again goes to the next free name."""
    kinto = cached_app(
        "memory", tmp_path_factory, request, blobs="s3", **{"kinto.attachment.randomize": "false"}
    )
    kinto.create_collection()
    contents = [os.urandom(MiB + 5), os.urandom(300)]
    urls = [partial_upload(kinto.app, content) for content in contents]
    store = kinto.registry.attachment_store
    send = type(store)._send

    def sending(self, target, data):  # The name is taken away while the parts are sent.
        with transaction.manager:
            replaced.add(kinto.registry.storage, [target["Key"]], until=msec_time() + 3600_000)
        return send(self, target, data)

    monkeypatch.setattr(type(store), "_send", sending)
    final_upload(kinto.app, urls, status=503)
    monkeypatch.undo()
    assert store.reserved("whole.txt") and store.stat("whole.txt") is None

    final_upload(kinto.app, urls)
    attachment = kinto.app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert kinto.key_of(attachment["location"]) != "whole.txt"
    assert attachment["hash"] == hashlib.sha256(b"".join(contents)).hexdigest()
