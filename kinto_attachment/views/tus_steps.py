"""What the views of resumable uploads share, plain and concatenated
(:mod:`.resumable`, :mod:`.concatenation`): the policy of the URL's collection, store failures
as tus answers, whose an upload is, and the end of every upload, whose file becomes the
record's attachment."""

import contextlib
import logging

from kinto.core.utils import msec_time

from .. import errors
from ..protocols import tus
from ..state import tus_uploads
from ..uploads import intake, lifecycle
from ..uploads.record import attach


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
    tus_uploads.remember_finished(cache, upload, seconds)
    lifecycle.on_failure(request, tus_uploads.forget_finished, cache, upload["id"])
