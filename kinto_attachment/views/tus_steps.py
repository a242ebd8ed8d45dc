"""The steps of resumable uploads, plain and concatenated (:mod:`.resumable`,
:mod:`.concatenation`): the policy of the URL's collection, store failures as tus answers,
whose an upload is, a request's bytes appended and the upload recorded, and the end of every
upload, whose file becomes the record's attachment."""

import base64
import contextlib
import logging

from kinto.core.utils import msec_time
from pyramid import httpexceptions

from .. import errors
from ..protocols import tus
from ..state import tus_uploads
from ..uploads import hash_behind, intake, lifecycle
from ..uploads.meter import Meter
from ..uploads.record import attach
from ..web import streams


logger = logging.getLogger(__name__)


def policy_of(request):
    match = request.matchdict
    return request.registry.attachment_settings.policy(match["bucket_id"], match["collection_id"])


@contextlib.contextmanager
def store_errors():
    """A failing store is a 503 (retry later); an upload whose stored bytes are gone (the
    store's ``FileNotFoundError``) a 410: no retry can bring them back, start a new upload."""
    with errors.store_errors():
        try:
            yield
        except FileNotFoundError as e:
            logger.warning("Resumable upload lost: %s", e)
            raise tus.gone() from e


def is_mine(request, upload):
    """Whether ``upload`` is this user's, on this record, and not expired."""
    context = request.context
    return (
        upload["userid"] == request.prefixed_userid
        and (upload["bucket_id"], upload["collection_id"], upload["record_id"])
        == (context.bucket_id, context.collection_id, context.record_id)
        and upload["expires"] > msec_time()
    )


def finish(request, upload, progress, sha256):
    """The file the store made (``progress``) becomes the record's attachment; the upload is
    remembered as finished, and forgotten if the transaction fails (the caller removes its
    state, if it was saved)."""
    store = request.registry.attachment_store
    blob = intake.Blob(
        key=progress.key,
        filename=upload["filename"],
        hash=sha256,
        size=upload["length"],
        mimetype=upload["mimetype"],
    )
    created = progress.key in progress.created
    attach(
        request,
        request.context,
        blob,
        upload["data"],
        upload["permissions"],
        discard_on_failure=created,
    )
    others = [key for key in progress.created if key != progress.key]
    lifecycle.delete_unless_committed(request, store, others)
    lifecycle.delete_after_commit(request, store, progress.obsolete)
    # Remembered before the caller removes its state, not once the transaction has committed:
    # a HEAD, or the last PATCH sent again by a client that lost its answer, coming in
    # between would find neither (a 404: tus-js-client starts over). On PostgreSQL the state
    # stays visible until the commit, and a HEAD reads it first; forgotten if it fails.
    seconds = request.registry.attachment_settings.resumable_expires_seconds
    cache = request.registry.cache
    tus_uploads.remember_finished(cache, upload, seconds, store.url(progress.key))
    lifecycle.on_failure(request, tus_uploads.forget_finished, cache, upload["id"])
    lifecycle.after_commit(request, tus_uploads.confirm_finished, cache, upload["id"])


class _Received:
    """The chunks of a ``PATCH``'s body until it ends or is cut (its client went away, a proxy
    cut it, it stalled past the server's read timeout): the bytes received then are kept, as
    tus asks ("The Server SHOULD always attempt to store as much of the received data as
    possible"), and the refusal the body would have been is kept in :attr:`cut`. Clients
    send a whole file in one ``PATCH`` by default (tuspy, tus-js-client, Uppy): cut at 90 %,
    it resumed from 0. Not with ``Upload-Checksum``: the checksum is of the whole chunk."""

    def __init__(self, chunks):
        self._chunks = chunks
        self.cut = None

    def __iter__(self):
        try:
            yield from self._chunks
        except httpexceptions.HTTPException as refusal:  # short_body, body_interrupted.
            self.cut = refusal


def append(request, upload, offset, keep_received=False):
    """Append the request body at ``offset``; record the new state (or complete). With
    ``keep_received``, a body cut short keeps what arrived (:class:`_Received`): the upload
    is recorded at its new offset, and the refusal returned beside it, to be answered without
    undoing that (it is otherwise None).

    An upload of deferred length learns it from ``Upload-Length`` (once); until then its
    bytes are limited by ``max_size_bytes`` alone, as they arrive.

    The collection's policy is the one in force now, not the one the upload was created
    under: an operator who lowered ``max_size_bytes`` or refused an extension since (a
    restart; the upload's state outlives it) would otherwise get, from an upload that a
    client keeps alive, an attachment no upload may make (413, 400: start a new upload)."""
    policy = policy_of(request)
    max_size = policy.max_size_bytes
    declared = request.headers.get("Upload-Length")
    upload = {
        **upload,
        "length": tus.declared_length(declared, upload["length"], offset, max_size),
    }
    if max_size and upload["length"] is not None and upload["length"] > max_size:
        raise tus.too_large(max_size)
    if not upload.get("concat"):  # A partial has no name: its final upload is checked.
        intake.check_name(policy, upload["filename"])
    limit = max_size if upload["length"] is None else upload["length"]
    stream, length = streams.request_body(request)
    if upload["length"] is not None:
        tus.require_chunk_fits(length, offset, limit)
    elif limit and length is not None and offset + length > limit:
        raise tus.too_large(limit)
    checksum, expected = tus.checksum(request.headers.get("Upload-Checksum"))
    also = [checksum] if checksum is not None else []
    store = request.registry.attachment_store
    later = hash_behind.deferrable(store, upload, offset, length)
    if later:  # Counted now, hashed once answered (only the checksum asked for, now).
        meter = Meter(max_size=limit, size=offset, also=also, hashing=False)
    else:
        with store_errors():
            sha256 = hash_behind.caught_up(store, upload)
        meter = Meter(max_size=limit, sha256=sha256, size=offset, also=also)
    chunks = streams.read_chunks(stream, length)
    received = _Received(chunks) if keep_received and checksum is None else None
    body = meter.measured(received if received is not None else chunks)
    with store_errors():
        progress = store.append(upload["store"], offset, body)
    meter.settle()
    # Deleted if the request fails, a refused checksum too, after its transaction (a store
    # failing then leaves them to the collector: the 460 stands).
    lifecycle.delete_unless_committed(request, store, progress.created)
    if checksum is not None and checksum.digest() != expected:
        raise tus.checksum_mismatch()
    lifecycle.delete_after_commit(request, store, progress.obsolete)
    if later:
        hashed, sha256 = hash_behind.checkpoint(upload)
    else:
        hashed, sha256 = meter.size, base64.b64encode(meter.sha256.state()).decode("ascii")
    upload = {**upload, "offset": meter.size, "store": progress.state}
    upload.update(hash_behind.hashed_state(upload, hashed, sha256))
    if later:
        lifecycle.after_commit(request, hash_behind.hash_later, store, upload)
    return record(request, upload), (received.cut if received is not None else None)


def record(request, upload):
    """Record the upload with a new expiration, or complete it if it has all its bytes (a
    partial upload that has them waits for its final upload)."""
    if upload["offset"] == upload["length"] and not upload.get("concat"):
        complete(request, upload)
        return {**upload, "completed": True}
    seconds = request.registry.attachment_settings.resumable_expires_seconds
    upload = {**upload, "expires": msec_time() + seconds * 1000}
    tus_uploads.save(request.registry.storage, upload)
    return upload


def complete(request, upload):
    """The last byte arrived: the file becomes the record's attachment, the upload goes.

    If the transaction fails after ``finish``, the upload stays as it was recorded and the
    client may send its last chunk again. The blob is deleted with the failure only if the
    store lists it in ``created`` (local disk: a new link, made again by the retry). An S3
    object stays, since the retry cannot make it again: the retry's ``finish`` verifies it and
    takes it; while the upload lives its state names the key, which garbage collection leaves
    alone, and ``discard`` (termination, expiry) deletes the object with the upload.

    Once the transaction has committed, the upload is remembered as finished
    (:func:`~kinto_attachment.state.tus_uploads.remember_finished`) for ``HEAD`` to tell it
    is done.
    """
    store = request.registry.attachment_store
    with store_errors():
        progress = store.finish(upload["store"])
        sha256 = hash_behind.caught_up(store, upload).hexdigest()  # Hashed whole already.
    hash_behind.forget(upload["id"])
    finish(request, upload, progress, sha256)
    tus_uploads.remove(request.registry.storage, upload)
