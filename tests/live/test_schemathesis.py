"""Schemathesis on every route of ours, from the description the live server publishes at
``/v1/__api__`` (:mod:`kinto_attachment.openapi`): the shipped ``config/kinto.ini`` served by
waitress, requests generated from each operation's parameters and bodies (valid and not), sent
with Alice's credentials. Every response must be no 5xx, have a documented status, a documented
content type, and a body and headers that match their schemas.

Bounded (a few examples per operation, derandomised): in well under a minute. The path's bucket
and collection are those of an existing collection, so that uploads reach the pipeline rather
than stop at a missing parent; the record, upload, file ids and everything else are generated.
"""

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks
from schemathesis.specs.openapi import checks as openapi_checks

from kinto_attachment import openapi, routes
from kinto_attachment.protocols import tus

from ..support.live import ALICE, REQUEST_TIMEOUT, create_collection, running_server


pytestmark = pytest.mark.live

BUCKET, COLLECTION = "fuzzed", "files"
#: Per operation and mode: bounded, for the whole module to run in well under a minute.
EXAMPLES = 6


def content_type_conformance(ctx, response, case):
    """Schemathesis' check of the ``Content-Type``, on responses that have content: in
    OpenAPI 2.0 ``produces`` is the operation's, but a 204 or a 304 has none (RFC 9110)."""
    if response.status_code in (204, 304):
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
    with running_server(tmp_path_factory.mktemp("schemathesis")) as live:
        create_collection(live, BUCKET, COLLECTION)
        yield live


@pytest.fixture(scope="module")
def ours(server):
    """The published description, restricted to our routes."""
    schema = schemathesis.openapi.from_url(f"{server.url}/__api__", timeout=REQUEST_TIMEOUT)
    return schema.include(path=[openapi.path_of(route) for route in routes.ROUTES])


#: Every operation of ours: the shipped configuration registers every route (``serve_files``).
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
def test_responses_are_as_described(ours, route, method, mode):
    """Schemathesis' cases of one operation, valid (``POSITIVE``) or not, each checked."""
    operation = ours[openapi.path_of(route)][method]
    fixed = {"bucket_id": BUCKET, "collection_id": COLLECTION}
    parameters = {p.name for p in operation.path_parameters}
    strategy = operation.as_strategy(
        mode, path_parameters={k: v for k, v in fixed.items() if k in parameters}
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
            session.auth = ALICE
            case.call_and_validate(session=session, checks=CHECKS, timeout=REQUEST_TIMEOUT)

    check()
