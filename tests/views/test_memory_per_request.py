"""Per-process state that network clients could make grow (memory, descriptors, threads),
measured in-process over many requests: attacks of a review (2026-12-06). ``test_held_*``:
held against it; the others were findings, fixed."""

import gc
import os
import threading
import tracemalloc
import uuid

import webob
from pyramid import traversal

from ..conftest import ALICE, attachment_app
from .test_resumable import CHUNK, TUS, metadata


RECORDS = "/v1/buckets/blog/collections/articles/records/"
#: A record id as long as the plugin takes (its URI has 2048 bytes at most).
LONG = 1900
ROUNDS = 30


def _long_id():
    return ("r" + uuid.uuid4().hex * 60)[:LONG]


def _fds():
    return len(os.listdir("/proc/self/fd"))


def _retained_by_pyramid_url_cache(operation, rounds):
    """Entries that ``rounds`` calls of ``operation`` leave in Pyramid's module-level cache of
    quoted URL segments (``pyramid.traversal._segment_cache``, which is never emptied), once
    every request is over (no garbage: a full collection took seconds in a worker late in
    the suite)."""
    entries = len(traversal._segment_cache)
    for _ in range(rounds):
        operation()
    return len(traversal._segment_cache) - entries


def test_tus_uploads_created_and_terminated_leave_nothing_in_the_process(
    tmp_path_factory, request
):
    """Found by review (2026-12-06): a client creating a resumable upload and terminating it
    (its quota slot free again, no state left in Kinto's storage), over and over, each time
    on a new record id as long as the plugin allows, grew every server process for good: the
    ``Location`` (``request.route_url``) left the record id and the upload id in Pyramid's
    never-emptied cache of quoted URL segments, some 9 KiB per request. Fixed: our URLs are
    made without that cache (``routes.url_of``); nothing of those uploads stays."""
    kinto = attachment_app(tmp_path_factory, request)
    app = kinto.app

    def create_and_terminate():
        response = app.post(
            RECORDS + _long_id() + "/attachment/uploads",
            b"",
            headers={**ALICE, **TUS, "Upload-Length": "10", "Upload-Metadata": metadata()},
            status=201,
        )
        app.delete(response.headers["Location"], headers={**ALICE, **TUS}, status=204)

    create_and_terminate()  # Whatever the first request caches once.
    entries = _retained_by_pyramid_url_cache(create_and_terminate, ROUNDS)
    assert entries < 10, f"{entries} URL segments kept after {ROUNDS} terminated uploads"


def test_records_given_an_attachment_then_deleted_leave_nothing_in_the_process(
    tmp_path_factory, request
):
    """Found by review (2026-12-06): a record attached a file (multipart ``POST``), then
    deleted, on new record ids: Kinto alone keeps nothing per record id in the process (a
    ``PUT`` then ``DELETE`` of a record leaves no URL segment cached), the attachment's
    ``Location`` (``request.route_url`` with the client's record id) kept each one forever.
    Fixed as above."""
    kinto = attachment_app(tmp_path_factory, request)
    app = kinto.app

    def attach_and_delete():
        url = RECORDS + _long_id()
        kinto.upload(url, content=b"x")
        app.delete(url, headers=ALICE, status=200)

    attach_and_delete()
    entries = _retained_by_pyramid_url_cache(attach_and_delete, ROUNDS)
    assert entries < 10, f"{entries} URL segments kept after {ROUNDS} deleted records"


def test_held_kinto_record_writes_alone_keep_no_url_segment(tmp_path_factory, request):
    """Control of the two tests above: Kinto's own record writes on new ids (with the plugin
    installed) keep nothing per id in Pyramid's URL cache."""
    kinto = attachment_app(tmp_path_factory, request)
    app = kinto.app

    def put_and_delete():
        url = RECORDS + _long_id()
        app.put_json(url, {"data": {}}, headers=ALICE, status=201)
        app.delete(url, headers=ALICE, status=200)

    put_and_delete()
    assert _retained_by_pyramid_url_cache(put_and_delete, ROUNDS) < 10


def test_held_downloads_closed_unread_release_their_descriptors(tmp_path_factory, request):
    """Attacks descriptors: clients that start downloads and go away before reading a byte
    (the server closes the body it never iterated, PEP 3333); each download's file must be
    closed then, however many there are."""
    kinto = attachment_app(tmp_path_factory, request)
    record = RECORDS + "r1"
    kinto.upload(record, content=b"y" * 300_000)
    for path in (record + "/attachment",):
        gc.disable()  # Nothing closed by the collector: only by close().
        try:
            before = _fds()
            for _ in range(100):
                req = webob.Request.blank(path, headers=ALICE)
                status, _, body = req.call_application(kinto.app.app)
                assert status.startswith("200"), status
                body.close()
            assert _fds() <= before + 2
        finally:
            gc.enable()


def test_held_uploads_cut_mid_body_leave_no_descriptor_thread_or_file(tmp_path_factory, request):
    """Attacks descriptors, threads and temporary files: multipart bodies and tus chunks cut
    before their Content-Length, tens of times: each is a 400 and leaves nothing open or
    on disk."""
    kinto = attachment_app(tmp_path_factory, request)
    app = kinto.app
    record = RECORDS + "r1"
    response = app.post(
        record + "/attachment/uploads",
        b"",
        headers={**ALICE, **TUS, "Upload-Length": "100000000", "Upload-Metadata": metadata()},
        status=201,
    )
    upload = response.headers["Location"]
    offset = [0]
    form = (
        b'--b\r\nContent-Disposition: form-data; name="attachment"; filename="a.txt"\r\n\r\n'
        + b"z" * 50_000
    )

    def cut():
        app.post(
            record + "/attachment",
            form,
            headers={
                **ALICE,
                "Content-Type": "multipart/form-data; boundary=b",
                "Content-Length": str(len(form) + 1000),
            },
            status=400,
        )
        app.patch(
            upload,
            b"w" * 20_000,
            headers={
                **ALICE,
                **TUS,
                **CHUNK,
                "Upload-Offset": str(offset[0]),
                "Content-Length": "30000",
            },
            status=400,
        )
        # tus keeps the bytes of a cut chunk that arrived.
        offset[0] = int(app.head(upload, headers={**ALICE, **TUS}).headers["Upload-Offset"])

    cut()
    fds, threads, files = _fds(), threading.active_count(), len(kinto.files())
    for _ in range(40):  # Closed as they end, not by the garbage collector.
        cut()
    assert _fds() <= fds + 2
    assert threading.active_count() <= threads + 1
    assert len(kinto.files()) == files
    app.delete(upload, headers={**ALICE, **TUS}, status=204)


def test_held_part_headers_and_fields_are_bounded(tmp_path_factory, request):
    """Attacks memory through the form's non-file parts: a part header of 8 MiB is refused
    (400) once the fields' budget is spent, never kept whole."""
    kinto = attachment_app(tmp_path_factory, request)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="data"\r\nX-Pad: '
        + b"p" * (8 * 1024 * 1024)
        + b"\r\n\r\n{}\r\n--b--\r\n"
    )
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        response = kinto.app.post(
            RECORDS + "r1/attachment",
            body,
            headers={**ALICE, "Content-Type": "multipart/form-data; boundary=b"},
            status=400,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "exceed" in response.json["message"]
    # The test's own body (8 MiB) is allocated before tracing; the server's reads are chunks.
    assert peak - baseline < 6 * 1024 * 1024
