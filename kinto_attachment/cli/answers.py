"""What a server answered, read with bounds and checked before use: a malformed answer is a
:class:`Failure` (one line for the user), never a traceback, and no answer grows the command
without bound."""

from .pace import CHUNK


class Failure(Exception):
    """A request the server refused or that could not be made: one line for the user."""


#: The largest answer read whole (a page of records, a record).
ANSWER_BYTES = 16 * 1024 * 1024
#: How much of an error's answer is read, for its message.
ERROR_BYTES = 64 * 1024


def read(response, limit):
    """Read the body of ``response`` (streamed) up to ``limit`` bytes into it, so that
    ``.content`` and ``.json()`` give what was read; whether it was all of it."""
    body, whole = bytearray(), True
    for chunk in response.iter_content(CHUNK):
        body += chunk
        if len(body) > limit:
            del body[limit:]
            whole = False
            break
    response._content, response._content_consumed = bytes(body), True
    return whole


def parsed(response):
    """The JSON the server answered, or None when it is none. Nesting deep enough to exhaust
    the parser's recursion (``[[[[...``) raises :class:`RecursionError`, no
    :class:`ValueError`: it is no usable answer either."""
    try:
        return response.json()
    except (ValueError, RecursionError):
        return None


def json_of(response):
    """The JSON object the server answered, or :class:`Failure`."""
    body = parsed(response)
    if not isinstance(body, dict):
        raise Failure(f"the server's answer is no JSON object ({response.url})")
    return body


def describe(response):
    """``413 File size exceeds the limit (5 bytes).``: the status and Kinto's message (or,
    for Kinto's 404s, which have none, what is missing)."""
    body = parsed(response)
    details = body.get("details") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if not message and isinstance(details, dict) and "resource_name" in details:
        message = f"{details['resource_name']} {details.get('id')!r} not found"
    message = message or response.reason
    return f"{response.status_code} {message} ({response.request.method} {response.url})"
