"""The Kinto route factory of ``{record-url}/attachment`` and of its tus uploads: who may
attach to, or download from, a record."""

import time

from kinto.authorization import RouteFactory

from .. import errors
from ..state import links, records, storable


class AttachmentFactory(RouteFactory):
    """Authorisation context of ``{record-url}/attachment``.

    Attaching to an existing record needs ``write`` on it; attaching to a record that does not
    exist yet creates it, which needs ``create`` (``record:create``) on the collection, exactly as
    a ``PUT`` of the record would. Downloading needs ``read`` on the record, as reading it does.
    """

    resource_name = "record"

    def __init__(self, request):
        super().__init__(request)
        match = request.matchdict
        self.bucket_id = match["bucket_id"]
        self.collection_id = match["collection_id"]
        self.record_id = match["id"]
        self.collection_uri = f"/buckets/{self.bucket_id}/collections/{self.collection_id}"
        self.record_uri = links.record_uri(self.bucket_id, self.collection_id, self.record_id)
        _require_storable_ids(self)
        self.current_object = records.stored(
            request.registry.storage, self.bucket_id, self.collection_id, self.record_id
        )
        #: When the permission was checked (just after): an upload that writes much later is
        #: checked again (:func:`~kinto_attachment.uploads.record.lock_record`).
        self.checked_at = time.monotonic()
        creating = self.current_object is None and request.method == "POST"
        self.permission_object_id = self.collection_uri if creating else self.record_uri
        if request.method in ("GET", "HEAD"):
            self.required_permission = "read"
        else:
            self.required_permission = "create" if creating else "write"
            if request.method != "OPTIONS":  # tus discovery, a preflight: no write.
                records.require_readable_preconditions(request)


def _require_storable_ids(context):
    """404 for ids that no object can have and that PostgreSQL cannot even look up (a NUL:
    storage and permission backends fail), before anything does, as Kinto's own route
    factory refuses an invalid record id."""
    for resource_name in ("bucket", "collection", "record"):
        object_id = getattr(context, f"{resource_name}_id")
        if not storable.is_storable(object_id):
            raise errors.refuse("missing", resource_name=resource_name, id=object_id)
