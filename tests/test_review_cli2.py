"""Review of the command line's concurrency changes (0cce3a7..HEAD: ``diverged``, upload
preconditions, listings checked by their ``ETag``, ``Shrunk``, ``sync --delete`` looking
again): each test states a defect found, and fails until it is fixed."""

import hashlib
import json
from urllib.parse import parse_qs, urlsplit

from kinto_attachment.cli import remote, sync
from kinto_attachment.cli.names import record_id_of

from .cli.test_cli import (  # noqa: F401 (fixtures: a live server, a collection of it)
    attach_by_hand,
    collection,
    environment,
    record,
    server,
)
from .cli.test_cli_hostile import RECORDS, run  # noqa: F401 (run: a fixture)
from .support.cli_support import Hostile, run_command


def sha256(content):
    return hashlib.sha256(content).hexdigest()


def json_answer(body, headers=None):
    return 200, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


NOT_FOUND = (404, {"Content-Type": "application/json"}, b'{"code": 404, "errno": 110}')


def test_a_file_changed_after_the_plan_never_leaves_a_mark_that_blocks_its_next_sync(
    server,  # noqa: F811 (the fixture imported above)
    collection,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    """Defect: ``sync`` sends the mark it computed when it planned (``synced_from.sha256``
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
    env = environment(server, collection, tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    page, index = site / "index.txt", record_id_of("index.txt")
    page.write_bytes(b"first version\n")
    assert run_command(monkeypatch, capsys, env, "sync", str(site)).returncode == 0
    page.write_bytes(b"second version\n")
    planned = sync.plan

    def plan_then_save_again(*args, **kwargs):
        result = planned(*args, **kwargs)
        page.write_bytes(b"third version, saved while the sync ran\n")
        return result

    monkeypatch.setattr(sync, "plan", plan_then_save_again)
    during = run_command(monkeypatch, capsys, env, "sync", str(site))
    monkeypatch.setattr(sync, "plan", planned)
    after = record(server, collection, index)
    page.write_bytes(b"fourth version\n")

    final = run_command(monkeypatch, capsys, env, "sync", str(site))

    stored = record(server, collection, index)["attachment"]["hash"]
    assert stored == sha256(b"fourth version\n"), (
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
    """Defect: a ``diverged`` file is reported with the advice "replace it with
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
    """Defect: ``upload a/notes.txt b/notes.txt`` derives one record from both names
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
    """Defect: :meth:`Remote.records` takes a listing only if its pages' ``ETag`` are equal
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


def test_pages_of_things_that_are_no_records_that_go_on_are_refused(
    tmp_path,
    run,  # noqa: F811 (the fixture)
):
    """Defect: the new refusal of "pages that list nothing new, yet go on"
    (:meth:`Remote._pages`) counts as new anything on the page that is not a record seen
    before, ``null``, ``0``, ``"x"`` included (``new += 1`` for every item without a string
    id). A server whose every page is ``{"data": [null]}`` with a new ``Next-Page`` keeps
    the command listing for ever, its memory growing with each page: the hang the check
    was added against (docs/cli.rst: "a page listing nothing new that points to another is
    refused (pages that never end)"). Kinto gives a ``Next-Page`` only after a page of
    records.

    Expected: a page that lists no record not listed before (an object with a string id)
    and points to another is refused: exit code 1, a few requests."""
    site = tmp_path / "site"
    site.mkdir()
    pages = []

    def answer(request):
        url = urlsplit(request.path)
        if url.path != RECORDS:
            return NOT_FOUND
        token = int(parse_qs(url.query).get("_token", ["0"])[0])
        pages.append(token)
        headers = {}
        if token < 300:  # A hostile server never stops.
            headers["Next-Page"] = f"{RECORDS}?_limit={remote.PAGE_RECORDS}&_token={token + 1}"
        return json_answer({"data": [None]}, headers)

    with Hostile(answer) as hostile:
        result = run(hostile, "sync", str(site), "--delete")

    assert len(pages) < 10, f"the command followed {len(pages)} pages of no records"
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
