"""The route table (:mod:`kinto_attachment.routes`) against what a built app registers, both
ways, and the traits that metrics and listeners take from it."""

import dataclasses

import pytest
from kinto.plugins import prometheus
from pyramid.interfaces import IRoutesMapper

from kinto_attachment import routes

from .conftest import ALICE, Kinto, build_settings, make_app
from .test_metrics import added, scrape


PLUGINS = "kinto.plugins.default_bucket kinto.plugins.flush"
#: Every route and view of ours is registered in one of these: ``/data/files`` at the server
#: root is either views on Kinto's redirection or routes of its own.
CONFIGURATIONS = {
    "redirecting": {"kinto.version_prefix_redirect_enabled": "true"},
    "root routes": {"kinto.version_prefix_redirect_enabled": "false"},
}
RECORD = "/v1/buckets/blog/collections/articles/records/r1"


def build(tmp_path_factory, includes, **extra):
    settings = build_settings(
        "memory",
        str(tmp_path_factory.mktemp("attachments")),
        **{
            "kinto.includes": includes,
            "kinto.attachment.serve_files": "true",
            # Registers the fetch route of events' signed URLs.
            "kinto.attachment.events.url_secret": "a-secret-for-the-routes",
            **extra,
        },
    )
    return make_app(settings)


def registered_routes(app):
    return {route.name: route for route in app.registry.getUtility(IRoutesMapper).get_routes()}


def views_of_ours(app):
    """``(route name, path predicate, methods)`` of every view the plugin added."""
    views = []
    for item in app.registry.introspector.get_category("views"):
        view = item["introspectable"]
        if not getattr(view["callable"], "__module__", "").startswith("kinto_attachment."):
            continue
        methods = view["request_methods"]
        if methods is None:  # The 405 of the methods a route does not serve.
            continue
        methods = {methods} if isinstance(methods, str) else set(methods)
        views.append((view["route_name"], view["path_info"], methods))
    return views


def with_head(methods):
    """Pyramid answers ``HEAD`` with the view of ``GET``."""
    return set(methods) | ({"HEAD"} if "GET" in methods else set())


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    """``{configuration: (app with the plugin, routes the plugin added)}``."""
    built = {}
    for name, extra in CONFIGURATIONS.items():
        without = registered_routes(build(tmp_path_factory, PLUGINS, **extra).app)
        app = build(tmp_path_factory, f"{PLUGINS} kinto_attachment", **extra).app
        ours = {n: r for n, r in registered_routes(app).items() if n not in without}
        built[name] = (app, ours)
    return built


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_every_registered_route_has_its_entry(apps, configuration):
    app, ours = apps[configuration]
    assert set(ours) - set(routes.BY_NAME) == set()
    prefix = f"/{app.registry.route_prefix}"
    for name, registered in ours.items():
        entry = routes.BY_NAME[name]
        at_root = name == entry.root_name
        expected = entry.pattern if at_root else prefix + entry.pattern
        assert "/" + registered.pattern.lstrip("/") == expected  # Pyramid drops the first /.


def test_every_entry_has_its_registered_route(apps):
    registered = {name for _, ours in apps.values() for name in ours}
    assert set(routes.BY_NAME) - registered == set()


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_the_views_of_a_route_answer_its_methods(apps, configuration):
    app, ours = apps[configuration]
    answered = {name: set() for name in ours}
    for route_name, _, methods in views_of_ours(app):
        if route_name in answered:
            answered[route_name] |= methods
    for name, methods in answered.items():
        assert with_head(methods) == with_head(routes.BY_NAME[name].methods), name


def test_every_view_on_a_route_of_kinto_is_shared_by_an_entry(apps):
    shared = {
        (share.route, share.path): route for route in routes.ROUTES for share in route.shared
    }
    found = set()
    for app, _ in apps.values():
        for route_name, path, methods in views_of_ours(app):
            if route_name in routes.BY_NAME:
                continue
            assert (route_name, path) in shared, (route_name, path)
            # POST too: it carries X-HTTP-Method-Override, which the route's factory turns
            # into the method it names (tus-js-client's ``overridePatchMethod``).
            assert methods <= {*shared[route_name, path].methods, "POST"}
            found.add((route_name, path))
    assert found == set(shared)


# Traits: metrics and listeners read them from the table.


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    prometheus.reset_registry()
    includes = f"{PLUGINS} kinto.plugins.prometheus kinto_attachment"
    kinto = Kinto(build(tmp_path_factory, includes))
    kinto.create_collection()
    yield kinto
    prometheus.reset_registry()


def relabelled(monkeypatch, route, label):
    monkeypatch.setitem(routes.BY_NAME, route.name, dataclasses.replace(route, transfer=label))


def test_the_transfer_label_is_the_tables(measured, monkeypatch):
    relabelled(monkeypatch, routes.ATTACHMENT, "probe")
    before = scrape(measured.app)
    upload = measured.upload(RECORD, b"x" * 10)
    measured.app.get(RECORD + "/attachment", headers=ALICE)
    after = scrape(measured.app)
    uploaded = {"route": "probe", "status": str(upload.status_code)}
    downloaded = {"route": "probe", "status": "200"}
    assert added(before, after, "kinto_attachment_upload_seconds_count", **uploaded) == 1
    assert added(before, after, "kinto_attachment_download_seconds_count", **downloaded) == 1


def test_a_shared_route_is_labelled_as_its_entry(measured, monkeypatch):
    relabelled(monkeypatch, routes.ATTACHMENT, "probe")
    before = scrape(measured.app)
    upload = measured.upload("/v1/buckets/default/collections/notes/records/r1", b"x" * 10)
    after = scrape(measured.app)
    labels = {"route": "probe", "status": str(upload.status_code)}
    assert added(before, after, "kinto_attachment_upload_seconds_count", **labels) == 1


def in_a_batch(kinto, method, path):
    spec = {"method": method, "path": path.removeprefix("/v1")}
    response = kinto.app.post_json("/v1/batch", {"requests": [spec]}, headers=ALICE)
    return response.json["responses"][0]["body"].get("message", "")


@pytest.mark.parametrize("route", [r for r in routes.ROUTES if r.streamed], ids=lambda r: r.name)
def test_a_streamed_route_is_refused_in_a_batch(measured, route):
    path = "/v1" + route.pattern.format(
        bucket_id="blog", collection_id="articles", id="r1", upload_id="0123"
    )
    method = next(m for m in route.methods if m not in ("HEAD", "OPTIONS"))  # With a body.
    assert "cannot be part of a batch" in in_a_batch(measured, method, path)


def test_what_is_streamed_is_the_tables(measured, monkeypatch):
    assert "cannot be part of a batch" not in in_a_batch(measured, "GET", "/v1/data/files")
    streamed = dataclasses.replace(routes.DATA_FILES, streamed=True)
    monkeypatch.setitem(routes.BY_NAME, streamed.name, streamed)
    assert "cannot be part of a batch" in in_a_batch(measured, "GET", "/v1/data/files")
