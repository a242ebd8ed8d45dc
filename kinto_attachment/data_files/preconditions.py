"""Preconditions of the writes of ``/data/files`` (RFC 9110 §13.1): ``If-Match`` and
``If-None-Match`` name versions by the ``ETag`` downloads send (the sha256),
``If-Unmodified-Since`` by date. Two jobs writing one id (on two nodes) make their writes
conditional so that neither replaces nor deletes the other's file unseen: ``If-None-Match: *``
creates only, ``If-Match`` replaces or deletes only the version read. The loser gets Kinto's
412, and the file there is untouched.

Checked against the id's live entry (an expired one is no file), before the body is
received, and again under the id's lock, where the write is decided.
"""

from .. import errors
from ..downloads.conditions import entity_tags, http_date, replaced_within
from ..state import data_file_entries


#: The headers that make a write conditional.
WRITE_CONDITIONS = ("If-Match", "If-None-Match", "If-Unmodified-Since")


def asked(request):
    """Whether the request makes its write conditional."""
    return any(name in request.headers for name in WRITE_CONDITIONS)


def require(request, entry):
    """412 unless the request's preconditions hold for ``entry``, the id's entry (None:
    none)."""
    if entry is not None and not data_file_entries.is_live(entry):
        entry = None
    headers = request.headers
    etag = None if entry is None else f'"{entry["hash"]}"'
    if_match = headers.get("If-Match")
    if if_match is not None:
        tags = entity_tags(if_match)
        if etag is None or ("*" not in tags and etag not in tags):
            raise errors.refuse("write_precondition")
    elif entry is not None:
        date = http_date(headers.get("If-Unmodified-Since") or "")
        previous = data_file_entries.previous_modified(entry)
        if date is not None and (
            entry["last_modified"] // 1000 > date or replaced_within(previous, date)
        ):
            raise errors.refuse("write_precondition")
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None and entry is not None:
        # Weak comparison (§13.1.2): W/"x" names the version "x" names.
        tags = {tag.removeprefix("W/") for tag in entity_tags(if_none_match)}
        if "*" in tags or etag in tags:
            raise errors.refuse("write_precondition")
