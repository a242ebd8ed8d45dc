"""Uploads' transactions and events, direct and through the ``default`` bucket, against a
review of 2026-12-05's fix of them (the hooks of the transaction ended before the body moved
to the next; writes through the default bucket locking before Kinto's view creates; the
collection a waiting write reads again). Those marked HELD are attacks the code withstood."""

import threading
import time

import pytest
import transaction
from kinto.core.events import AfterResourceChanged, ResourceChanged

from kinto_attachment import locks as locks_module
from kinto_attachment.views import attachment as attachment_views

from .conftest import ALICE, BOB, Kinto, build_settings, dispose, make_app, own_database
from .test_uploads_transactions_and_moved_stores import post_form


PLUGINS = "kinto.plugins.default_bucket kinto.plugins.history kinto.plugins.flush kinto_attachment"
PLAIN_PLUGINS = "kinto.plugins.default_bucket kinto.plugins.history kinto.plugins.flush"


@pytest.fixture(
    scope="module",
    params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)],
)
def backend(request, tmp_path_factory):
    """The app, on each backend (named ``backend`` as the suite's: a ``rolls_back`` test is
    not made for the memory one)."""
    base = str(tmp_path_factory.mktemp("review_eb09e16"))
    if request.param == "postgresql":
        with own_database("review_fix_eb09e16") as url:
            settings = build_settings("postgresql", base, pg=url, **{"kinto.includes": PLUGINS})
            kinto = Kinto(make_app(settings), base)
            kinto.backend = "postgresql"
            try:
                yield kinto
            finally:
                dispose(kinto)
    else:
        kinto = Kinto(
            make_app(build_settings("memory", base, **{"kinto.includes": PLUGINS})), base
        )
        kinto.backend = "memory"
        yield kinto


@pytest.fixture
def kinto(backend):
    backend.wipe()
    return backend


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("review_eb09e16_plain"))
    return make_app(build_settings("memory", base, **{"kinto.includes": PLAIN_PLUGINS}))


@pytest.fixture
def seen(kinto):
    events = []

    def on(event):
        for impacted in event.impacted_objects:
            obj = impacted.get("new") or impacted.get("old") or {}
            events.append(
                (
                    type(event).__name__,
                    event.payload["action"],
                    event.payload["resource_name"],
                    obj.get("id"),
                )
            )

    registry = kinto.registry
    registry.registerHandler(on, (ResourceChanged,))
    registry.registerHandler(on, (AfterResourceChanged,))
    yield events
    registry.unregisterHandler(on, (ResourceChanged,))
    registry.unregisterHandler(on, (AfterResourceChanged,))


def _files(kinto):
    return [f for f in kinto.files() if not f.startswith(".")]


def _bucket(app, headers):
    return app.get("/v1/", headers=headers).json["user"]["bucket"]


URL = "/v1/buckets/blog/collections/articles/records/r1"


# ---------------------------------------------------------------------------------------------
# Events: counts and order
# ---------------------------------------------------------------------------------------------


def test_direct_upload_events_once_each_in_order(kinto, seen):
    """HELD: an upload (first commit before the body) sends one ResourceChanged, then one
    AfterResourceChanged, create then update."""
    kinto.create_collection()
    del seen[:]
    kinto.upload(URL, b"one", "one.txt", status=201)
    kinto.upload(URL, b"two", "two.txt", status=200)
    assert seen == [
        ("ResourceChanged", "create", "record", "r1"),
        ("AfterResourceChanged", "create", "record", "r1"),
        ("ResourceChanged", "update", "record", "r1"),
        ("AfterResourceChanged", "update", "record", "r1"),
    ]


def test_default_bucket_upload_creating_bucket_events_and_history(kinto, seen):
    """Held against a review of a fix (2026-12-05): through /buckets/default for a new user:
    the bucket, collection and record each have one ResourceChanged and one
    AfterResourceChanged, and one history entry each. The bucket's and the collection's are
    committed before the body, as a request of their own (their ResourceChanged, then their
    AfterResourceChanged), the record's after it."""
    url = "/v1/buckets/default/collections/notes/records/r1"
    kinto.upload(url, b"hello", "hello.txt", headers=BOB, status=201)
    bucket = _bucket(kinto.app, BOB)
    names = [(e[0], e[2]) for e in seen]
    assert sorted(names) == sorted(
        [
            (c, r)
            for c in ("ResourceChanged", "AfterResourceChanged")
            for r in ("bucket", "collection", "record")
        ]
    ), seen
    kinds = [e[0] for e in seen]
    changed, after = "ResourceChanged", "AfterResourceChanged"
    assert kinds == [changed, changed, after, after, changed, after], seen
    history = kinto.app.get(f"/v1/buckets/{bucket}/history", headers=BOB).json["data"]
    uris = sorted((h["action"], h["resource_name"]) for h in history)
    assert uris == [("create", "bucket"), ("create", "collection"), ("create", "record")], uris


def test_default_bucket_upload_into_existing_collection_events_once(kinto, seen):
    """HELD: the early-commit path through the default bucket (nothing created): one RC then
    one ARC for the record, one history entry."""
    kinto.app.put_json("/v1/buckets/default/collections/notes", {}, headers=BOB)
    del seen[:]
    url = "/v1/buckets/default/collections/notes/records/r1"
    kinto.upload(url, b"hello", "hello.txt", headers=BOB, status=201)
    assert seen == [
        ("ResourceChanged", "create", "record", "r1"),
        ("AfterResourceChanged", "create", "record", "r1"),
    ]
    bucket = _bucket(kinto.app, BOB)
    history = kinto.app.get(
        f"/v1/buckets/{bucket}/history?resource_name=record", headers=BOB
    ).json["data"]
    assert len(history) == 1


@pytest.mark.parametrize("default", [False, True])
def test_refused_after_body_sends_nothing_stores_nothing(kinto, seen, default):
    """HELD: a body refused after the first commit (invalid ``data``: 400): no event, no
    file, the attachment already there intact."""
    if default:
        kinto.app.put_json("/v1/buckets/default/collections/notes", {}, headers=BOB)
        url, headers = "/v1/buckets/default/collections/notes/records/r1", BOB
    else:
        kinto.create_collection()
        url, headers = URL, ALICE
    kinto.upload(url, b"first", "first.txt", headers=headers, status=201)
    before = _files(kinto)
    del seen[:]
    kinto.upload(url, b"second", "s.txt", data="{nope", headers=headers, status=400)
    assert seen == []
    assert _files(kinto) == before
    assert kinto.app.get(url + "/attachment", headers=headers).body == b"first"


class _FailingDM:
    """A data manager whose vote fails: the transaction's commit fails."""

    def __init__(self, txn):
        self.transaction_manager = txn.manager if hasattr(txn, "manager") else transaction.manager

    def abort(self, txn):
        pass

    def tpc_begin(self, txn):
        pass

    def commit(self, txn):
        pass

    def tpc_vote(self, txn):
        raise RuntimeError("commit refused (test)")

    def tpc_finish(self, txn):
        pass

    def tpc_abort(self, txn):
        pass

    def sortKey(self):  # noqa: N802
        # Before kinto_attachment's votes (and the storage's COMMIT): a commit known failed.
        return "!review-failing"


@pytest.mark.rolls_back
@pytest.mark.parametrize("default", [False, True])
def test_second_commit_failing_leaves_no_orphan_and_keeps_the_old_file(
    kinto, seen, default, monkeypatch
):
    """HELD: the transaction that writes the record fails to commit (a data manager's vote,
    before the database is asked): no AfterResourceChanged, no new file left (the hooks,
    moved, ran), the old attachment served. PostgreSQL only: memory cannot roll back."""
    if default:
        kinto.app.put_json("/v1/buckets/default/collections/notes", {}, headers=BOB)
        url, headers = "/v1/buckets/default/collections/notes/records/r1", BOB
    else:
        kinto.create_collection()
        url, headers = URL, ALICE
    kinto.upload(url, b"first", "first.txt", headers=headers, status=201)
    before = _files(kinto)

    def fail_commit(event):
        if event.payload["resource_name"] == "record":
            txn = transaction.get()
            txn.join(_FailingDM(txn))

    kinto.registry.registerHandler(fail_commit, (ResourceChanged,))
    try:
        del seen[:]
        response = kinto.upload(url, b"second", "s.txt", headers=headers, status="*")
    finally:
        kinto.registry.unregisterHandler(fail_commit, (ResourceChanged,))
        transaction.abort()  # pyramid_tm leaves the failed one to the thread's next begin.
    assert response.status_int >= 500
    assert [e for e in seen if e[0] == "AfterResourceChanged"] == []
    assert _files(kinto) == before
    assert kinto.app.get(url + "/attachment", headers=headers).body == b"first"
    # Nothing left held: the next upload goes through.
    kinto.upload(url, b"third", "t.txt", headers=headers, status=200)
    assert kinto.app.get(url + "/attachment", headers=headers).body == b"third"


def test_first_commit_failing_is_a_clean_failure(kinto, seen, monkeypatch):
    """HELD: the commit before the body fails: the request fails, nothing stored, no event,
    the next upload works (no transaction nor lock left over)."""
    kinto.create_collection()
    kinto.upload(URL, b"first", "first.txt", status=201)
    before = _files(kinto)
    original = attachment_views.refuse_missing_parents

    def refuse_missing_parents(request, context):
        result = original(request, context)
        txn = request.tm.get()
        txn.join(_FailingDM(txn))
        return result

    monkeypatch.setattr(attachment_views, "refuse_missing_parents", refuse_missing_parents)
    del seen[:]
    try:
        response = kinto.upload(URL, b"second", "s.txt", status="*")
    finally:
        monkeypatch.undo()
        transaction.abort()
    assert response.status_int >= 500
    assert seen == []
    assert _files(kinto) == before
    assert kinto.app.get(URL + "/attachment", headers=ALICE).body == b"first"
    kinto.upload(URL, b"third", "t.txt", status=200)
    assert kinto.app.get(URL + "/attachment", headers=ALICE).body == b"third"


def test_memory_locks_released_by_moved_hooks(kinto):
    """HELD: uploads of one record one after another, then a delete: nothing stays held (the
    moved after-commit hooks release the in-process locks)."""
    kinto.create_collection()
    for i in range(3):
        kinto.upload(URL, b"x%d" % i, "x.txt")
    held = getattr(kinto.registry.attachment_locks, "_holders", {})
    assert held == {}
    kinto.app.delete(URL, headers=ALICE)


# ---------------------------------------------------------------------------------------------
# The default bucket's routes: what they lock
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def holds(kinto, monkeypatch):
    taken = []
    original = locks_module.hold

    def hold(registry, path, exclusive=True, wait=True):
        taken.append(tuple(path))
        return original(registry, path, exclusive=exclusive, wait=wait)

    monkeypatch.setattr(locks_module, "hold", hold)
    return taken


def test_default_bucket_get_and_post_lock_nothing(kinto, holds):
    """HELD: a GET and a POST (a record with a generated id) through the default bucket take
    no lock."""
    kinto.app.get("/v1/buckets/default/collections/c/records", headers=BOB)
    kinto.app.post_json("/v1/buckets/default/collections/c/records", {"data": {}}, headers=BOB)
    kinto.app.get("/v1/buckets/default", headers=BOB)
    assert holds == []


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("put", "/v1/buckets/default", {"data": {"title": "b"}}),
        ("patch", "/v1/buckets/default", {"data": {"title": "b"}}),
        ("put", "/v1/buckets/default/collections/c", {"data": {"title": "c"}}),
        ("patch", "/v1/buckets/default/collections/c", {"data": {"title": "c"}}),
        ("delete", "/v1/buckets/default/collections/c", None),
        ("delete", "/v1/buckets/default/collections/c/records", None),
        ("put", "/v1/buckets/default/collections/c/records/r", {"data": {"a": 1}}),
        ("patch", "/v1/buckets/default/collections/c/records/r", {"data": {"a": 1}}),
        ("delete", "/v1/buckets/default/collections/c/records/r", None),
        ("delete", "/v1/buckets/default", None),
    ],
)
def test_default_bucket_writes_as_plain_kinto(kinto, plain, method, path, body):
    """HELD: each write through the default bucket, on nothing then on what exists, answers
    as plain Kinto does."""
    from .conftest import flush

    flush(plain)
    answers = {}
    for name, app in (("ours", kinto.app), ("plain", plain)):
        statuses = []
        for _ in range(2):
            call = getattr(app, f"{method}_json" if body is not None else method)
            args = (path, body) if body is not None else (path,)
            statuses.append(call(*args, headers=BOB, status="*").status_int)
        bucket = _bucket(app, BOB)
        exists = app.get(f"/v1/buckets/{bucket}/collections", headers=BOB, status="*")
        answers[name] = (statuses, exists.status_int)
    assert answers["ours"] == answers["plain"]


def test_default_bucket_mixed_batch_as_plain_kinto(kinto, plain):
    """HELD: a batch with mixed methods inside the default bucket answers as plain Kinto."""
    from .conftest import flush

    flush(plain)
    batch = {
        "requests": [
            {"method": "GET", "path": "/buckets/default/collections/c/records"},
            {
                "method": "PUT",
                "path": "/buckets/default/collections/c/records/r1",
                "body": {"data": {"a": 1}},
            },
            {
                "method": "POST",
                "path": "/buckets/default/collections/c/records",
                "body": {"data": {"b": 2}},
            },
            {
                "method": "PATCH",
                "path": "/buckets/default/collections/c/records/r1",
                "body": {"data": {"a": 2}},
            },
            {"method": "PUT", "path": "/buckets/default/collections/d", "body": {"data": {}}},
            {"method": "DELETE", "path": "/buckets/default/collections/d"},
            {"method": "DELETE", "path": "/buckets/default/collections/c/records/r1"},
            {"method": "PUT", "path": "/buckets/default", "body": {"data": {"t": 1}}},
        ]
    }
    answers = {}
    for name, app in (("ours", kinto.app), ("plain", plain)):
        response = app.post_json("/v1/batch", batch, headers=BOB)
        statuses = [r["status"] for r in response.json["responses"]]
        bucket = _bucket(app, BOB)
        records = app.get(f"/v1/buckets/{bucket}/collections/c/records", headers=BOB).json["data"]
        answers[name] = (statuses, len(records))
    assert answers["ours"] == answers["plain"]


# ---------------------------------------------------------------------------------------------
# PostgreSQL: an upload through the default bucket that creates (no early commit) and a PUT
# through the default bucket, which now locks before its view creates
# ---------------------------------------------------------------------------------------------


class _PausingBody:
    """A body whose second part is read once ``meanwhile`` was started in another thread
    and had ``pause`` seconds (not waited for: it may wait for this request)."""

    def __init__(self, first, rest, meanwhile, pause=2.0):
        self._parts = [first, rest]
        self._meanwhile = meanwhile
        self._pause = pause
        self.thread = None

    def read(self, size=-1):
        if not self._parts:
            return b""
        if len(self._parts) == 1 and self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            self.thread = threading.Thread(target=meanwhile, daemon=True)
            self.thread.start()
            time.sleep(self._pause)
        part = self._parts[0]
        if size is None or size < 0 or size >= len(part):
            self._parts.pop(0)
            return part
        self._parts[0] = part[size:]
        return part[:size]

    def readline(self, size=-1):  # noqa: ARG002
        return self.read(size)


def _upload_pausing(kinto, url, content, meanwhile, headers):
    return post_form(kinto, url, content, _PausingBody, meanwhile, headers)


@pytest.mark.parametrize("revive", [True, False])
@pytest.mark.parametrize("write", ["put", "delete-collection", "batch"])
def test_default_bucket_upload_creating_and_a_default_bucket_write_meanwhile(kinto, revive, write):
    """Found by a review of a fix (2026-12-05).

    It was, on PostgreSQL (all six variants 503, DeadlockDetected; memory HELD): Bob uploads
    r1 through /buckets/default into collection ``c`` that the upload's view
    creates (``revive``: c was deleted before, its tombstone revived; else c is new), so the
    upload keeps its transaction (its creations pending) while its body comes; meanwhile
    Bob's other client writes through /buckets/default (a PUT of r1, a DELETE of c, a batch
    PUT of r1). Both must answer, no 5xx (plain Kinto: the write waits for the upload's
    creation, then goes on). With eb09e16 the write takes the record's (collection's) lock
    BEFORE its default-bucket view creates c, then waits for the upload's uncommitted rows;
    the upload, body in, waits for that lock: a deadlock (PostgreSQL aborts one: 503).
    Fixed: what the upload's view created is committed before its body, with its events, as
    a request of its own."""
    app = kinto.app
    # Bob's default bucket exists (and a record of c was written, then c deleted: revive).
    app.put_json("/v1/buckets/default/collections/other/records/x", {"data": {}}, headers=BOB)
    bucket = _bucket(app, BOB)
    if revive:
        app.put_json("/v1/buckets/default/collections/c/records/x", {"data": {}}, headers=BOB)
        app.delete(f"/v1/buckets/{bucket}/collections/c", headers=BOB)
    url = "/v1/buckets/default/collections/c/records/r1"
    out = {}

    def meanwhile():
        try:
            if write == "put":
                out["write"] = app.put_json(url, {"data": {"a": 1}}, headers=BOB, status="*")
            elif write == "delete-collection":
                out["write"] = app.delete(
                    "/v1/buckets/default/collections/c", headers=BOB, status="*"
                )
            else:
                batch = {"requests": [{"method": "PUT", "path": url[3:], "body": {"data": {}}}]}
                out["write"] = app.post_json("/v1/batch", batch, headers=BOB, status="*")
        except BaseException as e:  # noqa: BLE001
            out["error"] = e
        finally:
            transaction.abort()

    response, stream = _upload_pausing(kinto, url, b"hello world", meanwhile, BOB)
    stream.thread.join(60)
    assert "error" not in out, out
    statuses = [response.status_int, out["write"].status_int]
    if out["write"].status_int == 200 and "responses" in (out["write"].json or {}):
        statuses += [r["status"] for r in out["write"].json["responses"]]
    assert all(s < 500 for s in statuses), (
        statuses,
        response.text[:300],
        out["write"].text[:300],
    )


def test_first_commit_failing_with_an_explicit_manager(tmp_path_factory, monkeypatch):
    """HELD (if it passes): ``tm.manager_hook = pyramid_tm.explicit_manager`` and the commit
    before the body fails: ``begin()`` in end_before_body's ``finally`` meets the failed
    transaction still current (AlreadyInTransaction): the request must still fail cleanly
    (a JSON 5xx), store nothing, and the next upload work."""
    base = str(tmp_path_factory.mktemp("review_eb09e16_explicit"))
    settings = build_settings(
        "memory",
        base,
        **{"kinto.includes": PLUGINS, "tm.manager_hook": "pyramid_tm.explicit_manager"},
    )
    kinto = Kinto(make_app(settings), base)
    kinto.create_collection()
    original = attachment_views.refuse_missing_parents

    def refuse_missing_parents(request, context):
        result = original(request, context)
        txn = request.tm.get()
        txn.join(_FailingDM(txn))
        return result

    monkeypatch.setattr(attachment_views, "refuse_missing_parents", refuse_missing_parents)
    try:
        response = kinto.upload(URL, b"second", "s.txt", status="*")
    finally:
        monkeypatch.undo()
        transaction.abort()
    assert response.status_int >= 500
    assert response.content_type == "application/json"
    assert _files(kinto) == []
    kinto.upload(URL, b"third", "t.txt", status=201)
    assert kinto.app.get(URL + "/attachment", headers=ALICE).body == b"third"
