"""Settings and per-resource policies against an adversarial review (2026-12-05):
configurations an operator could plausibly write (or that kinto-attachment accepted) that
might lose data or answer 5xx. Those marked HELD are attacks the code withstood.
"""

import datetime as dt
import os

import pytest
from pyramid.exceptions import ConfigurationError

from kinto_attachment import settings as attachment_settings
from kinto_attachment.gc import collect
from kinto_attachment.gc.store_check import Refused
from kinto_attachment.state import instance
from kinto_attachment.uploads import intake

from .conftest import ALICE, Kinto, build_settings, dispose, make_app, own_database


def _app(tmp_path, name="store", backend="memory", pg=None, **extra):
    base_path = str(tmp_path / name)
    settings = build_settings(backend, base_path, pg=pg, **extra)
    return Kinto(make_app(settings), base_path)


def _parse(**extra):
    settings = {"attachment.base_path": "/tmp/review-settings-never-written"}
    settings.update({k.removeprefix("kinto."): v for k, v in extra.items()})
    return attachment_settings.parse(settings)


def _key(kinto, location):
    return kinto.key_of(location)


def _create(kinto, bucket, collection):
    kinto.app.put_json(f"/v1/buckets/{bucket}", {}, headers=ALICE, status=(200, 201))
    kinto.app.put_json(
        f"/v1/buckets/{bucket}/collections/{collection}", {}, headers=ALICE, status=(200, 201)
    )


# --- Shared folders, chosen names ----------------------------------------------------------


@pytest.mark.parametrize(
    "folder, scopes",
    [
        # Every bucket in one folder (kinto-attachment's default: no folder at all).
        ("shared", [("b1", "c"), ("b2", "c")]),
        # Ids glued together: "ab"+"c" and "a"+"bc" are the same folder "abc".
        ("{bucket_id}{collection_id}", [("ab", "c"), ("a", "bc")]),
        # A separator the ids may contain: "a-b"/"c" and "a"/"b-c" meet in "a-b-c".
        ("{bucket_id}-{collection_id}", [("a-b", "c"), ("a", "b-c")]),
    ],
)
def test_chosen_names_in_a_shared_folder_never_overwrite_nor_delete_anothers(
    tmp_path, folder, scopes
):
    """HELD: two collections whose folders meet, randomize = false, the same filename: the
    second gets ``-1``; deleting or replacing one record never touches the other's file."""
    kinto = _app(
        tmp_path,
        **{"kinto.attachment.folder": folder, "kinto.attachment.randomize": "false"},
    )
    locations = []
    for (bucket, collection), content in zip(scopes, (b"first", b"second"), strict=True):
        _create(kinto, bucket, collection)
        url = kinto.record_url("r1", bucket, collection)
        r = kinto.upload(url, content=content, filename="same.txt")
        locations.append(r.json["location"])
    keys = [_key(kinto, loc) for loc in locations]
    assert keys[0] != keys[1]
    assert kinto.read(locations[0]) == b"first"
    assert kinto.read(locations[1]) == b"second"
    # Replace the first: only its own old file goes.
    (b0, c0), (b1, c1) = scopes
    r = kinto.upload(kinto.record_url("r1", b0, c0), content=b"third", filename="same.txt")
    assert kinto.read(locations[1]) == b"second"
    # Delete the first record: the second's file stays.
    kinto.app.delete(kinto.record_url("r1", b0, c0), headers=ALICE)
    assert not kinto.exists(r.json["location"])
    assert kinto.read(locations[1]) == b"second"
    # A third upload of that name, elsewhere, takes a free name, never the second's.
    _create(kinto, b0, "other")
    r3 = kinto.upload(kinto.record_url("r9", b0, "other"), content=b"x", filename="same.txt")
    assert _key(kinto, r3.json["location"]) != keys[1]
    assert kinto.read(locations[1]) == b"second"


def test_chosen_names_of_the_same_instant_never_collide(tmp_path, monkeypatch):
    """HELD: ``filename_pattern = {datetime}-{filename}`` and two uploads in the same
    microsecond (a frozen clock): the second gets another name, the first is intact."""

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=tz)

    monkeypatch.setattr(intake, "datetime", Frozen)
    kinto = _app(
        tmp_path,
        **{
            "kinto.attachment.randomize": "false",
            "kinto.attachment.filename_pattern": "{datetime}-{filename}",
        },
    )
    kinto.create_collection()
    a = kinto.upload(kinto.record_url("r1"), content=b"A", filename="x.txt").json["location"]
    b = kinto.upload(kinto.record_url("r2"), content=b"B", filename="x.txt").json["location"]
    assert a != b
    assert a.endswith("20240102030405000006-x.txt")
    assert kinto.read(a) == b"A" and kinto.read(b) == b"B"


def test_a_chosen_file_name_on_a_folders_path_is_no_server_error(tmp_path):
    """Found by review (2026-12-05).

    A bucket whose files go to the root with names as uploaded (kinto-attachment's
    default folder, ``extensions = any`` as Remote Settings has it) and a bucket with a
    folder of its own (``resources.blog.folder = blog-assets``, kinto-attachment's README):
    a user of the first uploads a file named ``blog-assets``. Every later upload to the
    blog bucket must not become a 5xx (the local store could not make the folder, a file has
    its name: a 503 for each). Fixed: the folder's name is varied (``blog-assets-1``)."""
    kinto = _app(
        tmp_path,
        **{
            "kinto.attachment.randomize": "false",
            "kinto.attachment.extensions": "any",
            "kinto.attachment.resources.blog.folder": "blog-assets",
            "kinto.attachment.resources.blog.randomize": "true",
        },
    )
    _create(kinto, "other", "files")
    r = kinto.upload(
        kinto.record_url("r1", "other", "files"), content=b"squatter", filename="blog-assets"
    )
    assert _key(kinto, r.json["location"]) == "blog-assets"
    kinto.create_collection("blog", "articles")
    answer = kinto.upload(kinto.record_url("r1"), content=b"post", status="*")
    assert answer.status_int < 500, (answer.status, answer.body[:300])
    assert kinto.read(r.json["location"]) == b"squatter"


def test_a_record_id_folder_taken_by_a_chosen_name_is_no_server_error(tmp_path):
    """Found by review (2026-12-05).

    Same with ``{id}``: one collection keeps its files in the bucket's folder as uploaded,
    another of the same bucket one folder per record (``{bucket_id}/{id}``): a file named
    like a record id blocked that record's uploads. Fixed: as above."""
    kinto = _app(
        tmp_path,
        **{
            "kinto.attachment.folder": "{bucket_id}",
            "kinto.attachment.randomize": "false",
            "kinto.attachment.extensions": "any",
            "kinto.attachment.resources.blog.photos.folder": "{bucket_id}/{id}",
        },
    )
    kinto.create_collection("blog", "notes")
    kinto.create_collection("blog", "photos")
    kinto.upload(kinto.record_url("n1", "blog", "notes"), content=b"note", filename="r1")
    answer = kinto.upload(
        kinto.record_url("r1", "blog", "photos"), content=b"photo", filename="a.jpg", status="*"
    )
    assert answer.status_int < 500, (answer.status, answer.body[:300])


# --- Per-resource overrides ----------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "kinto.attachment.resources.a.b.c.randomize",  # Three ids: no Kinto id has a dot.
        "kinto.attachment.resources.blog..randomize",
        "kinto.attachment.resources.blog.articles.Randomize",
        "kinto.attachment.resources.blog.articles.randomise",
        "kinto.attachment.resources.blog.articles.max_sizes",
        "kinto.attachment.resources.blog.articles.gc.orphans_grace_seconds",
        "kinto.attachment.resources.blog.base_path",
        "kinto.attachment.resource.blog.randomize",
        "kinto.attachment.randomise",
        "kinto.attachment.keep_old_file",
        "kinto.attachment.resources.randomize",
    ],
)
def test_misspelled_or_ambiguous_settings_stop_start_up(key):
    """HELD: no typo silently falls back to a default (``keep_old_file`` would delete what
    the operator meant to keep)."""
    with pytest.raises(ConfigurationError):
        _parse(**{key: "true" if "max_size" not in key else "10"})


def test_override_keys_with_setting_like_ids_read_as_written():
    """HELD: a collection named like a setting, a bucket named ``events``: the scope is
    read as the operator wrote it."""
    parsed = _parse(
        **{
            "kinto.attachment.resources.blog.randomize.randomize": "false",
            "kinto.attachment.resources.events.destinations.keep_old_files": "true",
            "kinto.attachment.resources.blog.events.destinations": "",
        }
    )
    assert parsed.policy("blog", "randomize").randomize is False
    assert parsed.policy("blog", "other").randomize is True
    assert parsed.policy("events", "destinations").keep_old_files is True
    assert parsed.policy("events", "x").keep_old_files is False


def test_bucket_then_collection_precedence_of_size_extensions_and_keeping():
    """HELD: global < bucket < collection, each setting on its own; 0 at a collection lifts
    its bucket's limit (kinto-attachment's README)."""
    parsed = _parse(
        **{
            "kinto.attachment.max_size_bytes": "5",
            "kinto.attachment.resources.b.max_size": "10",
            "kinto.attachment.resources.b.extensions": "images",
            "kinto.attachment.resources.b.keep_old_files": "true",
            "kinto.attachment.resources.b.big.max_size_bytes": "0",
            "kinto.attachment.resources.b.docs.extensions": "pdf",
        }
    )
    assert parsed.policy("x", "y").max_size_bytes == 5
    assert parsed.policy("b", "y").max_size_bytes == 10
    assert parsed.policy("b", "big").max_size_bytes == 0
    assert parsed.policy("b", "big").keep_old_files is True
    assert parsed.policy("b", "big").extensions == parsed.policy("b", "y").extensions
    assert parsed.policy("b", "docs").extensions == frozenset({"pdf"})
    assert parsed.policy("b", "docs").max_size_bytes == 10


def test_collection_limit_applies_over_its_bucket_at_upload(tmp_path):
    """HELD, end to end: the collection's stricter limit and extension list win."""
    kinto = _app(
        tmp_path,
        **{
            "kinto.attachment.resources.blog.max_size_bytes": "100",
            "kinto.attachment.resources.blog.articles.max_size_bytes": "3",
            "kinto.attachment.resources.blog.articles.extensions": "pdf",
        },
    )
    kinto.create_collection()
    kinto.upload(kinto.record_url("r1"), content=b"four", filename="a.pdf", status=(400, 413))
    kinto.upload(kinto.record_url("r1"), content=b"ok", filename="a.txt", status=400)
    kinto.upload(kinto.record_url("r1"), content=b"ok", filename="a.pdf")
    assert [f for f in kinto.files() if not f.startswith(".")] and all(
        f.endswith(".pdf") for f in kinto.files() if not f.startswith(".")
    )


@pytest.mark.parametrize(
    "name", ["randomize", "keep_old_files", "max_size_bytes", "max_size", "folder"]
)
def test_empty_values_never_mean_the_opposite(name):
    """HELD: an empty value (a template's variable left unset) stops start-up, or means the
    default; never ``randomize = false`` nor ``keep_old_files`` flipped."""
    try:
        parsed = _parse(**{f"kinto.attachment.{name}": ""})
    except ConfigurationError:
        return
    assert parsed.default.randomize is True
    assert parsed.default.keep_old_files is False
    assert parsed.default.max_size_bytes == 0
    assert parsed.default.folder == ""


def test_an_empty_filename_pattern_keeps_the_uploaded_name(tmp_path):
    """Found by review (2026-12-05).

    ``filename_pattern =`` (empty: a template's variable left unset). kinto-attachment
    applies a pattern only when it is set (``if filename_pattern:``): the file keeps its
    uploaded name. Here it is accepted at start-up, then every upload is named ``file``,
    without extension: refused (400) under the default extensions, so every upload of an
    ini kinto-attachment served failed. Fixed: read as ``{filename}``."""
    try:
        kinto = _app(
            tmp_path,
            **{
                "kinto.attachment.randomize": "false",
                "kinto.attachment.filename_pattern": "",
            },
        )
    except ConfigurationError:
        return  # Refused at start-up, naming it: fine too.
    kinto.create_collection()
    r = kinto.upload(kinto.record_url("r1"), content=b"x", filename="report.txt", status="*")
    assert r.status_int in (200, 201), (r.status, r.body[:300])
    assert r.json["location"].endswith("/report.txt")


def test_filename_pattern_names_only_the_files_named_by_their_clients(tmp_path):
    """Held against a review (2026-12-05), a documented difference (docs/migrating.rst).

    kinto-attachment formats ``filename_pattern`` with the random name as ``{filename}``
    when ``randomize = true`` (``{rid}-{filename}``: ``r1-<uuid>.txt``); here the pattern
    names the files named by their clients only, and a random name is the instance's tagged
    name, whole, which the garbage collector reads (docs/gc.rst)."""
    kinto = _app(tmp_path, **{"kinto.attachment.filename_pattern": "{rid}-{filename}"})
    kinto.create_collection()
    r = kinto.upload(kinto.record_url("r1"), content=b"x", filename="a.txt")
    key = _key(kinto, r.json["location"])
    assert instance.tag_of(key) == instance.tag(kinto.registry), key
    assert not os.path.basename(key).startswith("r1-")


def test_keep_old_files_of_one_collection_survives_its_buckets_deletion(tmp_path):
    """HELD: ``keep_old_files`` on one collection only; deleting the whole bucket deletes
    the other collection's files and keeps that one's."""
    kinto = _app(tmp_path, **{"kinto.attachment.resources.blog.kept.keep_old_files": "true"})
    kinto.create_collection("blog", "kept")
    kinto.create_collection("blog", "gone")
    kept = kinto.upload(kinto.record_url("r1", "blog", "kept"), content=b"k").json["location"]
    gone = kinto.upload(kinto.record_url("r1", "blog", "gone"), content=b"g").json["location"]
    kinto.app.delete("/v1/buckets/blog", headers=ALICE)
    assert kinto.read(kept) == b"k"
    assert not kinto.exists(gone)


# --- Settings changed between runs (one PostgreSQL database) -------------------------------


@pytest.fixture
def database():
    with own_database("review_settings") as url:
        yield url


def _pg_app(tmp_path, url, base_path, **extra):
    settings = build_settings("postgresql", str(base_path), pg=url, **extra)
    return Kinto(make_app(settings), str(base_path))


@pytest.mark.postgresql
def test_keep_old_files_toggled_between_runs_keeps_what_was_kept(tmp_path, database):
    """HELD: a file kept by ``keep_old_files = true`` (replaced) stays kept once the setting
    is false: neither the record's deletion nor the collector removes it."""
    store = tmp_path / "store"
    keeping = _pg_app(tmp_path, database, store, **{"kinto.attachment.keep_old_files": "true"})
    other = None
    try:
        keeping.create_collection()
        old = keeping.upload(keeping.record_url("r1"), content=b"v1").json["location"]
        keeping.upload(keeping.record_url("r1"), content=b"v2")
        assert keeping.read(old) == b"v1"
        dispose(keeping)
        other = _pg_app(
            tmp_path,
            database,
            store,
            **{
                "kinto.attachment.keep_old_files": "false",
                "kinto.attachment.gc.orphans_grace_seconds": "0",
            },
        )
        other.app.delete(other.record_url("r1"), headers=ALICE)
        collect(other.registry, now=None)
        assert other.read(old) == b"v1"
    finally:
        dispose(*(n for n in (keeping, other) if n is not None))


@pytest.mark.postgresql
def test_base_path_moved_one_folder_up_never_collects_the_old_files(tmp_path, database):
    """Found by review (2026-12-05).

    ``base_path`` moved one folder up (``/srv/kinto/attachments`` → ``/srv/kinto``) and the
    servers ran like that a while: the old files are now listed under
    ``attachments/bucket/...``, which no reference names, while their records name
    ``bucket/...``, missing (dangling). Once the new uploads are half of the sample, the
    store check passes, and the collector deletes every old file: the files the dangling
    references name, which moving base_path back would have restored. A file whose key ends
    with ``/`` + a dangling reference's key is the evidence of a moved store. Fixed: such an
    orphan is kept, and reported."""
    parent = tmp_path / "srv"
    first = _pg_app(tmp_path, database, parent / "attachments")
    second = None
    try:
        first.create_collection()
        old = [
            first.upload(first.record_url(f"old{i}"), content=b"old").json["location"]
            for i in range(2)
        ]
        old_keys = [first.key_of(loc) for loc in old]
        dispose(first)
        second = _pg_app(
            tmp_path, database, parent, **{"kinto.attachment.gc.orphans_grace_seconds": "0"}
        )
        for i in range(6):
            second.upload(second.record_url(f"new{i}"), content=b"new")
        for key in old_keys:  # Still there before the collection.
            assert os.path.exists(parent / "attachments" / key), key
        try:
            collect(second.registry)
        except Refused:
            return  # Refused: nothing removed, fine.
        for key in old_keys:
            assert os.path.exists(parent / "attachments" / key), key
    finally:
        dispose(*(n for n in (first, second) if n is not None))


@pytest.mark.postgresql
def test_base_path_moved_to_a_parent_with_nothing_new_is_refused(tmp_path, database):
    """HELD: right after the move (no new upload), the store check refuses the orphan pass."""
    parent = tmp_path / "srv"
    first = _pg_app(tmp_path, database, parent / "attachments")
    second = None
    try:
        first.create_collection()
        loc = first.upload(first.record_url("r1"), content=b"old").json["location"]
        key = first.key_of(loc)
        dispose(first)
        second = _pg_app(
            tmp_path, database, parent, **{"kinto.attachment.gc.orphans_grace_seconds": "0"}
        )
        with pytest.raises(Refused):
            collect(second.registry)
        assert os.path.exists(parent / "attachments" / key)
        # Downloads of the now missing file: a clear answer, no 500.
        r = second.app.get(second.record_url("r1") + "/attachment", headers=ALICE, status="*")
        assert r.status_int != 500 and r.status_int < 600
    finally:
        dispose(*(n for n in (first, second) if n is not None))


@pytest.mark.postgresql
def test_base_url_changed_between_runs_deletes_the_right_file(tmp_path, database):
    """HELD: a record written under one ``base_url``, deleted by a server with another: its
    own file goes, no other."""
    store = tmp_path / "store"
    first = _pg_app(tmp_path, database, store)
    second = None
    try:
        first.create_collection()
        a = first.upload(first.record_url("r1"), content=b"a").json["location"]
        b = first.upload(first.record_url("r2"), content=b"b").json["location"]
        ka, kb = first.key_of(a), first.key_of(b)
        dispose(first)
        second = _pg_app(
            tmp_path, database, store, **{"kinto.attachment.base_url": "https://cdn2.example/x/"}
        )
        second.app.delete(second.record_url("r1"), headers=ALICE)
        assert not (store / ka).exists()
        assert (store / kb).read_bytes() == b"b"
    finally:
        dispose(*(n for n in (first, second) if n is not None))
