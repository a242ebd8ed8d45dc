"""``/data/files``' answers to methods it does not serve (405 with ``Allow`` for callers who
see it) and to hidden callers (what an unknown path gets, CORS included), from a review
(2026-12-05) of that day's 405 views: the defect it found, and the attacks that held."""

import pytest

from ..conftest import cached_app


STRANGER = {"REMOTE_ADDR": "203.0.113.7"}
ALLOWED_ORIGIN = "https://ok.example"


@pytest.fixture
def kinto_memory(tmp_path_factory, request):
    kinto = cached_app("memory", tmp_path_factory, request)
    kinto.create_collection()
    return kinto


def _answer(app, method, path, headers, environ):
    answer = app.request(
        path, method=method, headers=headers, environ=dict(environ), expect_errors=True
    )
    kept = {k: v for k, v in answer.headers.items() if k not in ("Content-Length", "Location")}
    return answer.status_int, kept, answer.body.replace(b"filez", b"files")


@pytest.mark.parametrize("redirect", ["true", "false"])
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_hidden_caller_with_an_allowed_origin_tells_data_files_by_its_405_catch_all(
    tmp_path_factory, request, redirect, method
):
    """Found by review (2026-12-05), of that day's fixes.

    the new catch-all view of ``/data/files`` and ``/data/files/{id}``
    (``errors.not_allowed(..., before=require_visible)``) runs ``require_visible``, which adds
    the route's CORS response callback (``visibility._cors``) *before* refusing a hidden
    caller. A stranger (no trusted network, no principal) who sends ``Origin:`` of one of
    ``data_files.allowed_origins`` (a public site's name: anyone's ``curl`` can send it) gets
    a 404 with ``Access-Control-Allow-Origin: <origin>``, ``Vary: Origin`` and the download
    headers exposed, where a path that does not exist gets Kinto's ``*`` and its own list.

    Consequence: before this commit, a ``PUT``/``PATCH`` there matched no view and got
    Kinto's own 404 (the same as any unknown path); now every method tells the private
    route from a missing one (GET/DELETE/OPTIONS already did, through the same callback).

    Correct: a caller who may not see the route gets exactly what an unknown path gets:
    add the CORS callback only once the caller may see it (or for an allowed preflight)."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{
            "kinto.version_prefix_redirect_enabled": redirect,
            "kinto.cors_origins": "*",
            "kinto.attachment.data_files.allowed_origins": ALLOWED_ORIGIN,
        },
    )
    headers = {"Origin": ALLOWED_ORIGIN}
    for path in ("/v1/data/files", "/v1/data/files/x"):
        ours = _answer(kinto.app, method, path, headers, STRANGER)
        missing = _answer(kinto.app, method, path.replace("files", "filez"), headers, STRANGER)
        assert ours == missing, (path, ours, missing)


@pytest.mark.parametrize("redirect", ["true", "false"])
def test_hidden_caller_without_origin_gets_what_a_missing_path_gets(
    tmp_path_factory, request, redirect
):
    """Attack that held: the catch-all does not shadow Kinto's root redirection (307) nor its
    404 for a hidden caller, with any method, at the root and under /v1, extra segments and
    trailing slashes included."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.version_prefix_redirect_enabled": redirect, "kinto.cors_origins": "*"},
    )
    for method in ("PUT", "PATCH", "POST", "DELETE", "OPTIONS"):
        for prefix in ("", "/v1"):
            for tail in ("", "/", "/x", "/x/", "/x/y"):
                path = prefix + "/data/files" + tail
                ours = _answer(kinto.app, method, path, {}, STRANGER)
                missing = _answer(kinto.app, method, path.replace("files", "filez"), {}, STRANGER)
                assert ours[0] == missing[0] and ours[1:] == missing[1:], (method, path)


def test_visible_405s_are_kintos_json_with_an_exact_allow(tmp_path_factory, request):
    """Attack that held: to a caller who may see it, /data/files answers other methods with
    Kinto's JSON 405 and an ``Allow`` naming exactly what its views serve; GET, HEAD,
    OPTIONS and the item's DELETE are not shadowed."""
    kinto = cached_app("memory", tmp_path_factory, request)
    local = {"REMOTE_ADDR": "127.0.0.1"}
    app = kinto.app
    for path, allow in (
        ("/v1/data/files", {"GET", "HEAD", "POST", "OPTIONS"}),
        ("/v1/data/files/x", {"GET", "HEAD", "DELETE", "OPTIONS"}),
    ):
        refused = app.request(path, method="PUT", environ=dict(local), expect_errors=True)
        assert refused.status_int == 405 and refused.json["errno"] == 115
        assert {m.strip() for m in refused.headers["Allow"].split(",")} == allow
        options = app.request(path, method="OPTIONS", environ=dict(local))
        assert {m.strip() for m in options.headers["Allow"].split(",")} == allow
    app.request("/v1/data/files", method="HEAD", environ=dict(local), status=200)
    app.request("/v1/data/files/x", method="DELETE", environ=dict(local), status=204)
