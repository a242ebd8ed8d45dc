"""What an upload that fails leaves, and when: its file deleted only when the database was
not asked to commit, its chosen name held while the delete may be sent again, and the
transaction's other users (savepoints, listeners) unhindered (:mod:`kinto_attachment.uploads.
lifecycle`). Found by a review of that code (2026-12-05)."""

import pytest
import transaction
from kinto.core.storage.exceptions import BackendError

from kinto_attachment.state import replaced
from kinto_attachment.uploads import record as record_step

from ..conftest import ALICE
from ..storage import test_store_outages as outages
from ..storage.test_store_outages import OTHER, URL, _in_thread, _stored, _upload
from ..views.test_resumable import TUS, metadata


#: A fixture of the outages' module, used here.
s3_proxied = outages.s3_proxied
UPLOADS = URL + "/attachment/uploads"


def _failing_after_finish(monkeypatch):
    """The record step fails once the file is complete (the database is gone): the
    request's transaction is aborted."""

    def gone(request, context):
        raise BackendError(message="The database is gone.")

    monkeypatch.setattr(record_step, "lock_record", gone)


def test_s3_tus_creation_with_upload_that_fails_holds_its_name_while_deleted(
    s3_proxied,
    monkeypatch,
):
    """Found by review (2026-12-05).

    S3, ``randomize = false``: a tus creation-with-upload (the whole file in the
    ``POST``) completes its multipart upload, then its transaction fails. The creation's
    ``unless_committed(store.discard, state)`` (views/resumable.py) deletes the completed
    object by its chosen name (``S3Resumable.discard`` → ``delete``), without the quarantine
    ``_let_go`` gives the other paths: botocore sends the ``DeleteObjects`` again after a
    lost answer, r2's upload took ``report.txt`` in between, and the resent delete removes
    r2's file. Expected (as for multipart uploads since the fix): r2's file is kept."""
    proxy, app = s3_proxied
    store = app.app.registry.attachment_store
    sends, taken = [], []

    def before_send(**kwargs):
        sends.append(1)
        if len(sends) == 1:  # S3 deletes the object, and its answer is lost.
            proxy.cut_after = 0
        elif len(sends) == 2:  # botocore sends it again; meanwhile r2 took the name.
            proxy.cut_after = None
            monkeypatch.undo()
            taken.append(
                _in_thread(lambda: _upload(app, OTHER, b"r2's own file", "report.txt").json)
            )

    content = b"r1's file, whose record never commits"
    _failing_after_finish(monkeypatch)
    store.client.meta.events.register("before-send.s3.DeleteObjects", before_send)
    try:
        app.post(
            UPLOADS,
            content,
            headers={
                **ALICE,
                **TUS,
                "Upload-Length": str(len(content)),
                "Upload-Metadata": metadata("report.txt"),
                "Content-Type": "application/offset+octet-stream",
            },
            status=503,
        )
    finally:
        store.client.meta.events.unregister("before-send.s3.DeleteObjects", before_send)
        proxy.cut_after = None
        monkeypatch.undo()
    assert len(sends) >= 2, "the delete was not sent again"
    other = taken[0]
    assert app.get(OTHER, headers=ALICE).json["data"]["attachment"] == other
    assert _stored(app, other["location"]) == b"r2's own file", (
        "r2's file was deleted by the resent delete of the file the failed tus creation let go"
    )


@pytest.fixture
def listening(tmp_path_factory, request):
    """Found by review (2026-12-05).

    A cached app on ``backend`` and a way to subscribe to Kinto's ``ResourceChanged``
    (what a plugin's listener does, in the request's transaction), unsubscribed after."""
    from kinto.core.events import ResourceChanged

    from ..conftest import cached_app

    subscribed = []

    def make(backend, **extra):
        kinto = cached_app(backend, tmp_path_factory, request, **extra)
        kinto.create_collection()

        def subscribe(handler):
            kinto.registry.registerHandler(handler, (ResourceChanged,))
            subscribed.append((kinto.registry, handler))

        return kinto, subscribe

    yield make
    for registry, handler in subscribed:
        registry.unregisterHandler(handler, (ResourceChanged,))


@pytest.mark.parametrize(
    "backend", ["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)]
)
def test_a_listener_taking_a_savepoint_does_not_fail_an_upload(listening, backend):
    """Found by review (2026-12-05).

    A listener of Kinto's ``ResourceChanged`` (another plugin's: it runs in the request's
    transaction, in a before-commit hook) that takes a savepoint, as zope.sqlalchemy lets it
    (``transaction.savepoint()``, rolled back if what it tries fails). The upload's
    ``unless_committed`` joined ``_Votes`` to the transaction (uploads/lifecycle.py), a data
    manager without ``savepoint``: ``TypeError: ('Savepoints unsupported', <_Votes>)``, the
    transaction's resources aborted, the upload a 500 (it was a 201 before the fix, and Kinto's
    own writes take savepoints fine). Expected: the upload succeeds."""
    kinto, subscribe = listening(backend)
    taken = []

    def listener(event):
        savepoint = transaction.get().savepoint()
        taken.append(savepoint)

    subscribe(listener)
    url = kinto.record_url()
    kinto.upload(url, b"hello", "hello.txt", status=(200, 201))
    assert taken
    assert kinto.app.get(url, headers=ALICE).json["data"]["attachment"]["size"] == 5


def test_memory_backend_failed_commit_keeps_the_file_its_kept_record_names(
    tmp_path_factory, request, monkeypatch
):
    """Found by review (2026-12-05).

    The embedded default (config/kinto.ini: memory backends). An upload whose
    transaction fails before it commits (a before-commit hook: a listener, the file's
    durability): ``unless_committed`` deletes the file, taking the failure "before the
    database was asked to commit" for "uncommitted for sure". Kinto's memory storage writes
    at once and never rolls back (state/shared.py ``rolls_back``; events/recording.py and
    uploads/intake.py know it): the record, its attachment and its link stay, naming a file
    that is gone (a dangling reference, a 404 on its download). Expected: on a storage that
    cannot roll back, a file a kept record names is not deleted (or the record's write is
    undone too)."""
    from ..conftest import cached_app

    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.randomize": "false"}
    )
    kinto.create_collection()
    lock_record = record_step.lock_record

    def gone(*args):
        raise BackendError(message="A listener failed.")

    def failing(request, context):
        request.tm.get().addBeforeCommitHook(gone)
        return lock_record(request, context)

    monkeypatch.setattr(record_step, "lock_record", failing)
    url = kinto.record_url()
    kinto.upload(url, b"kept?", "report.txt", status=503)
    monkeypatch.undo()
    kinto.app.get("/v1/", headers=ALICE)  # The thread's next request aborts the failed one.
    record = kinto.app.get(url, headers=ALICE, status="*")
    if record.status_int == 200 and "attachment" in record.json["data"]:
        location = record.json["data"]["attachment"]["location"]
        assert kinto.exists(location), (
            "the record was kept (memory), its file deleted: " + location
        )


@pytest.mark.postgresql
def test_a_refused_upload_lets_its_name_go_with_a_pool_of_one_connection(
    tmp_path_factory, request, caplog
):
    """Found by review (2026-12-05).

    Checked, no defect: a pool of one connection, no overflow, a short pool timeout. An
    upload refused once its file is stored (the collection's schema) lets its file go after
    the abort, the quarantine written by a thread of its own: the request's connection was
    given back first (zope.sqlalchemy closes the session before the after-abort hooks), so
    the thread gets it at once, no deadlock, no pool timeout."""
    import time

    from ..conftest import cached_app

    kinto = cached_app(
        "postgresql",
        tmp_path_factory,
        request,
        **{
            "kinto.attachment.randomize": "false",
            "kinto.storage_pool_size": "1",
            "kinto.storage_max_overflow": "0",
            "kinto.storage_pool_timeout": "3",
        },
    )
    kinto.create_collection()
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    collection = "/v1/buckets/blog/collections/articles"
    # The instance's tag read once first (its first read, in a thread of its own during a
    # request, needs a second connection: not today's code).
    from kinto_attachment.state import instance

    instance.tag(kinto.registry)
    kinto.upload(kinto.record_url("r0"), b"first", "first.txt")
    kinto.app.patch_json(collection, {"data": {"schema": schema}}, headers=ALICE)
    started = time.monotonic()
    kinto.upload(kinto.record_url(), b"refused", "report.txt", data={"title": 5}, status=400)
    assert time.monotonic() - started < 2
    assert "Cleanup failed" not in caplog.text
    with transaction.manager:
        held = [e for e in replaced.every(kinto.registry.storage) if e["key"] == "report.txt"]
    assert [e.get(replaced.QUARANTINED) for e in held] == [True]
    assert "report.txt" not in kinto.files()
