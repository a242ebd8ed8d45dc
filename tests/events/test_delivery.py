"""Every change that stores or deletes a file is delivered to each destination, on memory and
PostgreSQL: uploads (multipart, tus, ``/data/files``), deletes, cascades and expiry."""

import hashlib
import json
import time

import pytest
import requests

from kinto_attachment import gc
from kinto_attachment.events.options import DELETED, STORED
from kinto_attachment.state import outbox

from ..conftest import ALICE
from ..views.test_resumable import upload_in_chunks
from .conftest import destination_settings


RECORD = "/v1/buckets/blog/collections/articles/records/r1"
SUBJECT = "/buckets/blog/collections/articles/records/r1"
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
BACKENDS = ["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)]


class Destination:
    """One destination of a test, and what it received."""

    def __init__(self, name, request):
        self.name = name
        self._stream = self._amqp = self._receiver = None
        if name == "webhook":
            self._receiver = request.getfixturevalue("receiver")
        elif name == "redis":
            self._redis, self._stream = request.getfixturevalue("redis_stream")
        else:
            self._channel, self._exchange, self._queue = request.getfixturevalue("amqp_queue")

    def settings(self, port=None):
        return destination_settings(
            self.name,
            receiver=self._receiver,
            stream=self._stream,
            exchange=getattr(self, "_exchange", None),
            port=port,
        )

    @property
    def target(self):
        """``(host, port)`` of the service, for a proxy."""
        if self.name == "webhook":
            return "127.0.0.1", self._receiver.port
        return "127.0.0.1", 6379 if self.name == "redis" else 5672

    def events(self):
        if self.name == "webhook":
            return self._receiver.events()
        if self.name == "redis":
            entries = self._redis.xrange(self._stream)
            self._redis.delete(self._stream)
            return [json.loads(fields[b"event"]) for _, fields in entries]
        found = []
        while True:
            method, properties, body = self._channel.basic_get(self._queue, auto_ack=True)
            if method is None:
                return found
            event = json.loads(body)
            assert properties.message_id == event["id"]
            assert properties.delivery_mode == 2
            assert properties.content_type == "application/cloudevents+json"
            found.append(event)


@pytest.fixture(params=["webhook", "redis", "amqp"])
def destination(request):
    return Destination(request.param, request)


def delivered(kinto):
    dispatcher = kinto.registry.attachment_dispatcher
    while dispatcher.run_once():
        pass


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_change_is_delivered_to_each_destination(events_app, destination, backend):
    kinto = events_app(backend, destination.name, **destination.settings())
    first = kinto.upload(RECORD, b"one", "one.txt").json
    second = kinto.upload(RECORD, b"two", "two.txt").json
    kinto.app.delete(RECORD + "/attachment", headers=ALICE, status=204)
    delivered(kinto)

    events = destination.events()
    assert [(e["type"], e["subject"]) for e in events] == [
        (STORED, SUBJECT),
        (STORED, SUBJECT),
        (DELETED, SUBJECT),
    ]
    assert events[0]["data"]["attachment"] == {
        k: first[k] for k in events[0]["data"]["attachment"]
    }
    assert events[0]["data"]["replaced_hash"] is None
    assert events[1]["data"]["replaced_hash"] == first["hash"]
    assert events[2]["data"]["attachment"]["hash"] == second["hash"]
    assert "url" not in events[2]["data"]
    assert fetch(kinto, events[1]["data"]["url"]).body == b"two"
    assert len({e["id"] for e in events}) == 3


def fetch(kinto, url, status=200, **headers):
    """GET ``url``: the app's own (signed fetch route), or elsewhere (S3)."""
    if url.startswith("http://localhost/"):
        return kinto.app.get(url.removeprefix("http://localhost"), headers=headers, status=status)
    response = requests.get(url, headers=headers, timeout=10)
    assert response.status_code == status
    response.body = response.content
    return response


def test_tus_data_files_and_cascades_are_delivered(events_app, receiver):
    kinto = events_app("memory", **destination_settings("webhook", receiver))
    url = upload_in_chunks(kinto.app, b"resumable bytes", 5)
    assert url
    kinto.app.post("/v1/data/files?id=f1", b"file one", extra_environ=LOCAL)
    kinto.app.post("/v1/data/files?id=f1", b"file two", extra_environ=LOCAL)
    kinto.app.delete("/v1/data/files/f1", extra_environ=LOCAL, status=204)
    kinto.upload(RECORD.replace("r1", "r2"), b"two")
    kinto.upload(RECORD.replace("r1", "r3"), b"three")
    kinto.app.delete(RECORD.replace("r1", "r2"), headers=ALICE)
    kinto.app.delete("/v1/buckets/blog/collections/articles", headers=ALICE)
    delivered(kinto)

    events = receiver.events()
    by_subject = {}
    for event in events:
        by_subject.setdefault(event["subject"], []).append(event)
    types = {subject: [e["type"] for e in found] for subject, found in by_subject.items()}
    # In order per subject; a record deleted with its collection too.
    assert types == {
        SUBJECT: [STORED, DELETED],
        "/data/files/f1": [STORED, STORED, DELETED],
        SUBJECT.replace("r1", "r2"): [STORED, DELETED],
        SUBJECT.replace("r1", "r3"): [STORED, DELETED],
    }
    tus, _, second, _ = by_subject[SUBJECT] + by_subject["/data/files/f1"][1:]
    assert tus["data"]["attachment"]["hash"] == sha(b"resumable bytes")
    assert second["data"] == {
        "file_id": "f1",
        "attachment": {**second["data"]["attachment"], "hash": sha(b"file two")},
        "replaced_hash": sha(b"file one"),
        "url": second["data"]["url"],
    }
    assert fetch(kinto, second["data"]["url"]).body == b"file two"


def sha(content):
    return hashlib.sha256(content).hexdigest()


def test_expired_data_files_are_delivered(events_app, receiver):
    kinto = events_app("memory", **destination_settings("webhook", receiver))
    kinto.app.post("/v1/data/files?id=soon&ttl=1", b"short-lived", extra_environ=LOCAL)
    gc.collect(kinto.registry, now=gc.data_file_entries.msec_time() + 1000, orphans=False)
    delivered(kinto)
    events = receiver.events()
    assert [(e["type"], e["subject"]) for e in events] == [
        (STORED, "/data/files/soon"),
        (DELETED, "/data/files/soon"),
    ]
    assert events[1]["data"]["attachment"]["hash"] == sha(b"short-lived")
    assert events[1]["source"] == "http://localhost/v1/"  # No request: http_host's.


def test_the_dispatcher_thread_delivers_after_commit(events_app, receiver):
    kinto = events_app("memory", thread=True, **destination_settings("webhook", receiver))
    kinto.upload(RECORD, b"one")
    headers, body, status = receiver.received.get(timeout=10)  # Woken by the commit.
    assert json.loads(body)["subject"] == SUBJECT


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_delete_in_a_batch_is_delivered_once_committed(events_app, receiver, backend):
    kinto = events_app(backend, **destination_settings("webhook", receiver))
    kinto.upload(RECORD, b"one")
    batch = {"requests": [{"method": "DELETE", "path": RECORD.removeprefix("/v1")}]}
    response = kinto.app.post_json("/v1/batch", batch, headers=ALICE)
    assert response.json["responses"][0]["status"] == 200
    delivered(kinto)
    assert [e["type"] for e in receiver.events()] == [STORED, DELETED]


def test_amqp_first_event_after_an_idle_spell_is_delivered_at_its_first_attempt(
    events_app, amqp_queue
):
    """Found by review (2026-12-05).

    AMQP 0-9-1 heartbeats (RabbitMQ guide "Detecting Dead TCP Connections with
    Heartbeats"): RabbitMQ closes a connection that sent no frame for about two heartbeat
    intervals (60 s by default since RabbitMQ 3.5.5). pika's ``BlockingConnection`` sends
    heartbeats only while the application calls into it. pika's own
    ``examples/long_running_publisher.py`` and discussion pika/pika#1382 say so: a publisher
    that keeps a connection between rare publishes must call ``process_data_events``, or
    open a new one. The ``amqp`` destination keeps one connection per dispatcher between
    events and never services it. After an idle spell longer than that (2-3 minutes with the
    defaults; here ``heartbeat=1`` in the URL), the broker has dropped it, and the next
    event's first ``basic_publish`` fails with ``StreamLostError``. The event counts as a
    failed attempt (warning log, ``retried`` metric, ``attempts`` + 1) and is delayed by
    ``retry_seconds``, or by ``poll_seconds`` on the dispatcher's thread. This happens each
    time a quiet period ends, which is the normal case for uploads that come now and then,
    and the broker did nothing wrong."""
    channel, exchange, queue = amqp_queue
    settings = destination_settings("amqp", exchange=exchange)
    settings["amqp.url"] += "?heartbeat=1"
    kinto = events_app("memory", "amqp", **settings)
    dispatcher = kinto.registry.attachment_dispatcher

    kinto.upload("/v1/buckets/blog/collections/articles/records/r1", b"first")
    dispatcher.run_once()
    assert [
        row["state"]
        for row in sorted(outbox.rows(kinto.registry.storage), key=lambda row: row["seq"])
    ] == [outbox.DELIVERED]

    time.sleep(5)  # A quiet spell: a few heartbeat intervals without any upload.

    kinto.upload("/v1/buckets/blog/collections/articles/records/r1", b"second")
    dispatcher.run_once()
    second = sorted(outbox.rows(kinto.registry.storage), key=lambda row: row["seq"])[-1]
    assert second["state"] == outbox.DELIVERED, (
        f"the first event after an idle spell failed: {second.get('last_error')}"
    )
    assert channel.queue_declare(queue, passive=True).method.message_count == 2
