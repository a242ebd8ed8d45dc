"""The operators' and consumers' side of events (found by review, 2026-12-05): the
``kinto-attachment-events`` command under concurrency and outages, the events' content from
the default bucket, and the example worker (examples/worker/worker.py) once URLs expire."""

import base64
import contextlib
import importlib.util
import json
import threading
import time
import uuid

import pytest
import requests
import transaction

from kinto_attachment.events import command
from kinto_attachment.state import outbox

from ..conftest import ALICE
from ..support.live import ROOT, free_port
from ..support.tcpproxy import TcpProxy
from .conftest import destination_settings


RECORD = "/v1/buckets/blog/collections/articles/records/r1"
WORKER_AUTH = ("worker", "a-worker-password")


def _rows(kinto, state=None):
    with transaction.manager:
        return list(outbox.rows(kinto.registry.storage, state))


def _basic(user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@contextlib.contextmanager
def _served(kinto, port):
    """The app on a real loopback HTTP server (waitress, in a thread) on ``port``, its
    ``http_host``: the worker speaks HTTP, and the events name that address."""
    from waitress.server import create_server

    server = create_server(kinto.app.app, host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}/v1"
    finally:
        server.close()
        thread.join(5)


def _worker_module():
    spec = importlib.util.spec_from_file_location(
        "review_example_worker", ROOT / "examples" / "worker" / "worker.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _grant_worker(kinto):
    worker_id = kinto.app.get("/v1/", headers=_basic(*WORKER_AUTH)).json["user"]["id"]
    kinto.app.patch_json(
        "/v1/buckets/blog/collections/articles",
        {"permissions": {"write": [worker_id]}},
        headers=ALICE,
    )


# The example worker.


def test_the_example_worker_never_gives_up_an_event_whose_url_expired(events_app, redis_stream):
    """Found by review (2026-12-05).

    The worker reads a ``stored`` event after its ``url`` expired (the workers were down
    longer than ``events.url_expires_seconds``, a day by default: a weekend, a failed
    deployment). The record still has that very version, yet the worker raises ``Retry`` on
    the fetch's ``403`` and leaves the entry pending: ``XAUTOCLAIM`` hands it back every
    minute, forever, and the record never gets its result. The URL in the stream entry will
    never become valid again: every event of the outage is a poison message, and the work is
    lost without anyone being told (worker.py, ``process``: any non-200 is a ``Retry``).

    Expected: an event whose URL has expired is settled: the version fetched another way
    (``GET {record}/attachment`` with the worker's account, checked against the hash) and
    processed, or at least ``processing`` written with ``status: failed`` naming the event,
    and the entry acknowledged."""
    client, stream = redis_stream
    port = free_port()
    kinto = events_app(
        "memory",
        destinations="redis",
        url_expires_seconds=1,
        **destination_settings("redis", stream=stream),
        more={"kinto.http_host": f"127.0.0.1:{port}"},
    )
    _grant_worker(kinto)
    group = f"review-{uuid.uuid4().hex}"
    with _served(kinto, port) as url:
        uploaded = requests.post(
            url + RECORD.removeprefix("/v1") + "/attachment",
            files={"attachment": ("notes.txt", b"one\ntwo\n", "text/plain")},
            auth=("alice", "secret"),
            timeout=30,
        )
        assert uploaded.status_code in (200, 201), uploaded.text
        assert kinto.registry.attachment_dispatcher.run_once() == 1
        [(_, fields)] = client.xrange(stream)
        time.sleep(2.2)  # The workers were down longer than the URL lives.

        worker = _worker_module().Worker(
            kinto_url=url,
            auth=":".join(WORKER_AUTH),
            redis_url="redis://127.0.0.1:6379/0",
            stream=stream,
            group=group,
            consumer="review-consumer",
        )
        worker.run(exit_when_idle=1.5)
        record = kinto.app.get(RECORD, headers=ALICE).json["data"]

    event_id = json.loads(fields[b"event"])["id"]
    pending = client.xpending(stream, group)["pending"]
    assert (record.get("processing") or {}).get("event") == event_id and pending == 0, (
        f"the event is left pending ({pending} entries) and the record has no result: "
        f"{record.get('processing')!r}"
    )


# The command.


@pytest.mark.postgresql
def test_the_command_losing_its_database_midway_fails_with_a_message(
    events_app, receiver, tmp_path, capsys, monkeypatch
):
    """Found by review (2026-12-05).

    ``kinto-attachment-events retry`` (or ``list``, ``purge``) whose database goes away
    after the start-up probe (a failover, a restart, the network): the ``BackendError`` of
    Kinto's client escapes ``main`` as a traceback (with the ninety lines of SQLAlchemy's
    and psycopg's that Kinto's client logs), and the exit code is Python's 1, which the
    command does not document (``0`` done, ``2`` refused). ``kinto-attachment-gc`` says it in
    one line and exits 1 ("failed ... run again"): the events command has no such handling
    (events/command.py, ``main``).

    Expected: no traceback; a one-line message saying the command failed and nothing was
    changed (the transaction is rolled back), a non-zero exit code that is not ``2``."""
    kinto = events_app("postgresql", max_attempts=1, **destination_settings("webhook", receiver))
    receiver.statuses = [(500, {})]
    kinto.upload(RECORD, b"first")
    kinto.registry.attachment_dispatcher.run_once()
    assert len(_rows(kinto, outbox.DEAD)) == 1

    pg = kinto.registry.settings["storage_url"]
    host_port = pg.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    try:
        ini = kinto.write_ini(tmp_path / "events.ini")
        ini.write_text(ini.read_text().replace(host_port, f"127.0.0.1:{proxy.port}"))
        run = command.run

        def lost_midway(*args, **kwargs):  # After the probe: the database goes away.
            proxy.down()
            return run(*args, **kwargs)

        monkeypatch.setattr(command, "run", lost_midway)
        try:
            code = command.main(["--ini", str(ini), "retry"])
        except SystemExit as exit_:
            code = exit_.code
        except Exception as error:  # noqa: BLE001
            pytest.fail(f"traceback instead of a message: {type(error).__name__}: {error}")
    finally:
        proxy.close()
    err = capsys.readouterr().err
    assert code not in (0, 2, None) and "fail" in err.lower(), (code, err)
    assert len(_rows(kinto, outbox.DEAD)) == 1  # Nothing changed.


@pytest.mark.postgresql
def test_two_retries_at_once_deliver_an_event_twice(events_app, receiver, monkeypatch):
    """Found by review (2026-12-05).

    ``retry`` reads the dead rows, then rewrites each one as pending with ``outbox.change``
    (a read of the row as it is now, and an unconditional ``storage.update``), without
    checking that it is still dead. Two retries at once (an operator's and a cron job's, two
    operators after an alert), or a retry overlapping ``retry`` then a dispatcher's delivery:
    the second command finds the row *delivered* by the time it writes, and makes it pending
    again, from its first attempt: the event is delivered a second time, for no reason, and
    its blob's hold restarts. ``purge`` has the same blind spot (it deletes a row that another
    operator revived meanwhile: an event said to be retried is never delivered)
    (events/command.py, ``run``; state/outbox.py, ``change``).

    Expected: retry only revives a row that is still dead when it is written (a conditional
    update, as the dispatcher's own marks are, or a lock of the rows selected); the event is
    delivered once."""
    kinto = events_app("postgresql", max_attempts=1, **destination_settings("webhook", receiver))
    registry = kinto.registry
    receiver.statuses = [(500, {})]
    kinto.upload(RECORD, b"first")
    registry.attachment_dispatcher.run_once()
    [dead] = _rows(kinto, outbox.DEAD)
    receiver.events(accepted_only=False)  # The failed attempt, forgotten.

    selected = command._selected
    inner = threading.local()

    def racing(storage, ids):
        found = selected(storage, ids)
        if getattr(inner, "busy", False):
            return found
        failures = []

        def other_operator():  # Its own transaction (thread-local), then a dispatcher.
            inner.busy = True
            try:
                assert command.run(registry, "retry") == ["1 dead events retried"]
                assert registry.attachment_dispatcher.run_once() == 1
            except BaseException as e:  # noqa: BLE001
                failures.append(e)

        thread = threading.Thread(target=other_operator)
        thread.start()
        thread.join(30)
        assert not failures, failures
        return found

    monkeypatch.setattr(command, "_selected", racing)
    command.run(registry, "retry")
    monkeypatch.setattr(command, "_selected", selected)
    for _ in range(3):
        registry.attachment_dispatcher.run_once()
    ids = [event["id"] for event in receiver.events()]
    assert ids == [dead["event"]["id"]], f"delivered {len(ids)} times"


# The events' content.


def test_an_upload_to_the_default_bucket_keeps_the_scheme_of_its_request(events_app, receiver):
    """Found by review (2026-12-05).

    An upload to ``/buckets/default/...`` on a server that serves HTTPS (``wsgi.url_scheme``
    ``https``: waitress behind a proxy with ``trusted_proxy_headers = x-forwarded-proto``, or
    any TLS-terminating WSGI server) records an event whose ``source`` is ``http://...`` and,
    on local disk, whose fetch ``url`` is ``http://...``: the plugin's default-bucket view
    re-sends the upload as a ``Request.blank`` subrequest, which copies the body and the
    headers but not ``wsgi.url_scheme`` (views/default_bucket.py), and the event's source is
    the subrequest's ``route_url("hello")`` (events/recording.py, ``source``). The same upload
    to the bucket's own id says ``https://``. The workers are sent to plain HTTP, the URL's
    signature in clear text (or to a port nothing listens on).

    Expected: the event of an upload through the default bucket has the source (and URL)
    of its request, as the same upload under the bucket's id does."""
    kinto = events_app(
        "memory",
        **destination_settings("webhook", receiver),
        more={
            "kinto.includes": "kinto.plugins.default_bucket kinto.plugins.flush kinto_attachment",
            "kinto.http_host": "kinto.example.com",
        },
    )
    https = {"wsgi.url_scheme": "https"}
    upload = [("attachment", "a.txt", b"hello")]
    kinto.app.post(RECORD + "/attachment", upload_files=upload, headers=ALICE, extra_environ=https)
    kinto.app.post(
        "/v1/buckets/default/collections/tasks/records/r1/attachment",
        upload_files=upload,
        headers=ALICE,
        extra_environ=https,
    )
    sources = {row["event"]["subject"]: row["event"]["source"] for row in _rows(kinto)}
    assert sources.pop("/buckets/blog/collections/articles/records/r1") == (
        "https://kinto.example.com/v1/"
    )
    [(subject, source)] = sources.items()
    assert source == "https://kinto.example.com/v1/", (subject, source)
    kinto.registry.attachment_dispatcher.run_once()
    urls = [e["data"]["url"] for e in receiver.events()]
    assert len(urls) == 2 and all(u.startswith("https://kinto.example.com/v1/") for u in urls)


def test_the_event_source_is_never_the_uploaders_host_header(events_app, receiver):
    """Found by review (2026-12-05).

    docs/events.rst: ``source`` is the server's ``/v1/`` URL
    (``https://kinto.example.com/v1/``), and the fetch URLs are never built from "the Host
    header of an upload's request, which its client chooses". Workers that write their
    result back ("writes its result back onto the record with Kinto's HTTP API and an
    account of its own") naturally do it at ``source`` + ``subject``.

    It was: on S3 and GCS, where ``kinto.http_host`` is not required
    (events/options.py ``check_host``), ``source`` is ``request.route_url("hello")``
    (events/recording.py ``source``), i.e. the ``Host`` the uploader sent: any uploader
    makes the events of its files name ``http://attacker.example/v1/`` as their server, and
    a worker following ``source`` sends its Kinto credentials there.

    Fixed: ``/v1/`` alone without ``http_host``, never the request's Host."""
    kinto = events_app(
        "memory",
        store="s3",
        more={"kinto.http_host": ""},  # Not required on S3 and GCS (options.check_host).
        **destination_settings("webhook", receiver),
    )
    kinto.app.post(
        RECORD + "/attachment",
        upload_files=[("attachment", "a.txt", b"hello")],
        headers={**ALICE, "Host": "attacker.example"},
        status=201,
    )
    kinto.registry.attachment_dispatcher.run_once()
    [event] = receiver.events()
    assert event["source"] == "/v1/", event["source"]


def test_a_batch_sub_request_cannot_choose_the_events_source_or_fetch_url(events_app, receiver):
    """Held against a review (2026-12-05).

    events.rst: ``source`` (and a local store's fetch ``url`` under it) is the
    server's ``/v1/`` RECORD at ``kinto.http_host``, "never made of a request's ``Host``
    header". A ``POST /batch`` sub-request carries headers of its own (Kinto's
    ``build_request`` merges them), a ``Host`` included: Kinto's ``http_host`` replaces it on
    the sub-request's ``NewRequest`` too."""
    kinto = events_app(
        "memory",
        more={"kinto.http_host": "kinto.example.com"},
        **destination_settings("webhook", receiver),
    )
    kinto.app.post(
        RECORD + "/attachment",
        upload_files=[("attachment", "a.txt", b"hello")],
        headers={**ALICE, "Host": "attacker.example"},
        status=201,
    )
    body = {
        "requests": [
            {"method": "DELETE", "path": RECORD[len("/v1") :], "headers": {"Host": "evil.example"}}
        ]
    }
    kinto.app.post_json("/v1/batch", body, headers={**ALICE, "Host": "attacker.example"})
    assert kinto.app.get(RECORD, headers=ALICE, status="*").status_int == 404
    for _ in range(3):
        kinto.registry.attachment_dispatcher.run_once()
    found = receiver.events()
    assert len(found) == 2, [(e["type"], e["source"]) for e in found]
    stored, deleted = found
    assert deleted["type"].endswith("deleted"), deleted["type"]
    for event in (stored, deleted):
        assert event["source"] == "http://kinto.example.com/v1/", event["source"]
    assert stored["data"]["url"].startswith("http://kinto.example.com/v1/"), stored["data"]["url"]
