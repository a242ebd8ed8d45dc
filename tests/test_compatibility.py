"""Same answers as kinto-attachment where we have no reason to differ: statuses, the wording
and errno of refusals, CORS on every route whatever the import order, the events' ``uri``."""

import pytest
from kinto.core.events import ResourceChanged

from .conftest import ALICE, cached_app


URL = "/v1/buckets/blog/collections/articles/records/r1"
BOUNDARY = "XyZ"


def test_201_on_creation_200_on_replacement(kinto):
    kinto.create_collection()
    created = kinto.upload(URL, b"one", "a.txt", status=201)
    assert created.headers["Location"].endswith(URL)
    replaced = kinto.upload(URL, b"two", "b.txt", status=200)
    assert replaced.json["size"] == 3
    # A record that exists without an attachment is updated too: 200.
    other = "/v1/buckets/blog/collections/articles/records/r2"
    kinto.app.put_json(other, {"data": {"title": "x"}}, headers=ALICE)
    kinto.upload(other, b"three", "c.txt", status=200)


def part(name, content, filename=None, content_type=None):
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    headers = f"Content-Disposition: {disposition}\r\n"
    if content_type:
        headers += f"Content-Type: {content_type}\r\n"
    return f"--{BOUNDARY}\r\n{headers}\r\n".encode() + content + b"\r\n"


def form(*parts):
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


FILE = part("attachment", b"hello", "hello.txt", "text/plain")
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@pytest.mark.parametrize(
    "body,content_type,errno,message",
    [
        (form(part("attachment", b"x")), MULTIPART, 107, "body: Filename is required."),
        (
            form(part("attachment", b"x", "x.exe")),
            MULTIPART,
            107,
            "body: File extension is not allowed.",
        ),
        (form(part("data", b"{}")), MULTIPART, 109, "Attachment missing."),
        # kinto-attachment's own test: a file in a part of another name.
        (
            form(part("fichierjoint", b"--fake--", "image.jpg")),
            MULTIPART,
            109,
            "Attachment missing.",
        ),
        (
            form(part("my_field", b"1"), part("data", b"{}", "d.json"), part("data", b"{}")),
            MULTIPART,
            109,
            "Attachment missing.",
        ),
        (
            form(part("data", b"{oops"), FILE),
            MULTIPART,
            109,
            "body: data is not valid JSON (Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1))",
        ),
        (
            form(part("permissions", b"nope"), FILE),
            MULTIPART,
            109,
            "body: permissions is not valid JSON (Expecting value: line 1 column 1 (char 0))",
        ),
        (
            form(part("data", b"{}", "data.json"), FILE),
            MULTIPART,
            109,
            "body: 'data' field should be passed as form data, not files",
        ),
        (
            form(FILE, part("my_field", b"1")),
            MULTIPART,
            109,
            "body: 'my_field' not in ('data', 'permissions')",
        ),
        (form(FILE), "application/json", 107, "Content-Type should be multipart/form-data"),
        (form(FILE), "multipart/form-data", 107, "Invalid boundary in multipart form: ''"),
    ],
    ids=[
        "no-filename",
        "extension",
        "no-attachment",
        "other-file-part",
        "only-wrong-parts",
        "data-json",
        "permissions-json",
        "data-as-file",
        "unknown-field",
        "not-multipart",
        "no-boundary",
    ],
)
def test_refusals_are_worded_as_kinto_attachment(kinto_memory, body, content_type, errno, message):
    kinto_memory.create_collection()
    response = kinto_memory.app.post(
        URL + "/attachment",
        body,
        headers={**ALICE, "Content-Type": content_type},
        status=400,
    )
    assert (response.json["errno"], response.json["message"]) == (errno, message)
    assert kinto_memory.files() == []


ORIGIN = "https://admin.example.com"


@pytest.fixture
def cors_app(tmp_path_factory, request):
    """An app built after ``kinto_attachment`` was imported (as every app of these tests is),
    with one allowed origin."""
    kinto = cached_app("memory", tmp_path_factory, request, **{"kinto.cors_origins": ORIGIN})
    kinto.create_collection()
    return kinto


def test_preflight_and_cors_headers_on_the_attachment_route(cors_app):
    preflight = cors_app.app.options(
        URL + "/attachment",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
        status=200,
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    upload = cors_app.app.post(
        URL + "/attachment",
        form(FILE),
        headers={**ALICE, "Content-Type": MULTIPART, "Origin": ORIGIN},
        status=201,
    )
    assert upload.headers["Access-Control-Allow-Origin"] == ORIGIN
    # Cornice applies the configured origins: another one is refused.
    other = cors_app.app.get(
        URL + "/attachment", headers={**ALICE, "Origin": "https://evil.example.com"}, status=400
    )
    assert "Access-Control-Allow-Origin" not in other.headers


def test_events_carry_the_attachment_uri(kinto):
    kinto.create_collection()
    seen = []

    def listener(event):
        seen.append((event.payload["action"], event.payload["uri"], event.payload["record_id"]))

    kinto.registry.registerHandler(listener, (ResourceChanged,))
    try:
        kinto.upload(URL, b"one", "a.txt")
        kinto.upload(URL, b"two", "b.txt")
        kinto.app.delete(URL + "/attachment", headers=ALICE, status=204)
        kinto.app.patch_json(URL, {"data": {"title": "t"}}, headers=ALICE)
    finally:
        kinto.registry.unregisterHandler(listener, (ResourceChanged,))
    record_uri = URL.removeprefix("/v1")
    attachment_uri = record_uri + "/attachment"
    assert seen == [
        ("create", attachment_uri, "r1"),
        ("update", attachment_uri, "r1"),
        ("update", attachment_uri, "r1"),
        # Kinto's own record writes keep theirs.
        ("update", record_uri, "r1"),
    ]
