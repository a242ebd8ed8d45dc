"""Readable request logs: Kinto's request summaries as one line each.

Kinto logs every request on the ``request.summary`` logger with an empty message and its facts
as the record's attributes (``method``, ``path``, ``code``, ``t``, ``uid``...), for a JSON
formatter to write. With a text format (``%(message)s``) the line is empty. The shipped
configurations use :class:`SummaryFormatter`, which writes those facts as the message, on one
line (cut in two here)::

    ... INFO  [request.summary] POST /v1/buckets/b/collections/c/records/r/attachment 201 41ms
    user=basicauth:7f3c... in=1048690 out=171

``in``/``out`` are the request and response bodies' ``Content-Length`` (``-`` when unknown,
as for a chunked body), which :func:`includeme` adds to Kinto's summary.

One request, one line, whatever the client sends: what comes from it cannot end the line,
nor add a field (a space), nor rewrite the terminal (escape sequences). Kinto gives the path
percent-encoded and the query decoded: the query is encoded again, as it was sent; the path,
the method and the user are escaped in Python's way (``\n``, ``\x1b``, ``\u2028``), as is
anything that would not print.
"""

import logging
import urllib.parse

from pyramid.events import NewRequest


class SummaryFormatter(logging.Formatter):
    """A text formatter whose message, for Kinto's request summaries, is the summary.

    Other records are formatted as by :class:`logging.Formatter`.
    """

    def format(self, record):
        if record.msg == "" and hasattr(record, "code") and hasattr(record, "method"):
            record = logging.makeLogRecord({**record.__dict__, "msg": summary(record)})
        return super().format(record)


#: What the query keeps unencoded: RFC 3986's query characters but its separators.
QUERY_SAFE = "/?:@!$'()*+,;"


def summary(record):
    """``METHOD path?query status duration user=... in=... out=...`` of a summary record."""
    facts = record.__dict__
    query = "&".join(
        f"{_encoded(k)}={_encoded(v)}" for k, v in (facts.get("querystring") or {}).items()
    )
    words = [
        facts["method"],
        facts["path"] + (f"?{query}" if query else ""),
        str(facts["code"]),
        f"{facts['t']}ms",
        f"user={_user(facts)}",
        f"in={_size(facts.get('bytes_in'))}",
        f"out={_size(facts.get('bytes_out'))}",
    ]
    if facts.get("errno"):
        words.append(f"errno={facts['errno']}")
    return " ".join(_escaped(word) for word in words)


def _encoded(text):
    return urllib.parse.quote(str(text), safe=QUERY_SAFE)


def _escaped(text):
    """``text`` with a space, a backslash and whatever does not print (control characters,
    line and paragraph separators, bidirectional overrides...) written as Python escapes."""
    return "".join(c if c.isprintable() and c not in " \\" else _escape(c) for c in text)


def _escape(character):
    return r"\x20" if character == " " else character.encode("unicode_escape").decode("ascii")


def _user(facts):
    """Kinto's user id as its permissions name it (``basicauth:...``), or ``-``: Kinto logs
    ``uid`` and ``authn_type`` together."""
    return f"{facts['authn_type']}:{facts['uid']}" if facts.get("uid") else "-"


def _size(value):
    return "-" if value is None else str(value)


def _bind_sizes(event):
    event.request.add_response_callback(_sizes)


#: Query parameters that are secrets: a signed fetch URL's signature is its access, for
#: ``events.url_expires_seconds``, to anyone who reads it.
SECRET_PARAMETERS = frozenset({"signature"})


def _sizes(request, response):
    # Response callbacks run before Kinto logs the summary (on NewResponse).
    request.log_context(bytes_in=request.content_length, bytes_out=response.content_length)
    try:
        query = dict(request.GET)
    except UnicodeDecodeError:  # Kinto logs what it could read of it.
        return
    if SECRET_PARAMETERS & query.keys():
        masked = {k: "-" if k in SECRET_PARAMETERS else v for k, v in query.items()}
        request.log_context(querystring=masked)


def includeme(config):
    """Add the body sizes to Kinto's request summaries."""
    config.add_subscriber(_bind_sizes, NewRequest)
