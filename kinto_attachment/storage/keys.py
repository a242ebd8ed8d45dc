"""Keys: the names blobs go under in every store, made from what clients send.

A key is a relative, ``/``-separated path (``bucket/collection/5d1e….png``) that never climbs
out of the store (:func:`join_key`), made of names safe on every file system and in every URL
(:func:`safe_name`); when one is taken, the next variant is tried (``b-1.txt``...).
"""

import itertools
import posixpath
import re
import unicodedata
from urllib.parse import quote, urljoin


_SPACES = re.compile(r"\s+")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Longest name ``safe_name`` returns: room for ``-N`` variants within a 255-byte file name.
MAX_NAME = 200
#: Longest extension kept whole when a name is shortened.
MAX_EXTENSION = 32
#: The folder of the remote stores' working objects (S3's tails, GCS's parts), which their
#: listings mark temporary: no attachment's folder may be it (nor start with ``.``, the
#: local store's ``.uploads``, ``/data/files``' ``.data-files``).
WORKING_FOLDER = "__uploads__"


def is_working_object(key, suffix):
    """Whether ``key`` names one of a remote store's working objects (its names under
    :data:`WORKING_FOLDER` ending with ``suffix``: S3's tails, GCS's parts), which its listing
    marks temporary: not any object there (a file kinto-attachment kept there is one to
    adopt)."""
    name = key.removeprefix(WORKING_FOLDER + "/")
    return name != key and "/" not in name and name.endswith(suffix)


def in_own_folder(key):
    """Whether ``key`` is under a folder of the plugin's own (its first segment starts with
    ``.``: ``/data/files``' ``.data-files``, the local store's ``.uploads``): never an
    attachment, never served from the store itself (no public ACL, not served by
    ``serve_files`` nor config/nginx.conf)."""
    return key.startswith(".")


def safe_name(name, fallback="file"):
    """A single path segment made only of ``[A-Za-z0-9._-]``, derived from a client filename.

    Unicode is normalised (NFKD) and reduced to ASCII, path separators of any OS dropped (only
    the last segment is kept), runs of white space made ``_`` and anything else dropped (as
    kinto-attachment names files: ``notes (draft).txt`` is ``notes_draft.txt``), leading dots
    stripped so that the result is never hidden, ``.`` or ``..``; a stem with nothing left
    (``文書.txt``, none of its letters in ASCII) becomes ``fallback``, its extension kept. A
    name longer than ``MAX_NAME`` is shortened in its stem, keeping its last extension: cutting
    the end would turn ``x….html.txt`` into ``x….html``, an extension nobody checked.
    """
    original = name.replace("\\", "/").rsplit("/", 1)[-1]
    original_stem, original_extension = posixpath.splitext(original)
    stem, extension = _ascii(original_stem), _ascii(original_extension)
    if stem.startswith(".") and not original_stem.startswith("."):
        stem = fallback + stem  # Nothing left of its first part in ASCII ("写真.tar").
    if not extension.strip("._"):
        extension = ""  # None of its letters in ASCII ("x.文"): no extension.
    elif not stem.strip("._"):
        stem = fallback  # Nothing left of its stem ("文書.txt", ".文書.txt", "__.txt").
    name = (stem + extension).strip("._")
    if len(name) > MAX_NAME:
        stem, extension = posixpath.splitext(name)
        extension = extension[:MAX_EXTENSION]
        stem = stem[: MAX_NAME - len(extension)].rstrip("._") or fallback
        name = stem + extension
    return name or fallback


def _ascii(text):
    """``text`` reduced to ASCII (NFKD), runs of white space as ``_``, anything else outside
    ``[A-Za-z0-9._-]`` dropped."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _UNSAFE.sub("", _SPACES.sub("_", text))


def join_key(*segments):
    """Join key segments with ``/``, refusing anything that would climb out of the store."""
    key = posixpath.normpath("/".join(s.strip("/") for s in segments if s))
    if key.startswith(("../", "/")) or key in ("..", ".", ""):
        raise ValueError(f"unsafe blob key {key!r}")
    return key


def blob_url(base_url, key):
    """The key resolved against ``base_url``, as kinto-attachment makes its locations
    (``urljoin``): ``https://cdn/files/`` + key is ``https://cdn/files/key``, but without the
    trailing slash ``https://cdn/files`` + key is ``https://cdn/key``. A relative location
    when ``base_url`` is empty."""
    return urljoin(base_url, quote(key)) if base_url else quote(key)


def key_variants(key):
    """``a/b.txt``, then ``a/b-1.txt``, ``a/b-2.txt``...: where to go when a key is taken."""
    yield key
    stem, ext = posixpath.splitext(key)
    for counter in itertools.count(1):
        yield f"{stem}-{counter}{ext}"


def free_variant(key, exists, listed, reserved):
    """The first of ``key``, ``name-1.ext``... not taken yet: ``exists(key)``, and when it is
    taken, one listing of the names starting with ``name-`` (``listed(prefix)``), rather than
    a request per variant; nor ``reserved`` (:meth:`.base.StoreBase.reserved`)."""
    if not exists(key) and not reserved(key):
        return key
    stem, _ = posixpath.splitext(key)
    taken = {key, *listed(f"{stem}-")}
    return next(k for k in key_variants(key) if k not in taken and not reserved(k))
