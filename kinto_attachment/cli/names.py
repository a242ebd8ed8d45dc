"""One way to name things: the name of a record's file, on disk and on the command line.

A file uploaded by ``upload`` or ``sync`` lands on the record whose id is derived from its
name (:func:`record_id_of`: the file's name for ``upload``, its path in the folder for
``sync``, which also writes that path in the record's :data:`MARK` field). ``download`` gives
each file back that name, and every command accepts it, so a name goes round: what ``sync``
uploaded as ``fonts/a.woff2`` is downloaded as ``fonts/a.woff2``, removed with
``rm fonts/a.woff2``.

Everything a server says is untrusted: a record's id, its file name and its mark become local
names through :func:`component` only, which never yields a separator, ``.``, ``..``, a control
character, a name Windows reserves, a hidden name (``.git``, ``.bashrc``: what a server must
not plant among a folder's settings, and what ``sync`` never uploads), nor more than
:data:`COMPONENT_BYTES`; collisions (two
records, one name; a file where another record needs a folder) are resolved by
:func:`local_names`, deterministically, inside the folder.
"""

import hashlib
import unicodedata
import uuid


#: Record ids of files are derived from their names in this namespace: stable, and valid ids.
ID_NAMESPACE = uuid.UUID("9a0a2b4e-1d55-4d0e-9b1e-6b7a3f6f7c10")
#: The record field in which ``sync`` writes ``{"folder": NAME, "path": PATH, "sha256": ...}``.
MARK = "synced_from"
#: Where downloads are written until verified, at the top of the folder: no record gets it.
PARTS = ".kinto-attachment-parts"
#: What the downloads into a folder wrote there, at its top: ``{path: sha256}`` (JSON).
DOWNLOADED = ".kinto-attachment-downloaded.json"
#: The longest component most file systems take (ext4, APFS, NTFS in UTF-16 units).
COMPONENT_BYTES = 255
#: Characters no component gets: separators, and those Windows refuses.
FORBIDDEN = frozenset('/\\<>:"|?*')
#: Control and format characters (bidirectional overrides...), lone surrogates, line breaks.
INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: Names Windows reserves for devices, with any extension (``COM0``, ``LPT0``, ``CONIN$`` and
#: ``CONOUT$`` too: Microsoft's list of reserved names).
RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{port}{n}" for port in ("COM", "LPT") for n in "0123456789¹²³"]
)


def aside_of(path):
    """The name in :data:`PARTS` where a download sets aside the file of ``path`` while it
    replaces it (what ``sync`` looks for too: that file is not gone)."""
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:32] + ".aside"


def record_id_of(name):
    """The record id of a file named ``name`` (a path relative to what is uploaded)."""
    return str(uuid.uuid5(ID_NAMESPACE, name))


def component(text):
    """``text`` as one file name, the same on every system: unsafe characters become ``_``,
    as do trailing dots and spaces (so ``.`` and ``..`` are ``_`` and ``__``) and a leading
    dot (``.git`` is ``_git``: a download never writes nor replaces a hidden file, which
    a folder's tools may obey, as git does its ``.git/config``); a reserved
    device name gets a leading ``_``; a name too long is cut, keeping its extension, with a
    hash of the whole so that long names stay apart. Idempotent."""
    chars = ["_" if c in FORBIDDEN or unicodedata.category(c) in INVISIBLE else c for c in text]
    name = "".join(chars)
    kept = name.rstrip(". ")
    name = kept + "_" * (len(name) - len(kept)) or "_"
    if name.startswith("."):
        name = "_" + name[1:]
    if name.split(".", 1)[0].rstrip(" ").upper() in RESERVED:
        name = "_" + name
    if len(name.encode()) <= COMPONENT_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    extension = dot + extension if stem and len(extension.encode()) <= 32 else ""
    stem = name[: len(name) - len(extension)]
    mark = "~" + hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()[:8]
    budget = COMPONENT_BYTES - len(mark.encode()) - len(extension.encode())
    stem = stem.encode()[:budget].decode(errors="ignore")
    return stem + mark + extension


def synced_path(path):
    """``path`` if ``sync`` could have written it in a mark, else None: relative, with ``/``,
    each part a name a folder holds (UTF-8, no NUL, at most :data:`COMPONENT_BYTES`, not
    ``.`` nor ``..``) and not hidden (sync leaves hidden files out). Such a part may be no
    :func:`component` (``10:30.txt``, ``CON.txt``, ``a.`` are ordinary names on Linux): the
    mark is still the sync's own, and :func:`local_names` maps it as any other name."""
    if not isinstance(path, str) or argument_path(path) != path:
        return None
    for part in path.split("/"):
        if part.startswith(".") or "\0" in part or len(part.encode()) > COMPONENT_BYTES:
            return None
    return path


def shown(text):
    """``text`` as printed: control and format characters escaped, so that a name cannot
    move the cursor, recolour the terminal or reorder what is shown."""
    return "".join(
        c.encode("unicode_escape", errors="backslashreplace").decode()
        if unicodedata.category(c) in INVISIBLE
        else c
        for c in str(text)
    )


def key(path):
    """What two names share when one file system may take them for the same file (case, and
    Unicode normalisation, differ on macOS and Windows)."""
    return unicodedata.normalize("NFC", path).casefold()


def mark_of(record):
    """``(folder, path, sha256)`` of a record that ``sync`` uploaded, or None: the mark must
    name a path sync can write (:func:`synced_path`, as the file was named in the folder)
    from which the record's id is derived (a mark copied to another record, or forged with
    a path no folder can hold, is nobody's); ``sha256`` is that of the file the sync
    attached (None if the mark does not say)."""
    mark = record.get(MARK)
    if not isinstance(mark, dict):
        return None
    folder, path = mark.get("folder"), synced_path(mark.get("path"))
    if not isinstance(folder, str) or path is None or record_id_of(path) != record.get("id"):
        return None
    digest = mark.get("sha256")
    return folder, path, digest if isinstance(digest, str) else None


def _proposed(record, given):
    """``(own, parts)``: the path the record's file would like, as components, and whether
    it is the name upload or sync gave it, or the one it was asked by (``own``: they keep it
    in a collision)."""
    record_id = record["id"]
    if record_id in given:
        return True, [component(part) for part in given[record_id].split("/")]
    marked = mark_of(record)
    if marked is not None:
        return True, [component(part) for part in marked[1].split("/")]
    filename = (record.get("attachment") or {}).get("filename")
    if isinstance(filename, str) and filename:
        name = component(filename)
        return name == filename and record_id_of(filename) == record_id, [name]
    return False, [component(record_id)]


def local_names(records, given=None):
    """``{record id: path}`` of each record's file in a folder: relative, with ``/``, each
    part a :func:`component`, none another's (nor :data:`PARTS`), none under another.

    Each record gets the name it was ``given`` (``{record id: path}``: the name it was asked
    by), else the name upload or sync gave it, else its file's name, else its id. In a
    collision, given names and names upload or sync gave come first, then records by id; the
    others get their id in front of the last part (``ID-name``), then at the top of the
    folder."""
    given = given or {}
    files, folders = {key(PARTS)}, set()
    names = {}

    def free(parts):
        path = "/".join(parts)
        ancestors = ["/".join(parts[:n]) for n in range(1, len(parts))]
        if key(path) in files or key(path) in folders:
            return False
        return not any(key(a) in files for a in ancestors)

    ordered = sorted(
        (not own, record["id"], parts)
        for record in records
        for own, parts in [_proposed(record, given)]
    )
    for _, record_id, parts in ordered:
        last = parts[-1]
        attempts = [parts, [*parts[:-1], component(f"{record_id}-{last}")]]
        attempts.append([component(f"{record_id}-{last}")])
        number = 1
        while not free(attempts[0]):
            attempts.pop(0)
            if not attempts:
                number += 1
                attempts.append([component(f"{record_id}-{number}-{last}")])
        chosen = attempts[0]
        files.add(key("/".join(chosen)))
        folders.update(key("/".join(chosen[:n])) for n in range(1, len(chosen)))
        names[record_id] = "/".join(chosen)
    return names


def argument_path(text):
    """A name as typed (``./fonts//a.woff2``) as upload and sync spell it (``fonts/a.woff2``),
    or None when it cannot be one (``..``, absolute, not UTF-8)."""
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts or text.startswith("/") or ".." in parts:
        return None
    path = "/".join(parts)
    try:
        path.encode()
    except UnicodeEncodeError:  # A name of bytes that are no UTF-8: none upload gives.
        return None
    return path
