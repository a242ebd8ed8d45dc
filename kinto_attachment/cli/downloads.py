"""One record's attachment into a folder: streamed, bounded, resumed, verified.

The bytes go to a part file in the folder's :data:`~.names.PARTS` (named by the sha256 they
must have, so a part is never another file's) and get their name only once their sha256 is
the record's. Never more than the record's ``size`` is read: a server that sends more is cut
off there (and what it sent then fails the sha256 unless it was the file). A part left by an
interrupted run is continued with ``Range`` (and ``If-Range``: if the attachment changed
meanwhile, the server sends it whole and the part starts over). A file already there with
the right sha256 is not downloaded again; one with another is replaced only when it is what
a download wrote there (:meth:`~.folder.Folder.downloaded`), and only if it did not change
while the new one came.
"""

import hashlib
import os
import re

import urllib3

from .answers import Failure
from .files import hash_of, open_file, stamp
from .names import shown
from .pace import CHUNK, Pace


SHA256 = re.compile(r"[0-9a-f]{64}")
#: The largest size a file may have (a file system's ``off_t``): a record saying more is no
#: file (and its size would not even fit in a float, as the progress bars need).
MAX_SIZE = 2**63 - 1


def check(attachment):
    """Why the ``attachment`` a server describes cannot be downloaded, or None."""
    if attachment is None:
        return "no attachment"
    if not isinstance(attachment, dict):
        return "the record's attachment is no object"
    size, digest = attachment.get("size"), attachment.get("hash")
    if not isinstance(digest, str) or not SHA256.fullmatch(digest):
        return "the record's attachment has no valid sha256"
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        return "the record's attachment has no valid size"
    return None


def _found(directory, name):
    """``(sha256, stamp)`` of the plain file ``name`` in ``directory`` (other names of it
    too); ``(None, None)`` when there is none (a symbolic link is none: replacing it loses no
    file)."""
    fd = open_file(name, directory)
    if fd is None:
        return None, None
    try:
        return hash_of(fd, hashlib.sha256()).hexdigest(), stamp(os.fstat(fd))
    finally:
        os.close(fd)


def download(
    remote, record_id, attachment, folder, path, bars, rate=None, overwrite=False, claimed=None
):
    """Download the attachment to ``path`` (relative, with ``/``) in ``folder`` (a
    :class:`~.folder.Folder`), at most ``rate`` bytes a second when given; return False when
    it was already there.

    A file there with another sha256 is kept (a :class:`Failure`) unless a download wrote it
    as it is, and, when ``claimed`` is given (a download of some records only, whose names
    are not the whole folder's), unless that download was for this record or for one
    ``claimed(record id)`` says no longer claims it; or ``overwrite`` (any file)."""
    expected, size = attachment["hash"], attachment["size"]
    *parents, name = path.split("/")
    # Subfolders are made once the file is verified (a failed download leaves none), unless
    # a killed run set a file of theirs aside, which goes back first.
    directory = folder.directory(parents, create=folder.set_aside(path))
    try:
        there = found = None  # No subfolder yet: no file there.
        if directory is not None:
            folder.recover(path, directory, name)
            there, found = _found(directory, name)
        if there == expected:
            written, owner = folder.downloaded(path)
            if written != there or not _claimed_by_another(owner, record_id, claimed):
                folder.remember(path, expected, record_id)  # Still another's when it is.
            return False
        if there is not None and not overwrite:
            _replaceable(folder, path, there, record_id, claimed)
        part = f"{expected}.part"
        fd, done = folder.part(part, size)
        try:
            _fetch(remote, record_id, expected, size, fd, done, path, bars, rate)
        except _Discard as e:
            folder.discard(part)
            raise Failure(str(e)) from None
        except BaseException:
            if not os.fstat(fd).st_size:  # Nothing came: nothing to resume.
                folder.discard(part)
            raise
        finally:
            os.close(fd)
        if directory is None:
            directory = folder.directory(parents)
        folder.publish(part, directory, name, found, path)
        folder.remember(path, expected, record_id)
        return True
    finally:
        if directory is not None:
            os.close(directory)


def _replaceable(folder, path, there, record_id, claimed):
    """Refuse (a :class:`Failure`) to replace the file at ``path`` (of sha256 ``there``)
    unless a download wrote it as it is, for ``record_id`` or a record no longer
    ``claimed``."""
    written, owner = folder.downloaded(path)
    if written != there:
        raise Failure(
            "a file that differs from the record's is there, and no download wrote it "
            "as it is (changed here?): kept (--overwrite replaces it)"
        )
    if _claimed_by_another(owner, record_id, claimed):
        raise Failure(
            f"the file there is the download of another record ({shown(owner)}): kept "
            "(download both without names, or --overwrite replaces it)"
        )


def _claimed_by_another(owner, record_id, claimed):
    """Whether the remembered ``owner`` of a file is another record that still claims it."""
    return claimed is not None and owner not in (None, record_id) and claimed(owner)


class _Discard(Failure):
    """The part holds what it must not: it is removed."""


def _fetch(remote, record_id, expected, size, fd, done, path, bars, rate):
    """Append the rest of the attachment to ``fd`` (``done`` bytes in it), verify it."""
    if done == size:  # All there: an interruption came between the last byte and the rename.
        if hash_of(fd, hashlib.sha256()).hexdigest() == expected:
            return
        os.ftruncate(fd, 0)
        done = 0
    headers = {"Accept-Encoding": "identity"}
    if done:
        headers.update({"Range": f"bytes={done}-", "If-Range": f'"{expected}"'})
    url = remote.record_url(record_id) + "/attachment"
    with remote.request("GET", url, expected=(200, 206), headers=headers, stream=True) as r:
        if r.status_code == 200:
            os.ftruncate(fd, 0)  # Whole: the server had no such range, or the file changed.
            done = 0
        elif not r.headers.get("Content-Range", "").startswith(f"bytes {done}-"):
            raise Failure(f"asked for bytes {done}-, the server sent another range")
        digest = hash_of(fd, hashlib.sha256()) if done else hashlib.sha256()
        with bars.file(path, size, done) as advance:
            pace = Pace(rate)
            while done < size:  # Never a byte more than the record's size is read.
                try:
                    chunk = r.raw.read(min(CHUNK, size - done), decode_content=False)
                except urllib3.exceptions.HTTPError as e:
                    raise Failure(f"GET {url}: {e.__class__.__name__}: {e}") from e
                if not chunk:
                    break
                _write(fd, chunk)
                done += len(chunk)
                digest.update(chunk)
                advance(len(chunk))
                pace.passed(len(chunk))
        os.fsync(fd)
    if done < size:
        raise Failure(f"the server sent {done} of the record's {size} bytes (run it again)")
    if digest.hexdigest() != expected:
        raise _Discard("the downloaded file does not have the record's sha256")


def _write(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
