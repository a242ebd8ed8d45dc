"""Shared fixtures: Kinto apps built from settings, on the memory and PostgreSQL backends,
with files on local disk or in S3 (a moto server over HTTP, started on a free loopback port).

PostgreSQL: ``KINTO_ATTACHMENT_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432``)
names a server on which the tests create, then drop, their own database. When it cannot be
reached the PostgreSQL tests are skipped, except under ``CI=true`` where they fail.
"""

import base64
import contextlib
import json
import os
import shutil
import threading
import uuid
from pathlib import Path

import pytest
import transaction
import webtest
from kinto import main as kinto_main

from kinto_attachment import locks
from kinto_attachment.state import instance

from .support import live
from .support.gcs_server import gcs_server, token_server  # noqa: F401 (fixtures: GCS, OAuth)


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
    # No collector thread in test apps: it would wake up during later tests (and after the
    # test database is gone). Tests of garbage collection call it themselves.
    "kinto.attachment.data_files.gc_interval_seconds": "0",
    # Blobs that records stop referencing deleted at commit, for tests that look at the store
    # right after a replacement; the grace of the default is tested on its own
    # (tests/uploads/test_replaced_blobs.py).
    "kinto.attachment.gc.replaced_grace_seconds": "0",
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


@contextlib.contextmanager
def own_database(prefix, create=True):
    """The URL of a database of its own on the PostgreSQL server (created unless ``create`` is
    false: then whoever uses it creates it), dropped on exit."""
    try:
        import psycopg2
    except ImportError as e:  # pragma: no cover
        _pg_unavailable(str(e))
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg2.connect(PG_SERVER + "/postgres", connect_timeout=5)
    except psycopg2.OperationalError as e:
        _pg_unavailable(str(e).strip())
    admin.autocommit = True
    if create:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def dispose(*nodes):
    """Close the database sessions and connections of ``nodes`` (apps on a database of their
    own, dropped next: :func:`own_database`), every PostgreSQL backend's."""
    for node in nodes:
        for backend in (node.registry.storage, node.registry.permission, node.registry.cache):
            client = getattr(backend, "client", None)
            with contextlib.suppress(Exception):
                client.session_factory.remove()
            with contextlib.suppress(Exception):
                client.session_factory.session_factory.kw["bind"].dispose()


@contextlib.contextmanager
def two_nodes(tmp_path, prefix, **extra):
    """Two apps (two server processes) on one database of their own (``prefix``) and one
    ``base_path``, with the settings ``extra``."""
    base_path = str(tmp_path / "shared-store")
    with own_database(prefix) as url:
        settings = build_settings("postgresql", base_path, pg=url, **extra)
        first = Kinto(make_app(settings), base_path)
        second = Kinto(make_app(settings), base_path)
        try:
            yield first, second
        finally:
            for node in (first, second):
                with contextlib.suppress(Exception):
                    node.registry.storage.client._engine.dispose()


@pytest.fixture(scope="session")
def pg_url():
    """A fresh database on the PostgreSQL server, dropped at the end of the session."""
    with own_database("kinto_attachment_test") as url:
        yield url


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint: moto in server mode, in a thread, on a free loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_client(endpoint_url):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def s3_settings(endpoint_url, bucket=None):
    """Settings of the S3 backend on a new, empty bucket of the moto server."""
    bucket = bucket or f"attachments-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint_url).create_bucket(Bucket=bucket)
    return {
        "kinto.attachment.aws.bucket_name": bucket,
        "kinto.attachment.aws.endpoint_url": endpoint_url,
        "kinto.attachment.aws.access_key": "testing",
        "kinto.attachment.aws.secret_key": "testing",
        "kinto.attachment.aws.region": "us-east-1",
        "kinto.attachment.aws.max_attempts": "1",
    }


def postgresql_ini(url, base_path):
    """A ``kinto.ini`` of Kinto with kinto_attachment on the PostgreSQL database ``url`` (its
    three backends), files in ``base_path``: for the commands (``kinto migrate``, the GC)."""
    backends = "".join(
        f"kinto.{kind}_backend = kinto.core.{kind}.postgresql\nkinto.{kind}_url = {url}\n"
        for kind in ("storage", "permission", "cache")
    )
    return (
        f"[app:main]\nuse = egg:kinto\n{backends}"
        f"kinto.userid_hmac_secret = {BASE_SETTINGS['kinto.userid_hmac_secret']}\n"
        "kinto.includes = kinto_attachment\n"
        f"kinto.attachment.base_path = {base_path}\n"
        "kinto.attachment.base_url = https://files.example.com/\n"
    )


def UNHELD(keys):  # noqa: N802 (a constant, as the plugin's holding is passed)
    """A store's deletes of names unheld (``discard``'s ``holding``): the plugin holds them
    (:func:`kinto_attachment.uploads.lifecycle._holding`); a store's own test need not."""
    return contextlib.nullcontext()


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
        # In a transaction of its own: a second app on a database reuses the first's
        # connections, and would leave one in this thread's transaction.
        with transaction.manager:
            for backend in (registry.storage, registry.permission, registry.cache):
                backend.initialize_schema()
    return app


def flush(app):
    """Empty the app's storage, permissions and cache: a new instance, with a new tag
    (``kinto_attachment.state.instance``) once it needs one."""
    registry = app.app.registry
    registry.storage.flush()
    registry.permission.flush()
    registry.cache.flush()
    instance.forget(registry)


class Kinto:
    """A test app with its files folder, and helpers to speak the attachment API."""

    def __init__(self, app, base_path=None, bucket=None):
        self.app = app
        self.base_path = base_path
        self.bucket = bucket

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
        status=(200, 201),
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
        """Stored keys, temporary files and unfinished S3 uploads included (as leftovers)."""
        store = self.registry.attachment_store
        if self.bucket is None:
            found = []
            for root, _, names in os.walk(self.base_path):
                for name in names:
                    found.append(os.path.relpath(os.path.join(root, name), self.base_path))
            return sorted(found)
        client = s3_client(store.client.meta.endpoint_url)
        listed = client.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        uploads = client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return sorted([o["Key"] for o in listed] + [f"unfinished:{u['Key']}" for u in uploads])

    def key_of(self, location):
        base_url = self.registry.attachment_settings.base_url
        assert location.startswith(base_url)
        return location[len(base_url) :]

    def read(self, location):
        with self.registry.attachment_store.open(self.key_of(location)) as f:
            return f.read()

    def exists(self, location):
        return self.registry.attachment_store.exists(self.key_of(location))

    def wipe(self):
        flush(self.app)
        if self.bucket is None:
            shutil.rmtree(self.base_path)
            os.makedirs(self.base_path)
            return
        client = s3_client(self.registry.attachment_store.client.meta.endpoint_url)
        for upload in client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        for listed in client.list_objects_v2(Bucket=self.bucket).get("Contents", []):
            client.delete_object(Bucket=self.bucket, Key=listed["Key"])

    def write_ini(self, path, **extra):
        """An ini file for the commands (``kinto-attachment-gc``...) that reaches this app's
        storage, permissions, cache and local files: what an operator's would hold; and the
        ``extra`` settings (full names)."""
        settings = self.registry.settings
        names = ("storage_backend", "storage_url", "permission_backend", "permission_url")
        names += ("cache_backend", "cache_url", "userid_hmac_secret")
        path.write_text(
            "[app:main]\nuse = egg:kinto\n"
            + "".join(f"kinto.{name} = {settings[name]}\n" for name in names)
            + "kinto.includes = kinto_attachment\n"
            + f"kinto.attachment.base_path = {self.base_path}\n"
            + f"kinto.attachment.base_url = {settings['attachment.base_url']}\n"
            + "".join(f"{name} = {value}\n" for name, value in extra.items())
        )
        return path


def _json(obj):
    return json.dumps(obj)


_APPS = {}


def cached_app(backend, tmp_path_factory, request, blobs="local", **extra):
    """One app per backend and settings for the session; storage and files wiped per test."""
    key = (backend, blobs, tuple(sorted(extra.items())))
    if key not in _APPS:
        base_path = str(tmp_path_factory.mktemp("attachments"))
        pg = request.getfixturevalue("pg_url") if backend == "postgresql" else None
        settings = build_settings(backend, base_path, pg=pg, **extra)
        bucket = None
        if blobs == "s3":
            del settings["kinto.attachment.base_path"]
            settings.update(s3_settings(request.getfixturevalue("s3_server")))
            bucket, base_path = settings["kinto.attachment.aws.bucket_name"], None
        _APPS[key] = Kinto(make_app(settings), base_path, bucket)
    kinto = _APPS[key]
    kinto.wipe()
    return kinto


def presigned_app(tmp_path_factory, request, **settings):
    """:func:`cached_app` on S3 (memory backend) whose downloads redirect to presigned URLs,
    with the ``blog/articles`` collection; ``settings``: more of them, by their full names."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        blobs="s3",
        **{"kinto.attachment.aws.presigned_downloads": "true", **settings},
    )
    kinto.create_collection()
    return kinto


#: Where ``serving_app`` serves files (``base_url``): a location minus it is the app's path.
SERVED_ORIGIN = "http://localhost"


def serving_app(tmp_path_factory, request, **settings):
    """A :func:`cached_app` on memory that serves its files itself (``serve_files``)."""
    return cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{
            "kinto.attachment.serve_files": "true",
            "kinto.attachment.base_url": SERVED_ORIGIN + "/v1/attachments/",
            **settings,
        },
    )


def served_path(location):
    """The app's path of a file that :func:`serving_app` serves at ``location``."""
    assert location.startswith(SERVED_ORIGIN + "/"), location
    return location[len(SERVED_ORIGIN) :]


#: The tests that run Mozilla's kinto-attachment, whose virtualenv :func:`live.ensure_peer` builds.
PEER_TESTS = Path(__file__).parent / "live" / "test_legacy_data.py"


def pytest_configure(config):
    """On a machine that has not built the peer's virtualenv yet (a new CI machine), build it
    while the other tests run, rather than in the middle of the run when its tests get to it
    (a minute or two on the critical path). Once, in the process that lives the whole session
    (xdist's controller, or the only one); the tests wait for it through the build's lock."""
    if hasattr(config, "workerinput") or not _selected(config, PEER_TESTS):
        return
    builder = threading.Thread(target=_build_peer_quietly, name="peer-build", daemon=True)
    builder.start()
    config.peer_builder = builder


def pytest_unconfigure(config):
    """A build left half done would be started again from scratch next time: finish it."""
    builder = getattr(config, "peer_builder", None)
    if builder is not None:
        builder.join()


def _build_peer_quietly():
    # A failed build is reported by the tests that need the peer, which build it again.
    with contextlib.suppress(Exception):
        live.ensure_peer()


def _selected(config, path):
    """Whether the command line's paths (or ``testpaths``) include ``path``."""
    args = [arg.split("::")[0] for arg in config.args] or config.getini("testpaths")
    root = Path(config.rootpath)
    return any(path.resolve().is_relative_to((root / arg).resolve()) for arg in args)


#: The modules that take longest (``--durations``), longest first. ``make test`` gives each
#: module to one process (``--dist loadfile``), in the order they are collected: started first,
#: the long ones run beside the many short ones instead of ending the run alone.
LONGEST_FIRST = (
    "live/test_legacy_data.py",
    # Kinto Admin and the release's virtualenv, built on a new machine (then cached).
    "live/test_admin.py",
    "live/test_release.py",
    "views/test_resumable.py",
    "live/test_slow_clients.py",
    "test_abuse.py",
    "downloads/test_downloads.py",
    "live/test_nginx_slow_clients.py",
    "test_adoption.py",
    "uploads/test_refusals.py",
    "live/test_live_concurrency.py",
    "live/test_live_downloads.py",
    "live/test_live_crash.py",
    "live/test_stalled_requests.py",
    "test_gc.py",
    "events/test_guarantees.py",
    "live/test_server_edges.py",
    "storage/test_remote_data_loss.py",
    "storage/test_store_contract.py",
    "test_gc_promises.py",
)


def _rank(item):
    module = Path(item.fspath).relative_to(Path(__file__).parent).as_posix()
    return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    """The longest modules first (:data:`LONGEST_FIRST`; the order within a module is kept).
    Tests marked ``rolls_back`` only make sense on a backend with transactions: they are not
    generated for the memory backend (rather than skipped there)."""
    items.sort(key=_rank)
    kept, deselected = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        memory = params.get("backend") == "memory"
        (deselected if memory and item.get_closest_marker("rolls_back") else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def backend(request):
    return request.param


@pytest.fixture(params=["local", "s3"])
def blobs(request):
    return request.param


@pytest.fixture
def kinto(backend, blobs, tmp_path_factory, request):
    """Kinto with kinto_attachment, on each storage backend and each file backend."""
    return cached_app(backend, tmp_path_factory, request, blobs=blobs)


@pytest.fixture
def kinto_memory(tmp_path_factory, request):
    """For tests of settings or behaviour that does not depend on the storage backend."""
    return cached_app("memory", tmp_path_factory, request)


@contextlib.contextmanager
def held_elsewhere(registry, path, exclusive=True):
    """Hold the lock ``path`` from another thread's transaction while the block runs."""
    taken, release, failures = threading.Event(), threading.Event(), []

    def holder():
        transaction.manager.begin()
        try:
            locks.hold(registry, path, exclusive=exclusive)
        except Exception as e:  # pragma: no cover (reported below)
            failures.append(e)
        finally:
            taken.set()
        release.wait(30)
        transaction.manager.abort()

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    taken.wait(30)
    assert not failures, failures
    try:
        yield
    finally:
        release.set()
        thread.join(30)


def attachment_app(tmp_path_factory, request, backend="memory", blobs="local", **settings):
    """:func:`cached_app` with ``kinto.attachment.NAME = value`` for each of ``settings``,
    and the blog/articles collection."""
    kinto = cached_app(
        backend,
        tmp_path_factory,
        request,
        blobs=blobs,
        **{f"kinto.attachment.{k}": v for k, v in settings.items()},
    )
    kinto.create_collection()
    return kinto


#: The record that :func:`with_previous` attaches a file to.
PREVIOUS_URL = "/v1/buckets/blog/collections/articles/records/r1"


@pytest.fixture
def with_previous(kinto):
    """A record that already has an attachment, which no refusal may damage: checked, record,
    files and content, after the test."""
    kinto.create_collection()
    meta = kinto.upload(PREVIOUS_URL, b"previous content", "previous.txt", data={"title": "kept"})
    record = kinto.app.get(PREVIOUS_URL, headers=ALICE).json["data"]
    yield kinto
    assert kinto.app.get(PREVIOUS_URL, headers=ALICE).json["data"] == record
    assert kinto.files() == [kinto.key_of(meta.json["location"])]
    assert kinto.read(meta.json["location"]) == b"previous content"
