"""Against Mozilla's kinto-attachment 8.0.0 (the peer), side by side: found by a
differential review (2026-12-05).

Both servers run with ``pserve``, the same Kinto (memory backends), the same settings (each
its own files folder), and are sent the same requests, as kinto-attachment's clients send them
(``requests`` multipart as its README shows, ``curl -F``, Kinto Admin's ``If-Match``). Each
test compares what a client (statuses, bodies) or an operator (files on disk, start-up) sees:
the same answers, or a difference docs/migrating.rst lists.
"""

import contextlib
import dataclasses
import json
import re
import uuid
from pathlib import Path

import pytest
import requests

from ..support import legacy, live


pytestmark = pytest.mark.live

AUTH = legacy.AUTH
MIGRATING = (live.ROOT / "docs" / "migrating.rst").read_text()
BASE_URL = "https://cdn.example.com/files/"


def _settings(base_path, extra):
    settings = {
        "kinto.includes": "kinto.plugins.default_bucket kinto_attachment",
        "kinto.userid_hmac_secret": legacy.SECRET,
        "multiauth.policies": "basicauth",
        "kinto.bucket_create_principals": "system.Authenticated",
        "kinto.attachment.base_path": str(base_path),
        "kinto.attachment.base_url": BASE_URL,
    }
    for kind in ("storage", "permission", "cache"):
        settings[f"kinto.{kind}_backend"] = f"kinto.core.{kind}.memory"
    settings.update(extra)
    return settings


def _command(peer):
    """``(pserve, environment)`` of the peer's virtualenv, or of ours."""
    if peer:
        return live.ensure_peer() / "pserve", live.peer_env()
    return live.BIN / "pserve", None


@contextlib.contextmanager
def _serve(folder, settings, peer):
    folder.mkdir(parents=True)
    ini = folder / "kinto.ini"
    ini.write_text(legacy.ini_text(settings))
    pserve, env = _command(peer)
    with live.started(folder, ini, command=[str(pserve), str(ini)], env=env) as server:
        server.wait_ready()
        yield server


@dataclasses.dataclass
class Side:
    name: str
    server: live.LiveServer
    base_path: Path

    def request(self, method, path, **kwargs):
        kwargs.setdefault("auth", AUTH)
        url = self.server.origin + "/v1" + path
        return requests.request(method, url, timeout=live.REQUEST_TIMEOUT, **kwargs)

    def upload(self, record, filename="hello.txt", content=b"hello", mimetype="text/plain",
               data=None, **kwargs):  # fmt: skip
        """What ``requests.post(url, data=payload, files=files)`` of kinto-attachment's README
        sends (``mimetype`` None: a part without ``Content-Type``)."""
        part = (filename, content) if mimetype is None else (filename, content, mimetype)
        return self.request(
            "POST", record + "/attachment", files={"attachment": part}, data=data, **kwargs
        )

    def collection(self):
        """A new bucket and collection: their record URL prefix."""
        bucket = f"b{uuid.uuid4().hex[:8]}"
        for path in (f"/buckets/{bucket}", f"/buckets/{bucket}/collections/c"):
            assert self.request("PUT", path, json={}).status_code in (200, 201)
        return f"/buckets/{bucket}/collections/c/records"

    def files(self):
        return legacy.files_under(self.base_path)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """``pairs(**settings)``: the peer and ours, both started with these settings (once per
    module and settings), stopped at the end of the module."""
    started = {}
    with contextlib.ExitStack() as stack:

        def pair(**extra):
            key = tuple(sorted(extra.items()))
            if key not in started:
                root = tmp_path_factory.mktemp("pair")
                sides = []
                for name in ("peer", "ours"):
                    base_path = root / name / "files"
                    base_path.mkdir(parents=True)
                    settings = _settings(base_path, extra)
                    server = stack.enter_context(
                        _serve(root / name / "server", settings, peer=name == "peer")
                    )
                    sides.append(Side(name, server, base_path))
                started[key] = tuple(sides)
            return started[key]

        yield pair


def _both(pairs, action, **settings):
    """``action(side)`` on the peer, then on ours (each on a collection of its own)."""
    return [action(side) for side in pairs(**settings)]


def _error(response):
    body = response.json()
    return response.status_code, body.get("errno"), body.get("message")


# Where we answered otherwise, and nothing said why (found by review, 2026-12-05).


NAMED = {"kinto.attachment.randomize": "false", "kinto.attachment.folder": "{bucket_id}"}


@pytest.mark.parametrize(
    "filename",
    ["notes (draft).txt", "a+b.txt", "rapport#2.pdf", "l'été.txt"],
)
def test_named_files_are_named_as_kinto_attachment_names_them(pairs, filename):
    """With ``randomize = false`` the stored name (in ``location``, on disk) is the client's
    name made safe. kinto-attachment turns whitespace into ``_`` and drops every other
    character outside ``[A-Za-z0-9_.-]`` (``notes (draft).txt``: ``notes_draft.txt``); we
    replace each run of them by ``_`` (``notes_draft_.txt``): the files of existing clients
    get other URLs than kinto-attachment gave them (``kinto_attachment/storage/keys.py``,
    ``_ascii``)."""

    def stored_name(side):
        records = side.collection()
        response = side.upload(f"{records}/r1", filename=filename)
        assert response.status_code == 201, response.text
        return response.json()["location"].rsplit("/", 1)[-1]

    peer, ours = _both(pairs, stored_name, **NAMED)
    assert ours == peer


@pytest.mark.parametrize("record_id", ["a.b", "bad%20id", "%C3%A9t%C3%A9"])
def test_an_upload_to_an_invalid_record_id_is_refused_as_kinto_refuses_its_creation(
    pairs, record_id
):
    """kinto-attachment creates the record as Kinto's ``PUT`` does: an id Kinto's generator
    refuses is a ``400`` (errno 107, ``path: Invalid object id``). We answer ``404`` (errno
    111, "record not found") in a collection that exists: a client that creates what a 404
    says is missing (the collection) and retries never ends, and nothing tells it the id is
    wrong (``kinto_attachment/uploads/record.py``, ``require_record_parents``:
    ``raise_404_if_invalid_id`` is Kinto's answer to a read, not to a creation)."""
    peer, ours = _both(pairs, lambda side: _error(side.upload(f"{side.collection()}/{record_id}")))
    assert peer == (400, 107, "path: Invalid object id")
    assert ours == peer


#: Settings kinto-attachment 8.0.0 starts with, beside ``base_path`` (which it then uses, and
#: nothing else): what an ini keeps of an earlier S3 or GCS setup.
LEFTOVERS = {
    "aws-credentials": {
        "kinto.attachment.aws.access_key": "AKIAEXAMPLE",
        "kinto.attachment.aws.secret_key": "secret",
    },
    "gcloud-credentials": {"kinto.attachment.gcloud.credentials": "/etc/kinto/gcs.json"},
}


def _starts(folder, settings, peer):
    """Whether ``pserve`` starts with ``settings`` (and what it logged)."""
    folder.mkdir(parents=True)
    ini = folder / "kinto.ini"
    ini.write_text(legacy.ini_text(settings))
    pserve, env = _command(peer)
    with live.started(folder, ini, command=[str(pserve), str(ini)], env=env) as server:
        try:
            server.wait_ready()
        except pytest.fail.Exception:
            errors = [line for line in server.output().splitlines() if "Error" in line]
            return False, "\n".join(errors[-1:])
        return True, ""


@pytest.mark.parametrize("leftover", LEFTOVERS.values(), ids=LEFTOVERS.keys())
def test_an_ini_that_kinto_attachment_starts_with_starts(tmp_path, leftover):
    """ "Keep ``kinto.ini``" (docs/migrating.rst): kinto-attachment 8.0.0 uses the local store
    whenever ``base_path`` is set, whatever else its ini holds; we refuse to start ("S3
    settings need ``aws.bucket_name``", "GCS settings need ``gcloud.bucket_name``")
    (``kinto_attachment/settings.py``)."""
    base_path = tmp_path / "files"
    base_path.mkdir()
    settings = _settings(base_path, leftover)
    started, _ = _starts(tmp_path / "peer", settings, peer=True)
    assert started, "the peer no longer starts: the test is moot"
    started, output = _starts(tmp_path / "ours", settings, peer=False)
    assert started, output


# Deliberate differences (ours is better), each listed in docs/migrating.rst.


def _stale_if_match(side):
    record = f"{side.collection()}/r1"
    side.upload(record)
    return side.upload(record, content=b"v2", headers={"If-Match": '"1"'}).status_code


def _put_without_attachment(side):
    record = f"{side.collection()}/r1"
    side.upload(record, data={"data": '{"title": "t"}'})
    return side.request("PUT", record, json={"data": {"title": "t2"}}).status_code


def _curl_mimetype(side):
    # ``curl -F attachment=@data.csv`` types every file it does not know as octet-stream.
    meta = side.upload(f"{side.collection()}/r1", "data.csv", b"a,b\n", "application/octet-stream")
    return meta.json()["mimetype"]


def _files_after_replacement(side):
    record = f"{side.collection()}/r1"
    before = len(side.files())
    side.upload(record, content=b"v1")
    side.upload(record, content=b"v2")
    return len(side.files()) - before


def _random_name_is_a_uuid(side):
    location = side.upload(f"{side.collection()}/r1").json()["location"]
    stem = location.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    with contextlib.suppress(ValueError):
        return str(uuid.UUID(stem)) == stem
    return False


def _string_permissions(side):
    form = {"permissions": json.dumps({"read": "system.Everyone"})}
    return side.upload(f"{side.collection()}/r1", data=form).status_code


def _two_files(side):
    parts = [("attachment", ("a.txt", b"a", "text/plain"))] * 2
    return side.request("POST", f"{side.collection()}/r1/attachment", files=parts).status_code


def _capability_version(side):
    return side.request("GET", "/").json()["capabilities"]["attachments"]["version"]


#: ``(what a client or operator sees, how docs/migrating.rst would say it)``.
DELIBERATE = {
    # Peer: 200 (Kinto's preconditions are never read); ours: 412. Kinto Admin sends If-Match.
    "if-match-enforced": (_stale_if_match, r"If-Match"),
    # Peer: 200, the record loses its ``attachment`` (its file stays); ours: 400.
    # kinto-http.py's ``update_record`` is a PUT: scripts that edit attributes break.
    "put-without-attachment": (_put_without_attachment, r"``PUT``[^\n]*(omit|without)"),
    # Peer: application/octet-stream; ours: text/csv (docs/api.rst only).
    "mimetype-guessed": (_curl_mimetype, r"octet-stream"),
    # Peer: the replaced file is gone at once; ours: 10 minutes later (docs/consistency.rst).
    "replaced-grace": (_files_after_replacement, r"replaced_grace_seconds"),
    # Peer: ``{uuid4}.ext``; ours: 40 hex digits, the instance's tag first (docs/gc.rst).
    "random-names": (_random_name_is_a_uuid, r"(?i)uuid"),
    # Peer: 201, ``read`` becomes one principal per character; ours: 400 (errno 107).
    "permissions-validated": (_string_permissions, r"(?i)permissions[^|]*(valid|400)"),
    # Peer: 201, the last file kept; ours: 400 (errno 109).
    "two-files": (_two_files, r"(?i)two ``attachment`` parts|only one file"),
    # Peer: "8.0.0"; ours: "1.0.0" (and ``url``): clients telling versions apart see 1.0.0.
    "capability-version": (_capability_version, r"``version``"),
}


@pytest.mark.parametrize("seen,listed", DELIBERATE.values(), ids=DELIBERATE.keys())
def test_deliberate_differences_are_listed_in_migrating(pairs, seen, listed):
    peer, ours = _both(pairs, seen)
    if peer != ours:
        assert re.search(listed, MIGRATING), (
            f"peer {peer!r}, ours {ours!r}: not in docs/migrating.rst"
        )


# The same answers.


def _normalise(value, side):
    """``value`` without what differs from run to run: origins, ids, user ids, random names,
    timestamps and dates (sha256 hashes are kept: the same bytes, the same hash). Random
    names go first, whole: one holding 13 digits in a row was cut by the timestamps'
    pattern, and then no longer read as a random name."""
    text = json.dumps(value, sort_keys=True)
    text = text.replace(side.server.origin, "ORIGIN")
    text = re.sub(r"/b[0-9a-f]{8}/", "/BUCKET/", text)
    text = re.sub(r"basicauth:[0-9a-f]{64}", "USER", text)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                  r"|(?<![0-9a-f])[0-9a-f]{40}(?![0-9a-f])", "RANDOM", text)  # fmt: skip
    text = re.sub(r"(?<![0-9a-f])1[0-9]{12}(?![0-9a-f])", "0", text)
    text = re.sub(r"\w{3}, \d\d \w{3} \d{4} [\d:]{8} GMT", "DATE", text)
    return json.loads(text)


def _answer(side, response):
    try:
        body = response.json()
    except ValueError:
        body = response.text
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() in ("location", "etag", "last-modified", "content-type")
    }
    return _normalise([response.status_code, body, headers], side)


def _api_walk(side):
    records = side.collection()
    record = f"{records}/r1"
    seen = [
        side.upload(
            record, data={"data": '{"n": 1}', "permissions": '{"read": ["system.Everyone"]}'}
        ),
        side.upload(record, "logo.PNG", b"\x89PNG", "image/png", data={"data": '{"n": 2}'}),
        side.request("GET", record),
        side.upload(record, "LICENSE"),
        side.upload(record, "x.exe"),
        side.upload(record, "y.txt", b"x", None, params={"gzipped": "true"}),
        side.request("POST", record + "/attachment", data={"data": "{}"}),
        side.request("POST", record + "/attachment", json={"data": {}}),
        side.request("DELETE", record + "/attachment"),
        side.request("GET", record),
        side.request("DELETE", record + "/attachment"),
        side.upload(records.replace("/collections/c/", "/collections/nope/") + "/r1"),
        side.upload("/buckets/default/collections/tasks/records/r1"),
        side.request("GET", "/buckets/default/collections/tasks/records/r1"),
        side.request("GET", "/"),
    ]
    answers = [_answer(side, response) for response in seen]
    answers[-1][1] = answers[-1][1]["capabilities"]["attachments"]["base_url"]
    return answers


def test_checked_the_api_answers_as_kinto_attachment(pairs):
    """201 then 200, the record's ``attachment`` and ``data`` and
    ``permissions``, ``Location``/``ETag``/``Last-Modified``, the refusals' bodies (no
    extension, a refused one, no file, not multipart), ``gzipped`` ignored, a part without a
    type, ``DELETE`` twice, a missing collection, the ``default`` bucket, the capability's
    ``base_url``."""
    peer, ours = _both(pairs, _api_walk)
    assert ours == peer


KEPT = {
    "kinto.attachment.randomize": "false",
    "kinto.attachment.folder": "{bucket_id}/{collection_id}",
    "kinto.attachment.keep_old_files": "true",
    "kinto.attachment.base_url": "https://cdn.example.com/files",
}


def _kept_files(side):
    records = side.collection()
    record = f"{records}/r1"
    locations = [
        side.upload(record, "a.txt", b"1").json()["location"],
        side.upload(record, "a.txt", b"2").json()["location"],
        side.upload(f"{records}/r2", "Rapport final été.json", b"{}").json()["location"],
    ]
    side.request("DELETE", record + "/attachment")
    side.request("DELETE", f"{records}/r2")
    bucket = records.split("/")[2]
    files = [f.replace(bucket, "BUCKET") for f in side.files() if f.startswith(bucket)]
    return [location.replace(bucket, "BUCKET") for location in locations], sorted(files)


def test_checked_named_kept_files_in_folders_without_trailing_slash(pairs):
    """``randomize = false``, ``folder``, ``keep_old_files`` and a
    ``base_url`` without its trailing slash give the same locations (``-1`` for a taken name,
    ``files`` dropped by ``urljoin``) and leave the same files."""
    peer, ours = _both(pairs, _kept_files, **KEPT)
    assert ours == peer
