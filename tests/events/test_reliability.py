"""The events' reliability as a review tried it (2026-12-05): destinations refused at
start-up, two nodes, leases, brokers that refuse or cut, outages, the operator's command.
Those that found a defect say "Found by review"; the others keep what was found right."""

import contextlib
import hashlib
import json
import random
import socket
import threading
import time
import uuid

import pytest
import redis
import transaction
from kinto import main as kinto_main
from pyramid.exceptions import ConfigurationError

from kinto_attachment.events import dispatcher
from kinto_attachment.events.redis import Redis
from kinto_attachment.state import outbox

from ..conftest import ALICE, Kinto, build_settings, flush, make_app
from .conftest import AMQP, REDIS, URL_SECRET, WEBHOOK_SECRET, destination_settings
from .test_delivery import RECORD, SUBJECT, delivered
from .test_guarantees import StallingProxy


def rows(kinto, state=None):
    with transaction.manager:
        return sorted(outbox.rows(kinto.registry.storage, state), key=lambda r: r["seq"])


def start(tmp_path, destination, values):
    """Start a Kinto with events to ``destination`` and the events ``values``."""
    settings = build_settings(
        "memory",
        str(tmp_path),
        **{
            "kinto.attachment.events.destinations": destination,
            "kinto.attachment.events.url_secret": URL_SECRET,
            **{f"kinto.attachment.events.{k}": v for k, v in values.items()},
            "kinto.http_host": "localhost",
        },
    )
    app = kinto_main({}, **settings)
    if destination:
        app.registry.attachment_dispatcher.stop()
    return app


# Start-up: a destination that cannot work is refused, naming its setting.


@pytest.mark.parametrize(
    "url",
    [
        # A mistyped option (``socket_timeout``): redis-py passes unknown query arguments on
        # to its connection class, which refuses them at the first connection.
        "redis://:hunter2@127.0.0.1:6379/0?sockettimeout=5",
        "redis://:hunter2@127.0.0.1:6379/0?protocol=9",
        # No socket path: the host check of ``_as_url`` skips ``unix://``.
        "unix://",
    ],
    ids=["unknown-option", "bad-protocol", "unix-without-path"],
)
def test_a_redis_url_its_client_cannot_read_stops_start_up(tmp_path, url):
    """Found by review (2026-12-05).

    docs/events.rst: "At start-up each destination used gets its client built, without
    connecting: a client not installed, or a URL it cannot read [...] stops the server with
    an error naming the setting [...], rather than every event failing at delivery until it
    dies." redis-py's ``from_url`` only parses these URLs; it is the connection, made at the
    first delivery, that refuses them (``TypeError: AbstractConnection.__init__() got an
    unexpected keyword argument 'sockettimeout'``, ``protocol must be either 2 or 3``,
    ``Error 22 connecting to .``): the server starts, and every event fails until it dies.
    (events/redis.py ``Redis.__init__``, events/__init__.py ``check_destinations``.)"""
    stream = f"kinto-attachment-review-{uuid.uuid4().hex}"
    with pytest.raises(ConfigurationError) as error:
        app = start(tmp_path, "redis", {"redis.url": url, "redis.stream": stream})
        # Started: what its first delivery says.
        try:
            Redis(app.registry.attachment_settings.events).deliver(b"{}", {"id": "x"})
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"started; every delivery fails: {type(e).__name__}: {e}")
        finally:
            redis.Redis(*REDIS).delete(stream)
    assert "`kinto.attachment.events.redis.url`" in str(error.value)
    assert "hunter2" not in str(error.value)


@pytest.mark.parametrize(
    ("destination", "values", "named"),
    [
        (
            "webhook",
            {"webhook.url": "http://[::1/hook", "webhook.secret": WEBHOOK_SECRET},
            "webhook.url",
        ),
        ("redis", {"redis.url": "redis://:hunter2@[::1:6379/0"}, "redis.url"),
        ("amqp", {"amqp.url": "amqp://guest:hunter2@[::1:5672/%2F"}, "amqp.url"),
        (
            "amqp",
            {"amqp.url": "amqps://guest:hunter2@127.0.0.1:5671/%2F?ssl_options=%7B%22x%22%3A1%7D"},
            "amqp.url",
        ),
    ],
    ids=["webhook-ipv6", "redis-ipv6", "amqp-ipv6", "amqps-ssl-options"],
)
def test_a_malformed_destination_url_is_refused_naming_its_setting(
    tmp_path, destination, values, named
):
    """Found by review (2026-12-05).

    A URL that cannot be parsed stopped start-up with a bare ``ValueError: Invalid IPv6
    URL`` (``urlsplit(url).hostname`` in events/options.py ``_as_url``, outside of any
    ``try``) or ``TypeError: cafile, capath and cadata cannot be all omitted`` (pika's
    ``URLParameters``; events/__init__.py ``check_destinations`` catches ``ImportError``
    and ``ValueError`` only): a traceback that names no setting, where the docs promise "an
    error naming the setting (its password shown as ``***``)"."""
    with pytest.raises(ConfigurationError) as error:
        try:
            start(tmp_path, destination, values)
        except ConfigurationError:
            raise
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"start-up failed with a bare {type(e).__name__}: {e}")
    assert f"`kinto.attachment.events.{named}`" in str(error.value)
    assert "hunter2" not in str(error.value)


def test_an_empty_redis_stream_name_is_refused(tmp_path, redis_stream):
    """Found by review (2026-12-05).

    ``kinto.attachment.events.redis.stream =`` (empty: a template whose variable was not
    set, ``KINTO_ATTACHMENT_EVENTS_REDIS_STREAM=``) replaces the default stream name with
    ``""`` (events/options.py: ``as_text`` accepts it, and it overrides the dataclass
    default). Redis takes ``XADD "" ...``: every event is marked delivered into a key no
    worker reads, and removed from the outbox an hour later: all of them lost, silently.
    Expected: start-up refuses an empty stream name (naming the setting)."""
    client, _ = redis_stream
    try:
        with pytest.raises(ConfigurationError) as error:
            app = start(
                tmp_path, "redis", {"redis.url": "redis://127.0.0.1:6379/0", "redis.stream": ""}
            )
            kinto = Kinto(_webtest(app), str(tmp_path))
            kinto.create_collection()
            kinto.upload(RECORD, b"hello")
            delivered(kinto)
            [row] = rows(kinto)
            pytest.fail(
                f"started; the event is {row['state']}, in the stream {row['destination']!r}"
                f" named {app.registry.attachment_settings.events.redis_stream!r}"
                f" (XLEN of '': {client.xlen('')})"
            )
        assert "`kinto.attachment.events.redis.stream`" in str(error.value)
    finally:
        client.delete("")


def _webtest(app):
    import webtest

    return webtest.TestApp(app)


# Two nodes on one PostgreSQL database.


def _node(settings, base_path):
    kinto = Kinto(make_app(settings), base_path)
    return kinto


def webhook_on_postgresql(pg, base_path, receiver, poll_seconds):
    """Settings of a node on PostgreSQL (``pg``) whose events go to ``receiver``'s webhook,
    retried at once, its lanes looking every ``poll_seconds``."""
    events = {
        "destinations": "webhook",
        "url_secret": URL_SECRET,
        "retry_seconds": "0",
        "poll_seconds": poll_seconds,
        **destination_settings("webhook", receiver),
    }
    return build_settings(
        "postgresql",
        base_path,
        pg=pg,
        **{f"kinto.attachment.events.{name}": value for name, value in events.items()},
        **{"kinto.http_host": "localhost"},
    )


@pytest.mark.postgresql
def test_two_nodes_dispatching_while_uploads_commit_keep_order_and_lose_nothing(
    pg_url, receiver, tmp_path
):
    """Two apps (two nodes) on one database, their dispatchers' lanes
    running (``poll_seconds`` 0.05), two clients uploading on both nodes in turn, the webhook
    answering 503 to one attempt in four: every version delivered, in order per subject."""
    base_path = str(tmp_path / "files")
    settings = webhook_on_postgresql(pg_url, base_path, receiver, poll_seconds="0.05")
    rng = random.Random(7)
    receiver.statuses = [(503, {}) if rng.random() < 0.25 else (200, {}) for _ in range(400)]
    nodes = [_node(settings, base_path), _node(settings, base_path)]
    try:
        with transaction.manager:
            flush(nodes[0].app)
        nodes[0].create_collection()
        # A collection per client: Kinto's own 409 for two records of one collection written
        # in the same millisecond is not the subject here.
        nodes[0].create_collection(collection="other")
        expected, failures = {}, []

        def client(index):
            try:
                for n in range(8):
                    for s in range(2):
                        record = f"c{index}s{s}"
                        content = f"{record}-{n}-{uuid.uuid4()}".encode()
                        url = RECORD.replace("r1", record)
                        subject = SUBJECT.replace("r1", record)
                        if index:
                            url = url.replace("articles", "other")
                            subject = subject.replace("articles", "other")
                        nodes[(n + s) % 2].upload(url, content)
                        expected.setdefault(subject, []).append(
                            hashlib.sha256(content).hexdigest()
                        )
            except Exception as e:  # noqa: BLE001
                failures.append(e)

        clients = [threading.Thread(target=client, args=(i,)) for i in range(2)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(120)
        assert not failures, failures
        deadline = time.monotonic() + 60
        while rows(nodes[0], outbox.PENDING) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rows(nodes[0], outbox.PENDING) == []
        assert rows(nodes[0], outbox.DEAD) == []
        firsts, by_subject = set(), {}
        for event in receiver.events():
            if event["id"] not in firsts:
                firsts.add(event["id"])
                by_subject.setdefault(event["subject"], []).append(
                    event["data"]["attachment"]["hash"]
                )
        assert by_subject == expected
    finally:
        for node in nodes:
            node.registry.attachment_dispatcher.stop()
        with transaction.manager:
            flush(nodes[0].app)


# The lease covers the whole attempt.


def test_a_fetch_url_slow_to_sign_cannot_outlive_the_lease(events_app, receiver, monkeypatch):
    """Found by review (2026-12-05).

    The ``url`` of a stored event is made at each attempt, before the destination's own
    deadline starts (events/dispatcher.py ``_deliver``: ``urls.fetch_url`` then
    ``deliver``), and nothing bounds it: on GCS without a key file (GCE, GKE's workload
    identity) it is a credentials refresh and an IAM ``signBlob`` call (google-auth's default
    timeout: 120 s), on S3 a credentials refresh (STS, the instance metadata). The lease is
    ``3 × timeout_seconds + 10`` seconds (40 s by default): a signing that hangs past it lets
    another node claim the row, deliver it and the subject's next event, and then the first
    node sends its copy anyway (no look at the lease once the URL is made): a late copy of
    the first version, after the second (what the Redis and AMQP deadlines were made to
    prevent: "an attempt takes events.timeout_seconds at most, whole").

    Played here: node A's signing blocks until node B has delivered both events with the
    lease of A's claim run out (both clocks moved on past it). A looks at its lease again
    once the URL is made, and sends nothing: the receiver gets first, second."""
    kinto = events_app(
        "memory", store="s3", timeout_seconds=0.5, **destination_settings("webhook", receiver)
    )
    store = kinto.registry.attachment_store
    kinto.upload(RECORD, b"first")
    kinto.upload(RECORD, b"second")
    presign = store.presigned_url
    node_a = kinto.registry.attachment_dispatcher
    node_b = type(node_a)(kinto.registry)
    signing, release = threading.Event(), threading.Event()

    late = []  # A's signing took 20 s: its clock, from then on.
    clock = dispatcher.msec_time

    def slow_on_a(*args, **kwargs):
        if threading.current_thread().name == "node-a":
            signing.set()
            release.wait(30)
            late.append(20_000)
        return presign(*args, **kwargs)

    def clock_of_each_node():
        mine = threading.current_thread().name == "node-a"
        return clock() + (sum(late) if mine else 0)

    monkeypatch.setattr(store, "presigned_url", slow_on_a)
    monkeypatch.setattr(dispatcher, "msec_time", clock_of_each_node)
    thread = threading.Thread(target=node_a.run_once, name="node-a")
    thread.start()
    try:
        assert signing.wait(10)
        later = int(time.time() * 1000) + 20_000  # Past A's lease: 3 × 0.5 + 10 seconds.
        assert node_b.run_once(now=later) == 1
        assert node_b.run_once(now=later) == 1
    finally:
        release.set()
        thread.join(30)
    hashes = [e["data"]["attachment"]["hash"] for e in receiver.events()]
    names = {hashlib.sha256(b"first").hexdigest(): "first",
             hashlib.sha256(b"second").hexdigest(): "second"}  # fmt: skip
    assert [names[h] for h in hashes] == ["first", "second"]


# RabbitMQ: what a broker refuses, and a confirm that never comes back.


def test_amqp_unroutable_then_routable(events_app, amqp_queue):
    """An exchange with no queue bound returns the ``mandatory``
    message: a failed attempt (not a delivery), and the event waits; once a queue is
    bound, it is delivered, with the same ``message_id``."""
    channel, exchange, queue = amqp_queue
    channel.queue_unbind(queue, exchange, routing_key=queue)
    settings = destination_settings("amqp", exchange=exchange)
    kinto = events_app("memory", "amqp", **settings)
    kinto.upload(RECORD, b"hello")
    kinto.registry.attachment_dispatcher.run_once()
    [row] = rows(kinto, outbox.PENDING)
    assert row["attempts"] == 1 and "Unroutable" in row["last_error"], row
    channel.queue_bind(queue, exchange, routing_key=queue)
    delivered(kinto)
    method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert properties.message_id == row["event"]["id"] == json.loads(body)["id"]
    assert channel.basic_get(queue, auto_ack=True)[0] is None


class CutBeforeConfirm(StallingProxy):
    """A proxy in front of RabbitMQ that forwards a ``Basic.Publish`` (and its content), then
    drops the connection before the broker's ``Basic.Ack`` can come back."""

    def __init__(self):
        self.cut = threading.Event()
        self.armed, self.holding = True, False
        super().__init__(AMQP)

    def _cut(self):
        time.sleep(0.3)  # The broker has the message (content frames too); not its ack.
        self.cut.set()
        for sock in self._sockets:  # Its connections, not its listener: the retry comes.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.holding = False

    def _pipe(self, source, sink, outgoing):
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not outgoing and self.holding:
                    continue  # The broker's ack, never forwarded.
                # Basic.Publish: a method frame (type 1) of class 60, method 40.
                publish = data[:1] == b"\x01" and b"\x00\x3c\x00\x28" in data
                if outgoing and self.armed and publish:
                    self.armed, self.holding = False, True
                    threading.Thread(target=self._cut, daemon=True).start()
                sink.sendall(data)


def test_amqp_connection_cut_before_the_confirm_is_retried_with_the_same_id(
    events_app, amqp_queue
):
    """The message reached the broker, the connection is cut before its
    confirm: a failed attempt, sent again on a new connection; the queue has it twice, with
    one ``message_id`` (at least once, ids stable)."""
    channel, exchange, queue = amqp_queue
    proxy = CutBeforeConfirm()
    try:
        settings = destination_settings("amqp", exchange=exchange, port=proxy.port)
        kinto = events_app("memory", "amqp", timeout_seconds=2, **settings)
        kinto.upload(RECORD, b"hello")
        kinto.registry.attachment_dispatcher.run_once()
        assert proxy.cut.is_set()
        [row] = rows(kinto, outbox.PENDING)
        assert row["attempts"] == 1, row
        delivered(kinto)
        assert rows(kinto, outbox.PENDING) == []
        ids = []
        while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
            ids.append(got[1].message_id)
        assert ids == [row["event"]["id"]] * 2
    finally:
        proxy.close()


# The blob an undelivered event names, once its record, collection or bucket is deleted.


@pytest.mark.postgresql
@pytest.mark.parametrize("deleted", ["record", "bucket"])
def test_a_deleted_records_undelivered_blob_stays_fetchable(events_app, receiver, deleted):
    """The record (or its whole bucket) is deleted while its ``stored``
    event is undelivered (the webhook down); the collector, two hours later, orphans
    included (no grace), leaves the blob; delivered then, the event's URL serves it; an hour
    and a minute after the delivery, it is collected."""
    from kinto.core.utils import msec_time

    from kinto_attachment import gc

    from .test_delivery import fetch

    kinto = events_app(
        "postgresql",
        more={
            "kinto.attachment.gc.replaced_grace_seconds": "0",
            "kinto.attachment.gc.orphans_grace_seconds": "0",
        },
        **destination_settings("webhook", receiver),
    )
    receiver.statuses = [(503, {})]
    metadata = kinto.upload(RECORD, b"version one").json
    kinto.registry.attachment_dispatcher.run_once()
    target = RECORD if deleted == "record" else "/v1/buckets/blog"
    kinto.app.delete(target, headers=ALICE)
    gc.collect(kinto.registry, now=msec_time() + 2 * 3600_000)
    assert kinto.exists(metadata["location"])
    delivered(kinto)
    stored = [e for e in receiver.events() if e["type"].endswith("stored")]
    assert [e["data"]["attachment"]["hash"] for e in stored] == [metadata["hash"]]
    assert fetch(kinto, stored[0]["data"]["url"]).body == b"version one"
    gc.collect(kinto.registry, now=msec_time() + 3660_000)
    assert not kinto.exists(metadata["location"])


def test_plain_kinto_writes_of_records_send_no_event(events_app, receiver):
    """Creating, patching, re-putting (with its attachment unchanged)
    and deleting records through Kinto's own views sends no ``stored`` event, and a
    ``deleted`` one only for the record that had a file."""
    kinto = events_app("memory", **destination_settings("webhook", receiver))
    metadata = kinto.upload(RECORD, b"hello").json
    delivered(kinto)
    receiver.events()
    plain = RECORD.replace("r1", "plain")
    kinto.app.put_json(plain, {"data": {"title": "no file"}}, headers=ALICE)
    kinto.app.patch_json(plain, {"data": {"title": "still none"}}, headers=ALICE)
    kinto.app.patch_json(RECORD, {"data": {"title": "with file"}}, headers=ALICE)
    kinto.app.put_json(RECORD, {"data": {"title": "again", "attachment": metadata}}, headers=ALICE)
    kinto.app.delete(plain, headers=ALICE)
    delivered(kinto)
    assert receiver.events(accepted_only=False) == []
    kinto.app.delete(RECORD, headers=ALICE)
    delivered(kinto)
    assert [e["type"] for e in receiver.events()] == ["org.kinto.attachment.deleted"]


# PostgreSQL lost under a running dispatcher.


@pytest.mark.postgresql
def test_the_dispatcher_recovers_from_a_database_outage(pg_url, receiver, tmp_path, proxies):
    """PostgreSQL unreachable (a TCP proxy down) for two seconds under
    the running lanes, while an event waits claimed-then-undelivered; once it is back, the
    lanes deliver what was recorded before and after."""
    from urllib.parse import urlsplit

    parts = urlsplit(pg_url)
    proxy = proxies(parts.hostname, parts.port or 5432)
    proxied = pg_url.replace(f":{parts.port}/", f":{proxy.port}/")
    base_path = str(tmp_path / "files")
    settings = webhook_on_postgresql(proxied, base_path, receiver, poll_seconds="0.1")
    kinto = Kinto(make_app(settings), base_path)
    try:
        with transaction.manager:
            flush(kinto.app)
        kinto.create_collection()
        kinto.upload(RECORD, b"before")
        deadline = time.monotonic() + 10
        # Delivered *and marked*: cut between the two, the row would stay claimed for its
        # whole lease (40 s), then be delivered again (at least once allows it).
        while rows(kinto, outbox.PENDING) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.received.qsize() == 1
        proxy.down()
        time.sleep(2)
        proxy.up()
        time.sleep(0.5)
        for _attempt in range(20):  # The app's own pool may hand out a dead connection first.
            response = kinto.upload(RECORD, b"after", status="*")
            if response.status_code in (200, 201):
                break
            time.sleep(0.2)
        deadline = time.monotonic() + 15
        while rows(kinto, outbox.PENDING) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rows(kinto, outbox.PENDING) == []
        hashes = [e["data"]["attachment"]["hash"] for e in receiver.events()]
        assert hashes == [
            hashlib.sha256(b"before").hexdigest(),
            hashlib.sha256(b"after").hexdigest(),
        ]
    finally:
        kinto.registry.attachment_dispatcher.stop()
        for _ in range(3):  # The pool may still hold a connection the outage broke.
            try:
                with transaction.manager:
                    flush(kinto.app)
                break
            except Exception:  # noqa: BLE001
                time.sleep(0.1)


# The operator's command.


@pytest.mark.postgresql
def test_retry_and_purge_leave_delivered_and_pending_rows_alone(
    events_app, receiver, redis_stream
):
    """An event dead for the webhook, delivered to Redis; another one
    pending for both. ``retry ID``/``purge ID`` of the delivered or pending ones change
    nothing (``0 dead events``); ``purge ID`` of the first drops its dead webhook row only,
    its Redis row (delivered) stays."""
    from kinto_attachment.events import command

    _, stream = redis_stream
    kinto = events_app(
        "postgresql",
        "webhook redis",
        max_attempts=1,
        **destination_settings("webhook", receiver),
        **destination_settings("redis", stream=stream),
    )
    receiver.statuses = [(500, {})]
    kinto.upload(RECORD, b"first")
    delivered(kinto)
    [dead] = rows(kinto, outbox.DEAD)
    receiver.statuses = [(503, {})] * 10
    kinto.upload(RECORD.replace("r1", "r2"), b"second")
    pending = rows(kinto, outbox.PENDING)
    assert {r["destination"] for r in pending} == {"webhook", "redis"}
    first_id, second_id = dead["event"]["id"], pending[0]["event"]["id"]
    registry = kinto.registry
    assert command.run(registry, "retry", ids=[second_id]) == ["0 dead events retried"]
    assert command.run(registry, "purge", ids=[second_id]) == ["0 dead events purged"]
    before = {(r["destination"], r["event"]["id"]): r["state"] for r in rows(kinto)}
    assert before[("redis", first_id)] == "delivered"
    assert command.run(registry, "purge", ids=[first_id]) == ["1 dead events purged"]
    after = {(r["destination"], r["event"]["id"]): r["state"] for r in rows(kinto)}
    del before[("webhook", first_id)]
    assert after == before


# Found by the review of the fixes (2026-12-05).


def test_an_event_whose_url_always_signs_slowly_is_not_stalled_silently_forever(
    events_app,
    receiver,
    monkeypatch,
):
    """Found by review (2026-12-05).

    A store whose signing takes longer than ``timeout_seconds + 5`` seconds at every
    attempt (a GCS ``signBlob`` through a slow metadata server, an STS refresh that times
    out and retries; with ``timeout_seconds = 0.5`` that is 5.5 s): the look at the lease
    once the URL is made released the row with nothing sent, counted or logged, every round:
    never delivered, never dead, every later event of its subject behind it for ever. Such
    an attempt counts as a failed one (logged, retried, dead in the end)."""
    from kinto_attachment.events import dispatcher, urls
    from kinto_attachment.state import outbox

    from .conftest import destination_settings

    def rows(kinto):
        with transaction.manager:
            return list(outbox.rows(kinto.registry.storage, None))

    kinto = events_app("memory", timeout_seconds=0.5, **destination_settings("webhook", receiver))
    kinto.upload(kinto.record_url(), b"first")
    clock, late = dispatcher.msec_time, [0]
    fetch_url = urls.fetch_url

    def slow(*args, **kwargs):
        late[0] += 6_000  # Each signing takes 6 s.
        return fetch_url(*args, **kwargs)

    monkeypatch.setattr(urls, "fetch_url", slow)
    monkeypatch.setattr(dispatcher, "msec_time", lambda: clock() + late[0])
    for _ in range(5):
        kinto.registry.attachment_dispatcher.run_once()
    [row] = rows(kinto)
    assert receiver.events() or row["attempts"] > 0, (
        f"after 5 rounds: state {row['state']!r}, attempts {row['attempts']}, nothing sent, "
        "nothing counted"
    )


@pytest.mark.parametrize("destinations", ["", "webhook"])
def test_an_empty_redis_stream_is_not_refused_when_redis_is_not_used(tmp_path, destinations):
    """Found by review (2026-12-05), of the refusal of an empty stream: a template that
    leaves it empty (``kinto.attachment.events.redis.stream = ${REDIS_STREAM}``) while events
    go to a webhook, or are off, starts, as an empty ``redis.url`` does where Redis is not
    used."""
    from .conftest import WEBHOOK_SECRET

    values = {"redis.stream": ""}
    if destinations == "webhook":
        values.update({"webhook.url": "http://127.0.0.1:9/hook", "webhook.secret": WEBHOOK_SECRET})
    start(tmp_path, destinations, values)


def test_an_amqps_url_whose_ca_file_is_missing_is_refused_naming_its_setting(tmp_path):
    """Found by review (2026-12-05).

    ``ssl_options`` naming a CA file that is not there: pika's ``URLParameters`` raises
    ``FileNotFoundError``, which stopped start-up on a bare traceback that named no setting
    (docs/events.rst promises "an error naming the setting"), its password as ``***``."""
    from urllib.parse import quote

    from pyramid.exceptions import ConfigurationError

    options = quote('{"ca_certs": "/nonexistent/ca.pem"}')
    url = f"amqps://guest:hunter2@127.0.0.1:5671/%2F?ssl_options={options}"
    with pytest.raises(ConfigurationError) as error:
        start(tmp_path, "amqp", {"amqp.url": url, "amqp.routing_key": "q"})
    assert "`kinto.attachment.events.amqp.url`" in str(error.value)
    assert "hunter2" not in str(error.value)
