"""Parsers of raw setting values, shared by :mod:`kinto_attachment.settings` and the stores'
own option tables (which ``settings`` imports: they cannot import it back).

A parser takes the setting's full name (for error messages) and its raw value, and stops
start-up with a message naming the setting when the value is wrong.
"""

import logging
import math

from pyramid.exceptions import ConfigurationError
from pyramid.settings import falsey, truthy


logger = logging.getLogger(__name__)


def fail(name, message):
    raise ConfigurationError(f"Invalid setting `kinto.{name}`: {message}")


def as_text(name, value):
    return str(value).strip()


def as_bool(name, value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in truthy:
        return True
    if text in falsey:
        return False
    fail(name, f"expected true or false, got {value!r}")


#: The longest a setting of seconds may say (ten years): any wait a thread does, any date an
#: answer writes (``Upload-Expires``) stays representable (``threading.TIMEOUT_MAX``, 9999).
MAX_SECONDS = 10 * 365 * 86400


def as_number(kind, minimum, maximum=None):
    def parse(name, value):
        try:
            number = kind(str(value).strip())
        except ValueError:
            fail(name, f"expected a number, got {value!r}")
        try:
            finite = math.isfinite(number)  # float("inf"), float("nan"): no wait ends...
        except OverflowError:  # An int beyond any float (1 and 400 zeros).
            finite = False
        if not finite:
            fail(name, f"expected a finite number, got {value!r}")
        if number < minimum:
            fail(name, f"must be at least {minimum}, got {number}")
        if maximum is not None and number > maximum:
            fail(name, f"must be at most {maximum}, got {number}")
        return number

    return parse


def store_options(prefix, values, parsers, names, store):
    """The parsed values of a file store's settings (``{prefix}NAME``, keyed by NAME), the
    table of its module (``parsers``: NAME → parser; ``names``: every NAME it accepts).

    None when no ``bucket_name`` is set: the store is not used, and its other settings are
    ignored, said in the log (kinto-attachment starts with credentials left beside
    ``base_path``; with no store chosen at all, start-up stops for that). An unknown name, or
    a value that does not parse, stops start-up naming the setting.
    """
    for name in sorted(values):
        if name not in names:
            fail(prefix + name, "unknown setting")
    if "bucket_name" in values and not str(values["bucket_name"] or "").strip():
        # Set, empty (a template's variable left unset): not the absence that is ignored.
        fail(prefix + "bucket_name", "must not be empty")
    if not str(values.get("bucket_name") or "").strip():
        if values:
            logger.warning(
                "Settings %s ignored: %s is not used without `kinto.%sbucket_name`",
                ", ".join(f"`kinto.{prefix}{name}`" for name in sorted(values)),
                store,
                prefix,
            )
        return None
    return {
        name: parsers[name](prefix + name, value)
        for name, value in values.items()
        if name in parsers
    }


def private_objects(prefix, options, signed, public):
    """The object ACL of a store whose downloads are signed URLs (``signed``, the option that
    turns them on): no ACL (the bucket's, private) unless one is set, since a public one
    lets whoever saw a ``location`` or a signed URL (which names the key) read the file for
    ever, permission or not; a warning for a ``public`` one set all the same."""
    if not options.get(signed):
        return
    if "acl" not in options:
        options["acl"] = ""
    elif options["acl"] in public:
        logger.warning(
            "kinto.%sacl = %s with %s: every object is readable by anyone who has its URL "
            "(a signed URL names it), whatever the records' permissions. Leave %sacl unset "
            "for private files (docs/security.rst).",
            prefix,
            options["acl"],
            signed,
            prefix,
        )
