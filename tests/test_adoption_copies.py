"""Adoption's step 2 (the files of copies: records without a link) and records whose ids
are too long for a link, against a review of 2026-12-05's fix of them (the copy keeping a
key that does not exist; a later run keeping our own files; a record URI too long for a
link). Those marked HELD are attacks the code withstood.
"""

import pytest
import transaction

from kinto_attachment import adoption
from kinto_attachment.state import links

from .conftest import ALICE, cached_app
from .test_adoption import legacy_record, legacy_row, prepared, store_file
from .test_adoption_attacks import collect_everything, retained_keys
from .test_adoption_hostile import memory_app, set_attachment


PARENT = "/buckets/blog/collections/articles"


def copy_of(kinto, record_id, attachment, collection="main"):
    """kinto-signer's copy of a record (another collection, no link, no row)."""
    kinto.app.put_json(
        f"/v1/buckets/blog/collections/{collection}", {}, headers=ALICE, status=(200, 201)
    )
    copied = {k: v for k, v in attachment.items() if k != "key"}
    set_attachment(kinto, record_id, copied, collection=collection)


# 1. A copy naming, under base_url, a file that is lost.


def test_a_copy_naming_a_lost_file_keeps_its_name_from_new_uploads(tmp_path_factory, request):
    """Found by a review of a fix (2026-12-05).

    kinto-signer's copy (``main``) names, under the current ``base_url``, a file
    kinto-attachment deleted (the original was replaced or deleted without
    ``keep_old_files``; the copy is re-signed later). Before 3793a58 step 2 retained the key
    ``key_for_url`` gives whatever the store held: the name stayed reserved
    (``links.held`` -> ``is_retained``), and a new upload of that name got ``lost-1.txt``.
    Now step 2 retains that key only if the store holds it, so nothing reserves it: a new
    upload (``randomize = false``) takes ``lost.txt``, and the public copy serves another
    record's bytes (the copy has no link: its download serves ``key_for_url``). The copy is
    also reported as "not under base_url", which it is. Fixed: a key that no link vouches for
    otherwise is kept, stored or not (``copies._named``)."""
    kinto = memory_app(tmp_path_factory, request, **{"kinto.attachment.randomize": "false"})
    store = kinto.registry.attachment_store
    legacy_record(kinto, "r0", link="8")  # So that the store is the servers' own.
    lost = {
        "filename": "lost.txt",
        "location": store.url("lost.txt"),
        "hash": "1" * 64,
        "mimetype": "text/plain",
        "size": 14,
    }
    copy_of(kinto, "signed", lost)
    assert not store.exists("lost.txt")

    report = adoption.adopt(kinto.registry)
    assert adoption.done(kinto.registry)

    new = kinto.upload(kinto.record_url("new"), b"secret content", "lost.txt").json
    copy_url = kinto.record_url("signed", collection="main") + "/attachment"
    served = kinto.app.get(copy_url, headers=ALICE, status="*")
    assert served.body != b"secret content", (
        "the signer copy serves another record's file: a new upload took the name it names "
        f"(new key {kinto.key_of(new['location'])!r}; retained {sorted(retained_keys(kinto))}; "
        f"reported foreign: {report.foreign})"
    )
    assert kinto.key_of(new["location"]) == "lost-1.txt"


def test_a_copy_naming_a_lost_file_is_not_reported_as_outside_base_url(tmp_path_factory, request):
    """Found by a review of a fix (2026-12-05).

    (report). The same copy is listed under "Records whose location is not under
    base_url": the operator is told to fix ``base_url``, which is right. Fixed: as above."""
    kinto = memory_app(tmp_path_factory, request)
    store = kinto.registry.attachment_store
    legacy_record(kinto, "r0", link="8")
    lost = {"filename": "lost.txt", "location": store.url("lost.txt"), "size": 3}
    copy_of(kinto, "signed", lost)
    report = adoption.adopt(kinto.registry)
    assert report.foreign == [], report.describe()


# 2. The suffix rule: a short key that is the tail of a longer one.


def test_a_copy_under_base_url_does_not_keep_another_records_file_by_its_tail(
    tmp_path_factory, request
):
    """Found by a review of a fix (2026-12-05).

    (leak). R1's file is ``x/a.txt``, R2's ``a.txt`` (both adopted, different
    sha256, each record naming its own file under the current ``base_url``). kinto-signer's
    copy of R1 names ``https://.../x/a.txt``, a file the store holds. Step 2 now also
    retains every path suffix some link names (``linked_keys``), even when ``key_for_url``'s
    key is stored: ``a.txt``, R2's file, which the copy neither serves (its download serves
    ``x/a.txt``) nor shares (its sha256 differs from R2's link's). Retained, it outlives R2
    for good: deleting R2, and the collector, never delete it. Before 3793a58 only ``x/a.txt``
    was retained. Fixed: the key ``base_url`` reads is the copy's alone when the store holds it."""
    kinto = memory_app(tmp_path_factory, request)
    store = kinto.registry.attachment_store
    first = legacy_record(
        kinto, "r1", b"first file", key=store_file(kinto, b"first file", "x/a.txt")
    )
    second = legacy_record(kinto, "r2", b"second", key=store_file(kinto, b"second", "a.txt"))
    set_attachment(
        kinto, "r1", {**{k: v for k, v in first.items() if k != "key"}, "hash": "1" * 64}
    )
    set_attachment(
        kinto, "r2", {**{k: v for k, v in second.items() if k != "key"}, "hash": "2" * 64}
    )
    copy_of(kinto, "r1", {**first, "hash": "1" * 64})

    adoption.adopt(kinto.registry)
    assert "x/a.txt" in retained_keys(kinto)  # The copy's own file: kept.

    kinto.app.delete(kinto.record_url("r2"), headers=ALICE)
    collect_everything(kinto)
    assert not store.exists("a.txt"), (
        f"R2's file is kept for good by a copy of R1 (retained: {sorted(retained_keys(kinto))})"
    )


def test_held_a_copy_under_an_old_host_keeps_its_file_not_our_upload_of_its_tail(
    tmp_path_factory, request
):
    """HELD. The copy names ``https://old-cdn/x/a.txt`` (another host) for the legacy file
    ``x/a.txt``; our own upload (``randomize = false``) is ``a.txt``. A later migrate keeps
    ``x/a.txt`` (the original's link names it) and leaves ``a.txt`` to its record."""
    kinto = memory_app(tmp_path_factory, request, **{"kinto.attachment.randomize": "false"})
    store = kinto.registry.attachment_store
    key = store_file(kinto, b"legacy", "x/a.txt")
    original = legacy_record(kinto, "r1", b"legacy", key=key, location="https://old-cdn/x/a.txt")
    adoption.adopt(kinto.registry)
    ours = kinto.upload(kinto.record_url("r9"), b"ours", "a.txt").json
    assert kinto.key_of(ours["location"]) == "a.txt"
    copy_of(kinto, "r1", original)

    adoption.adopt(kinto.registry)  # The next deploy.
    kinto.app.delete(kinto.record_url("r1"), headers=ALICE)
    kinto.app.delete(kinto.record_url("r9"), headers=ALICE)
    collect_everything(kinto)
    assert store.exists("x/a.txt")
    assert not store.exists("a.txt")


# 3. Replacements after the switch, copies of adopted vs uploaded records.


@pytest.mark.parametrize("randomize", ["true", "false"])
@pytest.mark.parametrize("signed", ["before-adoption", "after-adoption"])
def test_held_the_old_legacy_file_a_copy_names_survives_a_replacement_by_an_upload(
    tmp_path_factory, request, randomize, signed
):
    """HELD. R (legacy, adopted) is copied by kinto-signer (before the first migrate, or
    after it and before the next); then R is replaced by an upload. The copy's file (R's old
    one) stays through the replacement, later migrates and the collector; R's new file goes
    with R."""
    kinto = memory_app(tmp_path_factory, request, **{"kinto.attachment.randomize": randomize})
    store = kinto.registry.attachment_store
    original = legacy_record(kinto, "r1", b"legacy bytes")
    if signed == "before-adoption":
        copy_of(kinto, "r1", original)
    adoption.adopt(kinto.registry)
    if signed == "after-adoption":
        copy_of(kinto, "r1", original)
        adoption.adopt(kinto.registry)
    new = kinto.upload(kinto.record_url("r1"), b"new bytes", "old.txt").json
    adoption.adopt(kinto.registry)
    collect_everything(kinto)
    assert store.exists(original["key"])
    copy_url = kinto.record_url("r1", collection="main") + "/attachment"
    assert kinto.app.get(copy_url, headers=ALICE).body == b"legacy bytes"
    kinto.app.delete(kinto.record_url("r1"), headers=ALICE)
    collect_everything(kinto)
    assert store.exists(original["key"])
    assert not kinto.exists(new["location"])


def test_held_replaced_before_the_copys_migrate_the_old_file_stays(tmp_path_factory, request):
    """HELD. Adopted R copied by kinto-signer, R replaced by an upload before any migrate saw
    the copy, then a migrate: the old file is gone with the replacement (as documented:
    the copy was never seen), or kept; never a key of ours retained for it."""
    kinto = memory_app(tmp_path_factory, request, **{"kinto.attachment.randomize": "false"})
    original = legacy_record(kinto, "r1", b"legacy bytes")
    adoption.adopt(kinto.registry)
    copy_of(kinto, "r1", original)
    new = kinto.upload(kinto.record_url("r1"), b"new bytes", "old.txt").json
    adoption.adopt(kinto.registry)
    assert kinto.key_of(new["location"]) not in retained_keys(kinto)


# 4. Dry runs against real runs.


MOVES = {
    "cdn-root": ("https://files.example.com/", "https://files.example.com/attachments/"),
    "other-host": ("https://files.example.com/", "https://old.example.com/"),
}


@pytest.mark.parametrize("move", list(MOVES))
def test_held_dry_run_counts_copies_under_an_older_base_url_as_the_run(
    tmp_path_factory, request, move
):
    """HELD. Copies of adopted records naming their file under an older base URL: the dry
    run reports what the run does."""
    base_url, old = MOVES[move]
    kinto = memory_app(tmp_path_factory, request, **{"kinto.attachment.base_url": base_url})
    for i in range(3):
        key = store_file(kinto, b"content %d" % i)
        original = legacy_record(kinto, f"r{i}", key=key, location=old + key)
        copy_of(kinto, f"r{i}", original)
    dry = adoption.adopt(kinto.registry, dry_run=True)
    done = adoption.adopt(kinto.registry)
    summary = lambda r: (r.linked, r.retained, r.unlinked, len(r.foreign), len(r.long_ids))  # noqa: E731
    assert summary(dry) == summary(done)


def test_dry_run_reports_a_copy_of_a_kept_old_file_under_an_older_url_as_the_run(
    tmp_path_factory, request
):
    """Found by a review of a fix (2026-12-05).

    (report; predates 3793a58: fails with its parent's copies.py too).
    Dry run against run: a kinto-attachment row whose record no longer names its file
    (the record replaced under ``keep_old_files`` by a kinto-attachment that kept the row),
    and a kinto-signer copy naming that old file under an older base URL. The run retains the
    file (step 1) and lists the copy as not under ``base_url`` (``linked_keys`` finds only
    *linked* keys); the dry run counts it in neither (``legacy.names``: the row). Same
    counts expected. Fixed: a file step 1 retained is one a link named
    (``locations.linked_keys``)."""
    kinto = memory_app(
        tmp_path_factory, request, **{"kinto.attachment.base_url": "https://files.example.com/"}
    )
    old = "https://old.example.com/"
    key = store_file(kinto, b"old file")
    legacy_record(kinto, "r1", key=key, location=old + key)
    newer_key = store_file(kinto, b"newer")  # Its row stays for the old file too.
    set_attachment(kinto, "r1", {"filename": "new.txt", "location": old + newer_key, "size": 5})
    with transaction.manager:
        legacy_row(kinto.registry.storage, "r1", newer_key)
    copy_of(kinto, "r1", {"filename": "old.txt", "location": old + key, "size": 8})
    dry = adoption.adopt(kinto.registry, dry_run=True)
    done = adoption.adopt(kinto.registry)
    assert kinto.registry.attachment_store.exists(key)
    assert (dry.unlinked, len(dry.foreign)) == (done.unlinked, len(done.foreign)), (
        dry.describe(),
        done.describe(),
    )


# 5. Record ids too long for a link.


def _long_id_record(kinto, content=b"long id file", length=2100):
    store = kinto.registry.attachment_store
    long_id = "x" * length
    key = store_file(kinto, content)
    attachment = {
        "filename": "x.txt",
        "location": store.url(key),
        "size": len(content),
        "hash": "0" * 64,
    }
    with transaction.manager:
        storage = kinto.registry.storage
        storage.create(
            resource_name="record", parent_id=PARENT, obj={"id": long_id, "attachment": attachment}
        )
        legacy_row(storage, long_id, key)
    return long_id, key


def test_held_a_long_id_record_deleted_later_keeps_its_file_and_the_gc_too(
    tmp_path_factory, request
):
    """HELD. A record whose URI is over ``MAX_RECORD_URI``: its file retained, listed, and
    kept after the record is deleted (its attachment route, then the record) and by the
    collector; the dry run reports it as the run."""
    kinto = memory_app(tmp_path_factory, request)
    legacy_record(kinto, "r0")
    long_id, key = _long_id_record(kinto)
    dry = adoption.adopt(kinto.registry, dry_run=True)
    report = adoption.adopt(kinto.registry)
    assert dry.long_ids == report.long_ids == [links.record_uri("blog", "articles", long_id)]
    assert (dry.linked, dry.retained) == (report.linked, report.retained) == (1, 1)
    assert key in retained_keys(kinto)
    url = kinto.record_url(long_id)
    kinto.app.get(url + "/attachment", headers=ALICE, status="*")
    kinto.app.delete(url + "/attachment", headers=ALICE, status="*")
    kinto.app.delete(url, headers=ALICE, status="*")
    collect_everything(kinto)
    again = adoption.adopt(kinto.registry)
    assert again.long_ids == [] and again.changes == 0
    assert kinto.registry.attachment_store.exists(key)


def test_held_a_copy_of_a_long_id_record_keeps_the_file(tmp_path_factory, request):
    """HELD. A kinto-signer copy (short id) of a long-id record: the file is retained once
    (not counted again for the copy, dry run as run) and outlives the original."""
    kinto = memory_app(tmp_path_factory, request)
    legacy_record(kinto, "r0")
    long_id, key = _long_id_record(kinto)
    store = kinto.registry.attachment_store
    copy_of(kinto, "c1", {"filename": "x.txt", "location": store.url(key), "size": 12})
    dry = adoption.adopt(kinto.registry, dry_run=True)
    report = adoption.adopt(kinto.registry)
    assert dry.unlinked == report.unlinked == 0
    kinto.app.delete(kinto.record_url(long_id), headers=ALICE, status="*")
    collect_everything(kinto)
    assert store.exists(key)


# 6. Cost with many copies (S3: one request per ``exists``).


@pytest.mark.parametrize("blobs", ["local", "s3"])
def test_a_later_migrate_with_nothing_new_asks_the_store_nothing_per_copy(
    tmp_path_factory, request, monkeypatch, blobs
):
    """Found by a review of a fix (2026-12-05).

    (cost). Adoption runs at every ``kinto migrate`` (every deploy). After the
    switch every kinto-signer copy (Remote Settings: every record of ``main`` and
    ``main-preview``) is a record with an attachment and no link: step 2 now asks the store
    whether ``key_for_url``'s key exists for each, before it looks whether that key is
    retained already (``copies._stored``, one S3 ``HeadObject`` per copy, at every deploy),
    and also runs ``linked_keys``' and ``uploaded_among``'s queries for each. Before
    3793a58 a later run asked the store nothing. Expected: a copy whose key is retained
    already (all of them, after the first run) costs no store request. Fixed: a key retained
    already, or ours, is passed before any lookup (``copies._accounted``)."""
    kinto = prepared(cached_app("memory", tmp_path_factory, request, blobs=blobs))
    store = kinto.registry.attachment_store
    count = 30
    for i in range(count):
        original = legacy_record(kinto, f"r{i}", b"content %d" % i)
        copy_of(kinto, f"r{i}", original)
    adoption.adopt(kinto.registry)
    assert adoption.done(kinto.registry)

    calls = []
    stat = type(store).stat
    monkeypatch.setattr(
        type(store), "stat", lambda self, key: calls.append(key) or stat(self, key)
    )
    again = adoption.adopt(kinto.registry)
    assert again.changes == 0
    assert calls == [], f"a later migrate with nothing to do made {len(calls)} store requests"
