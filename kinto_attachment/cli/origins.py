"""Where requests may go, and with which credentials: the credentials go to the origin of
``--server`` only (its scheme, host and port); a URL the server hands out (a tus upload's
``Location``, a ``Next-Page``, a redirect) that leads elsewhere is requested without them, and
one that leads from ``https`` to ``http`` is refused."""

import base64
from urllib.parse import urljoin, urlsplit

import requests

from .answers import Failure


def parse_auth(value):
    """``user:password`` (Basic) or ``Bearer token`` (any ``Type token``), as kinto-http.

    Basic credentials are sent in UTF-8, as curl sends them and as Kinto (Pyramid) reads them
    (requests would send them in Latin-1, and fail on any other letter: ``alice:пароль``). A
    token that a header cannot carry is :class:`Failure` (a usage error), not a traceback."""
    if not value:
        return None
    kind, _, token = value.partition(" ")
    try:
        if token and ":" not in kind:
            return Header(f"{kind} {token}".encode("latin-1").decode("latin-1"))
        user, _, password = value.partition(":")  # "alice": alice, no password.
        credentials = f"{user}:{password}".encode()
    except UnicodeEncodeError:
        raise Failure("--auth: a header cannot carry these credentials") from None
    return Header("Basic " + base64.b64encode(credentials).decode("ascii"))


class Header(requests.auth.AuthBase):
    def __init__(self, value):
        self.value = value

    def __call__(self, request):
        request.headers["Authorization"] = self.value
        return request


class Without(requests.auth.AuthBase):
    """No credentials at all (not even ``~/.netrc``'s, nor the cookies the server set, which
    a browser's rules would send to any port of its host): for origins other than the
    server's."""

    def __call__(self, request):
        _strip_credentials(request.headers)
        return request


def _strip_credentials(headers):
    headers.pop("Authorization", None)
    headers.pop("Cookie", None)


def origin_of(url):
    """``(scheme, host, port)`` of ``url``, the port made explicit; None when it has none."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


def check_url(url, server_origin, came_from):
    """Refuse a URL that is no ``http(s)`` URL, or that leads from ``https`` to ``http``."""
    origin = origin_of(url)
    if origin is None:
        raise Failure(f"{came_from}: not an http(s) URL: {url!r}")
    if origin[0] == "http" and (server_origin[0] == "https" or came_from.startswith("https:")):
        raise Failure(f"{came_from}: refused to go from https to http ({url})")
    return origin


def joined(base, value):
    """``value`` (a URL a server gave: ``Location``, ``Next-Page``) relative to ``base``, or
    :class:`Failure`: :func:`urljoin` raises :class:`ValueError` on some that are no URL
    (``http://[::1/x``) before :func:`check_url` can refuse them."""
    try:
        return urljoin(base, value)
    except ValueError:
        raise Failure(f"{base}: not an http(s) URL: {value!r}") from None


class Session(requests.Session):
    """A session that keeps the credentials on redirects to ``origin`` only and refuses a
    redirect from ``https`` to ``http``."""

    def __init__(self, origin):
        super().__init__()
        self.origin = origin

    def rebuild_auth(self, prepared_request, response):
        """On a redirect: the credentials (``Authorization``, ``~/.netrc``'s, which know hosts
        and not ports, the server's cookies) for the server's origin only."""
        if origin_of(prepared_request.url) != self.origin:
            _strip_credentials(prepared_request.headers)
            return
        super().rebuild_auth(prepared_request, response)

    def get_redirect_target(self, response):
        """The redirect's target, checked; its body is dropped unread (requests reads it
        whole before it follows the redirect, and a server may never end it)."""
        target = super().get_redirect_target(response)
        if target is not None:
            check_url(joined(response.url, target), self.origin, response.url)
            response.raw.close()
            response._content, response._content_consumed = b"", True
        return target
