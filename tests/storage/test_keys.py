"""Keys: safe names from what clients send, joined without climbing out of the store, and
URLs made of them as kinto-attachment makes its locations."""

import pytest

from kinto_attachment.storage.keys import blob_url, free_variant, join_key, safe_name


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
        # Found by review (2026-12-05): none of the stem's letters in ASCII, the extension
        # went too ("txt"), and the default extensions refused the file.
        ("文書.txt", "file.txt"),
        ("отчёт.pdf", "file.pdf"),
        ("__.txt", "file.txt"),
        ("写真.tar.gz", "file.tar.gz"),
        (".文書.txt", "file.txt"),  # Found by the review of the fix.
        ("x.文", "x"),
    ],
)
def test_safe_name(name, expected):
    assert safe_name(name) == expected


@pytest.mark.parametrize("name", ["文書.txt", "отчёт.pdf", "\U0001f600.png", ".文書.txt"])
def test_a_name_of_letters_ascii_has_not_is_uploaded_with_its_extension(kinto_memory, name):
    """Found by review (2026-12-05): refused with the default extensions (``400``)."""
    kinto_memory.create_collection()
    meta = kinto_memory.upload(kinto_memory.record_url(), b"content", name).json
    assert meta["filename"] == name
    assert kinto_memory.key_of(meta["location"]).endswith(name.rsplit(".", 1)[1])


def test_join_key():
    assert join_key("a/", "/b", "c.txt") == "a/b/c.txt"
    assert join_key("", "c.txt") == "c.txt"
    with pytest.raises(ValueError):
        join_key("..", "c.txt")


def test_blob_url_joins_as_urljoin_does():
    assert blob_url("", "a.txt") == "a.txt"
    assert blob_url("https://cdn/x/", "a.txt") == "https://cdn/x/a.txt"
    assert blob_url("https://cdn", "a.txt") == "https://cdn/a.txt"


def test_a_taken_key_gives_the_first_free_variant_from_one_listing():
    listings = []

    def listed(prefix):
        listings.append(prefix)
        return ["a/b-1.txt", "a/b-3.txt"]

    def reserved(key):
        return False

    assert free_variant("a/b.txt", lambda key: False, listed, reserved) == "a/b.txt"
    assert listings == []
    assert free_variant("a/b.txt", lambda key: True, listed, reserved) == "a/b-2.txt"
    assert listings == ["a/b-"]


def test_a_reserved_key_is_skipped_as_a_taken_one():
    """Free in the store but named elsewhere (``StoreBase.reserved``): the next free one."""
    reserved = {"a/b.txt", "a/b-2.txt"}.__contains__
    assert free_variant("a/b.txt", lambda key: False, lambda p: [], reserved) == "a/b-1.txt"
    assert free_variant("a/b.txt", lambda key: True, lambda p: ["a/b-1.txt"], reserved) == (
        "a/b-3.txt"
    )
