"""The copy of an upload's file that has another name, and a final upload's growing of a
partial's file (found by, or held against, a review of 2026-12-05's fixes)."""

import errno
import hashlib
import os
from pathlib import Path

import pytest
import transaction

from kinto_attachment.storage import StorageUnavailable
from kinto_attachment.storage.local import listing
from kinto_attachment.storage.local import resumable as local_resumable
from kinto_attachment.storage.local import staged as local_staged
from kinto_attachment.storage.local import store as local_store

from .conftest import ALICE
from .test_upload_files_with_other_names import _second_name, _sha1, _state, _upload_files
from .views.test_resumable import RECORD, create, head, patch, raw_patch
from .views.test_resumable_concatenation import final_upload, partial_upload, path_of


@pytest.fixture
def kinto_rg(kinto_memory):
    kinto_memory.create_collection()
    return kinto_memory


def _attachment(kinto):
    return kinto.app.get(RECORD, headers=ALICE).json["data"]["attachment"]


# --- 1. the copy-on-write of LocalStore.append -------------------------------------------


def test_a_patch_whose_body_is_cut_after_the_copy_leaves_no_copy(kinto_rg):
    """Found by a review of a fix (2026-12-05).

    It was: a PATCH that copied its upload's file, then failed writing its own bytes (a
    body cut short, with a checksum: nothing of it kept), left the copy named by nothing.
    Fixed: the copy goes with the failure."""
    kinto = kinto_rg
    _, url = create(kinto.app, 10)
    patch(kinto.app, url, b"01234", 0)
    _, other = _second_name(kinto, url, "orphan-cut.bin")
    before = _upload_files(kinto)
    response = raw_patch(kinto, url, b"56", 5, offset=5, **{"Upload-Checksum": _sha1(b"56789")})
    transaction.abort()
    assert response.status_code == 400, response.body[:300]
    assert head(kinto.app, url).headers["Upload-Offset"] == "5"
    assert Path(other).read_bytes() == b"01234"
    left = _upload_files(kinto) - before
    assert left == set(), f"a refused PATCH left its copy of the upload's bytes: {left}"


def test_an_append_failing_on_a_full_disk_after_the_copy_leaves_no_copy(kinto_rg, monkeypatch):
    """Found by a review of a fix (2026-12-05).

    It was: the copy fitted, then the PATCH's own bytes did not (a full disk): a 503, and
    the copy left on the full disk, another at each retry. Fixed: the copy goes with the
    failure."""
    kinto = kinto_rg
    _, url = create(kinto.app, 10)
    patch(kinto.app, url, b"01234", 0)
    _second_name(kinto, url, "orphan-full.bin")
    before = _upload_files(kinto)
    real_write_all = local_resumable.write_all
    calls = []

    def full_after_the_copy(f, chunk, behind):
        calls.append(len(chunk))
        if len(calls) == 1:  # The copy of the 5 bytes: it fits.
            return real_write_all(f, chunk, behind)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local_resumable, "write_all", full_after_the_copy)
    response = patch(kinto.app, url, b"56", 5, status="*")
    transaction.abort()
    monkeypatch.undo()
    assert response.status_code == 503, response.body[:300]
    assert head(kinto.app, url).headers["Upload-Offset"] == "5"
    left = _upload_files(kinto) - before
    assert left == set(), f"the copy was left in .uploads on a full disk: {left}"


def test_a_copy_that_is_also_the_last_patch_finishes_right(kinto_rg):
    """Held against a review (2026-12-05).

    the PATCH that copies (the upload's file has a killed finish's orphan name) is
    also the last one: ``finish`` links the copy, the view deletes the copy's upload name
    after the commit (obsolete), not the attachment; the orphan keeps its bytes."""
    kinto = kinto_rg
    _, url = create(kinto.app, 10)
    patch(kinto.app, url, b"01234", 0)
    _, other = _second_name(kinto, url, "orphan-last.bin")
    before = _upload_files(kinto)
    patch(kinto.app, url, b"56789", 5)
    attachment = _attachment(kinto)
    assert attachment["hash"] == hashlib.sha256(b"0123456789").hexdigest()
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"0123456789"
    assert Path(other).read_bytes() == b"01234"
    # The copy's upload name went after the commit; the old one is left to the collector.
    assert _upload_files(kinto) - before == set()


def test_a_committed_copy_is_kept_for_the_state_that_names_it(kinto_rg):
    """Held against a review (2026-12-05).

    a PATCH that copied and committed (not the last one) keeps its copy: the saved
    state names it and the next PATCH finishes from it."""
    kinto = kinto_rg
    _, url = create(kinto.app, 12)
    patch(kinto.app, url, b"0123", 0)
    _second_name(kinto, url, "orphan-commit.bin")
    patch(kinto.app, url, b"4567", 4, **{"Upload-Checksum": _sha1(b"4567")})
    temp = _state(kinto, url)["store"]["temp"]
    assert Path(kinto.base_path, temp).read_bytes() == b"01234567"
    patch(kinto.app, url, b"89ab", 8)
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"0123456789ab"
    assert _attachment(kinto)["hash"] == hashlib.sha256(b"0123456789ab").hexdigest()


# --- 2. LocalStaged.grow -----------------------------------------------------------------


def _partial_file(kinto, url):
    state = _state(kinto, path_of(url))
    return os.path.join(kinto.base_path, state["store"]["temp"])


def test_a_final_sent_again_after_a_killed_attempt_copies_the_partial(kinto_rg):
    """Held against a review (2026-12-05).

    a final upload killed after growing its first partial's file leaves a
    temporary name of that file (grown past the partial's length) in the record's folder;
    the final sent again copies the partial's first bytes (never the killed attempt's),
    and leaves the orphan name as it was."""
    kinto = kinto_rg
    app = kinto.app
    urls = [partial_upload(app, content) for content in (b"AAAA", b"BBBB")]
    first = _partial_file(kinto, urls[0])
    folder = os.path.dirname(first)
    killed = os.path.join(folder, f"{local_staged.TEMP_PREFIX}killed{local_staged.TEMP_SUFFIX}")
    os.link(first, killed)
    with open(first, "ab") as f:
        f.write(b"junk-of-the-killed-attempt")
    response = final_upload(app, urls, status="*")
    assert response.status_code == 201, response.body[:300]
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"AAAABBBB"
    assert _attachment(kinto)["hash"] == hashlib.sha256(b"AAAABBBB").hexdigest()
    assert Path(killed).read_bytes() == b"AAAAjunk-of-the-killed-attempt"


def test_a_partial_named_twice_in_one_final(kinto_rg):
    """Held against a review (2026-12-05).

    ``Upload-Concat: final;/p1 /p1``: the first grows p1's file, the second copies
    p1's first bytes from that same file after them: p1 twice, hashed right."""
    kinto = kinto_rg
    app = kinto.app
    url = partial_upload(app, b"ABCDE")
    response = final_upload(app, [url, url], status="*")
    assert response.status_code == 201, response.body[:300]
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"ABCDEABCDE"
    assert _attachment(kinto)["hash"] == hashlib.sha256(b"ABCDEABCDE").hexdigest()


def test_a_first_partial_on_another_file_system_is_copied(kinto_rg, monkeypatch):
    """Held against a review (2026-12-05).

    the first partial's file cannot be linked (EXDEV: the record's folder on
    another file system): ``grow`` answers False, having linked nothing, and the final
    copies it; the partial's file is left as it was."""
    kinto = kinto_rg
    app = kinto.app
    urls = [partial_upload(app, content) for content in (b"1234", b"5678")]
    first = _partial_file(kinto, urls[0])
    real_link = os.link

    def exdev(src, dst, *args, **kwargs):
        if os.path.samefile(src, first):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(local_staged.os, "link", exdev)
    response = final_upload(app, urls, status="*")
    monkeypatch.undo()
    assert response.status_code == 201, response.body[:300]
    assert kinto.app.get(RECORD + "/attachment", headers=ALICE).body == b"12345678"
    assert _attachment(kinto)["hash"] == hashlib.sha256(b"12345678").hexdigest()


def test_grow_refuses_a_file_another_final_linked_meanwhile(tmp_path):
    """Held against a review (2026-12-05).

    a final upload that links the partial's file while another did too (more than 2
    names once linked) is refused (503) and leaves the file as it was, with its link gone."""
    store = local_store.LocalStore(str(tmp_path), fsync=False)
    state = store.start_resumable("b/c/partial.bin")
    path = store.path(state["temp"])
    Path(path).write_bytes(b"AAAA")
    real_link = os.link

    def racing(src, dst, *args, **kwargs):
        real_link(src, str(tmp_path / "b" / "c" / ".upload-other.part"))  # The other final.
        return real_link(src, dst, *args, **kwargs)

    staged = store.stage("b/c/final.bin")
    original = local_staged.os.link
    local_staged.os.link = racing
    try:
        with pytest.raises(StorageUnavailable):
            staged.grow(path, 4)
    finally:
        local_staged.os.link = original
        staged.abort()
    assert Path(path).read_bytes() == b"AAAA"
    assert os.stat(path).st_nlink == 2  # Its own name and the other final's.


# --- 3. listing.folds_names --------------------------------------------------------------


def test_folds_names_passes_over_an_entry_deleted_while_probed(tmp_path, monkeypatch):
    """Held against a review (2026-12-05).

    the first lettered entry deleted between the listing and its probe is passed
    over: the next one answers (False on this case-sensitive disk), never None for good
    nor a folding answer."""
    (tmp_path / "gone").write_bytes(b"")
    (tmp_path / "stays").write_bytes(b"")
    real_scandir = os.scandir

    class Deleting:
        def __init__(self, path):
            self._it = real_scandir(path)
            self._first = True

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._it.close()

        def __iter__(self):
            for entry in self._it:
                if self._first:
                    self._first = False
                    os.unlink(entry.path)
                yield entry

    monkeypatch.setattr(listing.os, "scandir", Deleting)
    assert listing.folds_names(str(tmp_path)) is False
