"""/data/files is private to programs, not to the web pages a browser on a trusted machine opens.

Every route (``/v1`` and the root; listing, upload, download, ``HEAD``, ``DELETE``,
``OPTIONS``) refuses what a page of another site makes the browser send (``Origin``,
``Sec-Fetch-Site``) and what a page whose name was rebound to the server sends (a foreign
``Host``), with a 403; programs, which send neither, see no change. The same in a real
browser: ``tests/live/test_live_pages.py``.
"""

import functools

import pytest
from pyramid.exceptions import ConfigurationError

from ..conftest import ALICE, cached_app
from .test_data_files import LOCAL, PDF, listing


PREFIXES = ("/v1", "")
#: Every request of the route: (method, path after the prefix, body).
REQUESTS = (
    ("GET", "/data/files", None),
    ("HEAD", "/data/files", None),
    ("POST", "/data/files?id=x", b"overwritten"),
    ("GET", "/data/files/x", None),
    ("HEAD", "/data/files/x", None),
    ("DELETE", "/data/files/x", None),
    ("OPTIONS", "/data/files", None),
    ("OPTIONS", "/data/files/x", None),
)
EVIL = "http://evil.example"
#: What Chromium sends with a cross-site ``fetch(url, {method: "POST", mode: "no-cors"})``.
CROSS_SITE_POST = {"Origin": EVIL, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
#: What a browser without Fetch Metadata (Safari before 16.4) sends: ``Origin`` alone.
OLD_BROWSER_POST = {"Origin": EVIL}
#: A link followed from another site: no ``Origin`` on a ``GET``.
CROSS_SITE_LINK = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
#: A dev server's page on another port of the same machine: same site, other origin.
SAME_SITE = {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"}
PAGES = {
    "cross-site": CROSS_SITE_POST,
    "old browser": OLD_BROWSER_POST,
    "link": CROSS_SITE_LINK,
    "same-site": SAME_SITE,
    "null origin": {"Origin": "null"},
    "malformed ports": {"Origin": "http://localhost:99999", "Host": "localhost:99999"},
    # Names urlsplit refuses ("Invalid IPv6 URL"): they name no origin, let alone ours.
    "malformed names": {"Origin": "http://[::1", "Host": "[::1"},
    "unclosed bracket": {"Origin": "http://[x"},
}
#: ``Host`` of a page whose name now resolves to the server (DNS rebinding).
REBOUND = ("evil.example", "evil.example:8888", "localhost.evil.example", "EVIL.example.:80")


def send(kinto, method, path, body=None, status=None, environ=LOCAL, **headers):
    return kinto.app.request(
        path,
        method=method,
        body=body or b"",
        headers={"Content-Type": "text/plain", **headers} if body else headers,
        environ=dict(environ),
        status=status,
        expect_errors=True,
    )


def put_artifact(kinto):
    """The artifact a page should not reach: ``x``, with ``PDF`` as its content."""
    send(kinto, "POST", "/v1/data/files?id=x", PDF, status=200)
    return kinto.files()


def assert_intact(kinto, files):
    assert send(kinto, "GET", "/v1/data/files/x", status=200).body == PDF
    assert [entry["id"] for entry in listing(kinto)] == ["x"]
    assert kinto.files() == files


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("page", sorted(PAGES))
def test_pages_of_other_origins_are_refused_on_every_route(kinto_memory, prefix, page):
    files = put_artifact(kinto_memory)
    for method, path, body in REQUESTS:
        headers = dict(PAGES[page])
        if method == "OPTIONS":
            headers["Access-Control-Request-Method"] = "DELETE"
        response = send(kinto_memory, method, prefix + path, body, **headers)
        assert response.status_int == 403, (method, path, response)
        if method != "HEAD":
            assert response.json["errno"] == 121
            assert "data_files.allowed_origins" in response.json["message"]
        assert "Access-Control-Allow-Origin" not in response.headers
    assert_intact(kinto_memory, files)


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("host", REBOUND)
def test_a_foreign_host_is_refused_on_every_route(kinto_memory, prefix, host):
    files = put_artifact(kinto_memory)
    for method, path, body in REQUESTS:
        # What the rebound page's own (same-origin) requests carry.
        same_origin = {"Host": host, "Sec-Fetch-Site": "same-origin"}
        response = send(kinto_memory, method, prefix + path, body, **same_origin)
        assert response.status_int == 403, (method, path, response)
        if method != "HEAD":
            assert response.json["errno"] == 121
            assert "data_files.allowed_hosts" in response.json["message"]
    assert_intact(kinto_memory, files)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Host": "localhost:8888"},
        {"Host": "LOCALHOST."},
        {"Host": "127.0.0.1:8888"},
        {"Host": "[::1]:8888"},
        {"Host": "10.1.2.3"},  # Any address: no name was resolved.
        # A page of the server's own origin, and the user's own navigation.
        {"Host": "localhost:8888", "Origin": "http://localhost:8888"},
        {"Host": "localhost", "Origin": "https://localhost"},  # TLS ended by a proxy.
        {"Host": "localhost:8888", "Sec-Fetch-Site": "same-origin", "Origin": "http://x"},
        {"Host": "localhost:8888", "Sec-Fetch-Site": "none"},
    ],
)
@pytest.mark.parametrize("prefix", PREFIXES)
def test_programs_and_the_servers_own_pages_are_served(kinto_memory, prefix, headers):
    environ = dict(LOCAL)
    if "Host" not in headers:
        environ["HTTP_HOST"] = ""  # HTTP/1.0: no Host at all.
    kinto = functools.partial(send, kinto_memory, environ=environ, **headers)
    assert kinto("POST", f"{prefix}/data/files?id=x", PDF, 200).text == "x"
    assert kinto("GET", f"{prefix}/data/files", None, 200).json
    assert kinto("GET", f"{prefix}/data/files/x", None, 200).body == PDF
    assert kinto("HEAD", f"{prefix}/data/files/x", None, 200).headers["Content-Length"]
    options = kinto("OPTIONS", f"{prefix}/data/files/x", None, 204)
    assert options.headers["Allow"] == "GET, DELETE, HEAD, OPTIONS"
    kinto("DELETE", f"{prefix}/data/files/x", None, 204)
    assert listing(kinto_memory) == []


def test_strangers_still_get_the_404_of_an_unknown_route(kinto_memory):
    """A caller who may not see the route learns nothing more from a page's headers."""
    stranger = {"REMOTE_ADDR": "203.0.113.7"}
    for method, path, body in REQUESTS:
        for headers in (CROSS_SITE_POST, {"Host": "evil.example"}):
            response = send(kinto_memory, method, "/v1" + path, body, 404, stranger, **headers)
            if method != "HEAD":
                assert response.json["errno"] == 111


def test_principals_do_not_let_pages_in(tmp_path_factory, request):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{
            "kinto.attachment.data_files.trusted_networks": "",
            "kinto.attachment.data_files.principals": "system.Authenticated",
        },
    )
    send(kinto, "POST", "/v1/data/files?id=x", PDF, 200, **ALICE)
    # The browser sends the credentials it holds for the server with a cross-site form.
    send(kinto, "POST", "/v1/data/files?id=x", b"forged", 403, **ALICE, **CROSS_SITE_POST)
    send(kinto, "GET", "/v1/data/files", None, 403, **ALICE, Host="evil.example")
    assert send(kinto, "GET", "/v1/data/files/x", None, 200, **ALICE).body == PDF


ALLOWED = "https://app.example.com"


@pytest.fixture
def allowing(tmp_path_factory, request):
    """``data_files.allowed_origins`` lists ``ALLOWED`` and the ports of ``localhost``."""
    return cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.attachment.data_files.allowed_origins": f"{ALLOWED} http://localhost:*"},
    )


@pytest.mark.parametrize("prefix", PREFIXES)
def test_allowed_origins_may_use_the_route_and_read_its_answers(allowing, prefix):
    page = {"Origin": ALLOWED, "Sec-Fetch-Site": "cross-site"}
    preflight = send(
        allowing,
        "OPTIONS",
        f"{prefix}/data/files/x",
        None,
        204,
        **page,
        **{"Access-Control-Request-Method": "DELETE", "Access-Control-Request-Headers": "range"},
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "DELETE" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Range" in preflight.headers["Access-Control-Allow-Headers"]
    assert "Origin" in preflight.headers["Vary"]

    send(allowing, "POST", f"{prefix}/data/files?id=x", PDF, 200, **page)
    download = send(allowing, "GET", f"{prefix}/data/files/x", None, 200, **page)
    assert download.body == PDF
    assert download.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Content-Disposition" in download.headers["Access-Control-Expose-Headers"]
    # Its refusals too: the page tells a missing file from a network error.
    missing = send(allowing, "GET", f"{prefix}/data/files/nope", None, 404, **page)
    assert missing.headers["Access-Control-Allow-Origin"] == ALLOWED
    dev = {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"}
    assert send(allowing, "GET", f"{prefix}/data/files", None, 200, **dev).json
    send(allowing, "DELETE", f"{prefix}/data/files/x", None, 204, **page)

    # Other origins: refused, their preflight too, and never told they may read.
    for origin in ("https://app.example.com.evil.example", "http://evil.example", "null"):
        other = {"Origin": origin, "Sec-Fetch-Site": "cross-site"}
        send(allowing, "GET", f"{prefix}/data/files", None, 403, **other)
        refused = send(
            allowing,
            "OPTIONS",
            f"{prefix}/data/files",
            None,
            403,
            **other,
            **{"Access-Control-Request-Method": "POST"},
        )
        assert "Access-Control-Allow-Origin" not in refused.headers


def test_an_allowed_origins_preflight_needs_no_credentials(tmp_path_factory, request):
    """Pages of principals: the preflight carries no credentials, the request does."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{
            "kinto.attachment.data_files.trusted_networks": "",
            "kinto.attachment.data_files.principals": "system.Authenticated",
            "kinto.attachment.data_files.allowed_origins": ALLOWED,
        },
    )
    page = {"Origin": ALLOWED, "Sec-Fetch-Site": "cross-site"}
    asking = {"Access-Control-Request-Method": "GET"}
    preflight = send(kinto, "OPTIONS", "/v1/data/files", None, 204, **page, **asking)
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED
    send(kinto, "GET", "/v1/data/files", None, 404, **page)
    assert send(kinto, "GET", "/v1/data/files", None, 200, **page, **ALICE).json == []
    # A rebound page's preflight is still refused.
    send(kinto, "OPTIONS", "/v1/data/files", None, 403, **page, **asking, Host="evil.example")


@pytest.mark.parametrize("visibility", ["public", "private"])
def test_the_servers_configured_name_is_allowed(tmp_path_factory, request, visibility):
    """Kinto's ``http_host`` (the name clients use behind a proxy) joins ``localhost``."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{
            "kinto.http_host": "files.example.com:443",
            "kinto.attachment.data_files.visibility": visibility,
        },
    )
    for host in ("files.example.com", "FILES.example.com:443", "localhost:8888", "192.0.2.1"):
        send(kinto, "POST", "/data/files?id=x", PDF, 200, Host=host)
    refused = send(kinto, "POST", "/data/files?id=x", PDF, Host="evil.example")
    # Public: anyone on the network may use the route, pages and rebound names included.
    assert refused.status_int == (200 if visibility == "public" else 403)
    page = send(kinto, "POST", "/data/files?id=x", b"forged", **CROSS_SITE_POST)
    assert page.status_int == (200 if visibility == "public" else 403)


def test_allowed_hosts_replace_the_default_names(tmp_path_factory, request):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.attachment.data_files.allowed_hosts": "slimfaas, *.svc.cluster.local"},
    )
    for host in ("slimfaas:5000", "kinto.default.svc.cluster.local", "127.0.0.1", "[::1]"):
        send(kinto, "GET", "/data/files", None, 200, Host=host)
    for host in ("localhost:8888", "svc.cluster.local.evil.example", "slimfaas.evil.example"):
        send(kinto, "GET", "/data/files", None, 403, Host=host)


@pytest.mark.parametrize(
    "name,value",
    [
        ("allowed_origins", "https://app.example.com/"),
        ("allowed_origins", "app.example.com"),
        ("allowed_hosts", "http://files.example.com"),
        ("allowed_hosts", "files.example.com/x"),
    ],
)
def test_malformed_names_stop_start_up(tmp_path_factory, request, name, value):
    with pytest.raises(ConfigurationError, match=f"data_files.{name}"):
        cached_app(
            "memory", tmp_path_factory, request, **{f"kinto.attachment.data_files.{name}": value}
        )


def test_root_routes_without_version_redirection_too(tmp_path_factory, request):
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        **{"kinto.version_prefix_redirect_enabled": "false"},
    )
    files = put_artifact(kinto)
    for method, path, body in REQUESTS:
        for headers in (CROSS_SITE_POST, {"Host": "evil.example"}):
            send(kinto, method, path, body, 403, **headers)
    assert send(kinto, "OPTIONS", "/data/files", None, 204).headers["Allow"]
    assert_intact(kinto, files)
