"""The upload pipeline's own contract: a plan, then bytes metered into a staged blob that is
committed on success and aborted on any error, whatever the entry point."""

import hashlib

import pytest
from pyramid.httpexceptions import HTTPException

from kinto_attachment.storage.local import LocalStore
from kinto_attachment.uploads import intake


def plan(**overrides):
    return intake.Plan(
        **{"key": "f/a.txt", "filename": "a.txt", "mimetype": "text/plain", **overrides}
    )


def leftovers(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_leaving_the_block_commits(tmp_path):
    store = LocalStore(str(tmp_path), fsync=False)
    with intake.Intake(store, plan()) as received:
        received.write(b"hello ")
        received.write(b"world")
    blob = received.blob
    assert (blob.key, blob.size, blob.mimetype) == ("f/a.txt", 11, "text/plain")
    assert blob.hash == hashlib.sha256(b"hello world").hexdigest()
    assert (tmp_path / "f" / "a.txt").read_bytes() == b"hello world"


def test_an_exception_aborts_and_goes_on(tmp_path):
    store = LocalStore(str(tmp_path), fsync=False)
    with pytest.raises(KeyError), intake.Intake(store, plan()) as received:
        received.write(b"partial")
        raise KeyError("refused")
    assert received.blob is None
    assert leftovers(tmp_path) == []


def test_the_size_limit_refuses_as_bytes_arrive(tmp_path):
    store = LocalStore(str(tmp_path), fsync=False)
    with pytest.raises(HTTPException) as error, intake.Intake(store, plan(max_size=4)) as received:
        received.write(b"1234")
        received.write(b"5")
    assert error.value.code == 413
    assert leftovers(tmp_path) == []


class FullDiskStore(LocalStore):
    """Stages as a local store does, but every commit fails as a full disk would."""

    aborted = 0

    def stage(self, key, content_type=None, random=False):
        staged = super().stage(key, content_type, random=random)
        store, abort = self, staged.abort

        def commit():
            raise OSError(28, "No space left on device")

        def counted_abort():
            store.aborted += 1
            abort()

        staged.commit, staged.abort = commit, counted_abort
        return staged


def test_a_failing_commit_aborts_and_is_a_503(tmp_path):
    store = FullDiskStore(str(tmp_path), fsync=False)
    with pytest.raises(HTTPException) as error, intake.Intake(store, plan()) as received:
        received.write(b"data")
    assert error.value.code == 503
    assert store.aborted == 1
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "texts,problem",
    [
        ({"data": "{"}, "data is not valid JSON"),
        ({"permissions": "[]"}, "permissions should be a JSON object."),
        ({"data": "[" * 100_000}, "data is nested too deeply."),
    ],
)
def test_record_fields_are_json_objects(texts, problem):
    def refuse(name, description):
        return ValueError(f"{name} {description}")

    with pytest.raises(ValueError, match=problem):
        intake.record_fields(texts, refuse)


def test_record_fields_ignore_other_texts():
    texts = {"data": '{"a": 1}', "filename": "x.txt"}
    assert intake.record_fields(texts, None) == {"data": {"a": 1}}
