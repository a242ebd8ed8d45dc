"""The ``/data/files`` route's settings (``kinto.attachment.data_files.*``): names, defaults
and validation.

They live apart from :mod:`kinto_attachment.settings`, which sorts every setting and calls
:func:`from_settings`, because who may use the route and how much it may transfer at once are
a subject of their own (with SlimFaas's environment variable for the default visibility).
"""

import dataclasses
import ipaddress
import os
import re

from pyramid.exceptions import ConfigurationError

from ..setting_values import MAX_SECONDS, as_bool, as_number, fail


#: Where our names live, after Kinto's ``kinto.`` (which error messages add).
PREFIX = "attachment.data_files."
#: SlimFaas's own variable for the default visibility (``Public`` or ``Private``).
SLIMFAAS_VISIBILITY = "Data__DefaultVisibility"
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
#: The names of this machine that no web site can make its own (RFC 6761).
LOCALHOST = ("localhost",)


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
    #: ``Host`` names (``fnmatch`` patterns, lowercase) a private route answers to; an IP
    #: address is always accepted. Default: ``localhost`` and Kinto's ``http_host``.
    allowed_hosts: tuple = LOCALHOST
    #: Origins (``fnmatch`` patterns) of the web pages that may use a private route.
    allowed_origins: tuple = ()
    transfer_budget_bytes: int = 256 * 1024 * 1024
    #: How long a transfer waits for budget before a 503 with ``Retry-After``.
    transfer_wait_seconds: float = 5.0
    #: A transfer whose client sent or pulled nothing for this long gives its budget back.
    transfer_idle_seconds: float = 30.0
    #: ...and so does one that moved fewer bytes a second over such a period (0: any pace).
    transfer_min_bytes_per_second: int = 64 * 1024
    require_content_length: bool = False
    #: Seconds between collections of expired files in the server; 0 disables them.
    gc_interval_seconds: int = 300


# Parsers take the setting's full name (for error messages) and its raw value.


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


def _as_hosts(name, value):
    """Names as ``Host`` carries them, without port: ``files.example.com``, ``*.internal``."""
    words = sorted(word.lower() for word in _as_words(name, value))
    for word in words:
        if not re.fullmatch(r"[a-z0-9*_.-]+(:[0-9]+)?", word):
            fail(name, f"expected host names (without scheme), got {word!r}")
    return tuple(dict.fromkeys(host_name(word) for word in words))


def _as_origins(name, value):
    """Origins as browsers send them: ``https://app.example.com``, ``http://localhost:*``."""
    origins = tuple(sorted(word.lower() for word in _as_words(name, value)))
    for origin in origins:
        if not re.fullmatch(r"[a-z*][a-z0-9+.*-]*://[^/?#\s]+|null", origin):
            fail(name, f"expected origins (scheme://host[:port], no path), got {origin!r}")
    return origins


def host_name(host):
    """The name of a ``Host`` value, as compared: lowercase, without port or final dot."""
    host = host.strip().lower()
    if host.startswith("["):  # "[2001:db8::1]:8888"
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0].rstrip(".")


#: ``NAME`` (after ``data_files.``) → parser; same names as the fields of DataFilesOptions.
SETTINGS = {
    "visibility": _as_choice("private", "public"),
    "trusted_networks": _as_networks,
    "trusted_proxies": _as_networks,
    "trust_forwarded_for": as_bool,
    "principals": _as_words,
    "allowed_hosts": _as_hosts,
    "allowed_origins": _as_origins,
    "transfer_budget_bytes": as_number(int, 1),
    "transfer_wait_seconds": as_number(float, 0, MAX_SECONDS),
    "transfer_idle_seconds": as_number(float, 1, MAX_SECONDS),
    "transfer_min_bytes_per_second": as_number(int, 0),
    "require_content_length": as_bool,
    "gc_interval_seconds": as_number(int, 0, MAX_SECONDS),
}


def _visibility_from_environment():
    """SlimFaas's default visibility, lowercase; empty when its variable is not set."""
    visibility = os.environ.get(SLIMFAAS_VISIBILITY, "").strip().lower()
    if visibility and visibility not in ("private", "public"):
        raise ConfigurationError(
            f"Invalid environment variable `{SLIMFAAS_VISIBILITY}`: expected Public or "
            f"Private, got {os.environ[SLIMFAAS_VISIBILITY]!r}"
        )
    return visibility


def from_settings(values, http_host=None):
    """:class:`DataFilesOptions` from the ``data_files.*`` settings, keyed by name without
    ``data_files.``; ConfigurationError naming the setting when a value is invalid.

    ``http_host`` (Kinto's setting: the name clients use, behind a proxy) is one of the
    default ``allowed_hosts``.
    """
    options = {}
    if http_host and str(http_host).strip():
        options["allowed_hosts"] = (*LOCALHOST, host_name(str(http_host)))
    if "visibility" not in values and (visibility := _visibility_from_environment()):
        options["visibility"] = visibility
    for name, parse in SETTINGS.items():
        if name in values:
            options[name] = parse(PREFIX + name, values[name])
    if options.get("trust_forwarded_for") and not options.get("trusted_proxies"):
        # It used to believe X-Forwarded-For from any peer: anyone could claim a trusted address.
        fail(
            PREFIX + "trust_forwarded_for",
            "X-Forwarded-For is only believed from the peers listed in "
            f"`kinto.{PREFIX}trusted_proxies`: set that instead",
        )
    return DataFilesOptions(**options)
