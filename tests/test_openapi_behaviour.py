"""``/v1/__api__`` (:mod:`kinto_attachment.openapi`) against what the routes answer, and
docs/api.rst's errors table against :data:`kinto_attachment.errors.REFUSALS`, from a review
(2026-12-05): the places where the description declared less (or other) than the server
answers, and the checks that held. Memory backend, local files, in-process (webtest;
schemathesis through its WSGI transport), deterministic.
"""

import base64
import io
import json
import re
from pathlib import Path

import jsonschema
import pytest
import schemathesis
from openapi_spec_validator import OpenAPIV2SpecValidator
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi import checks as openapi_checks
from webob import Request

from kinto_attachment import errors, openapi, routes
from kinto_attachment.openapi.operations import OPERATIONS
from kinto_attachment.protocols import tus
from kinto_attachment.web import streams

from .conftest import ALICE, Kinto
from .test_routes import build


PLUGINS = "kinto.plugins.default_bucket kinto.plugins.flush kinto_attachment"
#: A caller on a trusted network: ``/data/files`` is visible (and described) to it.
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
#: A caller on no trusted network: ``/data/files`` is hidden from it.
REMOTE = {"REMOTE_ADDR": "203.0.113.7"}
TUS = {"Tus-Resumable": tus.VERSION}
RECORDS = "/v1/buckets/blog/collections/articles/records"
API_PAGE = Path(__file__).parent.parent / "docs" / "api.rst"

# A tus chunk is bytes, as tests/live/test_schemathesis.py tells schemathesis.
schemathesis.serializer.alias(tus.CHUNK_TYPE, "application/octet-stream")

ATTACHMENT = openapi.path_of(routes.ATTACHMENT)
UPLOADS = openapi.path_of(routes.TUS_UPLOADS)
UPLOAD = openapi.path_of(routes.TUS_UPLOAD)
DATA_FILES = openapi.path_of(routes.DATA_FILES)
DATA_FILE = openapi.path_of(routes.DATA_FILE)
SERVED = openapi.path_of(routes.SERVED_FILES)
FETCH = openapi.path_of(routes.ATTACHMENT_FETCH)


def metadata(filename="a.txt"):
    return "filename " + base64.b64encode(filename.encode()).decode()


@pytest.fixture(scope="module")
def kinto(tmp_path_factory):
    """Every route registered (``serve_files``, ``events.url_secret``), the blog/articles
    collection, and the description as a trusted caller reads it."""
    app = build(tmp_path_factory, PLUGINS)
    kinto = Kinto(app)
    kinto.create_collection()
    return kinto


@pytest.fixture(scope="module")
def spec(kinto):
    return kinto.app.get("/v1/__api__", extra_environ=LOCAL).json


def operation(spec, path, method):
    return spec["paths"][path][method.lower()]


def declared_statuses(spec, path, method):
    return set(operation(spec, path, method)["responses"])


def declared_headers(spec, path, method, status):
    response = operation(spec, path, method)["responses"].get(str(status), {})
    return {name.lower() for name in response.get("headers", {})}


def new_upload(kinto, record, length=10):
    created = kinto.app.post(
        f"{RECORDS}/{record}/attachment/uploads",
        headers={**ALICE, **TUS, "Upload-Length": str(length), "Upload-Metadata": metadata()},
        status=201,
    )
    return "/" + created.headers["Location"].split("://", 1)[1].split("/", 1)[1]


# --------------------------------------------------------------------------------------------
# Statuses answered but not declared.


def test_transfer_coding_501_is_declared_on_the_uploads(kinto, spec):
    """Found by review (2026-12-05).

    ``POST {record}/attachment``, ``POST .../uploads``, ``PATCH .../uploads/{id}``
    and ``POST /data/files`` answer ``501`` (``transfer_coding``, added today) to a
    ``Transfer-Encoding`` other than ``chunked``, but no operation lists ``transfer_coding``
    among its refusals, so none declares a 501. Consequence: schemathesis reports ST103
    "Undocumented status code" (checked here with schemathesis itself), generated clients
    treat the answer as an unknown failure. Correct: the four operations declare 501 with the
    Error schema (``transfer_coding`` in their refusals)."""
    record = "te501"
    upload = new_upload(kinto, record)
    schema = schemathesis.openapi.from_dict(spec)
    schema.app = kinto.app.app
    gzip = {"Transfer-Encoding": "gzip"}
    cases = [
        schema[ATTACHMENT]["POST"].Case(
            path_parameters={"bucket_id": "blog", "collection_id": "articles", "id": record},
            headers={**gzip, "Content-Type": "multipart/form-data; boundary=b"},
            body=b"--b--\r\n",
            media_type="multipart/form-data",
        ),
        schema[UPLOADS]["POST"].Case(
            path_parameters={"bucket_id": "blog", "collection_id": "articles", "id": record},
            headers={**gzip, **TUS, "Upload-Length": "1", "Upload-Metadata": metadata()},
            body=b"x",
            media_type=tus.CHUNK_TYPE,
        ),
        schema[UPLOAD]["PATCH"].Case(
            path_parameters={
                "bucket_id": "blog",
                "collection_id": "articles",
                "id": record,
                "upload_id": upload.rsplit("/", 1)[1],
            },
            headers={**gzip, **TUS, "Upload-Offset": "0"},
            body=b"x",
            media_type=tus.CHUNK_TYPE,
        ),
        schema[DATA_FILES]["POST"].Case(
            query={"id": "te501"}, headers=gzip, body=b"x", media_type="application/octet-stream"
        ),
    ]
    failures = []
    for case in cases:
        response = case.call(
            auth=None, headers=ALICE, environ_overrides=LOCAL, base_url="http://localhost/v1"
        )
        assert response.status_code == 501, (case.operation.label, response.text)
        try:
            case.validate_response(response, checks=[openapi_checks.status_code_conformance])
        except FailureGroup as group:
            failures += [f"{case.operation.label}: {type(e).__name__}" for e in group.exceptions]
    assert failures == []


def _chunked(app, path, method, headers, environ=None):
    """A chunked body that no reader can end (no ``wsgi.input_terminated``), as waitress
    hands none but as a WSGI server without it would: the app's 411 (``length_required``)."""
    request = Request.blank(
        path,
        method=method,
        headers={**headers, "Transfer-Encoding": "chunked"},
        body=b"1\r\nx\r\n0\r\n\r\n",
        environ=environ or {},
    )
    del request.environ["CONTENT_LENGTH"]
    return request.get_response(app)


@pytest.mark.parametrize("target", ["attachment POST", "uploads POST", "upload PATCH"])
def test_length_required_411_is_declared_on_record_uploads(kinto, spec, target):
    """Found by review (2026-12-05).

    a chunked body the WSGI server cannot end is refused ``411`` (docs/api.rst:
    "411 112 a chunked body ... that the WSGI server cannot end") on every streamed upload,
    through ``streams.request_body``; ``/data/files``' ``POST`` declares it, but ``POST
    {record}/attachment``, ``POST .../uploads`` and ``PATCH .../uploads/{id}`` do not list
    ``length_required``. Consequence: ST103 on these operations, and clients generated from the
    description do not know to resend with ``Content-Length``. Correct: the three operations
    declare 411 (``length_required`` in their refusals)."""
    record = "len411" + target.split()[0]
    if target == "attachment POST":
        path, method, described = f"{RECORDS}/{record}/attachment", "POST", (ATTACHMENT, "post")
        headers = {**ALICE, "Content-Type": "multipart/form-data; boundary=b"}
    elif target == "uploads POST":
        path, method, described = (
            f"{RECORDS}/{record}/attachment/uploads",
            "POST",
            (UPLOADS, "post"),
        )
        headers = {
            **ALICE,
            **TUS,
            "Upload-Length": "1",
            "Upload-Metadata": metadata(),
            "Content-Type": tus.CHUNK_TYPE,
        }
    else:
        path, method, described = new_upload(kinto, record), "PATCH", (UPLOAD, "patch")
        headers = {**ALICE, **TUS, "Upload-Offset": "0", "Content-Type": tus.CHUNK_TYPE}
    response = _chunked(kinto.app.app, path, method, headers)
    assert response.status_code == 411, response.text
    assert "411" in declared_statuses(spec, *described)


@pytest.mark.parametrize(
    ("name", "method", "path", "headers"),
    [
        pytest.param(name, method, path, headers, id=name)
        for name, method, path, headers in (
            ("uploads OPTIONS, bad If-Match", "OPTIONS", "uploads", {"If-Match": "garbage"}),
            ("upload OPTIONS, bad If-Match", "OPTIONS", "upload", {"If-Match": "garbage"}),
            ("uploads OPTIONS, NUL in record id", "OPTIONS", "nul", {}),
            ("upload DELETE, bad If-Match", "DELETE", "upload", {"If-Match": "garbage"}),
        )
    ],
)
def test_tus_discovery_and_termination_answers_are_declared(
    kinto, spec, name, method, path, headers
):
    """Found by review (2026-12-05).

    ``UploadFactory`` (``AttachmentFactory.__init__``) runs
    ``records.require_readable_preconditions`` for every method but GET/HEAD, and
    ``_require_storable_ids`` always: tus discovery (``OPTIONS``, public, declared ``204``
    only) answers ``400`` to a malformed ``If-Match`` and ``404`` to a record id with a NUL,
    and ``DELETE .../uploads/{id}`` answers ``400`` (declares 204, 401, 403, 404, 405, 412,
    423, not 400). Consequence: ST103 on these operations; a tus client's discovery request
    carrying a stale/odd ``If-Match`` fails. Correct: discovery reads nothing and should not
    check write preconditions (or declare 400/404); the DELETE declares 400
    (``invalid_parameter``)."""
    record = "disc" + method.lower()
    if path == "uploads":
        url, described = f"{RECORDS}/{record}/attachment/uploads", UPLOADS
    elif path == "nul":
        url, described = f"{RECORDS}/a%00b/attachment/uploads", UPLOADS
    else:
        url, described = new_upload(kinto, record + str(len(headers))), UPLOAD
    response = kinto.app.request(
        url, method=method, headers={**ALICE, **TUS, **headers}, expect_errors=True
    )
    # Discovery reads nothing and checks no write's preconditions: a 204.
    expected = (204,) if method == "OPTIONS" and headers else (400, 404)
    assert response.status_int in expected, response.text
    assert str(response.status_int) in declared_statuses(spec, described, method), (
        f"{name}: {response.status_int} answered, undeclared"
    )


# --------------------------------------------------------------------------------------------
# Request headers accepted (and refused) but not described.

RECORD_WRITES = [
    (ATTACHMENT, "POST"),
    (ATTACHMENT, "DELETE"),
    (UPLOADS, "POST"),
    (UPLOAD, "PATCH"),
    (UPLOAD, "DELETE"),
]


def short(path, method):
    return f"{method} {path.rsplit('{id}', 1)[-1] or path}"


@pytest.mark.parametrize(("path", "method"), RECORD_WRITES, ids=[short(*o) for o in RECORD_WRITES])
def test_record_write_preconditions_are_described(kinto, spec, path, method):
    """Found by review (2026-12-05).

    the writes of a record's attachment honour ``If-Match``/``If-None-Match``
    (a 412 when they do not match the record, as Kinto's writes; since today a 400 when they
    are neither ``*`` nor a quoted version, ``records.require_readable_preconditions``), but
    their operations describe neither header, where Kinto's own ``PUT`` of the record
    describes both with the pattern ``^"([0-9]+?)"$|\\*``. Consequence: generated clients
    cannot send the optimistic-concurrency headers, and fuzzers never exercise the 400/412
    paths. Correct: both headers as parameters of these operations, with Kinto's pattern."""
    record = "pre" + method.lower() + str(len(path))
    kinto.upload(f"{RECORDS}/{record}")
    url = {
        ATTACHMENT: f"{RECORDS}/{record}/attachment",
        UPLOADS: f"{RECORDS}/{record}/attachment/uploads",
    }.get(path) or new_upload(kinto, record)
    refused = kinto.app.request(
        url, method=method, headers={**ALICE, **TUS, "If-Match": "garbage"}, expect_errors=True
    )
    assert refused.status_int == 400 and "If-Match" in refused.json["message"]

    described = {
        p["name"]: p for p in operation(spec, path, method)["parameters"] if p["in"] == "header"
    }
    missing = [name for name in ("If-Match", "If-None-Match") if name not in described]
    assert missing == [], f"{method} {path} does not describe {missing}"
    for name in ("If-Match", "If-None-Match"):
        pattern = re.compile(described[name]["pattern"])
        assert pattern.search('"1700000000000"') and pattern.search("*")
        assert not pattern.fullmatch("garbage")


DOWNLOADS = [
    (path, method) for path in (ATTACHMENT, DATA_FILE, SERVED, FETCH) for method in ("GET", "HEAD")
]


@pytest.mark.parametrize(("path", "method"), DOWNLOADS, ids=[short(*o) for o in DOWNLOADS])
def test_download_preconditions_are_described(kinto, spec, path, method):
    """Found by review (2026-12-05).

    every download answers ``412`` (``download_precondition``, declared) to an
    ``If-Match`` or ``If-Unmodified-Since`` the file does not match (docs/api.rst; CORS
    allows both, ``routes._DOWNLOAD_REQUEST_HEADERS``), but
    ``operations.DOWNLOAD_HEADERS`` describes only ``Range``, ``If-Range``, ``If-None-Match``
    and ``If-Modified-Since``. Consequence: a declared 412 no described parameter can cause;
    clients cannot make a download conditional on the version they hold. Correct: add
    ``If-Match`` and ``If-Unmodified-Since`` to ``DOWNLOAD_HEADERS``."""
    kinto.upload(f"{RECORDS}/dlpre")
    url = f"{RECORDS}/dlpre/attachment"
    assert kinto.app.get(url, headers={**ALICE, "If-Match": '"other"'}, status=412)
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert kinto.app.get(url, headers={**ALICE, "If-Unmodified-Since": old}, status=412)
    described = {p["name"] for p in operation(spec, path, method)["parameters"]}
    assert {"If-Match", "If-Unmodified-Since"} <= described, sorted(described)


def test_data_files_query_parameters_describe_what_the_server_takes(kinto, spec):
    """Found by review (2026-12-05).

    ``POST /data/files``' ``id`` is described as any string and ``ttl`` as an
    integer >= 1 with no maximum, but the server refuses (400) an id other than letters,
    digits, ``.``, ``_``, ``-`` up to 128 (``data_file_entries.valid_id``) and a ttl over
    2**63-1 (``posted.ttl``). Consequence: values valid by the description are refused, which
    schemathesis' ``positive_data_acceptance`` reports and generated clients cannot foresee.
    Correct: ``id`` with ``pattern: ^[A-Za-z0-9._-]+$`` and ``maxLength: 128``; ``ttl`` with
    ``maximum: 9223372036854775807``."""
    post = operation(spec, DATA_FILES, "POST")
    parameters = {p["name"]: p for p in post["parameters"] if p["in"] == "query"}
    keywords = ("type", "minimum", "maximum", "pattern", "maxLength", "minLength")
    refused = []
    for name, value, as_sent in (("id", "é", "%C3%A9"), ("ttl", 2**63, str(2**63))):
        schema = {k: v for k, v in parameters[name].items() if k in keywords}
        answer = kinto.app.post(
            f"/v1/data/files?{name}={as_sent}", b"x", extra_environ=LOCAL, expect_errors=True
        )
        assert answer.status_int == 400, answer.text
        if jsonschema.Draft4Validator(schema).is_valid(value):
            refused.append(f"{name}={value!r}: valid by {schema}, refused 400")
    assert refused == []


# --------------------------------------------------------------------------------------------
# Response headers missing from the declared responses.

#: The response headers an API client reads (caching and CORS ones aside).
API_HEADERS = {
    "etag",
    "last-modified",
    "location",
    "content-range",
    "content-disposition",
    "allow",
    "retry-after",
    "upload-offset",
    "upload-length",
    "upload-expires",
    "upload-metadata",
    "upload-defer-length",
    "upload-concat",
    "tus-resumable",
    "tus-version",
    "tus-extension",
    "tus-max-size",
    "tus-checksum-algorithm",
}


@pytest.fixture(scope="module")
def observed(kinto):
    """``{scenario: (path, method, response)}`` of real requests, successes and refusals."""
    app, seen = kinto.app, {}
    url = f"{RECORDS}/seen"
    seen["attachment POST 201"] = (ATTACHMENT, "POST", kinto.upload(url))
    seen["attachment POST 200"] = (ATTACHMENT, "POST", kinto.upload(url))
    seen["attachment GET 206"] = (
        ATTACHMENT,
        "GET",
        app.get(url + "/attachment", headers={**ALICE, "Range": "bytes=0-1"}, status=206),
    )
    seen["attachment GET 416"] = (
        ATTACHMENT,
        "GET",
        app.get(url + "/attachment", headers={**ALICE, "Range": "bytes=90-99"}, status=416),
    )
    seen["attachment DELETE 204"] = (
        ATTACHMENT,
        "DELETE",
        app.delete(url + "/attachment", headers=ALICE, status=204),
    )
    seen["uploads OPTIONS 204"] = (
        UPLOADS,
        "OPTIONS",
        app.options(url + "/attachment/uploads", status=204),
    )
    upload = new_upload(kinto, "seen")
    seen["upload HEAD 200"] = (UPLOAD, "HEAD", app.head(upload, headers={**ALICE, **TUS}))
    seen["upload HEAD 412"] = (
        UPLOAD,
        "HEAD",
        app.head(upload, headers={**ALICE, "Tus-Resumable": "0.2.2"}, status=412),
    )
    seen["upload PATCH 409"] = (
        UPLOAD,
        "PATCH",
        app.patch(
            upload,
            b"x",
            headers={**ALICE, **TUS, "Upload-Offset": "5", "Content-Type": tus.CHUNK_TYPE},
            status=409,
        ),
    )
    seen["upload DELETE 404"] = (
        UPLOAD,
        "DELETE",
        app.delete(url + "/attachment/uploads/unknown", headers={**ALICE, **TUS}, status=404),
    )
    seen["data files POST 200"] = (
        DATA_FILES,
        "POST",
        app.post("/v1/data/files?id=seen", b"x", extra_environ=LOCAL),
    )
    return seen


SUCCESSES = [
    "attachment POST 201",
    "attachment POST 200",
    "attachment GET 206",
    "attachment DELETE 204",
    "uploads OPTIONS 204",
    "upload HEAD 200",
]


@pytest.mark.parametrize("scenario", SUCCESSES)
def test_success_responses_declare_the_headers_they_send(spec, observed, scenario):
    """Found by review (2026-12-05).

    responses of success send API headers their declared response omits:
    ``POST {record}/attachment`` 200 sends ``Location``, ``ETag``, ``Last-Modified`` (none
    declared; docs/api.rst promises them) and 201 ``ETag``/``Last-Modified``; the
    ``DELETE``'s 204 ``ETag``/``Last-Modified``; a 206 ``ETag``, ``Last-Modified``,
    ``Content-Disposition``; tus discovery ``Tus-Resumable``, ``Tus-Extension``,
    ``Tus-Checksum-Algorithm`` (only ``Tus-Version``); tus ``HEAD`` ``Upload-Metadata``.
    Consequence: generated clients expose no accessor for the record's new version (needed
    for the next ``If-Match``) nor for the tus capabilities. Correct: declare them in the
    ``Reply.headers`` of ``operations.OPERATIONS`` (and ``DOWNLOADED``)."""
    path, method, response = observed[scenario]
    sent = {name.lower() for name in response.headers} & API_HEADERS
    undeclared = sent - declared_headers(spec, path, method, response.status_int)
    assert undeclared == set(), f"{scenario}: sent but undeclared {sorted(undeclared)}"


def _static_header_gaps(spec):
    """``(operation, status, header)`` of every refusal's header that its operation's response
    does not declare; ``Tus-Resumable`` on every response of a tus operation."""
    gaps = []
    for route in routes.ROUTES:
        path = openapi.path_of(route)
        for method, described in OPERATIONS[route.name].items():
            expected = {}
            for name in described.refusals:
                refusal = errors.REFUSALS[name]
                names = {header.lower() for header in refusal.headers}
                expected.setdefault(refusal.status, set()).update(names)
            if route in (routes.TUS_UPLOADS, routes.TUS_UPLOAD):
                for status in operation(spec, path, method)["responses"]:
                    expected.setdefault(int(status), set()).add("tus-resumable")
            for status, names in sorted(expected.items()):
                for name in sorted(names - declared_headers(spec, path, method, status)):
                    gaps.append(f"{method} {path} {status}: {name}")
    return gaps


@pytest.mark.parametrize(
    "scenario", ["attachment GET 416", "upload HEAD 412", "upload PATCH 409", "upload DELETE 404"]
)
def test_error_responses_declare_the_headers_their_refusals_send(spec, observed, scenario):
    """Found by review (2026-12-05).

    ``openapi._errors`` builds each error response from its refusals' messages
    only, dropping ``Refusal.headers``: a 416 sends ``Content-Range``, a 409 ``Upload-Offset``,
    a tus 412 ``Tus-Version``, a 503 ``Retry-After``, a 429 ``Retry-After``, a 405 ``Allow``
    and every tus answer ``Tus-Resumable``, none declared (the whole static list is in the
    assertion message). Consequence: clients generated from the description cannot read
    where to resume (``Upload-Offset``), when to retry (``Retry-After``) or the content's size
    (``Content-Range``). Correct: ``_errors`` declares the union of its refusals' header
    names per status, plus ``Tus-Resumable`` on the tus operations' responses."""
    path, method, response = observed[scenario]
    sent = {name.lower() for name in response.headers} & API_HEADERS
    undeclared = sent - declared_headers(spec, path, method, response.status_int)
    gaps = _static_header_gaps(spec)
    assert undeclared == set(), f"{scenario}: undeclared {sorted(undeclared)}; all gaps: {gaps}"


# --------------------------------------------------------------------------------------------
# Methods not described; /data/files visibility and security.


@pytest.mark.parametrize(
    "target", ["/v1/data/files", "/v1/data/files/{id}", "/v1/attachment-fetch/{key}"]
)
def test_undescribed_methods_answer_405_with_allow(kinto, target):
    """Found by review (2026-12-05).

    a method a route does not serve is a ``405`` with ``Allow`` on the
    attachment, tus and served-file routes (``errors.not_allowed``, added that day), but a
    ``404`` on ``/data/files``, ``/data/files/{id}`` (to a caller who sees them, on a file
    that exists) and ``/attachment-fetch/{key}``: Pyramid's answer when no view takes the
    method. Consequence: schemathesis' ``unsupported_method`` check fails (it expects 405
    for methods the description does not list, and an ``Allow``); a client is told the file
    does not exist. Correct: a catch-all 405 view with ``Allow`` on these routes (after the
    visibility check on ``/data/files``, hidden callers keeping their 404)."""
    kinto.app.post("/v1/data/files?id=exists", b"x", extra_environ=LOCAL)
    key = "file.txt"
    url = target.replace("{id}", "exists").replace("{key}", key)
    response = kinto.app.put(url, b"x", extra_environ=LOCAL, expect_errors=True)
    assert response.status_int == 405 and response.headers.get("Allow"), (
        f"PUT {url}: {response.status_int} {response.text}"
    )


# --------------------------------------------------------------------------------------------
# docs/api.rst's errors table against the refusals.


def test_404_bodies_are_those_the_errors_table_documents(kinto):
    """Found by review (2026-12-05).

    docs/api.rst said every 404 (errno 111) has Kinto's record 404 body (``details`` and no
    ``message``); an unknown tus upload's and a hidden ``/data/files``'s have Kinto's
    unknown-URL body (a ``message``, no ``details``): the page names both now, and this
    holds each to its shape."""
    record_like = {
        "missing record": kinto.app.delete(
            f"{RECORDS}/r404/attachment", headers=ALICE, status=404
        ).json,
    }
    url_like = {
        "unknown tus upload": kinto.app.delete(
            f"{RECORDS}/r404/attachment/uploads/unknown", headers={**ALICE, **TUS}, status=404
        ).json,
        "hidden /data/files": kinto.app.get(
            "/v1/data/files", extra_environ=REMOTE, status=404
        ).json,
        "concat_unknown": errors.refuse("concat_unknown", url="u").json,
    }
    for name, body in record_like.items():
        assert "message" not in body and set(body["details"]) == {"id", "resource_name"}, name
    for name, body in url_like.items():
        assert "message" in body and "details" not in body, (name, body)
    text = " ".join(API_PAGE.read_text(encoding="utf-8").split())
    assert "the ``404`` of an unknown tus upload, and that of a hidden ``/data/files``" in text


def _errors_table_row(status, errno):
    section = API_PAGE.read_text(encoding="utf-8").split("\nErrors\n------\n", 1)[1]
    lines, row, inside = section.splitlines(), [], False
    for line in lines:
        match = re.match(r"^(\d{3})\s+(\d{3})\s", line)
        if match:
            inside = (int(match[1]), int(match[2])) == (status, errno)
        elif not line.startswith(" ") or line.startswith("="):
            inside = False
        if inside:
            row.append(line)
    return " ".join(row)


def test_413_of_a_chunked_json_body_is_documented_and_worded_for_it(kinto):
    """Found by review (2026-12-05).

    since today a chunked JSON body over 8 MiB to one of Kinto's writes is refused
    ``413`` (``streams.receive_whole`` raising ``too_large``), with the message "File size
    exceeds the limit (8388608 bytes)." although no file is involved, and docs/api.rst's
    413/113 row lists files, form parts and tus chunks only (tests/test_errors.py checks the
    pair, not the cases). Consequence: a client that PUTs a large record is told of a file
    size limit, and the errors table does not explain the refusal. Correct: a refusal of its
    own (413, 113, "The body exceeds the 8388608 bytes ..."), and the case in the 413 row."""
    body = json.dumps({"data": {"big": "x" * (streams.CHUNKED_WHOLE_MAX + 10)}}).encode()
    request = Request.blank(
        f"{RECORDS}/bigjson",
        method="PUT",
        headers={**ALICE, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ={"wsgi.input_terminated": True, "wsgi.input": io.BytesIO(body)},
    )
    request.environ.pop("CONTENT_LENGTH", None)
    response = request.get_response(kinto.app.app)
    assert response.status_code == 413
    problems = []
    if "File size" in response.json["message"]:
        problems.append(f"message about a file: {response.json['message']!r}")
    row = _errors_table_row(413, 113)
    assert "max_size_bytes" in row, row
    if "JSON" not in row and "chunked" not in row:
        problems.append("docs/api.rst's 413 row does not mention chunked JSON bodies")
    assert problems == []


# --------------------------------------------------------------------------------------------
# Checks that held.


@pytest.fixture(scope="module")
def through_principals(tmp_path_factory):
    """``/data/files`` visible to authenticated users, from any network."""
    return build(
        tmp_path_factory,
        PLUGINS,
        **{"kinto.attachment.data_files.principals": "system.Authenticated"},
    )


def test_data_files_described_with_the_authentication_they_need(through_principals):
    """Found by review (2026-12-05).

    With ``data_files.principals``, ``/data/files`` is visible (and described) to those
    principals, yet its operations said ``security: []`` (no credentials): a client
    following the description sent none and got a 404. They say both alternatives now: none
    (a trusted network) or Kinto's credentials."""
    app = through_principals
    spec = app.get("/v1/__api__", extra_environ=REMOTE, headers=ALICE).json
    assert DATA_FILES in spec["paths"]
    assert app.get("/v1/data/files", extra_environ=REMOTE, expect_errors=True).status_int == 404
    assert app.get("/v1/data/files", extra_environ=REMOTE, headers=ALICE).status_int == 200
    for path in (DATA_FILES, DATA_FILE):
        security = operation(spec, path, "GET")["security"]
        assert {} in security and any(requirement for requirement in security), security
    assert [str(error) for error in OpenAPIV2SpecValidator(spec).iter_errors()] == []


def test_data_files_hidden_from_the_description_of_unseeing_callers(kinto):
    """HELD (passes): a caller who may not see ``/data/files`` finds neither its paths, nor
    its tag, nor any text naming it in ``/v1/__api__``; a trusted caller finds both paths."""
    hidden = kinto.app.get("/v1/__api__", extra_environ=REMOTE).json
    assert DATA_FILES not in hidden["paths"] and DATA_FILE not in hidden["paths"]
    assert not re.search(r"data/files|Data files|SlimFaas", json.dumps(hidden))
    shown = kinto.app.get("/v1/__api__", extra_environ=LOCAL).json
    assert {DATA_FILES, DATA_FILE} <= set(shown["paths"])


def test_served_files_405_allows_exactly_the_described_methods(kinto, spec):
    """HELD (passes): with ``serve_files``, another method on ``/v1/attachments/{key}`` is a
    405 whose ``Allow`` lists exactly the methods described for the path."""
    response = kinto.app.delete("/v1/attachments/some.txt", status=405)
    allowed = {m.strip().lower() for m in response.headers["Allow"].split(",")}
    assert allowed == set(spec["paths"][SERVED]) - {"parameters"}
    assert response.json["errno"] == 115


def test_data_files_write_preconditions_412_declared_and_answered(kinto, spec):
    """HELD (passes): ``POST``/``DELETE /data/files`` answer 412 to a failed ``If-None-Match``
    / ``If-Match``, and both operations describe the three precondition headers and 412."""
    kinto.app.post("/v1/data/files?id=held412", b"x", extra_environ=LOCAL)
    kinto.app.post(
        "/v1/data/files?id=held412",
        b"y",
        headers={"If-None-Match": "*"},
        extra_environ=LOCAL,
        status=412,
    )
    kinto.app.delete(
        "/v1/data/files/held412", headers={"If-Match": '"nope"'}, extra_environ=LOCAL, status=412
    )
    for path, method in ((DATA_FILES, "POST"), (DATA_FILE, "DELETE")):
        names = {p["name"] for p in operation(spec, path, method)["parameters"]}
        assert {"If-Match", "If-None-Match", "If-Unmodified-Since"} <= names
        assert "412" in declared_statuses(spec, path, method)
