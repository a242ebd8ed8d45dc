"""State of resumable (tus) uploads, kept in Kinto's storage backend.

The offset, the metadata, the hash state and the store's own state (a staged file, or an S3
multipart upload) are recorded after every request, in its transaction: any process of the
cluster can go on with the upload, after a restart too, and what is recorded is the truth.

Requests on one upload are serialised by a lock object created in the request's transaction
and deleted before it ends. On PostgreSQL a second request creating it waits until the first
transaction ends, then finds the new offset; on the memory backend it is refused at once.
"""

import contextlib
import secrets

from kinto.core.storage.exceptions import BackendError, ObjectNotFoundError, UnicityError


RESOURCE = "attachment-upload"
LOCK = "attachment-upload-lock"
PARENT_ID = "attachment-uploads"


class Locked(Exception):
    """Another request is working on this upload."""


def new_id():
    return secrets.token_hex(16)


def get(storage, upload_id):
    try:
        return storage.get(resource_name=RESOURCE, parent_id=PARENT_ID, object_id=upload_id)
    except ObjectNotFoundError:
        return None


def save(storage, upload):
    storage.update(resource_name=RESOURCE, parent_id=PARENT_ID, object_id=upload["id"], obj=upload)


def remove(storage, upload_id):
    with contextlib.suppress(ObjectNotFoundError):
        storage.delete(
            resource_name=RESOURCE, parent_id=PARENT_ID, object_id=upload_id, with_deleted=False
        )


def entries(storage):
    return storage.list_all(resource_name=RESOURCE, parent_id=PARENT_ID)


@contextlib.contextmanager
def locked(storage, upload_id):
    """Hold the upload's lock; raise :class:`Locked` if another request holds it."""
    try:
        storage.create(resource_name=LOCK, parent_id=PARENT_ID, obj={"id": upload_id})
    except UnicityError as e:
        raise Locked(upload_id) from e
    try:
        yield
    finally:
        # A failed transaction takes the lock away with it; the memory backend needs this.
        with contextlib.suppress(ObjectNotFoundError, BackendError):
            storage.delete(
                resource_name=LOCK, parent_id=PARENT_ID, object_id=upload_id, with_deleted=False
            )
