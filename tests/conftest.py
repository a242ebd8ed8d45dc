"""Shared fixtures: Kinto apps built from settings, on the memory and PostgreSQL backends.

PostgreSQL: ``KINTO_ATTACHMENT_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432``)
names a server on which the tests create, then drop, their own database. When it cannot be
reached the PostgreSQL tests are skipped, except under ``CI=true`` where they fail.
"""

import base64
import json
import os
import shutil
import uuid

import pytest
import webtest
from kinto import main as kinto_main


PG_SERVER = os.environ.get("KINTO_ATTACHMENT_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

BASE_SETTINGS = {
    "kinto.includes": "kinto.plugins.flush kinto_attachment",
    "kinto.userid_hmac_secret": "test-secret",
    "multiauth.policies": "basicauth",
    "kinto.bucket_create_principals": "system.Authenticated",
    "kinto.flush_endpoint_enabled": "true",
    "kinto.experimental_collection_schema_validation": "true",
    "kinto.attachment.base_url": "https://files.example.com/",
}
BACKENDS = {
    "memory": {
        "kinto.storage_backend": "kinto.core.storage.memory",
        "kinto.permission_backend": "kinto.core.permission.memory",
        "kinto.cache_backend": "kinto.core.cache.memory",
    },
    "postgresql": {
        "kinto.storage_backend": "kinto.core.storage.postgresql",
        "kinto.permission_backend": "kinto.core.permission.postgresql",
        "kinto.cache_backend": "kinto.core.cache.postgresql",
    },
}


def basic_auth(user, password="secret"):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ALICE = basic_auth("alice")
BOB = basic_auth("bob")


def _pg_unavailable(reason):
    message = f"PostgreSQL unavailable at {PG_SERVER}: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true: PostgreSQL tests must run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_url():
    """A fresh database on the PostgreSQL server, dropped at the end of the session."""
    try:
        import psycopg2
    except ImportError as e:  # pragma: no cover
        _pg_unavailable(str(e))
    name = f"kinto_attachment_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg2.connect(PG_SERVER + "/postgres", connect_timeout=5)
    except psycopg2.OperationalError as e:
        _pg_unavailable(str(e).strip())
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def build_settings(backend, base_path, pg=None, **extra):
    settings = {**BASE_SETTINGS, **BACKENDS[backend], "kinto.attachment.base_path": base_path}
    if backend == "postgresql":
        for kind in ("storage", "permission", "cache"):
            settings[f"kinto.{kind}_url"] = pg
        settings["kinto.storage_pool_size"] = "2"
    settings.update(extra)
    return settings


def make_app(settings):
    app = webtest.TestApp(kinto_main({}, **settings))
    registry = app.app.registry
    if "postgresql" in settings["kinto.storage_backend"]:
        for backend in (registry.storage, registry.permission, registry.cache):
            backend.initialize_schema()
    return app


def flush(app):
    registry = app.app.registry
    registry.storage.flush()
    registry.permission.flush()
    registry.cache.flush()


class Kinto:
    """A test app with its files folder, and helpers to speak the attachment API."""

    def __init__(self, app, base_path):
        self.app = app
        self.base_path = base_path

    @property
    def registry(self):
        return self.app.app.registry

    def create_collection(self, bucket="blog", collection="articles", headers=ALICE):
        self.app.put_json(f"/v1/buckets/{bucket}", {}, headers=headers, status=(200, 201))
        self.app.put_json(
            f"/v1/buckets/{bucket}/collections/{collection}", {}, headers=headers, status=201
        )

    def record_url(self, record="r1", bucket="blog", collection="articles"):
        return f"/v1/buckets/{bucket}/collections/{collection}/records/{record}"

    def upload(
        self,
        url,
        content=b"hello",
        filename="hello.txt",
        data=None,
        permissions=None,
        headers=ALICE,
        status=201,
        mimetype=None,
    ):
        params = []
        if data is not None:
            params.append(("data", data if isinstance(data, str) else _json(data)))
        if permissions is not None:
            params.append(
                (
                    "permissions",
                    permissions if isinstance(permissions, str) else _json(permissions),
                )
            )
        file_spec = ("attachment", filename, content)
        if mimetype:
            file_spec += (mimetype,)
        return self.app.post(
            url + "/attachment",
            params=params,
            upload_files=[file_spec],
            headers=headers,
            status=status,
        )

    def files(self):
        """Relative paths of the stored files (temporary ones included)."""
        found = []
        for root, _, names in os.walk(self.base_path):
            for name in names:
                found.append(os.path.relpath(os.path.join(root, name), self.base_path))
        return sorted(found)

    def path_of(self, location):
        base_url = self.registry.attachment_settings.base_url
        return os.path.join(self.base_path, location[len(base_url) :])


def _json(obj):
    return json.dumps(obj)


_APPS = {}


def cached_app(backend, tmp_path_factory, request, **extra):
    """One app per backend and settings for the session; storage and files wiped per test."""
    key = (backend, tuple(sorted(extra.items())))
    if key not in _APPS:
        base_path = str(tmp_path_factory.mktemp("attachments"))
        pg = request.getfixturevalue("pg_url") if backend == "postgresql" else None
        settings = build_settings(backend, base_path, pg=pg, **extra)
        _APPS[key] = Kinto(make_app(settings), base_path)
    kinto = _APPS[key]
    flush(kinto.app)
    shutil.rmtree(kinto.base_path)
    os.makedirs(kinto.base_path)
    return kinto


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def backend(request):
    return request.param


@pytest.fixture
def kinto(backend, tmp_path_factory, request):
    """Kinto with kinto_attachment (local files), on each storage backend."""
    return cached_app(backend, tmp_path_factory, request)


@pytest.fixture
def kinto_memory(tmp_path_factory, request):
    """For tests of settings or behaviour that does not depend on the storage backend."""
    return cached_app("memory", tmp_path_factory, request)
