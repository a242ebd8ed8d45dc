"""Properties of the command line's names (:mod:`kinto_attachment.cli.names`): whatever ids,
file names and marks a server lists (any Unicode, lone surrogates, separators, NUL, ``..``,
very long), each record's local path is inside the folder, a file of its own, and names the
same record again when given back to the command."""

import hashlib
import os
import unicodedata

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kinto_attachment.cli import sync
from kinto_attachment.cli.folder import Folder
from kinto_attachment.cli.names import (
    COMPONENT_BYTES,
    MARK,
    PARTS,
    argument_path,
    component,
    key,
    local_names,
    record_id_of,
    shown,
)


#: Every code point, lone surrogates included (JSON can carry them: ``"\ud800"``).
ANY = st.characters(exclude_categories=())
TRICKY = st.sampled_from(
    ["", ".", "..", "/", "\\", "\0", "a/../b", "/etc/passwd", "CON", "nul.txt", "com1",
     "a.", "a ", ".git", ".bashrc", PARTS, "\x1b[2J", "\u202egnp.exe", "é" * 300,
     "x" * 300 + ".tar.gz"]
)  # fmt: skip
TEXT = TRICKY | st.text(ANY, max_size=300)
PATH = st.lists(TEXT, min_size=1, max_size=4).map("/".join)


@st.composite
def records(draw):
    """A record as a server may list it: any id, any file name, maybe a mark (sometimes one
    whose path derives the id, as sync writes them)."""
    record = {"id": draw(TEXT)}
    filename = draw(st.none() | TEXT)
    if filename is not None:
        record["attachment"] = {"filename": filename}
    kind = draw(st.sampled_from(["none", "forged", "synced", "uploaded"]))
    if kind in ("forged", "synced"):
        path = draw(PATH)
        record["synced_from"] = {"folder": draw(TEXT), "path": path}
        if kind == "synced" and argument_path(path) == path:
            record["id"] = record_id_of(path)
    elif kind == "uploaded" and filename and argument_path(filename) == filename:
        record["id"] = record_id_of(filename)
    return record


def inside(root, path):
    return os.path.commonpath([root, os.path.normpath(os.path.join(root, path))]) == root


@given(TEXT)
@example("..")
@example("a\0b")
def test_a_component_is_one_safe_name(text):
    name = component(text)
    assert name and not name.startswith(".")  # Nor ".", "..", nor hidden.
    assert not set(name) & set("/\\\0")
    assert len(name.encode()) <= COMPONENT_BYTES  # And encodable: no lone surrogate.
    assert shown(name) == name  # Nothing a terminal would obey.
    assert component(name) == name
    assert inside("/folder", name) and os.path.dirname(os.path.join("/folder", name)) == "/folder"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), max_size=8, unique_by=lambda r: r["id"]), st.randoms())
def test_local_paths_are_inside_the_folder_and_name_their_record(listed, shuffle):
    names = local_names(listed)
    assert set(names) == {r["id"] for r in listed}
    keys = {key(path): record_id for record_id, path in names.items()}
    assert len(keys) == len(listed)  # No two records share a file, whatever the case.
    for record_id, path in names.items():
        parts = path.split("/")
        assert all(component(part) == part for part in parts)
        assert inside("/folder", path)
        assert key(parts[0]) != key(PARTS)
        for n in range(1, len(parts)):  # No file where another record needs a folder.
            assert key("/".join(parts[:n])) not in keys
        # Given back to the command, the name designates the same record.
        assert keys[key(argument_path(path))] == record_id
    shuffled = list(listed)
    shuffle.shuffle(shuffled)
    assert local_names(shuffled) == names  # Whatever order the server lists them in.


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), min_size=1, max_size=6, unique_by=lambda r: r["id"]))
def test_local_paths_are_files_of_their_own_on_disk(tmp_path_factory, listed):
    """Each name written through :class:`~kinto_attachment.cli.folder.Folder`, as downloads
    write: every file lands inside the folder, one per record."""
    root = tmp_path_factory.mktemp("names")
    names = local_names(listed)
    with Folder(str(root / "out")) as folder:
        for record_id, path in names.items():
            *parents, name = path.split("/")
            directory = folder.directory(parents)
            fd, _ = folder.part("part", 100)
            os.write(fd, record_id.encode(errors="surrogatepass"))
            os.close(fd)
            folder.publish("part", directory, name, None, path)  # Each a name of its own.
            os.close(directory)
    found = {
        os.path.relpath(os.path.join(where, name), root / "out")
        for where, _, files in os.walk(root / "out")
        for name in files
    }
    assert found == set(names.values())
    assert os.listdir(root) == ["out"]


def test_paths_as_typed():
    assert argument_path("./fonts//a.woff2") == "fonts/a.woff2"
    assert argument_path("/etc/passwd") is None
    assert argument_path("a/../b") is None
    assert argument_path("\udcff") is None


def test_collisions_are_resolved_inside_the_folder():
    """A name taken as a file, as a folder, and with the id in front: the next tries go on
    until one is free, never outside the folder."""
    listed = [
        {"id": record_id_of("f"), "attachment": {"filename": "f"}},
        {"id": record_id_of("r-f"), "attachment": {"filename": "r-f"}},
        {"id": "r", "attachment": {"filename": "f"}},
        {"id": "a", "attachment": {"filename": "sub"}, "synced_from": {"path": "sub"}},
        {"id": record_id_of("sub/x"), "synced_from": {"folder": "s", "path": "sub/x"}},
        {"id": record_id_of("f/y"), "synced_from": {"folder": "s", "path": "f/y"}},
    ]
    assert local_names(listed) == {
        record_id_of("f"): "f",
        record_id_of("r-f"): "r-f",
        "r": "r-2-f",
        "a": "a-sub",
        record_id_of("sub/x"): "sub/x",
        record_id_of("f/y"): f"{record_id_of('f/y')}-y",
    }


class _Remote:
    def __init__(self, records):
        self._records = records

    def records(self):
        return list(self._records)


def _record(folder, path, content):
    digest = hashlib.sha256(content).hexdigest()
    return {
        "id": record_id_of(path),
        "last_modified": 1,
        "attachment": {"hash": digest, "size": len(content), "filename": path},
        MARK: {"folder": folder, "path": path, "sha256": digest},
    }


def test_sync_delete_deletes_the_record_of_a_gone_file_whose_twin_form_remains(tmp_path):
    """Found by review (2026-12-05).

    Linux keeps ``café.txt`` composed (NFC) and decomposed (NFD) apart: two files, each
    synced to its own record (the fix says so: "each then has its own record"). Once the
    NFD one is deleted, its record is gone from the folder, but ``plan`` skips every mark
    whose NFC form is that of a present path (``_form(owner[1]) in present``), and
    ``there()`` would find the NFC file for it anyway: the record is neither ``gone`` nor
    ``kept``, never deleted by ``sync --delete`` (before the fix it was), and ``download``
    brings the deleted file back. Fault: ``sync.plan`` (``present`` as NFC forms) and
    ``sync.there`` (form matching even where the exact name has a record of its own).
    Fix: a record is present when an entry took it (``entry.record_id``), not when a path
    of its form exists; ``there()`` should fall back to another form only for a name
    that has no record of its own (is not itself a path in the folder)."""
    composed = unicodedata.normalize("NFC", "café.txt")
    decomposed = unicodedata.normalize("NFD", composed)
    site = tmp_path / "site"
    site.mkdir()
    (site / composed).write_bytes(b"menu\n")
    records = [
        _record("site", composed, b"menu\n"),
        _record("site", decomposed, b"carte\n"),  # Its file was deleted from the folder.
    ]

    plan = sync.plan(_Remote(records), str(site), "site")

    assert [e.record_id for e in plan.unchanged] == [record_id_of(composed)]
    assert [e.record_id for e in plan.gone] == [record_id_of(decomposed)], list(plan.lines(True))


def test_sync_plan_does_not_list_the_folder_once_per_gone_record(tmp_path, monkeypatch):
    """Found by review (2026-12-05).

    ``there()`` now lists a path's directory (``os.listdir``) and normalises every name in
    it whenever the exact name is missing, which is the case of every gone record: a plan is
    O(gone records x files of the folder). Measured: 2,000 files and 2,000 gone records,
    1.5 s; 4,000 and 4,000, 6.5 s (0.05 s without gone records); ``sync --delete`` calls
    ``there()`` again before each deletion. A folder of 40,000 files after 40,000 were
    removed takes about ten minutes to plan. Fault: ``sync.there`` (a ``listdir`` per
    call). Fix: list each directory once per plan (a cache of ``{NFC form: name}`` per
    directory, passed to ``there``), or try the path's NFC and NFD forms with ``lexists``
    before any listing."""
    site = tmp_path / "site"
    site.mkdir()
    for i in range(300):
        (site / f"f{i:04}.txt").write_bytes(b"x")
    records = [_record("site", f"gone{i:04}.txt", b"y") for i in range(300)]
    listed = []
    real = sync.os.listdir

    def counting(path="."):
        listed.append(path)
        return real(path)

    monkeypatch.setattr(sync.os, "listdir", counting)
    plan = sync.plan(_Remote(records), str(site), "site")
    assert len(plan.gone) == 300
    assert len(listed) <= 1, f"{len(listed)} listings of the folder for one plan"


def test_every_name_windows_reserves_gets_a_leading_underscore():
    """Found by review (2026-12-05).

    It was: ``COM0``, ``LPT0``, ``CONIN$`` and ``CONOUT$``, which Microsoft lists among the
    device names Windows reserves, were written as they are. Fixed: they get a ``_`` as
    the others do, whatever their case and extension."""
    for name in ("COM0.txt", "lpt0", "CONIN$", "conout$.log", "COM1.txt", "nul"):
        assert component(name) == "_" + name
    assert component("COM10.txt") == "COM10.txt"  # Not a device.
