"""What Kinto's storage can hold: checked where a client's text arrives, before it is written.

PostgreSQL refuses NUL (0x00) in text columns and in JSONB (the ``\\u0000`` escape), and no
UTF-8 text holds a lone surrogate (``\\ud800``, which Python's JSON parser accepts). Kinto's
own parser refuses NaN, Infinity and numbers beyond a double's range, which Python's accepts
too, and Kinto's record views fail past some 480 levels of nesting (a ``RecursionError``).
Any of these, once it reached the storage or Kinto's record view, would be a 5xx (503 from
PostgreSQL, 500 otherwise) that no retry can help: :func:`check_text` and :func:`json_object`
refuse them first (:class:`Unstorable`, or ``ValueError`` for JSON that Kinto does not read),
with a message the caller turns into its own 400. :func:`is_storable` tells whether an id
taken from a URL can even be looked up, :func:`is_timestamp` whether a ``last_modified`` can
be written.

Kinto words its own check of filters ``Invalid character 0x00``: so do we.
"""

import json
import math
import re


#: Deepest nesting of a ``data`` or ``permissions`` object. Kinto's record view fails
#: (500) some 480 levels deep, less under a server that uses more of the stack: records
#: have no use for more than a few levels.
MAX_DEPTH = 100

_SURROGATE = re.compile("[\ud800-\udfff]")


class Unstorable(ValueError):
    """A value Kinto's storage cannot hold; ``str()`` says why, after the value's name
    (``"contains the invalid character 0x00"``)."""


def check_text(text):
    """:class:`Unstorable` unless ``text`` can be stored as it is."""
    if "\x00" in text:
        raise Unstorable("contains the invalid character 0x00")
    surrogate = _SURROGATE.search(text)
    if surrogate is not None:
        raise Unstorable(f"contains a lone surrogate ({ascii(surrogate.group())[1:-1]})")


def is_storable(text):
    """Whether ``text`` can be stored, or looked up (an id from a URL), as it is."""
    return "\x00" not in text and _SURROGATE.search(text) is None


#: The last millisecond Kinto's storages can hold as a timestamp (9999-12-31: the memory
#: backend formats it as an HTTP date; PostgreSQL's interval ends much earlier than an int64).
MAX_TIMESTAMP = 253402300799999


def is_timestamp(value):
    """Whether ``value`` is a ``last_modified`` Kinto can store (a record's ``data`` may ask
    for one: past these bounds, Kinto's write fails with a 5xx, on every retry)."""
    return type(value) is int and 0 <= value <= MAX_TIMESTAMP


# JSON that Python reads but Kinto's parser does not: ``ValueError``, as any invalid JSON.


def _constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is too large a number")
    return value


def _int(text):
    value = int(text)  # A ValueError past Python's 4300 digits.
    try:
        float(value)
    except OverflowError:
        raise ValueError(f"{text[:20]}... is too large a number") from None
    return value


def json_object(text):
    """The JSON value of ``text``, as Kinto would read it and store it.

    ``ValueError`` when it is not JSON that Kinto reads (``RecursionError`` when it is nested
    deeper than Python can parse); :class:`Unstorable` when it holds a text that cannot be
    stored, or is nested deeper than :data:`MAX_DEPTH`. Whether it is an object is for the
    caller to check.
    """
    value = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    _check_value(value)
    return value


def _check_value(value):
    """Every key and string of ``value``, at most :data:`MAX_DEPTH` containers deep (walked
    with a stack of its own: the depth is the client's)."""
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            check_text(item)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth == MAX_DEPTH:
            raise Unstorable("is nested too deeply")
        if isinstance(item, dict):
            for key in item:
                check_text(key)
            item = item.values()
        pending.extend((child, depth + 1) for child in item)
