"""Same answers as kinto-attachment where we have no reason to differ: statuses, the wording
and errno of refusals, CORS on every route whatever the import order, the events' ``uri``;
plugins that copy records with their attachments (Remote Settings' signer) keep working."""

import pytest
from kinto.core.events import ACTIONS, ResourceChanged
from kinto.core.storage.exceptions import ObjectNotFoundError
from kinto.core.utils import build_request

from .conftest import ALICE, attachment_app, cached_app


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
    # Titled as kinto-attachment's: "Invalid parameters" where it refused the file with Kinto's
    # ``raise_invalid``, "Bad Request" for the body's form (found by reviews, 2026-12-05).
    file_refused = message in (
        "body: Filename is required.",
        "body: File extension is not allowed.",
    )
    assert response.json["error"] == ("Invalid parameters" if file_refused else "Bad Request")
    assert kinto_memory.files() == []


ORIGIN = "https://admin.example.com"


@pytest.fixture
def cors_app(tmp_path_factory, request):
    """An app built after ``kinto_attachment`` was imported (as every app of these tests is),
    with one allowed origin."""
    kinto = cached_app("memory", tmp_path_factory, request, **{"kinto.cors_origins": ORIGIN})
    kinto.create_collection()
    return kinto


@pytest.mark.parametrize(
    "filename,content_type,expected",
    [
        ("LICENSE", None, "text/plain"),
        ("strings.ftl", None, "text/plain"),
        ("logo.png", None, "image/png"),
        ("LICENSE", "application/octet-stream", "application/octet-stream"),
    ],
)
def test_a_part_without_a_type_is_text_plain_unless_its_name_tells(
    tmp_path_factory, request, filename, content_type, expected
):
    """Found by review (2026-12-05).

    kinto-http.py's ``add_attachment`` sends no ``Content-Type`` for a file Python cannot
    type (``LICENSE``, ``x.ftl``): RFC 7578 §4.4 makes such a part ``text/plain``, which
    kinto-attachment records; we recorded ``application/octet-stream``. A name that tells
    the type still does (``image/png`` where kinto-attachment said ``text/plain``)."""
    kinto = attachment_app(tmp_path_factory, request, extensions="any")
    body = form(part("attachment", b"Some text.\n", filename, content_type))
    meta = kinto.app.post(URL + "/attachment", body, headers={**ALICE, "Content-Type": MULTIPART})
    assert meta.json["mimetype"] == expected


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


SOURCE = "/buckets/blog/collections/articles"
DESTINATION = "/buckets/blog/collections/published"
PUBLISHED = f"/v1{DESTINATION}/records/r1"


def _publish(event):
    """What Remote Settings' signer does when a collection is asked to be signed
    (``kinto_remote_settings/signer``: ``updater.py``, ``utils.notify_resource_event``): every
    record of the source is written into the destination through the storage backend, and
    each write announced from a request of its own, flagged ``_attachment_auto_save`` when an
    update changes the ``attachment`` (the flag kinto-attachment's listener honours)."""
    if (event.payload["resource_name"], event.payload["action"]) != ("collection", "update"):
        return
    if not any(c["new"].get("status") == "to-sign" for c in event.impacted_objects):
        return
    storage = event.request.registry.storage
    for record in storage.list_all(parent_id=SOURCE, resource_name="record"):
        copy = {k: v for k, v in record.items() if k != "last_modified"}
        where = {"parent_id": DESTINATION, "resource_name": "record"}
        try:
            old = storage.get(**where, object_id=record["id"])
        except ObjectNotFoundError:
            old, new = None, storage.create(**where, obj=copy)
        else:
            new = storage.update(**where, object_id=record["id"], obj=copy)
        announcing = build_request(
            event.request, {"method": "PUT", "path": f"{DESTINATION}/records/{record['id']}"}
        )
        announcing.matchdict = {"bucket_id": "blog", "collection_id": "published"}
        announcing.matchdict["id"] = record["id"]
        announcing.bound_data = event.request.bound_data
        announcing.current_resource_name = "record"
        if old is not None and old.get("attachment") != new.get("attachment"):
            announcing._attachment_auto_save = True
        announcing.notify_resource_event(
            parent_id=DESTINATION,
            timestamp=new["last_modified"],
            data=new,
            action=ACTIONS.CREATE if old is None else ACTIONS.UPDATE,
            old=old,
        )


@pytest.fixture
def signer(tmp_path_factory, request):
    kinto = attachment_app(tmp_path_factory, request)
    kinto.app.put_json(f"/v1{DESTINATION}", {}, headers=ALICE, status=201)
    kinto.registry.registerHandler(_publish, (ResourceChanged,))
    yield kinto
    kinto.registry.unregisterHandler(_publish, (ResourceChanged,))


def _sign(kinto):
    return kinto.app.patch_json(f"/v1{SOURCE}", {"data": {"status": "to-sign"}}, headers=ALICE)


def test_the_signer_publishes_new_and_replaced_attachments(signer):
    """Found by review (2026-12-05).

    Remote Settings' review workflow answered ``400`` ("Attachment metadata cannot be
    modified") at every approval of a collection with a new attachment, or a replaced one:
    nothing was published. The signer creates the records it publishes with their
    attachments (kinto-attachment checks updates only), and flags its updates that change
    one (``_attachment_auto_save``, which kinto-attachment honours, we ignored). Deleting
    the published copy deletes no file: the original's stays."""
    first = signer.upload(URL, b"blocklist v1", "blocklist.json").json
    _sign(signer)
    assert signer.app.get(PUBLISHED, headers=ALICE).json["data"]["attachment"] == first
    second = signer.upload(URL, b"blocklist v2", "blocklist.json").json
    _sign(signer)
    assert signer.app.get(PUBLISHED, headers=ALICE).json["data"]["attachment"] == second

    signer.app.delete(PUBLISHED, headers=ALICE)

    assert signer.key_of(second["location"]) in signer.files()
    assert signer.app.get(URL + "/attachment", headers=ALICE).body == b"blocklist v2"


def test_a_plugin_changing_an_attachment_unflagged_is_refused(signer):
    """As kinto-attachment: a plugin's write that changes an attachment into another, without
    ``_attachment_auto_save``, is refused (clients may not change it at all)."""
    first = signer.upload(URL, b"v1", "a.json").json
    _sign(signer)
    storage = signer.registry.storage
    published = storage.get(parent_id=DESTINATION, resource_name="record", object_id="r1")
    changed = {**published, "attachment": {**first, "location": "https://evil.example.com/x"}}

    def forge(event):
        if event.payload["resource_name"] != "collection":
            return
        announcing = build_request(event.request, {"method": "PUT", "path": PUBLISHED[3:]})
        announcing.matchdict = {"bucket_id": "blog", "collection_id": "published", "id": "r1"}
        announcing.bound_data = event.request.bound_data
        announcing.current_resource_name = "record"
        announcing.notify_resource_event(
            parent_id=DESTINATION, timestamp=1, data=changed, action=ACTIONS.UPDATE, old=published
        )

    signer.registry.registerHandler(forge, (ResourceChanged,))
    try:
        refused = signer.app.patch_json(
            f"/v1{SOURCE}", {"data": {"title": "t"}}, headers=ALICE, status=400
        )
    finally:
        signer.registry.unregisterHandler(forge, (ResourceChanged,))
    assert "Attachment metadata cannot be modified" in refused.json["message"]
