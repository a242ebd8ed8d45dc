"""The command-line client killed, faulted, or run twice at once: nothing it had is lost, no
record gets a file that never existed."""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import subprocess
import sys

import pytest

from kinto_attachment.cli import files, resumes, uploads
from kinto_attachment.cli.names import PARTS, record_id_of

from ..support.live import sha256_of, write_random_file
from .test_cli import (  # noqa: F401 (fixtures: a live server, a collection of it, run)
    BUCKET,
    _killed_after_a_chunk,
    attach_by_hand,
    collection,
    environment,
    record,
    run,
    server,
)


MiB = 1024 * 1024


def test_a_file_saved_during_its_upload_is_never_attached_torn(
    server,  # noqa: F811 (the fixture imported above)
    collection,  # noqa: F811
    tmp_path,
    run,  # noqa: F811
    monkeypatch,
):
    """Found by review (2026-12-05).

    ``upload --force`` (and ``upload`` of a record with no attachment yet) sent the file
    without its sha256: a file saved while it was sent (an editor, a build, a log rotated in
    place) reached the server torn (the first megabyte of one version, the rest of the next)
    and replaced the record's attachment before the command noticed. Every upload now hashes
    the file first and checks the bytes it sends: refused before the last byte."""
    name = "report.bin"
    good = os.urandom(3 * MiB)
    good_hash = attach_by_hand(server, collection, record_id_of(name), name, good)
    path = tmp_path / name
    first = os.urandom(3 * MiB)
    path.write_bytes(first)
    second = os.urandom(3 * MiB)

    class SavedMeanwhile(uploads.Pace):
        """After the first megabyte is read, the file is saved again in place."""

        def passed(self, size):
            super().passed(size)
            if self.done == MiB:
                with open(path, "r+b") as f:
                    f.write(second)

    monkeypatch.setattr(uploads, "Pace", SavedMeanwhile)
    env = environment(server, collection, tmp_path)
    result = run(env, "upload", "--force", str(path))

    stored = record(server, collection, record_id_of(name))["attachment"]["hash"]
    torn = sha256_of_bytes(first[:MiB] + second[MiB:])
    assert stored != torn, "the record's attachment is a torn file: " + result.stderr
    assert stored in (good_hash, sha256_of(path)), result.stderr


def sha256_of_bytes(content):
    return hashlib.sha256(content).hexdigest()


def test_a_forced_upload_is_not_resumed_with_a_rewritten_file(
    server,  # noqa: F811
    collection,  # noqa: F811
    tmp_path,
    run,  # noqa: F811
):
    """Found by review (2026-12-05).

    ``upload --force`` killed after a chunk, the file rewritten with its size and time
    (``rsync -t``, ``cp -p``), then run again: the resume key held no sha256 without a
    current attachment to compare, so the run resumed the first upload and attached the old
    first chunk followed by the new rest. The key always holds the file's sha256 now."""
    large = tmp_path / "big.bin"
    good_hash = write_random_file(large, 40 * MiB)
    env = environment(server, collection, tmp_path)
    assert run(env, "upload", str(large)).returncode == 0
    write_random_file(large, 40 * MiB)  # A new version, sent with --force, killed.
    state = tmp_path / "cache/kinto-attachment/uploads.json"
    _killed_after_a_chunk(env, ["upload", "--force", str(large)], state)

    times = large.stat()
    newest = write_random_file(large, 40 * MiB)  # Same size, other bytes, the time given back.
    os.utime(large, ns=(times.st_atime_ns, times.st_mtime_ns))
    again = run(env, "upload", "--force", str(large))

    stored = record(server, collection, record_id_of("big.bin"))["attachment"]["hash"]
    assert stored in (good_hash, newest), "a splice of two versions was attached: " + (
        again.stderr
    )


def _resume_key(path, record="https://kinto/v1/buckets/b/collections/c/records/r"):
    found = os.stat(path)
    return json.dumps([record, str(path), found.st_size, found.st_mtime_ns, "created-with"])


def test_two_runs_at_once_keep_each_others_resume_urls(tmp_path, monkeypatch):
    """Found by review (2026-12-05).

    Two runs at once share the state file: an entry run B wrote between run A's read and
    run A's rename was dropped (B, killed later, could not resume: its whole file sent
    again, its upload left on the server until it expires). Each change is made under a
    lock now: B waits for A, then adds its entry to A's."""
    state_path = tmp_path / "uploads.json"
    mine, theirs = tmp_path / "a.bin", tmp_path / "b.bin"
    mine.write_bytes(b"a" * 10)
    theirs.write_bytes(b"b" * 10)
    real_replace = os.replace
    other = (
        "from kinto_attachment.cli.resumes import State;"
        f"State({str(state_path)!r}).put({_resume_key(theirs)!r}, 'https://kinto/uploads/b')"
    )

    started = []

    def replace_after_the_other_run_wrote(src, dst, *args, **kwargs):
        # Run B comes to write its entry between run A's read and run A's rename.
        if not started:
            started.append(subprocess.Popen([sys.executable, "-c", other]))
            with contextlib.suppress(subprocess.TimeoutExpired):
                started[0].wait(timeout=2)  # It waits for run A's lock (or writes already).
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(resumes.os, "replace", replace_after_the_other_run_wrote)
    resumes.State(str(state_path)).put(_resume_key(mine), "https://kinto/uploads/a")
    assert started[0].wait(timeout=30) == 0

    entries = json.loads(state_path.read_text())
    assert _resume_key(mine) in entries
    assert _resume_key(theirs) in entries, "run B's resume URL was lost"


def test_without_hard_links_a_download_keeps_a_file_written_meanwhile(
    server,  # noqa: F811
    collection,  # noqa: F811
    tmp_path,
    run,  # noqa: F811
    monkeypatch,
):
    """Found by review (2026-12-05).

    Where the file system has no hard links (FAT, SMB, FUSE: ``link`` fails with
    ``EPERM``), a download looked whether its name was free, then renamed its part onto it:
    a file another process wrote in between was replaced without a word. The rename never
    replaces now (``renameat2`` with ``RENAME_NOREPLACE``)."""
    attach_by_hand(server, collection, record_id_of("notes.txt"), "notes.txt", NOTES)
    folder = tmp_path / "mirror"
    real_link, real_rename = os.link, files.rename_unless_taken

    def no_hard_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    def rename(name, source, target, directory):
        if name.endswith(".part") and target == "notes.txt":
            # Another process saves its own notes.txt just before the rename.
            (folder / "notes.txt").write_bytes(b"my own notes, written meanwhile\n")
        return real_rename(name, source, target, directory)

    monkeypatch.setattr(files.os, "link", no_hard_links)
    monkeypatch.setattr(files, "rename_unless_taken", rename)
    env = environment(server, collection, tmp_path)
    result = run(env, "download", "notes.txt", "--folder", str(folder))
    monkeypatch.setattr(files.os, "link", real_link)

    assert (folder / "notes.txt").read_bytes() == b"my own notes, written meanwhile\n", (
        result.stdout + result.stderr
    )


KILLED_IN_PUBLISH = """
import os, signal, sys
from kinto_attachment.cli import files, main

named = files.link_unless_taken

def killed(name, *args, **kwargs):  # kill -9 once the old file is set aside, before the new
    if name.startswith("naming."):  # is named (the folder's naming is tried first)
        return named(name, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

files.link_unless_taken = killed
sys.exit(main.main(sys.argv[1:]))
"""


def test_sync_delete_keeps_the_record_of_a_file_a_killed_download_set_aside(
    server,  # noqa: F811
    collection,  # noqa: F811
    tmp_path,
    run,  # noqa: F811
):
    """Found by review (2026-12-05).

    A folder synced from one machine, kept up to date on another by ``download``: a
    download killed (``kill -9``) after it set the old copy aside, before the new file had
    its name, left no file at that path; ``sync --delete`` on that machine took it for
    gone and deleted its record. A file set aside counts as there."""
    machine_one, machine_two = tmp_path / "one" / "site", tmp_path / "two" / "site"
    machine_one.mkdir(parents=True)
    (machine_one / "a.txt").write_bytes(b"first version\n")
    env = environment(server, collection, tmp_path)
    assert run(env, "sync", str(machine_one)).returncode == 0
    assert run(env, "download", "--folder", str(machine_two)).returncode == 0
    (machine_one / "a.txt").write_bytes(b"second version\n")
    assert run(env, "sync", str(machine_one)).returncode == 0

    killed = subprocess.run(
        [sys.executable, "-c", KILLED_IN_PUBLISH, "download", "--folder", str(machine_two)],
        env=env,
        capture_output=True,
    )
    assert killed.returncode == -9, killed.stderr
    assert not (machine_two / "a.txt").exists()  # Set aside, in the parts folder.

    result = run(env, "sync", str(machine_two), "--delete")

    assert record(server, collection, record_id_of("a.txt")) is not None, result.stdout


NOTES = b"the server's notes\n"


def test_a_file_system_that_can_only_replace_gets_no_download(
    server,  # noqa: F811
    collection,  # noqa: F811
    tmp_path,
    run,  # noqa: F811
    monkeypatch,
):
    """Where the file system has neither hard links nor a rename that never replaces (FAT,
    SMB, FUSE, with a C library older than ``renameat2``), a download is not given its name
    (it could replace a file written meanwhile): it stays in the parts folder, said, exit code
    1; and a file it would replace keeps its name, run after run. Found by review
    (2026-12-05): that file was set aside first, then could not be given its name back."""
    attach_by_hand(server, collection, record_id_of("notes.txt"), "notes.txt", NOTES)
    attach_by_hand(server, collection, record_id_of("new.txt"), "new.txt", b"new\n")
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(b"an older copy\n")

    def no_hard_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(files.os, "link", no_hard_links)
    monkeypatch.setattr(files, "_RENAME_NOREPLACE", None)
    env = environment(server, collection, tmp_path)
    for _ in range(2):
        result = run(env, "download", "--folder", str(folder), "--overwrite")
        assert result.returncode == 1
        assert "can name a file only by replacing" in result.stderr
        assert (folder / "notes.txt").read_bytes() == b"an older copy\n", result.stderr
        assert not (folder / "new.txt").exists()
        parts = sorted(p.name for p in (folder / PARTS).iterdir())
        assert [name for name in parts if name.endswith(".part")], parts
        assert not [name for name in parts if name.endswith(".aside")], parts


def test_uploads_go_where_the_state_file_cannot_be_locked(
    server,  # noqa: F811
    collection,  # noqa: F811
    tmp_path,
    run,  # noqa: F811
    monkeypatch,
):
    """``~/.cache`` on NFS without a lock manager: ``flock`` fails (``ENOLCK``). The lock
    only keeps runs at once from dropping each other's resume URLs: uploads go through
    unlocked. Found by review (2026-12-05): every upload over 8 MiB failed."""

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(resumes.fcntl, "flock", no_locks)
    large = tmp_path / "big.bin"
    digest = write_random_file(large, 10 * MiB)
    env = environment(server, collection, tmp_path)
    result = run(env, "upload", str(large))

    assert result.returncode == 0, result.stderr
    assert record(server, collection, record_id_of("big.bin"))["attachment"]["hash"] == digest


def test_a_rename_that_never_replaces(tmp_path):
    """The system's rename without replacing: a name taken is ``FileExistsError``, a free one
    is given."""
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileExistsError):
            files.rename_unless_taken("a", fd, "b", fd)
        files.rename_unless_taken("a", fd, "c", fd)
    finally:
        os.close(fd)
    assert (tmp_path / "b").read_bytes() == b"b"
    assert (tmp_path / "c").read_bytes() == b"a"
    assert not (tmp_path / "a").exists()


HOLDS_LOCK = """
import errno, fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError as e:
    print("held" if e.errno in (errno.EAGAIN, errno.EACCES) else f"error {e}")
else:
    print("free")
"""


def test_the_resume_state_is_locked_where_flock_is_a_posix_lock(tmp_path, monkeypatch):
    """On NFS, ``flock`` is a whole-file POSIX lock, which needs a file open to write: the
    lock file opened read-only made every lock fail (EBADF) and, taken for "no locks here",
    left changes unlocked. Found by review (2026-12-05). NFS's lock is ``lockf``'s here;
    another process looks whether it is held while the entries change."""
    monkeypatch.setattr(resumes.fcntl, "flock", lambda fd, op: fcntl.lockf(fd, op))
    state = resumes.State(str(tmp_path / "cache" / "uploads.json"))
    seen, read = [], resumes.State._read

    def watched(self):
        probe = subprocess.run(
            [sys.executable, "-c", HOLDS_LOCK, f"{self.path}.lock"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        seen.append(probe.stdout.strip() or probe.stderr)
        return read(self)

    monkeypatch.setattr(resumes.State, "_read", watched)
    state.put('["url", "/nowhere", 1, 2, "x"]', "http://server/upload/1")
    assert seen == ["held"], seen


def test_probes_left_by_killed_runs_are_no_bother(
    server,  # noqa: F811
    collection,  # noqa: F811
    tmp_path,
    run,  # noqa: F811
):
    """Before a download replaces a file, whether the folder can name files without replacing
    is tried on a probe of the parts folder: a probe another run left (killed, or running
    under the same pid in another container: its name was ``naming.<pid>``) failed the
    download. Found by review (2026-12-05): each probe has a random name now."""
    attach_by_hand(server, collection, record_id_of("a.txt"), "a.txt", b"first version\n")
    env = environment(server, collection, tmp_path)
    folder = tmp_path / "mirror"
    assert run(env, "download", "--folder", str(folder)).returncode == 0
    attach_by_hand(server, collection, record_id_of("a.txt"), "a.txt", b"second version\n")
    (folder / PARTS).mkdir(exist_ok=True)
    for name in (f"naming.{os.getpid()}", f"naming.{os.getpid()}.named", "naming.1.named"):
        (folder / PARTS / name).write_bytes(b"")

    result = run(env, "download", "--folder", str(folder))
    assert result.returncode == 0, result.stderr
    assert (folder / "a.txt").read_bytes() == b"second version\n"
