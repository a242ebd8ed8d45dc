"""How ``rm`` and ``download`` map NAMEs to records (found by review, 2026-12-05): a NAME
designating two records (its upload's, an id, the file a download names so) or only another's
in another case is refused; ``rm`` deletes a record only as it was read; a subset is downloaded
under the names a whole download gives; an empty NAME is no record."""

import hashlib
import json
from urllib.parse import unquote, urlsplit

import pytest
import requests

from kinto_attachment.cli import main as cli_main
from kinto_attachment.cli.names import DOWNLOADED, record_id_of

from ..support.cli_support import Hostile
from ..support.live import ALICE
from . import test_cli as live
from .test_cli import BUCKET, attach_by_hand, environment, record
from .test_cli_hostile import against


RECORDS = "/v1/buckets/b/collections/c/records"
#: The live server's fixtures (tests/cli/test_cli.py).
server, collection, run = live.server, live.collection, live.run


def content_of(record_id):
    return f"the file of record {record_id}\n".encode()


def attachment(record_id, filename):
    data = content_of(record_id)
    return {
        "filename": filename,
        "size": len(data),
        "hash": hashlib.sha256(data).hexdigest(),
        "mimetype": "text/plain",
    }


def fake_kinto(records):
    """A Kinto of ``records`` (each attachment holding :func:`content_of` its record) that
    deletes what it is asked to: its DELETEs are in ``Hostile.requests``."""
    by_id = {r["id"]: r for r in records}

    def answer(request):
        path = urlsplit(request.path).path
        json_type = {"Content-Type": "application/json"}
        if path == RECORDS and request.method == "GET":
            return 200, {**json_type, "ETag": '"1"'}, json.dumps({"data": records}).encode()
        if path.startswith(RECORDS + "/"):
            rest = path[len(RECORDS) + 1 :]
            wanted, _, tail = rest.partition("/")
            wanted = unquote(wanted)
            if wanted in by_id:
                if request.method == "DELETE":
                    return 200, json_type, json.dumps({"data": {"id": wanted}}).encode()
                if tail == "attachment":
                    return 200, {"Content-Type": "text/plain"}, content_of(wanted)
                return 200, json_type, json.dumps({"data": by_id[wanted]}).encode()
        return 404, json_type, b'{"code": 404, "errno": 110, "message": "not found"}'

    return answer


@pytest.fixture
def hostile_run(monkeypatch, capsys, tmp_path):
    return against(monkeypatch, capsys, tmp_path)


def deleted(fake):
    return [
        unquote(urlsplit(r.path).path[len(RECORDS) + 1 :])
        for r in fake.requests
        if r.method == "DELETE"
    ]


def owner_of(folder, name, records):
    """The id of the record whose file a whole download wrote at ``folder/name``."""
    data = (folder / name).read_bytes()
    return next(r["id"] for r in records if content_of(r["id"]) == data)


def check_rm_deletes_what_download_named(hostile_run, tmp_path, records, name):
    """Download everything, then ``rm NAME`` of a file the download wrote: it must delete
    that file's record, or refuse (exit code 1, nothing deleted); never another record."""
    folder = tmp_path / "out"
    with Hostile(fake_kinto(records)) as fake:
        everything = hostile_run(fake, "download", "--folder", str(folder))
        assert everything.returncode == 0, everything.stderr
        owner = owner_of(folder, name, records)
        removed = hostile_run(fake, "rm", name)
        gone = deleted(fake)
    if removed.returncode == 0:
        assert gone == [owner], (name, owner, gone)
    else:
        assert removed.returncode == 1 and gone == [], (removed.stderr, gone)
    return owner, gone


def test_rm_of_a_name_that_is_a_record_id_and_another_records_downloaded_file(
    hostile_run, tmp_path
):
    """Found by review (2026-12-05).

    ``resolve`` consults download's names (the catalogue) only when neither the
    record of the name (``record_id_of``) nor a record of that id exists. A record whose id
    is ``hello.txt`` (its file: ``other.bin``) and a record attached by hand whose file is
    ``hello.txt`` (download writes it as ``hello.txt``): ``rm hello.txt`` silently deletes
    the record ``hello.txt``, not the one whose file the user sees as ``hello.txt``. The
    documented rule ("a word that is both the name of a file and the id of another record is
    refused") must hold for the names download writes too: refused, exit code 1."""
    records = [
        {"id": "hello.txt", "attachment": attachment("hello.txt", "other.bin")},
        {"id": "by-hand", "attachment": attachment("by-hand", "hello.txt")},
    ]
    owner, _ = check_rm_deletes_what_download_named(hostile_run, tmp_path, records, "hello.txt")
    assert owner == "by-hand"


def test_rm_of_a_name_upload_gave_one_record_and_download_gives_another(hostile_run, tmp_path):
    """Found by review (2026-12-05).

    Sync uploaded ``x:y.txt`` (an ordinary Linux name; download writes it
    ``x_y.txt``) and upload attached a file named ``x_y.txt``. Both names are "own" in
    ``local_names``; the smaller id, the synced record, gets ``x_y.txt``, the uploaded one
    ``ID-x_y.txt``. ``rm x_y.txt`` (the file the user sees in the downloaded folder) finds
    the uploaded record by ``record_id_of`` first and deletes it, with no word of the other
    meaning. A name that designates two records (the name upload gave one, the name
    download writes for another) must be refused (or both mappings must agree)."""
    synced = record_id_of("x:y.txt")
    uploaded = record_id_of("x_y.txt")
    assert synced < uploaded  # So the synced record wins the name x_y.txt in a download.
    records = [
        {
            "id": synced,
            "last_modified": 1,
            "attachment": attachment(synced, "x:y.txt"),
            "synced_from": {"folder": "site", "path": "x:y.txt"},
        },
        {"id": uploaded, "last_modified": 2, "attachment": attachment(uploaded, "x_y.txt")},
    ]
    check_rm_deletes_what_download_named(hostile_run, tmp_path, records, "x_y.txt")


def test_rm_of_a_name_that_only_folds_to_another_records_file(hostile_run, tmp_path):
    """Found by review (2026-12-05).

    The catalogue is looked up by ``key`` (case and Unicode folded). A record
    attached by hand whose file is ``Report.pdf`` (download writes it ``by-hand-Report.pdf``
    since ``upload`` attached ``report.pdf`` to its own record): ``rm Report.pdf`` (the
    exact file name the user sees in Kinto Admin) deletes ``report.pdf``'s record, which
    was never named. A name that matches no record exactly but only another's folded name
    must be refused ("refuse rather than guess"), never delete that other record."""
    uploaded = record_id_of("report.pdf")
    records = [
        {"id": uploaded, "attachment": attachment(uploaded, "report.pdf")},
        {"id": "by-hand", "attachment": attachment("by-hand", "Report.pdf")},
    ]
    with Hostile(fake_kinto(records)) as fake:
        removed = hostile_run(fake, "rm", "Report.pdf")
        gone = deleted(fake)
    assert uploaded not in gone, (removed.returncode, removed.stdout, removed.stderr)


def test_rm_does_not_delete_a_record_changed_since_it_was_resolved(
    server, collection, tmp_path, run, monkeypatch
):
    """Found by review (2026-12-05).

    ``rm`` sends its ``DELETE`` without a precondition. ``rm hello.txt`` resolves
    the name through the files' names (the record ``x`` attached by hand with the file
    ``hello.txt``); another client then attaches ``budget.xlsx`` to ``x``: the name no longer
    designates it, yet ``rm`` deletes it, and the other user's file with it. ``sync --delete``
    and every upload carry ``If-Match``; ``rm`` must too (the ``last_modified`` it resolved):
    ``412``, reported, exit code 1, the record kept."""
    env = environment(server, collection, tmp_path)
    attach_by_hand(server, collection, "x", "hello.txt", b"hello\n")
    resolve = cli_main.resolve

    def resolved_then_changed(*args, **kwargs):
        found = resolve(*args, **kwargs)
        attach_by_hand(server, collection, "x", "budget.xlsx", b"another user's budget\n")
        return found

    monkeypatch.setattr(cli_main, "resolve", resolved_then_changed)
    removed = run(env, "rm", "hello.txt")

    kept = record(server, collection, "x")
    assert kept is not None and kept["attachment"]["filename"] == "budget.xlsx", removed.stdout
    assert removed.returncode == 1


def test_an_empty_name_is_no_such_record_not_a_lying_server(server, collection, tmp_path, run):
    """Found by review (2026-12-05).

    ``rm ""`` (or ``--id ""``, ``download ""``: an unset shell variable) is taken
    as a record id, whose URL is the collection's listing (``.../records/``): the command
    fetches the whole listing and stops with "the server answered another record", blaming
    the server, and every other name given is dropped with it. An empty name is no record:
    a usage error (exit code 2), or "no such file or record" for it alone."""
    env = environment(server, collection, tmp_path)
    attach_by_hand(server, collection, "x", "hello.txt", b"hello\n")

    removed = run(env, "rm", "", "--attachment-only", "--id", "x")

    assert "answered another record" not in removed.stderr, removed.stderr
    refused = removed.returncode == 2
    assert refused or (removed.returncode == 1 and "no such" in removed.stderr), removed.stderr


def test_a_download_of_one_record_keeps_another_records_download(
    server, collection, tmp_path, run
):
    """Found by review (2026-12-05).

    Two records whose files have one name: a whole download gives it to the smaller id
    (``a``), the other file becomes ``b-hello.txt``. ``download --id b`` alone names b's file
    ``hello.txt`` and replaced a's download there with b's bytes (the folder remembered only
    that a download wrote it): a's file gone from the folder, and b's bytes under the name of
    a's file. A file a download wrote for another record that still exists is kept (exit code
    1); once that record is gone, or with ``--overwrite``, it is replaced; what 1.0.0
    remembered (a sha256 alone) is replaced as it was."""
    env = environment(server, collection, tmp_path)
    attach_by_hand(server, collection, "a", "hello.txt", b"a's hello\n")
    attach_by_hand(server, collection, "b", "hello.txt", b"b's hello\n")
    folder = tmp_path / "out"
    assert run(env, "download", "--folder", str(folder)).returncode == 0
    assert (folder / "hello.txt").read_bytes() == b"a's hello\n"
    assert (folder / "b-hello.txt").read_bytes() == b"b's hello\n"

    alone = run(env, "download", "--folder", str(folder), "--id", "b")

    assert alone.returncode == 1, alone.stdout
    assert "hello.txt: the file there is the download of another record (a)" in alone.stderr
    assert (folder / "hello.txt").read_bytes() == b"a's hello\n"
    remembered = json.loads((folder / DOWNLOADED).read_text())
    assert remembered["hello.txt"]["record"] == "a"

    forced = run(env, "download", "--folder", str(folder), "--id", "b", "--overwrite")
    assert forced.returncode == 0, forced.stderr
    assert (folder / "hello.txt").read_bytes() == b"b's hello\n"
    assert json.loads((folder / DOWNLOADED).read_text())["hello.txt"]["record"] == "b"

    assert run(env, "download", "--folder", str(folder)).returncode == 0
    assert (folder / "hello.txt").read_bytes() == b"a's hello\n"  # a's name again: a's file.
    url = f"{server.url}/buckets/{BUCKET}/collections/{collection}/records/a"
    assert requests.delete(url, auth=ALICE, timeout=60).status_code == 200
    after = run(env, "download", "--folder", str(folder), "--id", "b")
    assert after.returncode == 0, after.stderr
    assert (folder / "hello.txt").read_bytes() == b"b's hello\n"


def test_what_an_older_version_remembered_is_replaced_as_it_was(server, collection, tmp_path, run):
    """A record of downloads with a sha256 alone per file (as 1.0.0 wrote it) still lets a
    download replace the file it wrote, whatever record asks."""
    env = environment(server, collection, tmp_path)
    attach_by_hand(server, collection, "a", "hello.txt", b"a's hello\n")
    attach_by_hand(server, collection, "b", "hello.txt", b"b's hello\n")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "hello.txt").write_bytes(b"old\n")
    (folder / DOWNLOADED).write_text(
        json.dumps({"hello.txt": hashlib.sha256(b"old\n").hexdigest()})
    )

    alone = run(env, "download", "--folder", str(folder), "--id", "b")

    assert alone.returncode == 0, alone.stderr
    assert (folder / "hello.txt").read_bytes() == b"b's hello\n"


def _record_url(server, collection, record_id):
    return f"{server.url}/buckets/{BUCKET}/collections/{collection}/records/{record_id}"


def test_a_download_of_one_record_with_the_same_bytes_leaves_another_records_file_its(
    server, collection, tmp_path, run
):
    """Found by review (2026-12-05).

    Records ``a`` and ``b`` both attach ``hello.txt`` with the same bytes (one file
    uploaded twice). A whole download writes a's file as ``hello.txt`` and b's as
    ``b-hello.txt``. ``download --id b`` names b's file ``hello.txt``, finds the same sha256
    there, says ``unchanged`` and remembers ``hello.txt`` as *b's* download
    (``Folder.remember`` with ``there == expected``), although a whole download wrote it for
    ``a``, which still exists. Once b's file changes on the server, ``download --id b``
    replaces ``hello.txt`` with b's new bytes: a's file is gone from the folder and b's bytes
    are under its name, the very loss the commit says it fixes ("a download of some records
    keeps another record's download while that record exists")."""
    env = environment(server, collection, tmp_path)
    same = b"the same logo\n"
    attach_by_hand(server, collection, "a", "hello.txt", same)
    attach_by_hand(server, collection, "b", "hello.txt", same)
    folder = tmp_path / "out"
    assert run(env, "download", "--folder", str(folder)).returncode == 0
    assert (folder / "hello.txt").read_bytes() == same
    assert json.loads((folder / DOWNLOADED).read_text())["hello.txt"]["record"] == "a"

    first = run(env, "download", "--folder", str(folder), "--id", "b")
    assert first.returncode == 0, first.stderr  # "unchanged hello.txt (b)"

    attach_by_hand(server, collection, "b", "hello.txt", b"b's new version\n")
    second = run(env, "download", "--folder", str(folder), "--id", "b")

    # Record a still exists, still names hello.txt, and a whole download gives it that name.
    assert (folder / "hello.txt").read_bytes() == same, (second.stdout, second.stderr)


def test_a_record_that_may_not_be_read_still_claims_its_file(server, collection, tmp_path, run):
    """Found by review (2026-12-05).

    ``claimed(owner)`` is ``remote.record(owner) is not None``, and ``Remote.record``
    answers None for a ``403`` as for a ``404``. Kinto answers ``403`` for a record that
    exists but that the caller may not read. Alice downloads the collection (``a`` gets
    ``hello.txt``, ``b`` gets ``b-hello.txt``); bob, who may read ``b`` only (a record
    permission), runs ``download --id b`` into the same folder: ``GET a`` answers ``403``,
    ``a`` is taken for gone, and a's file ``hello.txt`` is replaced by b's bytes, although
    ``a`` still exists (docs/cli.rst: "it keeps a file a download wrote for another record,
    while that record exists"). A 403 proves nothing about existence: the file must be
    kept (refused, exit code 1)."""
    env = environment(server, collection, tmp_path)
    attach_by_hand(server, collection, "a", "hello.txt", b"a's private hello\n")
    attach_by_hand(server, collection, "b", "hello.txt", b"b's public hello\n")
    shared = requests.patch(
        _record_url(server, collection, "b"),
        json={"permissions": {"read": ["system.Authenticated"]}},
        auth=ALICE,
        timeout=60,
    )
    assert shared.status_code == 200, shared.text
    folder = tmp_path / "out"
    assert run(env, "download", "--folder", str(folder)).returncode == 0
    assert (folder / "hello.txt").read_bytes() == b"a's private hello\n"
    bob = {**env, "KINTO_AUTH": "bob:passwd"}
    # a exists (alice reads it); bob is refused with a 403, not a 404.
    assert requests.get(_record_url(server, collection, "a"), auth=ALICE, timeout=60).ok
    assert (
        requests.get(
            _record_url(server, collection, "a"), auth=("bob", "passwd"), timeout=60
        ).status_code
        == 403
    )

    alone = run(bob, "download", "--folder", str(folder), "--id", "b")

    assert (folder / "hello.txt").read_bytes() == b"a's private hello\n", alone.stdout
    assert alone.returncode == 1


def test_what_1_0_0_remembered_is_kept_after_a_download_of_another_record(
    server, collection, tmp_path, run
):
    """Found by review (2026-12-05).

    A folder downloaded by 1.0.0 remembers ``{"hello.txt": sha256}``; the changelog
    promises it "is read as before". The first run of this version that writes something
    else (``download --id other``) saves every entry as ``{"sha256": ..., "record": null}``
    (``Folder._save`` writes the ``None`` record id of an old entry), and ``_entry`` drops an
    object whose ``record`` is no string on the next read: the folder has forgotten that a
    download wrote ``hello.txt``. When the record's file then changes on the server, every
    download, a whole one included, refuses forever ("no download wrote it as it is
    (changed here?)"), and only ``--overwrite`` (which also replaces files the user did edit)
    gets it: the folder is stuck."""
    env = environment(server, collection, tmp_path)
    attach_by_hand(server, collection, "a", "hello.txt", b"version 1\n")
    attach_by_hand(server, collection, "other", "other.txt", b"another file\n")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "hello.txt").write_bytes(b"version 1\n")  # What 1.0.0 downloaded, and said so.
    (folder / DOWNLOADED).write_text(
        json.dumps({"hello.txt": hashlib.sha256(b"version 1\n").hexdigest()})
    )

    some = run(env, "download", "--folder", str(folder), "--id", "other")
    assert some.returncode == 0, some.stderr

    attach_by_hand(server, collection, "a", "hello.txt", b"version 2\n")
    whole = run(env, "download", "--folder", str(folder))

    assert whole.returncode == 0, whole.stderr
    assert (folder / "hello.txt").read_bytes() == b"version 2\n"
