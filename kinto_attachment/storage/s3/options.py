"""The S3 store's settings (``kinto.attachment.aws.*``): names, defaults and validation.

The store owns its options, as django-storages' backends do; they live here rather than in
:mod:`.store` so that settings are checked without boto3 installed.
:func:`from_settings` takes the ``aws.*`` values and refuses any it does not know, naming it.
"""

import dataclasses

from ...setting_values import (
    MAX_SECONDS,
    as_bool,
    as_number,
    as_text,
    fail,
    private_objects,
    store_options,
)


MiB = 1024 * 1024
#: S3 refuses parts under 5 MiB (except the last one).
MIN_PART_SIZE = 5 * MiB
#: S3 accepts at most this many parts in one multipart upload.
MAX_PARTS = 10_000
#: Where our names live, after Kinto's ``kinto.`` (which error messages add).
PREFIX = "attachment.aws."
#: Canned ACLs that let others than the bucket's owner read an object.
PUBLIC_ACLS = ("public-read", "public-read-write", "authenticated-read")


@dataclasses.dataclass(frozen=True)
class S3Options:
    """The S3 backend's settings (``kinto.attachment.aws.*``)."""

    bucket_name: str
    access_key: str = ""
    secret_key: str = ""
    region: str = ""
    endpoint_url: str = ""
    #: Canned ACL of new objects; empty sends none (for buckets that forbid ACLs). None with
    #: ``presigned_downloads`` unless set (see ``setting_values.private_objects``).
    acl: str = "public-read"
    cache_control: str = ""
    use_path_style: bool = False
    part_size: int = 8 * MiB
    #: Parts of one upload in flight; memory per upload is part_size × (concurrency + 1). Four
    #: keep an S3 endpoint as busy as boto3's own transfers (ten threads) do (``bench/``).
    concurrency: int = 4
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 3
    #: Downloads through Kinto answer 307 to a presigned URL instead of proxying the bytes.
    presigned_downloads: bool = False
    presigned_expires: int = 300

    @property
    def max_file_size(self):
        """The largest file one multipart upload can hold."""
        return self.part_size * MAX_PARTS

    @property
    def redirect_expires(self):
        """Seconds of the presigned URLs that downloads answer with a 307, None when they
        stream the object."""
        return self.presigned_expires if self.presigned_downloads else None


#: ``NAME`` (after ``aws.``) → parser; same names as the fields of :class:`S3Options`.
OPTIONS = {
    "bucket_name": as_text,
    "access_key": as_text,
    "secret_key": as_text,
    "region": as_text,
    "endpoint_url": as_text,
    "acl": as_text,
    "cache_control": as_text,
    "use_path_style": as_bool,
    "part_size": as_number(int, MIN_PART_SIZE),
    "concurrency": as_number(int, 1),
    "connect_timeout": as_number(float, 0.1, MAX_SECONDS),
    "read_timeout": as_number(float, 0.1, MAX_SECONDS),
    "max_attempts": as_number(int, 1),
    "presigned_downloads": as_bool,
    # S3 refuses a presigned URL of more than a week (SigV4).
    "presigned_expires": as_number(int, 1, 7 * 86400),
}
#: pyramid_storage's way of naming the endpoint, turned into ``endpoint_url``.
PYRAMID_STORAGE_ENDPOINT = ("host", "port", "is_secure")
#: pyramid_storage's names of two options (kinto-attachment 7's S3 store): its ``timeout``
#: is the connection's, its ``num_retries`` the retries, so one attempt fewer (1, its
#: default, leaves ours).
PYRAMID_STORAGE_ALIASES = {"timeout": "connect_timeout", "num_retries": "max_attempts"}
#: Every name accepted after ``aws.``.
NAMES = (*OPTIONS, *PYRAMID_STORAGE_ENDPOINT, *PYRAMID_STORAGE_ALIASES)


def _endpoint_from_host(values):
    """pyramid_storage's ``aws.host``/``aws.port``/``aws.is_secure`` as an endpoint URL."""
    host = str(values.get("host") or "").strip()
    if not host:
        for name in ("port", "is_secure"):
            if name in values:
                fail(PREFIX + name, f"only applies with `kinto.{PREFIX}host`")
        return ""
    secure = as_bool(PREFIX + "is_secure", values.get("is_secure", True))
    port = values.get("port")
    if port not in (None, ""):
        port = as_number(int, 1)(PREFIX + "port", port)
        host = f"{host}:{port}"
    return f"{'https' if secure else 'http'}://{host}"


def from_settings(values):
    """:class:`S3Options` from the ``aws.*`` settings, keyed by name without ``aws.``.

    None when no bucket is named (S3 is not used); ConfigurationError naming the setting
    when a name is unknown or a value is invalid.
    """
    options = store_options(PREFIX, values, OPTIONS, NAMES, "S3")
    if options is None:
        return None
    endpoint = _endpoint_from_host(values)
    if endpoint and options.get("endpoint_url"):
        fail(PREFIX + "host", "give either `aws.endpoint_url` or `aws.host`, not both")
    if endpoint:
        options["endpoint_url"] = endpoint
    _aliases(values, options)
    private_objects(PREFIX, options, "presigned_downloads", PUBLIC_ACLS)
    return S3Options(**options)


def _aliases(values, options):
    """Set the options pyramid_storage's names give (:data:`PYRAMID_STORAGE_ALIASES`);
    refuse one that disagrees with the option's own name (the ini's order would decide)."""
    for alias, name in PYRAMID_STORAGE_ALIASES.items():
        if alias not in values:
            continue
        if alias == "num_retries":  # Retries: one attempt more (1, its default, ours).
            retries = as_number(int, 0)(PREFIX + alias, values[alias])
            if retries == 1:
                continue
            value = retries + 1
        else:
            value = OPTIONS[name](PREFIX + alias, values[alias])
        if name in options and options[name] != value:
            said = str(values[alias]).strip()
            fail(PREFIX + alias, f"says {said}, and {PREFIX + name} {options[name]!r}")
        options[name] = value
