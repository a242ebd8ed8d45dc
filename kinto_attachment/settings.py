"""Every ``kinto.attachment.*`` setting, parsed and validated once, at start-up.

Names and meanings follow Mozilla's kinto-attachment, so that an existing ``kinto.ini`` keeps
working. A setting that is unknown or malformed stops start-up with a message naming it: a typo
in production should fail loudly, not silently fall back to a default.

This module sorts the settings and checks the global ones; tables of their own hold the rest, and
this module only calls them: :mod:`kinto_attachment.uploads.policies` (what may be uploaded where,
with the per-resource overrides ``resources.{bid}[.{cid}].NAME``, resolved into ready
:class:`~kinto_attachment.uploads.policies.Policy` objects that request code only looks up),
:mod:`kinto_attachment.data_files.options` (``data_files.*``) and, since a file store owns its
options, the store's: :mod:`kinto_attachment.storage.registry` chooses the store by the settings
present, and each store's table checks its own (``base_path``, ``aws.*``, ``gcloud.*``, or the
section of another package's store).
"""

import dataclasses
import logging
from collections.abc import Mapping

from kinto.core.utils import read_env
from pyramid.exceptions import ConfigurationError

from .data_files import options as data_files_options
from .data_files.options import DataFilesOptions
from .downloads import caching
from .downloads.caching import Caching
from .events import options as events_options
from .events.options import EventsOptions
from .setting_values import MAX_SECONDS, as_bool, as_number, as_text, fail
from .state import paging
from .storage import registry
from .storage.registry import Chosen
from .uploads import policies
from .uploads.policies import Policy


logger = logging.getLogger(__name__)


PREFIX = "attachment."
#: kinto-attachment's global settings that its later versions ignore, and so does this
#: plugin: NAME → why.
IGNORED = {
    "gzipped": "kinto-attachment 6 gzipped files it stored; 7 and later ignore the setting, "
    "and so does this plugin: files are stored as they are sent",
}


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
    #: The store the settings choose, and its options (``store.build(...)`` makes it).
    store: Chosen
    #: Prepended to stored keys to form the ``location`` of attachments.
    base_url: str
    #: Advertised in the ``attachments`` capability (trailing slash enforced).
    capability_base_url: str | None
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
    #: The cache policy: ``Cache-Control`` of stored files and of downloads.
    caching: Caching = dataclasses.field(default_factory=Caching)
    #: Events of stored and deleted files (``events.*``, but ``events.destinations``, which
    #: is a policy setting).
    events: EventsOptions = dataclasses.field(default_factory=EventsOptions)

    @property
    def serve_files(self):
        """Serve ``base_path`` under ``/v1/attachments/`` (local store, for development)."""
        return bool(self.store.option("serve_files"))

    @property
    def redirect_expires(self):
        """Seconds of the signed URLs that downloads answer with a 307 (S3's
        ``presigned_downloads``, GCS's ``signed_downloads``); None when they are proxied."""
        return self.store.option("redirect_expires")

    def policy(self, bucket_id, collection_id=None):
        """The policy that applies to a collection: collection, then bucket, then global."""
        return (
            self.overrides.get((bucket_id, collection_id))
            or self.overrides.get((bucket_id, None))
            or self.default
        )


#: ``gc.NAME`` → parser (same field names in GcOptions).
GC_SETTINGS = {
    "orphans_grace_seconds": as_number(int, 0, MAX_SECONDS),
    "orphans_interval_seconds": as_number(int, 0, MAX_SECONDS),
    "replaced_grace_seconds": as_number(int, 0, MAX_SECONDS),
}
GLOBAL_SETTINGS = (
    registry.SETTING,
    "base_url",
    "extra.base_url",
    caching.FILES_SETTING,
    "resumable.expires_seconds",
    "resumable.max_uploads_per_user",
    "resumable.allow_anonymous",
    *(f"data_files.{name}" for name in data_files_options.SETTINGS),
    *(f"gc.{name}" for name in GC_SETTINGS),
    *(f"events.{name}" for name in events_options.SETTINGS),
)


def _with_env(ours, names):
    """Kinto's environment overrides applied to ``names``, in ``ours`` (our settings).

    Kinto only reads ``KINTO_*`` variables for keys already present in the ini file; we accept
    them for every setting we know, so that ``KINTO_ATTACHMENT_BASE_PATH=...`` always works.
    """
    for name in names:
        key = PREFIX + name
        value = read_env("kinto." + key, ours.get(key))
        if value is not None:
            ours[key] = value


#: Settings that name themselves almost as ours do, which Kinto would ignore: a setting meant
#: to keep files (``kinto.attachments.keep_old_files``) or limit them would do nothing.
NEAR_PREFIXES = ("attachments.", "attachement.", "kinto_attachment.", "kinto-attachment.")


def _refuse_near_misses(settings):
    for key in settings:
        name = key.removeprefix("kinto.")
        near = next((p for p in NEAR_PREFIXES if name.startswith(p)), None)
        if near is not None:
            fail(name, f"unknown setting: ours are named kinto.{PREFIX} + NAME, not {near}")


def _ours(settings):
    """Our settings, environment overrides applied, and the kinds of store they choose from:
    the ``store`` setting first, since the store it names adds the settings of its section."""
    _refuse_near_misses(settings)
    ours = {k: v for k, v in settings.items() if k.startswith(PREFIX)}
    _with_env(ours, [registry.SETTING])
    dotted = as_text(PREFIX + registry.SETTING, ours.get(PREFIX + registry.SETTING) or "")
    kinds = registry.kinds(dotted)
    store_names = (name for kind in kinds for name in kind.names)
    _with_env(ours, (*GLOBAL_SETTINGS, *policies.SETTINGS, *store_names))
    return ours, kinds


def _sort(ours, kinds):
    """Our settings by kind: global, default policy, per resource (scope → NAME), and each
    store's (kind → NAME after its section), keyed by name without ``attachment.``; unknown
    names are refused."""
    global_values, policy_values, scoped = {}, {}, {}
    store_values = {kind: {} for kind in kinds}
    for key, value in ours.items():
        name = key[len(PREFIX) :]
        if name in IGNORED:  # An ini written for kinto-attachment starts as it did there.
            logger.warning("Setting `kinto.%s` is ignored: %s", key, IGNORED[name])
            continue
        if name in GLOBAL_SETTINGS:
            global_values[name] = value
        elif name in policies.SETTINGS:
            policy_values[name] = value
        elif key.startswith(policies.RESOURCES_PREFIX):
            scope, name = policies.split_resource_setting(key)
            scoped.setdefault(scope, {})[name] = value
        else:
            kind = next((k for k in kinds if k.owns(name)), None)
            if kind is None:
                fail(key, "unknown setting")
            store_values[kind][name[len(kind.section) :]] = value
    return global_values, policy_values, scoped, store_values


def _section(values, section):
    """The values of the ``{section}NAME`` settings, keyed by NAME."""
    return {k[len(section) :]: v for k, v in values.items() if k.startswith(section)}


def _base_urls(global_values):
    """``base_url``, and the capability's (``extra.base_url``, with a trailing slash; None
    without either, as kinto-attachment announced it)."""
    base_url = str(global_values.get("base_url") or "").strip()
    capability_url = str(global_values.get("extra.base_url") or base_url).strip()
    if capability_url and not capability_url.endswith("/"):
        capability_url += "/"
    return base_url, capability_url or None


def _parse_gc(values):
    options = {}
    for name, parse in GC_SETTINGS.items():
        if name in values:
            options[name] = parse(f"{PREFIX}gc.{name}", values[name])
    return GcOptions(**options)


def _destinations(default, overrides):
    """Every event destination some bucket or collection uses, in order."""
    policies_ = (default, *overrides.values())
    return dict.fromkeys(d for policy in policies_ for d in policy.event_destinations)


def _check_fetch_size(settings):
    """Kinto's storage answers a query with ``storage_max_fetch_size`` objects at most; the
    plugin reads its own by pages of :data:`~.state.paging.PAGE`, which must fit (a shorter
    page reads as the last one: the collector would miss what holds a file)."""
    value = settings.get("storage_max_fetch_size")
    if value is not None and int(value) < paging.PAGE:
        raise ConfigurationError(
            f"Invalid setting `storage_max_fetch_size`: kinto_attachment reads Kinto's storage "
            f"by pages of {paging.PAGE} objects: set it to {paging.PAGE} or more (got {value})"
        )


def parse(settings):
    """Build :class:`AttachmentSettings` from Pyramid settings, or raise ConfigurationError."""
    _check_fetch_size(settings)
    ours, kinds = _ours(settings)
    global_values, policy_values, scoped, store_values = _sort(ours, kinds)
    store = registry.choose(kinds, store_values)
    base_url, capability_url = _base_urls(global_values)
    # An S3 multipart upload has at most 10,000 parts: refuse larger files up front (413)
    # rather than fail once 10,000 parts are sent.
    largest = store.option("max_file_size", 0)
    default, overrides = policies.from_settings(policy_values, scoped, largest)
    for folder in policies.folders_of_chosen_names_shared(default, overrides):
        logger.warning(
            "Files named as uploaded (randomize = false) of several buckets share the folder "
            "%r: a taken name gets -1, so an upload's name tells whether another bucket, "
            "which its user may not read, has a file of that name. Put {bucket_id} (and "
            "{collection_id}) in kinto.attachment.folder (docs/security.rst).",
            folder,
        )
    if base_url and store.option("redirect_expires") is not None and not store.option("acl", "-"):
        logger.warning(
            "Downloads are signed URLs, and objects are stored without an ACL (the bucket's): "
            "their locations under base_url %s answer only if the bucket's policy lets anyone "
            "read them. Set the store's acl (aws.acl = public-read) if base_url serves the "
            "bucket, or leave base_url unset for private files (docs/security.rst).",
            base_url,
        )
    chosen = not default.randomize or any(not p.randomize for p in overrides.values())
    if chosen and "immutable" in str(store.option("cache_control", "")).lower():
        logger.warning(
            "The store's cache_control says immutable, and files of some collections are named "
            "as uploaded (randomize = false): such a name is given to another file once its "
            "file is deleted or replaced, and caches would keep serving the old one. Leave "
            "cache_control unset (the plugin's header then follows randomize: "
            "docs/caching.rst)."
        )
    return AttachmentSettings(
        store=store,
        base_url=base_url,
        capability_base_url=capability_url,
        default=default,
        overrides=overrides,
        data_files=data_files_options.from_settings(
            _section(global_values, "data_files."), http_host=settings.get("http_host")
        ),
        resumable_expires_seconds=as_number(int, 1, MAX_SECONDS)(
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
        events=events_options.from_settings(
            _section(global_values, "events."), _destinations(default, overrides)
        ),
    )
