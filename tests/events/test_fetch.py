"""The ``url`` of a stored event: exactly that version, without Kinto credentials, for
``url_expires_seconds``; signed by the plugin on local disk, presigned by S3 and GCS."""

import hashlib
import posixpath
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from kinto.core.utils import msec_time

from kinto_attachment import gc
from kinto_attachment.web import signed_urls

from ..conftest import ALICE, BOB
from .conftest import URL_SECRET, destination_settings
from .test_delivery import RECORD, delivered, fetch


def stored_url(kinto, receiver, content, **extra):
    kinto.upload(RECORD, content, **extra)
    delivered(kinto)
    [event] = receiver.events()
    return event, event["data"]["url"]


def test_local_signed_url_serves_the_version_with_ranges(events_app, receiver):
    kinto = events_app("memory", **destination_settings("webhook", receiver))
    content = bytes(range(256)) * 40
    event, url = stored_url(kinto, receiver, content)
    assert url.startswith("http://localhost/v1/attachment-fetch/")
    response = fetch(kinto, url)
    assert hashlib.sha256(response.body).hexdigest() == event["data"]["attachment"]["hash"]
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert "Authorization" not in response.request.headers

    partial = fetch(kinto, url, status=206, Range="bytes=10-19")
    assert partial.body == content[10:20]
    assert partial.headers["Content-Range"] == f"bytes 10-19/{len(content)}"
    etag = response.headers["ETag"]
    assert fetch(kinto, url, status=304, **{"If-None-Match": etag}).body == b""

    # The replaced version stays fetchable at its URL (held by the event: see retention).
    kinto.upload(RECORD, b"new version")
    assert fetch(kinto, url).body == content


def test_url_lives_url_expires_seconds_from_delivery(events_app, receiver):
    kinto = events_app(
        "memory", url_expires_seconds=600, **destination_settings("webhook", receiver)
    )
    before = time.time()
    _, url = stored_url(kinto, receiver, b"hello")
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    assert before + 600 <= expires + 1 and expires <= time.time() + 600


@pytest.mark.parametrize(
    "forge",
    [
        lambda key, expires, sig: (key, expires, "0" * 64),
        lambda key, expires, sig: (key, str(int(expires) + 1), sig),
        lambda key, expires, sig: (key + "x", expires, sig),
        lambda key, expires, sig: (key, "", sig),
        lambda key, expires, sig: (key, expires, ""),
        # Text compare_digest refuses to compare (a TypeError, hence a 500, once).
        lambda key, expires, sig: (key, expires, "%C3%A9"),
    ],
    ids=["signature", "expiry", "key", "no-expiry", "no-signature", "not-ascii"],
)
def test_forged_urls_are_refused(events_app, receiver, forge):
    kinto = events_app("memory", **destination_settings("webhook", receiver))
    _, url = stored_url(kinto, receiver, b"hello")
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    key = parts.path.removeprefix("/v1/attachment-fetch/")
    key, expires, sig = forge(key, query["expires"][0], query["signature"][0])
    forged = f"/v1/attachment-fetch/{key}?expires={expires}&signature={sig}"
    response = kinto.app.get(forged, status=403)
    assert response.json["errno"] == 121
    assert "signature" in response.json["message"]


def test_expired_urls_are_refused(events_app, receiver):
    kinto = events_app("memory", **destination_settings("webhook", receiver))
    _, url = stored_url(kinto, receiver, b"hello")
    key = urlsplit(url).path.removeprefix("/v1/attachment-fetch/")
    expired = int(time.time()) - 1
    path = signed_urls.signed_path(URL_SECRET, key, expired)
    assert kinto.app.get("/v1/attachment-fetch/" + path, status=403).json["code"] == 403
    # The same key, signed until later, is served: the expiry is what refused it.
    path = signed_urls.signed_path(URL_SECRET, key, int(time.time()) + 60)
    assert kinto.app.get("/v1/attachment-fetch/" + path).body == b"hello"


def test_s3_url_is_presigned_for_the_exact_key(events_app, receiver):
    kinto = events_app("memory", store="s3", **destination_settings("webhook", receiver))
    content = b"on s3" * 1000
    event, url = stored_url(kinto, receiver, content)
    assert "X-Amz-Signature" in url or "Signature" in url
    assert "/attachment-fetch/" not in url
    response = fetch(kinto, url)
    assert hashlib.sha256(response.body).hexdigest() == event["data"]["attachment"]["hash"]
    assert fetch(kinto, url, status=206, Range="bytes=0-4").body == b"on s3"
    # moto checks no signatures: that the URL names the exact key is what can be checked.
    key = kinto.key_of(event["data"]["attachment"]["location"])
    assert urlsplit(url).path.endswith("/" + key)


def test_gcs_url_is_v4_signed_for_the_exact_key(events_app, receiver):
    import requests

    kinto = events_app("memory", store="gcs", **destination_settings("webhook", receiver))
    content = b"on gcs" * 1000
    event, url = stored_url(kinto, receiver, content)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"] and "X-Goog-Signature" in query
    assert query["X-Goog-Expires"] == [
        str(kinto.registry.attachment_settings.events.url_expires_seconds)
    ]
    assert "/attachment-fetch/" not in url
    key = kinto.key_of(event["data"]["attachment"]["location"])
    assert urlsplit(url).path.endswith("/" + key)
    # The emulator checks no signatures (tests/storage/test_gcs.py verifies them): it serves
    # the version the event names, without Kinto's credentials.
    response = requests.get(url, timeout=10)
    assert hashlib.sha256(response.content).hexdigest() == event["data"]["attachment"]["hash"]


@pytest.mark.parametrize("store", ["local", "s3"])
def test_a_fetch_url_never_serves_the_next_file_given_its_name(events_app, receiver, store):
    """``randomize = false``: once an event's file is deleted, its name stays taken while the
    event's URL may be used (``url_expires_seconds``): the next upload of that name, anyone's,
    gets another, and the URL answers 404, never that file (found by review, 2026-12-05)."""
    more = {
        "kinto.attachment.randomize": "false",
        "kinto.attachment.gc.orphans_grace_seconds": "0",
    }
    kinto = events_app(
        "memory",
        store=store,
        more=more,
        fetch_grace_seconds=0,
        **destination_settings("webhook", receiver),
    )
    event, url = stored_url(kinto, receiver, b"alice's file", filename="name.txt")
    assert fetch(kinto, url).body == b"alice's file"
    kinto.app.delete(RECORD + "/attachment", headers=ALICE, status=204)
    gc.collect(kinto.registry, now=time.time() * 1000 + 3_600_000)
    location = event["data"]["attachment"]["location"]
    assert not kinto.exists(location)
    kinto.app.put_json("/v1/buckets/bobs", {}, headers=BOB)
    kinto.app.put_json("/v1/buckets/bobs/collections/private", {}, headers=BOB)
    bobs = kinto.upload(
        "/v1/buckets/bobs/collections/private/records/secret", b"bob's", "name.txt", headers=BOB
    )
    assert bobs.json["location"] != location
    # S3 answers 403 for a key that is not there, to whoever may not list the bucket.
    fetch(kinto, url, status=404 if store == "local" else 403)


HOUR_MS = 3600 * 1000


@pytest.mark.parametrize("store", ["local", "s3"])
def test_a_fetch_url_never_serves_a_file_that_took_a_deleted_random_name(
    events_app, receiver, store
):
    """Found by review (2026-12-05).

    Alice's upload (a random name) is delivered with a fetch URL valid a day; replaced, its
    blob is deleted once the event's hold is over. Bob, in a bucket of ``randomize = false``
    (the same folder: none), uploads a file named as that blob (its ``location`` is on her
    record): it took the name, random names are not kept in quarantine, and her event's URL
    served Bob's bytes. No chosen name takes a name an instance drew at random now."""
    more = {
        "kinto.attachment.gc.orphans_grace_seconds": "0",
        "kinto.attachment.resources.bobs.randomize": "false",
    }
    kinto = events_app(
        "memory", store=store, more=more, **destination_settings("webhook", receiver)
    )
    kinto.upload(RECORD, b"alice's first version")
    delivered(kinto)
    [event] = receiver.events()
    url, location = event["data"]["url"], event["data"]["attachment"]["location"]
    assert fetch(kinto, url).body == b"alice's first version"

    kinto.upload(RECORD, b"alice's second version")
    gc.collect(kinto.registry, now=msec_time() + 2 * HOUR_MS)  # The hold (an hour) is over.
    assert not kinto.exists(location)

    kinto.app.put_json("/v1/buckets/bobs", {}, headers=BOB)
    kinto.app.put_json("/v1/buckets/bobs/collections/c", {}, headers=BOB)
    name = posixpath.basename(kinto.key_of(location))
    kinto.upload("/v1/buckets/bobs/collections/c/records/x", b"bob's file", name, headers=BOB)

    if store == "local":
        got = kinto.app.get(url.removeprefix("http://localhost"), expect_errors=True)
        status, body = got.status_int, got.body
    else:
        got = requests.get(url, timeout=10)
        status, body = got.status_code, got.content
    assert status in (403, 404), f"Alice's event URL answers {status} with {body!r}"
