"""What caches may keep of a file, and for how long: every ``Cache-Control`` we send or store.

Stored names are never overwritten (a taken name gets the next ``-1``, ``-2``... variant), so a
``location`` designates the same bytes for as long as it exists. With random names (the
default) it designates them forever: stored files are ``immutable`` for a year. With names
made from ``filename_pattern`` (``randomize = false``), a deleted file's name can be given to
another file later: caches keep those for ``files_cache_expires_seconds`` only. That lifetime
is one per deployment, as the web server or CDN in front of ``base_path`` sends one header for
every file: the short one as soon as any bucket or collection does not randomize names.

Downloads through the API (``{record}/attachment``) follow Kinto's conventions for records
instead, since the record, hence its file, can change under the same URL: the lifetime Kinto
gives the collection's records (its ``*record_cache_expires_seconds`` settings and the
collection's ``cache_expires``) when everyone may read the record, and nothing a shared cache
may keep otherwise.

The settings are resolved once, at start-up, into :class:`Caching`; the views only pick the
answer's headers with the functions below.
"""

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from ..setting_values import MAX_SECONDS, as_number, fail


#: A year: what HTTP has long meant by "never expires" (RFC 2616 §14.21).
YEAR = 365 * 24 * 3600
#: Files whose names are random: these bytes, at this URL, forever.
IMMUTABLE = f"public, max-age={YEAR}, immutable"
#: Every use revalidated (with the ETag: a ``304`` while the file is the same).
REVALIDATE = "no-cache"
#: What depends on who asks: only the caller's own cache may keep it, revalidated.
PRIVATE = "private, no-cache"
#: A signed URL of a private file is a credential: kept nowhere.
PRIVATE_REDIRECT = "private, no-store"
#: What a private answer varies with: another caller may be refused, or see another record.
PER_CALLER = ("Authorization",)
#: Our setting (``kinto.attachment.`` + it): the lifetime of files whose names can be reused
#: (``randomize = false``), and its default.
PREFIX = "attachment."
FILES_SETTING = "files_cache_expires_seconds"
FILES_CACHE_EXPIRES_SECONDS = 3600
#: Kinto's settings of the lifetime of records (``kinto.{name}``), by bucket and collection too.
RECORD_EXPIRES = "record_cache_expires_seconds"


@dataclasses.dataclass(frozen=True)
class Caching:
    """The cache policy of the deployment, resolved from settings at start-up."""

    #: ``Cache-Control`` of stored files at their ``location``: new S3 and GCS objects (unless
    #: ``aws.cache_control`` / ``gcloud.cache_control`` say otherwise), ``serve_files``, and
    #: what the web server or CDN in front of ``base_path`` should send.
    files: str = IMMUTABLE
    #: Kinto's ``*record_cache_expires_seconds`` settings, parsed: name → seconds.
    record_expires: Mapping = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    def record_lifetime(self, bucket_id, collection_id, collection):
        """Seconds Kinto lets caches keep the records of a collection (``collection``: its
        object), as :meth:`kinto.views.records.Record._add_cache_header` finds them; None
        when none is set, or when it is not positive."""
        names = (
            f"{bucket_id}.{collection_id}.{RECORD_EXPIRES}",
            f"{bucket_id}.{RECORD_EXPIRES}",
            RECORD_EXPIRES,
            f"{bucket_id}_{collection_id}_{RECORD_EXPIRES}",
            f"{bucket_id}_{RECORD_EXPIRES}",
        )
        seconds = next((self.record_expires[n] for n in names if n in self.record_expires), None)
        metadata = collection.get("cache_expires")
        if metadata is not None:
            seconds = max(seconds or -1, int(metadata))
        return seconds if seconds and seconds > 0 else None


def record_file(public, lifetime, redirect_expires=None):
    """``(Cache-Control, Vary)`` of a download of a record's file, or of the redirection to
    its signed URL valid ``redirect_expires`` seconds: kept ``lifetime`` seconds (None: every
    use revalidated) when everyone may read the record (``public``), by the caller's own
    cache only otherwise."""
    if not public:
        return (PRIVATE if redirect_expires is None else PRIVATE_REDIRECT), PER_CALLER
    if redirect_expires is not None:
        # Half the URL's life at most: a redirection served by a cache at the end of its own
        # lifetime still leaves the client time to follow it.
        lifetime = min(lifetime or 0, redirect_expires // 2)
    return (f"public, max-age={lifetime}" if lifetime else REVALIDATE), ()


def files_cache_control(policies, seconds):
    """``Cache-Control`` of stored files when the named :class:`~.policies.Policy` objects
    make their names: ``immutable`` if they all randomize names, else ``seconds`` of life."""
    if all(policy.randomize for policy in policies):
        return IMMUTABLE
    return f"public, max-age={seconds}" if seconds else f"public, {REVALIDATE}"


def _kinto_seconds(name, value):
    """Any integer, as Kinto reads them (not positive: no lifetime)."""
    try:
        return int(str(value).strip())
    except ValueError:
        fail(name, f"expected a number of seconds, got {value!r}")


def from_settings(settings, values, policies):
    """:class:`Caching` from Pyramid's ``settings`` (Kinto's, without ``kinto.``), our own
    (``values``: the global ``kinto.attachment.*`` ones, keyed by name without
    ``attachment.``) and every :class:`~.policies.Policy` in use."""
    seconds = as_number(int, 0, MAX_SECONDS)(
        PREFIX + FILES_SETTING, values.get(FILES_SETTING, FILES_CACHE_EXPIRES_SECONDS)
    )
    record_expires = {
        name: _kinto_seconds(name, value)
        for name, value in settings.items()
        if name.endswith(RECORD_EXPIRES) and not name.startswith("kinto.")
    }
    return Caching(
        files=files_cache_control(policies, seconds),
        record_expires=MappingProxyType(record_expires),
    )
