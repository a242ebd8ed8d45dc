"""The events' delivery and how blob deletion keeps what undelivered events name, against
hostile destinations, outages and kills: an adversarial review's tests (2026-12-05). Those
marked HELD are attacks the code withstood."""

import base64
import hashlib
import hmac
import http.server
import json
import logging
import threading
import time
from math import floor
from urllib.parse import urlsplit

import pytest
import transaction
from kinto.core.utils import msec_time

from kinto_attachment import gc
from kinto_attachment.events import dispatcher as dispatcher_module
from kinto_attachment.state import outbox

from .conftest import AMQP, REDIS, WEBHOOK_SECRET, destination_settings
from .test_delivery import BACKENDS, RECORD, SUBJECT, delivered


HOUR_MS = 3600 * 1000


def rows(kinto, state=None):
    with transaction.manager:
        return sorted(outbox.rows(kinto.registry.storage, state), key=lambda r: r["seq"])


def verify_standard_webhook(secret, headers, body):
    """Verification as the Standard Webhooks reference library (``standardwebhooks`` 1.1.0,
    ``Webhook.verify``) does it, written again here: the body decoded as text, signed as
    ``{id}.{floor(timestamp)}.{text}``, any ``v1`` signature of the space-separated list,
    and a timestamp within 5 minutes."""
    headers = {k.lower(): v for k, v in headers.items()}
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    timestamp = float(headers["webhook-timestamp"])
    assert abs(timestamp - time.time()) < 300, "timestamp out of tolerance"
    text = body.decode()
    signed = f"{headers['webhook-id']}.{floor(timestamp)}.{text}".encode()
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    for versioned in headers["webhook-signature"].split(" "):
        version, signature = versioned.split(",")
        if version == "v1" and hmac.compare_digest(expected, base64.b64decode(signature)):
            return json.loads(text)
    raise AssertionError("no matching signature")


def fetch(kinto, url):
    """GET an event's fetch URL on the test app (its host is http_host: localhost)."""
    parts = urlsplit(url)
    return kinto.app.get(parts.path + "?" + parts.query, expect_errors=True)


def collect(kinto, later_ms=0):
    return gc.collect(kinto.registry, now=msec_time() + later_ms)


def grace_settings(replaced_grace=0):
    return {
        "kinto.attachment.gc.replaced_grace_seconds": str(replaced_grace),
        "kinto.attachment.gc.orphans_grace_seconds": "0",
    }


# 1. Replaced twice quickly while the webhook is down, the GC run, then the outage ends: every
# version named by an event is still fetchable at its delivery, in order, signed.


@pytest.mark.parametrize("backend", BACKENDS)
def test_replaced_twice_during_an_outage_every_version_is_fetchable_when_delivered(
    events_app, receiver, proxies, backend
):
    """HELD: the attachment replaced twice while the webhook is down, replaced blobs deleted
    at once (grace 0), the collector run two hours later: once the webhook is back, the three
    events come in order, signed, and each one's URL serves its own version's bytes."""
    proxy = proxies("127.0.0.1", receiver.port)
    kinto = events_app(
        backend,
        more=grace_settings(0),
        fetch_grace_seconds=3600,
        **destination_settings("webhook", receiver, port=proxy.port),
    )
    proxy.down()
    contents = [b"version one", b"version two", b"version three"]
    for content in contents:
        # Never a 5xx for the uploader while the destination is down.
        kinto.upload(RECORD, content, status=(200, 201))
        kinto.registry.attachment_dispatcher.run_once()
    # After-commit deletion happened (grace 0) and a whole collection, two hours later.
    collect(kinto, later_ms=2 * HOUR_MS)
    assert all(r["state"] == outbox.PENDING for r in rows(kinto))
    assert [r["attempts"] for r in rows(kinto)] == [3, 0, 0], "only the head is tried"
    proxy.up()
    delivered(kinto)
    received = []
    while not receiver.received.empty():
        headers, body, status = receiver.received.get()
        assert status == 200
        event = verify_standard_webhook(WEBHOOK_SECRET, headers, body)
        assert headers["webhook-id"] == event["id"]
        received.append(event)
    assert [e["subject"] for e in received] == [SUBJECT] * 3
    assert len({e["id"] for e in received}) == 3
    for event, content in zip(received, contents, strict=True):
        got = fetch(kinto, event["data"]["url"])
        assert got.status_int == 200, (content, got.status)
        assert got.body == content, "each event fetches its own version, in order"
        assert hashlib.sha256(got.body).hexdigest() == event["data"]["attachment"]["hash"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_event_ids_and_webhook_ids_are_stable_across_retries(events_app, receiver, backend):
    """HELD: each attempt of an event carries the same ``id`` and ``webhook-id``; the
    timestamp and signature are fresh at each and verify."""
    kinto = events_app(backend, **destination_settings("webhook", receiver))
    receiver.statuses = [(503, {}), (500, {}), (429, {})]
    kinto.upload(RECORD, b"hello")
    for _ in range(4):
        kinto.registry.attachment_dispatcher.run_once()
    attempts = []
    while not receiver.received.empty():
        headers, body, status = receiver.received.get()
        event = verify_standard_webhook(WEBHOOK_SECRET, headers, body)
        attempts.append((headers["webhook-id"], event["id"], status))
    assert [s for _, _, s in attempts] == [503, 500, 429, 200]
    assert len({(w, i) for w, i, _ in attempts}) == 1
    assert attempts[0][0] == attempts[0][1]


# 2. A dispatcher killed between the send and the mark: the event is sent again, same id,
# before the next of its subject; the blob it names stays meanwhile.


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_between_send_and_mark_redelivers_same_event_in_order(
    events_app, redis_stream, backend, monkeypatch
):
    """HELD: a dispatcher killed between sending an event and marking it: the lease holds
    the subject; once it ends, the same event (same id) goes again before the next one, and
    the blob it names is still there."""
    client, stream = redis_stream
    kinto = events_app(
        backend,
        "redis",
        more=grace_settings(0),
        timeout_seconds=1,
        **destination_settings("redis", stream=stream),
    )
    kinto.upload(RECORD, b"first")
    dispatcher = kinto.registry.attachment_dispatcher

    class Killed(BaseException):
        pass

    def killed(self, *args, **kwargs):
        raise Killed()

    kind = type(dispatcher._claims)
    monkeypatch.setattr(kind, "delivered", killed)
    with pytest.raises(Killed):
        dispatcher.run_once()
    monkeypatch.undo()
    assert client.xlen(stream) == 1, "sent, not marked"
    # The next version replaces it (grace 0: deleted after commit unless an event holds it).
    kinto.upload(RECORD, b"second")
    collect(kinto, later_ms=2 * HOUR_MS)
    assert dispatcher.run_once() == 0, "the lease still runs: nothing claimed"
    lease = (3 * 1 + dispatcher_module.LEASE_MARGIN) * 1000
    later = msec_time() + lease + 1000
    assert dispatcher.run_once(now=later) == 1
    assert dispatcher.run_once(now=later + 1) == 1
    entries = [json.loads(f[b"event"]) for _, f in client.xrange(stream)]
    assert len(entries) == 3
    first, again, second = entries
    assert first["id"] == again["id"] != second["id"]
    assert [e["data"]["attachment"]["hash"] for e in (again, second)] == [
        hashlib.sha256(b"first").hexdigest(),
        hashlib.sha256(b"second").hexdigest(),
    ]
    got = fetch(kinto, again["data"]["url"])
    assert (got.status_int, got.body) == (200, b"first")


# 3. A destination that hangs, with the dispatcher's thread on: uploads are never held up
# nor failed.


@pytest.mark.parametrize("backend", BACKENDS)
def test_uploads_are_prompt_and_never_5xx_while_every_destination_hangs(
    events_app, receiver, redis_stream, amqp_queue, proxies, backend
):
    """HELD: every destination hanging, the dispatcher on: uploads answer promptly, never
    a 5xx."""
    _, stream = redis_stream
    _, exchange, _ = amqp_queue
    hook = proxies("127.0.0.1", receiver.port)
    red = proxies(*REDIS)
    rabbit = proxies(*AMQP)
    settings = {
        **destination_settings("webhook", receiver, port=hook.port),
        **destination_settings("redis", stream=stream, port=red.port),
        **destination_settings("amqp", exchange=exchange, port=rabbit.port),
    }
    for proxy in (hook, red, rabbit):
        proxy.hole()
    kinto = events_app(
        backend,
        "webhook redis amqp",
        thread=True,
        timeout_seconds=2,
        poll_seconds=0.1,
        **settings,
    )
    try:
        time.sleep(0.5)  # The lanes are attempting, and hanging.
        for i in range(6):
            started = time.monotonic()
            kinto.upload(RECORD.replace("r1", f"r{i}"), b"x" * 1000, status=(200, 201))
            assert time.monotonic() - started < 1.5, "an upload waited for a destination"
    finally:
        for proxy in (hook, red, rabbit):
            proxy.up()
        kinto.registry.attachment_dispatcher.stop()


# 4. Secrets never in the logs nor the outbox, whatever the destination answers.


@pytest.mark.parametrize("case", ["amqp-down", "amqp-refused", "redis-down", "webhook-down"])
def test_no_password_in_logs_or_last_error(events_app, proxies, caplog, request, case):
    """HELD: a destination's password or token is in no log line and no row's last error,
    whatever the failure."""
    secret = "S3CRETPASSWORD42"
    if case.startswith("amqp"):
        _, exchange, _ = request.getfixturevalue("amqp_queue")
        proxy = proxies(*AMQP)
        if case == "amqp-down":
            proxy.down()
        settings = {
            "amqp.url": f"amqp://guest:{secret}@127.0.0.1:{proxy.port}/%2F",
            "amqp.exchange": exchange,
            "amqp.routing_key": exchange,
        }
        kind = "amqp"
    elif case == "redis-down":
        _, stream = request.getfixturevalue("redis_stream")
        proxy = proxies(*REDIS)
        proxy.down()
        settings = {
            "redis.url": f"redis://:{secret}@127.0.0.1:{proxy.port}/0",
            "redis.stream": stream,
        }
        kind = "redis"
    else:
        receiver = request.getfixturevalue("receiver")
        proxy = proxies("127.0.0.1", receiver.port)
        proxy.down()
        settings = {
            "webhook.url": f"http://user:{secret}@127.0.0.1:{proxy.port}/hook?token={secret}",
            "webhook.secret": WEBHOOK_SECRET,
        }
        kind = "webhook"
    kinto = events_app("memory", kind, timeout_seconds=2, **settings)
    caplog.set_level(logging.DEBUG)
    kinto.upload(RECORD, b"hello")
    kinto.registry.attachment_dispatcher.run_once()
    [row] = rows(kinto)
    assert row["state"] == outbox.PENDING and row["attempts"] == 1, row
    assert row.get("last_error")
    assert secret not in row["last_error"]
    for record in caplog.records:
        text = record.getMessage() + (
            logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        )
        assert secret not in text, text


# 5. Destinations that answer oddly.


class OddWebhook:
    """A webhook that answers each POST with the next of ``answers``: raw HTTP bytes."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.bodies = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                hook.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                answer = (
                    hook.answers.pop(0)
                    if hook.answers
                    else b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                )
                if callable(answer):
                    answer(self.wfile)
                else:
                    self.wfile.write(answer)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def webhook_at(port):
    return {"webhook.url": f"http://127.0.0.1:{port}/hook", "webhook.secret": WEBHOOK_SECRET}


def test_a_retry_after_the_client_cannot_read_is_a_plain_failed_attempt(events_app, caplog):
    """Found by review (2026-12-05).

    It was: ``Retry-After: ²`` (a latin-1 superscript digit: ``str.isdigit`` says yes,
    ``float`` refuses it) on a 503 raised ``ValueError``, logged with its traceback as if the
    dispatcher had a bug, the row's last error hiding the endpoint's 503. Fixed: only ASCII
    digits are seconds; the attempt is a failed one like any 503 (``webhook: 503``)."""
    hook = OddWebhook([b"HTTP/1.1 503 Busy\r\nRetry-After: \xb2\r\nContent-Length: 0\r\n\r\n"])
    try:
        kinto = events_app("memory", timeout_seconds=2, **webhook_at(hook.port))
        caplog.set_level(logging.WARNING)
        kinto.upload(RECORD, b"hello")
        kinto.registry.attachment_dispatcher.run_once()
        [row] = rows(kinto)
        assert row["state"] == outbox.PENDING and row["attempts"] == 1
        assert row["last_error"] == "webhook: 503", row["last_error"]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        delivered(kinto)
        assert rows(kinto, outbox.PENDING) == []
    finally:
        hook.close()


def test_a_2xx_with_a_huge_garbage_body_is_a_delivery_within_the_timeout(events_app):
    """HELD: a 200 whose body is 50 MB of garbage (announced) is a delivery, not waited for."""

    def huge(wfile):
        wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 52428800\r\n\r\n")
        chunk = b"\x00garbage" * 8192
        try:
            for _ in range(52428800 // len(chunk)):
                wfile.write(chunk)
        except OSError:
            pass

    hook = OddWebhook([huge])
    try:
        kinto = events_app("memory", timeout_seconds=3, **webhook_at(hook.port))
        kinto.upload(RECORD, b"hello")
        started = time.monotonic()
        kinto.registry.attachment_dispatcher.run_once()
        assert time.monotonic() - started < 3.5
        [row] = rows(kinto)
        assert row["state"] == outbox.DELIVERED, row
        kinto.upload(RECORD, b"again")
        delivered(kinto)
        assert len(hook.bodies) == 2
    finally:
        hook.close()


def test_a_non_http_answer_is_retried_not_lost(events_app):
    """HELD: garbage instead of HTTP (``200`` alone, no status line) is a failed attempt."""
    hook = OddWebhook([b"200 OK thanks\r\n\r\n", b"\x00\x01\x02"])
    try:
        kinto = events_app("memory", timeout_seconds=2, **webhook_at(hook.port))
        kinto.upload(RECORD, b"hello")
        kinto.registry.attachment_dispatcher.run_once()
        kinto.registry.attachment_dispatcher.run_once()
        [row] = rows(kinto)
        assert row["state"] == outbox.PENDING and row["attempts"] == 2, row
        delivered(kinto)
        assert rows(kinto, outbox.PENDING) == []
        assert len(hook.bodies) == 3
    finally:
        hook.close()


def test_redis_key_of_the_wrong_type_is_retried_not_lost(events_app, redis_stream):
    """HELD: the stream's name taken by a string (WRONGTYPE): retried, then delivered."""
    client, stream = redis_stream
    client.set(stream, "not a stream")
    kinto = events_app("memory", "redis", **destination_settings("redis", stream=stream))
    kinto.upload(RECORD, b"hello")
    kinto.registry.attachment_dispatcher.run_once()
    [row] = rows(kinto)
    assert row["state"] == outbox.PENDING and "WRONGTYPE" in row["last_error"], row
    client.delete(stream)
    delivered(kinto)
    assert client.xlen(stream) == 1


def test_amqp_exchange_missing_then_declared(events_app, amqp_queue):
    """HELD: publishing to an exchange that does not exist (the broker closes the channel,
    404) fails the attempt; once the exchange exists, the event is delivered."""
    channel, exchange, queue = amqp_queue
    missing = exchange + "-later"
    settings = {
        "amqp.url": f"amqp://guest:guest@{AMQP[0]}:{AMQP[1]}/%2F",
        "amqp.exchange": missing,
        "amqp.routing_key": queue,
    }
    kinto = events_app("memory", "amqp", timeout_seconds=2, **settings)
    kinto.upload(RECORD, b"hello")
    kinto.registry.attachment_dispatcher.run_once()
    [row] = rows(kinto)
    assert row["state"] == outbox.PENDING and row["attempts"] == 1, row
    channel.exchange_declare(missing, "direct")
    try:
        channel.queue_bind(queue, missing, routing_key=queue)
        delivered(kinto)
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        assert method is not None and json.loads(body)["id"] == properties.message_id
    finally:
        channel.exchange_delete(missing)


# 6. Order per subject under retries, subjects apart.


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_subject_holds_only_itself_and_keeps_its_order(events_app, receiver, backend):
    """HELD: r1's first event fails twice; r2's events go meanwhile; r1's go in order."""
    kinto = events_app(backend, **destination_settings("webhook", receiver))
    kinto.upload(RECORD, b"r1-a")
    receiver.statuses = [(503, {})]
    kinto.registry.attachment_dispatcher.run_once()
    other = RECORD.replace("r1", "r2")
    kinto.upload(RECORD, b"r1-b")
    kinto.upload(other, b"r2-a")
    kinto.upload(other, b"r2-b")
    receiver.statuses = [(503, {})]
    kinto.registry.attachment_dispatcher.run_once()  # r1-a fails again; r2-a goes.
    delivered(kinto)
    order = [e["data"]["attachment"]["hash"] for e in receiver.events()]
    digest = {hashlib.sha256(c).hexdigest(): c for c in (b"r1-a", b"r1-b", b"r2-a", b"r2-b")}
    names = [digest[h] for h in order]
    assert [n for n in names if n.startswith(b"r1")] == [b"r1-a", b"r1-b"]
    assert [n for n in names if n.startswith(b"r2")] == [b"r2-a", b"r2-b"]


# 7. A purge race: the GC reads ``held`` then an operator revives a dead row.


@pytest.mark.postgresql
def test_a_dead_events_blob_survives_gc_until_purged_even_after_replacements(events_app, receiver):
    """HELD (PostgreSQL): dead events keep their blobs through replacements and the GC;
    ``retry`` delivers them with a URL that still works."""
    kinto = events_app(
        "postgresql",
        more=grace_settings(0),
        max_attempts=1,
        fetch_grace_seconds=0,
        **destination_settings("webhook", receiver),
    )
    receiver.statuses = [(500, {})]
    kinto.upload(RECORD, b"doomed")
    kinto.registry.attachment_dispatcher.run_once()
    assert [r["state"] for r in rows(kinto)] == [outbox.DEAD]
    kinto.upload(RECORD, b"next")
    kinto.upload(RECORD, b"third")
    delivered(kinto)
    collect(kinto, later_ms=3 * HOUR_MS)
    from kinto_attachment.events import command

    assert command.run(kinto.registry, "retry") == ["1 dead events retried"]
    delivered(kinto)
    events = receiver.events()
    revived = [
        e
        for e in events
        if e["data"]["attachment"]["hash"] == hashlib.sha256(b"doomed").hexdigest()
    ]
    assert revived, events
    got = fetch(kinto, revived[-1]["data"]["url"])
    assert (got.status_int, got.body) == (200, b"doomed")
