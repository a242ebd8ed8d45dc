"""The local blob store: atomic placement, no overwrite, nothing outside base_path."""

import os

import pytest

from kinto_attachment.storage import blob_url, join_key, safe_name
from kinto_attachment.storage.local import TEMP_PREFIX, LocalStore


@pytest.fixture
def store(tmp_path):
    return LocalStore(str(tmp_path / "files"), base_url="https://cdn.example.com/files")


def listing(store):
    return sorted(
        os.path.relpath(os.path.join(root, name), store.base_path)
        for root, _, names in os.walk(store.base_path)
        for name in names
    )


def test_nothing_is_visible_before_commit(store):
    staged = store.stage("a/b.txt")
    staged.write(b"hello ")
    staged.write(memoryview(b"world"))
    visible = [p for p in listing(store) if not os.path.basename(p).startswith(TEMP_PREFIX)]
    assert visible == []
    assert staged.commit() == "a/b.txt"
    assert listing(store) == ["a/b.txt"]
    with store.open("a/b.txt") as f:
        assert f.read() == b"hello world"
    assert oct(os.stat(store.path("a/b.txt")).st_mode & 0o777) == "0o644"


def test_abort_leaves_nothing(store):
    staged = store.stage("x.txt")
    staged.write(b"partial")
    staged.abort()
    staged.abort()
    assert listing(store) == []


def test_taken_keys_are_never_overwritten(store):
    keys = []
    for content in (b"1", b"2", b"3"):
        staged = store.stage("same.txt")
        staged.write(content)
        keys.append(staged.commit())
    assert keys == ["same.txt", "same-1.txt", "same-2.txt"]
    with store.open("same.txt") as f:
        assert f.read() == b"1"


def test_failed_commit_cleans_up(store, monkeypatch):
    staged = store.stage("x.txt")
    staged.write(b"data")

    def no_rename(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError):
        staged.commit()
    monkeypatch.undo()
    assert [p for p in listing(store) if TEMP_PREFIX in p] == []


def test_delete_is_idempotent(store):
    staged = store.stage("gone.txt")
    staged.write(b"x")
    key = staged.commit()
    assert store.exists(key)
    store.delete(key)
    store.delete(key)
    assert not store.exists(key)


def test_keys_cannot_escape(store, tmp_path):
    for key in ("../outside.txt", "a/../../outside.txt", "", "."):
        with pytest.raises(ValueError):
            store.path(key)
    assert store.path("/etc/passwd") == os.path.join(store.base_path, "etc", "passwd")
    os.symlink(tmp_path, os.path.join(store.base_path, "link"))
    with pytest.raises(ValueError, match="outside"):
        store.path("link/escaped.txt")


def test_url(store):
    assert store.url("a b/é.txt") == "https://cdn.example.com/files/a%20b/%C3%A9.txt"
    assert blob_url("", "a.txt") == "a.txt"
    assert blob_url("https://cdn/x/", "a.txt") == "https://cdn/x/a.txt"


@pytest.mark.parametrize(
    "name,expected",
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
        ("Été à Noël.pdf", "Ete_a_Noel.pdf"),
        (".hidden", "hidden"),
        ("..", "file"),
        ("☃☃☃", "file"),
        ("a" * 300 + ".txt", "a" * 196 + ".txt"),  # Shortened before its extension.
    ],
)
def test_safe_name(name, expected):
    assert safe_name(name) == expected


def test_join_key():
    assert join_key("a/", "/b", "c.txt") == "a/b/c.txt"
    assert join_key("", "c.txt") == "c.txt"
    with pytest.raises(ValueError):
        join_key("..", "c.txt")
