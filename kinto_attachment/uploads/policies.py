"""What may be uploaded to a bucket or collection, and how it is named and kept: :class:`Policy`.

The policy settings (``kinto.attachment.NAME``, overridden by ``resources.{bid}.NAME`` and
``resources.{bid}.{cid}.NAME``) are resolved here once, at start-up, into ready policies that
request code only looks up. They live apart from :mod:`kinto_attachment.settings`, which sorts
every setting and calls this module, because their parsers, groups and inheritance are a
subject of their own.
"""

import collections
import dataclasses
import hashlib
import re
from collections.abc import Mapping
from string import Formatter
from types import MappingProxyType

from pyramid.exceptions import ConfigurationError

from ..events.options import as_destinations
from ..setting_values import as_bool, fail
from ..storage.keys import MAX_NAME, WORKING_FOLDER


#: Where the default policy's names live, after Kinto's ``kinto.`` (which error messages add).
PREFIX = "attachment."
#: Where the overrides live: ``{bucket_id}[.{collection_id}].NAME`` after it.
RESOURCES_PREFIX = PREFIX + "resources."

# Extension groups, as kinto-attachment defines them (``extensions = default+video``).
_GROUPS = {
    "documents": "pdf rtf odf ods gnumeric abw doc docx xls xlsx",
    "text": "txt",
    "images": "jpg jpe jpeg png gif svg bmp tiff",
    "audio": "wav mp3 aac ogg oga flac",
    "video": "mpeg 3gp avi divx dvr flv mp4 wmv",
    "data": "csv ini json plist xml yaml yml",
    "scripts": "js php pl py rb sh",
    "archives": "gz bz2 zip tar tgz txz 7z",
    "executables": "so exe dll",
}
_GROUPS["default"] = " ".join(_GROUPS[g] for g in ("documents", "text", "images", "data"))
EXTENSION_GROUPS = MappingProxyType({k: frozenset(v.split()) for k, v in _GROUPS.items()})

# Types Python's ``mimetypes`` does not know, as kinto-attachment ships them.
DEFAULT_MIMETYPES = MappingProxyType(
    {".pem": "application/x-pem-file", ".geojson": "application/geojson"}
)

_EXTENSION_RE = re.compile(r"[a-z0-9_-]+")
_MIMETYPE_RE = re.compile(r"[\w.+-]+/[\w.+-]+")


@dataclasses.dataclass(frozen=True)
class Policy:
    """What may be uploaded to one bucket or collection, and how it is named and kept."""

    folder: str = ""
    keep_old_files: bool = False
    randomize: bool = True
    filename_pattern: str = "{filename}"
    #: Allowed lowercase extensions without dot; empty means any.
    extensions: frozenset = EXTENSION_GROUPS["default"]
    #: ``.ext`` → mimetype, applied before the client's declared type.
    mimetypes: Mapping = dataclasses.field(default_factory=lambda: DEFAULT_MIMETYPES)
    #: 0 means no limit.
    max_size_bytes: int = 0
    #: Where the events of its files go (``events.destinations``); empty: nowhere.
    event_destinations: tuple = ()

    def allows_extension(self, extension):
        return not self.extensions or extension in self.extensions

    def folder_for(self, bucket_id, collection_id, record_id):
        """The folder of the record's files: ``folder`` with its ids, each segment that they
        make longer than :data:`MAX_SEGMENT` named by its hash (:func:`short_segment`)."""
        folder = self.folder.format(bucket_id=bucket_id, collection_id=collection_id, id=record_id)
        return "/".join(short_segment(segment) for segment in folder.split("/"))


#: Longest folder segment, in UTF-8 bytes: a file name on common filesystems (``NAME_MAX``).
#: Kinto's ids have no limit: a longer segment is named by a hash rather than refused, the
#: same way on every store, so that a record with long ids can have a file too.
MAX_SEGMENT = 255
#: Longest key, in UTF-8 bytes: S3's and GCS's limit for an object name.
MAX_KEY = 1024
#: Room for a blob's own name after its folder: ``safe_name``'s longest, and the ``-N`` of a
#: taken one.
NAME_ROOM = MAX_NAME + 16
#: Characters of a long segment kept before its hash, for people who look at the files.
HASHED_PREFIX = 64


def short_segment(segment):
    """``segment`` when it fits in :data:`MAX_SEGMENT` bytes (kinto-attachment's folders are
    kept as they are), otherwise its first :data:`HASHED_PREFIX` bytes, ``~`` and the
    sha256 of the whole (129 bytes at most). No Kinto id has a ``~``: a hashed segment is no
    other collection's folder."""
    raw = segment.encode("utf-8")
    if len(raw) <= MAX_SEGMENT:
        return segment
    prefix = raw[:HASHED_PREFIX].decode("utf-8", "ignore")
    return f"{prefix}~{hashlib.sha256(raw).hexdigest()}"


# Parsers take the setting's full name (for error messages) and its raw value.


def _as_size(name, value):
    """A number of bytes; 0 or less: no limit (as kinto-attachment reads it). Kinto reads
    settings as JSON where they are: ``1e3`` and ``1000.0`` are a thousand bytes."""
    text = str(value).strip()
    try:
        size = int(text)
    except ValueError:
        try:
            size = float(text)
        except ValueError:
            fail(name, f"expected a number of bytes, got {value!r}")
        if not size.is_integer():
            fail(name, f"expected a whole number of bytes, got {value!r}")
        size = int(size)
    return max(size, 0)


def _as_template(allowed):
    def parse(name, value):
        value = str(value).strip()
        try:
            fields = [(f, spec, conv) for _, f, spec, conv in Formatter().parse(value) if f]
        except ValueError:
            fields = []  # Told below, by format().
        if any(spec or conv for _, spec, conv in fields):  # "{bucket_id:.<2}" makes "..".
            fail(name, f"{value!r}: placeholders take no format spec nor conversion")
        probe = dict.fromkeys(allowed, "x")
        try:
            value.format(**probe)
        except (KeyError, IndexError, ValueError) as e:
            placeholders = ", ".join(f"{{{p}}}" for p in allowed)
            fail(name, f"{value!r} is not a valid pattern ({e!s}); use {placeholders}")
        return value

    return parse


def _as_pattern(name, value):
    """A ``filename_pattern``; empty is the file's own name, as kinto-attachment reads it
    (it applies a pattern only when there is one): a name made of nothing is no name. A
    folder in it is refused: the stored name is one segment, which kept only what follows
    the last ``/`` (``archive/{filename}`` stored ``{filename}``); folders are ``folder``'s
    (``{id}`` is the record's)."""
    pattern = _as_template(("datetime", "rid", "filename"))(name, value) or "{filename}"
    if any("/" in text or "\\" in text for text, *_ in Formatter().parse(pattern)):
        fail(name, f"{pattern!r} names a folder: a file's folder is set by `folder`")
    return pattern


def _as_folder(name, value):
    """A folder pattern, refused unless every key under it fits in :data:`MAX_KEY` bytes
    (a segment with an id in it takes :data:`MAX_SEGMENT` at most, the file's name
    :data:`NAME_ROOM`): three segments with ids fit, whatever the ids, four do not."""
    folder = _as_template(("bucket_id", "collection_id", "id"))(name, value).strip("/")
    if any(part == "" or part.startswith(".") for part in folder.split("/")) and folder:
        # Names starting with "." are the plugin's own (.uploads/, .data-files/, staged
        # files), never served (serve_files, config/nginx.conf).
        fail(name, f"{value!r} must be relative and contain no segment starting with '.'")
    if folder.split("/")[0] == WORKING_FOLDER:  # The remote stores' working objects.
        fail(name, f"{value!r}: {WORKING_FOLDER}/ is the stores' own folder")
    longest = NAME_ROOM
    for segment in filter(None, folder.split("/")):
        size = len(segment.encode("utf-8"))
        if size > MAX_SEGMENT and "{" not in segment:
            fail(name, f"{value!r}: a folder name has {MAX_SEGMENT} bytes at most")
        longest += 1 + (MAX_SEGMENT if "{" in segment else size)
    if longest > MAX_KEY:
        fail(name, f"{value!r} would make keys of up to {longest} bytes, over {MAX_KEY}")
    return folder


def _as_extensions(name, value):
    """The extensions allowed, empty for any: as kinto-attachment reads it, ``any`` adds none
    (``any+pdf`` is pdf alone) and only nothing at all allows every extension."""
    extensions = set()
    for group in str(value).strip().split("+"):
        group = group.strip().lower()
        if group == "any":
            continue
        if group in EXTENSION_GROUPS:
            extensions |= EXTENSION_GROUPS[group]
            continue
        for ext in group.split():
            ext = ext.lstrip(".")
            if not _EXTENSION_RE.fullmatch(ext):
                fail(name, f"{ext!r} is neither an extension group nor a plain extension")
            extensions.add(ext)
    return frozenset(extensions)


def _as_mimetypes(name, value):
    mapping = dict(DEFAULT_MIMETYPES)
    for entry in str(value).split(";"):
        if not entry.strip():
            continue
        ext, sep, mimetype = (s.strip() for s in entry.partition(":"))
        ext = "." + ext.lower().lstrip(".")
        if not sep or not _EXTENSION_RE.fullmatch(ext[1:]) or not _MIMETYPE_RE.fullmatch(mimetype):
            fail(name, f"{entry.strip()!r} is not of the form `.ext:type/subtype`")
        mapping[ext] = mimetype
    return MappingProxyType(mapping)


#: Settings that may be overridden per bucket or collection → (Policy field, parser).
SETTINGS = {
    "folder": ("folder", _as_folder),
    "keep_old_files": ("keep_old_files", as_bool),
    "randomize": ("randomize", as_bool),
    "filename_pattern": ("filename_pattern", _as_pattern),
    "extensions": ("extensions", _as_extensions),
    "mimetypes": ("mimetypes", _as_mimetypes),
    "max_size_bytes": ("max_size_bytes", _as_size),
    # kinto-attachment's README documents ``max_size`` while its code reads
    # ``max_size_bytes``: accept both so either kind of kinto.ini keeps its meaning.
    "max_size": ("max_size_bytes", _as_size),
    "events.destinations": ("event_destinations", as_destinations),
}


def split_resource_setting(key):
    """``resources.blog.articles.randomize`` → ``(("blog", "articles"), "randomize")``; a
    NAME may have dots (``events.destinations``)."""
    rest = key[len(RESOURCES_PREFIX) :]
    name = next((n for n in SETTINGS if rest.endswith("." + n)), rest.rsplit(".", 1)[-1])
    scope = rest[: -len(name) - 1].split(".")
    if len(scope) not in (1, 2) or not all(scope) or name not in SETTINGS:
        raise ConfigurationError(
            f"Invalid setting `kinto.{key}`: expected `kinto.{RESOURCES_PREFIX}{{bucket_id}}"
            f"[.{{collection_id}}].NAME` with NAME among {', '.join(sorted(SETTINGS))}"
        )
    return (scope[0], scope[1] if len(scope) == 2 else None), name


def _parse(values, base, prefix):
    changes, named = {}, {}
    for name, value in values.items():
        field, parse = SETTINGS[name]
        parsed = parse(prefix + name, value)
        # Two names of one setting (``max_size``, ``max_size_bytes``): which one the ini
        # lists last would decide, silently.
        if field in changes and changes[field] != parsed:
            fail(prefix + name, f"says {parsed!r}, and {prefix + named[field]} {changes[field]!r}")
        changes[field], named[field] = parsed, name
    return dataclasses.replace(base, **changes)


def _overrides(scoped, default):
    """``(bucket_id, collection_id or None)`` → Policy, each merged with its parents."""
    overrides = {}
    # Buckets first, so that a collection inherits its bucket's overrides.
    for scope in sorted(scoped, key=lambda s: s[1] is not None):
        bucket_id, collection_id = scope
        parent = overrides.get((bucket_id, None), default) if collection_id else default
        prefix = RESOURCES_PREFIX + ".".join(filter(None, scope)) + "."
        overrides[scope] = _parse(scoped[scope], parent, prefix)
    return overrides


def _capped(policy, largest):
    if policy.max_size_bytes and policy.max_size_bytes <= largest:
        return policy
    return dataclasses.replace(policy, max_size_bytes=largest)


def folders_of_chosen_names_shared(default, overrides):
    """The folders where files named as uploaded (``randomize = false``) of several buckets
    meet: a folder that names no ``{bucket_id}``, of the default policy (every bucket
    without one of its own) or of policies of more than one bucket. There a taken name gets
    ``-1`` (as kinto-attachment names it): the name one's upload gets tells whether a file of
    another bucket, which one may not read, has (or had) that name. Random names are no
    such names (a chosen name never takes one): only chosen ones meet."""
    buckets = collections.defaultdict(set)  # folder → buckets whose chosen names go there
    if not default.randomize:
        buckets[default.folder].add(None)  # Every bucket.
    for (bucket_id, _), policy in overrides.items():
        if not policy.randomize:
            buckets[policy.folder].add(bucket_id)
    return sorted(
        folder
        for folder, ids in buckets.items()
        if "{bucket_id}" not in folder and (None in ids or len(ids) > 1)
    )


def from_settings(values, scoped, largest=0):
    """The default :class:`Policy` and the overrides, from the policy settings: ``values``
    keyed by NAME, ``scoped`` by scope (as :func:`split_resource_setting` gives it) then NAME.

    With ``largest``, no policy allows files of more bytes than that (nor an unlimited size).
    """
    default = _parse(values, Policy(), PREFIX)
    overrides = _overrides(scoped, default)
    if largest:
        default = _capped(default, largest)
        overrides = {scope: _capped(policy, largest) for scope, policy in overrides.items()}
    return default, MappingProxyType(overrides)
