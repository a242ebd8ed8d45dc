"""tus concatenation (partial and final uploads) and creation-defer-length against an
adversarial review's attacks (2026-12-05): every one HELD (the code withstood it), kept so
that a change that breaks one fails here."""

import hashlib
import os
import threading

import pytest
import webob
from kinto.core.utils import msec_time

from kinto_attachment import gc
from kinto_attachment.state import tus_uploads

from ..conftest import ALICE, BOB, cached_app
from .test_resumable import CHUNK, RECORD, TUS, UPLOADS, head, metadata, patch
from .test_resumable_concatenation import PARTIAL, final_upload, partial_upload, path_of


MiB = 1024 * 1024


@pytest.fixture
def kinto_local(tmp_path_factory, request):
    kinto = cached_app("memory", tmp_path_factory, request)
    kinto.create_collection()
    return kinto


@pytest.fixture(params=["local", "s3"])
def kinto_any(tmp_path_factory, request):
    kinto = cached_app("memory", tmp_path_factory, request, blobs=request.param)
    kinto.create_collection()
    return kinto


@pytest.fixture
def kinto_pg(tmp_path_factory, request):
    kinto = cached_app("postgresql", tmp_path_factory, request)
    kinto.create_collection()
    return kinto


def attachment_of(app, headers=ALICE):
    return app.get(RECORD, headers=headers).json["data"]["attachment"]


def assert_exact(kinto, whole, headers=ALICE):
    app = kinto.app
    attachment = attachment_of(app, headers)
    assert attachment["size"] == len(whole)
    assert attachment["hash"] == hashlib.sha256(whole).hexdigest()
    assert app.get(RECORD + "/attachment", headers=headers).body == whole
    return attachment


def chunked_partial(app, content, chunk, headers=ALICE):
    """A partial upload sent in PATCHes of ``chunk`` bytes (hashed behind, on local disk)."""
    url = app.post(
        UPLOADS,
        headers={**headers, **TUS, **PARTIAL, "Upload-Length": str(len(content))},
        status=201,
    ).headers["Location"]
    for offset in range(0, len(content), chunk):
        patch(app, path_of(url), content[offset : offset + chunk], offset, headers=headers)
    return url


def only_the_attachment_left(kinto):
    files = kinto.files()
    key = kinto.key_of(attachment_of(kinto.app)["location"])
    assert files == [key], files
    assert tus_uploads.entries(kinto.registry.storage) == []


# Exactness of the bytes, size and sha256.


@pytest.mark.parametrize(
    "sizes,order",
    [
        ([0, 1], [0, 1, 0]),  # An empty first part, named twice.
        ([3, 0], [1, 0, 1, 0]),
        ([0, 0], [0, 1]),  # An empty file.
        ([5 * MiB + 3, 7, 5 * MiB - 2], [0, 1, 2, 0]),  # Across S3's 5 MiB part minimum.
        ([7, 5 * MiB + 1, 2], [0, 1, 0, 2, 1]),
        ([1] * 5, [4, 3, 2, 1, 0, 0, 1, 2, 3, 4]),
    ],
)
def test_final_is_exactly_the_concatenation(kinto_any, sizes, order):
    """HELD: local and S3 (moto): empty, repeated, small and > 5 MiB parts, in any order,
    make exactly their bytes, size and sha256; nothing else is left."""
    app = kinto_any.app
    contents = [os.urandom(size) for size in sizes]
    urls = [partial_upload(app, c, whole=n % 2 == 1) for n, c in enumerate(contents)]
    final_upload(app, [urls[i] for i in order])
    assert_exact(kinto_any, b"".join(contents[i] for i in order))
    only_the_attachment_left(kinto_any)


def test_final_of_parts_hashed_behind(kinto_local):
    """HELD: parts sent in many small PATCHes (hashed behind their answers on local disk),
    the first named again later, joined at once: the sha256 is the concatenation's."""
    app = kinto_local.app
    first = os.urandom(300 * 1024 + 5)
    second = os.urandom(200 * 1024 + 1)
    urls = [chunked_partial(app, first, 64 * 1024), chunked_partial(app, second, 50 * 1024)]
    final_upload(app, [urls[0], urls[1], urls[0]])
    assert_exact(kinto_local, first + second + first)
    only_the_attachment_left(kinto_local)


# Reuse of consumed parts, and what both attachments become.


def test_consumed_partial_is_never_reused_and_first_attachment_survives(kinto_any):
    """HELD: once a final upload consumed a partial upload: a second final upload naming it
    is a 404, its DELETE a 404, its PATCH a 404; the final's URL DELETE forgets it only; the
    attachment stays exactly as made (local: it *is* the first part's file)."""
    app = kinto_any.app
    a, b = os.urandom(1000), os.urandom(500)
    p1, p2 = partial_upload(app, a), partial_upload(app, b)
    final = final_upload(app, [p1, p2]).headers["Location"]
    assert_exact(kinto_any, a + b)
    p3 = partial_upload(app, b"zzz")
    for urls in ([p1], [p3, p1], [p3, p2, p3]):
        final_upload(app, urls, status=404)
    app.delete(path_of(p1), headers={**ALICE, **TUS}, status=404)
    patch(app, path_of(p2), b"", 500, status=404)
    app.delete(path_of(final), headers={**ALICE, **TUS}, status=204)
    head(app, path_of(final), status=404)
    assert_exact(kinto_any, a + b)
    # Bob (with write) cannot take Alice's p3 either; Alice still can.
    app.patch_json(RECORD, {"permissions": {"write": ["system.Authenticated"]}}, headers=ALICE)
    final_upload(app, [p3], status=404, headers=BOB)
    assert_exact(kinto_any, a + b)
    final_upload(app, [p3])
    assert_exact(kinto_any, b"zzz")
    only_the_attachment_left(kinto_any)


def test_second_final_replacing_the_first_does_not_damage_it_before_commit(kinto_local):
    """HELD (local): final #1's attachment is a second name of its first part's file. A
    later final naming other parts, refused *after* its concatenation (a 403: the writer lost
    its permission meanwhile), leaves the first attachment byte for byte, and its own parts
    usable."""
    app = kinto_local.app
    a, b = os.urandom(2000), os.urandom(3000)
    final_upload(app, [partial_upload(app, a), partial_upload(app, b)])
    first = assert_exact(kinto_local, a + b)
    app.patch_json(RECORD, {"permissions": {"write": ["system.Authenticated"]}}, headers=ALICE)
    c, d = os.urandom(700), os.urandom(900)
    bobs = [partial_upload(app, c, headers=BOB), partial_upload(app, d, headers=BOB)]
    before = kinto_local.files()
    answers = _final_while(
        kinto_local,
        bobs,
        BOB,
        lambda: app.patch_json(RECORD, {"permissions": {"write": []}}, headers=ALICE),
    )
    assert answers[0].status_int == 403, answers[0].body
    assert kinto_local.files() == before
    assert attachment_of(app) == first
    assert_exact(kinto_local, a + b)
    app.patch_json(RECORD, {"permissions": {"write": ["system.Authenticated"]}}, headers=ALICE)
    for url, content in zip(bobs, (c, d), strict=True):
        assert head(app, path_of(url), headers=BOB).headers["Upload-Offset"] == str(len(content))
    final_upload(app, [bobs[0], bobs[1], bobs[0]], headers=BOB)
    assert_exact(kinto_local, c + d + c)


def _final_while(kinto, urls, headers, meanwhile, store_method="concatenate"):
    """A final upload of ``urls`` run in a thread, ``meanwhile`` done while the store is
    inside ``store_method`` (after it, for concatenate); its response."""
    app = kinto.app
    store_class = type(kinto.registry.attachment_store)
    original = getattr(store_class, store_method)
    inside, release, answers = threading.Event(), threading.Event(), []

    def held(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        inside.set()
        release.wait(10)
        return result

    def run():
        request_headers = {**headers, **TUS, "Upload-Concat": "final;" + " ".join(urls)}
        request_headers["Upload-Metadata"] = metadata("whole.txt")
        answers.append(
            webob.Request.blank(UPLOADS, method="POST", headers=request_headers).get_response(
                app.app
            )
        )

    setattr(store_class, store_method, held)
    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert inside.wait(10)
        setattr(store_class, store_method, original)
        meanwhile()
    finally:
        setattr(store_class, store_method, original)
        release.set()
        thread.join(10)
    return answers


# Concurrency.


def test_final_naming_a_partial_being_appended_is_refused(kinto_local):
    """HELD: while the last PATCH of a partial upload is being written, a final upload naming
    it is refused (423 or 400), makes nothing; once the PATCH answered, the final makes
    exactly the bytes."""
    app = kinto_local.app
    content = os.urandom(4000)
    url = app.post(
        UPLOADS, headers={**ALICE, **TUS, **PARTIAL, "Upload-Length": "4000"}, status=201
    ).headers["Location"]
    patch(app, path_of(url), content[:1000], 0)
    store_class = type(kinto_local.registry.attachment_store)
    append = store_class.append
    inside, release, answers = threading.Event(), threading.Event(), []

    def held(self, state, offset, chunks):
        chunks = list(chunks)
        inside.set()
        release.wait(10)
        return append(self, state, offset, chunks)

    def run():
        request = webob.Request.blank(
            path_of(url),
            method="PATCH",
            headers={**ALICE, **TUS, **CHUNK, "Upload-Offset": "1000"},
            body=content[1000:],
        )
        answers.append(request.get_response(app.app))

    store_class.append = held
    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert inside.wait(10)
        store_class.append = append
        response = final_upload(app, [url], status="*")
        assert response.status_int in (400, 423), response
        app.get(RECORD, headers=ALICE, status=404)
    finally:
        store_class.append = append
        release.set()
        thread.join(10)
    assert answers[0].status_int == 204, answers[0].body
    final_upload(app, [url])
    assert_exact(kinto_local, content)


def test_gc_during_a_final_keeps_its_parts(kinto_local, monkeypatch):
    """HELD: the collector running (past the parts' expiry) while a final upload holds them
    leaves them to the final (busy), which makes exactly their bytes."""
    app = kinto_local.app
    a, b = os.urandom(3000), os.urandom(10)
    urls = [partial_upload(app, a), partial_upload(app, b)]
    later = msec_time() + 86400 * 1000 + 1
    reports = []
    answers = _final_while(
        kinto_local,
        urls,
        ALICE,
        lambda: reports.append(gc.collect(kinto_local.registry, now=later)),
    )
    assert answers[0].status_int == 201, answers[0].body
    assert sorted(reports[0].busy_uploads) == sorted(u.rsplit("/", 1)[1] for u in urls)
    assert_exact(kinto_local, a + b)


def test_kill_after_commit_leaves_a_part_name_the_gc_takes_without_the_attachment(
    kinto_local, monkeypatch
):
    """HELD (local): a process killed once the final's transaction committed, before it
    deleted its parts' files (here: deletes do nothing), leaves the first part's file name, a
    second name of the attachment's file; the collector takes that name, never the
    attachment's bytes."""
    from kinto_attachment.storage.local.store import LocalStore

    app = kinto_local.app
    a, b = os.urandom(5000), os.urandom(100)
    urls = [partial_upload(app, a), partial_upload(app, b)]
    monkeypatch.setattr(LocalStore, "delete", lambda self, key: None)
    final_upload(app, urls)
    monkeypatch.undo()
    assert any(name.startswith(".uploads/") for name in kinto_local.files())
    report = gc.collect(kinto_local.registry, now=msec_time() + 2 * 86400 * 1000)
    assert report.orphans
    assert_exact(kinto_local, a + b)
    only_the_attachment_left(kinto_local)


# PostgreSQL: what the final's transaction removes.


@pytest.mark.postgresql
def test_pg_consumed_partial_is_not_reusable_and_refused_final_rolls_back(kinto_pg):
    """HELD (PostgreSQL): a final refused after concatenation rolls back (its parts stay,
    their bytes exact); a committed final consumes them (a second final: 404); neither
    damages the attachment."""
    app = kinto_pg.app
    app.patch_json(
        "/v1/buckets/blog/collections/articles",
        {"permissions": {"record:create": ["system.Authenticated"]}},
        headers=ALICE,
    )
    app.put_json(RECORD, {"permissions": {"write": ["system.Authenticated"]}}, headers=ALICE)
    a, b = os.urandom(1500), os.urandom(20)
    urls = [partial_upload(app, a, headers=BOB), partial_upload(app, b, headers=BOB)]
    answers = _final_while(
        kinto_pg,
        urls,
        BOB,
        lambda: app.patch_json(RECORD, {"permissions": {"write": []}}, headers=ALICE),
    )
    assert answers[0].status_int == 403, answers[0].body
    assert "attachment" not in app.get(RECORD, headers=ALICE).json["data"]
    app.patch_json(RECORD, {"permissions": {"write": ["system.Authenticated"]}}, headers=ALICE)
    final_upload(app, [urls[1], urls[0]], headers=BOB)
    assert_exact(kinto_pg, b + a)
    final_upload(app, urls, headers=BOB, status=404)
    assert_exact(kinto_pg, b + a)
    only_the_attachment_left(kinto_pg)


# creation-defer-length.


@pytest.fixture
def kinto_small(tmp_path_factory, request):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.max_size_bytes": "100"}
    )
    kinto.create_collection()
    return kinto


def deferred(app, partial=False, headers=ALICE):
    extra = PARTIAL if partial else {"Upload-Metadata": metadata("d.txt")}
    return path_of(
        app.post(
            UPLOADS, headers={**headers, **TUS, "Upload-Defer-Length": "1", **extra}, status=201
        ).headers["Location"]
    )


@pytest.mark.parametrize("partial", [False, True])
def test_deferred_length_conflicts_and_limits(kinto_small, partial):
    """HELD: a deferred length told above the limit (413), below the bytes (400), twice
    differently (400), or with a chunk past it (413) changes nothing; bytes past the limit
    while untold are a 413 and kept out; told right, the upload completes exactly."""
    app = kinto_small.app
    url = deferred(app, partial)
    patch(app, url, b"a" * 60, 0)
    patch(app, url, b"", 60, status=413, **{"Upload-Length": "101"})
    patch(app, url, b"", 60, status=400, **{"Upload-Length": "59"})
    patch(app, url, b"b" * 41, 60, status=413)  # 101 > the limit, length untold.
    assert head(app, url).headers["Upload-Offset"] == "60"
    assert head(app, url).headers["Upload-Defer-Length"] == "1"
    patch(app, url, b"b" * 20, 60, status=204, **{"Upload-Length": "90"})
    patch(app, url, b"", 80, status=400, **{"Upload-Length": "95"})  # Set once.
    patch(app, url, b"c" * 11, 80, status=413, **{"Upload-Length": "90"})  # Past it.
    assert head(app, url).headers["Upload-Length"] == "90"
    patch(app, url, b"c" * 10, 80, **{"Upload-Length": "90"})
    whole = b"a" * 60 + b"b" * 20 + b"c" * 10
    if partial:
        final_upload(app, [url])
    assert_exact(kinto_small, whole)
    only_the_attachment_left(kinto_small)


def test_parts_under_the_limit_summing_over_it(kinto_small):
    """HELD: parts of 60 + 41 bytes (each under the 100-byte limit), the same part twice
    (60 + 60), or a deferred part: a final above the limit is a 413 that leaves them."""
    app = kinto_small.app
    p60, p41 = partial_upload(app, b"x" * 60), partial_upload(app, b"y" * 41)
    d = deferred(app, partial=True)
    patch(app, d, b"z" * 50, 0, **{"Upload-Length": "50"})
    before = kinto_small.files()
    for urls in ([p60, p41], [p60, p60], [p60, d], [d, d, p41]):
        assert final_upload(app, urls, status=413).json["errno"] == 113
    assert kinto_small.files() == before
    final_upload(app, [d, p41])
    assert_exact(kinto_small, b"z" * 50 + b"y" * 41)


def test_partial_metadata_does_not_reach_the_record(kinto_local):
    """HELD: a partial upload's Upload-Metadata (data, permissions, a filename the policy
    refuses) never reaches the record: the final's does."""
    app = kinto_local.app
    meta = metadata("evil.exe", data='{"title": "partial"}', permissions='{"read": ["x"]}')
    url = app.post(
        UPLOADS,
        headers={**ALICE, **TUS, **PARTIAL, "Upload-Length": "3", "Upload-Metadata": meta},
        params=b"abc",
        content_type=CHUNK["Content-Type"],
        status=201,
    ).headers["Location"]
    final_upload(app, [url], meta=metadata("good.txt", data='{"title": "final"}'))
    record = app.get(RECORD, headers=ALICE).json
    assert record["data"]["title"] == "final"
    assert record["data"]["attachment"]["filename"] == "good.txt"
    assert "x" not in record["permissions"].get("read", [])


# A final refused after its concatenation, on S3, then the collector, then the retry.


@pytest.mark.parametrize("blobs", ["local", "s3"])
def test_refused_final_then_gc_then_retry(tmp_path_factory, request, blobs):
    """HELD: a final refused after its store concatenated (S3: its parts' multipart uploads
    completed into objects), then the collector (no grace) before the parts expire: the
    parts' bytes are kept (their states name them), the refused final's object is gone, and
    the final sent again makes exactly the bytes; nothing else is left."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        blobs=blobs,
        **{"kinto.attachment.gc.orphans_grace_seconds": "0"},
    )
    kinto.create_collection()
    app = kinto.app
    app.put_json(RECORD, {"permissions": {"write": ["system.Authenticated"]}}, headers=ALICE)
    contents = [os.urandom(5 * MiB + 10), os.urandom(1000), os.urandom(3)]
    urls = [partial_upload(app, c, headers=BOB) for c in contents]
    answers = _final_while(
        kinto,
        [urls[1], urls[0], urls[2], urls[1]],
        BOB,
        lambda: app.patch_json(RECORD, {"permissions": {"write": []}}, headers=ALICE),
    )
    assert answers[0].status_int == 403, answers[0].body
    report = gc.collect(kinto.registry, now=msec_time() + 5000)
    assert report.expired_uploads == []
    app.patch_json(RECORD, {"permissions": {"write": ["system.Authenticated"]}}, headers=ALICE)
    final_upload(app, [urls[1], urls[0], urls[2], urls[1]], headers=BOB)
    assert_exact(kinto, contents[1] + contents[0] + contents[2] + contents[1])
    gc.collect(kinto.registry, now=msec_time() + 5000)
    assert_exact(kinto, contents[1] + contents[0] + contents[2] + contents[1])
    only_the_attachment_left(kinto)


@pytest.mark.postgresql
def test_odd_part_ids_are_never_5xx(kinto_pg):
    """HELD: ids no upload has (NUL escaped, very long, non-ASCII, dots) are 4xx."""
    app = kinto_pg.app
    good = partial_upload(app, b"abc")
    prefix = good.rsplit("/", 1)[0] + "/"
    for upload_id in ("%00", "x" * 5000, "%C3%A9", "\xe9", "..", ".", "%2e%2e", "a%2fb", " "):
        response = final_upload(app, [good, prefix + upload_id], status="*")
        assert 400 <= response.status_int < 500, (upload_id, response.status)
    final_upload(app, [good])
    assert_exact(kinto_pg, b"abc")


def test_killed_final_leaves_a_grown_first_part_that_the_retry_copies(kinto_local, monkeypatch):
    """HELD (local): a process killed after the final's file got its name, before its
    transaction committed (no cleanup: deletes do nothing), leaves that name as a second name
    of the first part's file, grown past the part's length. The final sent again (naming the
    part first, or later) copies only the part's own bytes; the collector then takes the
    leftover name, never the attachment's bytes."""
    from kinto_attachment.storage.local.store import LocalStore
    from kinto_attachment.views import tus_steps

    app = kinto_local.app
    a, b, c = os.urandom(3000), os.urandom(2000), os.urandom(7)
    urls = [partial_upload(app, a), partial_upload(app, b), partial_upload(app, c)]

    class Killed(Exception):
        pass

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(LocalStore, "delete", lambda self, key: None)
    monkeypatch.setattr(tus_steps, "attach", killed)
    final_upload(app, urls, status=500)
    monkeypatch.undo()
    files_after_kill = kinto_local.files()
    assert len([f for f in files_after_kill if not f.startswith(".uploads/")]) == 1
    for url in urls:
        head(app, path_of(url))
    final_upload(app, [urls[0], urls[2], urls[0]])
    assert_exact(kinto_local, a + c + a)
    report = gc.collect(kinto_local.registry, now=msec_time() + 2 * 86400 * 1000)
    assert_exact(kinto_local, a + c + a)
    assert report.orphans and len(report.expired_uploads) == 1  # urls[1], abandoned.
    only_the_attachment_left(kinto_local)
