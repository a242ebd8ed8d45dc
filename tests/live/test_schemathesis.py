"""Schemathesis on every route of ours, from the description the live server publishes at
``/v1/__api__`` (:mod:`kinto_attachment.openapi`): the shipped ``config/kinto.ini`` served by
waitress, requests generated from each operation's parameters and bodies (valid and not), sent
with the credentials of a user of the test's own. Every response must be no 5xx, have a
documented status, a documented content type, and a body and headers that match their schemas.

Bounded (a few examples per operation, derandomised): in well under a minute. The path's bucket
and collection are those of an existing collection, so that uploads reach the pipeline rather
than stop at a missing parent; the other ids are either generated or those of what exists (an
attachment, a tus upload, a data file), so that downloads and appends answer more than 404s.
"""

import base64
import functools
import uuid

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks
from schemathesis.specs.openapi import checks as openapi_checks

from kinto_attachment import openapi, routes
from kinto_attachment.protocols import tus

from ..support.live import ALICE, REQUEST_TIMEOUT, running_server


pytestmark = pytest.mark.live

BUCKET, COLLECTION = "fuzzed", "files"
PARENT = {"bucket_id": BUCKET, "collection_id": COLLECTION}
#: Per operation and mode: bounded, for the whole module to run in well under a minute.
EXAMPLES = 6


def content_type_conformance(ctx, response, case):
    """Schemathesis' check of the ``Content-Type``, on responses described with content: in
    OpenAPI 2.0 ``produces`` is the operation's, but a 204, a 304 or tus' ``HEAD`` have none."""
    described = case.operation.responses.find_by_status_code(response.status_code)
    no_content = described is not None and "schema" not in described.definition
    if no_content and "Content-Type" not in response.headers:
        return None
    return openapi_checks.content_type_conformance(ctx, response, case)


# A tus chunk is bytes, sent as ``application/octet-stream`` is (which schemathesis knows).
schemathesis.serializer.alias(tus.CHUNK_TYPE, "application/octet-stream")

#: What the server must hold to: no 5xx, and responses as described.
CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        # The signed URLs of events, so that their fetch route is registered too.
        env.setenv("KINTO_ATTACHMENT_EVENTS_URL_SECRET", "a-secret-of-the-tests")
        with running_server(tmp_path_factory.mktemp("schemathesis")) as live:
            yield from _writable_by_everyone(live)


def _writable_by_everyone(live):
    """``live``, once every user may write in the test collection."""
    # Every user may write there: each test is a user of its own.
    for path in (f"/buckets/{BUCKET}", f"/buckets/{BUCKET}/collections/{COLLECTION}"):
        response = requests.put(
            live.url + path,
            json={"permissions": {"write": ["system.Authenticated"]}},
            auth=ALICE,
            timeout=REQUEST_TIMEOUT,
        )
        assert response.status_code in (200, 201), response.text
    yield live


@pytest.fixture
def existing(server):
    """A user of its own (a quota of tus uploads each), and path parameters naming what
    exists, made again for each test (a test may delete it): an attachment, the file it stored,
    an unfinished tus upload, a data file."""
    auth = (f"fuzzer-{uuid.uuid4().hex}", "secret")
    record = f"{server.url}/buckets/{BUCKET}/collections/{COLLECTION}/records"
    post = functools.partial(requests.post, auth=auth, timeout=REQUEST_TIMEOUT)
    uploaded = post(f"{record}/r1/attachment", files={"attachment": ("a.txt", b"0123456789")})
    assert uploaded.status_code in (200, 201), uploaded.text
    created = post(
        f"{record}/r2/attachment/uploads",
        headers={
            "Tus-Resumable": tus.VERSION,
            "Upload-Length": "10",
            "Upload-Metadata": "filename " + base64.b64encode(b"b.txt").decode(),
        },
    )
    assert created.status_code == 201, created.text
    stored = post(f"{server.url}/data/files?id=known", data=b"0123456789")
    assert stored.status_code == 200, stored.text
    key = uploaded.json()["location"].split("/attachments/", 1)[1]
    return auth, {
        routes.ATTACHMENT.name: {"id": "r1"},
        routes.TUS_UPLOADS.name: {"id": "r1"},
        routes.TUS_UPLOAD.name: {
            "id": "r2",
            "upload_id": created.headers["Location"].rsplit("/", 1)[1],
        },
        routes.DATA_FILES.name: {},
        routes.DATA_FILE.name: {"id": "known"},
        routes.SERVED_FILES.name: {"key": key},
        routes.ATTACHMENT_FETCH.name: {"key": key},
    }


@pytest.fixture(scope="module")
def ours(server):
    """The published description, restricted to our routes."""
    schema = schemathesis.openapi.from_url(f"{server.url}/__api__", timeout=REQUEST_TIMEOUT)
    return schema.include(path=[openapi.path_of(route) for route in routes.ROUTES])


#: Every operation of ours: the shipped configuration registers every route (``serve_files``;
#: the fetch route of events with ``events.url_secret``).
OPERATIONS = [
    (route, method) for route in routes.ROUTES for method in openapi.OPERATIONS[route.name]
]


def negatable(parameter):
    """Whether a request can break ``parameter``'s schema: leave out a required one, give
    another type or value (any string is a valid string)."""
    return (
        parameter.get("required")
        or parameter.get("type", "string") != "string"
        or ("enum" in parameter)
    )


#: ``(route, method, mode)``: valid requests on every operation, invalid ones where they can be.
CASES = [
    (route, method, mode)
    for route, method in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode == GenerationMode.POSITIVE
    or any(negatable(p) for p in openapi.OPERATIONS[route.name][method].parameters)
]


@pytest.mark.parametrize(
    ("route", "method", "mode"),
    CASES,
    ids=[f"{m} {r.pattern} {mode.value}" for r, m, mode in CASES],
)
def test_responses_are_as_described(ours, existing, route, method, mode):
    """Schemathesis' cases of one operation, valid (``POSITIVE``) or not, each checked: on
    what exists, or on generated ids."""
    auth, named = existing
    operation = ours[openapi.path_of(route)][method]
    parameters = {p.name for p in operation.path_parameters}
    fixed = {k: v for k, v in PARENT.items() if k in parameters}
    strategy = st.one_of(
        operation.as_strategy(mode, path_parameters={**fixed, **named[route.name]}),
        operation.as_strategy(mode, path_parameters=fixed),
    )

    @given(strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        with requests.Session() as session:
            session.auth = auth
            case.call_and_validate(session=session, checks=CHECKS, timeout=REQUEST_TIMEOUT)

    check()
