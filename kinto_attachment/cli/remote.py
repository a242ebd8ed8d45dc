"""The server, as the command sees it: one HTTP session, the collection's records, errors.

Idempotent requests (``GET``, ``HEAD``, ``DELETE``) are retried with backoff on connection
errors and on ``429``/``502``/``503``/``504``, honouring ``Retry-After`` up to
:data:`RETRY_AFTER_SECONDS`; writes are not, since
an upload resumes from what the server says it has instead (see :mod:`.uploads`).

The credentials go to the origin of ``--server`` only (:mod:`.origins`). Only ``GET`` and
``HEAD`` follow redirects: a write is never sent twice, nor elsewhere. Whatever the server
answers is checked before use (:mod:`.answers`).
"""

from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .answers import ANSWER_BYTES, ERROR_BYTES, Failure, describe, json_of, read
from .origins import Session, Without, check_url, joined, origin_of, parse_auth


#: Seconds to wait for the server to answer (not for a whole transfer).
TIMEOUT = 60
RETRIED = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
#: The methods that follow redirects.
REDIRECTED = frozenset({"GET", "HEAD"})


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


def _redirected(response):
    """What to say of a write the server redirects (not followed: see the module's
    docstring): mostly a ``--server`` without Kinto's API prefix (Kinto redirects
    ``/buckets/...`` to ``/v1/buckets/...``)."""
    location = response.headers.get("Location")
    if not response.is_redirect or not location:
        return ""
    return (
        f" (redirected to {location[:200]!r}: is --server the URL of Kinto's API, "
        "such as http://localhost:8888/v1?)"
    )


class Remote:
    """A collection of a Kinto server."""

    def __init__(self, server, bucket, collection, auth=None, retries=3):
        if "@" in server:  # Printed in every message, the refusals too: never a password.
            raise Failure(
                "--server: give the credentials with --auth (or KINTO_AUTH), not in the URL"
            )
        self.server = server.rstrip("/")
        self.origin = origin_of(self.server)
        if self.origin is None:
            raise Failure(f"--server: not an http(s) URL: {server!r}")
        if urlsplit(self.server).query or urlsplit(self.server).fragment:  # URLs go after it.
            raise Failure(f"--server: the URL of Kinto's API, without ? nor #: {server!r}")
        for option, name in (("--bucket", bucket), ("--collection", collection)):
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:  # Bytes the command line could not decode: no URL.
                raise Failure(f"{option}: not UTF-8: {name!r}") from None
        self.bucket, self.collection = bucket, collection
        self.retries = retries
        self.session = Session(self.origin)
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
        kwargs["auth"] = self.auth if origin == self.origin else Without()
        try:
            response = self.session.request(method, url, stream=True, **kwargs)
            if response.status_code not in expected:
                with response:
                    read(response, ERROR_BYTES)
                raise Failure(describe(response) + _redirected(response))
            if not stream:
                with response:
                    if not read(response, ANSWER_BYTES):
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
        listed = 0
        while url:
            seen.add(url)
            response = self.request("GET", url)
            listed += len(response.content)
            if listed > LISTING_BYTES or len(records) > LISTING_RECORDS:
                raise Failure(
                    f"the server lists over {LISTING_RECORDS:,} records or "
                    f"{LISTING_BYTES // 2**30} GiB of them: more than this command holds "
                    f"({response.url})"
                )
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
#: The most records, and bytes of pages, one listing holds: a server that lists a new record
#: on every page, forever, would grow the command without end (each page is bounded alone).
LISTING_RECORDS = 1_000_000
LISTING_BYTES = 1 << 30
#: Records asked for per page (Kinto's ``_limit``): a page of records of 16 KiB each on
#: average fits in :data:`~.answers.ANSWER_BYTES` (without it, Kinto lists up to 10,000 a
#: page).
PAGE_RECORDS = 1000
