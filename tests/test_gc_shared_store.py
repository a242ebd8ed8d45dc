"""Two Kinto instances given one store (staging beside production, each its own database):
each collector deletes its own orphans only, by the tag the names carry
(:mod:`kinto_attachment.state.instance`)."""

import contextlib
import os
import time
import uuid

import pytest

from kinto_attachment import adoption, gc
from kinto_attachment.state import instance

from .conftest import Kinto, build_settings, make_app, own_database, s3_settings
from .test_gc import GRACE, after_grace, orphan, start_tus


@contextlib.contextmanager
def databases(backend, count):
    """``count`` databases of their own (None each for the memory backend)."""
    with contextlib.ExitStack() as stack:
        if backend == "memory":
            yield [None] * count
        else:
            yield [
                stack.enter_context(own_database("kinto_attachment_shared")) for _ in range(count)
            ]


def instances(backend, urls, base_path, **store):
    """One adopted instance per database, all on the store at ``base_path`` (or ``store``)."""
    made = []
    for url in urls:
        settings = build_settings(backend, base_path, pg=url, **GRACE)
        if store:
            del settings["kinto.attachment.base_path"]
            settings.update(store)
        bucket = store.get("kinto.attachment.aws.bucket_name")
        kinto = Kinto(make_app(settings), None if store else base_path, bucket)
        kinto.create_collection()
        adoption.adopt(kinto.registry)
        made.append(kinto)
    return made


def own_orphan(kinto, extension=".txt"):
    """A committed blob of ``kinto`` that nothing references (a crash between the store's
    commit and the transaction's)."""
    return orphan(kinto, f"blog/articles/{instance.random_name(kinto.registry)}{extension}")


@pytest.mark.parametrize(
    "backend", ["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)]
)
def test_each_collector_deletes_its_own_orphans_and_keeps_the_other_instances_files(
    backend, tmp_path
):
    shared_path = str(tmp_path / "shared")
    with databases(backend, 2) as urls:
        first, second = instances(backend, urls, shared_path)
        theirs = second.upload(second.record_url("r1"), b"the other instance's").json
        ours = first.upload(first.record_url("r1"), b"ours").json
        first_orphan, second_orphan = own_orphan(first), own_orphan(second)

        report = gc.collect(first.registry, now=after_grace())

        assert [o.key for o in report.orphans] == [first_orphan]
        assert report.others == 2 and set(report.other_examples) == {
            second.key_of(theirs["location"]),
            second_orphan,
        }
        assert "Files and uploads of other Kinto instances sharing this store (kept): 2" in (
            report.describe()
        )
        assert second.read(theirs["location"]) == b"the other instance's"

        report = gc.collect(second.registry, now=after_grace())

        assert [o.key for o in report.orphans] == [second_orphan]
        assert first.read(ours["location"]) == b"ours"
        assert second.read(theirs["location"]) == b"the other instance's"
        assert sorted(first.files()) == sorted(first.key_of(a["location"]) for a in (ours, theirs))


def test_orphans_whose_names_say_nobody_are_kept_while_another_instance_is_in_sight(tmp_path):
    """kinto-attachment's names (a version 4 UUID) and clients' names (``randomize =
    false``) carry no tag: deleted by an instance alone with its store, kept by one that
    sees another's files there."""
    shared_path = str(tmp_path / "shared")
    (first,) = instances("memory", [None], shared_path)
    legacy = f"blog/articles/{uuid.uuid4().hex}.png"
    for key in (legacy, "blog/articles/report.pdf"):
        orphan(first, key)

    report = gc.collect(first.registry, now=after_grace())

    assert sorted(o.key for o in report.orphans) == sorted([legacy, "blog/articles/report.pdf"])
    assert first.files() == []

    for key in (legacy, "blog/articles/report.pdf"):
        orphan(first, key)
    (second,) = instances("memory", [None], shared_path)
    theirs = second.upload(second.record_url("r1"), b"theirs").json  # Young, yet in sight.

    report = gc.collect(first.registry, now=after_grace())

    assert report.orphans == [] and report.others == 1
    assert sorted(report.unowned) == sorted([legacy, "blog/articles/report.pdf"])
    assert "Orphans whose names do not say whose they are (kept): 2" in report.describe()
    assert sorted(first.files()) == sorted(
        [legacy, "blog/articles/report.pdf", second.key_of(theirs["location"])]
    )


def test_uploads_of_another_instance_are_never_aborted(request):
    """On S3 an upload in progress is a multipart upload under its final key, which no
    listing of objects shows: the other instance's, however old, is left to it, and so is one
    whose name says nobody's (``randomize = false``); this instance's own, abandoned, is
    aborted."""
    store = s3_settings(request.getfixturevalue("s3_server"))
    first, second = instances("memory", [None, None], None, **store)
    start_tus(second, 10, b"01234")
    [theirs] = [key for key in second.files() if key.startswith("unfinished:")]
    store = first.registry.attachment_store
    abandoned = store.start_resumable(
        f"blog/articles/{instance.random_name(first.registry)}.txt", "text/plain"
    )
    unowned = store.start_resumable("blog/articles/report.pdf", "application/pdf")

    report = gc.collect(first.registry, now=after_grace())

    assert [(p.key, p.upload_id) for p in report.aborted] == [
        (abandoned["key"], abandoned["upload_id"])
    ]
    assert report.others == 1 and ["unfinished:" + k for k in report.other_examples] == [theirs]
    assert report.unowned == [unowned["key"]]
    assert {theirs, "unfinished:blog/articles/report.pdf"} <= set(second.files())


def test_a_flush_takes_its_instances_files_and_tag_and_leaves_the_others(tmp_path):
    """``POST /__flush__`` deletes the files the flush unreferences and the orphans the
    collector would take: only this instance's, however old the other's."""
    shared_path = tmp_path / "shared"
    first, second = instances("memory", [None, None], str(shared_path))
    theirs = second.upload(second.record_url("r1"), b"theirs").json
    their_orphan, our_orphan = own_orphan(second), own_orphan(first)
    first.upload(first.record_url("r1"), b"ours")
    legacy = orphan(first, f"blog/articles/{uuid.uuid4().hex}.txt")
    two_days_ago = time.time() - 2 * 86400
    for path in shared_path.rglob("*"):
        os.utime(path, (two_days_ago, two_days_ago))
    tag = instance.tag(first.registry)

    first.app.post("/v1/__flush__", status=202)

    assert sorted(first.files()) == sorted(
        [second.key_of(theirs["location"]), their_orphan, legacy]
    )
    assert our_orphan not in first.files()
    assert instance.tag(first.registry) != tag
