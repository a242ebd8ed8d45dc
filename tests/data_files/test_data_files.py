"""/data/files: SlimFaas's temporary-file API, on every storage and file backend."""

import hashlib
import io
import logging
import os
import re
import threading
import time

import pytest
import transaction
import webob
from pyramid.exceptions import ConfigurationError

from kinto_attachment import downloads, gc
from kinto_attachment.data_files import posted, views
from kinto_attachment.data_files.limiter import TransferLimiter
from kinto_attachment.gc import command
from kinto_attachment.state import data_file_entries

from ..conftest import ALICE, BOB, cached_app


LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
PDF = b"%PDF-1.7 pretend this is a report" * 100


def post(kinto, body=PDF, query="", status=200, environ=LOCAL, prefix="/v1", **headers):
    return kinto.app.post(
        f"{prefix}/data/files{query}",
        body,
        headers=headers,
        extra_environ=environ,
        status=status,
    )


def get(kinto, file_id, status=200, environ=LOCAL, prefix="/v1", **headers):
    return kinto.app.get(
        f"{prefix}/data/files/{file_id}", headers=headers, extra_environ=environ, status=status
    )


def listing(kinto, environ=LOCAL):
    return kinto.app.get("/v1/data/files", extra_environ=environ).json


def test_upload_download_list_delete(kinto):
    response = post(
        kinto,
        query="?id=my-file-001&ttl=600000",
        **{
            "Content-Type": "application/pdf",
            "Content-Disposition": 'attachment; filename="report.pdf"',
        },
    )
    assert response.content_type == "text/plain"
    assert response.text == "my-file-001"

    download = get(kinto, "my-file-001")
    assert download.body == PDF
    assert download.headers["Content-Type"] == "application/pdf"
    assert download.headers["Content-Length"] == str(len(PDF))
    assert download.headers["Content-Disposition"].startswith('attachment; filename="report.pdf"')
    assert download.headers["ETag"] == f'"{hashlib.sha256(PDF).hexdigest()}"'

    (entry,) = listing(kinto)
    assert entry["id"] == "my-file-001"
    assert entry["filename"] == "report.pdf"
    assert (entry["size"], entry["mimetype"]) == (len(PDF), "application/pdf")
    assert entry["hash"] == hashlib.sha256(PDF).hexdigest()
    assert entry["expiration"] > 0

    kinto.app.delete("/v1/data/files/my-file-001", extra_environ=LOCAL, status=204)
    get(kinto, "my-file-001", status=404)
    assert listing(kinto) == []
    assert kinto.files() == []


def test_defaults_and_generated_id(kinto_memory):
    file_id = post(kinto_memory, b"raw").text
    assert re.fullmatch(r"[A-Za-z0-9_-]{20,}", file_id)
    response = get(kinto_memory, file_id)
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith(f'attachment; filename="{file_id}"')
    assert listing(kinto_memory)[0]["expiration"] is None


def test_rfc5987_filename(kinto_memory):
    disposition = 'attachment; filename="r.pdf"; '
    disposition += "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%98%83.pdf"
    post(kinto_memory, query="?id=cv", **{"Content-Disposition": disposition})
    assert listing(kinto_memory)[0]["filename"] == "résumé ☃.pdf"
    header = get(kinto_memory, "cv").headers["Content-Disposition"]
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%98%83.pdf" in header


def test_replacing_an_id_is_atomic(kinto):
    post(kinto, b"first", query="?id=same")
    first_keys = kinto.files()
    post(kinto, b"second", query="?id=same")
    assert get(kinto, "same").body == b"second"
    assert len(listing(kinto)) == 1
    assert kinto.files() != first_keys and len(kinto.files()) == 1


@pytest.mark.parametrize(
    "query,name",
    [
        ("?id=" + "a" * 129, "id"),
        ("?id=..", "id"),
        ("?id=a%2Fb", "id"),
        ("?id=caf%C3%A9", "id"),
        ("?ttl=abc", "ttl"),
        ("?ttl=0", "ttl"),
        ("?ttl=-5", "ttl"),
        ("?ttl=1.5", "ttl"),
        ("?ttl=%D9%A3", "ttl"),
    ],
)
def test_invalid_id_or_ttl_is_400_and_stores_nothing(kinto_memory, query, name):
    response = post(kinto_memory, query=query, status=400)
    assert response.json["details"][0]["name"] == name
    assert kinto_memory.files() == []
    assert listing(kinto_memory) == []


def test_unknown_id_is_404(kinto_memory):
    response = get(kinto_memory, "nope", status=404)
    assert response.json["details"] == {"id": "nope", "resource_name": "data-file"}
    kinto_memory.app.delete("/v1/data/files/nope", extra_environ=LOCAL, status=204)


def test_expired_files_are_gone_then_collected(kinto, monkeypatch):
    post(kinto, b"short-lived", query="?id=tmp&ttl=1000")
    post(kinto, b"kept", query="?id=kept")
    assert get(kinto, "tmp").body == b"short-lived"
    later = data_file_entries.msec_time() + 2000
    monkeypatch.setattr(data_file_entries, "msec_time", lambda: later)
    monkeypatch.setattr(views, "msec_time", lambda: later)
    get(kinto, "tmp", status=404)
    assert [e["id"] for e in listing(kinto)] == ["kept"]
    assert len(kinto.files()) == 2  # Until the garbage collector runs.
    assert len(gc.collect(kinto.registry).expired_files) == 1
    assert len(kinto.files()) == 1
    assert gc.collect(kinto.registry).expired_files == []
    assert get(kinto, "kept").body == b"kept"


class SlowBody(io.BytesIO):
    """A body whose bytes come ``delay`` seconds after the request (a slow or distant client)."""

    def __init__(self, data, delay):
        super().__init__(data)
        self._delay = delay

    def read(self, size=-1):
        time.sleep(self._delay)
        self._delay = 0
        return super().read(size)


def raw_post(kinto, query, body, length):
    wsgi_request = webob.Request.blank(f"/v1/data/files{query}", method="POST", environ=LOCAL)
    wsgi_request.environ["wsgi.input"] = body
    wsgi_request.environ["CONTENT_LENGTH"] = str(length)
    return wsgi_request.get_response(kinto.app.app)


def test_the_ttl_counts_from_when_the_file_is_stored(kinto_memory):
    """Not from when its request began: a body slower to come than its ttl was acknowledged
    (200, its id) already expired, a 404 at once and deleted by the collector."""
    data = b"artifact" * 100
    response = raw_post(kinto_memory, "?id=slow&ttl=1000", SlowBody(data, 1.3), len(data))
    assert response.status_code == 200
    assert get(kinto_memory, "slow").body == data


def test_size_limit(tmp_path_factory, request):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.max_size_bytes": "10"}
    )
    response = post(kinto, b"x" * 11, status=413)
    assert response.json["errno"] == 113
    assert kinto.files() == []


def test_truncated_body_is_refused(kinto_memory):
    wsgi_request = webob.Request.blank("/v1/data/files?id=cut", method="POST", environ=LOCAL)
    wsgi_request.environ["wsgi.input"] = io.BytesIO(b"only this")
    wsgi_request.environ["CONTENT_LENGTH"] = "100"
    response = wsgi_request.get_response(kinto_memory.app.app)
    assert response.status_code == 400
    assert kinto_memory.files() == []


def unknown_length_request(body, terminated=True):
    """A chunked body, ended by the server (``wsgi.input_terminated``) as gunicorn and
    waitress do, or not."""
    wsgi_request = webob.Request.blank("/v1/data/files?id=chunked", method="POST", environ=LOCAL)
    wsgi_request.environ["wsgi.input"] = io.BytesIO(body)
    wsgi_request.environ.pop("CONTENT_LENGTH", None)
    wsgi_request.environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    wsgi_request.environ["wsgi.input_terminated"] = terminated
    return wsgi_request


def test_a_chunked_body_no_server_ends_is_never_an_empty_file(kinto_memory):
    response = unknown_length_request(b"lost", terminated=False).get_response(kinto_memory.app.app)
    assert (response.status_code, response.json["errno"]) == (411, 112)
    get(kinto_memory, "chunked", status=404)


def test_unknown_length_reserves_20_mib_and_warns(kinto_memory, caplog, monkeypatch):
    limiter = kinto_memory.registry.transfer_limiter
    reserved = []
    acquire = limiter.acquire
    monkeypatch.setattr(
        limiter, "acquire", lambda size, **kw: reserved.append(size) or acquire(size, **kw)
    )
    with caplog.at_level(logging.WARNING):
        response = unknown_length_request(b"streamed").get_response(kinto_memory.app.app)
    assert response.status_code == 200
    assert reserved == [posted.UNKNOWN_LENGTH_RESERVATION]
    assert "unknown length" in caplog.text
    assert get(kinto_memory, "chunked").body == b"streamed"


def test_unknown_length_can_be_refused(tmp_path_factory, request):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.attachment.data_files.require_content_length": "true"},
    )
    response = unknown_length_request(b"streamed").get_response(kinto.app.app)
    assert response.status_code == 411
    assert response.json["errno"] == 112


def test_corrupt_blob_is_never_served(kinto, caplog, monkeypatch):
    post(kinto, b"original content", query="?id=f")
    (key,) = kinto.files()
    store = kinto.registry.attachment_store
    hashed = []
    matches = downloads.matches
    monkeypatch.setattr(downloads, "matches", lambda *args: hashed.append(1) or matches(*args))
    assert get(kinto, "f").body == b"original content"
    assert hashed == []  # Verified as it was uploaded: not read twice.

    def rewrite(content):  # Under its random name again (no chosen name may take it).
        store.delete(key)
        staged = store.stage(key, random=True)
        staged.write(content)
        assert staged.commit() == key

    # Rewritten with the same bytes: checked again if its version changed (local mtime; S3's
    # ETag of identical content does not), and then remembered.
    rewrite(b"original content")
    assert get(kinto, "f").body == b"original content"
    checks = len(hashed)
    assert checks == (1 if kinto.bucket is None else 0)
    assert get(kinto, "f").body == b"original content"
    assert len(hashed) == checks

    for tampered in (b"tampered content", b"short"):
        rewrite(tampered)
        get(kinto, "f", status=404)
        assert "does not match its size and sha256" in caplog.text
    store.delete(key)
    get(kinto, "f", status=404)


def test_root_mount(kinto_memory):
    assert post(kinto_memory, b"at the root", query="?id=root", prefix="").text == "root"
    assert get(kinto_memory, "root", prefix="").body == b"at the root"
    assert kinto_memory.app.get("/data/files", extra_environ=LOCAL).json[0]["id"] == "root"
    kinto_memory.app.delete("/data/files/root", extra_environ=LOCAL, status=204)
    # Other root paths still redirect to the API prefix as usual.
    assert kinto_memory.app.get("/buckets", status=307).location.endswith("/v1/buckets")


def test_root_mount_without_version_redirection(tmp_path_factory, request):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.version_prefix_redirect_enabled": "false"},
    )
    assert post(kinto, b"at the root", query="?id=root", prefix="").text == "root"
    assert get(kinto, "root", prefix="").body == b"at the root"


def test_private_by_default(kinto_memory):
    stranger = {"REMOTE_ADDR": "203.0.113.7"}
    response = post(kinto_memory, environ=stranger, status=404)
    assert response.json["errno"] == 111
    assert response.json["message"] == "The resource you are looking for could not be found."
    post(kinto_memory, query="?id=x")
    get(kinto_memory, "x", environ=stranger, status=404)
    kinto_memory.app.get("/v1/data/files", extra_environ=stranger, status=404)
    kinto_memory.app.delete("/v1/data/files/x", extra_environ=stranger, status=404)
    # X-Forwarded-For is not trusted unless configured.
    forwarded = {"X-Forwarded-For": "127.0.0.1"}
    get(kinto_memory, "x", environ=stranger, status=404, **forwarded)
    assert get(kinto_memory, "x", environ={"REMOTE_ADDR": "::1"}).body == PDF


def test_hidden_at_the_root_answers_as_a_path_that_does_not_exist(kinto_memory):
    """Found by review (2026-12-05).

    At the server root, a path that does not exist gets Kinto's ``307`` to ``/v1``; a
    caller who may not see the route gets the same (it was a ``404``, which told the private
    route from a missing path), through the batch too; whoever may see it is answered."""
    app = kinto_memory.app
    stranger = {"REMOTE_ADDR": "203.0.113.7"}
    missing = app.get("/data/filez/x?a=1", extra_environ=stranger, status=307)
    assert missing.location == "http://localhost/v1/data/filez/x?a=1"
    post(kinto_memory, query="?id=x")
    for path in ("/data/files", "/data/files/", "/data/files/x", "/data/files/x?a=1"):
        for method in ("get", "head", "delete"):
            hidden = getattr(app, method)(path, extra_environ=stranger, status=307)
            assert hidden.location == "http://localhost/v1" + path
    hidden = app.post("/data/files?id=y", PDF, extra_environ=stranger, status=307)
    assert hidden.location == "http://localhost/v1/data/files?id=y"
    batch = {"requests": [{"method": "GET", "path": "/data/files/x"}]}
    answered = app.post_json("/v1/batch", batch, extra_environ=LOCAL, headers=ALICE)
    assert answered.json["responses"][0]["status"] == 404
    assert get(kinto_memory, "x", prefix="", environ=LOCAL).body == PDF


def test_trusted_proxies_and_principals(tmp_path_factory, request):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{
            "kinto.attachment.data_files.trusted_networks": "10.0.0.0/8",
            "kinto.attachment.data_files.trusted_proxies": "198.51.100.1",
            "kinto.attachment.data_files.principals": "system.Authenticated",
        },
    )
    proxy = {"REMOTE_ADDR": "198.51.100.1"}
    post(kinto, query="?id=x", environ=proxy, **{"X-Forwarded-For": "1.2.3.4, 10.1.2.3"})
    get(kinto, "x", environ=proxy, status=404, **{"X-Forwarded-For": "10.1.2.3, 1.2.3.4"})
    get(kinto, "x", environ={"REMOTE_ADDR": "127.0.0.1"}, status=404)  # No more loopback.
    assert get(kinto, "x", environ=proxy, **BOB).body == PDF
    get(kinto, "x", environ=proxy, status=404, Authorization="Bearer nope")


def test_forwarded_for_is_only_believed_from_trusted_proxies(tmp_path_factory, request):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{
            "kinto.attachment.data_files.trusted_networks": "192.168.0.0/16",
            "kinto.attachment.data_files.trusted_proxies": "127.0.0.1 10.0.0.0/24",
        },
    )
    inside = {"REMOTE_ADDR": "192.168.1.5"}
    post(kinto, query="?id=x", environ=inside)
    proxy = {"REMOTE_ADDR": "127.0.0.1"}
    allowed = [
        (proxy, "192.168.1.5"),
        # Left of the first untrusted hop, anything can be claimed: ignored.
        (proxy, "127.0.0.1, 192.168.1.5, 10.0.0.3"),
        ({"REMOTE_ADDR": "10.0.0.9"}, "192.168.1.5:4711"),
    ]
    refused = [
        (proxy, ""),  # The proxy itself is not a client of the trusted network.
        (proxy, "192.168.1.5, 203.0.113.7"),
        (proxy, "garbage"),
        (proxy, "192.168.1.5, garbage"),
        ({"REMOTE_ADDR": "203.0.113.7"}, "192.168.1.5"),  # Not from a proxy.
        ({"REMOTE_ADDR": "203.0.113.7"}, "127.0.0.1"),
    ]
    for environ, forwarded in allowed:
        assert get(kinto, "x", environ=environ, **{"X-Forwarded-For": forwarded}).body == PDF
    for environ, forwarded in refused:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        get(kinto, "x", environ=environ, status=404, **headers)
        post(kinto, query="?id=x", environ=environ, status=404, **headers)
        kinto.app.get("/v1/data/files", extra_environ=environ, headers=headers, status=404)
        kinto.app.delete("/v1/data/files/x", extra_environ=environ, headers=headers, status=404)
    assert get(kinto, "x", environ=inside).body == PDF


def test_trust_forwarded_for_alone_is_refused_at_start_up(tmp_path_factory, request):
    with pytest.raises(ConfigurationError, match="data_files.trusted_proxies"):
        cached_app(
            "memory",
            tmp_path_factory,
            request,
            **{"kinto.attachment.data_files.trust_forwarded_for": "true"},
        )
    # With trusted proxies it is accepted, and adds no trust of its own.
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{
            "kinto.attachment.data_files.trust_forwarded_for": "true",
            "kinto.attachment.data_files.trusted_proxies": "10.0.0.1",
        },
    )
    post(kinto, query="?id=x")
    stranger = {"REMOTE_ADDR": "203.0.113.7"}
    get(kinto, "x", environ=stranger, status=404, **{"X-Forwarded-For": "127.0.0.1"})


@pytest.mark.parametrize("visibility", ["private", "public"])
def test_never_through_batch(tmp_path_factory, request, visibility):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.attachment.data_files.visibility": visibility},
    )
    post(kinto, query="?id=x")
    forwarded = {"X-Forwarded-For": "127.0.0.1"}
    batch = {
        "requests": [
            {"method": "GET", "path": "/data/files", "headers": forwarded},
            {"method": "GET", "path": "/data/files/x", "headers": forwarded},
            {"method": "POST", "path": "/data/files?id=y", "body": {"a": 1}},
            {"method": "DELETE", "path": "/data/files/x", "headers": forwarded},
        ]
    }
    for environ in (LOCAL, {"REMOTE_ADDR": "203.0.113.7"}):
        response = kinto.app.post_json("/v1/batch", batch, extra_environ=environ, status=200)
        assert [r["status"] for r in response.json["responses"]] == [404] * 4
    assert [e["id"] for e in listing(kinto)] == ["x"]
    assert get(kinto, "x").body == PDF


def test_public_visibility(tmp_path_factory, request):
    kinto = cached_app(
        "memory", tmp_path_factory, request, **{"kinto.attachment.data_files.visibility": "public"}
    )
    anywhere = {"REMOTE_ADDR": "203.0.113.7"}
    post(kinto, query="?id=pub", environ=anywhere)
    assert get(kinto, "pub", environ=anywhere, **ALICE).body == PDF


def test_slimfaas_visibility_variable(tmp_path_factory, request, monkeypatch):
    monkeypatch.setenv("Data__DefaultVisibility", "Public")
    kinto = cached_app("memory", tmp_path_factory, request, **{"kinto.project_name": "slimfaas"})
    assert kinto.registry.attachment_settings.data_files.visibility == "public"
    post(kinto, query="?id=pub", environ={"REMOTE_ADDR": "203.0.113.7"})


def test_downloads_hold_the_transfer_budget_until_sent(kinto_memory):
    post(kinto_memory, query="?id=x")
    limiter = kinto_memory.registry.transfer_limiter
    environ = webob.Request.blank("/v1/data/files/x", environ=LOCAL).environ
    statuses = []
    body = kinto_memory.app.app(environ, lambda status, headers: statuses.append(status))
    assert statuses == ["200 OK"]
    assert limiter.in_use == len(PDF)
    assert b"".join(body) == PDF
    body.close()
    assert limiter.in_use == 0


# The limiter itself: threads and events, never sleeps.


def run_transfer(limiter, size, started, release):
    with limiter.reserve(size):
        started.set()
        release.wait(10)


def start(limiter, size):
    started, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=run_transfer, args=(limiter, size, started, release))
    thread.start()
    return thread, started, release


def test_limiter_makes_a_transfer_over_the_budget_wait():
    limiter = TransferLimiter(100)
    first, first_started, first_release = start(limiter, 60)
    assert first_started.wait(10)
    second, second_started, second_release = start(limiter, 50)
    assert limiter.wait_until_waiting(1)
    assert not second_started.is_set()
    assert limiter.in_use == 60
    first_release.set()
    assert second_started.wait(10)
    assert limiter.in_use == 50
    second_release.set()
    for thread in (first, second):
        thread.join(10)
    assert limiter.in_use == 0


def test_limiter_lets_transfers_within_the_budget_run_together():
    limiter = TransferLimiter(100)
    transfers = [start(limiter, 30) for _ in range(3)]
    assert all(started.wait(10) for _, started, _ in transfers)
    # All three hold their share at once, none waits.
    assert (limiter.in_use, limiter.waiting) == (90, 0)
    for thread, _, release in transfers:
        release.set()
        thread.join(10)
        assert not thread.is_alive()
    assert limiter.in_use == 0


def test_limiter_runs_a_transfer_larger_than_the_budget_alone():
    limiter = TransferLimiter(100)
    small, small_started, small_release = start(limiter, 10)
    assert small_started.wait(10)
    big, big_started, big_release = start(limiter, 500)
    assert limiter.wait_until_waiting(1)
    # Arrival order: a later small transfer does not overtake the waiting big one.
    later, later_started, later_release = start(limiter, 10)
    assert limiter.wait_until_waiting(2)
    small_release.set()
    assert big_started.wait(10)
    assert limiter.in_use == 500 and not later_started.is_set()
    big_release.set()
    assert later_started.wait(10)
    later_release.set()
    for thread in (small, big, later):
        thread.join(10)
    assert limiter.in_use == 0


def expire_everything(monkeypatch):
    later = data_file_entries.msec_time() + 10_000
    monkeypatch.setattr(data_file_entries, "msec_time", lambda: later)


def test_collector_thread_collects_until_stopped(kinto_memory, monkeypatch):
    post(kinto_memory, b"x", query="?id=tmp&ttl=1")
    expire_everything(monkeypatch)

    class TwoRounds:
        """Stands for the stop event: not set for two rounds, then set."""

        rounds = 0

        def wait(self, interval):
            self.rounds += 1
            return self.rounds > 2

    failures = []
    monkeypatch.setattr(gc.logger, "exception", lambda *args: failures.append(args))
    gc._periodically(kinto_memory.registry, 300, TwoRounds())
    assert kinto_memory.files() == [] and failures == []
    assert data_file_entries.entries(kinto_memory.registry.storage) == []

    def broken(registry, **options):
        raise RuntimeError("storage down")

    monkeypatch.setattr(gc, "collect", broken)
    gc._periodically(kinto_memory.registry, 300, TwoRounds())
    assert len(failures) == 2


def test_collector_thread_starts_with_the_app(tmp_path_factory, request):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.attachment.data_files.gc_interval_seconds": "300"},
    )
    stop = kinto.registry.attachment_gc_stop
    (thread,) = [t for t in threading.enumerate() if t.name == "attachment-gc"]
    assert thread.is_alive() and not stop.is_set()
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


def test_no_collector_thread_when_its_interval_is_0(kinto_memory):
    assert not hasattr(kinto_memory.registry, "attachment_gc_stop")


@pytest.mark.postgresql
def test_gc_command(tmp_path_factory, request, tmp_path, monkeypatch, capsys):
    kinto = cached_app("postgresql", tmp_path_factory, request)
    post(kinto, b"old", query="?id=old&ttl=1")
    post(kinto, b"new", query="?id=new")
    ini = kinto.write_ini(tmp_path / "gc.ini")
    expire_everything(monkeypatch)
    assert command.main(["--ini", str(ini)]) == 0
    assert "Expired data files (removed): 1" in capsys.readouterr().out
    monkeypatch.undo()
    assert [e["id"] for e in listing(kinto)] == ["new"]
    # The expired file's blob is kept for the downloads that may still read it (the grace).
    assert len(kinto.files()) == 2
    gc.collect(kinto.registry, now=data_file_entries.msec_time() + 700_000, orphans=False)
    assert len(kinto.files()) == 1


def test_an_expired_files_blob_is_kept_for_the_downloads_reading_it(tmp_path_factory, request):
    """The entry goes at once; its blob ``gc.replaced_grace_seconds`` later, as a deleted
    entry's: a download that began while the file was live may still be reading it (S3 and
    NFS do not promise to finish such a read)."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.attachment.gc.replaced_grace_seconds": "600"},
    )
    content = b"a report being downloaded" * 1000
    post(kinto, content, query="?id=e&ttl=60000")
    key = data_file_entries.get(kinto.registry.storage, "e")["key"]
    body = stalled_download(kinto, "e")
    expired = data_file_entries.msec_time() + 61_000
    report = gc.collect(kinto.registry, now=expired, orphans=False)
    assert [entry["id"] for entry in report.expired_files] == ["e"]
    assert data_file_entries.get(kinto.registry.storage, "e") is None
    assert kinto.files() == [key]
    assert b"".join(body) == content
    body.close()
    gc.collect(kinto.registry, now=expired + 599_000, orphans=False)
    assert kinto.files() == [key]
    gc.collect(kinto.registry, now=expired + 601_000, orphans=False)
    assert kinto.files() == []


def test_huge_ttl_is_400(kinto_memory):
    response = post(kinto_memory, query="?ttl=" + "9" * 5000, status=400)
    assert response.json["details"][0]["name"] == "ttl"
    post(kinto_memory, query="?ttl=" + "9" * 20, status=400)
    post(kinto_memory, query=f"?ttl={2**63}", status=400)
    post(kinto_memory, query="?id=long&ttl=" + "9" * 12)
    assert listing(kinto_memory)[0]["expiration"] > 10**12


@pytest.mark.parametrize(
    "disposition,name",
    [
        ("attachment; filename*=idna''abc", "f"),
        ("attachment; filename=\"plain.txt\"; filename*=idna''abc", "plain.txt"),
        ("attachment; filename*=nonexistent''abc", "abc"),
        ("attachment; filename*=UTF-8''a%00b%0A.txt", "ab.txt"),
    ],
)
def test_undecodable_filenames_fall_back(kinto, disposition, name):
    post(kinto, query="?id=f", **{"Content-Disposition": disposition})
    assert listing(kinto)[0]["filename"] == name
    assert get(kinto, "f").body == PDF


def test_attachments_cannot_collide_with_data_files(tmp_path_factory, request, blobs):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        blobs=blobs,
        **{"kinto.attachment.randomize": "false", "kinto.attachment.extensions": "any"},
    )
    kinto.create_collection()
    kinto.upload(kinto.record_url(), filename="data-files")
    kinto.upload(kinto.record_url("r2"), filename=".data-files")
    post(kinto, query="?id=x")
    assert get(kinto, "x").body == PDF
    assert data_file_entries.get(kinto.registry.storage, "x")["key"].startswith(".data-files/")


def test_entries_stored_under_the_old_folder_keep_working(kinto):
    post(kinto, b"legacy", query="?id=old")
    store = kinto.registry.attachment_store
    entry = data_file_entries.get(kinto.registry.storage, "old")
    staged = store.stage("data-files/legacy.bin")
    staged.write(b"legacy")
    staged.commit()
    store.delete(entry["key"])
    legacy = {**entry, "key": "data-files/legacy.bin"}
    data_file_entries.put(kinto.registry.storage, "old", legacy, entry)
    transaction.commit()
    assert get(kinto, "old").body == b"legacy"
    kinto.app.delete("/v1/data/files/old", extra_environ=LOCAL, status=204)
    assert kinto.files() == []


def budgeted(tmp_path_factory, request, budget, **extra):
    return cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{
            "kinto.attachment.data_files.transfer_budget_bytes": str(budget),
            "kinto.attachment.data_files.transfer_wait_seconds": "0",
            **extra,
        },
    )


def stalled_download(kinto, file_id):
    """A download whose client reads nothing: its body is never pulled."""
    environ = webob.Request.blank(f"/v1/data/files/{file_id}", environ=LOCAL).environ
    statuses = []
    body = kinto.app.app(environ, lambda status, headers: statuses.append(status))
    assert statuses == ["200 OK"]
    return body


def test_waiting_transfers_give_up_with_503(tmp_path_factory, request):
    kinto = budgeted(tmp_path_factory, request, len(PDF))
    post(kinto, query="?id=x")
    body = stalled_download(kinto, "x")
    response = get(kinto, "x", status=503)
    assert int(response.headers["Retry-After"]) > 0
    assert response.json["errno"] == 201
    post(kinto, b"small", query="?id=y", status=503)
    assert kinto.registry.transfer_limiter.waiting == 0
    # Whatever is not a transfer is never held up.
    kinto.app.get("/v1/", status=200)
    kinto.app.get("/v1/__heartbeat__", status=200)
    kinto.app.get("/v1/data/files", extra_environ=LOCAL, status=200)
    kinto.app.head("/v1/data/files/x", extra_environ=LOCAL, status=200)
    body.close()
    assert get(kinto, "x").body == PDF
    post(kinto, b"small", query="?id=y")


def test_a_stalled_download_loses_its_budget(tmp_path_factory, request, monkeypatch):
    kinto = budgeted(tmp_path_factory, request, len(PDF))
    limiter = kinto.registry.transfer_limiter
    now = [1000.0]
    monkeypatch.setattr(limiter, "clock", lambda: now[0])
    post(kinto, query="?id=x")
    body = stalled_download(kinto, "x")
    now[0] += limiter.idle_seconds - 1
    get(kinto, "x", status=503)  # Not idle for long enough yet.
    now[0] += 2
    assert get(kinto, "x").body == PDF
    assert limiter.in_use == 0
    # The stalled client may still come back for its content; released once only.
    assert b"".join(body) == PDF
    body.close()
    assert limiter.in_use == 0


class StalledBody:
    """A body whose client sends ``first``, then nothing until ``resume`` is set (then it
    goes away: the body ends short)."""

    def __init__(self, first):
        self._first = first
        self.stalled = threading.Event()
        self.resume = threading.Event()

    def read(self, size=-1):
        if self._first:
            chunk, self._first = self._first, b""
            return chunk
        self.stalled.set()
        self.resume.wait(30)
        return b""


def test_a_stalled_upload_loses_its_budget(tmp_path_factory, request, monkeypatch):
    """As a stalled download: under a server handing the body over as it comes (gunicorn,
    uWSGI), a client declaring the whole budget and sending a byte now and then made every
    other transfer a 503 for as long as it liked."""
    kinto = budgeted(tmp_path_factory, request, 1000)
    limiter = kinto.registry.transfer_limiter
    now = [1000.0]
    monkeypatch.setattr(limiter, "clock", lambda: now[0])
    post(kinto, b"small file", query="?id=x")
    body = StalledBody(b"a first byte")
    outcome = []
    uploading = threading.Thread(
        target=lambda: outcome.append(raw_post(kinto, "?id=slow", body, 1000))
    )
    uploading.start()
    try:
        assert body.stalled.wait(10)
        assert limiter.in_use == 1000
        get(kinto, "x", status=503)  # Not idle for long enough yet.
        now[0] += limiter.idle_seconds + 1
        assert get(kinto, "x").body == b"small file"
    finally:
        body.resume.set()
        uploading.join(30)
    assert outcome[0].status_code == 400  # The body ended short: nothing stored.
    get(kinto, "slow", status=404)
    assert limiter.in_use == 0


def test_a_transfer_larger_than_the_budget_runs_alone(tmp_path_factory, request):
    kinto = budgeted(tmp_path_factory, request, 10)
    post(kinto, query="?id=big")
    post(kinto, b"tiny", query="?id=tiny")
    body = stalled_download(kinto, "tiny")
    get(kinto, "big", status=503)
    body.close()
    assert get(kinto, "big").body == PDF


def _same_second_replacement(kinto, file_id, v1, v2):
    """Upload ``v1``, download it (what a client keeps: its ``Last-Modified``), then upload
    ``v2`` under the same id within the same second; return v1's download."""
    for _ in range(10):
        post(kinto, v1, query=f"?id={file_id}")
        first = get(kinto, file_id)
        assert first.body == v1
        post(kinto, v2, query=f"?id={file_id}")
        second = get(kinto, file_id)
        if second.headers["Last-Modified"] == first.headers["Last-Modified"]:
            return first
    pytest.fail("no replacement within one second")


def test_if_unmodified_since_resume_across_a_same_second_replacement_mixes_versions(kinto):
    """Found by review (2026-12-05).

    A client that downloaded the first 500 bytes of v1 resumes with ``Range`` and
    ``If-Unmodified-Since: <v1's Last-Modified>``, after the id was uploaded again (v2) within
    the same second. It gets a 206 of v2's bytes, which it appends to v1's: a file that is
    neither version (data damaged on the client's side).

    ``conditions.require_preconditions`` compares the date at one-second resolution and takes
    it as a strong validator, although the entry knows (``since``, what ``If-Range`` already
    uses: ``conditions.range_applies``) that its content changed after that second began.
    Its own docstring promises that a resuming client "must not get bytes of another version
    to append to those it has". Expected: 412 (the precondition cannot be proven)."""
    v1, v2 = os.urandom(1000), os.urandom(1000)
    first = _same_second_replacement(kinto, "resumed", v1, v2)
    response = get(
        kinto,
        "resumed",
        status="*",
        Range="bytes=500-",
        **{"If-Unmodified-Since": first.headers["Last-Modified"]},
    )
    assert not (response.status_code == 206 and response.body == v2[500:]), (
        "v2's bytes served to be appended to v1's"
    )
    assert response.status_code == 412


def test_if_modified_since_after_a_same_second_replacement_is_a_stale_304(kinto):
    """Found by review (2026-12-05).

    A client holding v1 revalidates with ``If-Modified-Since: <v1's Last-Modified>`` (curl
    ``-z``, ``wget -N``, HTTP caches keyed on dates) after the id was uploaded again with
    other content within the same second: it gets ``304 Not Modified`` and keeps v1, an
    outdated file, for as long as the id is not replaced again.

    ``conditions.not_modified`` trusts a one-second date although the entry records (``since``)
    that its content changed after that second began; ``If-Range`` already refuses such a
    date (``range_applies``). Expected: 200 with v2."""
    v1, v2 = b"version one " * 50, b"version two " * 50
    first = _same_second_replacement(kinto, "polled", v1, v2)
    response = get(
        kinto, "polled", status="*", **{"If-Modified-Since": first.headers["Last-Modified"]}
    )
    assert response.status_code == 200, "304: the client keeps the replaced content"
    assert response.body == v2


@pytest.mark.parametrize("redirect", ["true", "false"])
def test_hidden_root_route_answers_options_and_preflights_as_a_missing_path(
    tmp_path_factory, request, redirect
):
    """``OPTIONS`` and CORS preflights (an origin not allowed) of a
    caller who may not see ``/data/files``, at the root, with and without Kinto's
    redirection, and through a trusted proxy vouching for a stranger: the same status and
    headers as a path that does not exist."""

    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{
            "kinto.version_prefix_redirect_enabled": redirect,
            "kinto.cors_origins": "*",
            "kinto.attachment.data_files.allowed_origins": "https://ok.example",
            "kinto.attachment.data_files.trusted_proxies": "10.0.0.1",
        },
    )
    app = kinto.app
    cases = [
        ("options", {}, {"REMOTE_ADDR": "203.0.113.7"}),
        (
            "options",
            {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
            {"REMOTE_ADDR": "203.0.113.7"},
        ),
        ("get", {"X-Forwarded-For": "203.0.113.7"}, {"REMOTE_ADDR": "10.0.0.1"}),
        ("post", {"Origin": "https://evil.example"}, {"REMOTE_ADDR": "203.0.113.7"}),
    ]
    for method, headers, environ in cases:
        answers = []
        for path in ("/data/files/x", "/data/filez/x"):
            answer = getattr(app, method)(path, headers=headers, extra_environ=environ, status="*")
            kept = {
                k: v for k, v in answer.headers.items() if k not in ("Location", "Content-Length")
            }
            answers.append((answer.status_int, kept))
        assert answers[0] == answers[1], (method, headers, answers)
