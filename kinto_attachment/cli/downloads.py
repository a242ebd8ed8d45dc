"""One record's attachment into a folder: streamed, resumed, verified.

The bytes go to ``NAME.part`` and become ``NAME`` only once their sha256 is the record's. A
``.part`` left by an interrupted run is continued with ``Range`` (and ``If-Range``: if the
attachment changed meanwhile, the server sends it whole and the part starts over). A file
already there with the right sha256 is not downloaded again.
"""

import hashlib
import os
import posixpath

from .remote import CHUNK, Failure, Pace


def local_name(attachment, record_id, taken):
    """The file name of an attachment in the folder: its own, unless another record's file
    has it (then prefixed with the record's id). Never a path: ``../x`` is ``x``."""
    name = posixpath.basename(attachment["filename"].replace("\\", "/")).lstrip(".") or record_id
    return name if name not in taken else f"{record_id}-{name}"


def _hash_of(path, digest):
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest


def download(remote, record_id, attachment, target, bars, rate=None):
    """Download the attachment to ``target`` (at most ``rate`` bytes a second when given);
    return False when it was already there."""
    expected = attachment["hash"]
    if os.path.exists(target) and _hash_of(target, hashlib.sha256()).hexdigest() == expected:
        return False
    part = target + ".part"
    done = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"Range": f"bytes={done}-", "If-Range": f'"{expected}"'} if done else {}
    url = remote.record_url(record_id) + "/attachment"
    with remote.request("GET", url, expected=(200, 206), headers=headers, stream=True) as r:
        if r.status_code == 200:
            done = 0  # Whole: the server had no such range, or the attachment changed.
        digest = _hash_of(part, hashlib.sha256()) if done else hashlib.sha256()
        with (
            open(part, "ab" if done else "wb") as f,
            bars.file(os.path.basename(target), attachment["size"], done) as advance,
        ):
            pace = Pace(rate)
            for chunk in r.iter_content(CHUNK):
                f.write(chunk)
                digest.update(chunk)
                advance(len(chunk))
                pace.passed(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    if digest.hexdigest() != expected:
        os.unlink(part)
        raise Failure(f"{record_id}: the downloaded file does not have the record's sha256")
    os.replace(part, target)
    return True
