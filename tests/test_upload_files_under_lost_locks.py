"""A local upload's file under a request whose lock was lost, the finish's check of it, and
Kinto's PostgreSQL sessions taking the idle-timeout statement (found by, or held against, a
review of 2026-12-05's fixes)."""

import hashlib
import logging
import os
import threading
from pathlib import Path

import pytest
import transaction

from kinto_attachment.state import long_transactions, tus_uploads
from kinto_attachment.storage.local.store import LocalStore

from .conftest import ALICE, Kinto, build_settings, dispose, make_app, own_database
from .test_long_transactions_and_upload_files import _database_sets, _show
from .views.test_resumable import RECORD, TUS, UPLOADS, create, head, metadata, patch


def _upload_path(kinto, url):
    upload = tus_uploads.get(kinto.registry.storage, url.rsplit("/", 1)[1])
    return os.path.join(kinto.base_path, upload["store"]["temp"]), upload


def _race_a_stale_append(kinto, monkeypatch, url, first, last, stale, after_finish, utime=None):
    """A last PATCH ``last`` at ``len(first)`` whose store finish is paused (before it, or
    once it returned: ``after_finish``), while a request whose upload lock was lost (its
    state read before) appends ``stale`` at the same offset. The PATCH's response, and the
    stale append's exception (None if it wrote)."""
    app = kinto.app
    paused, go_on = threading.Event(), threading.Event()
    real_finish = LocalStore.finish
    main = threading.current_thread()

    def paused_finish(self, state):
        if threading.current_thread() is not main and not after_finish:
            paused.set()
            go_on.wait(30)
        result = real_finish(self, state)
        if threading.current_thread() is not main and after_finish:
            paused.set()
            go_on.wait(30)
        return result

    monkeypatch.setattr(LocalStore, "finish", paused_finish)
    # The stale request read the upload's state (as unfinished) before the last PATCH.
    path, upload = _upload_path(kinto, url)
    results = []

    def last_patch():
        try:
            results.append(patch(app, url, last, len(first), status="*"))
        finally:
            transaction.abort()

    thread = threading.Thread(target=last_patch)
    thread.start()
    refused = None
    try:
        assert paused.wait(30)
        before = os.stat(path)
        try:
            kinto.registry.attachment_store.append(upload["store"], len(first), [stale])
        except Exception as e:  # noqa: BLE001 (refused: what should happen)
            refused = e
        if utime is not None and refused is None:
            utime(path, before)
    finally:
        go_on.set()
        thread.join(30)
    monkeypatch.undo()
    return results[0], refused


def test_a_stale_append_never_writes_into_the_attachment_a_finish_linked(
    kinto_memory, monkeypatch
):
    """Found by a review of a fix (2026-12-05).

    It was: the finish holds the upload's file until it is linked as the attachment, then
    lets go: a request whose upload lock was lost (a failover), opening the file before the
    upload's name went, truncated and wrote the inode the committed attachment is. Fixed: a
    file with another name is never written again: the append goes on in a copy of its
    first bytes (so a resume after a kill -9 in the last PATCH's commit works too)."""
    kinto = kinto_memory
    kinto.create_collection()
    _, url = create(kinto.app, 10)
    patch(kinto.app, url, b"01234", 0)
    response, refused = _race_a_stale_append(
        kinto, monkeypatch, url, b"01234", b"BBBBB", b"AA", after_finish=True
    )
    assert response.status_code == 204, response.body[:300]
    attachment = kinto.app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert attachment["hash"] == hashlib.sha256(b"01234BBBBB").hexdigest()
    location = os.path.join(kinto.base_path, attachment["location"].rsplit("/", 1)[-1])
    on_disk = [
        Path(folder, name).read_bytes()
        for folder, _, names in os.walk(kinto.base_path)
        for name in names
        if name == os.path.basename(location)
    ]
    served = kinto.app.get(RECORD + "/attachment", headers=ALICE, status="*")
    assert (served.status_code, served.body, on_disk) == (200, b"01234BBBBB", [b"01234BBBBB"]), (
        f"the committed attachment was rewritten by a stale append (refused: {refused!r}): "
        f"{served.status} {served.body[:200]!r}"
    )


def test_a_touched_upload_file_is_not_refused_forever(kinto_memory):
    """Held against a review (2026-12-05).

    a backup tool or ``touch`` changing the mtime of a file in ``.uploads/``
    between PATCHes never makes the finish refuse (each append stamps the file again, and
    the finish follows the last append in the same request)."""
    kinto = kinto_memory
    kinto.create_collection()
    _, url = create(kinto.app, 10)
    patch(kinto.app, url, b"01234", 0)
    path, _ = _upload_path(kinto, url)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    response = patch(kinto.app, url, b"56789", 5, status="*")
    assert response.status_code == 204, response.body[:300]
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"0123456789"


def test_a_defer_length_upload_finished_by_an_empty_patch_is_not_refused(kinto_memory):
    """Held against a review (2026-12-05).

    a defer-length upload whose bytes all came, then finished by a PATCH of 0 bytes
    that tells ``Upload-Length`` (its file touched meanwhile), is not refused by the stamp
    check: 204, the attachment whole."""
    kinto = kinto_memory
    kinto.create_collection()
    response = kinto.app.post(
        UPLOADS,
        b"",
        headers={**ALICE, **TUS, "Upload-Defer-Length": "1", "Upload-Metadata": metadata()},
        status="*",
    )
    if response.status_code != 201:
        pytest.skip(f"defer-length not offered: {response.status}")
    url = response.headers["Location"][len("http://localhost") :]
    patch(kinto.app, url, b"0123456789", 0)
    path, _ = _upload_path(kinto, url)
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    response = patch(kinto.app, url, b"", 10, status="*", **{"Upload-Length": "10"})
    assert response.status_code == 204, response.body[:300]
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"0123456789"
    assert head(kinto.app, url).headers["Upload-Offset"] == "10"


def test_a_state_of_an_earlier_release_without_a_stamp_finishes(kinto_memory):
    """Held against a review (2026-12-05).

    an upload started by a node of an earlier release (its state has no ``written``)
    resumes and finishes on this one."""
    kinto = kinto_memory
    kinto.create_collection()
    _, url = create(kinto.app, 10)
    patch(kinto.app, url, b"01234", 0)
    _, upload = _upload_path(kinto, url)
    upload["store"].pop("written", None)
    tus_uploads.save(kinto.registry.storage, upload)
    transaction.commit()
    patch(kinto.app, url, b"56789", 5)
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"0123456789"


@pytest.mark.postgresql
def test_a_read_only_by_default_database_still_takes_the_statement(tmp_path):
    """Held against a review (2026-12-05).

    a database (a replica) with ``default_transaction_read_only = on`` still takes
    ``SET SESSION`` and its commit: the timeout is off and reads work."""
    base_path = str(tmp_path / "store")
    os.makedirs(base_path)
    with own_database("review_final_ro") as url:
        node = Kinto(make_app(build_settings("postgresql", base_path, pg=url)), base_path)
        try:
            node.create_collection()
            node.upload(RECORD, b"read only later")
            transaction.abort()
            _database_sets(
                url,
                default_transaction_read_only="on",
                idle_in_transaction_session_timeout="500ms",
            )
            dispose(node)
            storage = node.registry.storage.client
            assert _show(storage, "default_transaction_read_only") == "on"
            assert _show(storage, "idle_in_transaction_session_timeout") == "0"
            body = node.app.get(RECORD + "/attachment", headers=ALICE).body
            assert body == b"read only later"
        finally:
            transaction.abort()
            dispose(node)


@pytest.mark.postgresql
def test_a_database_refusing_the_statement_leaves_a_warning_and_works(
    tmp_path, monkeypatch, caplog
):
    """Held against a review (2026-12-05).

    a database that refuses the statement (an older server, a pooler's rules): a
    warning, the connection rolled back and usable, the requests served."""
    base_path = str(tmp_path / "store")
    os.makedirs(base_path)
    with own_database("review_final_refuse") as url:
        node = Kinto(make_app(build_settings("postgresql", base_path, pg=url)), base_path)
        try:
            monkeypatch.setattr(
                long_transactions,
                "STATEMENT",
                "SET SESSION idle_in_transaction_session_timeout = 'not a duration'",
            )
            dispose(node)
            with caplog.at_level(logging.WARNING, logger=long_transactions.__name__):
                node.create_collection()
                node.upload(RECORD, b"still works")
            assert node.app.get(RECORD + "/attachment", headers=ALICE).body == b"still works"
            assert any("left as it is" in r.getMessage() for r in caplog.records)
        finally:
            transaction.abort()
            dispose(node)
