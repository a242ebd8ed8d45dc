"""Kinto's own writes (record ``PUT``/``PATCH``/``DELETE``, batches, the default bucket) beside
kinto_attachment: on each backend, and against plain Kinto (an app without the plugin) where
they must behave as there."""

import pytest

from ..conftest import ALICE, build_settings, cached_app, make_app


PLUGINS = "kinto.plugins.default_bucket kinto.plugins.history kinto.plugins.flush kinto_attachment"
PLAIN_PLUGINS = "kinto.plugins.default_bucket kinto.plugins.history kinto.plugins.flush"


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def backend(request):
    return request.param


@pytest.fixture
def kinto(backend, tmp_path_factory, request):
    """With kinto_attachment, and alice's ``blog/articles``."""
    kinto = cached_app(backend, tmp_path_factory, request)
    kinto.create_collection()
    return kinto


@pytest.fixture
def kinto_plugins(backend, tmp_path_factory, request):
    """With the ``default_bucket`` and ``history`` plugins too."""
    kinto = cached_app(backend, tmp_path_factory, request, **{"kinto.includes": PLUGINS})
    kinto.create_collection()
    return kinto


@pytest.fixture
def ours(backend, tmp_path_factory, request):
    """With kinto_attachment, default_bucket, history and flush; nothing created."""
    return cached_app(backend, tmp_path_factory, request, **{"kinto.includes": PLUGINS})


@pytest.fixture
def plain(tmp_path_factory):
    """Kinto without kinto_attachment (memory), alice's ``blog/articles`` created: the
    reference of ``kinto``."""
    settings = build_settings(
        "memory",
        str(tmp_path_factory.mktemp("plain")),
        **{"kinto.includes": "kinto.plugins.flush"},
    )
    app = make_app(settings)
    app.put_json("/v1/buckets/blog", {}, headers=ALICE)
    app.put_json("/v1/buckets/blog/collections/articles", {}, headers=ALICE)
    return app


@pytest.fixture
def plain_plugins(tmp_path_factory):
    """The reference of ``ours``: the same plugins, without kinto_attachment (memory)."""
    settings = build_settings(
        "memory", str(tmp_path_factory.mktemp("plain")), **{"kinto.includes": PLAIN_PLUGINS}
    )
    return make_app(settings)
