"""The ``kinto-attachment`` command line against a hostile or buggy server, runs interrupted
or at once on one folder, and credentials that must stay with the server's origin (found by,
or held against, a review of 2026-12-05)."""

import hashlib
import json
import os
import threading
from urllib.parse import urlsplit

import pytest
from rich.console import Console

from kinto_attachment.cli import downloads, progress
from kinto_attachment.cli import folder as folder_module
from kinto_attachment.cli import sync as cli_sync
from kinto_attachment.cli.main import main
from kinto_attachment.cli.names import DOWNLOADED, PARTS, aside_of, record_id_of

from ..support.cli_support import Hostile
from .test_cli_hostile import (
    CONTENT,
    DIGEST,
    RECORDS,
    SIZE,
    against,
    attachment,
    kinto,
    tree,
)


@pytest.fixture
def run(monkeypatch, capsys, tmp_path):
    """``run(server, *args, auth=...)``: the command against a :class:`Hostile` server."""
    return against(monkeypatch, capsys, tmp_path)


def on_a_terminal(monkeypatch):
    """The progress bars drawn, as for a user at a terminal."""
    monkeypatch.setattr(
        progress,
        "Console",
        lambda stderr=True: Console(stderr=stderr, force_terminal=True, width=100),
    )


def test_a_size_no_float_can_hold_fails_alone_on_a_terminal(tmp_path, run, monkeypatch):
    """Found by review (2026-12-05).

    It was: a record announcing a size no float holds (``10**309``, a valid JSON integer)
    made the progress bars raise ``OverflowError`` at a terminal: a traceback that stopped
    the command. Fixed: a size over ``2**63 - 1`` (no file system's) is no valid size: the
    record is reported and skipped, the others downloaded, exit code 1."""
    on_a_terminal(monkeypatch)
    folder = tmp_path / "out"
    records = [
        {"id": "huge", "attachment": attachment("huge.txt", size=10**309)},
        {"id": "fine", "attachment": attachment("fine.txt")},
    ]

    with Hostile(kinto(records)) as server:
        result = run(server, "download", "--folder", str(folder))

    assert result.returncode == 1, result.stderr
    assert "huge" in result.stderr
    assert (folder / "fine.txt").read_bytes() == CONTENT


def test_a_huge_but_float_sized_record_is_a_failure_on_a_terminal(tmp_path, run, monkeypatch):
    """Held against a review (2026-12-05).

    A size of 2**62 bytes (announced, never sent) is drawn on a terminal and fails alone,
    its part kept to resume; the other record is downloaded."""
    on_a_terminal(monkeypatch)
    folder = tmp_path / "out"
    records = [
        {"id": "big", "attachment": attachment("big.txt", size=2**62)},
        {"id": "fine", "attachment": attachment("fine.txt")},
    ]

    with Hostile(kinto(records)) as server:
        result = run(server, "download", "--folder", str(folder))

    assert result.returncode == 1
    assert "big.txt: the server sent" in result.stderr
    assert (folder / "fine.txt").read_bytes() == CONTENT
    assert not (folder / "big.txt").exists()


def listing_then(elsewhere, how):
    """A fake Kinto whose listing sends the command to ``elsewhere`` (a :class:`Hostile` on
    another port of the same host: another origin), by a redirect or by its ``Next-Page``;
    it sets a session cookie, as a proxy in front of Kinto that authenticates may."""

    def answer(request):
        if urlsplit(request.path).path != RECORDS:
            return 404, {}, b"{}"
        headers = {"Content-Type": "application/json", "Set-Cookie": "session=s3cret; Path=/"}
        if how == "redirect":
            return 302, {**headers, "Location": f"{elsewhere.origin}/elsewhere"}, b""
        headers["Next-Page"] = f"{elsewhere.origin}/page-2"
        return 200, headers, json.dumps({"data": [{"id": "x"}]}).encode()

    return answer


def empty_page(request):
    return 200, {"Content-Type": "application/json"}, b'{"data": []}'


@pytest.mark.parametrize("how", ["redirect", "next-page"])
def test_the_servers_cookies_never_go_to_another_origin(tmp_path, run, how):
    """Found by review (2026-12-05).

    It was: the session kept the cookies the server set (a proxy in front of Kinto that
    authenticates) and sent them to any port of its host, by a redirect or a ``Next-Page``
    elsewhere. Fixed: requests to another origin carry no cookie, as no ``Authorization``."""
    with Hostile(empty_page) as elsewhere:
        with Hostile(listing_then(elsewhere, how)) as server:
            result = run(server, "download", "--folder", str(tmp_path / "out"))
        sent = [(r.path, r.headers.get("Cookie")) for r in elsewhere.requests]

    assert result.returncode == 0, result.stderr
    assert sent and all(cookie is None for _, cookie in sent), sent


@pytest.mark.parametrize("auth", ["", "alice:given-password"])
def test_netrc_credentials_of_the_servers_host_never_go_to_another_port(
    tmp_path, run, monkeypatch, auth
):
    """Found by review (2026-12-05).

    It was: on a redirect, requests put back the ``~/.netrc`` entry of the new URL's host,
    and .netrc knows hosts, not ports: a redirect to another port of the server's host got
    the password, with or without --auth. Fixed: no credentials at all to another origin."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login alice password netrc-s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))

    with Hostile(empty_page) as elsewhere:
        with Hostile(listing_then(elsewhere, "redirect")) as server:
            result = run(server, "download", "--folder", str(tmp_path / "out"), auth=auth)
        sent = [r.headers.get("Authorization") for r in elsewhere.requests]

    assert result.returncode == 0, result.stderr
    assert sent == [None], sent


def three_records():
    return [{"id": f"r{n}", "attachment": attachment(f"r{n}.txt")} for n in (1, 2, 3)]


def remembered(folder):
    return set(json.loads((folder / DOWNLOADED).read_text()))


def test_a_run_that_ends_does_not_remove_the_parts_folder_another_run_writes_in(
    tmp_path, run, monkeypatch
):
    """Found by review (2026-12-05).

    It was: of two downloads into one folder at once, the first to end removed the empty
    parts folder that the other held open: the other's next part and its record of
    downloads went to a folder that no longer was (a failed file, downloads forgotten, so
    later changes refused as local edits). Fixed: each run holds the parts folder shared;
    the last to end removes it."""
    folder = tmp_path / "out"
    published = folder_module.Folder.publish
    state = {"other": None}

    def publish_then_another_run_ends(self, *args):
        published(self, *args)
        if state["other"] is None:  # Once: another run downloads r3 from start to end.
            state["other"] = main(["download", "--id", "r3", "--folder", str(folder)])

    monkeypatch.setattr(folder_module.Folder, "publish", publish_then_another_run_ends)

    with Hostile(kinto(three_records())) as server:
        result = run(server, "download", "--folder", str(folder), "--id", "r1", "--id", "r2")

    assert state["other"] == 0
    assert result.returncode == 0, result.stderr
    assert tree(folder) == {name: CONTENT for name in ("r1.txt", "r2.txt", "r3.txt")}
    assert remembered(folder) == {"r1.txt", "r2.txt", "r3.txt"}


def test_two_runs_ending_at_once_keep_each_others_record_of_downloads(tmp_path, run, monkeypatch):
    """Found by review (2026-12-05).

    It was: ``Folder._save`` read the record of downloads, added its run's and wrote it
    back with no lock: a run saving in between lost its entries. Fixed: the folder is
    locked from the read to the rename (and temporary names are random, not pids)."""
    folder = tmp_path / "out"
    (folder / PARTS).mkdir(parents=True)
    (folder / PARTS / f"{'0' * 64}.part").write_bytes(b"left by a run killed earlier")
    read = folder_module.Folder._read_downloaded
    saved = folder_module.Folder._save
    state = {"armed": False, "started": False, "other": None}

    def save(self):
        state["armed"] = not state["started"]
        saved(self)

    def read_then_another_run_saves(self):
        found = read(self)
        if state["armed"]:  # Between this run's read and its write: another run ends.
            state["armed"], state["started"] = False, True
            other.start()
            other.join(2)  # It waits for this run's save (the folder's lock), or is done.
        return found

    def other_run():
        state["other"] = main(["download", "--id", "r2", "--folder", str(folder)])

    other = threading.Thread(target=other_run)

    monkeypatch.setattr(folder_module.Folder, "_save", save)
    monkeypatch.setattr(folder_module.Folder, "_read_downloaded", read_then_another_run_saves)

    with Hostile(kinto(three_records())) as server:
        result = run(server, "download", "--folder", str(folder), "--id", "r1")
        other.join(30)

    assert state["other"] == 0
    assert result.returncode == 0, result.stderr
    assert (folder / "r1.txt").read_bytes() == (folder / "r2.txt").read_bytes() == CONTENT
    assert remembered(folder) == {"r1.txt", "r2.txt"}


def everything(root):
    """Every path under ``root``, folders included."""
    return sorted(
        os.path.relpath(os.path.join(top, name), root)
        for top, folders, files in os.walk(root)
        for name in folders + files
    )


def marked(path, digest=DIGEST, size=SIZE):
    """A record that the sync of a folder "site" made for ``path``."""
    return {
        "id": record_id_of(path),
        "last_modified": 1,
        "attachment": attachment(path.rsplit("/", 1)[-1], size=size, digest=digest),
        "synced_from": {"folder": "site", "path": path, "sha256": digest},
    }


def test_a_failed_download_leaves_no_folders_behind(tmp_path, run):
    """Found by review (2026-12-05).

    It was: the subfolders of a record's path were made before its first byte came, and
    stayed, empty, when its download failed (a lying server planted any tree of folders).
    Fixed: they are made once the file is verified."""
    folder = tmp_path / "out"
    folder.mkdir()

    def wrong_bytes(request):
        if request.path.endswith("/attachment"):
            return 200, {}, b"x" * SIZE
        return None

    with Hostile(kinto([marked("fonts/woff2/a.woff2")], extra=wrong_bytes)) as server:
        result = run(server, "download", "--folder", str(folder))

    assert result.returncode == 1
    assert "does not have the record's sha256" in result.stderr
    assert everything(folder) == []


PASSWORD = "pa55-w0rd-in-the-url"


@pytest.mark.parametrize(
    "url",
    [
        f"http://alice:{PASSWORD}@127.0.0.1:88a8/v1",  # A typo in the port.
        f"http://alice:{PASSWORD}@127.0.0.1:8888/v1?verbose=1",  # A query.
        f"http://alice:{PASSWORD}@127.0.0.1:8888/v1#top",  # A fragment.
        f"htps://alice:{PASSWORD}@127.0.0.1:8888/v1",  # A typo in the scheme.
    ],
)
def test_a_wrong_server_url_with_credentials_never_prints_them(tmp_path, run, url):
    """Found by review (2026-12-05).

    It was: a ``--server`` URL holding credentials was refused without repeating them only
    when otherwise well formed: a typo in its port or scheme, or a query, printed it whole,
    password included. Fixed: a ``--server`` with an ``@`` is refused first."""
    with Hostile(empty_page) as server:
        result = run(server, "download", "--folder", str(tmp_path / "out"), server_url=url)
        requests = list(server.requests)

    assert result.returncode == 2, result.stderr
    assert requests == []
    assert PASSWORD not in result.stdout + result.stderr, result.stderr


@pytest.mark.parametrize("replaced", ["subfolder", "folder"])
def test_a_folder_replaced_by_a_link_during_the_download_is_not_followed(tmp_path, run, replaced):
    """Held against a review (2026-12-05).

    While the bytes come, a link to a folder outside is put where the file's
    subfolder goes (made once the file is verified: the link is refused then), or
    ``--folder`` itself is moved away and a link put in its place (the file is written
    through the descriptor opened before, into the folder moved away): never through the
    link; nothing lands outside."""
    folder, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    swapped = folder / "sub" if replaced == "subfolder" else folder

    def swap_then_send(request):
        if request.path.endswith("/attachment"):
            if swapped.exists():
                swapped.rename(swapped.with_name(swapped.name + "-moved"))
            swapped.symlink_to(outside, target_is_directory=True)
            return 200, {}, CONTENT
        return None

    with Hostile(kinto([marked("sub/a.txt")], extra=swap_then_send)) as server:
        result = run(server, "download", "--folder", str(folder))

    assert everything(outside) == []
    if replaced == "subfolder":
        assert result.returncode == 1
        assert "sub: not a folder (a link?): not followed" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    written = swapped.with_name(swapped.name + "-moved") / "sub" / "a.txt"
    assert written.read_bytes() == CONTENT


NEW = b"the record's new version, which the server fails to send right\n"


@pytest.mark.parametrize("failure", ["wrong bytes", "cut short", "interrupted"])
def test_a_failed_download_leaves_the_good_file_there_as_it_was(
    tmp_path, run, monkeypatch, failure
):
    """Held against a review (2026-12-05).

    A record changed on the server; its new version's download fails (bytes
    that are not its sha256, a body cut short, Ctrl-C in the middle): the file the last
    download wrote stays under its name, whole, still remembered, nothing partial under
    the final name (what came waits in the parts folder to resume, or is dropped)."""
    folder = tmp_path / "out"
    new_digest = hashlib.sha256(NEW).hexdigest()
    records = [{"id": "r", "attachment": attachment("r.txt")}]
    with Hostile(kinto(records)) as server:
        assert run(server, "download", "--folder", str(folder)).returncode == 0
    assert (folder / "r.txt").read_bytes() == CONTENT

    records = [{"id": "r", "attachment": attachment("r.txt", len(NEW), new_digest)}]
    sent = {"wrong bytes": b"y" * len(NEW), "cut short": NEW[:9], "interrupted": NEW}[failure]

    def failing(request):
        if request.path.endswith("/attachment"):
            return 200, {"Content-Length": str(len(NEW)), "Connection": "close"}, sent
        return None

    if failure == "interrupted":

        def interrupt(fd, data):
            raise KeyboardInterrupt

        monkeypatch.setattr(downloads, "_write", interrupt)
    with Hostile(kinto(records, extra=failing)) as server:
        result = run(server, "download", "--folder", str(folder))

    assert result.returncode == (130 if failure == "interrupted" else 1), result.stderr
    assert (folder / "r.txt").read_bytes() == CONTENT
    assert json.loads((folder / DOWNLOADED).read_text())["r.txt"]["sha256"] == DIGEST
    names = {p for p in everything(folder) if not p.startswith(PARTS)} - {DOWNLOADED}
    assert names == {"r.txt"}


def test_names_one_file_system_takes_for_one_stay_apart(tmp_path, run):
    """Held against a review (2026-12-05).

    One collection lists names that differ only by case or Unicode form (one file
    on macOS and Windows), a name with a terminal escape, a device name, a name of 400
    characters: each record gets a file of its own, with a name no other has in any case
    or form, at most 255 bytes, no control character; nothing the server named reaches the
    terminal unescaped."""
    import unicodedata

    from kinto_attachment.cli.names import key

    nfc = unicodedata.normalize("NFC", "Café.txt")
    nfd = unicodedata.normalize("NFD", "Café.txt")
    filenames = [nfc, nfd, "CAFÉ.TXT", "café.txt", "a\x1b[2Jb.txt", "LPT¹.log", "é" * 400]
    records = [{"id": f"r{n}", "attachment": attachment(name)} for n, name in enumerate(filenames)]
    folder = tmp_path / "out"

    with Hostile(kinto(records)) as server:
        result = run(server, "download", "--folder", str(folder))

    assert result.returncode == 0, result.stderr
    written = [p for p in everything(folder) if p != DOWNLOADED]
    assert len(written) == len(filenames)
    assert len({key(p) for p in written}) == len(filenames)
    assert all(len(p.encode()) <= 255 and "\x1b" not in p for p in written)
    assert "_LPT¹.log" in written
    assert "\x1b" not in result.stdout + result.stderr


def test_a_file_set_aside_by_a_download_meanwhile_is_still_there(tmp_path, monkeypatch):
    """Found by review (2026-12-05).

    It was: ``sync --delete`` asked whether a file is still there by looking for the copy a
    download sets aside first, then for the file: a download that set the file aside
    between the two looks made it seem gone, and its record was deleted. Fixed: the file
    first, then its copy (a download sets aside before the new version takes the name, and
    drops the copy after: one of the two is always seen)."""
    folder = tmp_path / "site"
    (folder / PARTS).mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"kept")
    lexists, looks = os.path.lexists, []

    def a_download_sets_it_aside_after_the_first_look(path):
        found = lexists(path)
        if not looks:
            os.rename(folder / "a.txt", folder / PARTS / aside_of("a.txt"))
        looks.append(path)
        return found

    monkeypatch.setattr(cli_sync.os.path, "lexists", a_download_sets_it_aside_after_the_first_look)
    assert cli_sync.there(str(folder), "a.txt", [])
