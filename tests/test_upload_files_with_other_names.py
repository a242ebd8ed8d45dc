"""An upload's file that has another name is never written again: the append goes on in a
copy (deleted unless its request commits, or when it fails), and a final upload never grows
the file of a partial upload another one joined (found by, or held against, a review of
2026-12-05's fixes)."""

import base64
import errno
import hashlib
import os
from pathlib import Path

import pytest
import transaction
from kinto.core.utils import msec_time

from kinto_attachment import gc
from kinto_attachment.state import instance, tus_uploads
from kinto_attachment.storage.local import resumable as local_resumable

from .conftest import ALICE
from .views.test_resumable import RECORD, create, head, patch


def _state(kinto, url):
    return tus_uploads.get(kinto.registry.storage, url.rsplit("/", 1)[1])


def _uploads_folder(kinto):
    return Path(kinto.base_path, ".uploads")


def _upload_files(kinto):
    folder = _uploads_folder(kinto)
    return set(os.listdir(folder)) if folder.exists() else set()


def _second_name(kinto, url, name="orphan-of-a-killed-finish.bin"):
    """The upload's file given another name, as a finish killed before its commit leaves
    it (an orphan blob that is a hard link of the upload's file)."""
    state = _state(kinto, url)
    temp = os.path.join(kinto.base_path, state["store"]["temp"])
    other = os.path.join(kinto.base_path, "blog", name)
    os.makedirs(os.path.dirname(other), exist_ok=True)
    os.link(temp, other)
    return temp, other


def _age(*paths):
    """Files dated two days back (beyond the collector's grace)."""
    old = (msec_time() - 2 * 86400 * 1000) * 1_000_000
    for path in paths:
        os.utime(path, ns=(old, old), follow_symlinks=False)


def _sha1(data):
    return "sha1 " + base64.b64encode(hashlib.sha1(data).digest()).decode()


@pytest.fixture
def kinto_cow(kinto_memory):
    kinto_memory.create_collection()
    return kinto_memory


def test_a_refused_patch_that_copied_leaves_no_copy(kinto_cow):
    """Found by a review of a fix (2026-12-05).

    It was: a PATCH that copied its upload's file (it had another name) and was then
    refused (a wrong checksum) left its copy, named by no state: every failed retry copied
    the whole upload again. Fixed: the copy is deleted unless the request commits."""
    kinto = kinto_cow
    _, url = create(kinto.app, 10)
    patch(kinto.app, url, b"01234", 0)
    _, other = _second_name(kinto, url, "orphan-refused.bin")
    before = _upload_files(kinto)
    response = patch(kinto.app, url, b"56", 5, status="*", **{"Upload-Checksum": _sha1(b"not it")})
    transaction.abort()
    assert response.status_code == 460, response.body[:300]
    assert head(kinto.app, url).headers["Upload-Offset"] == "5"
    assert Path(other).read_bytes() == b"01234"
    left = _upload_files(kinto) - before
    assert left == set(), f"a refused PATCH left its copy of the upload's bytes: {left}"


def test_a_copy_failing_on_a_full_disk_is_a_503_and_leaves_no_copy(kinto_cow, monkeypatch):
    """Found by a review of a fix (2026-12-05).

    It was: a copy failing on a full disk was a 503, and left what it had written, on a disk
    already full. Fixed: nothing of the copy stays."""
    kinto = kinto_cow
    _, url = create(kinto.app, 10)
    patch(kinto.app, url, b"01234", 0)
    _second_name(kinto, url, "orphan-enospc.bin")
    before = _upload_files(kinto)
    real_write_all = local_resumable.write_all

    def full(f, chunk, behind):
        real_write_all(f, bytes(chunk)[:1], behind)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local_resumable, "write_all", full)
    response = patch(kinto.app, url, b"56", 5, status="*")
    transaction.abort()
    monkeypatch.undo()
    assert response.status_code == 503, response.body[:300]
    assert head(kinto.app, url).headers["Upload-Offset"] == "5"
    left = _upload_files(kinto) - before
    assert left == set(), f"the failed copy was left in .uploads: {left}"


def test_a_resume_after_a_killed_finish_never_writes_the_orphan(kinto_cow):
    """Held against a review (2026-12-05).

    an upload whose file has a second name (a killed finish's orphan) resumes in a
    copy: the saved state names the copy, the orphan keeps its bytes, the attachment is
    whole with the right hash (the next PATCH after the copy is hashed behind, from the
    copy), and the old file's name is left to the collector, which takes it, and never the
    copy."""
    kinto = kinto_cow
    _, url = create(kinto.app, 12)
    patch(kinto.app, url, b"0123", 0)
    name = instance.tagged_name(instance.tag(kinto.registry)) + ".bin"
    temp, other = _second_name(kinto, url, name)
    old_temp = _state(kinto, url)["store"]["temp"]
    patch(kinto.app, url, b"4567", 4)  # Copied, then hashed behind.
    new_temp = _state(kinto, url)["store"]["temp"]
    assert new_temp != old_temp
    assert Path(other).read_bytes() == b"0123"
    assert Path(kinto.base_path, new_temp).read_bytes() == b"01234567"
    patch(kinto.app, url, b"89ab", 8)
    attachment = kinto.app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert attachment["hash"] == hashlib.sha256(b"0123456789ab").hexdigest()
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"0123456789ab"
    assert Path(other).read_bytes() == b"0123"
    assert not Path(kinto.base_path, new_temp).exists()  # Obsolete once finished.
    _age(temp)
    gc.collect(kinto.registry)
    assert not os.path.exists(temp)
    assert not os.path.exists(other)
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"0123456789ab"


def test_the_old_file_stays_while_a_failed_copy_leaves_the_state_naming_it(kinto_cow):
    """Held against a review (2026-12-05).

    after a PATCH that copied and failed, the saved state still names the old
    file: the collector (grace over) keeps it, and the next PATCH copies again and
    finishes the upload right."""
    kinto = kinto_cow
    _, url = create(kinto.app, 10)
    patch(kinto.app, url, b"01234", 0)
    temp, _ = _second_name(kinto, url, "orphan-kept.bin")
    patch(kinto.app, url, b"56", 5, status=460, **{"Upload-Checksum": _sha1(b"no")})
    transaction.abort()
    _age(temp)
    gc.collect(kinto.registry)
    assert Path(temp).read_bytes() == b"01234"
    patch(kinto.app, url, b"56789", 5)
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"0123456789"


def test_a_stale_final_never_rewrites_the_attachment_another_final_linked(kinto_cow, monkeypatch):
    """Found by a review of a fix (2026-12-05).

    It was: a final upload makes its file a second name of its first partial's and grows
    it: a stale final (its lock lost) joining the same partial while the first committed
    cut and rewrote the first's attachment (or, failing, cut it back). Fixed: a partial's
    file that has another name already is copied, never grown."""
    import threading

    from kinto_attachment.storage.local.store import LocalStore

    from .views.test_resumable_concatenation import final_upload, partial_upload, path_of

    kinto = kinto_cow
    app = kinto.app
    urls = [partial_upload(app, content) for content in (b"AAAA", b"BBBB", b"CCCC")]
    states = [_state(kinto, path_of(url)) for url in urls]
    paused, go_on = threading.Event(), threading.Event()
    real = LocalStore.concatenate
    main = threading.current_thread()

    def paused_concatenate(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        if threading.current_thread() is not main:
            paused.set()
            go_on.wait(30)
        return result

    monkeypatch.setattr(LocalStore, "concatenate", paused_concatenate)
    results = []

    def final_a():
        try:
            results.append(final_upload(app, urls[:2], status="*"))
        finally:
            transaction.abort()

    thread = threading.Thread(target=final_a)
    thread.start()
    stale_error = None
    try:
        assert paused.wait(30)
        store = kinto.registry.attachment_store
        key = states[0]["store"]["key"].rsplit("/", 1)[0] + "/stale-final-b.bin"
        try:
            progress = real(
                store,
                [(states[0]["store"], 4), (states[2]["store"], 4)],
                key,
                "application/octet-stream",
                hashlib.sha256(),
            )
            store.delete(progress.key)  # B's transaction fails: its blob goes.
        except Exception as e:  # noqa: BLE001 (refused: what should happen)
            stale_error = e
    finally:
        go_on.set()
        thread.join(30)
    monkeypatch.undo()
    assert results[0].status_code == 201, results[0].body[:300]
    attachment = app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert attachment["hash"] == hashlib.sha256(b"AAAABBBB").hexdigest()
    served = app.get(RECORD + "/attachment", headers=ALICE, status="*")
    assert (served.status_code, served.body) == (200, b"AAAABBBB"), (
        f"a stale final rewrote the committed attachment (stale: {stale_error!r})"
    )
