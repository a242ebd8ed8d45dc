"""The Google Cloud Storage store's settings (``kinto.attachment.gcloud.*``): names, defaults and
validation.

kinto-attachment's names keep their meaning (``credentials``, ``project``, ``bucket_name``,
``acl``, ``cache_control``, ``uniform_bucket_level_access``); the others are those of our S3
store, where they apply. The store owns its options, as django-storages' backends do; they live
here rather than in :mod:`.store` so that settings are checked without google-cloud-storage
installed. :func:`from_settings` takes the ``gcloud.*`` values and refuses any it does not know,
naming it.
"""

import dataclasses
import os

from ...setting_values import (
    MAX_SECONDS,
    as_bool,
    as_number,
    as_text,
    fail,
    private_objects,
    store_options,
)


KiB = 1024
MiB = 1024 * KiB
#: GCS takes the chunks of a resumable upload (but the last) in multiples of 256 KiB.
CHUNK_GRANULARITY = 256 * KiB
#: The longest a V4 signed URL may be valid: seven days.
MAX_SIGNED_EXPIRES = 7 * 24 * 3600
#: GCS's predefined object ACLs (``predefinedAcl``).
PREDEFINED_ACLS = (
    "authenticatedRead",
    "bucketOwnerFullControl",
    "bucketOwnerRead",
    "private",
    "projectPrivate",
    "publicRead",
)
#: Predefined ACLs that let others than the project's members read an object.
PUBLIC_ACLS = ("publicRead", "authenticatedRead")
#: Where our names live, after Kinto's ``kinto.`` (which error messages add).
PREFIX = "attachment.gcloud."


@dataclasses.dataclass(frozen=True)
class GCSOptions:
    """The GCS backend's settings (``kinto.attachment.gcloud.*``)."""

    bucket_name: str
    #: Path of a service-account JSON key; empty: the environment's credentials (ADC), or
    #: none at all with ``endpoint_url`` (an emulator).
    credentials: str = ""
    project: str = ""
    #: Instead of ``https://storage.googleapis.com``: an emulator, a private endpoint.
    endpoint_url: str = ""
    #: Predefined ACL of new objects; empty sends none (buckets with uniform access). None
    #: with ``signed_downloads`` unless set (see ``setting_values.private_objects``).
    acl: str = "publicRead"
    uniform_bucket_level_access: bool = False
    cache_control: str = ""
    #: Bytes sent per request of a resumable upload; memory per upload is twice that.
    chunk_size: int = 8 * MiB
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    #: How long the JSON API's transient errors (429, 5xx, resets) are retried; 0: never.
    retry_seconds: float = 30.0
    #: Downloads through Kinto answer 307 to a V4 signed URL instead of proxying the bytes.
    signed_downloads: bool = False
    signed_expires: int = 300

    @property
    def redirect_expires(self):
        """Seconds of the signed URLs that downloads answer with a 307, None when they stream
        the object."""
        return self.signed_expires if self.signed_downloads else None


def _chunk_size(name, value):
    size = as_number(int, CHUNK_GRANULARITY)(name, value)
    if size % CHUNK_GRANULARITY:
        fail(name, f"must be a multiple of {CHUNK_GRANULARITY} (256 KiB), got {size}")
    return size


def _acl(name, value):
    acl = as_text(name, value)
    if acl and acl not in PREDEFINED_ACLS:
        fail(name, f"expected one of {', '.join(PREDEFINED_ACLS)}, or nothing; got {acl!r}")
    return acl


def _credentials(name, value):
    path = as_text(name, value)
    if path and not os.path.isfile(path):
        fail(name, f"no such file: {path!r}")
    return path


def _signed_expires(name, value):
    seconds = as_number(int, 1)(name, value)
    if seconds > MAX_SIGNED_EXPIRES:
        fail(name, f"V4 signed URLs last at most {MAX_SIGNED_EXPIRES} seconds (7 days)")
    return seconds


#: ``NAME`` (after ``gcloud.``) → parser; same names as the fields of :class:`GCSOptions`.
OPTIONS = {
    "bucket_name": as_text,
    "credentials": _credentials,
    "project": as_text,
    "endpoint_url": as_text,
    "acl": _acl,
    "uniform_bucket_level_access": as_bool,
    "cache_control": as_text,
    "chunk_size": _chunk_size,
    "connect_timeout": as_number(float, 0.1, MAX_SECONDS),
    "read_timeout": as_number(float, 0.1, MAX_SECONDS),
    "retry_seconds": as_number(float, 0, MAX_SECONDS),
    "signed_downloads": as_bool,
    "signed_expires": _signed_expires,
}
#: kinto-attachment's bucket creation on first use, which this store does not do.
AUTO_CREATE = ("auto_create_bucket", "auto_create_acl")
#: Every name accepted after ``gcloud.``.
NAMES = (*OPTIONS, *AUTO_CREATE)


def _refuse_auto_create(values):
    """kinto-attachment could create its bucket on first use: a store that checks nothing at
    start-up. Here the bucket must exist; ``auto_create_bucket = false`` is accepted."""
    if "auto_create_bucket" in values and as_bool(
        PREFIX + "auto_create_bucket", values["auto_create_bucket"]
    ):
        fail(PREFIX + "auto_create_bucket", "not supported: create the bucket beforehand")
    if "auto_create_acl" in values:
        fail(PREFIX + "auto_create_acl", "not supported: create the bucket beforehand")


def from_settings(values):
    """:class:`GCSOptions` from the ``gcloud.*`` settings, keyed by name without ``gcloud.``.

    None when no bucket is named (GCS is not used); ConfigurationError naming the setting
    when a name is unknown, a value is invalid, or values contradict each other.
    """
    options = store_options(PREFIX, values, OPTIONS, NAMES, "GCS")
    if options is None:
        return None
    _refuse_auto_create(values)
    if options.get("uniform_bucket_level_access"):
        # No object ACL on such buckets: kinto-attachment refuses one too.
        if options.get("acl"):
            fail(PREFIX + "acl", "must stay unset with `uniform_bucket_level_access`")
        options["acl"] = ""
    # Without a key file, an endpoint means no credentials at all: nothing to sign with.
    anonymous = options.get("endpoint_url") and not options.get("credentials")
    if options.get("signed_downloads") and anonymous:
        fail(
            PREFIX + "signed_downloads",
            f"needs `kinto.{PREFIX}credentials` (a key to sign with) with `endpoint_url`",
        )
    private_objects(PREFIX, options, "signed_downloads", PUBLIC_ACLS)
    return GCSOptions(**options)
