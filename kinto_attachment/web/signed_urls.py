"""Expiring URLs of stored blobs, signed with a secret: what a processing service fetches a
file with, without Kinto credentials, on a store that presigns no URLs of its own (local disk).

The signature is the HMAC-SHA256 of the key and the expiry (epoch seconds), hex: it gives
that blob only, until then only. Every node holding the secret verifies what any node signed.
"""

import hashlib
import hmac
import time
from urllib.parse import quote, urlencode


#: Where the plugin serves them, under the API prefix (the route ``attachment-fetch``).
PATH = "/attachment-fetch/"


def signature(secret, key, expires):
    message = f"{key}\n{int(expires)}".encode("utf-8", "surrogateescape")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signed_path(secret, key, expires):
    """``{quoted key}?expires=...&signature=...``, relative to the fetch route."""
    query = urlencode({"expires": int(expires), "signature": signature(secret, key, expires)})
    return f"{quote(key, safe='/')}?{query}"


def verify(secret, key, expires, given, now=None):
    """Whether ``given`` signs ``key`` until ``expires`` (text, from the query string), and
    that time has not come."""
    if not secret or not expires or not expires.isascii() or not expires.isdigit():
        return False
    if len(expires) > 12 or int(expires) <= (now if now is not None else time.time()):
        return False
    # Compared as bytes: compare_digest refuses text that is not ASCII (a TypeError).
    expected = signature(secret, key, int(expires)).encode("ascii")
    return hmac.compare_digest(expected, str(given or "").encode("utf-8", "surrogatepass"))
