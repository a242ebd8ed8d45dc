"""A new file's name (``randomize = false``, or a random one): never a name Kinto's storage
still names while the store holds no file under it (:func:`kinto_attachment.state.links.held`,
asked through the store's ``reserved``), and, for random names, no lookup at all."""

import posixpath

import pytest
import requests
import transaction

from kinto_attachment import gc
from kinto_attachment.state import data_file_entries, links, replaced

from ..conftest import ALICE, attachment_app, cached_app
from ..test_gc import adopted, send_tus, start_tus
from ..views.test_resumable_concatenation import final_upload, partial_upload


NOT_RANDOM = {"kinto.attachment.randomize": "false"}
#: The default grace of replaced files is 600 s; the tests' apps set 0, so one is given here.
REPLACED_GRACE = {"kinto.attachment.gc.replaced_grace_seconds": "60"}


def named_app(tmp_path_factory, request, backend="memory", blobs="local", **settings):
    kinto = cached_app(backend, tmp_path_factory, request, blobs=blobs, **settings)
    kinto.create_collection()
    return adopted(kinto)


def after_replaced_grace():
    return data_file_entries.msec_time() + 3600 * 1000


@pytest.mark.parametrize("remedy", ["record deleted", "file uploaded again"])
def test_a_lost_files_name_waiting_in_replaced_is_not_given_to_a_new_upload(
    tmp_path_factory, request, remedy
):
    """``randomize = false``: a record whose file is lost (``kinto-attachment-gc --dry-run``
    lists it as a dangling reference) is fixed as docs/migrating.rst says: the record is
    deleted, or its file uploaded again. Either way the lost name moves from the record's
    link to an entry of replaced files, due after ``gc.replaced_grace_seconds``: the next
    upload of that name takes another, or the collector would delete it with the entry."""
    kinto = named_app(tmp_path_factory, request, **NOT_RANDOM, **REPLACED_GRACE)
    store = kinto.registry.attachment_store
    old = kinto.upload(kinto.record_url("old"), b"old content", "lost.txt").json
    lost = kinto.key_of(old["location"])
    store.delete(lost)  # Lost (kinto-attachment deleted it before a refused replacement).
    if remedy == "record deleted":
        kinto.app.delete(kinto.record_url("old"), headers=ALICE)
    else:
        kinto.upload(kinto.record_url("old"), b"old content", "lost.txt")

    new = kinto.upload(kinto.record_url("new"), b"new content", "lost.txt").json
    new_key = kinto.key_of(new["location"])
    gc.collect(kinto.registry, now=after_replaced_grace(), orphans=False)

    assert store.exists(new_key), (
        f"the new record's file {new_key} was deleted as the replaced file {lost}"
    )


def test_the_collector_keeps_a_replaced_file_that_a_link_names_again(tmp_path_factory, request):
    """An entry of replaced files written before a record took the name again (or by a
    version that did not look): the collector claims the entry and keeps the file."""
    kinto = named_app(tmp_path_factory, request, **NOT_RANDOM, **REPLACED_GRACE)
    new = kinto.upload(kinto.record_url("new"), b"new content", "taken.txt").json
    key = kinto.key_of(new["location"])
    with transaction.manager:
        replaced.add(kinto.registry.storage, [key], until=0)
    report = gc.collect(kinto.registry, now=after_replaced_grace(), orphans=False)
    assert report.replaced == []
    assert kinto.read(new["location"]) == b"new content"


class Counting:
    """Counts the calls of ``links.held`` (what ``store.reserved`` asks: five queries on
    PostgreSQL, links, retained and replaced files, kinto-attachment's rows)."""

    def __init__(self, monkeypatch):
        self.keys = []
        held = links.held

        def counted(storage, key):
            self.keys.append(key)
            return held(storage, key)

        monkeypatch.setattr(links, "held", counted)


@pytest.mark.parametrize("blobs", ["local", "s3"])
def test_a_random_name_costs_no_lookup_in_a_resumable_upload(
    tmp_path_factory, request, monkeypatch, blobs
):
    """Random names (the default: 96 random bits and the instance's tag) are nobody's: a
    resumable upload asks Kinto's storage nothing about its name (``start_resumable`` and
    ``finish`` are told it is random), where each lookup is five queries on PostgreSQL."""
    kinto = named_app(tmp_path_factory, request, blobs=blobs)
    counting = Counting(monkeypatch)
    url = start_tus(kinto, 10, b"01234")
    send_tus(kinto, url, b"56789", 5)
    record = kinto.app.get(kinto.record_url("r2"), headers=ALICE).json["data"]
    assert kinto.read(record["attachment"]["location"]) == b"0123456789"
    assert counting.keys == [], "a random name was looked up in Kinto's storage"


@pytest.mark.parametrize("blobs", ["local", "s3"])
def test_a_random_name_costs_no_lookup_in_a_concatenation(
    tmp_path_factory, request, monkeypatch, blobs
):
    """The same for tus concatenation: partial uploads and the final one have random
    names, asked about nowhere."""
    kinto = named_app(tmp_path_factory, request, blobs=blobs)
    counting = Counting(monkeypatch)
    urls = [partial_upload(kinto.app, b"abc"), partial_upload(kinto.app, b"def")]
    final_upload(kinto.app, urls)
    assert counting.keys == [], "a random name was looked up in Kinto's storage"


@pytest.mark.parametrize("blobs", ["local"])
def test_a_name_taken_many_times_costs_one_lookup_not_one_per_variant(
    tmp_path_factory, request, monkeypatch, blobs
):
    """``randomize = false`` on local disk: the names the disk holds are skipped without a
    lookup in Kinto's storage (the N-th upload of ``image.png`` would otherwise make N, five
    queries each on PostgreSQL); only the free one is asked about. S3 and GCS ask only about
    the names their listing found free (``free_variant``)."""
    kinto = named_app(tmp_path_factory, request, blobs=blobs, **NOT_RANDOM)
    count = 12
    for number in range(count):
        kinto.upload(kinto.record_url(f"r{number}"), b"x", "image.png")
    counting = Counting(monkeypatch)
    last = kinto.upload(kinto.record_url("last"), b"y", "image.png").json
    assert kinto.key_of(last["location"]) == f"image-{count}.png"
    assert len(counting.keys) <= 2, (
        f"{len(counting.keys)} lookups in Kinto's storage for one upload: {counting.keys}"
    )


ARTICLES = "/v1/buckets/blog/collections/articles/records/{}"
PHOTOS = "/v1/buckets/blog/collections/photos/records/{}"


def test_a_chosen_name_made_of_a_random_one_is_quarantined(tmp_path_factory, request):
    """Found by review (2026-12-05).

    A photo's random name (``R.jpg``, saved from its ``location``) attached where names are
    chosen goes under ``R-1.jpg`` (a drawn name is never given); deleted, that name was given
    again at once: names holding a random one were taken for random names, never put in
    quarantine. Only names drawn at random are spared it."""
    kinto = attachment_app(
        tmp_path_factory,
        request,
        **{"resources.blog.articles.randomize": "false", "extensions": "jpg txt"},
    )
    kinto.app.put_json("/v1/buckets/blog/collections/photos", {}, headers=ALICE)
    photo = kinto.upload(PHOTOS.format("p1"), b"photo", "cat.jpg").json
    saved_as = posixpath.basename(kinto.key_of(photo["location"]))  # R.jpg, a random name.

    first = kinto.upload(ARTICLES.format("a1"), b"first file", saved_as).json
    assert first["location"] != photo["location"]  # R-1.jpg: the drawn name is reserved.
    kinto.app.delete(ARTICLES.format("a1") + "/attachment", headers=ALICE)

    second = kinto.upload(ARTICLES.format("a2"), b"another file", saved_as).json
    assert second["location"] != first["location"], (
        "a chosen name was given to another file at once, without quarantine"
    )


def test_a_signed_url_never_reaches_the_next_file_given_the_name(tmp_path_factory, request):
    """Found by review (2026-12-05).

    S3, presigned downloads, names ``{rid}-{filename}`` (``randomize = false``): ``a1-R.jpg``
    (``R`` a random name a user saved) replaced twice came back as the third file's name at
    once, and the signed URL handed out for the first served the third's bytes."""
    kinto = attachment_app(
        tmp_path_factory,
        request,
        blobs="s3",
        **{
            "resources.blog.articles.randomize": "false",
            "resources.blog.articles.filename_pattern": "{rid}-{filename}",
            "extensions": "jpg",
            "aws.presigned_downloads": "true",
            "aws.presigned_expires": "300",
        },
    )
    kinto.app.put_json("/v1/buckets/blog/collections/photos", {}, headers=ALICE)
    photo = kinto.upload(PHOTOS.format("p1"), b"photo", "cat.jpg").json
    saved_as = posixpath.basename(kinto.key_of(photo["location"]))

    url = ARTICLES.format("a1")
    first = kinto.upload(url, b"first file", saved_as).json
    signed = kinto.app.get(url + "/attachment", headers=ALICE, status=307).location
    kinto.upload(url, b"second file", saved_as)
    third = kinto.upload(url, b"third file", saved_as).json
    assert requests.get(signed, timeout=10).content != b"third file", (
        f"the signed URL of {first['location']} served the file given its name next "
        f"({third['location']})"
    )
