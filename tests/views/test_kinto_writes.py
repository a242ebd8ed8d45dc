"""Kinto's own writes with the plugin: prepared (body, locks, the ``attachment`` field's
check) by a view deriver after Kinto's permission check (:func:`kinto_attachment.listeners.
kinto_writes`); from a review (2026-12-05) of that day's fixes."""

import pytest

from ..conftest import ALICE, BOB, cached_app


RECORDS = "/buckets/blog/collections/articles/records"


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def kinto_batch(request, tmp_path_factory):
    kinto = cached_app(request.param, tmp_path_factory, request)
    kinto.create_collection()
    kinto.app.put_json(f"/v1{RECORDS}/existing", {"data": {"title": "kept"}}, headers=ALICE)
    return kinto


#: A write of a batch that Kinto refuses: the sub-request, who sends it, the status Kinto gives.
REFUSED_WRITES = {
    "precondition-412": (
        {
            "method": "PUT",
            "path": f"{RECORDS}/existing",
            "body": {"data": {"title": "x"}},
            "headers": {"If-Match": '"1"'},
        },
        ALICE,
        412,
    ),
    "missing-404": ({"method": "DELETE", "path": f"{RECORDS}/nowhere"}, ALICE, 404),
    "forbidden-403": (
        {"method": "PUT", "path": f"{RECORDS}/existing", "body": {"data": {"t": 1}}},
        BOB,
        403,
    ),
    "attachment-edit-400": (
        {
            "method": "PUT",
            "path": f"{RECORDS}/existing",
            "body": {"data": {"attachment": {"location": "https://elsewhere/x"}}},
        },
        ALICE,
        400,
    ),
}


@pytest.mark.parametrize("refused", REFUSED_WRITES, ids=list(REFUSED_WRITES))
def test_a_refused_write_in_a_batch_is_its_own_status_not_a_500(kinto_batch, refused):
    """Found by review (2026-12-05), of that day's fixes.

    the view deriver ``listeners.kinto_writes`` wraps every view not registered
    ``exception_only``, and Kinto's error views (``kinto.core.views.errors``: ``context=
    HTTPException``/``Exception``) are registered for both uses: their normal registration is
    wrapped. Kinto's ``POST /batch`` renders a failed sub-request's error with
    ``render_view_to_response(error, subrequest)`` (``kinto.core.utils.follow_subrequest``),
    which looks that normal registration up: ``_before_kinto_view`` runs again on the
    sub-request, whose ``context`` the router no longer holds (``write_locks.lock_write``:
    ``AttributeError: 'Request' object has no attribute 'context'``).

    Consequence: any write of a batch that Kinto refuses (412 on a stale ``If-Match``, 404 of a
    missing record, 403, 400 of an ``attachment`` edit) makes the whole batch a ``500``
    "programmatic error" (on PostgreSQL every other write of the batch rolled back); Kinto
    alone answers ``200`` with each sub-response's own status. kinto-http's and Kinto Admin's
    batches of record writes break as soon as one is refused.

    Correct: ``200``, the refused write's status in its sub-response, the other writes done
    (``_before_kinto_view`` only for a request the router matched a view to: skip a view
    called with an exception as its context, or mark the request once prepared)."""
    sub, headers, status = REFUSED_WRITES[refused]
    bucket = "/buckets/" + ("bobs" if headers is BOB else "alices")
    created = {"method": "PUT", "path": bucket}  # Each user may create a bucket.
    response = kinto_batch.app.post_json(
        "/v1/batch", {"requests": [created, sub]}, headers=headers, status="*"
    )
    assert response.status_int == 200, response.text[:300]
    assert [r["status"] for r in response.json["responses"]] == [201, status]
    kinto_batch.app.get(f"/v1{bucket}", headers=headers, status=200)


@pytest.fixture
def kinto_default_bucket(tmp_path_factory, request):
    includes = "kinto.plugins.default_bucket kinto.plugins.flush kinto_attachment"
    kinto = cached_app("memory", tmp_path_factory, request, **{"kinto.includes": includes})
    kinto.create_collection()
    return kinto


def test_attachment_edits_through_the_default_bucket_and_patches_are_refused(
    kinto_default_bucket,
):
    """Held: the deriver wraps the sub-request that Kinto's ``default_bucket`` view makes, and
    the record views' JSON-Patch and merge-patch bodies: an ``attachment`` set, removed or
    replaced by a client is ``400`` on every route tried, the record unchanged."""
    kinto = kinto_default_bucket
    url = kinto.record_url("r1")
    kinto.upload(url)
    before = kinto.app.get(url, headers=ALICE).json["data"]
    forged = {"data": {"attachment": {"location": "https://elsewhere/x"}}}
    kinto.app.put_json(
        "/v1/buckets/default/collections/c/records/r", forged, headers=ALICE, status=400
    )
    kinto.app.patch_json(url, {"data": {"attachment": None}}, headers=ALICE, status=400)
    kinto.app.patch(
        url,
        '[{"op": "move", "from": "/data/attachment", "path": "/data/old"}]',
        headers={**ALICE, "Content-Type": "application/json-patch+json"},
        status=400,
    )
    kinto.app.patch(
        url,
        '{"data": {"attachment": null}}',
        headers={**ALICE, "Content-Type": "application/merge-patch+json"},
        status=400,
    )
    assert kinto.app.get(url, headers=ALICE).json["data"] == before


def test_served_files_answer_head_and_preflights_and_405_for_writes(tmp_path_factory, request):
    """Held: the served files' ``errors.not_allowed`` view (no method predicate) is tried
    after the ``GET`` and ``OPTIONS`` views: ``HEAD`` and CORS preflights of a served file
    are still answered by them; a ``PUT`` is a ``405`` with ``Allow``."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{
            "kinto.attachment.serve_files": "true",
            "kinto.attachment.base_url": "http://localhost/v1/attachments/",
        },
    )
    kinto.create_collection()
    location = kinto.upload(kinto.record_url("r1")).json["location"]
    path = location[len("http://localhost") :]
    head = kinto.app.head(path, status=200)
    assert head.headers["Content-Length"] == "5"
    preflight = kinto.app.options(
        path,
        headers={"Origin": "https://page.example", "Access-Control-Request-Method": "GET"},
        status=204,
    )
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]
    refused = kinto.app.put(path, "x", status=405)
    assert refused.headers["Allow"] == "GET, HEAD, OPTIONS"
