"""Downloads whose record is replaced meanwhile, and downloads that signed URLs could serve
(redirects): which link is the record's, what is streamed rather than redirected, what caches
may keep (a review of 2026-12-05 of that day's fixes)."""

import hashlib
import threading
import time

import pytest
import transaction

from kinto_attachment.state import links

from ..conftest import ALICE, cached_app, presigned_app
from ..test_adoption import legacy_record


URL = "/v1/buckets/blog/collections/articles/records/r1"
V1 = b"version one, the longer of the two" * 10
V2 = b"version two"


def _sha(content):
    return hashlib.sha256(content).hexdigest()


def _replaced_between_record_and_links(kinto, monkeypatch, replace):
    """Run ``replace()`` in another thread once, when the download has read the record and is
    about to read its links (the window ``_key_of`` closes with ``_names``)."""
    real, reader, replaced = links.of_record, threading.get_ident(), []

    def of_record(*args, **kwargs):
        if threading.get_ident() == reader and not replaced:
            replaced.append(True)
            writer = threading.Thread(target=replace)
            writer.start()
            writer.join(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(links, "of_record", of_record)
    return replaced


@pytest.fixture
def named_files(tmp_path_factory, request):
    """Names chosen from the client's file name, at the root of the store (no folder)."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.attachment.resources.blog.articles.randomize": "false"},
    )
    kinto.create_collection()
    kinto.registry.attachment_adopted = False
    return kinto


@pytest.mark.parametrize("base_url", ["ours", "older"])
def test_a_replacement_whose_key_ends_the_old_one_is_not_served_under_the_old_etag(
    named_files, monkeypatch, base_url
):
    """Found by review (2026-12-05).

    Docs (api.rst, consistency.rst): "A download is one version, whole, even while the file
    is replaced: the one it started with, or the new one"; the ``ETag`` is the sha256 of the
    content served. 55161b7 meant to close exactly this ("never another link's bytes under the
    record's ETag").

    It was: ``views/attachment.py`` ``_names`` accepts any link whose key *ends* the
    ``location`` after a ``/`` (``name.endswith("/" + key)``), even when the location is our
    own URL of another key. A record kinto-attachment stored with ``folder =
    {bucket_id}/{collection_id}`` (key ``blog/articles/v.txt``, location under our very
    ``base_url``), replaced by this plugin without that folder (key ``v.txt``): a replacement
    committed between the record's read and the links' read leaves the link ``v.txt``, which
    "names" ``https://files.example.com/blog/articles/v.txt``. V2's bytes are served under V1's
    ``ETag``, ``Content-Length`` and filename (a body shorter than its length).

    Fixed: when ``location`` is under our ``base_url``, a link names it only if its key
    is ``store.key_for_url(location)``; for a location under another base URL, suffix matches
    stay ambiguous (``v.txt`` ends ``.../articles/v.txt``): each link keeps the sha256 it was
    made for, and a link of another one is not the record's (``links.names_file_of``); without
    one, ``downloads.Missing`` reads the record again.
    """
    kinto = named_files
    store = kinto.registry.attachment_store
    key = "blog/articles/v.txt"
    staged = store.stage(key, "text/plain")
    staged.write(V1)
    staged.commit()
    attachment = legacy_record(kinto, key=key, content=V1)
    assert attachment["location"] == "https://files.example.com/blog/articles/v.txt"
    with transaction.manager:  # The record's hash, as kinto-attachment wrote it.
        storage = kinto.registry.storage
        parent = "/buckets/blog/collections/articles"
        record = storage.get(resource_name="record", parent_id=parent, object_id="r1")
        record["attachment"]["hash"] = _sha(V1)
        if base_url == "older":  # Its URL under the base_url of its day: the link's hash says.
            record["attachment"]["location"] = f"https://old-cdn.example.com/files/{key}"
        storage.update(resource_name="record", parent_id=parent, object_id="r1", obj=record)
    assert kinto.app.get(URL + "/attachment", headers=ALICE).body == V1

    def replace():
        meta = kinto.upload(URL, V2, "v.txt").json
        assert meta["location"] == "https://files.example.com/v.txt", meta["location"]

    replaced = _replaced_between_record_and_links(kinto, monkeypatch, replace)
    try:
        response = kinto.app.get(URL + "/attachment", headers=ALICE, status="*")
    except AssertionError as e:  # WebTest's check of the body against its Content-Length.
        pytest.fail(f"V2's bytes under V1's headers: {e}")
    assert replaced
    versions = {f'"{_sha(V1)}"': "V1", f'"{_sha(V2)}"': "V2", V1: "V1", V2: "V2"}
    etag, body = versions.get(response.headers.get("ETag")), versions.get(response.body)
    assert etag == body, f"the ETag of {etag} with the bytes of {body}"


PUBLIC = {"read": ["system.Everyone"]}


@pytest.fixture
def presigned_public(tmp_path_factory, request):
    return presigned_app(
        tmp_path_factory, request, **{"kinto.record_cache_expires_seconds": "3600"}
    )


def test_a_cached_redirect_is_not_reused_for_a_resumed_download(presigned_public):
    """Found by review (2026-12-05).

    Docs (security.rst, 55161b7): "A resumed download (``If-Match``, ``If-Range``) is
    streamed, not redirected: the store would compare our ``ETag`` (a sha256) with its own";
    caching.rst: a public record's download is cacheable for the collection's record lifetime
    (the CDN in front of Kinto that Kinto's ``record_cache_expires_seconds`` is made for).

    It was: ``downloads/__init__.py`` ``_redirected`` now picks the answer (``307`` or a
    streamed ``206``) from ``If-Match``/``If-Range``, but the ``307`` of a plain ``GET`` is
    stored by shared caches (``Cache-Control: public, max-age=...``) with ``Vary: Origin``
    only. A shared cache reuses it for the next request of that URL, ``If-Range``/``If-Match``
    or not (RFC 9111 §4.1: only the headers ``Vary`` names are compared): behind a CDN the
    resumed download is still sent to S3, which refuses ``If-Match`` (``412``) or ignores
    ``If-Range``: the fix does not hold where the redirect is cacheable.

    Fixed (as suggested): add ``If-Match, If-Range`` to ``Vary`` of every download answer with
    signed redirects (``caching.record_file`` when ``redirect_expires`` is set), or send the
    ``307`` as ``private`` so that only the client's own cache keeps it.
    """
    kinto = presigned_public
    meta = kinto.upload(URL, V1, "v1.txt", permissions=PUBLIC).json
    redirect = kinto.app.get(URL + "/attachment", status=307)
    resume = {"Range": "bytes=10-19", "If-Range": f'"{meta["hash"]}"'}
    streamed = kinto.app.get(URL + "/attachment", headers=resume, status=206)
    assert streamed.body == V1[10:20]
    cache_control = redirect.headers.get("Cache-Control", "")
    shared = "public" in cache_control and "private" not in cache_control
    vary = {v.strip().lower() for v in redirect.headers.get("Vary", "").split(",")}
    assert not shared or {"if-range", "if-match"} <= vary, (
        f"a shared cache keeps the 307 ({cache_control}; Vary: {redirect.headers.get('Vary')})"
        " and serves it to resumed downloads"
    )


@pytest.mark.parametrize("header", ["bytes=0-9", "bytes=0-9\t", " bytes=0-9", "bytes=\t0-9 "])
def test_a_range_with_spaces_or_tabs_around_it_is_still_served(named_files, header):
    """Held against a review (2026-12-05).

    55161b7 no longer strips every space of ``Range``; the OWS a client or proxy
    leaves around the range (a tab, a space) still gives the range (206), only spaces inside
    the positions are refused (tests/downloads/test_downloads.py)."""
    kinto = named_files
    kinto.upload(URL, V1, "v1.txt")
    response = kinto.app.get(URL + "/attachment", headers={**ALICE, "Range": header}, status="*")
    assert (response.status_int, response.body) == (206, V1[:10])


def test_tus_and_concatenated_objects_are_private_with_presigned_downloads(
    presigned_public, monkeypatch
):
    """Held against a review (2026-12-05).

    with ``aws.presigned_downloads`` and no ``aws.acl``, the objects a tus upload
    (multipart) and a tus concatenation (UploadPartCopy into a new multipart upload) make are
    created without an ACL (settings.rst: ``aws.acl`` none with presigned downloads). (moto
    answers GetObjectAcl of such a multipart object with a 500: the requests are looked at.)"""
    from ..views.test_resumable import create, patch
    from ..views.test_resumable_concatenation import final_upload, partial_upload

    kinto = presigned_public
    client = kinto.registry.attachment_store.client
    sent = []
    for name in ("create_multipart_upload", "put_object", "copy_object"):
        real = getattr(client, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            sent.append((_name, kwargs.get("ACL")))
            return _real(*args, **kwargs)

        monkeypatch.setattr(client, name, spy)
    app = kinto.app
    _, url = create(app, len(V1))
    patch(app, url, V1, 0)
    first, second = partial_upload(app, V1), partial_upload(app, V2)
    final_upload(app, [first, second])
    record = app.get(URL, headers=ALICE).json["data"]
    assert record["attachment"]["size"] == len(V1 + V2)
    assert sent and all(acl is None for _, acl in sent), sent


def _follow(response, headers):
    """What a client that forwards its headers over a ``307`` (requests, curl) gets."""
    import requests

    if response.status_int != 307:
        return response.status_int, response.body
    followed = requests.get(response.headers["Location"], headers=headers, timeout=10)
    return followed.status_code, followed.content


def _copy_attachment(kinto, attachment):
    """r1 names ``attachment`` as a plugin's copy does (Remote Settings' signer publishing or
    rolling back a record): written by the plugin, no link of its own."""
    with transaction.manager:
        storage = kinto.registry.storage
        parent = "/buckets/blog/collections/articles"
        record = storage.get(resource_name="record", parent_id=parent, object_id="r1")
        record["attachment"] = dict(attachment)
        del record["last_modified"]  # Now (Kinto keeps a given one, bumped by 1 ms).
        storage.update(resource_name="record", parent_id=parent, object_id="r1", obj=record)


def _next_second():
    now = time.time()
    time.sleep(int(now) + 1.05 - now)  # HTTP dates (S3's Last-Modified) have whole seconds.


def test_a_revalidation_is_not_answered_304_by_the_store_for_another_file(presigned_public):
    """Found by review (2026-12-05).

    Docs (caching.rst): downloads through the API are revalidated against the record's
    file; security.rst (55161b7): a download's validators are the server's to check, "the
    store would compare our ``ETag`` (a sha256) with its own" — ``downloads/__init__.py``
    ``_OURS_ONLY`` says it of S3's ``Last-Modified`` too ("the ``Last-Modified`` its
    write's").

    It was: only ``If-Match`` and ``If-Range`` keep a download from being redirected. A
    client that revalidates with ``If-Modified-Since`` (the date S3 gave it when it followed
    the last ``307``, which carries no validator of ours) gets a ``307`` when the record's
    file changed, follows it with its headers (requests, curl), and S3 answers with *its*
    comparison: an object written before that date is ``304 Not Modified``. A record whose
    file becomes an older object (a signer's rollback or copy, as here) is never fetched
    again: the client keeps the previous file as the record's.

    Fixed (as suggested): add ``If-Modified-Since`` and ``If-Unmodified-Since`` (``If-None-Match``
    too: the client may hold S3's ETag) to ``_OURS_ONLY``: once the server has decided the
    answer is no ``304``/``412``, stream it (the client's conditional headers always reach
    the store, which compares them with its own validators).
    """
    kinto = presigned_public
    older = kinto.upload(URL.replace("r1", "r0"), V1, "v1.txt").json  # Object A.
    _next_second()
    newer = kinto.upload(URL.replace("r1", "r2"), V2, "v2.txt").json  # Object B.
    kinto.app.put_json(URL, {"data": {}}, headers=ALICE)
    _copy_attachment(kinto, newer)
    first = kinto.app.get(URL + "/attachment", headers=ALICE, status=307)
    import requests

    got = requests.get(first.headers["Location"], timeout=10)
    assert got.content == V2
    cached = got.headers["Last-Modified"]  # What the client revalidates with.
    _next_second()
    _copy_attachment(kinto, older)  # Later, r1 names the older file again.
    revalidation = {"If-Modified-Since": cached}
    response = kinto.app.get(URL + "/attachment", headers={**ALICE, **revalidation}, status="*")
    assert response.status_int != 304  # The server knows the file changed...
    status, body = _follow(response, revalidation)
    assert (status, body) == (200, V1), f"{status}: the client keeps V2 as the record's file"
