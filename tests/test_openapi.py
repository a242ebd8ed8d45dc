"""``/v1/__api__``: every route of the table, with every method it answers, in a valid
OpenAPI 2.0 description (``tests/live/test_schemathesis.py`` checks the server against it)."""

import pytest
from openapi_spec_validator import OpenAPIV2SpecValidator

from kinto_attachment import openapi, routes

from .conftest import build_settings, make_app
from .test_routes import CONFIGURATIONS, PLUGINS, build, registered_routes, with_head


#: A caller on a trusted network: ``/data/files`` is described to whom it is visible.
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}


PLUGINS_AND_OURS = f"{PLUGINS} kinto_attachment"


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    return {
        name: build(tmp_path_factory, PLUGINS_AND_OURS, **extra)
        for name, extra in CONFIGURATIONS.items()
    }


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_every_registered_route_has_its_path_and_methods(apps, configuration):
    app = apps[configuration]
    spec = app.get("/v1/__api__", extra_environ=LOCAL).json
    registered = registered_routes(app.app)
    missing = []
    for route in routes.ROUTES:
        if route.name not in registered:
            continue
        described = spec["paths"].get(openapi.path_of(route), {})
        missing += [
            f"{method} {route.pattern} ({route.name})"
            for method in sorted(with_head(route.methods))
            if method.lower() not in described
        ]
    assert missing == [], "describe them in kinto_attachment.openapi.operations.OPERATIONS"


def test_every_route_of_the_table_has_operations():
    """A route added to the table needs its description, registered in this app or not."""
    assert {route.name for route in routes.ROUTES} == set(openapi.OPERATIONS) == set(openapi.TAG)


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_the_description_is_valid_openapi(apps, configuration):
    spec = apps[configuration].get("/v1/__api__", extra_environ=LOCAL).json
    errors = [str(error) for error in OpenAPIV2SpecValidator(spec).iter_errors()]
    assert errors == []


def test_kinto_paths_are_kept_and_ours_fully_described(apps):
    spec = apps["redirecting"].get("/v1/__api__", extra_environ=LOCAL).json
    assert "/buckets/{bucket_id}/collections/{collection_id}/records/{id}" in spec["paths"]
    attachment = spec["paths"][openapi.path_of(routes.ATTACHMENT)]
    post = attachment["post"]
    assert post["consumes"] == ["multipart/form-data"]
    assert {p["name"] for p in post["parameters"]} == {
        "attachment",
        "data",
        "permissions",
        "If-Match",
        "If-None-Match",
    }
    assert {p["name"] for p in attachment["parameters"]} == {"bucket_id", "collection_id", "id"}
    # Errors in Kinto's format, never the catch-all of Cornice's undocumented operations.
    assert {"400", "401", "403", "404", "413"} <= set(post["responses"])
    assert post["responses"]["413"]["schema"] == {"$ref": "#/definitions/Error"}
    assert set(spec["definitions"]["Error"]["required"]) == {"code", "errno", "error"}
    for path in openapi.paths(registered_routes(apps["redirecting"].app)).values():
        for method, operation in path.items():
            if method != "parameters":
                assert "default" not in operation["responses"]


def test_error_statuses_are_those_of_the_refusals():
    refusals = openapi.OPERATIONS[routes.TUS_UPLOAD.name]["PATCH"].refusals
    described = openapi.operation(
        routes.TUS_UPLOAD, "PATCH", openapi.OPERATIONS[routes.TUS_UPLOAD.name]["PATCH"]
    )
    errors = {status for status in described["responses"] if int(status) >= 400}
    assert errors == {str(openapi.REFUSALS[name].status) for name in refusals}
    assert "460" in errors


def test_files_route_only_where_served(apps, tmp_path):
    """Each app describes the routes it registered (Kinto's own description is built once per
    process, ours per app)."""
    settings = build_settings("memory", str(tmp_path), **{"kinto.includes": PLUGINS_AND_OURS})
    without = make_app(settings).get("/v1/__api__", extra_environ=LOCAL).json["paths"]
    served = apps["redirecting"].get("/v1/__api__", extra_environ=LOCAL).json["paths"]
    assert openapi.path_of(routes.SERVED_FILES) in set(served) - set(without)
    assert openapi.path_of(routes.DATA_FILES) in without
