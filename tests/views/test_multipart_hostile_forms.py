"""The multipart endpoint (``POST|DELETE|GET {record-url}/attachment``) and its parser
against hostile bodies and headers (found by, or held against, a review of 2026-12-05)."""

import hashlib
import io

import pytest
import webob
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kinto_attachment.protocols import multipart
from kinto_attachment.state import shared
from kinto_attachment.web.media_types import parse_media_type

from ..conftest import ALICE, BOB, PREVIOUS_URL, attachment_app, cached_app


URL = PREVIOUS_URL
BOUNDARY = "XyZzY"


def part(name, content, filename=None, content_type=None, extra=()):
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    headers = [disposition, *extra]
    if content_type is not None:
        headers.append(f"Content-Type: {content_type}")
    return "\r\n".join(headers).encode("utf-8") + b"\r\n\r\n" + content


def form(*parts, boundary=BOUNDARY, epilogue=b""):
    delimiter = b"--" + boundary.encode("latin-1")
    body = b"".join(delimiter + b"\r\n" + p + b"\r\n" for p in parts)
    return body + delimiter + b"--\r\n" + epilogue


class Chopped:
    """A request body read by pieces of the planned sizes (then ``size``); optionally cut
    (EOF, or an ``OSError`` as a server raises for a client gone) after ``cut`` bytes."""

    def __init__(self, body, sizes=(), size=1 << 30, cut=None, fail=False):
        self.body = io.BytesIO(body if cut is None else body[:cut])
        self.sizes = list(sizes)
        self.size = size
        self.fail = fail
        self.read_bytes = 0

    def read(self, wanted=-1):
        limit = self.sizes.pop(0) if self.sizes else self.size
        if wanted is not None and wanted >= 0:
            limit = min(limit, wanted)
        chunk = self.body.read(limit)
        if not chunk and self.fail:
            raise OSError("client gone")
        self.read_bytes += len(chunk)
        return chunk


def send(kinto, body, url=URL, stream=None, length="known", headers=ALICE, content_type=None):
    """POST ``body`` to ``url/attachment`` through the WSGI app, its body read from ``stream``
    (default: all of it at once); ``length``: the Content-Length (``"known"``: the body's;
    None: chunked, ended by the server)."""
    wsgi_request = webob.Request.blank(
        url + "/attachment",
        method="POST",
        headers={
            **headers,
            "Content-Type": content_type or f"multipart/form-data; boundary={BOUNDARY}",
        },
    )
    wsgi_request.environ["wsgi.input"] = stream or Chopped(body)
    if length is None:
        wsgi_request.environ.pop("CONTENT_LENGTH", None)
        wsgi_request.environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        wsgi_request.environ["wsgi.input_terminated"] = True
    else:
        wsgi_request.environ["CONTENT_LENGTH"] = str(len(body) if length == "known" else length)
    return wsgi_request.get_response(kinto.app.app)


def snapshot(kinto, url=URL):
    """What no refused upload may change: the record, the stored keys and their bytes."""
    record = kinto.app.get(url, headers=ALICE, status=(200, 404)).json
    contents = {}
    for key in kinto.files():
        if kinto.bucket is None:
            with open(f"{kinto.base_path}/{key}", "rb") as f:
                contents[key] = f.read()
        else:
            contents[key] = None
    return record, contents


def assert_kinto_error(response):
    assert response.status_code < 500, (response.status, response.body[:500])
    assert response.content_type == "application/json", response.headers
    error = response.json
    assert error["code"] == response.status_code, error
    assert isinstance(error["errno"], int), error


def assert_attachment_is(kinto, url, content, filename=None):
    """The record's attachment describes ``content``, and the store holds exactly that."""
    meta = kinto.app.get(url, headers=ALICE).json["data"]["attachment"]
    assert meta["hash"] == hashlib.sha256(content).hexdigest()
    assert meta["size"] == len(content)
    assert kinto.read(meta["location"]) == content
    if filename is not None:
        assert meta["filename"] == filename
    served = kinto.app.get(url + "/attachment", headers=ALICE)
    assert served.body == content
    return meta


# --- Findings --------------------------------------------------------------------------------


def test_a_filename_shaped_as_a_data_url_does_not_choose_the_mimetype(kinto_memory):
    """Found by review (2026-12-05).

    It was: without a usable declared type, the mimetype was guessed with
    ``mimetypes.guess_type(filename)``, which reads a name as a URL: ``data:a b/c,d.txt``
    recorded ``a b/c`` (and ``data:text/html,d.txt`` ``text/html`` for a ``.txt``). Fixed:
    guessed from the extension alone."""
    kinto = kinto_memory
    kinto.create_collection()
    for filename in ("data:a b/c,d.txt", "data:é/x y,d.txt", "data:text/html,d.txt"):
        body = form(part("attachment", b"plain text", filename=filename))
        response = send(kinto, body)
        assert response.status_code in (200, 201), response.body
        mimetype = kinto.app.get(URL, headers=ALICE).json["data"]["attachment"]["mimetype"]
        assert parse_media_type(mimetype) == mimetype, (filename, mimetype)
        assert mimetype == "text/plain", (filename, mimetype)


# --- Attacks that held -----------------------------------------------------------------------

#: Bytes that look like pieces of the form's framing, for file contents and field values.
FRAGMENTS = [
    b"\r\n",
    b"\r",
    b"\n",
    b"--",
    b"--" + BOUNDARY.encode(),
    b"\r\n--" + BOUNDARY.encode()[:-1],
    b"\r\n--" + BOUNDARY.encode() + b"X",
    b"\r\n-" + BOUNDARY.encode(),
    b"\x00",
    b"\xff\xfe",
    "é".encode(),
]
contents = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=12)), max_size=12
).map(b"".join)
field_names = st.sampled_from(["attachment"] * 4 + ["data", "permissions", "other", ""])
filenames = st.one_of(
    st.just("a.txt"),
    st.sampled_from([None, "", "x.exe", "../../x.txt", "C:\\dir\\y.txt", "a\x01.txt", "é.json"]),
)
part_types = st.one_of(
    st.none(), st.sampled_from(["text/plain", "", "a/b; ; ;", "text/html", "x" * 300])
)
extra_headers = st.lists(
    st.sampled_from(
        [
            "X-Junk: 1",
            'Content-Disposition: form-data; name="data"',
            "Content-Transfer-Encoding: base64",
            "no colon",
            "Content-Type: multipart/mixed; boundary=" + BOUNDARY,
            ": empty name",
        ]
    ),
    max_size=2,
)
extra_headers = st.one_of(st.just([]), extra_headers)
parts = st.tuples(field_names, contents, filenames, part_types, extra_headers)


@st.composite
def hostile_forms(draw):
    drawn = draw(st.lists(parts, max_size=3))
    body = form(
        *(part(n, c, f, t, x) for n, c, f, t, x in drawn),
        epilogue=draw(st.sampled_from([b"", b"epilogue", b"\r\n--" + BOUNDARY.encode() + b"--"])),
    )
    mutation = draw(st.sampled_from(["none"] * 3 + ["cut", "flip", "insert"]))
    if mutation != "none" and body:
        at = draw(st.integers(0, len(body) - 1))
        if mutation == "cut":
            body = body[:at]
        elif mutation == "flip":
            body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1 :]
        else:
            body = body[:at] + draw(st.sampled_from(FRAGMENTS)) + body[at:]
    return body


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """One app for every example (``cached_app`` needs a test's request: built here)."""
    from ..conftest import Kinto, build_settings, make_app

    base_path = str(tmp_path_factory.mktemp("review-multipart"))
    settings = build_settings("memory", base_path, **{"kinto.attachment.max_size_bytes": "200"})
    kinto = Kinto(make_app(settings), base_path)
    kinto.create_collection()
    kinto.upload(URL, b"previous content", "previous.txt")
    return kinto


@settings(
    max_examples=600,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    body=hostile_forms(),
    sizes=st.lists(st.integers(1, 40), max_size=8),
    chunked=st.booleans(),
)
def test_fuzzed_forms_are_4xx_or_store_exactly_the_recorded_bytes(fuzzed, body, sizes, chunked):
    """Held against a review (2026-12-05).

    forms built of hostile parts (framing fragments in the data, empty/odd names,
    several files, path and control characters in filenames, junk part headers, duplicate
    dispositions), then cut, flipped or with a fragment inserted anywhere; read by random
    piece sizes; with a Content-Length or chunked. Every answer is a 2xx or a Kinto JSON
    4xx; a refusal changes neither the record nor the store; a success records the sha256,
    size and bytes of exactly what is stored and served."""
    kinto = fuzzed
    before = snapshot(kinto)
    response = send(
        kinto, body, stream=Chopped(body, sizes, size=64), length=None if chunked else "known"
    )
    if response.status_code >= 300:
        assert_kinto_error(response)
        assert snapshot(kinto) == before
        return
    meta = kinto.app.get(URL, headers=ALICE).json["data"]["attachment"]
    assert meta == response.json
    content = kinto.read(meta["location"])
    assert meta["hash"] == hashlib.sha256(content).hexdigest()
    assert meta["size"] == len(content)
    assert len(kinto.files()) == 1  # The previous file was replaced, nothing else left.


TRICKY = (
    b"\r\n--" + BOUNDARY.encode()[:-1] + b"X\r\n"
    b"--" + BOUNDARY.encode() + b"-\r\n"
    b"\r\r\n\n--\r\n-"
    + BOUNDARY.encode()
    + b"\r\n"
    + bytes(range(256))
    + b"\r\n--"
    + BOUNDARY.encode()[:3]
)


def test_every_read_split_stores_exactly_the_bytes_sent(tmp_path_factory, request):
    """Held against a review (2026-12-05).

    a file made of pieces of its own delimiter, CR/LF runs and every byte value,
    ending with the start of a delimiter, after a ``data`` field: read in two pieces cut at
    every offset, and by 1, 2, 3 and 7 bytes at every phase, with a Content-Length and
    chunked. Each time the record's sha256/size, the stored bytes and the download are
    exactly the file's, and one file is left. Local files: the parser's splits do not
    depend on the store (S3's writes: ``tests/storage/test_s3.py``)."""
    kinto = cached_app("memory", tmp_path_factory, request)
    kinto.create_collection()
    body = form(
        part("data", b'{"title": "split"}'),
        part("attachment", TRICKY, filename="tricky.txt", content_type="text/plain"),
    )
    feedings = [((cut,), len(body)) for cut in range(1, len(body))]
    feedings += [
        ((phase,) if phase else (), size) for size in (1, 2, 3, 7) for phase in range(size)
    ]
    for index, (first, size) in enumerate(feedings):
        length = None if index % 2 else "known"
        response = send(kinto, body, stream=Chopped(body, first, size), length=length)
        assert response.status_code in (200, 201), (first, size, response.body)
        meta = response.json
        assert meta["hash"] == hashlib.sha256(TRICKY).hexdigest(), (first, size)
        assert meta["size"] == len(TRICKY)
        if index % 25 == 0:
            assert_attachment_is(kinto, URL, TRICKY, "tricky.txt")
    assert_attachment_is(kinto, URL, TRICKY, "tricky.txt")
    assert len(kinto.files()) == 1
    assert kinto.app.get(URL, headers=ALICE).json["data"]["title"] == "split"


def test_a_client_gone_at_any_offset_leaves_the_previous_attachment(with_previous):
    """Held against a review (2026-12-05).

    the body of a valid upload (``data``, ``permissions`` and the file) stops at
    every offset: EOF before the Content-Length, EOF of a chunked body, or the server's
    ``OSError`` (client gone). Each is a 400 in Kinto's format and changes nothing: no new
    file, the record and its previous attachment intact (checked by ``with_previous``); a
    chunked body cut after its closing delimiter is complete (201/200)."""
    kinto = with_previous
    body = form(
        part("data", b'{"title": "new"}'),
        part("permissions", b'{"read": ["system.Everyone"]}'),
        part("attachment", b"new content " * 20, filename="new.txt"),
    )
    complete = body.index(b"--" + BOUNDARY.encode() + b"--") + len(BOUNDARY) + 4
    before = snapshot(kinto)
    # Every offset once (memory, local files: the parser's refusals do not depend on the
    # backends); a sample of them on the others (S3: each refusal costs a round trip).
    every = kinto.bucket is None and not shared.rolls_back(kinto.registry.storage)
    step = 1 if every else 7
    for cut in range(0, complete, step):
        for length, fail in (("known", False), ("known", True), (None, False), (None, True)):
            stream = Chopped(body, cut=cut, fail=fail, size=16)
            response = send(kinto, body, stream=stream, length=length)
            assert response.status_code == 400, (cut, length, fail, response.body)
            assert_kinto_error(response)
        if cut % 50 == 0:
            assert snapshot(kinto) == before
    assert snapshot(kinto) == before


class Unreadable:
    """A body that must not be read."""

    read_bytes = 0

    def read(self, *args):
        raise AssertionError("the body must not be read")


@pytest.mark.parametrize(
    "url,headers,status",
    [
        ("/v1/buckets/nobucket/collections/c/records/r1", ALICE, 403),
        ("/v1/buckets/blog/collections/nope/records/r1", ALICE, 404),
        (URL, BOB, 403),
        ("/v1/buckets/blog/collections/articles/records/bobs", BOB, 403),
        (URL, {}, 401),
        ("/v1/buckets/blog/collections/articles/records/a.b", ALICE, 400),
        (URL, {**ALICE, "If-Match": "1"}, 400),
        (URL, {**ALICE, "If-None-Match": '*, "1"'}, 400),
        (URL, {**ALICE, "Content-Type": "application/json"}, 400),
        (URL, {**ALICE, "Content-Type": "multipart/form-data"}, 400),
        (URL, {**ALICE, "Content-Type": "multipart/form-data; boundary=" + "b" * 300}, 400),
    ],
    ids=[
        "no-bucket",
        "no-collection",
        "not-writable",
        "not-creatable",
        "anonymous",
        "bad-record-id",
        "bad-if-match",
        "bad-if-none-match",
        "not-multipart",
        "no-boundary",
        "long-boundary",
    ],
)
def test_refusals_known_before_the_body_do_not_read_it(kinto_memory, url, headers, status):
    """Held against a review (2026-12-05).

    what can be refused from the URL and headers (missing parents, permissions,
    authentication, invalid ids, preconditions and Content-Type) is refused without reading a
    byte of the body, in Kinto's format, and leaves nothing."""
    kinto = kinto_memory
    kinto.create_collection()
    kinto.upload(URL, b"previous", "previous.txt")
    before = snapshot(kinto)
    wsgi_request = webob.Request.blank(
        url + "/attachment",
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **headers},
    )
    wsgi_request.environ["wsgi.input"] = Unreadable()
    wsgi_request.environ["CONTENT_LENGTH"] = "1000"
    response = wsgi_request.get_response(kinto.app.app)
    assert response.status_code == status, response.body
    assert_kinto_error(response)
    assert snapshot(kinto) == before


def test_simultaneous_uploads_to_one_record_leave_one_consistent_file(
    backend, tmp_path_factory, request
):
    """Held against a review (2026-12-05).

    three uploads of different contents to one record at once (two to a record that
    does not exist yet), their bodies arriving by small pieces so that they overlap. Each is a
    201/200 or a 412 (created meanwhile); afterwards the record names one of the contents,
    with its sha256 and size, the store holds exactly that file, and it is served."""
    import threading

    kinto = cached_app(backend, tmp_path_factory, request)
    kinto.create_collection()
    contents = [bytes([65 + i]) * (3000 + i) for i in range(3)]
    barrier = threading.Barrier(len(contents))
    answers = [None] * len(contents)

    class Slow(Chopped):
        def read(self, wanted=-1):
            if self.read_bytes == 0:
                barrier.wait(10)
            return super().read(wanted)

    def upload(i):
        body = form(part("attachment", contents[i], filename=f"f{i}.txt"))
        answers[i] = send(kinto, body, stream=Slow(body, size=97), length=None if i else "known")

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(len(contents))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    statuses = [a.status_code for a in answers]
    assert all(s in (200, 201, 412) for s in statuses), [a.body for a in answers]
    assert statuses.count(201) == 1, statuses
    meta = kinto.app.get(URL, headers=ALICE).json["data"]["attachment"]
    content = next(c for c in contents if hashlib.sha256(c).hexdigest() == meta["hash"])
    assert_attachment_is(kinto, URL, content)
    assert len(kinto.files()) == 1, kinto.files()


def _fields_spend(body):
    """The bytes of ``body`` that the reader counts against ``FIELDS_LIMIT`` (part headers,
    text fields)."""
    reader = multipart.FormReader(
        BOUNDARY.encode(), "attachment", ("data", "permissions"), lambda *a: io.BytesIO()
    )
    reader.feed(body)
    reader.close()
    return multipart.FIELDS_LIMIT - reader._budget


def test_a_form_within_both_limits_is_not_refused_for_its_framing(tmp_path_factory, request):
    """Found by review (2026-12-05).

    It was: a form whose file is ``max_size_bytes`` and whose fields fill ``FIELDS_LIMIT``
    was taken chunked (201) and refused with its ``Content-Length`` (413, naming a file
    within the limit): the pre-check left no room for the framing, which neither limit
    counts. Fixed: it leaves some."""
    kinto = attachment_app(tmp_path_factory, request, max_size_bytes="100")
    file_part = part("attachment", b"f" * 100, filename="a.txt")

    def body_with(size):
        return form(part("data", b'{"x": "' + b"a" * size + b'"}'), file_part)

    probe = 1000
    size = probe + multipart.FIELDS_LIMIT - _fields_spend(body_with(probe))
    body = body_with(size)
    assert _fields_spend(body) == multipart.FIELDS_LIMIT
    chunked = send(kinto, body, length=None)
    assert chunked.status_code == 201, chunked.body
    kinto.app.delete(URL, headers=ALICE)
    with_length = send(kinto, body)
    assert with_length.status_code == 201, (len(body), with_length.body)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_file_of_exactly_max_size_is_stored_one_more_byte_is_413(
    chunked, tmp_path_factory, request
):
    """Held against a review (2026-12-05).

    with ``max_size_bytes = 100``, a file of 100 bytes (read byte by byte) is stored
    whole; one of 101 bytes, read by 1, 7 or 64 bytes, is a 413 that leaves the 100-byte file
    and its record as they were, with a Content-Length and chunked."""
    kinto = attachment_app(tmp_path_factory, request, max_size_bytes="100")
    length = None if chunked else "known"
    exact = bytes(range(100))
    body = form(part("attachment", exact, filename="exact.txt"))
    response = send(kinto, body, stream=Chopped(body, size=1), length=length)
    assert response.status_code == 201, response.body
    before = snapshot(kinto)
    over = form(part("attachment", exact + b"!", filename="over.txt"))
    for size in (1, 7, 64):
        response = send(kinto, over, stream=Chopped(over, size=size), length=length)
        assert response.status_code == 413, response.body
        assert_kinto_error(response)
        assert response.json["errno"] == 113
        assert snapshot(kinto) == before
    assert_attachment_is(kinto, URL, exact, "exact.txt")


def test_s3_refusals_after_a_part_was_sent_leave_no_unfinished_upload(tmp_path_factory, request):
    """Held against a review (2026-12-05).

    on S3, a file larger than one part (5 MiB) refused midway, once a part of its
    multipart upload was sent: over ``max_size_bytes`` (413), the client gone (400), a bad
    ``data`` field after the file (400). Each aborts the multipart upload: no object, no
    unfinished upload, the previous attachment intact."""
    kinto = cached_app(
        "memory",
        tmp_path_factory,
        request,
        blobs="s3",
        **{"kinto.attachment.max_size_bytes": str(6 * 1024 * 1024)},
    )
    kinto.create_collection()
    kinto.upload(URL, b"previous", "previous.txt")
    before = snapshot(kinto)
    big = b"b" * (6 * 1024 * 1024 + 1)
    fits = big[:-2]
    cases = [
        (form(part("attachment", big, filename="big.txt")), {}, 413),
        (form(part("attachment", fits, filename="fits.txt")), {"cut": 5_500_000}, 400),
        (form(part("attachment", fits, filename="fits.txt"), part("data", b"[1]")), {}, 400),
    ]
    for body, cut, status in cases:
        response = send(kinto, body, stream=Chopped(body, size=1 << 20, **cut))
        assert response.status_code == status, response.body
        assert_kinto_error(response)
        assert snapshot(kinto) == before
    assert kinto.app.get(URL + "/attachment", headers=ALICE).body == b"previous"


@pytest.fixture
def with_events(tmp_path_factory):
    """Kinto with events to a webhook (nothing listens: the dispatcher is stopped, events
    stay in the outbox), and the blog/articles collection."""
    import base64
    import os

    from ..conftest import Kinto, build_settings, flush, make_app

    base_path = str(tmp_path_factory.mktemp("review-multipart-events"))
    settings = build_settings(
        "memory",
        base_path,
        **{
            "kinto.attachment.events.destinations": "webhook",
            "kinto.attachment.events.url_secret": "a-review-secret-of-enough-length",
            "kinto.attachment.events.webhook.url": "http://127.0.0.1:9/hook",
            "kinto.attachment.events.webhook.secret": "whsec_"
            + base64.b64encode(os.urandom(32)).decode(),
            "kinto.http_host": "localhost",
        },
    )
    kinto = Kinto(make_app(settings), base_path)
    kinto.registry.attachment_dispatcher.stop()
    kinto.create_collection()
    yield kinto
    kinto.registry.attachment_dispatcher.stop()
    flush(kinto.app)


def _legacy_record(kinto, record_id, attachment):
    """A record whose ``attachment`` kinto-attachment let a client write (any JSON value),
    writable by ALICE."""
    import transaction

    with transaction.manager:
        kinto.registry.storage.create(
            resource_name="record",
            parent_id="/buckets/blog/collections/articles",
            obj={"id": record_id, "attachment": attachment},
        )
        kinto.registry.permission.add_principal_to_ace(
            f"/buckets/blog/collections/articles/records/{record_id}",
            "write",
            "system.Authenticated",
        )
    return kinto.record_url(record_id)


@pytest.mark.parametrize("legacy", ["a string", ["a", "list"], 42, True], ids=repr)
def test_delete_of_a_legacy_non_object_attachment_is_not_a_500(with_events, legacy):
    """Found by review (2026-12-05).

    It was: with events configured, deleting the attachment (or the record) of a record
    whose ``attachment`` an old client set to a string, a list, a number was a 500 (the
    event read it as an object). Fixed: such a value is no attachment: deleted, no event."""
    kinto = with_events
    url = _legacy_record(kinto, "legacy", legacy)
    of_attachment = kinto.app.delete(url + "/attachment", headers=ALICE, status="*")
    of_record = kinto.app.delete(
        _legacy_record(kinto, "legacy2", legacy), headers=ALICE, status="*"
    )
    assert (of_attachment.status_int, of_record.status_int) == (204, 200)
    assert kinto.app.get(url, headers=ALICE).json["data"]["attachment"] is None


@pytest.mark.parametrize(
    "content_type,boundary",
    [
        ("multipart/form-data;boundary=XyZ", "XyZ"),
        ('multipart/form-data; boundary="a b c"', "a b c"),
        ('multipart/form-data; boundary="a;b=c"', "a;b=c"),
        ('multipart/form-data; boundary="ends with space "', "ends with space "),
        ("multipart/form-data; boundary=XyZ; charset=utf-8", "XyZ"),
        ("Multipart/Form-Data; BOUNDARY=XyZ", "XyZ"),
        ("multipart/form-data;\tboundary=XyZ", "XyZ"),
        ("multipart/form-data; boundary=" + "'()+_,-./:=?" * 5, "'()+_,-./:=?" * 5),
    ],
    ids=["no-space", "spaces", "semicolon", "trailing-space", "charset", "case", "tab", "rfc-70"],
)
def test_content_type_variants_store_exactly_the_file(kinto_memory, content_type, boundary):
    """Held against a review (2026-12-05).

    boundaries quoted with spaces, ``;`` and ``=`` in them, a trailing space, other
    parameters, another case, a tab, 60 of RFC 2046's odd characters; the file contains the
    boundary without its leading dashes and CRLF: stored byte for byte."""
    kinto = kinto_memory
    kinto.create_collection()
    content = b"x" + boundary.encode() + b"\r\n" + boundary.encode() + b"--\r\n-"
    body = form(part("attachment", content, filename="v.txt"), boundary=boundary)
    response = send(kinto, body, content_type=content_type)
    assert response.status_code == 201, response.body
    assert_attachment_is(kinto, URL, content, "v.txt")


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_methods_the_attachment_url_does_not_serve_are_405_unread(kinto_memory, method):
    """Held against a review (2026-12-05).

    ``PUT`` and ``PATCH`` of ``{record-url}/attachment`` (kinto-attachment serves
    ``POST`` only) are Kinto's JSON 405, the body unread, nothing written."""
    kinto = kinto_memory
    kinto.create_collection()
    wsgi_request = webob.Request.blank(
        URL + "/attachment",
        method=method,
        headers={**ALICE, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    wsgi_request.environ["wsgi.input"] = Unreadable()
    wsgi_request.environ["CONTENT_LENGTH"] = "100"
    response = wsgi_request.get_response(kinto.app.app)
    assert response.status_code == 405
    assert_kinto_error(response)
    assert kinto.files() == []
    kinto.app.get(URL, headers=ALICE, status=404)
