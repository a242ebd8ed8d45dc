"""Which link is the record's (the key its ``location`` names, under our ``base_url`` or an
older one, and the sha256 links keep), and the ``Vary`` of signed downloads' conditional
answers (a review of 2026-12-05 of that day's fixes)."""

import hashlib

import pytest
import transaction

from kinto_attachment import adoption
from kinto_attachment.state import links

from ..conftest import ALICE, cached_app, presigned_app
from ..test_adoption import legacy_record, store_file


URL = "/v1/buckets/blog/collections/articles/records/r1"
PARENT = "/buckets/blog/collections/articles"
CONTENT = b"the old file's bytes"
#: kinto-attachment's ``base_url`` of its day: a path under ours (``https://files.example.com/``).
OLD_BASE = "https://files.example.com/attachments/"


def _sha(content):
    return hashlib.sha256(content).hexdigest()


@pytest.fixture
def old(tmp_path_factory, request):
    kinto = cached_app("memory", tmp_path_factory, request)
    kinto.create_collection()
    kinto.registry.attachment_adopted = False
    return kinto


def _legacy_under_old_base(kinto, link="8"):
    """r1 as kinto-attachment left it with ``base_url = OLD_BASE``: the key
    ``blog/articles/….txt``, its location ``OLD_BASE`` + key, its row linking them."""
    key = store_file(kinto, CONTENT)
    attachment = legacy_record(kinto, key=key, content=CONTENT, link=link, location=OLD_BASE + key)
    with transaction.manager:  # Its true sha256, as kinto-attachment wrote it.
        storage = kinto.registry.storage
        record = storage.get(resource_name="record", parent_id=PARENT, object_id="r1")
        record["attachment"]["hash"] = _sha(CONTENT)
        storage.update(resource_name="record", parent_id=PARENT, object_id="r1", obj=record)
    return key, attachment


def _set_attachment(kinto, **fields):
    """Change fields of r1's ``attachment`` in storage (what a base_url of another day, a
    trusted plugin or kinto-attachment's clients left)."""
    with transaction.manager:
        storage = kinto.registry.storage
        record = storage.get(resource_name="record", parent_id=PARENT, object_id="r1")
        record["attachment"].update(fields)
        storage.update(resource_name="record", parent_id=PARENT, object_id="r1", obj=record)


@pytest.mark.parametrize("origin", ["kinto-attachment row", "adopted link", "our upload"])
def test_a_linked_file_under_an_older_base_url_below_ours_is_still_served(old, origin):
    """Found by review (2026-12-05).

    Docs (migrating.rst): "a record whose link names its file under another, older, URL
    ... keeps its link", and existing records "keep working at once": ``GET
    {record}/attachment`` serves the file its link names. ``adoption.locations.names`` links
    such a record (the location's path ends with the key), and before 988be6c ``_names``
    served it (``location.endswith("/" + key)``).

    It was: 404 (errno 111, and "Blob ... is missing from the store" logged) when the older
    ``base_url`` is a path *under* ours (kinto-attachment's ``https://files.example.com/
    attachments/``, ours ``https://files.example.com/``; or ours written without its trailing
    slash, which urljoin reads as its parent folder): ``store.key_for_url(location)`` is not
    None (``attachments/blog/articles/x.txt``), so ``views/attachment.py`` ``_names`` only
    takes a link whose key is exactly that one, never the row's ``blog/articles/x.txt``, and
    ``_key_of`` returns the key ``ours``, which the store does not hold. The same with an
    empty ``base_url`` of ours and a relative older one (``attachments/``). A regression of
    988be6c: with 1f9d9fa's ``_key_of``/``_names`` monkeypatched in, all three cases pass.

    Fixed: when no link is ``ours`` nor has our URL, still take a link whose key the
    location ends with (the adoption's rule, ``adoption.locations.names``) when
    ``links.names_file_of`` vouches for it: a link with the record's sha256 (adopted links
    keep it), or one without (kinto-attachment's, or made before links kept it: no
    replacement makes those now); the replacement race 988be6c closes is ruled out by the
    sha256.
    """
    kinto = old
    if origin == "our upload":  # Uploaded while our base_url was OLD_BASE (link and hash).
        key = kinto.key_of(kinto.upload(URL, CONTENT, "x.txt").json["location"])
        _set_attachment(kinto, location=OLD_BASE + key)
    else:
        key, _ = _legacy_under_old_base(kinto)
    if origin == "adopted link":
        report = adoption.adopt(kinto.registry)
        assert report.linked == 1, report
    if origin != "kinto-attachment row":
        with transaction.manager:
            assert [link["key"] for link in links.all_links(kinto.registry.storage)] == [key]
    response = kinto.app.get(URL + "/attachment", headers=ALICE, status="*")
    assert (response.status_int, response.body) == (200, CONTENT), response.status


#: kinto-attachment's ``base_url`` of its day, on another host (no prefix of ours).
OTHER_BASE = "https://old-cdn.example.com/files/"


@pytest.mark.parametrize(
    "digest", [None, "UPPER", "tampered", 5], ids=["no hash", "uppercase", "tampered", "number"]
)
def test_an_adopted_record_with_an_odd_hash_is_served_after_adoption(old, digest):
    """Held against a review (2026-12-05).

    adoption keeps the record's ``hash`` in its link as it is (whatever a client of
    kinto-attachment wrote there: none, uppercase, anything, no text), and the download
    compares the same string with it (``links.names_file_of``): the file is served, under an
    older base URL too (where only the link says which key it is)."""
    kinto = old
    key = store_file(kinto, CONTENT)
    legacy_record(kinto, key=key, content=CONTENT, location=OTHER_BASE + key)
    values = {None: None, "UPPER": _sha(CONTENT).upper(), "tampered": "x" * 64, 5: 5}
    with transaction.manager:
        storage = kinto.registry.storage
        record = storage.get(resource_name="record", parent_id=PARENT, object_id="r1")
        if digest is None:
            del record["attachment"]["hash"]
        else:
            record["attachment"]["hash"] = values[digest]
        storage.update(resource_name="record", parent_id=PARENT, object_id="r1", obj=record)
    assert adoption.adopt(kinto.registry).linked == 1
    response = kinto.app.get(URL + "/attachment", headers=ALICE, status="*")
    assert (response.status_int, response.body) == (200, CONTENT)
    assert kinto.app.head(URL + "/attachment", headers=ALICE, status="*").status_int == 200


def test_a_link_made_before_links_kept_a_hash_still_serves_its_file(old):
    """Held against a review (2026-12-05).

    a link of our upload made before 988be6c (no ``hash``), whose record's
    ``location`` is under an older base URL (another host), is still the record's after a
    ``kinto migrate`` (adoption leaves our links alone)."""
    kinto = old
    key = kinto.key_of(kinto.upload(URL, CONTENT, "x.txt").json["location"])
    with transaction.manager:
        storage = kinto.registry.storage
        [link] = list(links.all_links(storage))
        del link["hash"]
        parent = links.PARENT_PREFIX + links.record_uri("blog", "articles", "r1")
        storage.update(
            resource_name=links.RESOURCE, parent_id=parent, object_id=link["id"], obj=link
        )
    _set_attachment(kinto, location=OTHER_BASE + key)
    adoption.adopt(kinto.registry)
    response = kinto.app.get(URL + "/attachment", headers=ALICE, status="*")
    assert (response.status_int, response.body) == (200, CONTENT)


def test_a_client_cannot_change_the_hash_that_links_compare(old):
    """Held against a review (2026-12-05).

    a client's ``PATCH`` of ``attachment.hash`` (which would make the record's
    link another file's for ``links.names_file_of``, and its download a 404 under an older
    base URL) is refused; the file is still served."""
    kinto = old
    key = kinto.key_of(kinto.upload(URL, CONTENT, "x.txt").json["location"])
    _set_attachment(kinto, location=OTHER_BASE + key)
    for body in ({"data": {"attachment": {"hash": "0" * 64}}},):
        kinto.app.patch_json(URL, body, headers=ALICE, status=400)
    ops = [{"op": "replace", "path": "/data/attachment/hash", "value": "0" * 64}]
    kinto.app.patch_json(
        URL, ops, headers={**ALICE, "Content-Type": "application/json-patch+json"}, status=400
    )
    response = kinto.app.get(URL + "/attachment", headers=ALICE, status="*")
    assert (response.status_int, response.body) == (200, CONTENT)


CONDITIONS = {"if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range"}


def _vary(response):
    return {v.strip().lower() for v in response.headers.get("Vary", "").split(",") if v.strip()}


@pytest.mark.parametrize("method", ["get", "head"])
def test_conditional_answers_of_signed_downloads_vary_on_the_conditions(
    tmp_path_factory, request, method
):
    """Held against a review (2026-12-05).

    with signed downloads, a public record's ``307`` (its ``200`` for a ``HEAD``, which is
    never redirected), the ``304`` and the streamed ``200`` of conditional requests (``GET``
    and ``HEAD``) all carry ``Vary`` on the five conditional headers (caching.rst), with the
    record's ``Cache-Control``; a client holding S3's own ETag (an MD5) gets the content,
    streamed, not a ``304``."""
    kinto = presigned_app(
        tmp_path_factory, request, **{"kinto.record_cache_expires_seconds": "3600"}
    )
    public = {"read": ["system.Everyone"]}
    meta = kinto.upload(URL, CONTENT, "x.txt", permissions=public).json
    call = getattr(kinto.app, method)
    path = URL + "/attachment"
    redirect = call(path, status=307 if method == "get" else 200)
    etag = f'"{meta["hash"]}"'
    not_modified = call(path, headers={"If-None-Match": etag}, status=304)
    md5 = f'"{hashlib.md5(CONTENT).hexdigest()}"'  # noqa: S324 (S3's ETag)
    streamed = call(path, headers={"If-None-Match": md5}, status=200)
    for response in (redirect, not_modified, streamed):
        assert _vary(response) >= CONDITIONS, (response.status, response.headers)
        assert response.headers["Cache-Control"].startswith("public"), response.headers
    assert streamed.headers["ETag"] == etag
    if method == "get":
        assert streamed.body == CONTENT
