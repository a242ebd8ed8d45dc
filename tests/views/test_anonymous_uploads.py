"""Anonymous resumable uploads cannot lock other clients out.

Where everyone may create records, anonymous tus creators shared one quota
(``resumable.max_uploads_per_user``): one client opening 20 uploads made every other anonymous
uploader get a 429 for a day. Anonymous creation is now refused unless
``resumable.allow_anonymous``, and then counted per client address (an IPv6 host by its /64,
a client behind a trusted proxy by what the proxy says).
"""

import http.client

import pytest
import requests
import transaction
from kinto.core.utils import msec_time
from pyramid.exceptions import ConfigurationError

from kinto_attachment.state import tus_uploads
from kinto_attachment.views import tus_quota, tus_steps

from ..conftest import ALICE, BOB, cached_app
from ..support.live import ALICE as LIVE_ALICE
from ..support.live import REQUEST_TIMEOUT, create_collection, live_config, running_server, started
from .test_resumable import TUS, UPLOADS, create, head, metadata, patch


CHUNK_TYPE = "application/offset+octet-stream"


def open_to_everyone(kinto):
    kinto.create_collection()
    kinto.app.patch_json(
        "/v1/buckets/blog/collections/articles",
        {"permissions": {"record:create": ["system.Everyone"]}},
        headers=ALICE,
    )
    return kinto


def app_of(tmp_path_factory, request, backend="memory", **settings):
    kinto = cached_app(
        backend,
        tmp_path_factory,
        request,
        **{f"kinto.attachment.{name}": value for name, value in settings.items()},
    )
    return open_to_everyone(kinto)


def anonymous_create(kinto, address, status=201, record="r1", **headers):
    return kinto.app.post(
        UPLOADS.replace("/r1/", f"/{record}/"),
        headers={**TUS, "Upload-Length": "10", "Upload-Metadata": metadata(), **headers},
        extra_environ={"REMOTE_ADDR": address},
        status=status,
    )


def test_anonymous_creation_is_refused_by_default(backend, tmp_path_factory, request):
    kinto = app_of(tmp_path_factory, request, backend)
    response = anonymous_create(kinto, "192.0.2.1", status=401, **{"Content-Type": CHUNK_TYPE})
    assert response.json["errno"] == 104
    assert "multipart POST" in response.json["message"]
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.headers["Tus-Resumable"] == "1.0.0"
    with transaction.manager:
        assert list(tus_uploads.entries(kinto.registry.storage)) == []
    assert kinto.files() == []
    # Authenticated creators are unaffected, and an anonymous multipart upload still works.
    _, url = create(kinto.app, 5)
    patch(kinto.app, url, b"hello", 0)
    kinto.upload(kinto.record_url("r2"), headers={}, status=201)


@pytest.fixture
def anonymous(backend, tmp_path_factory, request):
    """Anonymous uploads allowed, 2 unfinished ones each, behind a trusted proxy too."""
    return app_of(
        tmp_path_factory,
        request,
        backend,
        **{
            "resumable.allow_anonymous": "true",
            "resumable.max_uploads_per_user": "2",
            "data_files.trusted_proxies": "10.0.0.1",
        },
    )


def test_one_anonymous_client_cannot_lock_the_others_out(anonymous):
    for _ in range(2):
        anonymous_create(anonymous, "192.0.2.1")
    refused = anonymous_create(anonymous, "192.0.2.1", status=429)
    assert "(2, at most 2 per user)" in refused.json["message"]
    # Every other client has a quota of its own, and users too.
    for address in ("192.0.2.2", "198.51.100.7", "2001:db8:1:2::1"):
        anonymous_create(anonymous, address)
        anonymous_create(anonymous, address)
    create(anonymous.app, 10)
    create(anonymous.app, 10, headers=BOB)
    # An IPv6 host picks its addresses in its /64: they count as one client.
    anonymous_create(anonymous, "2001:db8:1:2::ffff", status=429)
    anonymous_create(anonymous, "2001:db8:1:3::1")
    # Behind the trusted proxy, clients are told apart by what it says of them...
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    for client in ("203.0.113.1", "203.0.113.2"):
        forwarded = {"X-Forwarded-For": client}
        anonymous_create(anonymous, proxy["REMOTE_ADDR"], **forwarded)
        anonymous_create(anonymous, proxy["REMOTE_ADDR"], **forwarded)
        anonymous_create(anonymous, proxy["REMOTE_ADDR"], status=429, **forwarded)
    # ... and what any other peer says is ignored: it is itself.
    forged = {"X-Forwarded-For": "203.0.113.3"}
    anonymous_create(anonymous, "192.0.2.1", status=429, **forged)


def test_an_anonymous_upload_goes_on_and_frees_its_slot(anonymous):
    url = anonymous_create(anonymous, "192.0.2.1").headers["Location"]
    url = url[len("http://localhost") :]
    anonymous_create(anonymous, "192.0.2.1")
    anonymous_create(anonymous, "192.0.2.1", status=429)
    # The URL is the upload's key (a client's address may change while it uploads).
    environ = {"REMOTE_ADDR": "192.0.2.99"}
    anonymous.app.patch(
        url,
        b"0123456789",
        headers={**TUS, "Content-Type": CHUNK_TYPE, "Upload-Offset": "0"},
        extra_environ=environ,
        status=204,
    )
    head(anonymous.app, url, headers={})
    anonymous_create(anonymous, "192.0.2.1")  # Completed: its slot is free.
    record = anonymous.app.get(anonymous.record_url(), headers=ALICE).json["data"]
    assert record["attachment"]["size"] == 10


def test_retry_after_is_when_the_clients_own_soonest_upload_expires(
    tmp_path_factory, request, monkeypatch
):
    kinto = app_of(
        tmp_path_factory,
        request,
        **{
            "resumable.allow_anonymous": "true",
            "resumable.max_uploads_per_user": "2",
            "resumable.expires_seconds": "600",
        },
    )
    now = msec_time()
    clock = {"now": now}
    for module in (tus_quota, tus_steps):  # The clocks of expirations, quotas.
        monkeypatch.setattr(module, "msec_time", lambda: clock["now"])
    anonymous_create(kinto, "192.0.2.1")
    clock["now"] = now + 100_000
    anonymous_create(kinto, "192.0.2.1")
    # Another client's upload expiring sooner says nothing of this client's slots.
    clock["now"] = now - 300_000
    anonymous_create(kinto, "192.0.2.2")
    clock["now"] = now + 250_000
    refused = anonymous_create(kinto, "192.0.2.1", status=429)
    assert refused.headers["Retry-After"] == "350"  # 600 s after its first, 250 s later.
    clock["now"] = now + 250_500
    assert anonymous_create(kinto, "192.0.2.1", status=429).headers["Retry-After"] == "350"
    clock["now"] = now + 600_001  # The first expired: its slot is free.
    anonymous_create(kinto, "192.0.2.1")
    refused = anonymous_create(kinto, "192.0.2.1", status=429)
    assert refused.headers["Retry-After"] == "100"


def test_a_malformed_setting_stops_start_up(tmp_path_factory, request):
    with pytest.raises(ConfigurationError, match="resumable.allow_anonymous"):
        cached_app(
            "memory",
            tmp_path_factory,
            request,
            **{"kinto.attachment.resumable.allow_anonymous": "sometimes"},
        )


def live_create(server, source, status):
    """An anonymous tus creation from the loopback address ``source`` (127.0.0.0/8 is this
    machine's: each address is another client to the server)."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", server.port, timeout=REQUEST_TIMEOUT, source_address=(source, 0)
    )
    try:
        connection.request(
            "POST",
            "/v1/buckets/open/collections/drop/records/r/attachment/uploads",
            headers={**TUS, "Upload-Length": "10", "Upload-Metadata": metadata()},
        )
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == status, (source, response.status, body)
    return response


def open_collection(server):
    create_collection(server, "open", "drop")
    response = requests.patch(
        f"{server.url}/buckets/open/collections/drop",
        json={"permissions": {"record:create": ["system.Everyone"]}},
        auth=LIVE_ALICE,
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 200, response.text


@pytest.mark.live
def test_live_anonymous_uploads(tmp_path):
    """The shipped configuration refuses them; allowed, each client has its own quota."""
    (tmp_path / "shipped").mkdir()
    with running_server(tmp_path / "shipped") as server:
        open_collection(server)
        refused = live_create(server, "127.0.0.1", 401)
        assert refused.getheader("WWW-Authenticate")

    base_path = tmp_path / "allowing" / "attachments"
    base_path.mkdir(parents=True)
    ini = tmp_path / "allowing" / "kinto.ini"
    allowing = "[app:main]\nkinto.attachment.resumable.allow_anonymous = true\n"
    ini.write_text(live_config(0, base_path).replace("[app:main]\n", allowing, 1))
    with started(ini.parent, ini, base_path=base_path) as server:
        server.wait_ready()
        open_collection(server)
        for _ in range(20):  # The default quota.
            live_create(server, "127.0.0.2", 201)
        refused = live_create(server, "127.0.0.2", 429)
        assert 0 < int(refused.getheader("Retry-After")) <= 86400
        for client in ("127.0.0.3", "127.0.0.1"):
            live_create(server, client, 201)
