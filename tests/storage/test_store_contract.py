"""What every blob store guarantees, run against each of them: local disk, S3 (a moto server over
HTTP) and Google Cloud Storage (fake-gcs-server over HTTP), as Kinto runs one storage test suite
against its memory and PostgreSQL backends.

A store passing the API tests could still break its contract where the API does not look (a
name reserved twice, a range off by one, an upload that leaves an object behind): these tests
call the store itself. Store-specific behaviour (S3's multipart protocol, GCS's sessions, file
modes on disk) is tested in each store's own module.
"""

import dataclasses
import hashlib
import logging
import os
import time
import tracemalloc
import uuid

import pytest

from kinto_attachment.state.hashstate import ResumableSha256
from kinto_attachment.storage import StorageUnavailable
from kinto_attachment.storage.local import LocalStore

from ..conftest import ALICE, UNHELD, build_settings, make_app, s3_client, s3_settings
from ..support.gcs_server import gcs_settings, new_bucket


KiB = 1024
MiB = 1024 * KiB
BASE_URL = "https://cdn.example.com/files/"


@dataclasses.dataclass
class Case:
    name: str
    store: object
    #: Blobs larger than this go to the store in several requests (parts, chunks).
    part_size: int

    def read(self, key, start=0, end=None):
        with self.store.open(key, start, end) as f:
            return f.read()

    def put(self, key, content, random=False):
        staged = self.store.stage(key, "application/octet-stream", random=random)
        staged.write(content)
        return staged.commit()

    def leftovers(self):
        """What the store holds: its objects, and ``pending:KEY`` for unfinished uploads."""
        pending = [f"pending:{p.key}" for p in self.store.iter_pending()]
        return sorted([listed.key for listed in self.store.iter_blobs()] + pending)

    def visible(self):
        """The committed blobs, the store's working files aside."""
        return sorted(b.key for b in self.store.iter_blobs() if not b.temporary)


def _s3_store(endpoint_url):
    from kinto_attachment.storage.s3 import S3Store
    from kinto_attachment.storage.s3.options import S3Options

    bucket = f"contract-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint_url).create_bucket(Bucket=bucket)
    options = S3Options(
        bucket_name=bucket,
        endpoint_url=endpoint_url,
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        max_attempts=1,
        part_size=5 * MiB,
    )
    return S3Store.from_options(options, base_url=BASE_URL)


def _gcs_store(endpoint_url):
    from kinto_attachment.storage.gcs import GCSStore
    from kinto_attachment.storage.gcs.options import GCSOptions

    options = GCSOptions(
        bucket_name=new_bucket(endpoint_url),
        endpoint_url=endpoint_url,
        chunk_size=256 * KiB,
        retry_seconds=0,
    )
    return GCSStore.from_options(options, base_url=BASE_URL)


@pytest.fixture(params=["local", "s3", "gcs"])
def case(request, tmp_path):
    """Each store, new and empty."""
    if request.param == "local":
        store = LocalStore(str(tmp_path / "files"), base_url=BASE_URL)
        store.prepare()
        return Case("local", store, MiB)
    if request.param == "s3":
        return Case("s3", _s3_store(request.getfixturevalue("s3_server")), 5 * MiB)
    return Case("gcs", _gcs_store(request.getfixturevalue("gcs_server")), 256 * KiB)


def traced_upload(store, key, chunk_size, count):
    """Stage ``count`` chunks of ``chunk_size`` random bytes from one reused buffer (the store
    must copy what it keeps) under tracemalloc; ``(peak traced bytes, whether the blob read
    back is what was written)``."""
    chunk = bytearray(os.urandom(chunk_size))
    digest = hashlib.sha256()
    staged = store.stage(key)
    tracemalloc.start()
    try:
        for number in range(count):
            chunk[:8] = number.to_bytes(8, "big")
            digest.update(chunk)
            staged.write(chunk)
        key = staged.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with store.open(key) as f:
        return peak, hashlib.sha256(f.read()).hexdigest() == digest.hexdigest()


def big(case, parts=2.5):
    """Content of a blob that takes several requests."""
    return os.urandom(int(case.part_size * parts) + 7)


# Stage, commit, abort.


def test_nothing_is_visible_before_commit(case):
    staged = case.store.stage("a/b.txt", "text/plain")
    staged.write(b"hello ")
    staged.write(memoryview(b"world"))
    staged.write(bytearray(b"!"))
    assert case.visible() == []
    assert not case.store.exists("a/b.txt")
    assert staged.commit() == "a/b.txt"
    assert case.visible() == ["a/b.txt"]
    assert case.read("a/b.txt") == b"hello world!"
    assert case.store.size("a/b.txt") == 12


def test_a_blob_of_several_parts_arrives_whole(case):
    content = big(case)
    staged = case.store.stage("big.bin", "application/x-big")
    reused = bytearray(100 * KiB + 3)  # Reused by the caller: the store copies what it keeps.
    for start in range(0, len(content), len(reused)):
        piece = content[start : start + len(reused)]
        reused[: len(piece)] = piece
        staged.write(memoryview(reused)[: len(piece)])
    assert staged.commit() == "big.bin"
    assert case.read("big.bin") == content
    assert case.leftovers() == ["big.bin"]


def test_an_empty_blob(case):
    assert case.put("empty.txt", b"") == "empty.txt"
    assert case.read("empty.txt") == b""
    assert case.store.size("empty.txt") == 0


@pytest.mark.parametrize("size", ["small", "big"])
def test_abort_leaves_nothing(case, size):
    staged = case.store.stage("x.bin")
    staged.write(b"partial" if size == "small" else big(case))
    staged.abort()
    staged.abort()
    assert case.leftovers() == []


# Names: never overwritten.


@pytest.mark.parametrize("size", ["small", "big"])
def test_taken_keys_are_never_overwritten(case, size):
    contents = [b"1", b"2", b"3"] if size == "small" else [big(case, n) for n in (1.2, 1.5, 2)]
    keys = [case.put("same.bin", content) for content in contents]
    assert keys == ["same.bin", "same-1.bin", "same-2.bin"]
    assert [case.read(key) for key in keys] == contents


def test_a_random_key_is_written_as_it_is(case):
    assert case.put("e4b1.bin", b"x", random=True) == "e4b1.bin"


def test_a_name_taken_meanwhile_is_not_overwritten(case, monkeypatch):
    """Taken after the store looked for a free name, before it wrote: the conditional write
    is refused, and the next free name taken (local disk reserves names as it writes)."""
    store = case.store
    look_up = getattr(store, "free_key", None)
    staged = store.stage("race.txt")
    staged.write(b"second")
    if look_up is None:
        assert case.put("race.txt", b"first") == "race.txt"
    else:
        answers = []

        def free_key(key):
            name = look_up(key)
            if not answers:
                answers.append(name)
                assert case.put(name, b"first") == name  # Taken right after the look-up.
            return name

        monkeypatch.setattr(store, "free_key", free_key)
    assert staged.commit() == "race-1.txt"
    assert case.read("race.txt") == b"first"
    assert case.read("race-1.txt") == b"second"


def test_a_name_taken_during_an_upload_of_several_parts_is_not_overwritten(case, request):
    """A blob of several parts is written under the name found free when it started: taken
    meanwhile, the upload fails (503) rather than overwrite it (or, on disk, takes the next)."""
    if case.name == "gcs":
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="fake-gcs-server 1.54 ignores ifGenerationMatch at the end of a "
                "resumable upload (GCS answers 412)",
            )
        )
    staged = case.store.stage("race.bin")
    staged.write(big(case))
    first = big(case, 1.1)
    assert case.put("race.bin", first) == "race.bin"
    try:
        key = staged.commit()
    except StorageUnavailable:
        key = None
    assert key != "race.bin"
    assert case.read("race.bin") == first


def reserving(case, *keys):
    """Tell the store that Kinto's storage names ``keys`` (a record's link, say) though it
    holds no blob under them (what the plugin installs: ``StoreBase.reserved``)."""
    asked = []

    def reserved(key):
        asked.append(key)
        return key in keys

    case.store.reserved = reserved
    return asked


@pytest.mark.parametrize("size", ["small", "big"])
def test_names_kintos_storage_holds_are_never_given_to_a_new_blob(case, size):
    """A record naming a file that is gone must not get a new upload's bytes as its own (nor
    delete them with it): the free name skips what the state names."""
    reserving(case, "kept.txt", "kept-1.txt")
    content = b"new" if size == "small" else big(case)
    assert case.put("kept.txt", content) == "kept-2.txt"
    assert case.read("kept-2.txt") == content
    assert case.visible() == ["kept-2.txt"]


def test_a_random_name_is_not_looked_up_in_kintos_storage(case):
    """A name drawn at random costs no query (96 random bits are nobody's)."""
    asked = reserving(case, "e4b1.bin")
    assert case.put("e4b1.bin", b"x", random=True) == "e4b1.bin"
    assert asked == []


# Reading, deleting.


def test_open_reads_ranges(case):
    content = os.urandom(1000)
    key = case.put("r.bin", content)
    assert case.read(key) == content
    assert case.read(key, 0, 9) == content[:10]
    assert case.read(key, 10) == content[10:]
    assert case.read(key, 990, 999) == content[990:]
    assert case.read(key, 500, 500) == content[500:501]
    with pytest.raises(FileNotFoundError):
        case.store.open("missing.bin")


def test_exists_size_and_stat(case):
    assert not case.store.exists("s.txt")
    assert case.store.size("s.txt") is None
    assert case.store.stat("s.txt") is None
    case.put("s.txt", b"1")
    first = case.store.stat("s.txt")
    assert case.store.exists("s.txt") and first.size == 1
    case.store.delete("s.txt")
    case.put("s.txt", b"22")
    second = case.store.stat("s.txt")
    assert second.size == 2 and second.version != first.version


def test_a_listing_gives_the_version_stat_gives(case):
    """Garbage collection deletes an orphan only while it is still the object it listed
    (another written under its name since has another version)."""
    case.put("v.txt", b"1")
    [listed] = [b for b in case.store.iter_blobs() if b.key == "v.txt"]
    stat = case.store.stat("v.txt")
    assert listed.version is not None and listed.version == stat.version
    assert stat.modified_ms // 1000 == listed.modified_ms // 1000
    case.store.delete("v.txt")
    case.put("v.txt", b"2")
    assert case.store.stat("v.txt").version != listed.version


def test_delete_is_idempotent(case):
    key = case.put("gone.txt", b"x")
    case.store.delete(key)
    case.store.delete(key)
    assert not case.store.exists(key)
    assert case.leftovers() == []


def test_delete_many_takes_any_iterable(case):
    keys = [case.put(f"many/{n}.txt", b"x", random=True) for n in range(120)]
    case.store.delete_many(key for key in keys + ["many/missing.txt"])
    assert case.leftovers() == []


def test_urls_name_their_keys(case):
    url = case.store.url("a b/é.txt")
    assert url == BASE_URL + "a%20b/%C3%A9.txt"
    assert case.store.key_for_url(url) == "a b/é.txt"
    assert case.store.key_for_url("https://elsewhere.example.com/a.txt") is None


# Resumable uploads.


def record(case, progress):
    """What the caller does once the state of ``progress`` is recorded: drop what it made
    obsolete."""
    case.store.delete_many(progress.obsolete)
    return progress.state


def test_a_resumable_upload_in_pieces(case):
    content = big(case, 3.3)
    cuts = [0, 1000, case.part_size - 5, case.part_size + 3, 2 * case.part_size + 1, len(content)]
    state = case.store.start_resumable("up/file.bin", "application/pdf")
    for start, end in zip(cuts, cuts[1:], strict=False):
        chunks = [content[start : start + 7], content[start + 7 : end]]
        state = record(case, case.store.append(state, start, chunks))
    state = record(case, case.store.append(state, len(content), []))
    finished = case.store.finish(state)
    assert finished.key == "up/file.bin"
    assert case.read(finished.key) == content
    record(case, finished)
    assert case.leftovers() == ["up/file.bin"]


def test_a_failed_append_is_replaced_by_its_retry(case):
    """The recorded offset is the truth: what a request that failed wrote is not the upload's."""
    content = big(case, 2.2)
    half = case.part_size + 11
    state = case.store.start_resumable("retried.bin", "application/octet-stream")
    state = record(case, case.store.append(state, 0, [content[:half]]))
    failed = case.store.append(state, half, [os.urandom(len(content) - half)])
    case.store.delete_many(failed.created)  # Not recorded: the caller drops what it made.
    state = record(case, case.store.append(state, half, [content[half:]]))
    finished = case.store.finish(state)
    assert case.read(finished.key) == content
    record(case, finished)
    assert case.leftovers() == [finished.key]


def test_an_append_cut_short_is_replaced_by_its_retry(case):
    """A client gone mid-request: the body ends in an error, the state stays as recorded."""
    content = big(case, 2.2)
    half = case.part_size // 2

    def cut(body):
        yield body[: case.part_size + 9]
        raise OSError("client gone")

    state = case.store.start_resumable("cut.bin", "application/octet-stream")
    state = record(case, case.store.append(state, 0, [content[:half]]))
    with pytest.raises(OSError, match="client gone"):
        case.store.append(state, half, cut(os.urandom(len(content))))
    state = record(case, case.store.append(state, half, [content[half:]]))
    finished = case.store.finish(state)
    assert case.read(finished.key) == content
    record(case, finished)
    assert case.leftovers() == [finished.key]


def test_a_finish_whose_transaction_failed_finishes_again(case):
    """The last request is sent again after its transaction failed: the same state finishes
    again, into the same blob."""
    content = big(case, 1.5)
    state = case.store.start_resumable("again.bin", "application/octet-stream")
    state = record(case, case.store.append(state, 0, [content[:100]]))
    last = case.store.append(state, 100, [content[100:]])
    finished = case.store.finish(last.state)
    case.store.delete_many(last.created + finished.created)  # The transaction failed.
    retried = case.store.append(state, 100, [content[100:]])
    again = case.store.finish(retried.state)
    assert again.key == finished.key == "again.bin"
    assert case.read(again.key) == content
    record(case, retried)
    record(case, again)
    assert case.leftovers() == ["again.bin"]


def test_discard_drops_the_whole_upload(case):
    content = big(case, 1.3)
    state = case.store.start_resumable("dropped.bin", "application/octet-stream")
    state = record(case, case.store.append(state, 0, [content]))
    case.store.discard(state, UNHELD)
    assert case.leftovers() == []


def test_an_empty_resumable_upload_is_an_empty_blob(case):
    state = case.store.start_resumable("nothing.txt", "text/plain")
    finished = case.store.finish(state)
    assert case.read(finished.key) == b""
    record(case, finished)
    assert case.leftovers() == ["nothing.txt"]


# Concatenation of resumable uploads (tus's concatenation).


def finished_upload(case, key, content, requests=2):
    """The state of a resumable upload that received ``content`` (in one or two requests)."""
    state = case.store.start_resumable(key, "application/octet-stream")
    half = len(content) // 2 if requests == 2 else 0
    if half:
        state = record(case, case.store.append(state, 0, [content[:half]]))
    return record(case, case.store.append(state, half, [content[half:]]))


def concatenated(case, contents, key="whole.bin", first_digest=None, requests=2):
    """Concatenate uploads of ``contents``; ``(progress, sha256 the store completed, the
    uploads' states)``."""
    states = [finished_upload(case, f"part{n}.bin", c, requests) for n, c in enumerate(contents)]
    digest = first_digest or ResumableSha256()
    if first_digest is None:
        digest.update(contents[0])
    parts = [(state, len(c)) for state, c in zip(states, contents, strict=True)]
    return case.store.concatenate(parts, key, "text/plain", digest), digest, parts


def test_concatenation_makes_one_blob_of_uploads(case):
    """Parts smaller than S3's 5 MiB minimum (sent again), larger ones (copied), empty ones,
    in order; the digest completed with all but the first."""
    size = case.part_size
    contents = [os.urandom(n) for n in (1000, size + 7, 0, 300, size // 2, 2 * size + 3, 5)]
    progress, digest, parts = concatenated(case, contents)
    whole = b"".join(contents)
    assert progress.key in progress.created and progress.key.startswith("whole")
    assert case.read(progress.key) == whole
    assert digest.hexdigest() == hashlib.sha256(whole).hexdigest()
    assert case.store.stat(progress.key).size == len(whole)
    record(case, progress)  # The transaction consuming the uploads committed.
    assert case.leftovers() == [progress.key]


def test_concatenation_composes_more_than_32_uploads(case):
    """GCS composes 32 objects at most per request."""
    contents = [bytes([n]) * (n + 1) for n in range(33)]
    progress, digest, _ = concatenated(case, contents, requests=1)
    assert case.read(progress.key) == b"".join(contents)
    assert digest.hexdigest() == hashlib.sha256(b"".join(contents)).hexdigest()
    record(case, progress)
    assert case.leftovers() == [progress.key]


def test_concatenation_of_empty_uploads_is_an_empty_blob(case):
    progress, digest, _ = concatenated(case, [b"", b""])
    assert case.read(progress.key) == b""
    assert digest.hexdigest() == hashlib.sha256(b"").hexdigest()
    record(case, progress)
    assert case.leftovers() == [progress.key]


def test_concatenation_whose_transaction_failed_concatenates_again(case):
    """The uploads stay as recorded until the consuming transaction commits: after a failure
    (the caller deletes what it created), the same states make the same blob again."""
    contents = [os.urandom(case.part_size + 11), os.urandom(2000)]
    failed, _, parts = concatenated(case, contents)
    case.store.delete_many(failed.created)
    digest = ResumableSha256()
    digest.update(contents[0])
    again = case.store.concatenate(parts, "whole.bin", "text/plain", digest)
    assert case.read(again.key) == b"".join(contents)
    assert digest.hexdigest() == hashlib.sha256(b"".join(contents)).hexdigest()
    record(case, again)
    assert case.leftovers() == [again.key]


class Interrupted(Exception):
    pass


class FailingDigest:
    """A digest that fails once it has seen ``after`` bytes: a concatenation cut short."""

    def __init__(self, after):
        self.after = after

    def update(self, data):
        self.after -= len(data)
        if self.after < 0:
            raise Interrupted


def test_an_interrupted_concatenation_leaves_no_blob_and_the_uploads_usable(case):
    contents = [os.urandom(case.part_size + 11), os.urandom(3000), os.urandom(5000)]
    states = [finished_upload(case, f"part{n}.bin", c) for n, c in enumerate(contents)]
    parts = [(state, len(c)) for state, c in zip(states, contents, strict=True)]
    with pytest.raises(Interrupted):
        case.store.concatenate(parts, "whole.bin", "text/plain", FailingDigest(after=1000))
    # Nothing at the blob's key, nor on its way there; only what the uploads hold.
    assert not [key for key in case.leftovers() if "whole" in key]
    digest = ResumableSha256()
    digest.update(contents[0])
    again = case.store.concatenate(parts, "whole.bin", "text/plain", digest)
    assert again.key == "whole.bin"
    assert case.read(again.key) == b"".join(contents)
    assert digest.hexdigest() == hashlib.sha256(b"".join(contents)).hexdigest()
    record(case, again)
    assert case.leftovers() == ["whole.bin"]


def test_a_resumable_upload_never_finishes_onto_a_name_kintos_storage_holds(case):
    reserving(case, "kept.bin")
    content = big(case, 1.5)
    state = case.store.start_resumable("kept.bin", "application/octet-stream")
    state = record(case, case.store.append(state, 0, [content]))
    finished = case.store.finish(state)
    assert finished.key == "kept-1.bin"
    assert case.read("kept-1.bin") == content


def test_a_concatenation_never_lands_on_a_name_kintos_storage_holds(case):
    reserving(case, "whole.bin")
    contents = [os.urandom(300), os.urandom(case.part_size + 5)]
    progress, _, _ = concatenated(case, contents)
    assert progress.key == "whole-1.bin"
    assert case.read("whole-1.bin") == b"".join(contents)


# Listing, for garbage collection.


def test_listing_tells_blobs_from_working_files(case):
    before = int(time.time() * 1000) - 2000
    case.put("kept.txt", b"12345")
    state = case.store.start_resumable("wip.bin", "application/octet-stream")
    state = record(case, case.store.append(state, 0, [big(case, 1.2)]))
    listed = {blob.key: blob for blob in case.store.iter_blobs()}
    assert listed["kept.txt"].size == 5 and not listed["kept.txt"].temporary
    assert before <= listed["kept.txt"].modified_ms <= time.time() * 1000 + 2000
    # Whatever the upload holds is listed as temporary, or is a pending upload.
    held = {state[name] for name in ("temp", "tail") if state.get(name)}
    pending = {p.upload_id for p in case.store.iter_pending()}
    assert held <= {key for key, blob in listed.items() if blob.temporary}
    assert held or state.get("upload_id") in pending
    assert "wip.bin" not in listed
    case.store.discard(state, UNHELD)


def test_pending_uploads_are_listed_until_aborted(case):
    """What an upload in progress holds is either a listed working file, or a pending upload
    that ``abort_pending`` drops (a GCS session holds nothing until its last chunk)."""
    staged = case.store.stage("pending.bin")
    staged.write(big(case))
    for pending in list(case.store.iter_pending()):
        assert pending.key == "pending.bin"
        case.store.abort_pending(pending.key, pending.upload_id)
    assert list(case.store.iter_pending()) == []
    assert case.visible() == []
    staged.abort()
    assert case.leftovers() == []


# A store out of reach, seen from the API.


#: The settings of each remote store pointing at nothing, and how each names a missing bucket.
NOWHERE = {
    "s3": {
        "kinto.attachment.aws.bucket_name": "nowhere",
        "kinto.attachment.aws.endpoint_url": "http://127.0.0.1:9",
        "kinto.attachment.aws.access_key": "x",
        "kinto.attachment.aws.secret_key": "x",
        "kinto.attachment.aws.max_attempts": "1",
        "kinto.attachment.aws.connect_timeout": "1",
    },
    "gcs": {
        "kinto.attachment.gcloud.bucket_name": "nowhere",
        "kinto.attachment.gcloud.endpoint_url": "http://127.0.0.1:9",
        "kinto.attachment.gcloud.retry_seconds": "0",
        "kinto.attachment.gcloud.connect_timeout": "1",
    },
}
MISSING_BUCKET = {"s3": "NoSuchBucket", "gcs": "GCS upload failed: 404"}


def remote_app(settings):
    settings = {**build_settings("memory", None), **settings}
    del settings["kinto.attachment.base_path"]
    return make_app(settings)


@pytest.mark.parametrize("remote", sorted(NOWHERE))
def test_an_unreachable_store_is_503_and_the_heartbeat_false(remote, caplog):
    app = remote_app(NOWHERE[remote])
    app.put_json("/v1/buckets/blog", {}, headers=ALICE)
    app.put_json("/v1/buckets/blog/collections/articles", {}, headers=ALICE)
    record = "/v1/buckets/blog/collections/articles/records/r1"
    response = app.post(
        record + "/attachment",
        upload_files=[("attachment", "a.txt", b"x")],
        headers=ALICE,
        status=503,
    )
    assert response.json["message"] == "Attachment storage is unavailable, retry later."
    app.get(record, headers=ALICE, status=404)
    with caplog.at_level(logging.ERROR):
        assert app.get("/v1/__heartbeat__", status=503).json["attachments"] is False


@pytest.mark.parametrize("remote", sorted(MISSING_BUCKET))
def test_a_missing_bucket_is_named_in_the_heartbeat_log(remote, request, caplog):
    if remote == "s3":
        settings = s3_settings(request.getfixturevalue("s3_server"))
        settings["kinto.attachment.aws.bucket_name"] = "no-such-bucket-here"
    else:
        settings = gcs_settings(request.getfixturevalue("gcs_server"))
        settings["kinto.attachment.gcloud.bucket_name"] = "no-such-bucket-here"
    app = remote_app(settings)
    with caplog.at_level(logging.ERROR):
        assert app.get("/v1/__heartbeat__", status=503).json["attachments"] is False
    assert MISSING_BUCKET[remote] in caplog.text
