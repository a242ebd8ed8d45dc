"""Every ``kinto.attachment.*`` setting, parsed and validated once, at start-up.

Names and meanings follow Mozilla's kinto-attachment, so that an existing ``kinto.ini`` keeps
working. A setting that is unknown or malformed stops start-up with a message naming it: a typo
in production should fail loudly, not silently fall back to a default.

Per-resource overrides (``resources.{bid}.NAME`` and ``resources.{bid}.{cid}.NAME``) are resolved
here too, once, into ready :class:`Policy` objects; request code only looks them up.

A file store owns its options: the ``aws.*`` names, defaults and checks are in
:mod:`kinto_attachment.storage.s3_options`, which this module only calls.
"""

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from types import MappingProxyType

from kinto.core.utils import read_env
from pyramid.exceptions import ConfigurationError

from .setting_values import as_bool, as_number, fail
from .storage import s3_options
from .storage.s3_options import S3Options


PREFIX = "attachment."
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

_EXTENSION_RE = re.compile(r"^[a-z0-9_-]+$")
_MIMETYPE_RE = re.compile(r"^[\w.+-]+/[\w.+-]+$")


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

    def allows_extension(self, extension):
        return not self.extensions or extension in self.extensions

    def folder_for(self, bucket_id, collection_id):
        return self.folder.format(bucket_id=bucket_id, collection_id=collection_id)


LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclasses.dataclass(frozen=True)
class DataFilesOptions:
    """The ``/data/files`` route's settings (``kinto.attachment.data_files.*``)."""

    #: ``private``: only trusted networks and ``principals``; ``public``: anyone.
    visibility: str = "private"
    trusted_networks: tuple = LOOPBACK
    #: Peers (``REMOTE_ADDR``) whose ``X-Forwarded-For`` is believed; empty: nobody's.
    trusted_proxies: tuple = ()
    #: Obsolete: ``true`` is refused unless ``trusted_proxies`` is set, and then changes nothing.
    trust_forwarded_for: bool = False
    principals: frozenset = frozenset()
    transfer_budget_bytes: int = 256 * 1024 * 1024
    #: How long a transfer waits for budget before a 503 with ``Retry-After``.
    transfer_wait_seconds: float = 5.0
    #: A download whose client pulled nothing for this long gives its budget back.
    transfer_idle_seconds: float = 30.0
    require_content_length: bool = False
    #: Seconds between collections of expired files in the server; 0 disables them.
    gc_interval_seconds: int = 300


@dataclasses.dataclass(frozen=True)
class GcOptions:
    """Garbage collection of orphans (``kinto.attachment.gc.*``)."""

    #: Objects younger than this are never collected: a blob is stored before the transaction
    #: that references it commits, and a staged file is written for as long as its upload
    #: lasts. It must exceed the longest upload (S3 dates a multipart upload from its start);
    #: 0 is only for a store no request is writing to (tests, maintenance).
    orphans_grace_seconds: int = 86400
    #: Seconds between orphan collections in the server, which happen on the rounds of
    #: ``data_files.gc_interval_seconds``; 0 leaves them to the command.
    orphans_interval_seconds: int = 3600


@dataclasses.dataclass(frozen=True)
class AttachmentSettings:
    #: Local storage folder, or None when files go to S3.
    base_path: str | None
    s3: S3Options | None
    #: Prepended to stored keys to form the ``location`` of attachments.
    base_url: str
    #: Advertised in the ``attachments`` capability (trailing slash enforced).
    capability_base_url: str
    #: Serve ``base_path`` under ``/v1/attachments/`` (development convenience).
    serve_files: bool
    default: Policy
    #: ``(bucket_id, collection_id or None)`` → Policy, already merged with its parents.
    overrides: Mapping
    data_files: DataFilesOptions = dataclasses.field(default_factory=DataFilesOptions)
    #: Seconds an unfinished resumable upload is kept after its last request.
    resumable_expires_seconds: int = 86400
    #: Unfinished, unexpired resumable uploads one user may hold at once; 0: no limit.
    resumable_max_uploads_per_user: int = 20
    gc: GcOptions = dataclasses.field(default_factory=GcOptions)

    def policy(self, bucket_id, collection_id=None):
        """The policy that applies to a collection: collection, then bucket, then global."""
        return (
            self.overrides.get((bucket_id, collection_id))
            or self.overrides.get((bucket_id, None))
            or self.default
        )


# Parsers take the setting's full name (for error messages) and its raw value.


def _as_size(name, value):
    try:
        size = int(str(value).strip())
    except ValueError:
        fail(name, f"expected a number of bytes, got {value!r}")
    if size < 0:
        fail(name, f"must be 0 (no limit) or positive, got {size}")
    return size


def _as_choice(*choices):
    def parse(name, value):
        value = str(value).strip().lower()
        if value not in choices:
            fail(name, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    return parse


def _as_networks(name, value):
    try:
        return tuple(
            ipaddress.ip_network(net, strict=False)
            for net in re.split(r"[\s,]+", str(value))
            if net
        )
    except ValueError as e:
        fail(name, str(e))


def _as_words(name, value):
    return frozenset(re.split(r"[\s,]+", str(value).strip())) - {""}


def _as_template(allowed):
    def parse(name, value):
        value = str(value).strip()
        probe = dict.fromkeys(allowed, "x")
        try:
            value.format(**probe)
        except (KeyError, IndexError, ValueError) as e:
            placeholders = ", ".join(f"{{{p}}}" for p in allowed)
            fail(name, f"{value!r} is not a valid pattern ({e!s}); use {placeholders}")
        return value

    return parse


def _as_folder(name, value):
    folder = _as_template(("bucket_id", "collection_id"))(name, value).strip("/")
    if any(part in ("", ".", "..") for part in folder.split("/")) and folder:
        fail(name, f"{value!r} must be relative and contain no '.' or '..' segments")
    return folder


def _as_extensions(name, value):
    extensions = set()
    for group in str(value).strip().split("+"):
        group = group.strip().lower()
        if group == "any":
            return frozenset()
        if group in EXTENSION_GROUPS:
            extensions |= EXTENSION_GROUPS[group]
            continue
        for ext in group.split():
            ext = ext.lstrip(".")
            if not _EXTENSION_RE.match(ext):
                fail(name, f"{ext!r} is neither an extension group nor a plain extension")
            extensions.add(ext)
    if not extensions:
        fail(name, "no extension given (use `any` to allow every extension)")
    return frozenset(extensions)


def _as_mimetypes(name, value):
    mapping = dict(DEFAULT_MIMETYPES)
    for entry in str(value).split(";"):
        if not entry.strip():
            continue
        ext, sep, mimetype = (s.strip() for s in entry.partition(":"))
        ext = "." + ext.lower().lstrip(".")
        if not sep or not _EXTENSION_RE.match(ext[1:]) or not _MIMETYPE_RE.match(mimetype):
            fail(name, f"{entry.strip()!r} is not of the form `.ext:type/subtype`")
        mapping[ext] = mimetype
    return MappingProxyType(mapping)


#: Settings that may be overridden per bucket or collection → (Policy field, parser).
POLICY_SETTINGS = {
    "folder": ("folder", _as_folder),
    "keep_old_files": ("keep_old_files", as_bool),
    "randomize": ("randomize", as_bool),
    "filename_pattern": ("filename_pattern", _as_template(("datetime", "rid", "filename"))),
    "extensions": ("extensions", _as_extensions),
    "mimetypes": ("mimetypes", _as_mimetypes),
    "max_size_bytes": ("max_size_bytes", _as_size),
    # kinto-attachment's README documents ``max_size`` while its code reads
    # ``max_size_bytes``: accept both so either kind of kinto.ini keeps its meaning.
    "max_size": ("max_size_bytes", _as_size),
}
#: ``data_files.NAME`` → parser (same field names in DataFilesOptions).
DATA_FILES_SETTINGS = {
    "visibility": _as_choice("private", "public"),
    "trusted_networks": _as_networks,
    "trusted_proxies": _as_networks,
    "trust_forwarded_for": as_bool,
    "principals": _as_words,
    "transfer_budget_bytes": as_number(int, 1),
    "transfer_wait_seconds": as_number(float, 0),
    "transfer_idle_seconds": as_number(float, 1),
    "require_content_length": as_bool,
    "gc_interval_seconds": as_number(int, 0),
}
#: ``gc.NAME`` → parser (same field names in GcOptions).
GC_SETTINGS = {
    "orphans_grace_seconds": as_number(int, 0),
    "orphans_interval_seconds": as_number(int, 0),
}
#: SlimFaas's own variable for the default visibility (``Public`` or ``Private``).
SLIMFAAS_VISIBILITY = "Data__DefaultVisibility"
GLOBAL_SETTINGS = (
    "base_path",
    "base_url",
    "extra.base_url",
    "serve_files",
    "resumable.expires_seconds",
    "resumable.max_uploads_per_user",
    *(f"data_files.{name}" for name in DATA_FILES_SETTINGS),
    *(f"gc.{name}" for name in GC_SETTINGS),
)
_UNSUPPORTED = {
    "gcloud.": "Google Cloud Storage is not supported; use local storage or S3",
}


def _with_env(settings):
    """Our settings, with Kinto's environment overrides applied to every known name.

    Kinto only reads ``KINTO_*`` variables for keys already present in the ini file; we accept
    them for every setting we know, so that ``KINTO_ATTACHMENT_BASE_PATH=...`` always works.
    """
    ours = {k: v for k, v in settings.items() if k.startswith(PREFIX)}
    store_names = (f"aws.{name}" for name in s3_options.NAMES)
    for name in (*GLOBAL_SETTINGS, *POLICY_SETTINGS, *store_names):
        key = PREFIX + name
        value = read_env("kinto." + key, ours.get(key))
        if value is not None:
            ours[key] = value
    return ours


def _parse_policy(values, base, prefix):
    changes = {}
    for name, value in values.items():
        field, parse = POLICY_SETTINGS[name]
        changes[field] = parse(prefix + name, value)
    return dataclasses.replace(base, **changes)


def _parse_data_files(values):
    options = {}
    visibility = os.environ.get(SLIMFAAS_VISIBILITY, "").strip().lower()
    if visibility and "data_files.visibility" not in values:
        if visibility not in ("private", "public"):
            raise ConfigurationError(
                f"Invalid environment variable `{SLIMFAAS_VISIBILITY}`: expected Public or "
                f"Private, got {os.environ[SLIMFAAS_VISIBILITY]!r}"
            )
        options["visibility"] = visibility
    for name, parse in DATA_FILES_SETTINGS.items():
        if f"data_files.{name}" in values:
            options[name] = parse(f"{PREFIX}data_files.{name}", values[f"data_files.{name}"])
    if options.get("trust_forwarded_for") and not options.get("trusted_proxies"):
        # It used to believe X-Forwarded-For from any peer: anyone could claim a trusted address.
        fail(
            PREFIX + "data_files.trust_forwarded_for",
            "X-Forwarded-For is only believed from the peers listed in "
            "`kinto.attachment.data_files.trusted_proxies`: set that instead",
        )
    return DataFilesOptions(**options)


def _parse_gc(values):
    options = {}
    for name, parse in GC_SETTINGS.items():
        if f"gc.{name}" in values:
            options[name] = parse(f"{PREFIX}gc.{name}", values[f"gc.{name}"])
    return GcOptions(**options)


def _split_resource_setting(key):
    """``resources.blog.articles.randomize`` → ``(("blog", "articles"), "randomize")``."""
    *scope, name = key[len(RESOURCES_PREFIX) :].split(".")
    if len(scope) not in (1, 2) or not all(scope) or name not in POLICY_SETTINGS:
        raise ConfigurationError(
            f"Invalid setting `kinto.{key}`: expected `kinto.{RESOURCES_PREFIX}{{bucket_id}}"
            f"[.{{collection_id}}].NAME` with NAME among {', '.join(sorted(POLICY_SETTINGS))}"
        )
    return (scope[0], scope[1] if len(scope) == 2 else None), name


def _capped(policy, largest):
    if policy.max_size_bytes and policy.max_size_bytes <= largest:
        return policy
    return dataclasses.replace(policy, max_size_bytes=largest)


def parse(settings):
    """Build :class:`AttachmentSettings` from Pyramid settings, or raise ConfigurationError."""
    ours = _with_env(settings)
    global_values, policy_values, scoped, aws_values = {}, {}, {}, {}
    for key, value in ours.items():
        name = key[len(PREFIX) :]
        if key.startswith(RESOURCES_PREFIX):
            scope, name = _split_resource_setting(key)
            scoped.setdefault(scope, {})[name] = value
        elif name.startswith("aws."):
            aws_values[name[len("aws.") :]] = value
        elif name in POLICY_SETTINGS:
            policy_values[name] = value
        elif name in GLOBAL_SETTINGS:
            global_values[name] = value
        else:
            reason = next((r for p, r in _UNSUPPORTED.items() if name.startswith(p)), None)
            fail(key, reason or "unknown setting")

    base_path = str(global_values.get("base_path") or "").strip() or None
    s3 = s3_options.from_settings(aws_values)
    if (base_path is None) == (s3 is None):
        raise ConfigurationError(
            "Attachment storage: set exactly one of `kinto.attachment.base_path` (local folder) "
            "and `kinto.attachment.aws.bucket_name` (S3 bucket)."
        )
    serve_files = as_bool(PREFIX + "serve_files", global_values.get("serve_files", False))
    if serve_files and s3 is not None:
        fail(PREFIX + "serve_files", "only applies to local storage (`base_path`)")
    base_url = str(global_values.get("base_url") or "").strip()
    capability_url = str(global_values.get("extra.base_url") or base_url).strip()
    if capability_url and not capability_url.endswith("/"):
        capability_url += "/"

    default = _parse_policy(policy_values, Policy(), PREFIX)
    overrides = {}
    # Buckets first, so that a collection inherits its bucket's overrides.
    for scope in sorted(scoped, key=lambda s: s[1] is not None):
        bucket_id, collection_id = scope
        parent = overrides.get((bucket_id, None), default) if collection_id else default
        prefix = RESOURCES_PREFIX + ".".join(filter(None, scope)) + "."
        overrides[scope] = _parse_policy(scoped[scope], parent, prefix)
    if s3 is not None:
        # An S3 multipart upload has at most 10,000 parts: refuse larger files up front
        # (413) rather than fail once 10,000 parts are sent.
        largest = s3.max_file_size
        default = _capped(default, largest)
        overrides = {scope: _capped(policy, largest) for scope, policy in overrides.items()}

    return AttachmentSettings(
        base_path=base_path,
        s3=s3,
        base_url=base_url,
        capability_base_url=capability_url,
        serve_files=serve_files,
        default=default,
        overrides=MappingProxyType(overrides),
        data_files=_parse_data_files(global_values),
        resumable_expires_seconds=as_number(int, 1)(
            PREFIX + "resumable.expires_seconds",
            global_values.get("resumable.expires_seconds", 86400),
        ),
        resumable_max_uploads_per_user=as_number(int, 0)(
            PREFIX + "resumable.max_uploads_per_user",
            global_values.get("resumable.max_uploads_per_user", 20),
        ),
        gc=_parse_gc(global_values),
    )
