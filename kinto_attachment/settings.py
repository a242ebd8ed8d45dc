"""Every ``kinto.attachment.*`` setting, parsed and validated once, at start-up.

Names and meanings follow Mozilla's kinto-attachment, so that an existing ``kinto.ini`` keeps
working. A setting that is unknown or malformed stops start-up with a message naming it: a typo
in production should fail loudly, not silently fall back to a default.

This module sorts the settings and checks the global ones; tables of their own hold the rest, and
this module only calls them: :mod:`kinto_attachment.uploads.policies` (what may be uploaded where,
with the per-resource overrides ``resources.{bid}[.{cid}].NAME``, resolved into ready
:class:`~kinto_attachment.uploads.policies.Policy` objects that request code only looks up),
:mod:`kinto_attachment.data_files.options` (``data_files.*``) and, since a file store owns its
options, :mod:`kinto_attachment.storage.s3_options` (``aws.*``) and
:mod:`kinto_attachment.storage.gcs_options` (``gcloud.*``).
"""

import dataclasses
from collections.abc import Mapping

from kinto.core.utils import read_env
from pyramid.exceptions import ConfigurationError

from .data_files import options as data_files_options
from .data_files.options import DataFilesOptions
from .downloads import caching
from .downloads.caching import Caching
from .setting_values import as_bool, as_number, fail
from .storage import gcs_options, s3_options
from .storage.gcs_options import GCSOptions
from .storage.s3_options import S3Options
from .uploads import policies
from .uploads.policies import Policy


PREFIX = "attachment."


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
    #: Seconds a blob is kept once its record or ``/data/files`` entry stopped referencing it
    #: (replaced, deleted), before the collector deletes it: the downloads that read the old
    #: record just before, on any node, find their blob and read it to the end (see
    #: :mod:`kinto_attachment.state.replaced`). 0: deleted as soon as the transaction commits.
    replaced_grace_seconds: int = 600


@dataclasses.dataclass(frozen=True)
class AttachmentSettings:
    #: Local storage folder, or None when files go to S3 or GCS.
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
    #: Unfinished, unexpired resumable uploads one user may hold at once (an anonymous client:
    #: one address); 0: no limit.
    resumable_max_uploads_per_user: int = 20
    #: Whether anonymous clients may create resumable uploads where they may create records.
    resumable_allow_anonymous: bool = False
    gc: GcOptions = dataclasses.field(default_factory=GcOptions)
    gcs: GCSOptions | None = None
    #: The cache policy: ``Cache-Control`` of stored files and of downloads.
    caching: Caching = dataclasses.field(default_factory=Caching)

    @property
    def redirect_expires(self):
        """Seconds of the signed URLs that downloads answer with a 307 (S3's
        ``presigned_downloads``, GCS's ``signed_downloads``); None when they are proxied."""
        if self.s3 is not None and self.s3.presigned_downloads:
            return self.s3.presigned_expires
        if self.gcs is not None and self.gcs.signed_downloads:
            return self.gcs.signed_expires
        return None

    def policy(self, bucket_id, collection_id=None):
        """The policy that applies to a collection: collection, then bucket, then global."""
        return (
            self.overrides.get((bucket_id, collection_id))
            or self.overrides.get((bucket_id, None))
            or self.default
        )


#: ``gc.NAME`` → parser (same field names in GcOptions).
GC_SETTINGS = {
    "orphans_grace_seconds": as_number(int, 0),
    "orphans_interval_seconds": as_number(int, 0),
    "replaced_grace_seconds": as_number(int, 0),
}
GLOBAL_SETTINGS = (
    "base_path",
    "base_url",
    "extra.base_url",
    "serve_files",
    caching.FILES_SETTING,
    "resumable.expires_seconds",
    "resumable.max_uploads_per_user",
    "resumable.allow_anonymous",
    *(f"data_files.{name}" for name in data_files_options.SETTINGS),
    *(f"gc.{name}" for name in GC_SETTINGS),
)
#: Each file store's options: ``{section}NAME`` settings, read by its table's module.
STORE_SECTIONS = {"aws.": s3_options, "gcloud.": gcs_options}


def _with_env(settings):
    """Our settings, with Kinto's environment overrides applied to every known name.

    Kinto only reads ``KINTO_*`` variables for keys already present in the ini file; we accept
    them for every setting we know, so that ``KINTO_ATTACHMENT_BASE_PATH=...`` always works.
    """
    ours = {k: v for k, v in settings.items() if k.startswith(PREFIX)}
    store_names = (
        f"{section}{name}" for section, table in STORE_SECTIONS.items() for name in table.NAMES
    )
    for name in (*GLOBAL_SETTINGS, *policies.SETTINGS, *store_names):
        key = PREFIX + name
        value = read_env("kinto." + key, ours.get(key))
        if value is not None:
            ours[key] = value
    return ours


def _sort(ours):
    """Our settings by kind: global, default policy, per resource (scope → NAME), and each
    file store's (section → NAME after it), keyed by name without ``attachment.``; unknown
    names are refused."""
    global_values, policy_values, scoped = {}, {}, {}
    store_values = {section: {} for section in STORE_SECTIONS}
    for key, value in ours.items():
        name = key[len(PREFIX) :]
        section = next((s for s in STORE_SECTIONS if name.startswith(s)), None)
        if key.startswith(policies.RESOURCES_PREFIX):
            scope, name = policies.split_resource_setting(key)
            scoped.setdefault(scope, {})[name] = value
        elif section is not None:
            store_values[section][name[len(section) :]] = value
        elif name in policies.SETTINGS:
            policy_values[name] = value
        elif name in GLOBAL_SETTINGS:
            global_values[name] = value
        else:
            fail(key, "unknown setting")
    return global_values, policy_values, scoped, store_values


def _section(values, section):
    """The values of the ``{section}NAME`` settings, keyed by NAME."""
    return {k[len(section) :]: v for k, v in values.items() if k.startswith(section)}


#: The settings that pick the store, exactly one of which is set.
STORES = (
    ("base_path", "local folder"),
    ("aws.bucket_name", "S3 bucket"),
    ("gcloud.bucket_name", "GCS bucket"),
)


def _storage(global_values, store_values):
    """``base_path``, S3 and GCS options, ``serve_files``: exactly one store, served if
    local."""
    base_path = str(global_values.get("base_path") or "").strip() or None
    s3 = s3_options.from_settings(store_values["aws."])
    gcs = gcs_options.from_settings(store_values["gcloud."])
    picked = zip(STORES, (base_path, s3, gcs), strict=True)
    chosen = [store for store, options in picked if options]
    if len(chosen) != 1:
        names = ", ".join(f"`kinto.{PREFIX}{name}` ({what})" for name, what in chosen or STORES)
        raise ConfigurationError(
            f"Attachment storage: {names} are set; keep exactly one of them."
            if chosen
            else f"Attachment storage: set exactly one of {names}."
        )
    serve_files = as_bool(PREFIX + "serve_files", global_values.get("serve_files", False))
    if serve_files and base_path is None:
        fail(PREFIX + "serve_files", "only applies to local storage (`base_path`)")
    return base_path, s3, gcs, serve_files


def _base_urls(global_values):
    """``base_url``, and the capability's (``extra.base_url``, with a trailing slash)."""
    base_url = str(global_values.get("base_url") or "").strip()
    capability_url = str(global_values.get("extra.base_url") or base_url).strip()
    if capability_url and not capability_url.endswith("/"):
        capability_url += "/"
    return base_url, capability_url


def _parse_gc(values):
    options = {}
    for name, parse in GC_SETTINGS.items():
        if name in values:
            options[name] = parse(f"{PREFIX}gc.{name}", values[name])
    return GcOptions(**options)


def parse(settings):
    """Build :class:`AttachmentSettings` from Pyramid settings, or raise ConfigurationError."""
    global_values, policy_values, scoped, store_values = _sort(_with_env(settings))
    base_path, s3, gcs, serve_files = _storage(global_values, store_values)
    base_url, capability_url = _base_urls(global_values)
    # An S3 multipart upload has at most 10,000 parts: refuse larger files up front (413)
    # rather than fail once 10,000 parts are sent.
    largest = s3.max_file_size if s3 is not None else 0
    default, overrides = policies.from_settings(policy_values, scoped, largest)
    return AttachmentSettings(
        base_path=base_path,
        s3=s3,
        gcs=gcs,
        base_url=base_url,
        capability_base_url=capability_url,
        serve_files=serve_files,
        default=default,
        overrides=overrides,
        data_files=data_files_options.from_settings(
            _section(global_values, "data_files."), http_host=settings.get("http_host")
        ),
        resumable_expires_seconds=as_number(int, 1)(
            PREFIX + "resumable.expires_seconds",
            global_values.get("resumable.expires_seconds", 86400),
        ),
        resumable_max_uploads_per_user=as_number(int, 0)(
            PREFIX + "resumable.max_uploads_per_user",
            global_values.get("resumable.max_uploads_per_user", 20),
        ),
        resumable_allow_anonymous=as_bool(
            PREFIX + "resumable.allow_anonymous",
            global_values.get("resumable.allow_anonymous", False),
        ),
        gc=_parse_gc(_section(global_values, "gc.")),
        caching=caching.from_settings(settings, global_values, (default, *overrides.values())),
    )
