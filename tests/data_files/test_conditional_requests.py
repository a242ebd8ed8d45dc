"""``/data/files``: conditional requests, ranges and the preconditions of writes, from a
review (2026-12-05): the defects it found, and the attacks the code withstood.
"""

import hashlib
import io
import time

import pytest
import webob

from kinto_attachment import gc
from kinto_attachment.data_files.limiter import TransferLimiter
from kinto_attachment.state import data_file_entries

from ..conftest import cached_app
from .test_data_files import LOCAL, PDF, get, listing, post


@pytest.fixture
def blobs():
    """Local files only: the defects below do not depend on the blob store (the ``kinto``
    fixture still runs on memory and PostgreSQL)."""
    return "local"


def delete(kinto, file_id, status=204, **headers):
    return kinto.app.delete(
        f"/v1/data/files/{file_id}", headers=headers, extra_environ=LOCAL, status=status
    )


def wsgi_call(kinto, path, method="GET", **headers):
    """``(status, headers, body)`` as the WSGI app hands them to the server (gunicorn,
    uWSGI send the headers as given)."""
    wsgi_request = webob.Request.blank(path, method=method, environ=dict(LOCAL))
    for name, value in headers.items():
        wsgi_request.headers[name] = value
    started = []
    body = kinto.app.app(
        wsgi_request.environ, lambda status, hdrs, exc=None: started.append((status, hdrs))
    )
    try:
        content = b"".join(body)
    finally:
        if hasattr(body, "close"):
            body.close()
    status, hdrs = started[0]
    return status, hdrs, content


def test_a_suffix_range_of_an_empty_file_is_satisfiable(kinto_memory):
    """Found by review (2026-12-05).

    ``Range: bytes=-N`` (N > 0) of an empty file is answered ``416 Range Not
    Satisfiable``. RFC 9110 §14.1.1: "When a selected representation has zero length, the
    only satisfiable form of range-spec is a suffix-range with a non-zero suffix-length";
    a client that asks for the tail of a log or artifact (``curl -r -100``, a tailing
    reader, a media player probing the end) gets an error instead of the (empty) file.

    ``conditions.requested_range`` refuses any suffix range when ``size == 0``.
    Correct: the whole (empty) content, ``200`` (no ``Content-Range`` can describe zero
    bytes), as for a suffix longer than the file."""
    post(kinto_memory, b"", query="?id=empty")
    response = get(kinto_memory, "empty", status="*", Range="bytes=-100")
    assert response.status_code == 200, response.status
    assert response.body == b""


def test_a_304_carries_no_content_length_of_an_empty_body(kinto_memory):
    """Found by review (2026-12-05).

    a ``304 Not Modified`` (``If-None-Match`` of the ETag, or
    ``If-Modified-Since``) is sent with ``Content-Length: 0``. RFC 9110 §8.6: "A server MUST
    NOT send Content-Length in such a response unless its field value equals the decimal
    number of octets that would have been sent in the content of a 200 (OK) response".
    waitress drops it, but the shipped gunicorn (27: keeps Content-Length on a 304, "MAY
    include the Content-Length of the unconditional response") and uWSGI send it: a cache
    or client that updates its stored headers from the 304 (RFC 7234 §4.3.4 caches, many
    HTTP client caches) records the file as 0 bytes long, and the HEAD of a 304 says the
    file is empty.

    ``downloads.respond`` returns the 304 with the empty default body of the response, whose
    length WebOb sets. Correct: no ``Content-Length`` on a 304 (or the 200's)."""
    post(kinto_memory, PDF, query="?id=cached")
    etag = get(kinto_memory, "cached").headers["ETag"]
    for method in ("GET", "HEAD"):
        status, headers, _ = wsgi_call(
            kinto_memory, "/v1/data/files/cached", method, **{"If-None-Match": etag}
        )
        assert status.startswith("304"), status
        lengths = [v for k, v in headers if k.lower() == "content-length"]
        assert lengths in ([], [str(len(PDF))]), (method, lengths)


def test_a_delete_with_a_stale_if_match_is_a_412(kinto):
    """Found by review (2026-12-05).

    ``DELETE /data/files/{id}`` with ``If-Match: <ETag of v1>`` deletes v2, a
    file another worker uploaded under the id since the client looked at it. RFC 9110
    §13.1.1: an origin server that receives ``If-Match`` MUST evaluate it before performing
    the method (412 when it does not match); Kinto itself answers 412 for a stale
    ``If-Match`` on every write, and the route advertises ``If-Match`` in its CORS
    ``Access-Control-Allow-Headers``. A client cleaning up "its" artifact with a
    precondition (the only safe way, with two nodes writing the same id) destroys another
    job's file, which is lost.

    ``views.delete`` never looks at the preconditions (only downloads do:
    ``downloads.conditions.require_preconditions``). Correct: 412 (Kinto's JSON error), v2
    kept; a matching ``If-Match`` (or ``*``) deletes."""
    post(kinto, b"version one", query="?id=job-output")
    stale = get(kinto, "job-output").headers["ETag"]
    post(kinto, b"version two", query="?id=job-output")
    response = delete(kinto, "job-output", status="*", **{"If-Match": stale})
    assert get(kinto, "job-output", status="*").status_code == 200, "v2 was deleted"
    assert response.status_code == 412
    assert response.json["errno"] == 114
    current = get(kinto, "job-output").headers["ETag"]
    delete(kinto, "job-output", **{"If-Match": current})
    delete(kinto, "job-output", status=412, **{"If-Match": "*"})  # Nothing there.
    assert kinto.files() == []


def test_uploads_whose_preconditions_fail_are_412s(kinto):
    """Found by review (2026-12-05).

    ``POST /data/files?id=x`` with ``If-None-Match: *`` (create only: Kinto's own
    convention for writes, and RFC 9110 §13.1.2) overwrites the file already there. Two
    workers that each try to claim an id (first one wins) both get ``200``, and the first's
    artifact is silently replaced; ``If-Match: <ETag>`` (replace only that version) is
    ignored the same way: a lost update.

    ``views.upload`` reads ``previous`` under the id's lock but never checks it against the
    request's preconditions. Correct: 412 (Kinto's JSON error) when the id exists, or when
    ``If-Match`` names another version, the existing file and its entry untouched and the
    new body's blob deleted."""
    post(kinto, b"claimed first", query="?id=claim")
    stale = get(kinto, "claim").headers["ETag"]
    post(kinto, b"replaced", query="?id=claim")
    create_only = post(
        kinto, b"claimed second", query="?id=claim", status="*", **{"If-None-Match": "*"}
    )
    if_match = post(kinto, b"lost update", query="?id=claim", status="*", **{"If-Match": stale})
    assert get(kinto, "claim").body == b"replaced"
    assert (create_only.status_code, if_match.status_code) == (412, 412)
    assert create_only.json["errno"] == 114
    assert len(kinto.files()) == 1
    # Those that hold: create-only of a new id, replace-only of the version there.
    post(kinto, b"new id", query="?id=fresh", **{"If-None-Match": "*"})
    current = get(kinto, "claim").headers["ETag"]
    post(kinto, b"its own update", query="?id=claim", **{"If-Match": current})
    assert get(kinto, "claim").body == b"its own update"
    assert len(kinto.files()) == 2


# Attacks that held.


def test_range_edge_cases(kinto_memory):
    """Held against a review (2026-12-05).

    suffix longer than the file, end beyond it, start at the end, several ranges,
    an inverted range and ``If-Range`` with a stale ETag are each answered as RFC 9110 asks
    (206 clamped, 416 with ``Content-Range: bytes */size`` and Kinto's JSON, or the whole
    content), for GET and HEAD alike."""
    post(kinto_memory, b"0123456789", query="?id=ten")
    etag = get(kinto_memory, "ten").headers["ETag"]
    cases = {
        "bytes=-30": (206, b"0123456789", "bytes 0-9/10"),
        "bytes=8-30": (206, b"89", "bytes 8-9/10"),
        "bytes=-3": (206, b"789", "bytes 7-9/10"),
        "bytes=0-1,3-4": (200, b"0123456789", None),
        "bytes=3-2": (200, b"0123456789", None),
    }
    for value, (status, body, content_range) in cases.items():
        response = get(kinto_memory, "ten", status="*", Range=value)
        assert (response.status_code, response.body) == (status, body), value
        assert response.headers.get("Content-Range") == content_range
        head = kinto_memory.app.head(
            "/v1/data/files/ten", headers={"Range": value}, extra_environ=LOCAL, status="*"
        )
        assert head.status_code == status
        assert head.headers["Content-Length"] == str(len(body))
    refused = get(kinto_memory, "ten", status=416, Range="bytes=10-")
    assert refused.headers["Content-Range"] == "bytes */10" and refused.json["code"] == 416
    stale = get(
        kinto_memory, "ten", status="*", Range="bytes=2-3", **{"If-Range": '"' + "0" * 64 + '"'}
    )
    assert (stale.status_code, stale.body) == (200, b"0123456789")
    fresh = get(kinto_memory, "ten", status="*", Range="bytes=2-3", **{"If-Range": etag})
    assert (fresh.status_code, fresh.body) == (206, b"23")


def test_refused_uploads_keep_the_file_and_the_budget(tmp_path_factory, request):
    """Held against a review (2026-12-05).

    uploads refused for their ``ttl`` (negative, float, huge, empty), their id (odd
    characters) or their length (over ``max_size_bytes``, a lying ``Content-Length``) leave
    the existing file, its entry and the transfer budget as they were."""
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.max_size_bytes": "100"}
    )
    post(kinto, b"kept", query="?id=k")
    for query in ("?id=k&ttl=-1", "?id=k&ttl=1.5", "?id=k&ttl=1e3", "?id=k&ttl=", "?id=k%20"):
        post(kinto, b"new", query=query, status=400)
    post(kinto, b"x" * 101, query="?id=k", status=413)
    wsgi_request = webob.Request.blank("/v1/data/files?id=k", method="POST", environ=dict(LOCAL))
    wsgi_request.body_file = io.BytesIO(b"short")
    wsgi_request.environ["CONTENT_LENGTH"] = "50"
    assert wsgi_request.get_response(kinto.app.app).status_code == 400
    assert get(kinto, "k").body == b"kept"
    assert [e["id"] for e in listing(kinto)] == ["k"]
    assert len(kinto.files()) == 1
    assert kinto.registry.transfer_limiter.in_use == 0
    assert isinstance(kinto.registry.transfer_limiter, TransferLimiter)
    assert listing(kinto)[0]["hash"] == hashlib.sha256(b"kept").hexdigest()


def test_expiry_never_collects_an_id_uploaded_again_meanwhile(kinto, monkeypatch):
    """Held against a review (2026-12-05).

    the collector lists an expired entry, then (before it locks the id) the id is
    uploaded again; the collector must leave the new entry and its blob alone (it compares
    the entry it finds under the lock with the one it listed), and delete only the expired
    blob."""
    post(kinto, b"expiring", query="?id=e&ttl=1")
    old_key = data_file_entries.get(kinto.registry.storage, "e")["key"]
    listed = gc._expired_data_files

    def list_then_upload_again(storage, now):
        found = listed(storage, now)
        assert [entry["id"] for entry in found] == ["e"]
        post(kinto, b"uploaded again", query="?id=e")
        return found

    monkeypatch.setattr(gc, "_expired_data_files", list_then_upload_again)
    later = data_file_entries.msec_time() + 5000
    report = gc.collect(kinto.registry, now=later, orphans=False)
    monkeypatch.undo()
    assert report.expired_files == []
    assert get(kinto, "e").body == b"uploaded again"
    new_key = data_file_entries.get(kinto.registry.storage, "e")["key"]
    assert kinto.files() == [new_key] and new_key != old_key


def _replaced_within_a_second(kinto, file_id):
    """Upload v1, download it (its Last-Modified kept), replace it with v2 within the same
    second; return v1's download."""
    for _ in range(20):
        post(kinto, b"version one", query=f"?id={file_id}")
        first = get(kinto, file_id)
        post(kinto, b"version two", query=f"?id={file_id}")
        second = get(kinto, file_id)
        if second.headers["Last-Modified"] == first.headers["Last-Modified"]:
            return first
    pytest.fail("no replacement within one second")


def test_a_write_with_if_unmodified_since_of_a_replaced_second_is_a_412(kinto_memory):
    """Found by review (2026-12-05), of that day's fixes.

    ``preconditions.require`` compares ``If-Unmodified-Since`` with the entry's
    ``last_modified`` alone (412 only if it is of a LATER second). HTTP dates have whole
    seconds: a client that downloaded v1 (``Last-Modified: T``) and deletes (or replaces)
    the id ``If-Unmodified-Since: T`` deletes v2, uploaded by another job within that same
    second, which it never saw. Downloads know this (``conditions.require_preconditions``
    refuses a date of the second the content was replaced in, ``_replaced_within`` on the
    entry's ``since``); the writes ignore ``since``. The same GET is a 412, the DELETE a 204.

    Consequence: the lost update the preconditions exist to prevent (two jobs writing one
    id): the other job's file is deleted or overwritten unseen.

    Correct: a write whose date is of (or before) the second the content was last replaced
    in (the entry's ``since - 1``; an entry without ``since``, as downloads now treat it) is
    a 412, and the file stays."""
    kinto = kinto_memory
    first = _replaced_within_a_second(kinto, "shared-job")
    date = first.headers["Last-Modified"]
    assert get(kinto, "shared-job", status="*", **{"If-Unmodified-Since": date}).status_code == 412
    deleted = kinto.app.delete(
        "/v1/data/files/shared-job",
        headers={"If-Unmodified-Since": date},
        extra_environ=LOCAL,
        status="*",
    )
    assert get(kinto, "shared-job", status="*").status_code == 200, "v2 was deleted unseen"
    assert deleted.status_code == 412


def test_a_download_of_a_never_replaced_file_honours_its_own_last_modified(kinto_memory):
    """Found by review (2026-12-05), of that day's fixes.

    A fix of that day gave every entry without a previous content (a new id) a previous one
    ending a millisecond before it (an id deleted and uploaded again within one second): so
    every file uploaded once answered ``If-Modified-Since: <its own Last-Modified>`` with a
    ``200``, never a ``304``, and ``If-Unmodified-Since`` of that date with a ``412``. The
    fix was taken back (the deleted id's case stays as docs/consistency.rst says: the
    ``ETag`` tells them apart). A never-replaced file revalidates by its own date; only a
    resume by date alone (``Range`` with ``If-Unmodified-Since``) needs a strong date, as
    documented."""
    kinto = kinto_memory
    for attempt in range(5):
        file_id = f"fresh-{attempt}"
        post(kinto, b"a file uploaded once", query=f"?id={file_id}")
        stored = data_file_entries.get(kinto.registry.storage, file_id)
        if stored["last_modified"] % 1000:
            break
    date = get(kinto, file_id).headers["Last-Modified"]
    revalidated = get(kinto, file_id, status="*", **{"If-Modified-Since": date})
    assert revalidated.status_code == 304, revalidated.status
    unmodified = get(kinto, file_id, status="*", **{"If-Unmodified-Since": date})
    assert unmodified.status_code == 200, unmodified.status
    delete(kinto, file_id, **{"If-Unmodified-Since": date})


def test_write_preconditions_compare_tags_as_rfc_9110_says(kinto_memory):
    """Held against a review of the fixes (2026-12-05).

    ``If-Match`` compares strongly (``W/"<hash>"`` is a 412), ``If-None-Match`` weakly
    (``W/"<hash>"`` of the file there is a 412), lists with spaces are read, ``*`` takes an
    expired entry for no file (``If-None-Match: *`` creates over it, ``If-Match: *`` is a
    412), and every refusal is Kinto's 412 (errno 114) before the body, leaving no file and
    the transfer budget free."""
    kinto = kinto_memory
    post(kinto, b"live", query="?id=tags")
    etag = get(kinto, "tags").headers["ETag"]
    weak = "W/" + etag
    refused = kinto.app.delete(
        "/v1/data/files/tags", headers={"If-Match": weak}, extra_environ=LOCAL, status=412
    )
    assert refused.json["errno"] == 114
    post(kinto, b"other", query="?id=tags", status=412, **{"If-None-Match": f'"x" , {weak}'})
    post(kinto, b"new", query="?id=tags", **{"If-Match": f'"x" ,{etag} '})
    assert get(kinto, "tags").body == b"new"
    post(kinto, b"short-lived", query="?id=gone&ttl=1")
    time.sleep(0.05)
    post(kinto, b"x", query="?id=gone", status=412, **{"If-Match": "*"})
    post(kinto, b"created over the expired", query="?id=gone", **{"If-None-Match": "*"})
    assert get(kinto, "gone").body == b"created over the expired"
    assert len(kinto.files()) == 2  # The replaced and expired blobs went at commit (grace 0).
    assert kinto.registry.transfer_limiter.in_use == 0
