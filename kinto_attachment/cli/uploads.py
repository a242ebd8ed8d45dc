"""One file onto one record: a multipart ``POST`` when it is small, tus when it is not.

A tus upload is created once, and its URL kept in a state file (:mod:`.resumes`, keyed by the
record, the file's path, size and modification time, and what the upload was created with:
the record's data and permissions, the file's sha256) until it completes.
Run again after an interruption (a lost connection, ``Ctrl-C``, ``kill``), the command asks
the server where the upload is (``HEAD``) and sends the rest only. The server takes the
record's data and permissions from the upload's creation: a run with other ones (corrected
after the interruption), or a file rewritten since with its size and time (``rsync -t``, ``cp
-p``) that its sha256 tells apart, starts a new upload instead (the old one is
terminated), so that no record gets the first run's options nor a file made of two. The
file is read by chunks as it is sent: memory does not grow with its size.
"""

import base64
import contextlib
import hashlib
import json
import mimetypes
import os
import re
import time

from .answers import Failure, describe, json_of
from .pace import CHUNK, Pace


#: Files over this size go through tus, in chunks of this size.
CHUNK_SIZE = 8 * 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}


class Expected:
    """The sha256 of a file to upload, hashed before (or read from the sync's plan), checked
    on the bytes as they are read: a file saved since (an editor, a build, a log rotated in
    place) is refused before its last byte goes, and the server, which writes the record
    once it has them all, writes nothing. Otherwise the record would get a file that never
    existed (the first bytes of one version, the rest of the next), its previous attachment
    retired; a sync's record would get another file than its mark names, which every later
    sync takes for someone else's replacement (``diverged``)."""

    def __init__(self, sha256, size):
        self.sha256, self.size = sha256, size
        self._digest, self._done = hashlib.sha256(), 0
        if size == 0 and self._digest.hexdigest() != sha256:  # No byte will be read to check.
            raise Shrunk("the file was emptied since it was hashed: run again once it is done")

    def start(self, file, offset):
        """Hash again from the start of ``file`` to ``offset`` (a resumed upload's bytes
        sent before); the file is left at ``offset``."""
        self._digest, self._done = hashlib.sha256(), 0
        file.seek(0)
        while self._done < offset and (piece := file.read(min(CHUNK, offset - self._done))):
            self.update(piece)
        file.seek(offset)

    @property
    def position(self):
        """Bytes hashed so far, from the file's start."""
        return self._done

    def update(self, piece):
        self._digest.update(piece)
        self._done += len(piece)
        if self._done >= self.size and self._digest.hexdigest() != self.sha256:
            raise Shrunk("the file changed during its upload: run again once it is done")


class Reader:
    """``length`` bytes of an open file from its position, read by chunks as requests sends
    them (its length makes a ``Content-Length``), each one reported to ``advance`` and to
    ``pace``: the :class:`~.pace.Pace` of the whole transfer, which a tus upload's chunks
    share, so that the time between two chunks counts towards the rate; and to
    ``expected`` (an :class:`Expected`)."""

    def __init__(self, file, length, advance, pace, expected):
        self._file, self._length, self._advance, self._pace = file, length, advance, pace
        self._expected = expected
        self._before = pace.done

    @property
    def sent(self):
        return self._pace.done - self._before

    def __len__(self):
        return self._length

    def read(self, size=-1):
        """Up to ``size`` bytes, all that is left when ``size`` is negative (requests reads a
        multipart file at once, a ``data=`` body by blocks), read and paced by 1 MiB."""
        left = self._length - self.sent
        size = left if size is None or size < 0 else min(size, left)
        pieces = []
        while size > 0:
            piece = self._file.read(min(size, CHUNK))
            if not piece:  # Its Content-Length announced more: the server would wait for it.
                raise Shrunk("the file got shorter during its upload: run again once it is done")
            self._expected.update(piece)
            self._advance(len(piece))
            self._pace.passed(len(piece))
            pieces.append(piece)
            size -= len(piece)
        return b"".join(pieces)


class Shrunk(Failure):
    """The file ended before the length its upload announced, or is not the planned one:
    it changed meanwhile (never retried)."""


def upload(
    remote,
    path,
    record_id,
    bars,
    state,
    sha256,
    data=None,
    permissions=None,
    rate=None,
    headers=None,
):
    """Attach the file at ``path`` to the record; return its ``attachment`` metadata.

    ``sha256``: the file's, hashed before, checked as it is read (:class:`Expected`): a file
    that changes meanwhile is refused before its last byte. ``headers``: the preconditions of
    the record's write (``If-Match``, ``If-None-Match``), sent with the multipart upload, or
    with each ``PATCH`` of a tus upload (the server checks those of the last one, which
    writes the record)."""
    size = os.path.getsize(path)
    headers = headers or {}
    expected = Expected(sha256, size)
    if size <= CHUNK_SIZE:
        with bars.file(os.path.basename(path), size) as advance:
            return _multipart(
                remote, path, record_id, size, advance, data, permissions, rate, headers, expected
            )
    metadata = _metadata(path, data, permissions)
    created_with = hashlib.sha256(json.dumps([metadata, sha256]).encode()).hexdigest()
    file = [remote.record_url(record_id), os.path.abspath(path), size, _mtime(path)]
    key = json.dumps([*file, created_with])
    for superseded in state.superseded(key):
        _terminate(remote, superseded)
    url, offset = _resumed(remote, state.get(key), size)
    if url is None:
        url = _create(remote, record_id, size, metadata)
        state.put(key, url)
    with bars.file(os.path.basename(path), size, done=offset) as advance:
        _send(remote, url, path, offset, size, advance, rate, headers, expected)
    state.remove(key)
    record = remote.record(record_id)
    if record is None or not isinstance(record.get("attachment"), dict):
        raise Failure("the upload completed, but the record has no attachment")
    return record["attachment"]


def sent_name(path):
    """The file's name as the server is told it (the multipart ``filename``, tus's
    ``filename`` metadata). HTTP carries text: a name of bytes that are no UTF-8 (``upload
    --id`` takes such a file) is sent with U+FFFD for each byte that is none, rather than
    failing to encode."""
    return os.fsencode(os.path.basename(path)).decode(errors="replace")


def _mtime(path):
    return os.stat(path).st_mtime_ns


def _multipart(remote, path, record_id, size, advance, data, permissions, rate, headers, expected):
    fields = {
        name: json.dumps(value)
        for name, value in (("data", data), ("permissions", permissions))
        if value is not None
    }
    mimetype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    with open(path, "rb") as f:
        body = Reader(f, size, advance, Pace(rate), expected)
        response = remote.request(
            "POST",
            remote.record_url(record_id) + "/attachment",
            expected=(200, 201),
            files={"attachment": (sent_name(path), body, mimetype)},
            data=fields,
            headers=headers,
        )
    return json_of(response)


def _terminate(remote, url):
    """Terminate an unfinished upload this run will not resume (tus's ``DELETE``), so that it
    no longer counts among the user's unfinished uploads; the server's expiry does it
    otherwise, so a failure is no failure of the run."""
    with contextlib.suppress(Failure):
        remote.request("DELETE", url, expected=(204, 404, 410), headers=TUS)


def _resumed(remote, url, size):
    """``(url, offset)`` of an upload the server still has, else ``(None, 0)``."""
    if url is None:
        return None, 0
    response = remote.request("HEAD", url, expected=(200, 404, 410), headers=TUS)
    if response.status_code != 200:
        return None, 0
    # A finished upload answers with its final offset: it only needs its end recorded.
    return url, _offset(response, 0, size)


def _offset(response, lowest, size):
    """The ``Upload-Offset`` the server answered: a number of bytes from ``lowest`` to
    ``size`` (an upload never goes back, nor beyond its length), else :class:`Failure`."""
    value = response.headers.get("Upload-Offset", "")
    if not re.fullmatch(r"[0-9]{1,20}", value) or not lowest <= int(value) <= size:
        raise Failure(f"the server answered Upload-Offset {value!r} ({response.url})")
    return int(value)


def _metadata(path, data, permissions):
    values = {"filename": sent_name(path)}
    mimetype = mimetypes.guess_type(path)[0]
    if mimetype:
        values["filetype"] = mimetype
    for name, value in (("data", data), ("permissions", permissions)):
        if value is not None:
            values[name] = json.dumps(value)
    return ",".join(
        f"{name} {base64.b64encode(value.encode()).decode()}" for name, value in values.items()
    )


def _create(remote, record_id, size, metadata):
    response = remote.request(
        "POST",
        remote.record_url(record_id) + "/attachment/uploads",
        expected=(201,),
        headers={**TUS, "Upload-Length": str(size), "Upload-Metadata": metadata},
    )
    location = response.headers.get("Location")
    if not location:
        raise Failure(f"the server created an upload without a Location ({response.url})")
    return remote.url_from(response, location)


def _send(remote, url, path, offset, size, advance, rate, preconditions, expected):
    """PATCH the rest by chunks. After a chunk that failed (a lost connection, a ``503``),
    ask the server where the upload is and go on from there, ``remote.retries`` times in a
    row at most: failures count until the upload goes past the furthest offset the server
    acknowledged (a server that takes a chunk, fails the next, then says the upload went
    back, would otherwise have it sent round forever)."""
    failures, pace, reached = 0, Pace(rate), offset
    with open(path, "rb") as f:
        while offset < size:
            if expected.position != offset:
                expected.start(f, offset)  # A resumed upload, or a retry from elsewhere.
            f.seek(offset)
            body = Reader(f, min(CHUNK_SIZE, size - offset), advance, pace, expected)
            headers = {
                **TUS,
                **preconditions,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            }
            try:
                response = remote.request(
                    "PATCH", url, expected=(204, 412), headers=headers, data=body
                )
            except Shrunk:
                raise
            except Failure:
                failures += 1
                if failures > remote.retries:
                    raise
                time.sleep(min(0.5 * 2**failures, 10))
                found, now = _resumed(remote, url, size)
                if found is None:
                    raise
                advance(now - offset - body.sent)  # The bars count what the server has.
                offset = now
                continue
            if response.status_code == 412:  # The record changed: sending again would not do.
                raise Failure(describe(response))
            offset = _offset(response, offset + 1, size)
            if offset > reached:
                failures, reached = 0, offset
