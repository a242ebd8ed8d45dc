"""``routes.url_of``/``path_of``, which replaced Pyramid's ``request.route_url``/``route_path``
in our views (its cache of quoted segments is never emptied): they give exactly what Pyramid
gave. Held against a review of the fix (2026-12-06)."""

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyramid.interfaces import IRoutesMapper
from pyramid.request import Request, apply_request_extensions

from kinto_attachment import routes
from kinto_attachment.protocols import tus_concat

from .conftest import ALICE


SIMPLE = re.compile(r"\{(\w+)\}")

ODD_IDS = [
    "r1",
    "é",
    "日本語",
    "a b",
    "100%",
    "%2F",
    "a/b",
    "?x=1",
    "#frag",
    "a;b=c",
    "@:+$,&!'()*=",
    "~._-",
    "\x00",
    "\x7f",
    "emoji-😀",
    "x" * 5000,
    "",
    "[::1]",
    "a\\b",
    '"<>^`{|}',
]


def _request(registry, path="/v1/", **environ):
    request = Request.blank(path, environ=environ)
    request.registry = registry
    apply_request_extensions(request)
    return request


def _simple_routes(registry):
    """Registered routes whose placeholders are plain ``{name}`` (what url_of handles)."""
    mapper = registry.getUtility(IRoutesMapper)
    found = []
    for route in mapper.get_routes():
        if "*" in route.pattern or ":" in route.pattern:
            continue
        found.append((route.name, SIMPLE.findall(route.pattern)))
    return found


ENVIRONS = [
    {},
    {"SCRIPT_NAME": "/prefix"},
    {"SCRIPT_NAME": "/a%20b/deep"},
    {"HTTP_HOST": "example.com:8443", "wsgi.url_scheme": "https"},
    {"HTTP_HOST": "[::1]:8080"},
    {"SERVER_NAME": "srv", "SERVER_PORT": "81", "HTTP_HOST": ""},
]


def test_held_url_of_matches_pyramid_on_every_route_and_odd_ids(kinto_memory):
    """Attack: ids with unicode, ``%``, spaces, reserved characters, NUL, very long ones, on
    every registered route with plain placeholders (ours, Kinto's, the root twins), under a
    SCRIPT_NAME, another host, scheme and port: url_of/path_of give what Pyramid gives."""
    registry = kinto_memory.app.app.registry
    checked = 0
    for environ in ENVIRONS:
        request = _request(registry, **environ)
        for name, names in _simple_routes(registry):
            for value in ODD_IDS:
                ids = dict.fromkeys(names, value)
                assert routes.url_of(request, name, **ids) == request.route_url(name, **ids)
                assert routes.path_of(request, name, **ids) == request.route_path(name, **ids)
                checked += 1
    assert checked > 200


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    bucket=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
    upload=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
    script=st.sampled_from(["", "/p", "/p/q", "/%C3%A9"]),
)
def test_held_url_of_matches_pyramid_on_random_ids(kinto_memory, bucket, upload, script):
    """Attack: any text as ids (property test), under a few SCRIPT_NAMEs."""
    registry = kinto_memory.app.app.registry
    request = _request(registry, SCRIPT_NAME=script)
    ids = {"bucket_id": bucket, "collection_id": upload[::-1], "id": bucket + upload}
    for name, extra in (
        ("record-object", {}),
        (routes.TUS_UPLOADS.name, {}),
        (routes.TUS_UPLOAD.name, {"upload_id": upload}),
    ):
        assert routes.url_of(request, name, **ids, **extra) == request.route_url(
            name, **ids, **extra
        )
        assert routes.path_of(request, name, **ids, **extra) == request.route_path(
            name, **ids, **extra
        )


def test_held_concatenation_recognises_the_urls_and_paths_url_of_makes():
    """Attack: the final upload recognises its partial uploads by ``path_of``'s path: an
    upload URL made by url_of (absolute, under a SCRIPT_NAME, with odd ids) must be found
    under it, and another record's must not."""

    class Registry:
        pass

    import types

    for script in ("", "/prefix"):
        for record in ("r1", "r é%", "a;b"):
            pattern = "/v1" + routes.RECORD_PATH + "/attachment/uploads"
            mapper = types.SimpleNamespace(
                get_route=lambda name, p=pattern: types.SimpleNamespace(
                    pattern=p + ("/{upload_id}" if name == routes.TUS_UPLOAD.name else "")
                )
            )
            registry = types.SimpleNamespace(getUtility=lambda _iface, m=mapper: m)
            request = types.SimpleNamespace(
                registry=registry,
                script_name=script,
                application_url="http://h:1" + script,
            )
            ids = {"bucket_id": "b", "collection_id": "c", "id": record}
            uploads = routes.path_of(request, routes.TUS_UPLOADS.name, **ids)
            urls = [
                routes.url_of(request, routes.TUS_UPLOAD.name, upload_id=u, **ids)
                for u in ("u1", "u2")
            ]
            assert tus_concat.upload_ids(urls, uploads) == ["u1", "u2"]
            other = routes.url_of(
                request, routes.TUS_UPLOAD.name, upload_id="u3", **{**ids, "id": record + "x"}
            )
            try:
                tus_concat.upload_ids([other], uploads)
            except Exception as error:  # noqa: BLE001 - a 400 is expected
                assert getattr(error, "status_code", None) == 400
            else:
                raise AssertionError("another record's upload was accepted")


def test_held_locations_and_concatenation_under_a_script_name(kinto_memory):
    """Attack: an app mounted under a SCRIPT_NAME (a proxy prefix): the ``Location`` of an
    attachment upload and of tus creations keep the prefix, and a final concatenation
    recognises the partial uploads by those URLs. (The ``default`` bucket under a
    SCRIPT_NAME is a 500 in Kinto itself, its own GETs too: not tried here.)"""
    app = kinto_memory.app
    environ = {"SCRIPT_NAME": "/mounted"}
    kinto_memory.create_collection()
    record = "/v1/buckets/blog/collections/articles/records/r1"
    posted = app.post(
        record + "/attachment",
        upload_files=[("attachment", "a.txt", b"hello")],
        headers=ALICE,
        extra_environ=environ,
        status=201,
    )
    assert posted.headers["Location"] == "http://localhost/mounted" + record
    parts = []
    for body in (b"hel", b"lo"):
        created = app.post(
            record + "/attachment/uploads",
            params=body,
            headers={
                **ALICE,
                "Tus-Resumable": "1.0.0",
                "Upload-Concat": "partial",
                "Upload-Length": str(len(body)),
                "Content-Type": "application/offset+octet-stream",
            },
            extra_environ=environ,
            status=201,
        )
        location = created.headers["Location"]
        assert location.startswith("http://localhost/mounted" + record + "/attachment/uploads/")
        parts.append(location)
    app.post(
        record + "/attachment/uploads",
        headers={
            **ALICE,
            "Tus-Resumable": "1.0.0",
            "Upload-Concat": "final;" + " ".join(parts),
            "Upload-Metadata": "filename YS50eHQ=",
        },
        extra_environ=environ,
        status=201,
    )
    assert app.get(record + "/attachment", headers=ALICE).body == b"hello"
