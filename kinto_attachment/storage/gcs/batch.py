"""Deletes in batches: GCS's JSON API batch requests, up to 100 deletes in one HTTP request.

google-cloud-storage batches requests too, but its parts carry no ``Content-ID``, which GCS's
documented format gives each part and without which some servers drop them (fake-gcs-server):
the request is written here as GCS documents it, and each answer matched by its id.
"""

import email.parser
import uuid

from .. import StorageUnavailable
from .client import checked, unavailable


#: GCS takes at most 100 calls in one batch request.
BATCH_SIZE = 100
#: A delete done, or one that had nothing to delete (idempotent).
DELETED = (200, 204, 404)


def _body(store, names, boundary):
    parts = [
        f"--{boundary}\r\n"
        "Content-Type: application/http\r\n"
        f"Content-ID: <{number}>\r\n\r\n"
        # The request, its (empty) headers ended by a blank line, then the delimiter's CRLF.
        f"DELETE {store.object_url(name)} HTTP/1.1\r\n\r\n\r\n"
        for number, name in enumerate(names)
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


def _number(text):
    """Whether ``int()`` reads ``text`` as a number of ours (``²`` is a digit to ``str``)."""
    return text.isascii() and text.isdigit()


def _statuses(response):
    """``{part number: HTTP status}`` of a batch response (``multipart/mixed``)."""
    header = f"Content-Type: {response.headers.get('Content-Type', '')}\r\n\r\n".encode()
    message = email.parser.BytesParser().parsebytes(header + response.content)
    statuses = {}
    for part in message.get_payload() if message.is_multipart() else ():
        # str(): a header of non-ASCII bytes is an email.header.Header.
        number = str(part.get("Content-ID", "")).strip("<>").removeprefix("response-")
        status_line = part.get_payload().lstrip().split("\n", 1)[0].split()
        if _number(number) and len(status_line) > 1 and _number(status_line[1]):
            statuses[int(number)] = int(status_line[1])
    return statuses


def delete_batch(store, names):
    """Delete ``names`` (at most :data:`BATCH_SIZE`) in one request; StorageUnavailable naming
    the first ones GCS did not delete."""
    boundary = uuid.uuid4().hex
    body = _body(store, names, boundary)

    def post():
        response = store.session.post(
            f"{store.client.api_endpoint}/batch/storage/v1",
            data=body,
            headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
            timeout=store.timeout,
        )
        return checked(response, 200)

    with unavailable("batch delete"):
        response = store.retried(post)
    statuses = _statuses(response)
    failed = [
        (name, statuses.get(number))
        for number, name in enumerate(names)
        if statuses.get(number) not in DELETED
    ]
    if failed:
        raise StorageUnavailable(f"GCS batch delete failed: {failed[:3]}")
