"""What a network client controls that reaches metrics, the request log, the client's address
(and the transfer limiter and quotas keyed on it), and CORS: attacks of a review (2026-12-06),
each test one of them, its docstring saying which. ``test_held_*``: held against the review;
the others were findings, fixed."""

import base64
import logging
import time
import urllib.parse
import uuid

import pytest
import webob
from kinto.plugins import prometheus
from prometheus_client.parser import text_string_to_metric_families

from kinto_attachment.request_log import SummaryFormatter

from .conftest import ALICE, Kinto, basic_auth, build_settings, cached_app, make_app
from .views.test_anonymous_uploads import open_to_everyone


LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
TUS = {"Tus-Resumable": "1.0.0"}
INCLUDES = (
    "kinto.plugins.default_bucket kinto.plugins.flush kinto.plugins.prometheus kinto_attachment"
)


def _b64(text):
    return base64.b64encode(text.encode()).decode()


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metered(tmp_path_factory):
    prometheus.reset_registry()
    base_path = str(tmp_path_factory.mktemp("review-metrics"))
    settings = build_settings(
        "memory",
        base_path,
        **{
            "kinto.includes": INCLUDES,
            "kinto.attachment.serve_files": "true",
            "kinto.attachment.resumable.allow_anonymous": "true",
            "kinto.attachment.data_files.visibility": "public",
            "kinto.attachment.events.url_secret": "a-review-secret-of-enough-length",
        },
    )
    kinto = Kinto(make_app(settings), base_path)
    kinto.create_collection()
    # Everyone may read and create records: anonymous clients reach the views themselves.
    kinto.app.patch_json(
        "/v1/buckets/blog/collections/articles",
        {"permissions": {"record:create": ["system.Everyone"], "read": ["system.Everyone"]}},
        headers=ALICE,
    )
    yield kinto
    prometheus.reset_registry()


def _families(app):
    text = app.get("/v1/__metrics__").text
    return list(text_string_to_metric_families(text))


def _series(app):
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in _families(app)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def _hostile_round(kinto, raw):
    """Anonymous and invented-user requests to every route of ours, with ``raw`` in every id,
    name, type, header and query a client chooses (percent-encoded in URLs); the ``default``
    bucket included."""
    app = kinto.app
    tag = urllib.parse.quote(raw, safe="")
    anyone = basic_auth(f"user-{tag}")  # basicauth: any credentials are a user.
    evil = {"Origin": f"https://{raw}.example", "User-Agent": f"ua-{raw}\n{raw}"}
    preflight = {**evil, "Access-Control-Request-Method": "PATCH", **TUS}
    for bucket in ("default", f"b-{tag}", "blog"):
        for collection in (f"c-{tag}", "articles"):
            record = f"/v1/buckets/{bucket}/collections/{collection}/records/r-{tag}"
            for path in ("/attachment", "/attachment/uploads", f"/attachment/uploads/u-{tag}"):
                app.options(record + path, headers=preflight, status="*")
                app.options(record + path, headers=evil, status="*")
                app.head(record + path, headers={**TUS, **evil}, status="*")
                app.get(record + path + f"?{tag}={tag}", headers=evil, status="*")
                app.request(
                    record + path, method="PATCH", headers={**TUS, **evil}, expect_errors=True
                )
    # Anonymous tus creations with odd metadata, and a multipart upload with odd names/types.
    uploads = f"/v1/buckets/blog/collections/articles/records/a-{tag}/attachment/uploads"
    meta = f"filename {_b64(raw + '.' + raw)},filetype {_b64('x/' + raw)}"
    app.post(
        uploads,
        headers={**TUS, "Upload-Length": "3", "Upload-Metadata": meta},
        extra_environ={"REMOTE_ADDR": f"192.0.2.{len(tag) % 200}"},
        status="*",
    )
    app.post(
        f"/v1/buckets/blog/collections/articles/records/m-{tag}/attachment",
        upload_files=[("attachment", f"{raw}.{raw}", raw.encode(), f"x-{raw}/{raw}")],
        status="*",
    )
    # /data/files (public here): ids, names, types, ttl, unknown ids, odd Hosts.
    for prefix in ("/v1", ""):
        app.post(
            f"{prefix}/data/files?id=f-{tag}&ttl=999999",
            raw.encode(),
            headers={
                "Content-Type": f"x-{raw}/{raw}",
                "Content-Disposition": f'attachment; filename="{raw}.{raw}"',
                "Host": f"{raw}.example",
            },
            status="*",
        )
        app.get(f"{prefix}/data/files/f-{tag}", headers=evil, status="*")
        app.get(f"{prefix}/data/files/nope-{tag}", headers=evil, status="*")
        app.request(f"{prefix}/data/files/f-{tag}", method="DELETE", expect_errors=True)
    app.get(f"/v1/attachments/{tag}/{tag}.txt", headers=evil, status="*")
    app.get(f"/v1/attachment-fetch/{tag}?expires=1&signature={tag}", status="*")
    app.get("/v1/buckets/default/collections/c/records", headers=anyone, status="*")


def _tagged(series, tag):
    return sorted(s for s in series if tag in repr(s))


def test_held_client_values_on_our_routes_make_no_series(metered):
    """Attack: anonymous clients and invented basicauth users send requests to every route of
    the plugin (preflights, HEAD, GET, PATCH, tus creations, multipart uploads, /data/files,
    served and fetch URLs), in the ``default`` bucket too, each with fresh ids, names, types,
    Origins, User-Agents and query strings: no series (Kinto's on our routes, or ours) may
    carry any of those values, otherwise each round grows the registry for the process's
    life. (Kinto's ``users`` metric and its record endpoint's ``record_id`` are documented,
    and not on our routes: the requests of the invented users stay on our routes.)"""
    _hostile_round(metered, "warmup")
    before = _series(metered.app)
    tag = "q" + uuid.uuid4().hex[:10]
    _hostile_round(metered, tag)
    after = _series(metered.app)
    leaked = [
        s
        for s in _tagged(after - before, tag)
        # Kinto's own users metric (documented in docs/metrics.rst, off in config/metrics.ini)
        # and the default bucket's own id, a hash of the user (Kinto's, documented).
        if not s[0].startswith("kinto_users") and "user-" + tag not in repr(s)
    ]
    assert leaked == [], leaked[:10]


def test_held_exposition_stays_parseable_and_our_labels_are_fixed_sets(metered):
    """Attack: values with quotes, backslashes, newlines and non-ASCII characters sent where
    a client chooses (names, types, headers, query) must not break the Prometheus text
    format, and every label of the plugin's own series must come from its fixed sets."""
    _hostile_round(metered, 'x"\\\u00e9')
    families = _families(metered.app)  # Raises if the text is not valid exposition format.
    allowed = {
        "route": {"attachment", "tus", "data_files", "files", "fetch"},
        "outcome": {"acquired", "busy"},
        "kind": {"expired_files", "expired_uploads", "replaced", "orphans", "aborted_uploads"},
    }
    for family in families:
        if not family.name.startswith("kinto_attachment_"):
            continue
        for sample in family.samples:
            for name, value in sample.labels.items():
                if name == "status":
                    assert value.isdigit() and len(value) == 3, (sample.name, value)
                elif name in allowed:
                    assert value in allowed[name], (sample.name, name, value)
                elif name != "le":
                    pytest.fail(f"unexpected label {name}={value!r} on {sample.name}")


def test_held_5xx_of_an_upload_is_labelled_5xx(metered, monkeypatch):
    """Attack on the metrics' truth: an upload whose store fails (an exception deep in the
    view, turned into Kinto's 5xx by its exception views) must be counted with its 5xx status
    by the transfers tween, never as a success nor not at all."""
    before = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in _families(metered.app)
        for s in f.samples
    }
    store = metered.registry.attachment_store

    def broken(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(store, "stage", broken)
    response = metered.app.post(
        "/v1/buckets/blog/collections/articles/records/broken/attachment",
        upload_files=[("attachment", "a.txt", b"hello")],
        headers=ALICE,
        status="*",
    )
    monkeypatch.undo()
    assert response.status_int >= 500, response.status
    after = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in _families(metered.app)
        for s in f.samples
    }
    key = (
        "kinto_attachment_upload_seconds_count",
        (("route", "attachment"), ("status", str(response.status_int))),
    )
    assert after.get(key, 0) - before.get(key, 0) == 1, sorted(k for k in after if k[0] == key[0])
    ok = ("kinto_attachment_upload_seconds_count", (("route", "attachment"), ("status", "201")))
    assert after.get(ok, 0) == before.get(ok, 0)


# --------------------------------------------------------------------------------------------
# The request log
# --------------------------------------------------------------------------------------------


@pytest.fixture
def log_lines():
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(SummaryFormatter("%(levelname)s [%(name)s] %(message)s"))
    loggers = [logging.getLogger(n) for n in ("request.summary", "kinto_attachment", "kinto")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
            logger.removeHandler(handler)


FORGED = "\nINFO [request.summary] DELETE /v1/buckets/prod 200 3ms user=basicauth:admin"


def test_held_client_names_and_headers_forge_no_line(tmp_path_factory, request, log_lines):
    """Attack: a ``/data/files`` upload whose ``Content-Disposition`` filename, ``Content-Type``
    and id-less query carry a newline and a forged line, a tus creation whose metadata
    (filename, filetype) does, a ``Range`` and an ``Origin`` that do: every line the plugin
    and Kinto log at INFO and above for them is printable, one per request, and no forged
    line appears."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.attachment.resumable.allow_anonymous": "true"},
    )
    kinto.create_collection()
    log_lines.clear()
    forged_name = "a" + FORGED + "\x1b[2K.txt"
    kinto.app.post(
        "/v1/data/files?x=" + FORGED.replace("\n", "%0A").replace(" ", "%20"),
        b"data",
        headers={
            "Content-Disposition": "attachment; filename*=UTF-8''"
            + "".join(f"%{b:02X}" for b in forged_name.encode()),
            "Content-Type": "text/plain; x=y",
        },
        extra_environ=LOCAL,
        status="*",
    )
    kinto.app.post(
        "/v1/data/files",  # No Content-Length: a warning is logged (chunked-like).
        b"",
        headers={"Range": "bytes=\x1b[2K", "X-Request-ID": "a\x1b[2K"},
        extra_environ={**LOCAL, "CONTENT_LENGTH": ""},
        status="*",
    )
    uploads = kinto.record_url("r1") + "/attachment/uploads"
    meta = f"filename {_b64(forged_name)},filetype {_b64('text/plain' + FORGED)}"
    kinto.app.post(
        uploads, headers={**ALICE, **TUS, "Upload-Length": "3", "Upload-Metadata": meta}
    )
    assert log_lines, "nothing logged"
    for line in log_lines:
        assert line.isprintable(), line
        assert "DELETE /v1/buckets/prod" not in line.split("\n")[1:], line
    summaries = [line for line in log_lines if "[request.summary]" in line]
    assert len(summaries) == 3, summaries
    assert not any(line.startswith("INFO [request.summary] DELETE") for line in log_lines)


def test_held_a_line_is_bounded_by_the_request(tmp_path_factory, request, log_lines):
    """Attack: a query string of many parameters (repeated names, values needing encoding)
    must not make a summary line much larger than the request that was sent (a few times its
    URL at most): no amplification of the log's size by the re-encoding."""
    kinto = cached_app("memory", tmp_path_factory, request)
    query = "&".join(f"k{i % 50}=%E2%80%AE{i}" for i in range(1000))
    url = "/v1/__heartbeat__?" + query
    kinto.app.get(url, status="*")
    (line,) = [line for line in log_lines if "[request.summary]" in line]
    assert len(line) <= 3 * len(url) + 200, (len(line), len(url))


# --------------------------------------------------------------------------------------------
# Client addresses behind trusted proxies
# --------------------------------------------------------------------------------------------


@pytest.fixture
def proxied(tmp_path_factory, request):
    """Private ``/data/files`` (loopback trusted), proxies 10.0.0.0/24, anonymous tus
    uploads allowed, one unfinished upload per client; everyone may create records."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{
            "kinto.attachment.data_files.trusted_proxies": "10.0.0.0/24",
            "kinto.attachment.resumable.allow_anonymous": "true",
            "kinto.attachment.resumable.max_uploads_per_user": "1",
        },
    )
    return open_to_everyone(kinto)


@pytest.mark.parametrize(
    "remote,headers",
    [
        # The client says it is loopback; the trusted proxy appends what it saw.
        ("10.0.0.1", {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"}),
        # The same, through two trusted proxies, the second one IPv4-mapped.
        ("::ffff:10.0.0.2", {"X-Forwarded-For": "127.0.0.1, 203.0.113.9, 10.0.0.1"}),
        # An untrusted peer forging the header (and the RFC 7239 one, and X-Real-IP).
        (
            "203.0.113.9",
            {"X-Forwarded-For": "127.0.0.1", "Forwarded": "for=127.0.0.1", "X-Real-IP": "::1"},
        ),
        # The client's own entry forged as the proxy's port form, brackets, IPv4-mapped.
        ("10.0.0.1", {"X-Forwarded-For": "[::1]:80, ::ffff:127.0.0.1, 203.0.113.9:4711"}),
        # A peer that is a trusted proxy's neighbour, but not one.
        ("10.0.1.1", {"X-Forwarded-For": "127.0.0.1"}),
        # Garbage the proxy passes on after the client's real address.
        ("10.0.0.1", {"X-Forwarded-For": "127.0.0.1,,garbage, 203.0.113.9"}),
        # Thousands of forged loopback entries before the proxy's.
        ("10.0.0.1", {"X-Forwarded-For": "127.0.0.1, " * 20000 + "203.0.113.9"}),
    ],
)
def test_held_forwarded_for_cannot_make_a_client_trusted(proxied, remote, headers):
    """Attack: a remote client makes itself look like a trusted (loopback) caller of the
    private ``/data/files`` by what it writes in ``X-Forwarded-For`` (or ``Forwarded``,
    ``X-Real-IP``), directly or through trusted proxies: always the 404 of a hidden route."""
    started = time.monotonic()
    response = proxied.app.get(
        "/v1/data/files", headers=headers, extra_environ={"REMOTE_ADDR": remote}, status="*"
    )
    assert response.status_int == 404, response.status
    assert time.monotonic() - started < 5


def test_held_the_proxys_word_is_taken(proxied):
    """Control of the test above: what a trusted proxy says of a loopback client is believed
    (so that the 404s above are about the forged entries, not a broken setup)."""
    proxied.app.get(
        "/v1/data/files",
        headers={"X-Forwarded-For": "203.0.113.9, 127.0.0.1"},
        extra_environ={"REMOTE_ADDR": "10.0.0.1"},
        status=200,
    )


def _anonymous_create(kinto, record, remote, **headers):
    return kinto.app.post(
        kinto.record_url(record) + "/attachment/uploads",
        headers={
            **TUS,
            "Upload-Length": "10",
            "Upload-Metadata": f"filename {_b64('a.txt')}",
            **headers,
        },
        extra_environ={"REMOTE_ADDR": remote},
        status="*",
    )


def test_held_forged_forwarded_entries_give_no_more_anonymous_slots(proxied):
    """Attack: an anonymous tus client (quota: one unfinished upload per client address)
    dodges its quota by writing a new address in front of ``X-Forwarded-For`` each time,
    behind the trusted proxy (which appends the real one), and directly; or by IPv4-mapped
    and port forms of its own address. All count as the same client: 429."""
    first = _anonymous_create(proxied, "r0", "10.0.0.1", **{"X-Forwarded-For": "203.0.113.9"})
    assert first.status_int == 201
    for i in range(1, 5):
        forged = {"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.9"}
        response = _anonymous_create(proxied, f"r{i}", "10.0.0.1", **forged)
        assert response.status_int == 429, (forged, response.status)
    for forged in ("::ffff:203.0.113.9", "203.0.113.9:1234", "[::ffff:203.0.113.9]:1"):
        response = _anonymous_create(proxied, "rx", "10.0.0.1", **{"X-Forwarded-For": forged})
        assert response.status_int == 429, (forged, response.status)
    # Directly: the peer's own address, whatever the header says.
    assert _anonymous_create(proxied, "d0", "192.0.2.7").status_int == 201
    forged = {"X-Forwarded-For": "198.51.100.77"}
    assert _anonymous_create(proxied, "d1", "192.0.2.7", **forged).status_int == 429


# --------------------------------------------------------------------------------------------
# The transfer limiter
# --------------------------------------------------------------------------------------------


class _Clock:
    def __init__(self):
        self.now = time.monotonic()

    def __call__(self):
        return self.now


class _LazyWrapper:
    """A ``wsgi.file_wrapper`` that, as waitress's, reads the file only when its socket has
    taken what was read before: the test reads it by hand."""

    def __init__(self, file, block_size=8192):
        self.file = file

    def __iter__(self):  # Not used by the test.
        return iter(lambda: self.file.read(8192), b"")

    def close(self):
        self.file.close()


def test_a_trickling_download_cannot_hold_the_budget_for_as_long_as_it_likes(
    tmp_path_factory, request
):
    """Found by review (2026-12-06): docs/data-files.rst says "a slow client cannot hold the
    budget, and every other transfer, for as long as it likes".

    It was: a client downloading a ``/data/files`` file as large as the budget and taking
    8 KiB of it every 29 seconds (waitress, the server of every shipped ini, reads the file
    as its socket takes the bytes: each read "touched" the hold, and
    ``transfer_idle_seconds`` = 30 never elapsed) held the whole budget for the simulated
    hour (for days: size / rate, both its choice), every other transfer refused. Fixed: a
    transfer moving fewer than ``transfer_min_bytes_per_second`` over a period of
    ``transfer_idle_seconds`` lets its budget go; another transfer is let in within ten
    idle periods (here: at the first period's end)."""
    size = 1024 * 1024
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{
            "kinto.attachment.data_files.transfer_budget_bytes": str(size),
            "kinto.attachment.data_files.transfer_wait_seconds": "0",
            "kinto.attachment.data_files.transfer_idle_seconds": "30",
        },
    )
    kinto.app.post("/v1/data/files?id=big", b"x" * size, extra_environ=LOCAL, status=200)
    limiter = kinto.registry.transfer_limiter
    clock = _Clock()
    limiter.clock = clock
    req = webob.Request.blank(
        "/v1/data/files/big", environ={**LOCAL, "wsgi.file_wrapper": _LazyWrapper}
    )
    status, _, body = req.call_application(kinto.app.app)
    assert status.startswith("200"), status
    try:
        admitted_after = None
        for step in range(1, 125):  # An hour: 124 reads of 8 KiB, 29 s apart.
            assert body.file.read(8 * 1024)
            clock.now += 29
            other = kinto.app.post(
                "/v1/data/files?id=small", b"y", extra_environ=LOCAL, status="*"
            )
            if other.status_int == 200:
                admitted_after = step * 29
                break
            assert other.status_int == 503, other.status
    finally:
        body.close()
        limiter.clock = time.monotonic
    assert admitted_after is not None and admitted_after <= 2 * 30, (
        "a client reading 8 KiB every 29 s held the whole budget for an hour; "
        "every other transfer got 503"
    )


# --------------------------------------------------------------------------------------------
# CORS
# --------------------------------------------------------------------------------------------


def test_held_cors_reflects_only_listed_origins_and_never_credentials(tmp_path_factory, request):
    """Attack: a page of ``https://evil.example`` reads answers of the plugin's routes (tus,
    attachment download, served files, /data/files from a trusted browser) when Kinto's
    ``cors_origins`` and ``data_files.allowed_origins`` list only ``https://app.example``: no
    ``Access-Control-Allow-Origin`` for it, and never ``Access-Control-Allow-Credentials``
    (Kinto's credentials are an ``Authorization`` header, never a cookie a page could ride)."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{
            "kinto.cors_origins": "https://app.example",
            "kinto.attachment.serve_files": "true",
            "kinto.attachment.base_url": "http://localhost/v1/attachments/",
            "kinto.attachment.data_files.allowed_origins": "https://app.example",
        },
    )
    kinto.create_collection()
    location = kinto.upload(kinto.record_url("r1")).json["location"]
    served = location[len("http://localhost") :]
    kinto.app.post("/v1/data/files?id=f", b"data", extra_environ=LOCAL)
    record = kinto.record_url("r1")
    checks = [
        ("OPTIONS", record + "/attachment/uploads", {"Access-Control-Request-Method": "POST"}),
        ("OPTIONS", record + "/attachment/uploads/x", {"Access-Control-Request-Method": "PATCH"}),
        (
            "POST",
            record + "/attachment/uploads",
            {**ALICE, **TUS, "Upload-Length": "3", "Upload-Metadata": f"filename {_b64('a')}"},
        ),
        ("GET", record + "/attachment", ALICE),
        ("GET", served, {}),
        ("OPTIONS", served, {"Access-Control-Request-Method": "GET"}),
        ("GET", "/v1/data/files/f", {}),
        ("OPTIONS", "/v1/data/files/f", {"Access-Control-Request-Method": "GET"}),
        ("POST", "/v1/data/files?id=g", {"Content-Type": "text/plain"}),
    ]
    for origin, listed in (("https://evil.example", False), ("https://app.example", True)):
        for method, url, headers in checks:
            response = kinto.app.request(
                url,
                method=method,
                headers={**headers, "Origin": origin, **TUS},
                environ=dict(LOCAL),
                expect_errors=True,
            )
            allowed = response.headers.get("Access-Control-Allow-Origin")
            assert "Access-Control-Allow-Credentials" not in response.headers, (method, url)
            if listed:
                continue
            assert allowed in (None,), (method, url, origin, allowed, response.status)
            if url.startswith("/v1/data/files") and method != "OPTIONS":
                # A page of another site from a trusted browser: refused outright.
                assert response.status_int == 403, (method, url, response.status)


def test_held_tus_location_ignores_forwarded_host(tmp_path_factory, request):
    """Attack: ``X-Forwarded-Host``/``Forwarded: host=`` on a tus creation or a multipart
    upload make the server hand out (in ``Location``) or store (the record's ``location``) a
    URL of the attacker's host. The record's ``location`` is under ``base_url`` whatever
    ``Host`` says; ``Location`` is made of ``Host`` alone (the client's own answer), never of
    the forwarding headers that a proxy may pass through from anyone."""
    kinto = cached_app("memory", tmp_path_factory, request)
    kinto.create_collection()
    forwarded = {
        "X-Forwarded-Host": "evil.example",
        "Forwarded": "host=evil.example;proto=https",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Server": "evil.example",
    }
    response = kinto.app.post(
        kinto.record_url("r1") + "/attachment/uploads",
        headers={
            **ALICE,
            **TUS,
            **forwarded,
            "Upload-Length": "3",
            "Upload-Metadata": f"filename {_b64('a.txt')}",
        },
        status=201,
    )
    assert "evil" not in response.headers["Location"], response.headers["Location"]
    response = kinto.upload(
        kinto.record_url("r2"), headers={**ALICE, **forwarded, "Host": "evil.example"}
    )
    assert response.json["location"].startswith("https://files.example.com/"), response.json
