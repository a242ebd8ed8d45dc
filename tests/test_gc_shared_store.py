"""Two Kinto instances given one store (staging beside production, each its own database):
each collector deletes its own orphans only, by the tag the names carry
(:mod:`kinto_attachment.state.instance`)."""

import contextlib
import hashlib
import os
import time
import uuid

import pytest
from kinto.core import scripts as kinto_scripts

from kinto_attachment import adoption, gc
from kinto_attachment.state import instance

from .conftest import ALICE, Kinto, build_settings, make_app, own_database, s3_settings
from .support.gcs_server import gcs_settings
from .test_gc import GRACE, after_grace, orphan, send_tus, start_tus


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


def names_a_file(kinto):
    """The key of a file a record of ``kinto`` names: its database is the servers' own, and
    its collector may take the orphans whose names say nobody's for its own."""
    return kinto.key_of(kinto.upload(kinto.record_url("named"), b"named").json["location"])


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
    named = names_a_file(first)
    legacy = f"blog/articles/{uuid.uuid4().hex}.png"
    for key in (legacy, "blog/articles/report.pdf"):
        orphan(first, key)

    report = gc.collect(first.registry, now=after_grace())

    assert sorted(o.key for o in report.orphans) == sorted([legacy, "blog/articles/report.pdf"])
    assert first.files() == [named]

    # Their names are in quarantine a while (``state.replaced``): the new ones get others.
    keys = [orphan(first, key) for key in (legacy, "blog/articles/report.pdf")]
    assert keys != [legacy, "blog/articles/report.pdf"]
    (second,) = instances("memory", [None], shared_path)
    theirs = second.upload(second.record_url("r1"), b"theirs").json  # Young, yet in sight.

    report = gc.collect(first.registry, now=after_grace())

    assert report.orphans == [] and report.others == 1
    assert sorted(report.unowned) == sorted(keys)
    assert "Orphans whose names do not say whose they are (kept): 2" in report.describe()
    assert sorted(first.files()) == sorted([named, *keys, second.key_of(theirs["location"])])


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
    [tail] = [k for k in second.files() if k.startswith("__uploads__/")]
    assert report.others == 2
    assert sorted(report.other_examples) == sorted([tail, theirs.removeprefix("unfinished:")])
    assert report.unowned == [unowned["key"]]
    assert {theirs, "unfinished:blog/articles/report.pdf"} <= set(second.files())


@pytest.mark.parametrize("blobs", ["local", "s3", "gcs"])
def test_the_working_files_of_another_instances_upload_are_kept(blobs, request, tmp_path):
    """A resumable upload's bytes wait between its requests in working files of the store
    (local: a file under ``.uploads/``; S3: the tail under 5 MiB; GCS: the composed object):
    another instance's collector never deletes them, however long the upload pauses; this
    instance's own, abandoned, go."""
    store = {}
    if blobs == "s3":
        store = s3_settings(request.getfixturevalue("s3_server"))
    elif blobs == "gcs":
        store = gcs_settings(request.getfixturevalue("gcs_server"))
    first, second = instances("memory", [None, None], str(tmp_path / "shared"), **store)
    theirs = start_tus(second, 10, b"01234")
    working = [listed.key for listed in listing(second) if listed.temporary]
    assert working, "the upload waits in a working file"
    mine = first.registry.attachment_store.start_resumable(
        f"blog/articles/{instance.random_name(first.registry)}.txt", "text/plain"
    )
    mine = first.registry.attachment_store.append(mine, 0, [b"abandoned"]).state

    report = gc.collect(first.registry, now=after_grace())

    assert set(working) <= {listed.key for listed in listing(second)}, "an upload lost its bytes"
    assert report.others == len(working) + (blobs == "s3")  # S3: its multipart upload too.
    assert not {listed.key for listed in listing(first)} & set(working_files(mine)), "kept"
    send_tus(second, theirs, b"56789", 5)
    attachment = second.app.get(second.record_url("r2"), headers=ALICE).json["data"]["attachment"]
    assert second.read(attachment["location"]) == b"0123456789"


def listing(kinto):
    """What the store holds, as the collector lists it."""
    return list(kinto.registry.attachment_store.iter_blobs())


def working_files(state):
    """The names of the working files of a resumable upload's ``state`` (any store)."""
    return [state[name] for name in ("temp", "tail") if state.get(name)]


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
    assert instance.tag(first.registry) == tag
    # Written back: another process of the instance reads it.
    assert instance._read_or_make(first.registry.storage) == tag


def test_an_orphan_younger_than_a_flush_stays_the_instances(tmp_path):
    """A flush leaves an unreferenced file younger than the grace period to the collector,
    which takes it later: the flush wrote the tag back, it is still the instance's (and
    nothing of another's keeps the untagged orphans)."""
    (kinto,) = instances("memory", [None], str(tmp_path / "store"))
    young = own_orphan(kinto)

    kinto.app.post("/v1/__flush__", status=202)
    kinto.create_collection()
    named = names_a_file(kinto)
    legacy = orphan(kinto, f"blog/articles/{uuid.uuid4().hex}.txt")

    report = gc.collect(kinto.registry, now=after_grace())

    assert sorted(o.key for o in report.orphans) == sorted([young, legacy])
    assert report.others == 0 and kinto.files() == [named]


@pytest.mark.postgresql
def test_after_a_flush_every_process_of_the_instance_names_files_with_one_tag(tmp_path):
    """Two processes (two apps) of one instance (one database): ``__flush__`` on the first
    keeps the instance's tag, the one the second goes on naming files with."""
    base_path = str(tmp_path / "store")
    with own_database("kinto_attachment_review") as url:
        settings = build_settings("postgresql", base_path, pg=url, **GRACE)
        first = Kinto(make_app(settings), base_path)
        first.create_collection()
        adoption.adopt(first.registry)
        second = Kinto(make_app(settings), base_path)
        assert instance.tag(first.registry) == instance.tag(second.registry)

        first.app.post("/v1/__flush__", status=202)
        first.create_collection()
        first.upload(first.record_url("r1"), b"first")
        crashed = own_orphan(second)  # The second's upload, its transaction lost.

        report = gc.collect(first.registry, now=after_grace())

        assert [o.key for o in report.orphans] == [crashed]


def test_a_lone_instance_collects_a_client_named_orphan_that_looks_tagged(tmp_path):
    """``randomize = false`` keeps a client's name, an MD5 for content-addressed clients: not
    another instance's, whose file would keep every untagged orphan."""
    (kinto,) = instances("memory", [None], str(tmp_path / "store"))
    names_a_file(kinto)
    digest = hashlib.md5(b"photo-12.jpg").hexdigest()  # 9cb9b778 24fb 825c 837e...
    client_named = orphan(kinto, f"blog/articles/{digest}.jpg")
    other_client_named = orphan(kinto, "blog/articles/report.pdf")

    report = gc.collect(kinto.registry, now=after_grace())

    assert sorted(o.key for o in report.orphans) == sorted([client_named, other_client_named])
    assert report.others == 0


def test_untagged_orphans_are_kept_when_another_instance_upload_is_in_sight(request):
    """Another instance's upload in progress (a pending S3 multipart upload, its only trace)
    puts it in sight before any file goes: ``report.pdf`` may well be its file
    (``randomize = false``)."""
    store = s3_settings(request.getfixturevalue("s3_server"))
    first, second = instances("memory", [None, None], None, **store)
    start_tus(second, 10, b"01234")  # Only a pending multipart upload (and a tail) so far.
    unowned = orphan(first, "blog/articles/report.pdf")

    report = gc.collect(first.registry, now=after_grace())

    assert report.others == 2  # Its multipart upload and the tail of its bytes.
    assert unowned in report.unowned and unowned in first.files()


def test_flush_keeps_untagged_files_when_another_instance_upload_is_in_sight(request):
    """Likewise for ``POST /__flush__``."""
    store = s3_settings(request.getfixturevalue("s3_server"))
    first, second = instances(
        "memory", [None, None], None, **store, **{"kinto.attachment.gc.orphans_grace_seconds": "0"}
    )
    start_tus(second, 10, b"01234")
    unowned = orphan(first, "blog/articles/report.pdf")

    first.app.post("/v1/__flush__", status=202)

    assert unowned in first.files()


@pytest.mark.postgresql
def test_first_upload_with_one_database_connection_per_process(tmp_path):
    """The tag is read (or made) on a connection of its own: at start-up, not by the first
    request that needs it, which would wait for a second connection of the pool while it
    holds one (with a pool of one, until the pool's timeout: a 503)."""
    base_path = str(tmp_path / "store")
    with own_database("kinto_attachment_review") as url:
        settings = build_settings(
            "postgresql",
            base_path,
            pg=url,
            **{
                "kinto.storage_pool_size": "1",
                "kinto.storage_max_overflow": "0",
                "kinto.storage_pool_timeout": "2",
            },
        )
        migrated = make_app(settings)  # ``kinto migrate``, before the server starts.
        kinto_scripts.migrate({"registry": migrated.app.registry})
        kinto = Kinto(make_app(settings), base_path)
        kinto.create_collection()

        kinto.upload(kinto.record_url("r1"), b"first upload", status=201)


def test_another_instances_files_retained_at_first_adoption_still_put_it_in_sight(tmp_path):
    """An instance that joins a store already in use retains, at its first adoption, every
    file it finds there, the other's included: referenced here, they still put the other in
    sight, so that its client-named file (``randomize = false``) is kept."""
    shared_path = str(tmp_path / "shared")
    plain = {"kinto.attachment.resources.blog.plain.randomize": "false", **GRACE}
    second = Kinto(make_app(build_settings("memory", shared_path, **plain)), shared_path)
    second.create_collection()
    second.create_collection("blog", "plain")
    adoption.adopt(second.registry)
    tagged = second.upload(second.record_url("r1"), b"tagged, in sight").json
    (first,) = instances("memory", [None], shared_path)  # Retains the second's file.
    theirs = second.upload(
        second.record_url("r2", collection="plain"), b"theirs", filename="report.pdf"
    ).json

    gc.collect(first.registry, now=after_grace())

    assert second.exists(tagged["location"])
    assert second.exists(theirs["location"])
