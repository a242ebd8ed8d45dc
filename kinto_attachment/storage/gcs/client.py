"""The GCS store's client and HTTP session, and the translation of their errors into the store's.

Every module of the GCS store sends requests, through google-cloud-storage's client or, for what
the client does not expose (the chunks of a resumable upload, a ranged streamed download, batch
deletes, compose with a predefined ACL), straight to the JSON API through the same authorised
HTTP session. This module holds what they share, so that views only ever see
:class:`StorageUnavailable` (a 503) or ``FileNotFoundError`` (a 4xx), never a Google exception.
"""

import contextlib

import google.auth
import requests
import urllib3
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials, Signing
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from google.cloud.storage.retry import DEFAULT_RETRY
from google.oauth2 import service_account

from ...setting_values import fail
from .. import StorageUnavailable
from ..base import UPLOAD_METADATA
from .options import PREFIX


SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
#: Connections kept per host: uploads in flight, each with a chunk being sent, and downloads.
POOL_SIZE = 32


def _credentials(options):
    """``(credentials, project)``: the key file, else none for an endpoint of its own (an
    emulator), else the environment's (ADC: GCE, Cloud Run, ``gcloud auth``...)."""
    if options.credentials:
        credentials = service_account.Credentials.from_service_account_file(
            options.credentials, scopes=SCOPES
        )
        return credentials, options.project or credentials.project_id
    if options.endpoint_url:
        return AnonymousCredentials(), options.project or "<none>"
    try:
        credentials, project = google.auth.default(scopes=SCOPES)
    except auth_exceptions.DefaultCredentialsError as e:
        fail(PREFIX + "credentials", f"not set, and no default credentials: {e}")
    return credentials, options.project or project


def make_client(options):
    """The process's client and its authorised session (both thread-safe)."""
    credentials, project = _credentials(options)
    session = AuthorizedSession(credentials)
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    client = storage.Client(
        project=project,
        credentials=credentials,
        client_options={"api_endpoint": options.endpoint_url} if options.endpoint_url else None,
        _http=session,
    )
    return client, session


def can_sign(credentials):
    """Whether URLs can be signed with ``credentials``: with their own key (a service account),
    or by IAM's ``signBlob`` for the account they stand for (GCE, Cloud Run...)."""
    return isinstance(credentials, Signing) or hasattr(credentials, "service_account_email")


def retry_policy(seconds):
    """The client's retry of transient errors (429, 5xx, resets) for ``seconds``; or none."""
    return DEFAULT_RETRY.with_timeout(seconds) if seconds else None


def status_of(error):
    """The HTTP status of a failed request, or None (no answer)."""
    if isinstance(error, api_exceptions.GoogleAPICallError):
        return error.code
    if isinstance(error, InvalidResponse):
        return error.response.status_code
    return None


def _message(error):
    """GCS's own words for a failed request (its JSON error message), else the error's."""
    if isinstance(error, api_exceptions.GoogleAPICallError):
        return error.message
    response = getattr(error, "response", None)
    with contextlib.suppress(ValueError, AttributeError):
        return response.json()["error"]["message"]
    return str(error)


@contextlib.contextmanager
def unavailable(action):
    """Turn the client's and the session's errors into :class:`StorageUnavailable`, which the
    views answer with a 503; the original is its ``__cause__`` (see :func:`status_of`)."""
    try:
        yield
    except (
        api_exceptions.GoogleAPIError,
        auth_exceptions.GoogleAuthError,
        DataCorruption,
        InvalidResponse,
        requests.RequestException,
        # Reading ``response.raw`` (a download's body): urllib3's own, when it breaks.
        urllib3.exceptions.HTTPError,
    ) as error:
        status = status_of(error)
        detail = f"{status} {_message(error)}" if status else str(error)
        raise StorageUnavailable(f"GCS {action} failed: {detail}") from error


def checked(response, *expected):
    """``response`` if its status is one of ``expected``; else the client's own error for an
    unexpected answer, which :func:`unavailable` translates and :func:`retry_policy` retries
    when it is transient."""
    if response.status_code not in expected:
        raise InvalidResponse(response, f"{response.status_code} {response.reason}")
    return response


def made_by(blob, token):
    """Whether the object ``blob`` (a ``Blob``, or None) was made by the write of ``token``."""
    return blob is not None and (blob.metadata or {}).get(UPLOAD_METADATA) == token
