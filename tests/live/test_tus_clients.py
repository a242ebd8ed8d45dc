"""tuspy where tus 1.0.0 and tusd let it go further than a first reading of the protocol
(found by review, 2026-12-05): a last ``PATCH`` sent again after its answer was lost is done,
and metadata values the server does not read may be any bytes. A real client (tuspy) and a
real server (``pserve`` on the shipped ``config/kinto.ini``, as the live tests start it)."""

import hashlib
import io

import pytest
import requests
from tusclient import client as tus_client
from tusclient import request as tus_request
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from ..support.live import ALICE, REQUEST_TIMEOUT, running_server


pytestmark = pytest.mark.live

COLLECTION = "/buckets/website/collections/assets"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("review-tus")) as live:
        for path in ("/buckets/website", COLLECTION):
            response = requests.put(live.url + path, json={}, auth=ALICE, timeout=REQUEST_TIMEOUT)
            assert response.status_code in (200, 201), response.text
        yield live


def tuspy(server, record_id):
    """tuspy's client for the record's uploads URL, as docs/resumable-uploads.rst uses it."""
    url = f"{server.url}{COLLECTION}/records/{record_id}/attachment/uploads"
    credentials = requests.auth._basic_auth_str(*ALICE)
    return tus_client.TusClient(url, headers={"Authorization": credentials})


def attachment_of(server, record_id):
    url = f"{server.url}{COLLECTION}/records/{record_id}"
    response = requests.get(url, auth=ALICE, timeout=REQUEST_TIMEOUT)
    return response.json()["data"].get("attachment") if response.status_code == 200 else None


def test_tuspy_retrying_a_last_chunk_whose_answer_was_lost(server, monkeypatch):
    """Found by review (2026-12-05).

    tuspy gives up on an upload the server has finished, when the answer to its last
    ``PATCH`` was lost (a connection reset, a proxy's 504 while a large S3 upload completes).

    tuspy's retry (``Uploader._retry_or_cry``, ``retries`` > 0) asks the offset with ``HEAD``
    (the upload's length: it is done) and sends its request again from there: a ``PATCH`` with
    ``Upload-Offset`` equal to the length and an empty body. tusd answers it ``204`` with that
    ``Upload-Offset`` (``pkg/handler/unrouted_handler.go``, ``PatchFile``: "Do not proxy the
    call to the data store if the upload is already completed"), and the core protocol says a
    ``PATCH`` whose ``Upload-Offset`` matches is acknowledged with ``204`` and the new offset
    (tus 1.0.0, "PATCH": the offset of a matching, empty ``PATCH`` is unchanged). Here it is
    ``409 The upload is complete`` (``views/resumable.py``, ``patch``: ``tus.completed``) on
    every retry: ``upload()`` raises ``TusUploadFailed`` and the application reports a failed
    upload although the record has the whole file.

    Expected: tuspy's upload ends without an error.
    """
    content = bytes(range(256)) * 6
    lost = []
    real_patch = requests.patch

    def patch_whose_last_answer_is_lost(url, *args, **kwargs):
        response = real_patch(url, *args, **kwargs)
        done = response.headers.get("Upload-Offset") == str(len(content))
        if not lost and response.status_code == 204 and done:
            lost.append(response)
            raise requests.ConnectionError("connection reset before the answer arrived")
        return response

    monkeypatch.setattr(tus_request.requests, "patch", patch_whose_last_answer_is_lost)
    uploader = tuspy(server, "lost-answer").uploader(
        file_stream=io.BytesIO(content),
        chunk_size=1000,
        metadata={"filename": "lost.bin"},
        retries=2,
        retry_delay=0,
    )
    error = None
    try:
        uploader.upload()
    except TusUploadFailed as e:
        error = e
    assert lost, "the last PATCH never completed the upload"
    # The server did take every byte: the record has the file.
    assert attachment_of(server, "lost-answer")["hash"] == hashlib.sha256(content).hexdigest()
    assert error is None, (
        f"tuspy gave up on a finished upload: {error} ({error.status_code}) "
        f"{error.response_content!r}"
    )


def test_tuspy_metadata_value_that_is_not_utf8(server):
    """Found by review (2026-12-05).

    An upload whose metadata has a value that is not UTF-8, for a key the server does not
    even use, is refused whole (``400 Upload-Metadata: bad author``).

    tus 1.0.0 ("Upload-Metadata"): "the value MUST be Base64 encoded"; "Since metadata can
    contain arbitrary binary values, Servers SHOULD carefully validate metadata values or
    sanitize them before using them as header values". tusd decodes each value to bytes and
    keeps them (``ParseMetadataHeader``), whatever they are. tuspy encodes values with its
    ``metadata_encoding`` option (``BaseUploader.encode_metadata``): a client that sets it to
    ``latin-1`` (or sends any binary value) and adds, say, ``author: José`` to a file named
    ``report.bin`` cannot create the upload: ``protocols/tus.py``, ``metadata``, decodes every
    value as UTF-8 and refuses the request when one is not, though only ``filename``,
    ``filetype``, ``data`` and ``permissions`` mean anything here, and ``HEAD`` answers the
    header as it was sent anyway.

    Expected: the upload is created and becomes the attachment (``report.bin``).
    """
    content = b"a report\n"
    uploader = tuspy(server, "latin-1").uploader(
        file_stream=io.BytesIO(content),
        metadata={"filename": "report.bin", "author": "José"},
        metadata_encoding="latin-1",
    )
    try:
        uploader.upload()
    except TusCommunicationError as e:
        pytest.fail(
            f"tuspy could not create the upload: {e.status_code} {e.response_content!r}",
            pytrace=False,
        )
    attachment = attachment_of(server, "latin-1")
    assert attachment["filename"] == "report.bin"
    assert attachment["hash"] == hashlib.sha256(content).hexdigest()
