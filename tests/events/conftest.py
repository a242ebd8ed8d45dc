"""Apps with events on, and the destinations they send to: a webhook receiver started here,
Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672, guest/guest) as they run on every
development and CI machine, each test with its own stream, queue and exchange, removed after.
Outages are played with :class:`~tests.support.tcpproxy.TcpProxy` in front of them.

Unless a test wants it, the dispatcher's thread is stopped: tests deliver with
``dispatcher.run_once()``, and see each attempt.
"""

import base64
import http.server
import json
import os
import queue
import threading
import uuid

import pytest

from ..conftest import IN_CI, Kinto, build_settings, flush, make_app
from ..support.tcpproxy import TcpProxy


REDIS = ("127.0.0.1", 6379)
AMQP = ("127.0.0.1", 5672)
SECRET_KEY = os.urandom(32)
WEBHOOK_SECRET = "whsec_" + base64.b64encode(SECRET_KEY).decode()
URL_SECRET = "a-test-secret-of-enough-length"


def unavailable(what, error):
    message = f"{what} unavailable: {error}"
    if IN_CI:
        pytest.fail(message + " (CI=true: these tests must run)", pytrace=False)
    pytest.skip(message)


class Receiver:
    """A webhook endpoint: keeps what it receives; answers ``statuses`` in turn, then 200.
    A ``GET`` (what a followed redirect becomes) is answered 200 and kept in ``gets``."""

    def __init__(self):
        self.received = queue.Queue()
        self.statuses = []
        self.gets = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, headers = (receiver.statuses or [(200, {})]).pop(0)
                receiver.received.put((dict(self.headers), body, status))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                receiver.gets.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, accepted_only=True):
        """The events received so far (those answered 2xx), as JSON."""
        found = []
        while not self.received.empty():
            headers, body, status = self.received.get()
            if 200 <= status < 300 or not accepted_only:
                found.append(json.loads(body))
        return found

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def redis_stream():
    """``(client, stream name)``: a stream of this test's, deleted after it."""
    import redis

    client = redis.Redis(*REDIS, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as e:
        unavailable("Redis", e)
    stream = f"kinto-attachment-test-{uuid.uuid4().hex}"
    yield client, stream
    client.delete(stream)
    client.close()


@pytest.fixture
def amqp_queue():
    """``(channel, exchange, queue)``: a direct exchange of this test's, bound to a queue of
    its own (routing key: the queue's name), both deleted after it."""
    import pika

    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters(*AMQP))
    except pika.exceptions.AMQPError as e:
        unavailable("RabbitMQ", e)
    channel = connection.channel()
    name = f"kinto-attachment-test-{uuid.uuid4().hex}"
    channel.exchange_declare(name, "direct")
    channel.queue_declare(name)
    channel.queue_bind(name, name, routing_key=name)
    yield channel, name, name
    channel.queue_delete(name)
    channel.exchange_delete(name)
    connection.close()


@pytest.fixture
def proxies():
    """``proxy(host, port)``: a TcpProxy to it, closed after the test."""
    made = []

    def proxy(host, port):
        made.append(TcpProxy(host, port))
        return made[-1]

    yield proxy
    for made_proxy in made:
        made_proxy.close()


def destination_settings(destination, receiver=None, stream=None, exchange=None, port=None):
    """The settings of one destination; ``port``: reach it through that (a proxy's)."""
    if destination == "webhook":
        return {
            "webhook.url": f"http://127.0.0.1:{port or receiver.port}/hook",
            "webhook.secret": WEBHOOK_SECRET,
        }
    if destination == "redis":
        return {"redis.url": f"redis://127.0.0.1:{port or REDIS[1]}/0", "redis.stream": stream}
    return {
        "amqp.url": f"amqp://guest:guest@127.0.0.1:{port or AMQP[1]}/%2F",
        "amqp.exchange": exchange,
        "amqp.routing_key": exchange,
    }


def redis_events_for_live_servers(monkeypatch, stream):
    """Events on, to Redis's ``stream``, for the live servers started next (``pserve`` on the
    shipped configuration), by Kinto's environment variables."""
    environment = {
        "DESTINATIONS": "redis",
        "REDIS_URL": f"redis://{REDIS[0]}:{REDIS[1]}/0",
        "REDIS_STREAM": stream,
        "URL_SECRET": "a-live-secret-of-enough-length",
        "POLL_SECONDS": "0.5",
    }
    for name, value in environment.items():
        monkeypatch.setenv(f"KINTO_ATTACHMENT_EVENTS_{name}", value)


@pytest.fixture
def events_app(tmp_path_factory, request):
    """``events_app(backend, destinations, thread=False, **events_settings)``: a Kinto with
    the blog/articles collection and events to ``destinations``; its dispatcher's thread is
    stopped unless ``thread``. Settings are ``kinto.attachment.events.NAME``, and ``more``
    (full names); ``store=s3`` puts files on the moto server, ``store=gcs`` on the GCS emulator."""
    made = []

    def build(
        backend="memory", destinations="webhook", thread=False, store="local", more=(), **extra
    ):
        pg = request.getfixturevalue("pg_url") if backend == "postgresql" else None
        base_path = str(tmp_path_factory.mktemp("attachments"))
        settings = build_settings(
            backend,
            base_path,
            pg=pg,
            **{
                "kinto.attachment.events.destinations": destinations,
                "kinto.attachment.events.url_secret": URL_SECRET,
                "kinto.attachment.events.retry_seconds": "0",
                # The address fetch URLs are under (a store that presigns none): webtest's.
                "kinto.http_host": "localhost",
                **{f"kinto.attachment.events.{k}": str(v) for k, v in extra.items()},
                **dict(more),
            },
        )
        bucket = None
        if store == "s3":
            from ..conftest import s3_settings

            del settings["kinto.attachment.base_path"]
            settings.update(s3_settings(request.getfixturevalue("s3_server")))
            bucket, base_path = settings["kinto.attachment.aws.bucket_name"], None
        elif store == "gcs":  # With a service account's key, to sign URLs.
            from ..support.gcs_server import gcs_settings, service_account_file

            token_uri = request.getfixturevalue("token_server").url
            key_file, _ = service_account_file(tmp_path_factory.mktemp("gcs-key"), token_uri)
            del settings["kinto.attachment.base_path"]
            gcs = request.getfixturevalue("gcs_server")
            settings.update(gcs_settings(gcs, credentials=key_file))
            bucket, base_path = settings["kinto.attachment.gcloud.bucket_name"], None
        kinto = Kinto(make_app(settings), base_path, bucket)
        if not thread:
            kinto.registry.attachment_dispatcher.stop()
        flush(kinto.app)
        kinto.create_collection()
        made.append(kinto)
        return kinto

    yield build
    for kinto in made:
        kinto.registry.attachment_dispatcher.stop()
        flush(kinto.app)
