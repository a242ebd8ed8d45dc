"""The command line while others work on the collection (found by review, 2026-12-05): a sync
never reverts, nor overwrites, what another client wrote since (its mark, a listing taken
while the collection changed, preconditions on every upload); and what a server or the
folder may do meanwhile (pages that never end, a file shrinking during its upload,
credentials in the server's URL) is a clear failure, never a hang nor a leak."""

import hashlib
import json
import os
import time
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

from kinto_attachment.cli import remote, sync
from kinto_attachment.cli.names import record_id_of

from ..support.cli_support import Hostile, run_command
from .test_cli import (  # noqa: F401 (fixtures: a live server, a collection of it)
    attach_by_hand,
    collection,
    environment,
    record,
    server,
)
from .test_cli_hostile import (  # noqa: F401 (run: a fixture)
    CREDENTIALS,
    PASSWORD,
    RECORDS,
    attachment,
    run,
)


MiB = 1024 * 1024
LOCAL = b"the folder's version of index.txt\n"
LOCAL_DIGEST = hashlib.sha256(LOCAL).hexdigest()
THEIRS_DIGEST = hashlib.sha256(b"another client's version\n").hexdigest()
INDEX = record_id_of("index.txt")


def sha256(content):
    return hashlib.sha256(content).hexdigest()


def site_with_index(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.txt").write_bytes(LOCAL)
    return site


def json_answer(body, headers=None):
    return 200, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


def accepted_upload(request):
    """What a Kinto answers to a multipart upload of ``LOCAL``."""
    return json_answer(attachment("index.txt", size=len(LOCAL), digest=LOCAL_DIGEST))


def is_upload_of(request, record_id):
    path = urlsplit(request.path).path
    return request.method == "POST" and path.startswith(f"{RECORDS}/{record_id}/attachment")


def test_sync_reverts_an_attachment_replaced_on_the_server_since_it_synced(
    server,  # noqa: F811 (the fixture imported above)
    collection,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    """Found by review (2026-12-05).

    A record this folder's sync attached (its mark says sha256 P) whose
    attachment
    another client replaced since (sha256 Q, e.g. a fix uploaded by hand or through the admin)
    while the folder's file is still P: the next plain ``sync`` (no ``--delete``, nothing
    changed locally) plans it as ``changed`` and uploads the old local file over the newer
    server attachment, silently reverting the other client's edit. The mark holds exactly
    what is needed to see this (local == mark, server != mark: only the server changed), and
    ``--delete`` already uses it to keep such a record (``kept``), but the upload side of
    :func:`sync.plan` ignores the mark's sha256 (sync.py, ``elif stored != entry.sha256``).

    Expected: the record is left as it is and reported (as ``kept`` / a conflict is), never
    reverted; only a file changed locally since the mark is uploaded."""
    env = environment(server, collection, tmp_path)
    site = site_with_index(tmp_path)
    first = run_command(monkeypatch, capsys, env, "sync", str(site))
    assert first.returncode == 0, first.stderr
    edited = b"fixed on the server by a colleague, after the sync\n"
    attach_by_hand(server, collection, INDEX, "index.txt", edited)
    assert record(server, collection, INDEX)["synced_from"]["sha256"] == LOCAL_DIGEST

    again = run_command(monkeypatch, capsys, env, "sync", str(site))

    stored = record(server, collection, INDEX)["attachment"]["hash"]
    assert stored == sha256(edited), (
        "the colleague's newer attachment was replaced by the folder's older file:\n"
        + again.stdout
    )
    assert "index.txt" in again.stdout + again.stderr


def paged_kinto(records, after_first_page, posts):
    """A fake Kinto listing ``records`` (``{id: record}``, each with its ``last_modified``) as
    Kinto does: newest first (or in the ``_sort`` order asked for, ``id`` or
    ``last_modified``), ``_limit`` a page, ``Next-Page`` with a token (the sort value of the
    last record listed) when more follow, the collection's timestamp as ``ETag``.
    ``after_first_page()`` runs once the first page is answered (another client's write);
    each upload is kept in ``posts`` and accepted."""
    first = []

    def answer(request):
        url = urlsplit(request.path)
        if request.method == "GET" and url.path == RECORDS:
            query = parse_qs(url.query)
            limit = int(query.get("_limit", ["10000"])[0])
            order = query.get("_sort", ["-last_modified"])[0]
            field, descending = order.lstrip("-"), order.startswith("-")
            ordered = sorted(records.values(), key=lambda r: r[field], reverse=descending)
            if "_token" in query:  # The value of the last record of the previous page.
                last = json.loads(query["_token"][0])
                after = (lambda v: v < last) if descending else (lambda v: v > last)
                ordered = [r for r in ordered if after(r[field])]
            timestamp = max(r["last_modified"] for r in records.values())
            page = ordered[: limit + 1]
            headers = {"ETag": f'"{timestamp}"'}
            if len(page) > limit:
                page = page[:limit]
                token = quote(json.dumps(page[-1][field]))
                headers["Next-Page"] = f"{RECORDS}?_limit={limit}&_sort={order}&_token={token}"
            result = json_answer({"data": page}, headers)
            if not first:
                first.append(1)
                after_first_page()
            return result
        if request.method == "POST":
            posts.append(request)
            return accepted_upload(request)
        if request.method == "GET" and url.path.startswith(RECORDS + "/"):
            wanted = records.get(unquote(url.path[len(RECORDS) + 1 :]))
            if wanted is not None:
                return json_answer({"data": wanted})
        return 404, {"Content-Type": "application/json"}, b'{"code": 404, "errno": 110}'

    return answer


def test_a_listing_that_changed_between_its_pages_is_not_planned_on(tmp_path, run):  # noqa: F811 (the fixture)
    """Found by review (2026-12-05).

    :meth:`Remote.records` follows Kinto's pages (newest first, each page after
    the previous one's last ``last_modified``) without checking that the collection stayed
    the same meanwhile. A record another client writes while the command lists moves to the
    front of the order, before the pages already read: it is listed on none. ``sync`` plans
    on that listing: the record of ``index.txt``, which another folder's sync marked, is not
    seen, ``index.txt`` is planned ``new``, and uploaded over that folder's record (the
    conflict check of sync.py never sees it). The collection's ``ETag`` (its timestamp,
    on every page) changed between the first page and the last: the listing is not a
    snapshot.

    Expected: a listing whose collection changed while it was paged is not planned on (the
    command lists again, or refuses): another folder's record is never overwritten."""
    site = site_with_index(tmp_path)
    records = {
        f"filler-{n:04d}": {"id": f"filler-{n:04d}", "last_modified": 2 + n}
        for n in range(remote.PAGE_RECORDS)
    }
    records[INDEX] = {
        "id": INDEX,
        "last_modified": 1,
        "attachment": attachment("index.txt", digest=THEIRS_DIGEST),
        "synced_from": {"folder": "other", "path": "index.txt", "sha256": THEIRS_DIGEST},
    }

    def other_client_writes():
        records[INDEX] = {**records[INDEX], "title": "edited", "last_modified": 5000}

    posts = []
    with Hostile(paged_kinto(records, other_client_writes, posts)) as hostile:
        result = run(hostile, "sync", str(site))

    assert [p.path for p in posts if is_upload_of(p, INDEX)] == [], (
        "another folder's record was overwritten: " + result.stdout + result.stderr
    )


@pytest.mark.parametrize("listed", ["new", "changed"])
def test_sync_does_not_overwrite_a_record_written_since_its_plan(tmp_path, run, listed):  # noqa: F811 (the fixture)
    """Found by review (2026-12-05).

    ``sync`` checks whose a record is (another folder's: a conflict, left
    alone)
    only when it plans, from the listing; then it uploads each file with a plain ``POST``
    (uploads.py ``_multipart``, ``compared=True`` in main.py: not even read again), without a
    precondition (``If-Match`` with the listed ``last_modified``, ``If-None-Match: *`` for a
    record that did not exist). The uploads of a large folder take hours after the listing;
    a record another folder's sync (or another user) created or replaced meanwhile is
    overwritten. ``sync --delete`` and the marks do use ``If-Match``; uploads do not.

    Expected: the upload is conditional on the record being as listed (a precondition the
    server checks, or at least the record read again just before its upload): a record
    written since the plan is not overwritten and the file is reported."""
    site = site_with_index(tmp_path)
    now = {
        "id": INDEX,
        "last_modified": 9,
        "attachment": attachment("index.txt", digest=THEIRS_DIGEST),
        "synced_from": {"folder": "other", "path": "index.txt", "sha256": THEIRS_DIGEST},
    }
    before = []
    if listed == "changed":
        old = hashlib.sha256(b"the folder's previous version\n").hexdigest()
        before = [
            {
                "id": INDEX,
                "last_modified": 5,
                "attachment": attachment("index.txt", digest=old),
                "synced_from": {"folder": "site", "path": "index.txt", "sha256": old},
            }
        ]
    overwritten = []

    def answer(request):
        path = urlsplit(request.path).path
        if request.method == "GET" and path == RECORDS:
            return json_answer({"data": before})  # Then another client writes the record.
        if request.method == "GET" and path == f"{RECORDS}/{INDEX}":
            return json_answer({"data": now})
        if is_upload_of(request, INDEX):
            if request.headers.get("If-None-Match") == "*":
                return 412, {"Content-Type": "application/json"}, b'{"message": "exists"}'
            condition = request.headers.get("If-Match")
            if condition is not None and condition != f'"{now["last_modified"]}"':
                return 412, {"Content-Type": "application/json"}, b'{"message": "modified"}'
            overwritten.append(request)
            return accepted_upload(request)
        return 404, {"Content-Type": "application/json"}, b'{"code": 404, "errno": 110}'

    with Hostile(answer) as hostile:
        result = run(hostile, "sync", str(site))

    assert overwritten == [], "the record written since the plan was overwritten"
    assert result.returncode == 1
    assert "index.txt" in result.stderr


def paging(pages, page, last=None):
    """A Kinto whose listing's page ``token`` lists ``page(token)`` and points to the next
    (up to ``last``), the tokens asked for appended to ``pages``."""

    def answer(request):
        url = urlsplit(request.path)
        if url.path != RECORDS:
            return 404, {"Content-Type": "application/json"}, b'{"code": 404, "errno": 110}'
        token = int(parse_qs(url.query).get("_token", ["0"])[0])
        pages.append(token)
        headers = {}
        if last is None or token < last:
            headers["Next-Page"] = f"{RECORDS}?_limit={remote.PAGE_RECORDS}&_token={token + 1}"
        return json_answer({"data": page(token)}, headers)

    return answer


@pytest.mark.parametrize("page", [[], [None]], ids=["empty", "no-records"])
def test_pages_that_never_end_are_refused(tmp_path, run, page):  # noqa: F811 (the fixture)
    """Found by review (2026-12-05).

    :meth:`Remote.records` refuses a ``Next-Page`` it has already followed, but
    not one that is new each time: a server whose pages list nothing and always point to
    one more (``_token=1``, ``_token=2``...) keeps the command listing forever (memory
    growing with the URLs kept in ``seen``). Kinto never answers an empty page with a
    ``Next-Page`` (it gives one only when it found more than ``_limit`` records). Here the
    server gives up after 300 pages; a hostile one never does.

    Expected: a page that lists no record not listed before, yet points to another page, is
    refused (as pages that go round are): one clear line, exit code 1, a few requests.
    Nor may pages of things that are no records (``null``) go on (found by the review of that
    fix: they counted as something new)."""
    site = tmp_path / "site"
    site.mkdir()
    pages = []

    with Hostile(paging(pages, lambda token: page, last=300)) as hostile:
        result = run(hostile, "sync", str(site), "--delete")

    assert len(pages) < 10, f"the command followed {len(pages)} empty pages"
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("bound", ["LISTING_RECORDS", "LISTING_BYTES"])
def test_pages_of_one_new_record_each_forever_are_cut(tmp_path, run, monkeypatch, bound):  # noqa: F811 (the fixture)
    """Found by review (2026-12-05).

    A server whose every page lists one record not listed before, and points to one more,
    was followed forever, the command's memory growing with the records (each page alone is
    bounded, their sum was not). The listing is refused past a million records or a GiB of
    pages (here lowered, to be reached in a few pages): one clear line, exit code 1."""
    monkeypatch.setattr(remote, bound, 5 if bound == "LISTING_RECORDS" else 5000)
    pages = []

    def page(token):
        return [{"id": f"r{token}", "padding": "x" * 1000}]

    with Hostile(paging(pages, page)) as hostile:
        result = run(hostile, "download", "--folder", str(tmp_path / "out"))

    assert len(pages) < 20, f"the command followed {len(pages)} pages"
    assert result.returncode == 1 and "more than this command holds" in result.stderr


def test_a_file_that_shrinks_during_a_tus_upload_is_no_short_body(tmp_path, run, monkeypatch):  # noqa: F811 (the fixture)
    """Found by review (2026-12-05).

    A tus chunk is sent with ``Content-Length`` the chunk's size as planned
    (:class:`uploads.Reader` ``__len__``), whatever the file holds when it is read: a file
    truncated during its upload (a log rotated, a build rewriting its output) makes a
    request whose body is shorter than it announced. The server waits for the rest, the
    command for the server's answer: each attempt hangs until ``TIMEOUT`` (60 s, then again
    for each of ``--retries``), then fails with a ``ReadTimeout`` that does not say why.

    Expected: a file that ends before the size it had is a failure at once, saying that the
    file changed during its upload (checked before a chunk is sent, or as it is read), in
    far less than ``TIMEOUT``."""
    monkeypatch.setattr(remote, "TIMEOUT", 10)
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (9 * MiB))  # Over 8 MiB: a tus upload.

    def answer(request):
        if request.method == "POST" and request.path.endswith("/attachment/uploads"):
            os.truncate(big, 1 * MiB)  # The file shrinks once its upload is created.
            return 201, {"Location": "/v1/files/1", "Tus-Resumable": "1.0.0"}, b""
        if request.method == "HEAD":
            return 200, {"Upload-Offset": "0", "Tus-Resumable": "1.0.0"}, b""
        if request.method == "PATCH":
            offset = int(request.headers["Upload-Offset"]) + len(request.body)
            return 204, {"Upload-Offset": str(offset), "Tus-Resumable": "1.0.0"}, b""
        return 404, {"Content-Type": "application/json"}, b'{"code": 404, "errno": 110}'

    with Hostile(answer) as hostile:
        started = time.monotonic()
        result = run(hostile, "--retries", "0", "upload", str(big), "--id", "r", "--force")
        elapsed = time.monotonic() - started
        patches = [r for r in hostile.requests if r.method == "PATCH"]

    assert result.returncode == 1
    short = [(int(p.headers["Content-Length"]), len(p.body)) for p in patches]
    assert elapsed < remote.TIMEOUT, (
        f"the command waited {elapsed:.0f} s on a request that announced more bytes than "
        f"it sent (Content-Length, sent): {short}; it said: {result.stderr}"
    )
    assert "Timeout" not in result.stderr


def test_credentials_in_the_server_url_are_never_printed(tmp_path, run):  # noqa: F811 (the fixture)
    """Found by review (2026-12-05).

    ``--server https://alice:PASSWORD@host/v1`` (the form curl and many tools
    take; requests sends it as Basic credentials when ``--auth`` is not given) is accepted,
    and every error message prints request URLs whole (:func:`answers.describe`'s
    ``response.url``, :meth:`Remote.request`'s ``{method} {url}``): the password lands on
    stderr, in CI logs. (The same URL is also the key of the tus state file, written to
    ``~/.cache``.)

    Expected: the password never appears in what the command prints (URLs shown without
    their user information, or such a ``--server`` refused with a message that does not
    repeat it)."""
    site = site_with_index(tmp_path)

    def answer(request):
        return 503, {"Content-Type": "application/json"}, b'{"message": "down"}'

    with Hostile(answer) as hostile:
        url = f"http://alice:{PASSWORD}@127.0.0.1:{hostile.port}/v1"
        result = run(hostile, "--retries", "0", "sync", str(site), auth="", server_url=url)
        sent = [r.headers.get("Authorization") for r in hostile.requests]

    # Refused before any request, as a wrong command line (exit code 2, as docs/cli.rst says
    # of wrong command lines: it was 1, a failed transfer's; found by review, 2026-12-05).
    assert result.returncode == 2, result.stderr
    assert sent == []
    assert PASSWORD not in result.stdout + result.stderr, result.stderr


def test_a_file_put_back_after_the_plan_keeps_its_record(
    server,  # noqa: F811 (the fixture imported above)
    collection,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    """Found by review (2026-12-05).

    ``sync --delete`` deleted the record of a file gone when the plan was made, even if it
    was back by the time its turn came (the uploads before it may take hours): the folder
    is looked at again just before each deletion."""

    env = environment(server, collection, tmp_path)
    site = site_with_index(tmp_path)
    assert run_command(monkeypatch, capsys, env, "sync", str(site)).returncode == 0
    (site / "index.txt").unlink()
    planned = sync.plan

    def plan_then_put_back(*args, **kwargs):
        result = planned(*args, **kwargs)
        (site / "index.txt").write_bytes(LOCAL)
        return result

    monkeypatch.setattr(sync, "plan", plan_then_put_back)
    result = run_command(monkeypatch, capsys, env, "sync", str(site), "--delete")
    assert result.returncode == 0, result.stderr
    assert f"kept index.txt ({INDEX}): its file is back in the folder" in result.stdout
    assert record(server, collection, INDEX)["attachment"]["hash"] == LOCAL_DIGEST


NOT_FOUND = (404, {"Content-Type": "application/json"}, b'{"code": 404, "errno": 110}')


@pytest.mark.parametrize("size", ["small", "resumable"])
def test_a_file_changed_after_the_plan_never_leaves_a_mark_that_blocks_its_next_sync(
    size,
    server,  # noqa: F811 (the fixture imported above)
    collection,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    """Found by review (2026-12-05).

    ``sync`` sends the mark it computed when it planned (``synced_from.sha256``
    = the file's sha256 then, main.py ``mirror``: ``sync.mark(name, e.path, e.sha256)``)
    with the file as it is when its upload reaches it (uploads.py reads the file then).
    A file saved meanwhile (the uploads before it may take hours, as the docs say) is
    attached with a mark naming another sha256: the upload's check fails after the record
    is written ("the server stored sha256 ..."), and the record now looks, to every later
    sync, like one whose attachment *someone else* replaced (mark != attachment). The next
    edit of that file is then refused forever as ``diverged`` ("replaced on the server
    since this folder's sync attached it"): the folder's own write is taken for another
    client's, and the file is never synced again without ``upload --force``.

    Expected: a record is never left with a mark that is not its attachment by the sync
    itself (the bytes sent are hashed as they are read and the upload is abandoned before
    its last byte when they are not the planned file, or the mark states what was sent);
    the next sync of the edited file uploads it."""
    pad = b"\0" * (9 * MiB) if size == "resumable" else b""  # Over 8 MiB: tus.
    env = environment(server, collection, tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    page, index = site / "index.txt", record_id_of("index.txt")
    page.write_bytes(b"first version\n" + pad)
    assert run_command(monkeypatch, capsys, env, "sync", str(site)).returncode == 0
    page.write_bytes(b"second version\n" + pad)
    planned = sync.plan

    def plan_then_save_again(*args, **kwargs):
        result = planned(*args, **kwargs)
        page.write_bytes(b"third version, saved while the sync ran\n" + pad)
        return result

    monkeypatch.setattr(sync, "plan", plan_then_save_again)
    during = run_command(monkeypatch, capsys, env, "sync", str(site))
    monkeypatch.setattr(sync, "plan", planned)
    after = record(server, collection, index)
    page.write_bytes(b"fourth version\n" + pad)

    final = run_command(monkeypatch, capsys, env, "sync", str(site))

    stored = record(server, collection, index)["attachment"]["hash"]
    assert stored == sha256(b"fourth version\n" + pad), (
        f"the folder's edit was not synced; after the sync the file changed under, the "
        f"record's mark said {after['synced_from']['sha256']}, its attachment "
        f"{after['attachment']['hash']} ({during.stderr.strip()}); the next sync said: "
        f"{final.stdout}{final.stderr}"
    )


def test_the_advice_for_a_diverged_file_in_a_subfolder_names_its_record(
    server,  # noqa: F811
    collection,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    """Found by review (2026-12-05).

    A ``diverged`` file is reported with the advice "replace it with
    kinto-attachment upload --force" (sync.py ``DIVERGED``). ``upload`` derives the record
    from the file's *name* (main.py ``upload``: ``record_id_of(basename)``), ``sync`` from
    its *path*: for ``sub/page.txt`` the advice, followed, uploads to the record of
    ``page.txt``, another record (another file's of the same folder, or anyone's), with
    ``--force``, i.e. with no precondition at all, and leaves the diverged record as it
    was. Advice that overwrites the wrong record is worse than none.

    Expected: the advice names the record (``upload --force --id RECORD FILE``), or gives no
    command that writes elsewhere."""
    env = environment(server, collection, tmp_path)
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "sub/page.txt").write_bytes(b"the folder's page\n")
    assert run_command(monkeypatch, capsys, env, "sync", str(site)).returncode == 0
    diverged = record_id_of("sub/page.txt")
    attach_by_hand(server, collection, diverged, "page.txt", b"a colleague's newer page\n")

    result = run_command(monkeypatch, capsys, env, "sync", str(site))

    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "sub/page.txt" in line]
    assert lines, result.stderr
    advice = lines[0]
    assert "upload --force" not in advice or f"--id {diverged}" in advice, (
        f"followed, this advice writes record {record_id_of('page.txt')}, not {diverged}: "
        + advice
    )


def test_two_files_of_one_name_are_not_uploaded_onto_one_record(
    server,  # noqa: F811
    collection,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    """Found by review (2026-12-05).

    ``upload a/notes.txt b/notes.txt`` derives one record from both names
    (main.py ``upload``: ``record_id_of(basename)``); the first is uploaded, then the second
    replaces it: the precondition of the second upload (``If-Match``, main.py ``_upload``)
    is the record as the first upload of this very command left it, so it never stops it.
    Both are reported ``uploaded``, exit code 0, and the record holds one of the two files
    with nothing saying the other was overwritten (``--id`` with several files is refused
    for this very reason).

    Expected: refused before anything is sent (exit code 2, "two files for one record"), or
    the second one fails; never two "uploaded" for one record."""
    env = environment(server, collection, tmp_path)
    for folder, text in (("a", b"notes of a\n"), ("b", b"notes of b\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "notes.txt").write_bytes(text)

    first, second = (str(tmp_path / folder / "notes.txt") for folder in ("a", "b"))
    result = run_command(monkeypatch, capsys, env, "upload", first, second)

    assert not (result.returncode == 0 and result.stdout.count("uploaded notes.txt") == 2), (
        "both files were reported uploaded onto one record, the first overwritten: "
        + result.stdout
    )


def paged(records, etag_of_page):
    """A Kinto listing ``records`` by pages of ``remote.PAGE_RECORDS`` (``_token``: the
    index of the first record of the page), each page's ``ETag`` given by
    ``etag_of_page(index, page)``."""
    pages = []

    def answer(request):
        url = urlsplit(request.path)
        if request.method != "GET" or url.path != RECORDS:
            return NOT_FOUND
        query = parse_qs(url.query)
        start = int(query.get("_token", ["0"])[0])
        limit = int(query["_limit"][0])
        page = records[start : start + limit]
        pages.append(start)
        headers = {"ETag": etag_of_page(start, page)}
        if start + limit < len(records):
            headers["Next-Page"] = f"{RECORDS}?_limit={limit}&_token={start + limit}"
        return json_answer({"data": page}, headers)

    return answer, pages


def test_a_listing_whose_pages_carry_one_etag_weak_and_strong_is_taken(
    tmp_path,
    run,  # noqa: F811 (the fixture)
    monkeypatch,
):
    """Found by review (2026-12-05).

    :meth:`Remote.records` takes a listing only if its pages' ``ETag`` are equal
    as strings (``len(set(etags)) <= 1``). In front of Kinto, nginx's ``gzip`` (and other
    compressing proxies) turns the strong ``ETag`` of what it compresses into a weak one
    (``W/"1712"``) and leaves alone what it does not compress: a page under
    ``gzip_min_length`` (the last page of a listing, a few records). Every listing of more
    than one page of such a collection then "kept changing while it was listed": ``sync``,
    ``download`` and ``rm NAME`` fail, exit code 1, on a collection nobody writes to.

    Expected: the pages' ``ETag`` are compared as the collection's timestamp, weakly (``W/``
    aside, RFC 9110 8.8.3.2): the listing is taken."""
    monkeypatch.setattr(remote, "PAGE_RECORDS", 2)
    site = tmp_path / "site"
    site.mkdir()
    records = [{"id": f"r{n}", "last_modified": 1712 - n} for n in range(5)]

    def compressed_but_the_small_last_page(start, page):
        return '"1712"' if len(page) < remote.PAGE_RECORDS else 'W/"1712"'

    answer, pages = paged(records, compressed_but_the_small_last_page)
    with Hostile(answer) as hostile:
        result = run(hostile, "sync", str(site), "--dry-run")

    assert result.returncode == 0, f"{result.stderr} (pages read: {pages})"
