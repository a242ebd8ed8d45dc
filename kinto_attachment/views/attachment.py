"""``{record-url}/attachment``: kinto-attachment's ``POST`` and ``DELETE``, streamed, and
``GET``/``HEAD`` downloads for whoever may read the record.

The order of a ``POST`` is that of the upload pipeline: authorise (route factory), refuse an
oversized ``Content-Length`` and a missing collection before reading, stream the form into an
:class:`~kinto_attachment.intake.Intake`, validate the text fields, commit the blob, then lock
the record, write it and its link, and leave the replaced blob to be deleted after commit.
"""

import json

from kinto.authorization import RouteFactory
from kinto.core import Service
from kinto.core.authorization import DYNAMIC
from kinto.views import object_exists_or_404, raise_404_if_invalid_id

from .. import downloads, errors, intake, lifecycle, links, locks, records
from ..multipart import FIELDS_LIMIT, FormReader, boundary_of, read_form


FILE_FIELD = "attachment"
TEXT_FIELDS = ("data", "permissions")
RECORD_PATH = "/buckets/{bucket_id}/collections/{collection_id}/records/{id}"


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
        self.current_object = records.stored(
            request.registry.storage, self.bucket_id, self.collection_id, self.record_id
        )
        creating = self.current_object is None and request.method == "POST"
        self.permission_object_id = self.collection_uri if creating else self.record_uri
        if request.method in ("GET", "HEAD"):
            self.required_permission = "read"
        else:
            self.required_permission = "create" if creating else "write"


attachment = Service(
    name="attachment",
    description="Attach a file to a record",
    path=RECORD_PATH + "/attachment",
    factory=AttachmentFactory,
)


def require_record_parents(request, context):
    """404 for an invalid id or a missing collection, before reading any of the body."""
    raise_404_if_invalid_id(request, "record", context.record_id)
    object_exists_or_404(
        request,
        resource_name="collection",
        parent_id=f"/buckets/{context.bucket_id}",
        object_id=context.collection_id,
    )


def _refuse_oversized(request, max_size):
    """413 before reading when even the smallest form around the file would be too large."""
    length = request.content_length
    if max_size and length is not None and length > max_size + FIELDS_LIMIT:
        raise errors.refuse("too_large", limit=max_size)


def _invalid(name, description):
    return errors.refuse("invalid_posted_data", name=name, description=description)


def _parse_json_fields(fields):
    parsed = {}
    for name, text in fields.items():
        try:
            parsed[name] = json.loads(text)
        except ValueError as e:
            raise _invalid(name, f"is not valid JSON ({e})") from e
        except RecursionError as e:  # Nested deeper than the interpreter can parse.
            raise _invalid(name, "is nested too deeply.") from e
        if not isinstance(parsed[name], dict):
            raise _invalid(name, "should be a JSON object.")
    return parsed


def _receive(request, context, policy, store):
    """Stream the form in; return the committed Blob and the parsed text fields."""

    def open_file(filename, content_type):
        ids = (context.bucket_id, context.collection_id, context.record_id)
        return intake.for_attachment(store, policy, ids, filename, content_type)

    reader = FormReader(
        boundary_of(request.headers.get("Content-Type")),
        FILE_FIELD,
        TEXT_FIELDS,
        open_file,
    )
    try:
        fields = _parse_json_fields(
            read_form(request.body_file_raw, request.content_length, reader)
        )
        return reader.file.commit(), fields
    except BaseException:
        if reader.file is not None:
            reader.file.abort()
        raise


@attachment.post(permission=DYNAMIC)
def post_attachment(request):
    context = request.context
    settings = request.registry.attachment_settings
    store = request.registry.attachment_store
    policy = settings.policy(context.bucket_id, context.collection_id)

    _refuse_oversized(request, policy.max_size_bytes)
    require_record_parents(request, context)
    blob, fields = _receive(request, context, policy, store)
    metadata = attach(request, context, blob, fields.get("data"), fields.get("permissions"))
    request.response.status = 201
    request.response.headers["Location"] = request.route_url(
        "record-object",
        bucket_id=context.bucket_id,
        collection_id=context.collection_id,
        id=context.record_id,
    )
    return metadata


def attach(request, context, blob, data=None, permissions=None, discard_on_failure=True):
    """Make a committed blob the record's attachment (the last step of every upload).

    In the request's transaction, with the record locked: the record is written (created if
    needed), and the link of the blob replaces those of the previous one, whose blob is
    deleted after commit. If the transaction does not commit, the new blob is deleted instead
    (unless ``discard_on_failure`` is false: a resumable upload keeps it to finish again).
    """
    store = request.registry.attachment_store
    if discard_on_failure:
        lifecycle.delete_unless_committed(request, store, [blob.key])
    existing = lock_record(request, context)
    storage = request.registry.storage
    ids = (context.bucket_id, context.collection_id, context.record_id)
    replaced = links.of_record(storage, *ids)
    metadata = blob.attachment(store.url(blob.key))
    records.write(
        request,
        context.record_uri,
        {**(data or {}), FILE_FIELD: metadata},
        permissions=permissions,
        create=existing is None,
    )
    links.forget(storage, replaced)
    links.add(storage, *ids, blob.key)
    lifecycle.discard(request, replaced)
    return metadata


def lock_record(request, context):
    """Lock the record until the transaction ends, then read it again: the record as it is
    now (or None), or the answer for a request that raced with another one.

    Permissions were checked on what the record was before the lock: a record deleted since
    is a 404, a record created since (the check was ``create`` on the collection, not
    ``write`` on it) a 412, as for a ``PUT`` with ``If-None-Match: *``.
    """
    locks.hold(
        request.registry,
        locks.record_path(context.bucket_id, context.collection_id, context.record_id),
    )
    require_record_parents(request, context)
    ids = (context.bucket_id, context.collection_id, context.record_id)
    record = records.stored(request.registry.storage, *ids)
    if record is None and context.current_object is not None:
        raise errors.refuse("missing", resource_name="record", id=context.record_id)
    if record is not None and context.current_object is None:
        raise errors.refuse("modified_meanwhile")
    context.current_object = record
    return record


def _existing_record(request):
    """The record of the URL, or Kinto's 404 for it or for its collection."""
    context = request.context
    require_record_parents(request, context)
    if context.current_object is None:
        raise errors.refuse("missing", resource_name="record", id=context.record_id)
    return context.current_object


@attachment.delete(permission=DYNAMIC)
def delete_attachment(request):
    context = request.context
    _existing_record(request)
    record = lock_record(request, context)
    storage = request.registry.storage
    ids = (context.bucket_id, context.collection_id, context.record_id)
    if record.get(FILE_FIELD) is not None:
        records.write(request, context.record_uri, {FILE_FIELD: None})
    lifecycle.discard(request, links.pop(storage, *ids))

    request.response.status = 204
    request.response.content_type = None
    return request.response


@attachment.get(permission=DYNAMIC)
def get_attachment(request):
    """Stream the attachment to whoever may read the record (or redirect to S3)."""
    context = request.context
    record = _existing_record(request)
    metadata = record.get(FILE_FIELD)
    if not metadata:
        raise errors.refuse("missing", resource_name=FILE_FIELD, id=context.record_id)
    store = request.registry.attachment_store
    download = downloads.Download(
        key=_key_of(request, context, store, metadata["location"]),
        size=metadata["size"],
        mimetype=metadata["mimetype"],
        filename=metadata["filename"],
        hash=metadata["hash"],
        last_modified=record.get("last_modified"),
    )
    s3 = request.registry.attachment_settings.s3
    redirect = None
    if s3 is not None and s3.presigned_downloads:
        redirect = store.presigned_url(
            download.key, s3.presigned_expires, download.filename, download.mimetype
        )
    return downloads.respond(request, store, download, redirect)


def _key_of(request, context, store, location):
    """The blob key of the record's attachment: the linked key whose URL is ``location``."""
    ids = (context.bucket_id, context.collection_id, context.record_id)
    keys = [link["key"] for link in links.of_record(request.registry.storage, *ids)]
    return next((key for key in keys if store.url(key) == location), keys[-1] if keys else "")
