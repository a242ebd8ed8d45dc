"""The server, as the command sees it: one HTTP session, the collection's records, errors.

Idempotent requests (``GET``, ``HEAD``, ``DELETE``) are retried with backoff on connection
errors and on ``429``/``502``/``503``/``504``, honouring ``Retry-After``; writes are not, since
an upload resumes from what the server says it has instead (see :mod:`.uploads`).
"""

import hashlib
import time
import uuid

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry


#: Bytes read from a file or a response at a time.
CHUNK = 1024 * 1024
#: Seconds to wait for the server to answer (not for a whole transfer).
TIMEOUT = 60
RETRIED = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
#: Record ids of files are derived from their names in this namespace: stable, and valid ids.
ID_NAMESPACE = uuid.UUID("9a0a2b4e-1d55-4d0e-9b1e-6b7a3f6f7c10")


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


class Failure(Exception):
    """A request the server refused or that could not be made: one line for the user."""


def record_id_of(name):
    """The record id of a file named ``name`` (a path relative to what is uploaded)."""
    return str(uuid.uuid5(ID_NAMESPACE, name))


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


class Remote:
    """A collection of a Kinto server."""

    def __init__(self, server, bucket, collection, auth=None, retries=3):
        self.server = server.rstrip("/")
        self.bucket, self.collection = bucket, collection
        self.retries = retries
        self.session = requests.Session()
        self.session.auth = parse_auth(auth)
        retry = Retry(
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
        return f"{self.server}/buckets/{self.bucket}/collections/{self.collection}/records"

    def record_url(self, record_id):
        return f"{self.records_url}/{record_id}"

    def request(self, method, url, expected=(200,), **kwargs):
        """The response, or :class:`Failure` unless its status is ``expected``."""
        kwargs.setdefault("timeout", TIMEOUT)
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.RequestException as e:
            raise Failure(f"{method} {url}: {e.__class__.__name__}: {e}") from e
        if response.status_code not in expected:
            raise Failure(describe(response))
        return response

    def records(self):
        """Every record of the collection (following Kinto's pages)."""
        url = self.records_url
        while url:
            response = self.request("GET", url)
            yield from response.json()["data"]
            url = response.headers.get("Next-Page")

    def record(self, record_id):
        """The record, or None."""
        response = self.request("GET", self.record_url(record_id), expected=(200, 403, 404))
        return response.json()["data"] if response.status_code == 200 else None


def describe(response):
    """``413 File size exceeds the limit (5 bytes).``: the status and Kinto's message (or,
    for Kinto's 404s, which have none, what is missing)."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    details = body.get("details") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if not message and isinstance(details, dict) and "resource_name" in details:
        message = f"{details['resource_name']} {details.get('id')!r} not found"
    message = message or response.reason
    return f"{response.status_code} {message} ({response.request.method} {response.url})"
