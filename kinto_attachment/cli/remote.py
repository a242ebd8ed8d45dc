"""The server, as the command sees it: one HTTP session, the collection's records, errors.

Idempotent requests (``GET``, ``HEAD``, ``DELETE``) are retried with backoff on connection
errors and on ``429``/``502``/``503``/``504``, honouring ``Retry-After`` up to
:data:`RETRY_AFTER_SECONDS`; writes are not, since
an upload resumes from what the server says it has instead (see :mod:`.uploads`).

The credentials go to the origin of ``--server`` only (its scheme, host and port): a URL the
server hands out (a tus upload's ``Location``, a ``Next-Page``, a redirect) that leads
elsewhere is requested without them, and one that leads from ``https`` to ``http`` is
refused. Only ``GET`` and ``HEAD`` follow redirects: a write is never sent twice, nor
elsewhere. Whatever the server answers is checked before use: a malformed answer is a
:class:`Failure`, never a traceback.
"""

import hashlib
import time
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry


#: Bytes read from a file or a response at a time.
CHUNK = 1024 * 1024
#: Seconds to wait for the server to answer (not for a whole transfer).
TIMEOUT = 60
RETRIED = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
#: The methods that follow redirects.
REDIRECTED = frozenset({"GET", "HEAD"})


class Pace:
    """At most ``rate`` bytes a second (no limit when ``rate`` is None): call :meth:`passed`
    with each chunk's size, it sleeps while the transfer is ahead of the rate. ``done``: the
    bytes passed so far.

    A transfer that fell behind (a server's answer, a retry's wait) may catch up on
    :data:`CATCH_UP_SECONDS` at most: it never bursts for longer."""

    def __init__(self, rate=None):
        self._rate, self._started, self.done = rate, time.monotonic(), 0

    def passed(self, size):
        if not self._rate:
            self.done += size
            return
        behind = time.monotonic() - self._started - self.done / self._rate
        self._started += max(0.0, behind - CATCH_UP_SECONDS)
        self.done += size
        time.sleep(max(0.0, self.done / self._rate - (time.monotonic() - self._started)))


#: How far behind its rate a paced transfer may be, in seconds of transfer.
CATCH_UP_SECONDS = 1.0


class _Retry(Retry):
    """urllib3's :class:`Retry`, with a server's ``Retry-After`` honoured up to
    :data:`RETRY_AFTER_SECONDS` only: urllib3 sleeps as long as it says (``86400``: a day),
    and a command must not hang on a server's word. The body of an answer that is retried
    is not read: urllib3 reads it to its end first, which a server may never reach."""

    def get_retry_after(self, response):
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, RETRY_AFTER_SECONDS)

    def increment(self, method=None, url=None, response=None, *args, **kwargs):
        if response is not None:
            response.close()  # Closed, the connection is not kept; its body reads as empty.
        return super().increment(method, url, response, *args, **kwargs)


#: The longest a ``Retry-After`` makes the command wait before a retry, in seconds.
RETRY_AFTER_SECONDS = 60


class Failure(Exception):
    """A request the server refused or that could not be made: one line for the user."""


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def parse_auth(value):
    """``user:password`` (Basic) or ``Bearer token`` (any ``Type token``), as kinto-http."""
    if not value:
        return None
    kind, _, token = value.partition(" ")
    if token and ":" not in kind:
        return _Header(f"{kind} {token}")
    user, _, password = value.partition(":")
    return (user, password)


class _Header(requests.auth.AuthBase):
    def __init__(self, value):
        self.value = value

    def __call__(self, request):
        request.headers["Authorization"] = self.value
        return request


class _Without(requests.auth.AuthBase):
    """No credentials at all (not even ``~/.netrc``'s): for origins other than the server's."""

    def __call__(self, request):
        request.headers.pop("Authorization", None)
        return request


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


class _Session(requests.Session):
    """A session that keeps the ``Authorization`` header on redirects to ``origin`` only and
    refuses a redirect from ``https`` to ``http``."""

    def __init__(self, origin):
        super().__init__()
        self.origin = origin

    def should_strip_auth(self, old_url, new_url):
        return origin_of(new_url) != self.origin

    def get_redirect_target(self, response):
        """The redirect's target, checked; its body is dropped unread (requests reads it
        whole before it follows the redirect, and a server may never end it)."""
        target = super().get_redirect_target(response)
        if target is not None:
            check_url(joined(response.url, target), self.origin, response.url)
            response.raw.close()
            response._content, response._content_consumed = b"", True
        return target


class Remote:
    """A collection of a Kinto server."""

    def __init__(self, server, bucket, collection, auth=None, retries=3):
        self.server = server.rstrip("/")
        self.origin = origin_of(self.server)
        if self.origin is None:
            raise Failure(f"--server: not an http(s) URL: {server!r}")
        if "@" in urlsplit(self.server).netloc:  # Printed in every message: never a password.
            raise Failure(
                "--server: give the credentials with --auth (or KINTO_AUTH), not in the URL"
            )
        self.bucket, self.collection = bucket, collection
        self.retries = retries
        self.session = _Session(self.origin)
        self.auth = parse_auth(auth)
        retry = _Retry(
            total=retries,
            backoff_factor=0.5,
            status_forcelist=(429, 502, 503, 504),
            allowed_methods=RETRIED,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @property
    def records_url(self):
        bucket, collection = (quote(name, safe="") for name in (self.bucket, self.collection))
        return f"{self.server}/buckets/{bucket}/collections/{collection}/records"

    def record_url(self, record_id):
        """The URL of the record ``record_id``, or :class:`Failure` when it cannot be one: an
        id that is no UTF-8 (a lone surrogate, which a server's JSON may carry, or a name of
        bytes the command line could not decode) has no URL, and must fail alone, not as a
        traceback that stops every other record."""
        try:
            return f"{self.records_url}/{quote(record_id, safe='')}"
        except UnicodeEncodeError:
            raise Failure(f"not a record id (not UTF-8): {record_id!r}") from None

    def url_from(self, response, value):
        """A URL the server gave in ``response`` (relative to it, or absolute), checked."""
        url = joined(response.url, value)
        check_url(url, self.origin, response.url)
        return url

    def request(self, method, url, expected=(200,), stream=False, **kwargs):
        """The response, or :class:`Failure` unless its status is ``expected``. The
        credentials go along only when ``url`` is on the server's origin. Unless ``stream``
        (the caller reads the body, bounded), the body is read here, up to
        :data:`ANSWER_BYTES`: a server's answer never grows the command without bound."""
        origin = check_url(url, self.origin, self.server)
        kwargs.setdefault("timeout", TIMEOUT)
        kwargs.setdefault("allow_redirects", method in REDIRECTED)
        kwargs["auth"] = self.auth if origin == self.origin else _Without()
        try:
            response = self.session.request(method, url, stream=True, **kwargs)
            if response.status_code not in expected:
                with response:
                    _read(response, ERROR_BYTES)
                raise Failure(describe(response))
            if not stream:
                with response:
                    if not _read(response, ANSWER_BYTES):
                        raise Failure(
                            f"the server's answer is over {ANSWER_BYTES // 2**20} MiB "
                            f"({method} {response.url})"
                        )
        except requests.RequestException as e:
            raise Failure(f"{method} {url}: {e.__class__.__name__}: {e}") from e
        return response

    def records(self):
        """Every record of the collection, each id once; what is listed is untrusted (a
        record may be no object, its id no string).

        Kinto's pages are read one after the other, newest first: a record written while
        they are read moves before the pages already read, and is on none. So the listing is
        taken only if the collection's timestamp (each page's ``ETag``) stayed the same
        from its first page to its last, else read again, :data:`LISTINGS` times at most: a
        record missing from it would be taken for none (its file ``new``)."""
        for _ in range(LISTINGS):
            records, etags = self._pages()
            # Compared weakly: a proxy compressing some pages makes their ETags weak (W/).
            if len({etag.removeprefix("W/") if etag else etag for etag in etags}) <= 1:
                return records
        raise Failure(f"the collection kept changing while it was listed ({self.records_url})")

    def _pages(self):
        """``(records, ETags of the pages)`` of one reading of Kinto's pages."""
        url, seen, ids, records, etags = (
            f"{self.records_url}?_limit={PAGE_RECORDS}",
            set(),
            set(),
            [],
            [],
        )
        while url:
            seen.add(url)
            response = self.request("GET", url)
            page = json_of(response).get("data")
            if not isinstance(page, list):
                raise Failure(f"the server listed no records ({response.url})")
            etags.append(response.headers.get("ETag"))
            new = 0
            for record in page:
                record_id = record.get("id") if isinstance(record, dict) else None
                if isinstance(record_id, str):
                    if record_id in ids:
                        continue
                    ids.add(record_id)
                    new += 1  # Only records: what is none may be repeated on every page.
                records.append(record)
            following = response.headers.get("Next-Page")
            url = following and self.url_from(response, following)
            if url and url in seen:
                raise Failure(f"the server's pages go round ({url})")
            if url and not new:  # Kinto says there is more only after some records.
                raise Failure(f"the server's pages list nothing new, yet go on ({response.url})")
        return records, etags

    def record(self, record_id):
        """The record, or None when there is none (or it may not be read, or ``record_id``
        cannot be one)."""
        try:
            url = self.record_url(record_id)
        except Failure:  # No record has that id: as for a 404.
            return None
        response = self.request("GET", url, expected=(200, 400, 403, 404))
        if response.status_code != 200:
            return None
        record = json_of(response).get("data")
        if not isinstance(record, dict) or record.get("id") != record_id:
            raise Failure(f"the server answered another record ({response.url})")
        return record


#: Readings of a collection's records that changed while read, before giving up.
LISTINGS = 3
#: The largest answer read whole (a page of records, a record).
ANSWER_BYTES = 16 * 1024 * 1024
#: Records asked for per page (Kinto's ``_limit``): a page of records of 16 KiB each on
#: average fits in :data:`ANSWER_BYTES` (without it, Kinto lists up to 10,000 a page).
PAGE_RECORDS = 1000
#: How much of an error's answer is read, for its message.
ERROR_BYTES = 64 * 1024


def _read(response, limit):
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


def _parsed(response):
    """The JSON the server answered, or None when it is none. Nesting deep enough to exhaust
    the parser's recursion (``[[[[...``) raises :class:`RecursionError`, no
    :class:`ValueError`: it is no usable answer either."""
    try:
        return response.json()
    except (ValueError, RecursionError):
        return None


def json_of(response):
    """The JSON object the server answered, or :class:`Failure`."""
    body = _parsed(response)
    if not isinstance(body, dict):
        raise Failure(f"the server's answer is no JSON object ({response.url})")
    return body


def describe(response):
    """``413 File size exceeds the limit (5 bytes).``: the status and Kinto's message (or,
    for Kinto's 404s, which have none, what is missing)."""
    body = _parsed(response)
    details = body.get("details") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if not message and isinstance(details, dict) and "resource_name" in details:
        message = f"{details['resource_name']} {details.get('id')!r} not found"
    message = message or response.reason
    return f"{response.status_code} {message} ({response.request.method} {response.url})"
