"""URLs that events hand to workers, made while a client chooses every header: held against a
review (2026-12-06)."""

from ..conftest import ALICE
from .conftest import destination_settings


LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
FORWARDING_WORDS = ("attacker", "6666", "gopher")
FORWARDING = {
    "Host": "attacker.example",
    "X-Forwarded-Host": "attacker.example",
    "X-Forwarded-Proto": "gopher",
    "X-Forwarded-Port": "6666",
    "X-Forwarded-Server": "attacker.example",
    "Forwarded": "host=attacker.example;proto=http;for=127.0.0.1",
    "X-Original-URL": "http://attacker.example/",
}


def test_held_event_urls_never_take_the_clients_forwarding_headers(events_app, receiver):
    """Attack: an uploader sends ``Host``, ``X-Forwarded-Host``/``-Proto``/``-Port``,
    ``Forwarded`` and ``X-Original-URL`` naming its own server, on a ``/data/files`` upload
    (public route), a multipart upload, a tus upload and a ``DELETE``: the events' ``source``
    and the fetch ``url`` that workers follow (with the signature) must stay under Kinto's
    ``http_host``, never the attacker's host, scheme or port."""
    kinto = events_app(
        "memory",
        more={
            "kinto.http_host": "kinto.example.com",
            "kinto.attachment.data_files.visibility": "public",
            "kinto.attachment.data_files.allowed_hosts": "*",
        },
        **destination_settings("webhook", receiver),
    )
    record = "/v1/buckets/blog/collections/articles/records/r1"
    kinto.app.post(
        "/v1/data/files?id=f1", b"hello", headers=FORWARDING, extra_environ=LOCAL, status=200
    )
    kinto.app.post(
        record + "/attachment",
        upload_files=[("attachment", "a.txt", b"hello")],
        headers={**ALICE, **FORWARDING},
        status=201,
    )
    created = kinto.app.post(
        record.replace("/r1", "/r2") + "/attachment/uploads",
        headers={
            **ALICE,
            **FORWARDING,
            "Tus-Resumable": "1.0.0",
            "Upload-Length": "5",
            "Upload-Metadata": "filename YS50eHQ=",
            "Content-Type": "application/offset+octet-stream",
        },
        params=b"hello",
        status=201,
    )
    assert created.headers.get("Upload-Offset") in ("5", None), created.headers
    kinto.app.delete("/v1/data/files/f1", headers=FORWARDING, extra_environ=LOCAL, status=204)
    for _ in range(4):
        kinto.registry.attachment_dispatcher.run_once()
    events = receiver.events()
    assert len(events) >= 4, [(e["type"], e["subject"]) for e in events]
    for event in events:
        assert event["source"] == "http://kinto.example.com/v1/", event["source"]
        url = event.get("data", {}).get("url")
        if url is not None:
            assert url.startswith("http://kinto.example.com/v1/attachment-fetch/"), url
        assert not [word for word in FORWARDING_WORDS if word in str(event)], event
