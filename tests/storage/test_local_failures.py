"""The local-disk store and the upload pipeline facing a hostile or failing file system (disk
full, I/O errors, symbolic links, modes, truncated files), from a review of 2026-12-05.

Failures are simulated in process (monkeypatched ``os`` functions and store helpers); no file
system is mounted."""

import contextlib
import errno
import fcntl
import hashlib
import io
import logging
import os
import threading

import pytest
import transaction
import webob

from kinto_attachment import adoption, gc
from kinto_attachment.state import replaced
from kinto_attachment.storage.local import placing as local_placing
from kinto_attachment.storage.local import resumable as local_resumable
from kinto_attachment.storage.local import staged as local_staged
from kinto_attachment.storage.local import store as local_store

from ..conftest import ALICE, PREVIOUS_URL, cached_app, served_path, serving_app
from ..test_adoption import age, legacy_record, store_file
from ..test_gc import GRACE, adopted, after_grace, orphan
from ..views.test_resumable import TUS, UPLOADS, create, head, metadata, patch


RECORD = PREVIOUS_URL
OTHER_RECORD = RECORD[:-1] + "2"


@pytest.fixture
def local(tmp_path_factory, request):
    """Memory backend, local files, the blog/articles collection."""
    kinto = cached_app("memory", tmp_path_factory, request)
    kinto.create_collection()
    return kinto


def failing(error_number):
    def fail(*args, **kwargs):
        raise OSError(error_number, os.strerror(error_number))

    return fail


def previous(kinto):
    """A record with an attachment; ``check()`` asserts it is intact, file included."""
    meta = kinto.upload(RECORD, b"previous content", "previous.txt", data={"title": "kept"})
    record = kinto.app.get(RECORD, headers=ALICE).json["data"]

    def check(extra=()):
        assert kinto.app.get(RECORD, headers=ALICE).json["data"] == record
        assert kinto.read(meta.json["location"]) == b"previous content"
        assert kinto.files() == sorted([kinto.key_of(meta.json["location"]), *extra])

    return check


LOCAL = {"REMOTE_ADDR": "127.0.0.1"}


def post_data_file(kinto, body, file_id, status=200):
    return kinto.app.post(
        f"/v1/data/files?id={file_id}",
        body,
        extra_environ=LOCAL,
        status=status,
        headers={"Content-Type": "application/pdf"},
    )


def kinto_error(response, status):
    assert response.status_code == status, response.text
    body = response.json
    assert body["code"] == status and "errno" in body and "message" in body, body


# Disk full in the middle of a multipart upload.


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_mid_multipart_upload(local, monkeypatch, code):
    """Held against a review (2026-12-05).

    docs/api.rst: a failing store (disk full) is a 503 with Retry-After, nothing
    written, the previous attachment intact. A write failing with ENOSPC/EDQUOT after the first
    half chunk leaves no temporary file and the previous attachment as it was."""
    check = previous(local)
    calls = []
    write_all = local_staged.write_all

    def filling(file, chunk, behind):
        calls.append(len(chunk))
        write_all(file, bytes(chunk)[: len(chunk) // 2], behind)  # Half of it fits.
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(local_staged, "write_all", filling)
    response = local.upload(RECORD, os.urandom(3 << 20), "big.txt", status="*")
    monkeypatch.undo()
    kinto_error(response, 503)
    assert response.headers["Retry-After"]
    check()


# An I/O error once the file has its name.


@pytest.mark.parametrize("failing_step", ["folder fsync", "placeholder replaced"])
def test_a_commit_failing_once_the_name_is_taken_leaves_no_file(local, monkeypatch, failing_step):
    """Found by review (2026-12-05).

    docs/stores.rst: "A refused, failed or interrupted upload is aborted and leaves
    nothing"; docs/api.rst: 503, "Nothing was written".

    It was: on the memory backend the blob is committed with ``LocalStaged.commit``
    (staged.py:71-82): fsync, rename onto its name (``_place``), then ``fsync_dir``. When the
    folder's fsync fails (EIO), ``abort()`` unlinks the temporary name, which no longer exists:
    the file stays under its final name. Likewise where ``renameat2`` is missing
    (placing.py:55-62): the name is reserved with an empty file, and an ``os.replace`` that
    fails (EIO) leaves that empty file under the name. The answer is a 503, and an orphan is
    left in the store (with ``randomize = false`` it takes the name: the next upload gets
    ``-1``).

    Fixed: once the name is taken (renamed, or its placeholder made), a failing commit unlinks
    the file under its final name, not only the temporary one (``_through_placeholder``
    unlinks its placeholder when ``os.replace`` fails)."""
    check = previous(local)
    if failing_step == "folder fsync":
        monkeypatch.setattr(local_staged, "fsync_dir", failing(errno.EIO))
    else:
        monkeypatch.setattr(local_placing, "_RENAMEAT2", None)
        monkeypatch.setattr(os, "replace", failing(errno.EIO))
    response = local.upload(RECORD, b"new content", "new.txt", status="*")
    monkeypatch.undo()
    kinto_error(response, 503)
    check()


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def local_any(request, tmp_path_factory):
    """Each backend, local files, the blog/articles collection."""
    kinto = cached_app(request.param, tmp_path_factory, request)
    kinto.create_collection()
    return kinto


@pytest.mark.parametrize("failing_call", ["file", "folder"])
def test_fsync_failing_at_commit_is_a_503_and_leaves_nothing(local_any, monkeypatch, failing_call):
    """Held against a review (2026-12-05).

    docs/stores.rst: with PostgreSQL the file is renamed at once and fsynced on a
    thread; "the transaction's commit waits for both, and fails if the disk cannot make the
    file durable"; with the memory backend it is durable before the record is written. An
    EIO from the file's or the folder's fsync is a 503 in Kinto's format, the file is gone (no
    temporary file either) and the previous attachment intact."""
    check = previous(local_any)
    if failing_call == "file":
        monkeypatch.setattr(os, "fsync", failing(errno.EIO))
    else:
        monkeypatch.setattr(local_staged, "fsync_dir", failing(errno.EIO))
    response = local_any.upload(RECORD, b"new content", "new.txt", status="*")
    monkeypatch.undo()
    kinto_error(response, 503)
    check()


# tus: disk full in a PATCH, an I/O error as the last one finishes.


def tus_files(kinto):
    return [name for name in kinto.files() if name.startswith(".uploads/")]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_disk_full_mid_tus_patch_keeps_the_upload_resumable(local, monkeypatch, code):
    """Held against a review (2026-12-05).

    a PATCH whose bytes do not fit (half of them written) is a 503 in tus's and
    Kinto's format; the upload stays at its offset, and the same PATCH sent again completes it
    with the right hash, nothing left behind but the attachment."""
    check = previous(local)
    content = os.urandom(200_000)
    _, url = create(local.app, len(content))
    patch(local.app, url, content[:1000], 0)
    write_all = local_resumable.write_all

    def filling(file, chunk, behind):
        write_all(file, bytes(chunk)[: len(chunk) // 2], behind)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(local_resumable, "write_all", filling)
    response = patch(local.app, url, content[1000:], 1000, status="*")
    monkeypatch.undo()
    kinto_error(response, 503)
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert head(local.app, url).headers["Upload-Offset"] == "1000"
    check(tus_files(local))
    patch(local.app, url, content[1000:], 1000)
    attachment = local.app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert attachment["hash"] == hashlib.sha256(content).hexdigest()
    assert local.read(attachment["location"]) == content
    assert local.files() == [local.key_of(attachment["location"])]


def test_fsync_failing_as_a_tus_upload_finishes_leaves_no_file(local, monkeypatch):
    """Found by review (2026-12-05).

    docs/stores.rst: "A refused, failed or interrupted upload is aborted and leaves
    nothing"; docs/api.rst: 503, "Nothing was written".

    It was: the last PATCH links the upload's file under the attachment's key
    (``LocalStore.finish``, store.py:173-184), then fsyncs the folder. When that fails (EIO),
    the exception leaves the new name in place: ``finish`` returns no ``Progress``, so no
    ``created`` key is deleted with the failed transaction. The 503 leaves a second name of the
    upload's file under the attachment's folder (an orphan, which later PATCHes of the upload
    would even rewrite, sharing its inode), and the retried PATCH gets the next free name.

    Fixed: in ``finish``, unlink the link just made when anything after ``os.link`` fails."""
    check = previous(local)
    content = os.urandom(5000)
    _, url = create(local.app, len(content))
    patch(local.app, url, content[:1000], 0)
    monkeypatch.setattr(local_resumable, "fsync_dir", failing(errno.EIO))
    response = patch(local.app, url, content[1000:], 1000, status="*")
    monkeypatch.undo()
    kinto_error(response, 503)
    check(tus_files(local))


# tus concatenation: disk full while the parts are joined.


def partial(app, content):
    headers = {**ALICE, **TUS, "Upload-Concat": "partial", "Upload-Length": str(len(content))}
    headers["Content-Type"] = "application/offset+octet-stream"
    return app.post(UPLOADS, content, headers=headers, status=201).headers["Location"]


def final(app, urls, status=201):
    headers = {**ALICE, **TUS, "Upload-Concat": "final;" + " ".join(urls)}
    headers["Upload-Metadata"] = metadata("whole.txt")
    return app.post(UPLOADS, headers=headers, status=status)


def snapshot(kinto):
    """Every file of the store: the sha256 of its content, and its mode."""
    found = {}
    for name in kinto.files():
        path = os.path.join(kinto.base_path, name)
        with open(path, "rb") as f:
            found[name] = (hashlib.sha256(f.read()).hexdigest()[:12], oct(os.stat(path).st_mode))
    return found


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_mid_concatenation_keeps_the_partial_uploads(local, monkeypatch, code):
    """Held against a review (2026-12-05).

    docs (views/concatenation.py): a failed final creation leaves the partial uploads
    as they were, so that it can be sent again. The copy of the second part failing with
    ENOSPC is a 503; every file (the first part's, grown in place and cut back) is as it was,
    content and mode, and the final upload sent again makes the right file."""
    check = previous(local)
    parts = [os.urandom(70_000), os.urandom(50_000), os.urandom(30_000)]
    urls = [partial(local.app, content) for content in parts]
    before = snapshot(local)
    write_all = local_staged.write_all
    written = []

    def filling(file, chunk, behind):
        written.append(len(chunk))
        if sum(written) > 20_000:
            raise OSError(code, os.strerror(code))
        write_all(file, chunk, behind)

    monkeypatch.setattr(local_staged, "write_all", filling)
    response = final(local.app, urls, status="*")
    monkeypatch.undo()
    kinto_error(response, 503)
    assert snapshot(local) == before
    check(tus_files(local))
    final(local.app, urls)
    attachment = local.app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert attachment["hash"] == hashlib.sha256(b"".join(parts)).hexdigest()
    assert local.read(attachment["location"]) == b"".join(parts)
    assert local.files() == [local.key_of(attachment["location"])]


def test_folder_fsync_failing_as_a_concatenation_commits_leaves_no_file(local, monkeypatch):
    """Found by review (2026-12-05).

    docs/stores.rst: "A refused, failed or interrupted upload is aborted and leaves
    nothing".

    It was: ``LocalStore.concatenate`` commits the staged file (a second name of the first
    part's file, grown) with ``LocalStaged.commit``: renamed onto its key, then the folder
    fsynced. When that fsync fails (EIO), ``abort()`` cuts the first part's file back, which
    is the same inode as the blob just named, and unlinks the temporary name, gone by then: the
    key stays, a truncated second name of the first part's file (its bytes, the final upload's
    name), an orphan in the attachments' folder.

    Fixed: as for a plain upload, a commit that fails after ``_place`` unlinks the placed name."""
    check = previous(local)
    parts = [os.urandom(7_000), os.urandom(5_000)]
    urls = [partial(local.app, content) for content in parts]
    before = snapshot(local)
    monkeypatch.setattr(local_staged, "fsync_dir", failing(errno.EIO))
    response = final(local.app, urls, status="*")
    monkeypatch.undo()
    kinto_error(response, 503)
    assert snapshot(local) == before
    check(tus_files(local))


# A file cut short by hand while records still name it.


def raw(kinto, path, method="GET", headers=None):
    """``(status, headers, body)`` of a request, straight from the WSGI app (webtest refuses a
    body shorter than its Content-Length before the test can look at it)."""
    request = webob.Request.blank(path, method=method, headers=headers or {})
    environ = request.environ
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"] = int(status.split()[0])
        answer["headers"] = dict(response_headers)

    body = kinto.app.app(environ, start_response)
    try:
        content = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return answer["status"], answer["headers"], content


@pytest.mark.parametrize("span", [None, "bytes=50-99", "bytes=99000-"])
def test_a_file_cut_short_is_not_served_with_the_records_length(local, caplog, span):
    """Found by review (2026-12-05).

    docs/gc.rst: a record whose blob is missing is a dangling reference that "needs an
    operator"; docs (downloads/__init__.py): a lost blob is "a 404, and an error logged for the
    operator". ``/data/files`` downloads check the blob's size and hash against the entry
    (``_require_intact``) and answer a 404 for a damaged one.

    It was: a record's file cut short on the disk (truncated by hand, an incomplete restore,
    a crash of a file system without data journaling) is served as a ``200`` (or ``206``)
    whose Content-Length is the record's size and whose body is what is left: the WSGI server
    sends fewer bytes than it announced and drops the connection; caches and clients keep a
    truncated file or retry for ever; nothing is logged.

    Fixed: once the blob is opened (``downloads._open``), compare its ``fstat`` size (one call)
    with ``download.size``; a mismatch is a damaged blob: logged as an error and answered as a
    lost one (404), or a 503, but never a 200/206 that cannot be kept."""
    content = os.urandom(100_000)
    meta = local.upload(RECORD, content, "data.txt").json
    os.truncate(os.path.join(local.base_path, local.key_of(meta["location"])), 10)
    headers = {**ALICE, **({"Range": span} if span else {})}
    status, response_headers, body = raw(local, RECORD + "/attachment", headers=headers)
    announced = int(response_headers.get("Content-Length", len(body)))
    assert (status, announced) == (status, len(body)), (status, response_headers)
    assert status in (404, 503)
    assert any(record.levelname == "ERROR" for record in caplog.records)


# Symbolic links planted in base_path.


@pytest.fixture
def by_collection(tmp_path_factory, request):
    """Memory backend, local files under ``{bucket_id}/{collection_id}``, blog/articles."""
    folder = {"kinto.attachment.folder": "{bucket_id}/{collection_id}"}
    kinto = cached_app("memory", tmp_path_factory, request, **folder)
    kinto.create_collection()
    return kinto


def tus_upload(kinto, content):
    """A tus upload of ``content`` in two PATCHes: the last one's answer."""
    _, url = create(kinto.app, len(content))
    patch(kinto.app, url, content[:10], 0)
    return patch(kinto.app, url, content[10:], 10, status="*")


@pytest.mark.parametrize(
    "link, how",
    [("blog", "multipart"), ("blog", "tus"), (".uploads", "tus"), (".data-files", "data-files")],
)
def test_a_folder_linked_out_of_base_path_is_no_500(by_collection, tmp_path, link, how):
    """Found by review (2026-12-05).

    docs/gc.rst: "a link that leads out of base_path is neither followed nor served";
    docs/api.rst: a failing store is a 503 in Kinto's format ("Nothing was written").

    It was: a symbolic link planted in ``base_path`` (another local user, a former layout,
    a folder moved to another volume and linked back) leading out of it, at a folder the
    store writes in: ``blog`` with ``folder = {bucket_id}/{collection_id}``, ``.uploads``,
    ``.data-files``. ``LocalStore.path`` (store.py:98-103) refuses it with a ``ValueError``,
    which neither ``errors.store_errors`` (intake.py:145, resumable.py:126, tus_steps.py:31)
    nor anything else turns into an answer: the multipart upload, the tus creation or its last
    PATCH, the ``/data/files`` upload are 500s ("A programmatic error occurred"), every retry
    again, with a traceback for the operator. Nothing is written outside (that refusal
    holds).

    Fixed: a key leading out of ``base_path`` raises ``local.store.Outside``, both an
    ``OSError`` (to a write, the store's failure: a logged 503) and the ``ValueError`` that
    downloads take for a missing blob."""
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, os.path.join(by_collection.base_path, link))
    if how == "multipart":
        response = by_collection.upload(RECORD, b"some content", "a.txt", status="*")
    elif how == "tus" and link == ".uploads":
        response, _ = create(by_collection.app, 30, status="*")
    elif how == "tus":
        response = tus_upload(by_collection, b"some content of a tus upload")
    else:
        response = post_data_file(by_collection, b"%PDF data", "report", status="*")
    assert os.listdir(outside) == []
    kinto_error(response, 503)


# /data/files: disk full while an id is uploaded again.


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_disk_full_mid_data_file_upload_keeps_the_previous_content(local, monkeypatch, code):
    """Held against a review (2026-12-05).

    an id uploaded again whose bytes do not fit is a 503 in Kinto's format; the id
    still serves its previous content, and no temporary file is left."""
    post_data_file(local, b"%PDF previous" * 100, "report")
    before = local.files()
    write_all = local_staged.write_all

    def filling(file, chunk, behind):
        write_all(file, bytes(chunk)[: len(chunk) // 2], behind)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(local_staged, "write_all", filling)
    response = post_data_file(local, os.urandom(300_000), "report", status="*")
    monkeypatch.undo()
    kinto_error(response, 503)
    got = local.app.get("/v1/data/files/report", extra_environ=LOCAL)
    assert got.body == b"%PDF previous" * 100
    assert local.files() == before


# Modes: what other local users may read.


@pytest.fixture
def umask_027(monkeypatch):
    previous_mask = os.umask(0o027)
    monkeypatch.setattr(local_placing, "_FILE_MODE", None)  # Read again, as at a server's start.
    yield
    os.umask(previous_mask)


def test_stored_files_follow_the_umask(local, umask_027):
    """Found by review (2026-12-05).

    docs/security.rst: ``/data/files`` is private by default, and for private attachments
    "serve no base_url". An operator keeps the store's files from the machine's other users
    the usual way: a umask (027, ``UMask=0027`` of a systemd unit), a group for the web
    server.

    It was: ``LocalStaged._place`` (staged.py:105) and ``LocalStore.finish`` (store.py:181)
    ``chmod`` every committed file to 0644 whatever the umask, and ``placing`` reserves names
    with 0644: every attachment and every ``/data/files`` blob is readable by every local user
    (another service's account, a shell user) wherever its folder can be traversed (the
    default ``folder`` is empty: every attachment is at the root of a ``base_path`` the
    operator made, typically 0755), while the folders the store makes follow the umask
    (``os.makedirs``): a umask keeps only those.

    Fixed: give committed files ``0o666 & ~umask`` (read once at start-up; 0644 under the usual
    022), as a file created by ``open()`` gets."""
    post_data_file(local, b"%PDF secret" * 100, "secret")
    local.upload(RECORD[:-1] + "2", b"private attachment", "private.txt")
    _, url = create(local.app, 30)
    patch(local.app, url, b"x" * 30, 0)
    modes = {
        name: oct(os.stat(os.path.join(local.base_path, name)).st_mode & 0o777)
        for name in local.files()
    }
    assert len(modes) == 3
    assert {name: mode for name, mode in modes.items() if int(mode, 8) & 0o007} == {}


# The collector's listing of base_path.


def _refusing(monkeypatch, folder):
    """``os.scandir`` refusing ``folder`` (EACCES), as for a folder this process may not read
    (tests run as root, which reads any)."""
    scandir = os.scandir

    def guarded(path="."):
        if os.fspath(path) == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", guarded)


def test_lost_and_found_at_the_root_of_base_path_does_not_stop_every_collection(
    tmp_path_factory, request, monkeypatch
):
    """Found by review (2026-12-05).

    docs/gc.rst: the store is listed by a directory walk; the collector removes orphans,
    and a ``base_path`` that is a volume's mount point is expected (its docs speak of "a
    volume not mounted"). A mount point of ext2/3/4 holds ``lost+found``, owned by root, mode
    0700: the server's user cannot read it.

    It was: ``LocalStore.iter_blobs`` (store.py:261-296) opens every folder with
    ``os.scandir``; the ``PermissionError`` of one it may not read ends the walk, and with it
    the orphan pass (and adoption, which lists the store too): no orphan anywhere is ever
    collected again, the server's thread logs the traceback each round, the command fails,
    until the folder is removed by hand. (Simulated: tests run as root, which reads any
    folder, so ``os.scandir`` refuses that one.)

    Fixed: ``iter_blobs`` leaves out the root's ``lost+found``, where no key can be (ids
    have no ``+``). Any other folder it may not read still stops the pass: skipped, its
    files would be unknown to adoption and to the collector (a review of this fix, below)."""
    kinto = cached_app("memory", tmp_path_factory, request, **GRACE)
    kinto.create_collection()
    adopted(kinto)
    key = orphan(kinto)
    lost = os.path.join(kinto.base_path, "lost+found")
    os.mkdir(lost, 0o700)
    _refusing(monkeypatch, lost)
    from kinto_attachment import gc

    report = gc.collect(kinto.registry, now=after_grace())
    assert [orphan.key for orphan in report.orphans] == [key]
    assert key not in kinto.files()


def test_a_file_named_lost_and_found_is_listed(local):
    """Only a *folder* ``lost+found`` at the root is left out of the listing: a file of that
    name is an upload's with ``randomize = false`` (the client's name), listed as any."""
    store = local.registry.attachment_store
    staged = store.stage("lost+found", "text/plain")
    staged.write(b"a client's file")
    assert staged.commit() == "lost+found"
    assert "lost+found" in {listed.key for listed in store.iter_blobs()}


# tus: the upload's file cut short, or gone, by hand.


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_tus_upload_whose_bytes_are_lost_is_a_410(local, damage):
    """Found by review (2026-12-05).

    docs/stores.rst (GCS) and views/tus_steps.py: "an upload whose stored bytes are gone
    ... a 410: no retry can bring them back, start a new upload"; ``LocalStore.feed_resumable``
    and ``_copy`` say the same of a file shorter than its offset ("its bytes are lost").

    It was (truncated): ``LocalStore.append`` (store.py:155-158) raises
    ``StorageUnavailable`` for a file shorter than the upload's offset: a 503 with
    ``Retry-After: 30``, and every retry of the client (tus clients retry 503s) the same 503,
    for as long as the upload lives; HEAD still announces the lost offset.

    Fixed: raise ``FileNotFoundError`` there (as ``feed_resumable`` does), which
    ``tus_steps.store_errors`` answers with a 410."""
    content = os.urandom(3000)
    _, url = create(local.app, len(content))
    patch(local.app, url, content[:1000], 0)
    (part,) = [os.path.join(local.base_path, name) for name in tus_files(local)]
    if damage == "truncated":
        os.truncate(part, 10)
    else:
        os.unlink(part)
    response = patch(local.app, url, content[1000:2000], 1000, status="*")
    kinto_error(response, 410)


def test_a_name_linked_out_of_base_path_is_no_500(tmp_path_factory, request, tmp_path):
    """Found by review (2026-12-05).

    docs/gc.rst: "a link that leads out of base_path is neither followed nor served";
    docs/stores.rst: a taken name (randomize = false) gets ``-1``.

    It was: a symbolic link planted under a name an upload asks for (``report.txt`` ->
    somewhere out of ``base_path``), with ``randomize = false``: looking for a free name,
    ``StoreBase.variants`` asks ``exists(key)`` -> ``stat`` -> ``path``, whose ``ValueError``
    (store.py:102) nothing catches: every upload of that name is a 500. The link is never
    followed (the refusal holds); the name should just count as taken.

    Fixed: a key whose path leads out of ``base_path`` is a taken name (``StoreBase._free``:
    ``variants`` skips it), and the staged file is made in the key's folder, never at a path
    the link could resolve."""
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.randomize": "false"}
    )
    kinto.create_collection()
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not ours")
    os.symlink(outside, os.path.join(kinto.base_path, "report.txt"))
    response = kinto.upload(RECORD, b"the report", "report.txt", status="*")
    assert outside.read_bytes() == b"not ours"
    assert response.status_code == 201, response.text
    assert response.json["location"].endswith("/report-1.txt")


# A file system that refuses to open or create anything.


class _NoTemporaryFiles:
    def __init__(self, code):
        self.code = code

    def mkstemp(self, *args, **kwargs):
        raise OSError(self.code, os.strerror(self.code))


@pytest.mark.parametrize("code", [errno.EMFILE, errno.EROFS, errno.EACCES, errno.ENOSPC])
@pytest.mark.parametrize("how", ["multipart", "data-files"])
def test_no_temporary_file_can_be_made(local, monkeypatch, code, how):
    """Held against a review (2026-12-05).

    the staged file cannot be created (too many open files, a read-only or full file
    system, permission denied on the folder): a 503 in Kinto's format before the body is
    stored, the previous attachment intact."""
    check = previous(local)
    monkeypatch.setattr(local_staged, "tempfile", _NoTemporaryFiles(code))
    if how == "multipart":
        response = local.upload(RECORD, b"new content", "new.txt", status="*")
    else:
        response = post_data_file(local, b"%PDF new", "report", status="*")
    monkeypatch.undo()
    kinto_error(response, 503)
    check()


@pytest.mark.parametrize("code", [errno.EMFILE, errno.EACCES, errno.EIO])
def test_a_download_that_cannot_open_its_file(local, monkeypatch, code):
    """Held against a review (2026-12-05).

    a download whose file cannot be opened (too many open files, a mode changed by
    hand, an I/O error) is a 503 in Kinto's format, not a 500 nor a 404."""
    local.upload(RECORD, b"content", "a.txt")
    monkeypatch.setattr(local_store, "open", failing(code), raising=False)
    response = local.app.get(RECORD + "/attachment", headers=ALICE, status="*")
    monkeypatch.undo()
    kinto_error(response, 503)


# close() reporting an earlier write's failure (NFS, FUSE: quota and I/O errors at close).


class _ClosingBadly(io.FileIO):
    """A staged file whose ``close`` reports what the file system deferred (EDQUOT)."""

    def close(self):
        if not self.closed:
            super().close()
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))


@pytest.fixture
def small(tmp_path_factory, request):
    """Memory backend, local files, files of 1000 bytes at most, blog/articles."""
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.max_size_bytes": "1000"}
    )
    kinto.create_collection()
    return kinto


def test_a_refused_upload_whose_file_fails_to_close(small, monkeypatch):
    """Found by review (2026-12-05).

    docs/stores.rst: "A refused, failed or interrupted upload is aborted and leaves
    nothing"; docs/api.rst: 413 for a file over ``max_size_bytes``.

    It was: on NFS (and FUSE file systems) a quota or I/O error of earlier writes is reported
    by ``close()``. ``LocalStaged.abort`` (staged.py:142-150) closes the file first: its
    ``OSError`` skips the ``unlink`` of the temporary file (and, for a concatenation, cutting
    the first part's file back and its mode), and escapes from ``Intake.__exit__``
    (intake.py:156-168), where no ``store_errors`` turns it into an answer: the 413 becomes a
    500, and a ``.upload-*.part`` is left for the collector.

    Fixed: in ``abort``, close with the error suppressed (or in a ``try/finally``) so that the
    cleanup always runs; the exception that caused the abort is the one that goes on."""
    check = previous(small)
    monkeypatch.setattr(os, "fdopen", lambda fd, mode, buffering=-1: _ClosingBadly(fd, "wb"))
    response = small.upload(RECORD, b"x" * 5000, "big.txt", status="*")
    monkeypatch.undo()
    kinto_error(response, 413)
    check()


def test_a_file_deleted_while_it_is_served_is_sent_whole(local):
    """Held against a review (2026-12-05).

    a file deleted by hand (or by the collector) once its download has opened it is
    still sent whole: the open file keeps its bytes."""
    content = os.urandom(3 << 20)
    meta = local.upload(RECORD, content, "data.txt").json
    request = webob.Request.blank(RECORD + "/attachment", headers=ALICE)
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"], answer["headers"] = status, dict(headers)

    body = local.app.app(request.environ, start_response)
    os.unlink(os.path.join(local.base_path, local.key_of(meta["location"])))
    try:
        received = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    assert answer["status"].startswith("200")
    assert int(answer["headers"]["Content-Length"]) == len(received)
    assert received == content


# Reviewed again: the fixes above, attacked (2026-12-05).


def _failing_once(function):
    """``function``, but its first call fails with EIO (an I/O error reported once, as
    Linux reports a writeback error to the first fsync that sees it)."""
    calls = []

    def fail_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return function(*args, **kwargs)

    return fail_once


@pytest.fixture
def named(tmp_path_factory, request):
    """Memory backend, local files named as their clients name them (``randomize =
    false``), the blog/articles collection."""
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.randomize": "false"}
    )
    kinto.create_collection()
    return kinto


# abort() unlinking the placed name: a name another upload took meanwhile.


def test_a_second_abort_never_deletes_the_file_another_upload_placed(named, monkeypatch):
    """Found by review (2026-12-05).

    ``storage/__init__.py`` (IStaged.abort): "Drop what was written. Safe to call twice, or
    after ``commit()`` failed"; what another upload committed is never touched.

    It was: ``LocalStaged.commit`` (staged.py:71-82) calls ``abort()`` when the folder's
    fsync fails after ``_place``; that abort unlinks the placed name (staged.py:155-158), and
    the name is free again. An upload of the same name (``randomize = false``) then commits
    under it. A second ``abort()`` of the first writer (which the interface allows, and
    ``Intake.__exit__`` does: intake.py:160-162 aborts again after ``commit`` aborted)
    unlinks ``self._placed`` once more: the other upload's committed file is deleted.

    Fixed: forget the placed path once it is unlinked (``self._placed = None`` in ``abort``),
    and unlink it only while it is still our file (compare its ``st_dev``/``st_ino``, kept at
    ``_place``, with ``os.lstat`` before the unlink)."""
    store = named.registry.attachment_store
    monkeypatch.setattr(local_staged, "fsync_dir", _failing_once(local_staged.fsync_dir))
    first = store.stage("report.txt", "text/plain")
    first.write(b"the upload that failed")
    with pytest.raises(OSError):
        first.commit()  # Placed, then its folder's fsync fails: aborted (the name let go).
    other = store.stage("report.txt", "text/plain")
    other.write(b"another upload, committed")
    assert other.commit() == "report.txt"
    first.abort()  # "Safe to call twice, or after commit() failed."
    assert store.exists("report.txt"), "abort() deleted a file another upload committed"
    with store.open("report.txt") as f:
        assert f.read() == b"another upload, committed"


def test_a_failed_upload_never_deletes_a_concurrent_upload_of_the_same_name(named, monkeypatch):
    """Found by review (2026-12-05).

    docs/stores.rst: "A commit that fails once its name is taken (the folder's fsync) lets
    the name go again: the upload is a ``503``, and leaves nothing"; docs/api.rst: a 503
    writes nothing. Nothing says it may delete another record's attachment.

    It was: with ``randomize = false``, upload A's commit fails at the folder's fsync; its
    ``commit()`` aborts (the name ``new.txt`` is unlinked, free again), then
    ``errors.store_errors`` logs the failure (intake.py:158-161), then ``Intake.__exit__``
    calls ``abort()`` a second time (intake.py:161-162). A request on another thread that
    uploads ``new.txt`` for another record in between (simulated here: it runs while the
    failure is logged, on its own thread) gets that name and commits its record; A's second
    abort then unlinks ``new.txt``, which is now that record's file: its record names a
    missing blob (a 404, logged as a lost blob) — a committed attachment lost.

    Fixed: as above (``abort`` forgets ``_placed`` once it has unlinked it, and never unlinks a
    name that is not its own inode any more); ``Intake`` need not abort a writer whose
    ``commit`` already did."""
    monkeypatch.setattr(local_staged, "fsync_dir", _failing_once(local_staged.fsync_dir))
    errors_logger = logging.getLogger("kinto_attachment.errors")
    ran = []

    def concurrent_upload(record):
        if ran or "Attachment storage failed" not in record.getMessage():
            return True
        ran.append(True)
        done = {}

        def upload():
            response = named.upload(OTHER_RECORD, b"the other record's file", "new.txt")
            done["location"] = response.json["location"]

        thread = threading.Thread(target=upload)
        thread.start()
        thread.join(30)
        ran.append(done)
        return True

    errors_logger.addFilter(concurrent_upload)
    try:
        response = named.upload(RECORD, b"upload that fails", "new.txt", status="*")
    finally:
        errors_logger.removeFilter(concurrent_upload)
    monkeypatch.undo()
    assert response.status_code == 503, response.text
    assert len(ran) == 2 and ran[1].get("location"), "the concurrent upload did not run"
    location = ran[1]["location"]
    assert named.key_of(location) == "new.txt"
    assert named.exists(location), "a failed upload deleted another record's attachment"
    got = named.app.get(OTHER_RECORD + "/attachment", headers=ALICE, status="*")
    assert got.status_code == 200 and got.body == b"the other record's file"


# The collector and adoption facing folders they may not read.


def test_adoption_does_not_end_while_a_folder_of_the_store_is_skipped(
    tmp_path_factory, request, monkeypatch
):
    """Found by review (2026-12-05).

    adoption/__init__.py step 3: "at the first adoption only, every file the store holds
    that nothing references is recorded as retained ... kinto-attachment with
    ``keep_old_files = true`` ... keeps the file, on purpose: ... without this the first
    orphan pass would delete what the setting was set to keep"; docs/stores.rst: the
    collector skips a folder it may not read, "nothing of it is deleted".

    It was: ``iter_blobs`` now skips a folder it may not open (store.py:319-322, a warning
    "its files are kept"), and adoption lists the store with it
    (adoption/unreferenced.py:60): the first adoption ends (its marker written,
    adoption/__init__.py:70-76) without having seen that folder's files, so none is retained.
    Once the folder can be read (its owner or mode fixed: the servers must write there),
    the orphan pass lists its files, unreferenced and not retained, and deletes the files
    kinto-attachment kept on purpose. Before this commit the ``PermissionError`` stopped the
    adoption, which ran again (and retained them) once the folder was readable.

    Fixed: a folder the store may not read stops the listing again (a ``PermissionError``,
    so adoption does not end, and no orphan pass runs on a partial listing); only the file
    system's ``lost+found`` at the root, where no key can be, is left out."""
    kinto = cached_app("memory", tmp_path_factory, request, **GRACE)
    kinto.create_collection()
    kinto.registry.attachment_adopted = False  # The marker went with the previous test's data.
    kept = store_file(kinto, b"version 1, kept on purpose", key="blog/old-articles/v1.txt")
    current = legacy_record(kinto, "r1", content=b"version 2", link="8")
    for key in (kept, current["key"]):
        age(kinto, key)
    _refusing(monkeypatch, os.path.join(kinto.base_path, "blog", "old-articles"))
    with pytest.raises(PermissionError):  # The listing stops: adoption does not end.
        gc.collect(kinto.registry, now=after_grace())
    assert not adoption.done(kinto.registry)
    monkeypatch.undo()  # The folder's owner fixed: readable again.
    store = kinto.registry.attachment_store
    assert store.exists(kept)
    gc.collect(kinto.registry, now=after_grace())
    assert store.exists(kept), "a file kinto-attachment kept (keep_old_files) was deleted"


class _Unsearchable:
    """The entries of a folder this process may read but not search (``r`` without ``x``:
    a folder ``chmod -R 644``-ed, another user's ``0744``): ``readdir`` lists them (their
    types come with the listing), but any ``lstat`` of one is refused (EACCES)."""

    def __init__(self, entries):
        self._entries = entries

    def __iter__(self):
        return self

    def __next__(self):
        return _UnsearchableEntry(next(self._entries))

    def close(self):
        self._entries.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _UnsearchableEntry:
    def __init__(self, entry):
        self._entry = entry
        self.name, self.path = entry.name, entry.path

    def is_dir(self, follow_symlinks=True):
        return self._entry.is_dir(follow_symlinks=False)

    def is_file(self, follow_symlinks=True):
        return self._entry.is_file(follow_symlinks=False)

    def is_symlink(self):
        return self._entry.is_symlink()

    def stat(self, follow_symlinks=True):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), self.path)


def test_a_folder_that_can_be_listed_but_not_searched_stops_the_pass_and_deletes_nothing(
    tmp_path_factory, request, monkeypatch
):
    """Found by review (2026-12-05).

    docs/stores.rst: "The garbage collector skips (and says) a folder it may not read";
    CHANGELOG: "a folder the collector may not read (lost+found) stopped every orphan pass"
    (fixed).

    It was: only a folder ``os.scandir`` refuses is skipped (store.py:319-322). A folder
    this process may list but not search (mode ``r--`` for it: a ``chmod -R 644`` of the
    store, another user's ``0744`` folder) opens, lists its names, and then
    ``entry.stat(follow_symlinks=False)`` (store.py:324) raises ``PermissionError``, which
    ``iter_blobs`` does not catch (only ``FileNotFoundError``, store.py:306): the walk ends,
    the orphan pass fails, every round, as before the fix; no orphan elsewhere is collected.

    Fixed otherwise: no folder but a root ``lost+found`` is skipped (a skipped folder's
    files, unknown to adoption and to the collector, would be taken for orphans once it is
    readable): the pass stops (``PermissionError``), and deletes nothing."""
    kinto = cached_app("memory", tmp_path_factory, request, **GRACE)
    kinto.create_collection()
    adopted(kinto)
    key = orphan(kinto)
    folder = os.path.join(kinto.base_path, "aaa-unsearchable")  # Listed before ``blog``.
    os.mkdir(folder)
    with open(os.path.join(folder, "theirs.bin"), "wb") as f:
        f.write(b"another user's file")
    scandir = os.scandir

    def guarded(path="."):
        entries = scandir(path)
        return _Unsearchable(entries) if os.fspath(path) == folder else entries

    monkeypatch.setattr(os, "scandir", guarded)
    with pytest.raises(PermissionError):
        gc.collect(kinto.registry, now=after_grace())
    monkeypatch.undo()
    assert key in kinto.files()  # Left for a pass that sees the whole store.
    assert "aaa-unsearchable/theirs.bin" in kinto.files()


# The downloads' size check.


def test_head_of_a_file_cut_short_answers_as_its_get(local):
    """Found by review (2026-12-05).

    docs/stores.rst: "A file cut short (or written over) by hand is not served under its
    record's length: a ``404``, logged as a lost file"; RFC 9110 §9.3.2: a HEAD answers with
    the header fields of the GET.

    It was: the GET of a record whose file was cut short is a 404 now (``downloads._open``
    compares the file's ``fstat`` size), but its HEAD only asks ``store.exists``
    (downloads/__init__.py:199-202, 250-259: ``_require_blob``): a ``200`` whose
    ``Content-Length`` is
    the record's size, for a body that a GET refuses to send. A client (or cache, or a
    monitor) that checks with HEAD first sees a valid attachment; a zero-length record whose
    file was written over is likewise a 200 to both.

    Fixed: ``_require_blob`` compares ``store.stat(key).size`` with ``download.size`` (a
    mismatch is :class:`Missing`, as in ``_open``)."""
    content = os.urandom(10_000)
    meta = local.upload(RECORD, content, "data.txt").json
    os.truncate(os.path.join(local.base_path, local.key_of(meta["location"])), 10)
    get_status, _, _ = raw(local, RECORD + "/attachment", headers=ALICE)
    assert get_status == 404
    head_status, head_headers, _ = raw(local, RECORD + "/attachment", "HEAD", headers=ALICE)
    assert (head_status, head_headers.get("Content-Length")) != (200, "10000")
    assert head_status == get_status


def _set_size(kinto, record_url, size):
    """The record's ``attachment.size`` rewritten in storage (a copy made by hand, an old
    client): ``...`` removes it."""
    parent_id, record_id = record_url[len("/v1") :].rsplit("/records/", 1)
    storage = kinto.registry.storage
    with transaction.manager:
        record = storage.get(resource_name="record", parent_id=parent_id, object_id=record_id)
        attachment = dict(record["attachment"])
        if size is ...:
            del attachment["size"]
        else:
            attachment["size"] = size
        storage.update(
            resource_name="record",
            parent_id=parent_id,
            object_id=record_id,
            obj={**record, "attachment": attachment},
        )


@pytest.mark.parametrize("size", [..., "1234", None, True, -1, 12.0])
@pytest.mark.parametrize("span", [None, "bytes=2-5"])
def test_a_record_whose_size_is_missing_or_no_integer_is_still_served(local, size, span):
    """Held against a review (2026-12-05).

    the size check (``downloads._open``) compares the file with the size the download
    announces, which comes from the stored file itself when the record's ``size`` is absent or
    no integer (views/attachment.py:201-207): such records (copies made by hand, old
    clients) are served whole, and ranges of them, never taken for lost blobs."""
    content = os.urandom(1234)
    local.upload(RECORD, content, "data.txt")
    _set_size(local, RECORD, size)
    headers = {**ALICE, **({"Range": span} if span else {})}
    status, _, body = raw(local, RECORD + "/attachment", headers=headers)
    assert (status, body) == ((206, content[2:6]) if span else (200, content))


def test_a_served_file_replaced_under_its_name_between_stat_and_open_is_served_whole(
    tmp_path_factory, request, monkeypatch
):
    """Held against a review (2026-12-05).

    ``serve_files`` (views/files.py) stats the file, then opens it: a file written
    over under that name in between (another length) is no lost blob: the download is
    looked at again (``Missing``), served as the new file, whole, and nothing is logged as
    an error."""
    kinto = serving_app(tmp_path_factory, request)
    kinto.create_collection()
    meta = kinto.upload(RECORD, b"first version", "data.txt").json
    path = os.path.join(kinto.base_path, kinto.key_of(meta["location"]))
    store = kinto.registry.attachment_store
    opened = store.open
    replaced = []

    def replacing_open(key, start=0, end=None):
        if not replaced:
            replaced.append(key)
            with open(path + ".new", "wb") as f:
                f.write(b"a second, longer version")
            os.replace(path + ".new", path)
        return opened(key, start, end)

    monkeypatch.setattr(store, "open", replacing_open)
    errors_seen = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors_seen.append
    logging.getLogger("kinto_attachment").addHandler(handler)
    try:
        status, headers, body = raw(kinto, served_path(meta["location"]))
    finally:
        logging.getLogger("kinto_attachment").removeHandler(handler)
    assert replaced
    assert (status, body) == (200, b"a second, longer version")
    assert int(headers["Content-Length"]) == len(body)
    assert errors_seen == []


# Downloads of files behind a link planted in base_path that leads out of it.


def _moved_out(kinto, folder, tmp_path):
    """``folder`` of base_path moved out of it and linked back (another volume): every key
    under it now leads out of ``base_path`` (``Outside``)."""
    inside = os.path.join(kinto.base_path, folder)
    outside = tmp_path / "moved"
    os.rename(inside, outside)
    os.symlink(outside, inside)


def test_a_record_without_size_whose_file_is_behind_a_link_out_is_a_404(by_collection, tmp_path):
    """Found by review (2026-12-05).

    docs/stores.rst: "A link planted in ``base_path`` that leads out of it is never
    followed: ... a download is a ``404``"; ``local.store.Outside`` says it is "no blob to a
    read (``ValueError``: a lost blob)".

    It was: a record whose ``size`` is absent (or no integer: a copy made by hand, an old
    client) is described from ``store.stat(key)`` (views/attachment.py:201-205), outside any
    ``store_errors`` and without the ``except ValueError`` the other reads have
    (downloads/__init__.py:256, signed.py:34, views/files.py:72): ``Outside`` escapes the
    view, a 500 ("A programmatic error occurred") with a traceback, every time.

    Fixed: in ``_download``, ``except ValueError`` around ``store.stat(key)`` (a missing blob:
    :class:`~kinto_attachment.downloads.Missing`, as a ``None`` stat), or have ``stat``
    answer None for a key that cannot be in the store."""
    content = b"attachment of a copy made by hand"
    by_collection.upload(RECORD, content, "data.txt")
    _set_size(by_collection, RECORD, ...)
    assert by_collection.app.get(RECORD + "/attachment", headers=ALICE).body == content
    _moved_out(by_collection, os.path.join("blog", "articles"), tmp_path)
    response = by_collection.app.get(RECORD + "/attachment", headers=ALICE, status="*")
    assert response.status_code == 404, response.text


def test_a_data_file_behind_a_link_out_is_a_404(local, tmp_path):
    """Found by review (2026-12-05).

    docs/stores.rst: "A link planted in ``base_path`` that leads out of it is never
    followed: a write through it is a ``503`` (logged), ... and a download is a ``404``".

    It was: the ``/data/files`` download checks its blob with ``store.stat``
    (data_files/views.py:179-180, ``_require_intact``) inside ``errors.store_errors`` only;
    ``Outside`` is an ``OSError`` since this commit, so a ``.data-files`` folder linked out
    of ``base_path`` makes every download of every id a ``503`` with ``Retry-After`` (a
    store failure: clients retry for ever) and an "Attachment storage failed" traceback,
    where the docs promise the ``404`` of a lost file (it was a 500 before).

    Fixed: ``except ValueError`` around that ``store.stat`` (``Missing``, then the entry's
    ``404``), as ``downloads._require_blob`` does."""
    headers = {"Content-Type": "application/pdf"}
    environ = {"REMOTE_ADDR": "127.0.0.1"}
    local.app.post(
        "/v1/data/files?id=report",
        b"%PDF data",
        headers=headers,
        extra_environ=environ,
        status=200,
    )
    assert local.app.get("/v1/data/files/report", extra_environ=environ).body == b"%PDF data"
    _moved_out(local, ".data-files", tmp_path)
    response = local.app.get("/v1/data/files/report", extra_environ=environ, status="*")
    assert response.status_code == 404, response.text


def test_a_record_whose_file_is_behind_a_link_out_is_a_404(by_collection, tmp_path):
    """Held against a review (2026-12-05).

    a record (with its integer ``size``) whose folder was moved out of ``base_path``
    and linked back: its download is the ``404`` of a lost blob (``Outside`` is taken for a
    ``ValueError`` by ``downloads._open``), its HEAD too, never a 500 nor a 503."""
    by_collection.upload(RECORD, b"content", "data.txt")
    _moved_out(by_collection, os.path.join("blog", "articles"), tmp_path)
    assert (
        by_collection.app.get(RECORD + "/attachment", headers=ALICE, status="*").status_code == 404
    )
    assert (
        by_collection.app.head(RECORD + "/attachment", headers=ALICE, status="*").status_code
        == 404
    )


def test_the_collector_deletes_the_other_replaced_files_when_one_is_behind_a_link_out(
    by_collection, tmp_path
):
    """Found by review (2026-12-05).

    docs/gc.rst: replaced files are deleted once their grace has passed; docs/stores.rst:
    a link that leads out of ``base_path`` is never followed (nothing of ours is there).

    It was: ``_collect_replaced`` (gc/__init__.py:180-182) claims a batch of due entries
    (removed for good), then ``delete_many`` deletes their blobs one by one
    (store.py:159-161); the key of a folder moved out of ``base_path`` and linked back
    raises ``Outside`` from ``path()`` in ``delete``: the collection fails (the command:
    "the store failed ... Run the command again", exit 1), and every other blob of that
    batch after it (up to 1000), whose entries are gone, is never deleted by this step.

    Fixed: ``LocalStore.delete`` of a key that cannot be in the store deletes nothing (as
    ``stat`` would find nothing): ``except Outside: return``; or ``delete_many`` goes on
    past it and raises at the end."""
    store = by_collection.registry.attachment_store
    adopted(by_collection)
    moved = store_file(by_collection, b"moved", key="blog/articles/moved.txt")
    kept_apart = [store_file(by_collection, b"x", key=f"blog/other/{n}.txt") for n in range(8)]
    _moved_out(by_collection, os.path.join("blog", "articles"), tmp_path)
    # The moved one first in the batch (entries go in id order).
    others = [k for k in kept_apart if replaced._entry_id(k) > replaced._entry_id(moved)]
    assert others
    with transaction.manager:
        replaced.add(by_collection.registry.storage, [moved, *others], until=0)
    with contextlib.suppress(OSError):
        gc.collect(by_collection.registry)
    assert [key for key in others if store.exists(key)] == []


def _upload_file(kinto, url):
    """The path of the tus upload ``url``'s file."""
    (path,) = tus_files(kinto)
    return os.path.join(kinto.base_path, path)


def test_a_patch_never_writes_beside_another_request_writing_the_upload(local):
    """Found by review (2026-12-05).

    It was: two PATCHes of one upload are kept apart by its lock in Kinto's storage, which
    a session ended under the first one (PostgreSQL's idle timeout, a failover) dropped
    while it still wrote: a second PATCH appended and finished the upload beside it, and
    the first one's late bytes landed in the attachment (its file is the upload's). Fixed:
    an append holds the upload's file too (``flock``): another request writing it meanwhile
    is a 503 its client retries, which writes nothing."""
    check = previous(local)
    content = os.urandom(1000)
    _, url = create(local.app, len(content))
    patch(local.app, url, content[:400], 0)
    with open(_upload_file(local, url), "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # A request writing it, its lock lost.
        response = patch(local.app, url, content[400:], 400, status="*")
    kinto_error(response, 503)
    assert head(local.app, url).headers["Upload-Offset"] == "400"
    check(tus_files(local))
    patch(local.app, url, content[400:], 400)
    attachment = local.app.get(RECORD, headers=ALICE).json["data"]["attachment"]
    assert local.read(attachment["location"]) == content
    assert attachment["hash"] == hashlib.sha256(content).hexdigest()
