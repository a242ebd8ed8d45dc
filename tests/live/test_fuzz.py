"""Fuzzing every route of the plugin on a live waitress server, with Hypothesis.

Requests are written byte for byte on a socket (no client library to normalise them): generated
headers, query strings, multipart envelopes, tus headers, ``/data/files`` parameters and batch
sub-requests, with NUL and control characters, ids longer than a file name and
``X-HTTP-Method-Override`` values. Two servers answer them: the shipped ``config/kinto.ini``
(memory) and ``config/postgresql.ini`` with ``folder = {bucket_id}/{collection_id}`` (and no
grace for replaced files), where a NUL or a long id used to be a 5xx. After each request:

- no 5xx, except ``503`` "Too many transfers" (with ``Retry-After``); the local store of these
  servers does not fail, so its ``503`` (and Kinto's "temporary unavailable") is a bug here;
- a refused upload (4xx, or a connection the server dropped) leaves no new file under
  ``base_path`` and the record's previous attachment intact (same hash, same bytes on disk);
- the record's ``attachment`` always describes the file it points to.

Profiles: ``bounded`` (the default, for ``make test``: few examples, derandomised) and ``long``
(``make fuzz``, or ``HYPOTHESIS_PROFILE=long``: many examples, random seeds). Known-bad inputs
are pinned with ``@example`` so that the bounded profile always tries them.
"""

import base64
import contextlib
import dataclasses
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import time
import uuid
from urllib.parse import quote, urlsplit

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ..support.live import (
    ALICE,
    BIN,
    COMMAND_TIMEOUT,
    REQUEST_TIMEOUT,
    ROOT,
    PortTaken,
    create_collection,
    free_port,
    live_config,
    running_server,
    started,
)


pytestmark = pytest.mark.live

settings.register_profile(
    "bounded",
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=1500,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Applied per test (not loaded globally, so other test modules keep Hypothesis's defaults).
FUZZ = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "bounded"))

BUCKET, COLLECTION, RECORD = "fuzz", "c", "r"
COLLECTION_PATH = f"/v1/buckets/{BUCKET}/collections/{COLLECTION}"
RECORD_PATH = f"{COLLECTION_PATH}/records/{RECORD}"
#: Ids longer than a file name: a folder segment of their own on the PostgreSQL server.
LONG_BUCKET, LONG_COLLECTION = "b" * 301, "c" * 300
LONG_COLLECTION_PATH = f"/v1/buckets/{LONG_BUCKET}/collections/{LONG_COLLECTION}"
#: Record ids: a new one of each length (the longest too long for a link, a 400).
RECORD_IDS = {"new": 4, "long": 300, "too-long": 2100}
#: A record id with a NUL, as a URL carries it: no such record can exist (Kinto's own record
#: view refuses it with a 400, which ``assert_untouched`` cannot tell from a record).
NUL_RECORD = "a%00b"
BASELINE = bytes(range(256)) * 3 + b"baseline"
KEEP_ID, KEEP_BYTES = "keep", b"kept data file"
#: Where ``/data/files`` keeps its files (``kinto_attachment.state.data_file_entries``).
DATA_FILES = ".data-files/"
AUTH = "Basic " + base64.b64encode(":".join(ALICE).encode()).decode()
SOCKET_TIMEOUT = 15
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


# The live server and its state.


POSTGRESQL_CONFIG = ROOT / "config" / "postgresql.ini"
#: What the PostgreSQL server adds to ``config/postgresql.ini``: a folder per collection, and
#: replaced files deleted at once, as ``config/kinto.ini`` does (kept for a grace, they would
#: be deleted by the collector in the middle of later examples, which tell a refusal by the
#: files it leaves or takes).
EXTRA_LINES = (
    "kinto.attachment.folder = {bucket_id}/{collection_id}",
    "kinto.attachment.gc.replaced_grace_seconds = 0",
)


def _substitute(text, pattern, replacement):
    text, count = re.subn(pattern, lambda _: replacement, text, flags=re.MULTILINE)
    assert count == 1, f"{POSTGRESQL_CONFIG}: {count} lines match {pattern!r}"
    return text


@contextlib.contextmanager
def postgresql_server(folder, pg_url):
    """``config/postgresql.ini`` on a free port, ``pg_url`` (migrated) and
    :data:`EXTRA_LINES`."""
    base_path = folder / "attachments"
    base_path.mkdir()
    ini = folder / "postgresql.ini"
    for attempt in range(3):
        # The configuration names the server's own address (base_url): port known beforehand.
        port = free_port()
        text = live_config(port, base_path, template=POSTGRESQL_CONFIG)
        text = _substitute(text, r"^pg_url = .*$", "pg_url = " + pg_url.replace("%", "%%"))
        text = _substitute(
            text,
            r"^kinto\.attachment\.extensions = any$",
            "\n".join(["kinto.attachment.extensions = any", *EXTRA_LINES]),
        )
        ini.write_text(text)
        if attempt == 0:
            _migrate(folder, ini)
        with started(folder, ini, port, base_path) as live:
            try:
                live.wait_bound()
            except PortTaken:
                if attempt < 2:
                    continue
                raise
            live.wait_ready()
            yield live
            return


def _migrate(folder, ini):
    result = subprocess.run(
        [str(BIN / "kinto"), "migrate", "--ini", str(ini)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=COMMAND_TIMEOUT,
    )
    assert result.returncode == 0, result


@pytest.fixture(
    scope="module", params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)]
)
def server(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    if request.param == "memory":
        running = running_server(folder)
    else:
        running = postgresql_server(folder, request.getfixturevalue("pg_url"))
    with running as live:
        create_collection(live, BUCKET, COLLECTION)
        create_collection(live, LONG_BUCKET, LONG_COLLECTION)
        yield live


@dataclasses.dataclass(frozen=True)
class Snapshot:
    files: tuple
    attachment: dict | None
    keep: bytes | None


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _attachment(server, path=RECORD_PATH):
    response = requests.get(server.url[:-3] + path, auth=ALICE, timeout=REQUEST_TIMEOUT)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()["data"].get("attachment")


def _kept(server):
    response = requests.get(
        f"http://127.0.0.1:{server.port}/data/files/{KEEP_ID}", timeout=REQUEST_TIMEOUT
    )
    return response.content if response.status_code == 200 else None


def ensure_baseline(server):
    """Record ``r`` holds BASELINE and the data file ``keep`` exists; their snapshot."""
    attachment = _attachment(server)
    if attachment is None or attachment["hash"] != _sha256(BASELINE):
        response = requests.post(
            server.url[:-3] + RECORD_PATH + "/attachment",
            files={"attachment": ("base.bin", BASELINE, "application/octet-stream")},
            auth=ALICE,
            timeout=REQUEST_TIMEOUT,
        )
        assert response.status_code in (200, 201), response.text  # Replaced, or created.
    if _kept(server) != KEEP_BYTES:
        response = requests.post(
            f"http://127.0.0.1:{server.port}/data/files?id={KEEP_ID}",
            data=KEEP_BYTES,
            timeout=REQUEST_TIMEOUT,
        )
        assert response.status_code == 200, response.text
    return snapshot(server)


def snapshot(server):
    return Snapshot(tuple(server.files()), _attachment(server), _kept(server))


# Failures: one exception type per route and status, so Hypothesis reports them apart.

_FAILURES = {}


def failure(route, what):
    key = f"{route}: {what}"
    if key not in _FAILURES:
        name = "Fuzz_" + "".join(c if c.isalnum() else "_" for c in key)
        _FAILURES[key] = type(name, (AssertionError,), {})
    return _FAILURES[key]


def _log_tail(server):
    """The server's last error: its message and the innermost frames of its traceback."""
    output = server.output()
    start = output.rfind(" ERROR ")
    if start < 0:
        return "(no error logged)"
    lines = [line for line in output[start:].splitlines() if "[request.summary]" not in line]
    return _short("\n".join(lines[:1] + lines[-7:]))


def _short(text):
    """Long runs of one character abbreviated: ``'9' * 5000`` reads ``9{x5000}``."""
    return re.sub(r"(.)\1{39,}", lambda m: f"{m.group(1)}{{x{len(m.group(0))}}}", str(text))


@dataclasses.dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)


#: The one 5xx a healthy server may answer: its transfer budget is spent (``/data/files``).
BUSY = b"Too many transfers in progress"


def assert_not_server_error(server, route, reply, request_repr):
    if reply is None or reply.status < 500:
        return
    if reply.status == 503 and reply.headers.get("Retry-After") and BUSY in reply.body:
        return
    raise failure(route, reply.status)(
        f"{route} answered {reply.status} to {_short(request_repr)}\n"
        f"body: {reply.body[:300]!r}\n"
        f"server log (tail):\n{_log_tail(server)}"
    )


def assert_consistent(server, route, record_path=RECORD_PATH):
    """The record's attachment describes a file that exists and has its bytes."""
    attachment = _attachment(server, record_path)
    if attachment is None:
        return
    path = server.path_of(attachment["location"])
    if not path.is_file() or _sha256(path.read_bytes()) != attachment["hash"]:
        raise failure(route, "inconsistent attachment")(f"{attachment} vs {path}")


def assert_untouched(server, route, before, request_repr, record_paths=()):
    """After a refusal: no new file, the attachment and the kept data file as they were."""
    request_repr = _short(request_repr)
    deadline = time.monotonic() + 0.5  # an after-commit cleanup may still be running
    while True:
        after = snapshot(server)
        new = sorted(set(after.files) - set(before.files))
        if not new and after == before or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if new:
        raise failure(route, "refusal left files")(f"{request_repr} left {new}")
    if after.attachment != before.attachment:
        raise failure(route, "refusal changed attachment")(
            f"{request_repr}: {before.attachment} became {after.attachment}"
        )
    if after.keep != before.keep:
        raise failure(route, "refusal changed data file")(f"{request_repr}")
    if before.attachment is not None:
        path = server.path_of(before.attachment["location"])
        if not path.is_file() or path.read_bytes() != BASELINE:
            raise failure(route, "refusal damaged previous file")(f"{request_repr}")
    for path in record_paths:
        if _attachment_or_missing(server, path) is not MISSING:
            raise failure(route, "refusal created a record")(f"{request_repr}: {path}")
    # Files may only disappear after a success (replacement), never after a refusal; but the
    # server's collector deletes the files of expired data files at any time (``keep`` is
    # checked above).
    deleted = sorted(
        name for name in set(before.files) - set(after.files) if not name.startswith(DATA_FILES)
    )
    if deleted:
        raise failure(route, "refusal deleted files")(f"{request_repr}: {deleted}")


MISSING = object()


def _attachment_or_missing(server, path):
    response = requests.get(server.url[:-3] + path, auth=ALICE, timeout=REQUEST_TIMEOUT)
    return MISSING if response.status_code in (403, 404) else response


# Raw HTTP.


def send(server, method, target, headers=(), body=b"", framing="length", auth=True):
    """Write the request as given on a fresh connection; its Reply, or None if the server
    closed the connection without answering.

    ``framing``: ``"length"`` (a true Content-Length), ``"none"``, ``"chunked"``, or an
    integer: a Content-Length that lies by that many bytes (a longer one is followed by a
    half-close, as a client that gave up).
    """
    lines = [f"{method} {target} HTTP/1.1", f"Host: localhost:{server.port}", "Connection: close"]
    if auth:
        lines.append(f"Authorization: {AUTH}")
    # Header values stay on their line (a raw CR or LF would only start another header).
    lines += [
        f"{name}: {value.replace(chr(13), ' ').replace(chr(10), ' ')}" for name, value in headers
    ]
    payload = body
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}")
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7])
            for i in range(0, len(body), 7)
        )
        payload += b"0\r\n\r\n"
    elif isinstance(framing, int):
        lines.append(f"Content-Length: {max(len(body) + framing, 0)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + payload
    with socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(raw)
            if isinstance(framing, int) and framing > 0:
                sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock, method=method)
        try:
            response.begin()
            data = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, http.client.IncompleteRead):
            return None
        return Reply(response.status, response.headers, data)


def b64(text):
    return base64.b64encode(text.encode()).decode()


CHUNK_TYPE = "application/offset+octet-stream"


def path_of_url(url):
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


# Strategies.

#: What may stand in a header value: printable Latin-1 (no CR, LF or other controls).
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=40,
)
#: Header values with control characters (NUL included; CR and LF become spaces in ``send``):
#: servers refuse most of them (waitress: 400); none may become a 5xx.
control_text = st.text(
    alphabet=st.characters(max_codepoint=0xFF, blacklist_categories=("Cs",)), max_size=20
)
huge_digits = st.integers(20, 6000).map(lambda n: "9" * n)
digits = st.one_of(
    st.integers(0, 2000).map(str),
    st.integers(0, 2**80).map(str),
    huge_digits,
    st.sampled_from(["-1", "+5", " 7", "0x10", "1e3", "１２", "²", ""]),
    header_text,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
deep_json = st.integers(1, 3000).map(lambda n: '{"a":' * n + "1" + "}" * n) | st.integers(
    1, 3000
).map(lambda n: '{"a":' + "[" * n + "]" * n + "}")
#: JSON that Python reads and PostgreSQL or Kinto cannot store or read: NUL, lone surrogates,
#: NaN and Infinity, numbers past a double, nesting past Kinto's recursion.
unstorable_json = st.sampled_from(
    [
        '{"a": "x\\u0000y"}',
        '{"a\\u0000": 1}',
        '{"read": ["\\u0000"]}',
        '{"a": "\\ud800"}',
        '{"read": ["\\udfff"]}',
        '{"a": NaN}',
        '{"a": -Infinity}',
        '{"a": 1e400}',
        '{"a": 1' + "0" * 400 + "}",
        '{"a":' * 470 + "1" + "}" * 470,
    ]
)
json_field = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(json.dumps),
    json_values.map(json.dumps),
    deep_json,
    unstorable_json,
    st.text(max_size=30),
)
file_names = st.one_of(
    st.sampled_from(
        [
            "a.txt",
            "x.html",
            "y.svg",
            ".bin",
            "a/../b.txt",
            "..",
            "C:\\x\\y.exe",
            "",
            "a\x00b.txt",
            "\x00",
            "\x01\x1f\x7f.txt",
            "é\x85\u2028.txt",
            "n" * 300 + "." + "e" * 200,
        ]
    ),
    st.text(max_size=30),
)
charsets = st.sampled_from(["utf-8", "UTF-8", "iso-8859-1", "idna", "utf-16", "x-unknown", ""])
filename_params = st.one_of(
    file_names.map(lambda n: f'filename="{n}"'),
    st.tuples(charsets, file_names).map(lambda t: f"filename*={t[0]}''{quote(t[1])}"),
    st.just(None),
    header_text,
)
declared_types = st.one_of(
    st.sampled_from(
        [
            None,
            "text/plain",
            "text/html,",
            "image/svg+xml",
            "application/octet-stream",
            "",
            ";",
            "text/html; charset=utf-8",
            "*/*",
            "multipart/form-data",
        ]  # fmt: skip
    ),
    header_text,
)
boundary_chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'()+_,-./:=? "
boundaries = st.one_of(
    st.text(alphabet=boundary_chars, min_size=1, max_size=70),
    st.integers(200, 400).map(lambda n: "b" * n),
    header_text,
)
content_types = st.sampled_from(
    [
        "multipart/form-data; boundary={b}",
        'multipart/form-data; boundary="{b}"',
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/mixed; boundary={b}",
        "application/json",
        "MULTIPART/FORM-DATA; BOUNDARY={b}; charset=utf-8",
        "multipart/form-data; boundary={b}; boundary=other",
    ]
)
framings = st.one_of(st.just("length"), st.integers(-20, 20), st.sampled_from(["none", "chunked"]))


def build_multipart(boundary, filename_param, part_type, content, data, permissions, extra):
    b = boundary.encode("latin-1", "replace")
    parts = []
    if filename_param is not ...:
        disposition = 'form-data; name="attachment"'
        if filename_param is not None:
            disposition += "; " + filename_param
        headers = [f"Content-Disposition: {disposition}"]
        if part_type is not None:
            headers.append(f"Content-Type: {part_type}")
        parts.append((headers, content))
    for name, value in (("data", data), ("permissions", permissions), (extra, "x")):
        if name and value is not None:
            parts.append(
                ([f'Content-Disposition: form-data; name="{name}"'], value.encode("utf-8"))
            )
    body = b""
    for headers, value in parts:
        head = "".join(h + "\r\n" for h in headers).encode("utf-8", "replace")
        body += b"--" + b + b"\r\n" + head + b"\r\n" + value + b"\r\n"
    return body + b"--" + b + b"--\r\n"


# Multipart uploads.


def new_record_id(kind):
    """A new record id of :data:`RECORD_IDS`'s length for ``kind``."""
    return ("new-" + uuid.uuid4().hex).ljust(RECORD_IDS[kind], "x")


MULTIPART = "multipart/form-data; boundary={b}"


@FUZZ
@given(
    record=st.sampled_from([RECORD, "new", "long", "too-long", "long-folder", NUL_RECORD]),
    filename_param=st.one_of(filename_params, st.just(...)),
    part_type=declared_types,
    content=st.binary(max_size=300),
    data=json_field,
    permissions=json_field,
    extra=st.sampled_from([None, None, "other", "attachment", "fichierjoint"]),
    boundary=boundaries,
    content_type=content_types,
    truncate=st.none() | st.integers(0, 2000),
    framing=framings,
)
@example(RECORD, 'filename="a.txt"', "text/plain", b"x", None, None, None, "b" * 300,
         "multipart/form-data; boundary={b}", None, "length")  # fmt: skip
@example(RECORD, "filename*=idna''abc", "text/plain", b"x", None, None, None, "xyz",
         "multipart/form-data; boundary={b}", None, "length")  # fmt: skip
@example(RECORD, 'filename="a.txt"', "text/html,", b"<p>", None, None, None, "xyz",
         "multipart/form-data; boundary={b}", None, "length")  # fmt: skip
@example(RECORD, 'filename="a.txt"', "text/plain", b"x", '{"a":' * 2000 + "1" + "}" * 2000,
         None, None, "xyz", "multipart/form-data; boundary={b}", None, "length")  # fmt: skip
@example(RECORD, 'filename="a.txt"', "text/plain", b"x" * 100, None, None, None, "xyz",
         "multipart/form-data; boundary={b}", None, 20)  # fmt: skip
@example(RECORD, 'filename="a\x00b.txt"', None, b"x", None, None, None, "xyz", MULTIPART, None,
         "length")  # fmt: skip
@example(RECORD, 'filename="a.txt"', None, b"x", '{"a": "x\\u0000y"}', None, None, "xyz",
         MULTIPART, None, "length")  # fmt: skip
@example(RECORD, 'filename="a.txt"', None, b"x", None, '{"read": ["\\u0000"]}', None, "xyz",
         MULTIPART, None, "length")  # fmt: skip
@example(RECORD, 'filename="a.txt"', None, b"x", '{"a": "\\ud800"}', None, None, "xyz",
         MULTIPART, None, "length")  # fmt: skip
@example(RECORD, 'filename="a.txt"', None, b"x", '{"a":' * 470 + "1" + "}" * 470, None, None,
         "xyz", MULTIPART, None, "length")  # fmt: skip
@example(RECORD, ..., None, b"x", None, None, "fichierjoint", "xyz", MULTIPART, None,
         "length")  # fmt: skip
@example("long-folder", 'filename="a.txt"', None, b"x", None, None, None, "xyz", MULTIPART,
         None, "length")  # fmt: skip
@example("long", 'filename="a.txt"', None, b"x", None, None, None, "xyz", MULTIPART, None,
         "length")  # fmt: skip
@example("too-long", 'filename="a.txt"', None, b"x", None, None, None, "xyz", MULTIPART, None,
         "length")  # fmt: skip
@example(NUL_RECORD, 'filename="a.txt"', None, b"x", None, None, None, "xyz", MULTIPART, None,
         "length")  # fmt: skip
def test_post_attachment(
    server, record, filename_param, part_type, content, data, permissions, extra, boundary,
    content_type, truncate, framing,
):  # fmt: skip
    before = ensure_baseline(server)
    collection = COLLECTION_PATH
    if record == "long-folder":
        collection, record = LONG_COLLECTION_PATH, "new"
    if record in RECORD_IDS:
        record = new_record_id(record)
    path = f"{collection}/records/{record}"
    fresh = [path] if record not in (RECORD, NUL_RECORD) else []
    body = build_multipart(boundary, filename_param, part_type, content, data, permissions, extra)
    if truncate is not None:
        body = body[:truncate]
    headers = [("Content-Type", content_type.replace("{b}", boundary))]
    request_repr = f"POST {path}/attachment {headers} framing={framing!r} body={body[:300]!r}"
    reply = send(server, "POST", path + "/attachment", headers, body, framing=framing)
    assert_not_server_error(server, "POST attachment", reply, request_repr)
    if reply is None or reply.status >= 300:
        assert_untouched(server, "POST attachment", before, request_repr, fresh)
    else:
        # kinto-attachment's statuses: 200 when the record existed, 201 when it was created.
        assert reply.status == (200 if record == RECORD else 201), request_repr
        attachment = reply.json()
        stored = server.path_of(attachment["location"])
        assert stored.is_file(), request_repr
        assert _sha256(stored.read_bytes()) == attachment["hash"], request_repr
        assert _attachment(server, path) == attachment, request_repr
    assert_consistent(server, "POST attachment")


# DELETE, GET and HEAD of the attachment.


@FUZZ
@given(
    record=st.sampled_from([RECORD, "missing", NUL_RECORD]),
    headers=st.lists(
        st.tuples(st.sampled_from(["If-Match", "If-None-Match", "X-Foo"]), header_text), max_size=2
    ),  # fmt: skip
    auth=st.booleans(),
)
@example(NUL_RECORD, [], True)
def test_delete_attachment(server, record, headers, auth):
    before = ensure_baseline(server)
    path = f"{COLLECTION_PATH}/records/{record}/attachment"
    request_repr = f"DELETE {path} {headers} auth={auth}"
    reply = send(server, "DELETE", path, headers, framing="none", auth=auth)
    assert_not_server_error(server, "DELETE attachment", reply, request_repr)
    if reply is None or reply.status >= 300:
        assert_untouched(server, "DELETE attachment", before, request_repr)
    else:
        assert reply.status == 204, request_repr
        if record == RECORD:
            assert _attachment(server) is None, request_repr
            assert not server.path_of(before.attachment["location"]).exists(), request_repr


range_specs = st.one_of(
    st.tuples(st.none() | st.integers(0, 2000), st.none() | st.integers(0, 2000)).map(
        lambda t: f"{'' if t[0] is None else t[0]}-{'' if t[1] is None else t[1]}"
    ),
    huge_digits.map(lambda d: f"0-{d}"),
    huge_digits.map(lambda d: f"-{d}"),
    huge_digits.map(lambda d: f"{d}-"),
    header_text,
)
ranges = st.one_of(
    st.none(),
    st.lists(range_specs, min_size=1, max_size=3).map(lambda specs: "bytes=" + ",".join(specs)),
    st.sampled_from(["bytes=", "bytes 0-1", "items=0-1", "bytes=1-0", "bytes=--1"]),
    header_text,
)
etags = st.one_of(
    st.none(),
    st.just("BASELINE"),
    st.just('"BASELINE"'),
    st.just("*"),
    st.just('W/"BASELINE"'),
    header_text,
)
http_dates = st.one_of(
    st.none(),
    st.sampled_from(["Thu, 01 Jan 1970 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "0"]),
    st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")),
    header_text,
)


@FUZZ
@given(
    method=st.sampled_from(["GET", "HEAD"]),
    range_=ranges,
    if_none_match=etags,
    if_range=st.one_of(etags, http_dates),
    if_modified_since=http_dates,
)
@example("GET", "bytes=0-" + "9" * 5000, None, None, None)
@example("GET", "bytes=" + "9" * 5000 + "-", None, None, None)
def test_get_attachment(server, method, range_, if_none_match, if_range, if_modified_since):
    before = ensure_baseline(server)
    sha = before.attachment["hash"]
    headers = [
        (name, value.replace("BASELINE", sha))
        for name, value in (
            ("Range", range_),
            ("If-None-Match", if_none_match),
            ("If-Range", if_range),
            ("If-Modified-Since", if_modified_since),
        )
        if value is not None
    ]
    path = RECORD_PATH + "/attachment"
    request_repr = f"{method} {path} {headers}"
    reply = send(server, method, path, headers, framing="none")
    assert_not_server_error(server, f"{method} attachment", reply, request_repr)
    assert reply is not None, request_repr
    assert reply.status in (200, 206, 304, 400, 412, 416), (reply.status, request_repr)
    if method == "GET" and reply.status == 200:
        assert reply.body == BASELINE, request_repr
    if method == "GET" and reply.status == 206:
        unit, _, spec = reply.headers["Content-Range"].partition(" ")
        span, _, total = spec.partition("/")
        start, _, end = span.partition("-")
        assert (unit, total) == ("bytes", str(len(BASELINE))), request_repr
        assert reply.body == BASELINE[int(start) : int(end) + 1], request_repr
    if reply.status == 304:
        assert reply.body == b"", request_repr
    assert snapshot(server) == before, request_repr


# tus.

metadata_keys = st.one_of(
    st.sampled_from(["filename", "filetype", "data", "permissions"]),
    st.text(alphabet="abcxyz_-", min_size=1, max_size=5),
)
metadata_values = st.one_of(
    file_names.map(lambda v: base64.b64encode(v.encode()).decode()),
    json_field.map(lambda v: base64.b64encode((v or "").encode()).decode()),
    st.text(alphabet="ABC=+/!é ", max_size=8),
)
upload_metadata = st.one_of(
    st.none(),
    control_text,
    st.lists(st.tuples(metadata_keys, metadata_values), max_size=4).map(
        lambda pairs: ",".join(f"{k} {v}" for k, v in pairs)
    ),
    st.lists(st.tuples(metadata_keys, metadata_values), max_size=3).map(
        lambda pairs: (
            ",".join(["filename " + base64.b64encode(b"t.bin").decode()])
            + "".join(f",{k} {v}" for k, v in pairs)
        )
    ),
    header_text,
)
checksum_algorithms = st.sampled_from(["sha1", "sha256", "md5", "crc32", "SHA256", ""])
#: ``X-HTTP-Method-Override`` values of a ``POST``: tus's, other methods, anything.
override_values = st.one_of(
    st.sampled_from(
        ["PATCH", "DELETE", "HEAD", "GET", "OPTIONS", "PUT", "POST", "patch", " DELETE ", "TRACE"]
    ),
    header_text,
    control_text,
)
tus_methods = st.one_of(
    st.sampled_from(["HEAD", "PATCH", "PATCH", "DELETE", "OPTIONS"]),
    override_values.map(lambda value: ("POST", value)),
)
tus_ops = st.lists(
    st.tuples(
        tus_methods,  # a method, or ("POST", its X-HTTP-Method-Override)
        st.one_of(st.just("AT"), digits),  # Upload-Offset; AT: the current offset
        st.one_of(
            st.none(),
            st.tuples(checksum_algorithms, st.booleans()),  # (algorithm, right digest)
            header_text,
        ),
        st.sampled_from(["application/offset+octet-stream", None, "text/plain"]),
        st.binary(max_size=64),
        st.sampled_from(["1.0.0", "1.0.0", None, "0.2.2"]),
        framings,
    ),
    max_size=4,
)


def _checksum_header(spec, body):
    if spec is None or isinstance(spec, str):
        return spec
    algorithm, right = spec
    function = getattr(hashlib, algorithm.lower(), hashlib.sha256)
    digest = function(body if right else body + b"!").digest()
    return f"{algorithm} {base64.b64encode(digest).decode()}"


@FUZZ
@given(
    length=st.one_of(st.none(), digits, st.integers(0, 64).map(str)),
    metadata=upload_metadata,
    resumable=st.sampled_from(["1.0.0", "1.0.0", None, "2.0"]),
    creation_body=st.one_of(st.none(), st.binary(max_size=64)),
    ops=tus_ops,
    record=st.sampled_from([RECORD, "long-folder", "long", "too-long", NUL_RECORD]),
)
@example("9" * 5000, "filename dC5iaW4=", "1.0.0", None, [], RECORD)
@example("5", "filename " + b64("a\x00b.txt"), "1.0.0", None, [], RECORD)
@example("5", "filename dC5iaW4=,data " + b64('{"a": "\\u0000"}'), "1.0.0", None, [], RECORD)
@example("5", "filename dC5iaW4=,permissions " + b64('{"read": ["\\ud800"]}'), "1.0.0", None,
         [], RECORD)  # fmt: skip
@example("5", "filename dC5iaW4=,a\x00 eA==", "1.0.0", None, [], RECORD)
@example("5", "filename dC5iaW4=", "1.0.0", b"hello", [], "long-folder")
@example("2", "filename dC5iaW4=", "1.0.0", None,
         [("PATCH", "AT", None, CHUNK_TYPE, b"hi", "1.0.0", "length")], "long-folder")  # fmt: skip
@example("2", "filename dC5iaW4=", "1.0.0", None, [], "too-long")
@example("2", "filename dC5iaW4=", "1.0.0", None, [], NUL_RECORD)
@example("2", "filename dC5iaW4=", "1.0.0", None,
         [(("POST", "GET"), "AT", None, None, b"", "1.0.0", "none"),
          (("POST", "FOO\x00"), "AT", None, None, b"", "1.0.0", "none"),
          (("POST", "patch"), "AT", None, CHUNK_TYPE, b"hi", "1.0.0", "length"),
          (("POST", "TRACE"), "AT", None, None, b"", "1.0.0", "none")], "long")  # fmt: skip
@example(
    "8",
    "filename dC5iaW4=",
    "1.0.0",
    None,
    [
        (
            "PATCH",
            "AT",
            ("sha256", False),
            "application/offset+octet-stream",
            b"12345678",
            "1.0.0",
            "length",
        )
    ],  # fmt: skip
    RECORD,
)
def test_tus(server, length, metadata, resumable, creation_body, ops, record):
    before = ensure_baseline(server)
    record_path, fresh = RECORD_PATH, []
    if record == "long-folder":
        record_path = f"{LONG_COLLECTION_PATH}/records/{new_record_id('new')}"
    elif record == NUL_RECORD:
        record_path = f"{COLLECTION_PATH}/records/{NUL_RECORD}"
    elif record != RECORD:
        record_path = f"{COLLECTION_PATH}/records/{new_record_id(record)}"
    if record not in (RECORD, NUL_RECORD):
        fresh = [record_path]
    collection = record_path + "/attachment/uploads"
    options = send(server, "OPTIONS", collection, [("Tus-Resumable", "1.0.0")], framing="none")
    assert_not_server_error(server, "OPTIONS uploads", options, "OPTIONS")
    headers = [
        (name, value)
        for name, value in (
            ("Tus-Resumable", resumable),
            ("Upload-Length", length),
            ("Upload-Metadata", metadata),
        )
        if value is not None
    ]
    body = b""
    if creation_body is not None:
        headers.append(("Content-Type", "application/offset+octet-stream"))
        body = creation_body
    request_repr = f"POST {collection} {headers} body={body!r}"
    reply = send(server, "POST", collection, headers, body)
    assert_not_server_error(server, "tus POST", reply, request_repr)
    if reply is None or reply.status >= 300:
        assert_untouched(server, "tus POST", before, request_repr, fresh)
        return
    assert reply.status == 201, request_repr
    upload = path_of_url(reply.headers["Location"])
    offset = int(reply.headers.get("Upload-Offset", "0"))
    for unknown in (upload + "%00", upload[: upload.rindex("/") + 1] + "%00"):
        reply = send(server, "HEAD", unknown, [("Tus-Resumable", "1.0.0")], framing="none")
        assert_not_server_error(server, "tus HEAD", reply, f"HEAD {unknown}")
    for method, upload_offset, checksum, chunk_type, chunk, tus_version, framing in ops:
        before = snapshot(server)
        headers = [("Tus-Resumable", tus_version)] if tus_version else []
        if isinstance(method, tuple):
            method, override = method
            headers.append(("X-HTTP-Method-Override", override))
            # What the override makes of the POST, if anything: a PATCH gets its headers.
            effective = override.strip().upper()
        else:
            effective = method
        if effective == "PATCH":
            value = str(offset) if upload_offset == "AT" else upload_offset
            headers.append(("Upload-Offset", value))
            if chunk_type:
                headers.append(("Content-Type", chunk_type))
            checksum_value = _checksum_header(checksum, chunk)
            if checksum_value is not None:
                headers.append(("Upload-Checksum", checksum_value))
        else:
            chunk, framing = b"", "none"
        request_repr = f"{method} {upload} {headers} framing={framing!r} body={chunk!r}"
        reply = send(server, method, upload, headers, chunk, framing=framing)
        assert_not_server_error(server, f"tus {method}", reply, request_repr)
        if effective == "PATCH" and (reply is None or reply.status >= 300):
            assert_untouched(server, "tus PATCH", before, request_repr)
        elif effective == "PATCH":
            offset = int(reply.headers["Upload-Offset"])
        assert_consistent(server, f"tus {method}", record_path)


# tus concatenation and creation-defer-length.

#: A partial upload: its length (bytes more than it is sent, or "defer"), its bytes, whether
#: they are sent (with the length, if deferred).
partial_uploads = st.lists(
    st.tuples(
        st.one_of(st.just("defer"), st.integers(0, 2)), st.binary(max_size=16), st.booleans()
    ),
    max_size=3,
)
#: What a final upload names: a partial upload (by index), or anything.
final_names = st.lists(
    st.one_of(st.integers(0, 2), st.sampled_from(["", "/", "x", "%00"]), header_text),
    max_size=4,
)
final_extras = st.one_of(
    st.none(),
    st.sampled_from([("Upload-Length", "3"), ("Upload-Defer-Length", "1")]),
    st.tuples(st.sampled_from(["Upload-Concat", "Upload-Defer-Length"]), header_text),
)


@FUZZ
@given(partials=partial_uploads, names=final_names, extra=final_extras, metadata=upload_metadata)
@example([(0, b"ab", True), ("defer", b"cd", True)], [0, 1], None, "filename dC5iaW4=")
@example([(1, b"ab", True)], [0, 0], ("Upload-Length", "3"), "filename dC5iaW4=")
def test_tus_concatenation(server, partials, names, extra, metadata):
    """Partial uploads, then a final upload naming them, or not, or anything: never a 5xx;
    a refused final upload changes nothing; a made one is the attachment of their bytes."""
    ensure_baseline(server)
    uploads = RECORD_PATH + "/attachment/uploads"
    made = []  # (path, bytes) of the partial uploads created.
    for length, content, send_it in partials:
        headers = [("Tus-Resumable", "1.0.0"), ("Upload-Concat", "partial")]
        if length == "defer":
            headers.append(("Upload-Defer-Length", "1"))
        else:
            headers.append(("Upload-Length", str(len(content) + length)))
        reply = send(server, "POST", uploads, headers, framing="none")
        assert_not_server_error(server, "tus POST partial", reply, f"POST {headers}")
        if reply is None or reply.status != 201:
            continue
        made.append((path_of_url(reply.headers["Location"]), content))
        if send_it:
            headers = [("Tus-Resumable", "1.0.0"), ("Upload-Offset", "0")]
            headers.append(("Content-Type", "application/offset+octet-stream"))
            if length == "defer":
                headers.append(("Upload-Length", str(len(content))))
            reply = send(server, "PATCH", made[-1][0], headers, content)
            assert_not_server_error(server, "tus PATCH partial", reply, f"PATCH {headers}")
    named = [made[n][0] if isinstance(n, int) and n < len(made) else str(n) for n in names]
    headers = [("Tus-Resumable", "1.0.0"), ("Upload-Concat", "final;" + " ".join(named))]
    if metadata is not None:
        headers.append(("Upload-Metadata", metadata))
    if extra is not None:
        headers = [h for h in headers if h[0] != extra[0]] + [extra]
    before = snapshot(server)
    request_repr = f"POST {uploads} {headers}"
    reply = send(server, "POST", uploads, headers, framing="none")
    assert_not_server_error(server, "tus POST final", reply, request_repr)
    if reply is None or reply.status >= 300:
        assert_untouched(server, "tus POST final", before, request_repr)
    else:
        assert reply.status == 201, request_repr
        contents = dict(made)
        whole = b"".join(contents[path] for path in named)
        assert _attachment(server)["hash"] == _sha256(whole), request_repr
    assert_consistent(server, "tus final", RECORD_PATH)
    for path, _ in made:  # Not to fill the user's quota of uploads.
        send(server, "DELETE", path, [("Tus-Resumable", "1.0.0")], framing="none")


# /data/files.

file_ids = st.one_of(
    st.none(),
    st.just(KEEP_ID),
    st.text(alphabet="abcXYZ019._-", min_size=1, max_size=12),
    st.integers(120, 140).map(lambda n: "i" * n),
    st.text(max_size=12),
)
ttls = st.one_of(st.none(), digits, st.integers(60_000, 10**9).map(str))
dispositions = st.one_of(
    st.none(),
    file_names.map(lambda n: f'attachment; filename="{n}"'),
    st.tuples(charsets, file_names).map(lambda t: f"attachment; filename*={t[0]}''{quote(t[1])}"),
    header_text,
    control_text,
)


def _query(file_id, ttl, raw):
    params = []
    for name, value in (("id", file_id), ("ttl", ttl)):
        if value is not None:
            params.append(f"{name}={value if raw else quote(value, safe='')}")
    return ("?" + "&".join(params)) if params else ""


@FUZZ
@given(
    prefix=st.sampled_from(["", "/v1"]),
    file_id=file_ids,
    ttl=ttls,
    raw_query=st.booleans(),
    content_type=st.one_of(st.none(), declared_types.filter(lambda v: v is not None)),
    disposition=dispositions,
    body=st.binary(max_size=300),
    framing=framings,
    then=st.lists(st.sampled_from(["GET", "HEAD", "DELETE", "LIST"]), max_size=3),
)
@example("", "ttl-huge", "9" * 5000, False, None, None, b"x", "length", [])
@example("", "idna", None, False, None, "attachment; filename*=idna''abc", b"x", "length", [])
@example("", KEEP_ID, "abc", False, None, None, b"replacement", "length", ["GET"])
@example("", "a\x00b", None, False, None, None, b"x", "length", ["GET", "HEAD", "DELETE"])
@example("", "nul", None, False, None, "attachment; filename*=utf-8''a%00b.txt", b"x", "length",
         ["LIST"])  # fmt: skip
@example("", "nul", None, False, "text/plain\x00", 'attachment; filename="a\x00b.txt"', b"x",
         "length", ["LIST"])  # fmt: skip
def test_data_files(
    server, prefix, file_id, ttl, raw_query, content_type, disposition, body, framing, then
):
    before = ensure_baseline(server)
    route = prefix + "/data/files"
    headers = [
        (name, value)
        for name, value in (("Content-Type", content_type), ("Content-Disposition", disposition))
        if value is not None
    ]
    target = route + _query(file_id, ttl, raw_query)
    request_repr = f"POST {target} {headers} framing={framing!r} body={body[:100]!r}"
    reply = send(server, "POST", target, headers, body, framing=framing, auth=False)
    assert_not_server_error(server, "POST /data/files", reply, request_repr)
    if reply is None or reply.status >= 300:
        assert_untouched(server, "POST /data/files", before, request_repr)
        stored = None
    else:
        assert reply.status == 200, request_repr
        stored = reply.body.decode()
        # An empty id is no id: the server picks one.
        assert stored and (not file_id or stored == file_id), request_repr
        lasting = ttl is None or int(ttl) >= 60_000
        if framing in ("length", "chunked") and lasting:
            got = send(server, "GET", f"{route}/{stored}", framing="none", auth=False)
            assert got is not None and got.status == 200, request_repr
            assert got.body == body, request_repr
    for method in then:
        target = route if method == "LIST" else f"{route}/{quote(stored or file_id or 'x')}"
        verb = "GET" if method == "LIST" else method
        reply = send(server, verb, target, framing="none", auth=False)
        assert_not_server_error(server, f"{method} /data/files", reply, f"{verb} {target}")
        if method == "LIST":
            assert reply.status == 200 and isinstance(reply.json(), list), reply


# Batch.

batch_paths = st.one_of(
    st.sampled_from(
        [
            RECORD_PATH + "/attachment",
            RECORD_PATH + "/attachment/uploads",
            RECORD_PATH + "/attachment/uploads/nope",
            RECORD_PATH,
            COLLECTION_PATH + "/records/other/attachment",
            LONG_COLLECTION_PATH + "/records/other/attachment",
            LONG_COLLECTION_PATH + "/records/other/attachment/uploads",
            "/v1/data/files",
            f"/v1/data/files/{KEEP_ID}",
            "/data/files",
            f"/v1/data/files?id=b&ttl={'9' * 5000}",
        ]
    ),
    # Valid percent-escapes only: Kinto's batch view fails (500) on a sub-request path that is
    # not UTF-8 once decoded (``%bb``), whatever the route: a bug of Kinto's, not ours.
    st.lists(st.sampled_from([*"/abc?=&.", "%2F", "%25", "%20", "%00"]), max_size=12).map(
        lambda parts: RECORD_PATH + "/attachment" + "".join(parts)
    ),
)
#: JSON values without NUL, for the bodies of sub-requests: Kinto's own record views (which
#: ``PUT`` and ``PATCH`` of the record reach) answer a NUL with a 503 on PostgreSQL, a bug of
#: Kinto's that this fuzzing is not about (our routes refuse to be part of a batch).
kinto_text = st.text(st.characters(blacklist_characters="\x00"), max_size=8)
kinto_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | kinto_text,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(kinto_text.map(lambda t: t[:5]), inner, max_size=3)
    ),
    max_leaves=8,
)
sub_requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "HEAD", "DELETE", "POST", "PUT", "PATCH", "OPTIONS"]),
        "path": batch_paths,
    },
    optional={
        "headers": st.dictionaries(
            st.sampled_from(
                [
                    "Range",
                    "If-None-Match",
                    "Content-Type",
                    "Upload-Length",
                    "Tus-Resumable",
                    "Upload-Metadata",
                    "X-Foo",
                ]
            ),  # fmt: skip
            header_text,
            max_size=3,
        ),
        "body": st.dictionaries(st.sampled_from(["data", "permissions", "x"]), kinto_json_values),
    },
)


@FUZZ
@given(requests_=st.lists(sub_requests, min_size=1, max_size=4))
@example([{"method": "GET", "path": RECORD_PATH + "/attachment"}])
@example([{"method": "DELETE", "path": RECORD_PATH + "/attachment"}])
@example([{"method": "HEAD", "path": RECORD_PATH + "/attachment"}])
def test_batch(server, requests_):
    before = ensure_baseline(server)
    body = json.dumps({"requests": requests_}).encode()
    request_repr = f"POST /v1/batch {body[:2000]!r}"
    reply = send(server, "POST", "/v1/batch", [("Content-Type", "application/json")], body)
    assert_not_server_error(server, "POST /v1/batch", reply, request_repr)
    assert reply is not None, request_repr
    changed = reply.status < 300
    if reply.status == 200:
        for sub, response in zip(requests_, reply.json()["responses"], strict=True):
            status = response["status"]
            if status >= 500 and not (status == 503 and "Retry-After" in response["headers"]):
                raise failure(f"batch {sub['method']} {sub['path'][:60]}", status)(
                    f"{_short(request_repr)}\nsub-response: {json.dumps(response)[:600]}\n"
                    f"server log (tail):\n{_log_tail(server)}"
                )
        changed = any(
            sub["method"] in MUTATING and response["status"] < 300
            for sub, response in zip(requests_, reply.json()["responses"], strict=True)
        )
    if not changed:
        assert_untouched(server, "POST /v1/batch", before, request_repr)
    assert_consistent(server, "POST /v1/batch")
