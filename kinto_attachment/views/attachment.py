"""``{record-url}/attachment``: kinto-attachment's ``POST`` and ``DELETE``, streamed, and
``GET``/``HEAD`` downloads for whoever may read the record.

The order of a ``POST`` is that of the upload pipeline: authorise (route factory), refuse an
oversized ``Content-Length`` and a missing collection before reading, stream the form into an
:class:`~kinto_attachment.uploads.intake.Intake`, validate the text fields, commit the blob, then
lock the record, write it and its link, and leave the replaced blob to be deleted after commit
(:mod:`~kinto_attachment.uploads.record`, the step tus uploads end with too).
"""

import contextlib
import re
from urllib.parse import unquote

from kinto.core import Service
from kinto.core.authorization import DYNAMIC
from pyramid.authorization import Everyone
from pyramid.interfaces import IAuthorizationPolicy

from .. import downloads, errors
from ..downloads import caching
from ..events import recording
from ..protocols.multipart import FIELDS_LIMIT, FormReader, boundary_of, read_form
from ..routes import ATTACHMENT, DEFAULT_BUCKET_ROUTE, url_of
from ..state import instance, links, long_transactions, records
from ..uploads import intake, lifecycle
from ..uploads.record import (
    FILE_FIELD,
    attach,
    lock_record,
    record_ids,
    refuse_missing_parents,
    require_record_parents,
    require_storable_ids,
)
from ..web import streams
from .factory import AttachmentFactory


#: Room for the framing of a form (delimiter lines, CRLFs), which neither ``max_size_bytes``
#: nor ``FIELDS_LIMIT`` counts: some 300 bytes a part, for the few parts a form has.
FRAMING_ROOM = 64 * 1024


def _refuse_oversized(request, max_size):
    """413 before reading when even the smallest form around the file would be too large: a
    form within both limits is read, whether its length is declared or not."""
    length = streams.declared_length(request)
    if max_size and length is not None and length > max_size + FIELDS_LIMIT + FRAMING_ROOM:
        raise errors.refuse("too_large", limit=max_size)


def _invalid(name, description):
    """kinto-attachment's words for an invalid ``data`` or ``permissions`` field."""
    return errors.refuse("invalid_posted_data", name=name, description=f"{name} {description}")


def _receive(request, context, policy, store):
    """Stream the form in; return the committed Blob and the record's data and permissions.

    The file part opens its :class:`~kinto_attachment.uploads.intake.Intake` when its headers
    arrive, in this ``with`` block: it commits once the whole form has been read and checked, or
    aborts on the first refusal, whichever part it comes from.
    """
    ids = (context.bucket_id, context.collection_id, context.record_id)
    tag = instance.tag(request.registry)
    with contextlib.ExitStack() as receiving:

        def open_file(filename, content_type):
            # A part without Content-Type is text/plain (RFC 7578 §4.4), as kinto-attachment
            # records it, when its name tells nothing either (kinto-http.py sends none for
            # a name Python cannot type: LICENSE, x.ftl).
            untyped = "text/plain" if content_type is None else "application/octet-stream"
            plan = intake.plan_attachment(
                policy, tag, ids, filename, content_type, untyped=untyped
            )
            return receiving.enter_context(
                intake.Intake(store, plan, intake.settling_transaction(request))
            )

        reader = FormReader(
            boundary_of(request.headers.get("Content-Type")),
            FILE_FIELD,
            intake.RECORD_FIELDS,
            open_file,
            max_skipped=policy.max_size_bytes,
        )
        texts = read_form(*streams.request_body(request), reader)
        fields = intake.record_fields(texts, _invalid)
    return reader.file.blob, fields


def post_attachment(request):
    context = request.context
    settings = request.registry.attachment_settings
    store = request.registry.attachment_store
    policy = settings.policy(context.bucket_id, context.collection_id)

    _refuse_oversized(request, policy.max_size_bytes)
    require_storable_ids(context)
    refuse_missing_parents(request, context)
    long_transactions.end_before_body(request)
    blob, fields = _receive(request, context, policy, store)
    written = attach(request, context, blob, fields.get("data"), fields.get("permissions"))
    # As kinto-attachment: 201 when the record was created, 200 when it existed (``attach``
    # left what it found under the lock in the context).
    request.response.status = 201 if context.current_object is None else 200
    _versioned(request.response, written)
    request.response.headers["Location"] = url_of(
        request,
        "record-object",
        bucket_id=context.bucket_id,
        collection_id=context.collection_id,
        id=context.record_id,
    )
    return written[FILE_FIELD]


def _versioned(response, record):
    """The record's new version in the answer, as Kinto's own writes give it (``ETag``,
    ``Last-Modified``), and kinto-attachment's answers did: a client learns it without
    reading the record again."""
    response.headers["ETag"] = f'"{record["last_modified"]}"'
    response.last_modified = record["last_modified"] / 1000.0


def _existing_record(request):
    """The collection and the record of the URL, or Kinto's 404 for either."""
    context = request.context
    collection = require_record_parents(request, context)
    if context.current_object is None:
        raise errors.refuse("missing", resource_name="record", id=context.record_id)
    return collection, context.current_object


def delete_attachment(request):
    context = request.context
    _existing_record(request)
    record = lock_record(request, context)
    storage = request.registry.storage
    ids = (context.bucket_id, context.collection_id, context.record_id)
    # Written whatever the record held, as kinto-attachment did: the record says it has no
    # attachment, and the client's preconditions (If-Match) are Kinto's to check.
    _versioned(request.response, records.write(request, context, {FILE_FIELD: None}))
    # Not for what an old client wrote there that is no attachment (a string: no file).
    if (attachment := records.attachment_of(record)) is not None:
        recording.deleted(request.registry, record_ids(context), attachment, request=request)
    lifecycle.discard(request, links.pop(storage, *ids))

    request.response.status = 204
    request.response.content_type = None
    request.response.content_length = None  # A 204 has none (RFC 9110 §8.6).
    return request.response


def get_attachment(request):
    """Stream the attachment to whoever may read the record (or redirect to a signed URL),
    cached as Kinto caches the record: for the collection's record lifetime when everyone may read
    it, by the caller's own cache only otherwise (see :mod:`kinto_attachment.downloads.caching`).

    A blob replaced (and deleted) between the reading of the record and its opening is no
    ``404``: :func:`~kinto_attachment.downloads.serve` reads the record again, with the
    permissions it has then, and serves its new version.
    """
    context = request.context
    store = request.registry.attachment_store
    expires = request.registry.attachment_settings.redirect_expires

    def current(again):
        if again:
            _read_again(request, context)
        return _download(request, context, store, expires)

    def presigned(download):
        return store.presigned_url(download.key, expires, download.filename, download.mimetype)

    redirect = presigned if expires is not None else None
    return downloads.serve(request, store, current, redirect=redirect)


def _read_again(request, context):
    """Read the record again, and check again that the caller may read it (a replacement may
    have changed its permissions)."""
    context.current_object = records.stored(
        request.registry.storage, context.bucket_id, context.collection_id, context.record_id
    )
    if context.current_object is not None and not request.has_permission(DYNAMIC, context):
        raise errors.refuse("forbidden")


def _download(request, context, store, expires):
    """The :class:`~kinto_attachment.downloads.Download` of the record's attachment, or the
    ``404`` of a missing record, or of a record without attachment."""
    collection, record = _existing_record(request)
    metadata = records.attachment_of(record)
    if not metadata:
        raise errors.refuse("missing", resource_name=FILE_FIELD, id=context.record_id)
    lifetime = request.registry.attachment_settings.caching.record_lifetime(
        context.bucket_id, context.collection_id, collection
    )
    public = _readable_by_everyone(request, context)
    cache_control, vary = caching.record_file(public, lifetime, expires)
    key, since, previous = _key_of(request, context, store, metadata)
    if key is None:  # Its link replaced meanwhile: the record is read again.
        location, filename = _text(metadata, "location"), _text(metadata, "filename")
        raise downloads.Missing(downloads.Download(location, 0, "", filename or ""))
    size = metadata.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        # A copy made by hand, or by an old client: the stored file says.
        stat = downloads.stat_of(store, key)
        if stat is None:
            raise errors.refuse("missing", resource_name=FILE_FIELD, id=context.record_id)
        size = stat.size
    filename, digest = _text(metadata, "filename"), _text(metadata, "hash")
    return downloads.Download(
        key=key,
        size=size,
        mimetype=_text(metadata, "mimetype") or "",  # Served as its valid type, or none.
        filename=filename or key.rsplit("/", 1)[-1],
        hash=digest if digest and _SHA256.fullmatch(digest) else None,
        last_modified=record.get("last_modified"),
        unchanged_since=since,
        previous_modified=previous,
        cache_control=cache_control,
        vary=vary,
    )


#: A sha256 as records hold it (it goes into ``ETag``).
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _text(metadata, name):
    """A text field of the attachment's metadata, None when it is missing or no text."""
    value = metadata.get(name)
    return value if isinstance(value, str) else None


def _readable_by_everyone(request, context):
    """Whether the record may be read without credentials, as Kinto decides it (the record's,
    collection's and bucket's permissions, and ``record_read_principals``): then the file is
    as public as the record, whoever asks. Never through the ``default`` bucket, whose URLs
    name each user's own bucket: a shared cache would give one user's file to the next."""
    if _through_default_bucket(request):
        return False
    if request.prefixed_userid is None:  # Authorised without credentials.
        return True
    policy = request.registry.getUtility(IAuthorizationPolicy)
    bound = policy.get_bound_permissions(context.record_uri, "read")
    return context.check_permission([Everyone], bound)


def _key_of(request, context, store, metadata):
    """``(key, since, previous)``: the blob key of the record's attachment, since when the
    record has had it and the last version before with another (each None when unknown): the
    linked key that its ``location`` names (its URL under our ``base_url``, else a URL under
    another, older, ``base_url`` whose last segments are the key, or the bare key:
    kinto-attachment's links too), else the key that ``location`` names under our
    ``base_url`` (a record no link names yet); a 404 when neither exists.

    The links are read after the record: a replacement committed in between leaves a link
    of another file, which is never taken for this one (its bytes would be served under the
    record's size and ``ETag``): its key is not the location's, or its sha256 is not the
    record's. Without another link the key is None, and the download is read again
    (:class:`~kinto_attachment.downloads.Missing`)."""
    ids = (context.bucket_id, context.collection_id, context.record_id)
    location = _text(metadata, "location") or ""
    digest = _text(metadata, "hash")
    every = links.of_record(request.registry.storage, *ids, location=location, url=store.url)
    found = [link for link in every if links.names_file_of(link, digest)]
    ours = store.key_for_url(location)
    named = [link for link in found if link["key"] == ours or store.url(link["key"]) == location]
    named = named or [link for link in found if _ends(location, link["key"])]
    if named:
        link = named[0]
        return link["key"], link.get("since"), link.get("previous")
    if ours is None and not every:
        raise errors.refuse("missing", resource_name=FILE_FIELD, id=_text(metadata, "filename"))
    return ours, None, None


def _ends(location, key):
    """Whether ``location`` is a URL under another ``base_url`` than ours (one below it too)
    whose last segments are ``key`` (as written or quoted), or the bare key: a suffix, so
    that only a link made for the record's sha256 (or before links kept it) is taken so."""
    return any(name == key or name.endswith("/" + key) for name in {location, unquote(location)})


def includeme(config):
    """The Cornice service, created here rather than at import: Kinto sets the CORS origins
    every service copies (``cors_origins``) when it builds the app, which a process may do
    after importing this package (a WSGI entry file, tests), as kinto-attachment does.

    Pages of other origins may read a download's headers and an upload's ``Location``
    (``cors_headers``: exposed with those of every Kinto service)."""
    service = Service(
        name=ATTACHMENT.name,
        description="Attach a file to a record",
        path=ATTACHMENT.pattern,
        factory=AttachmentFactory,
        cors_headers=ATTACHMENT.exposed_headers,
    )
    service.add_view("POST", post_attachment, permission=DYNAMIC)
    service.add_view("DELETE", delete_attachment, permission=DYNAMIC)
    service.add_view("GET", get_attachment, permission=DYNAMIC)
    config.add_cornice_service(service)


def _through_default_bucket(request):
    """Whether the request came as ``/buckets/default/...`` (Kinto's plugin passes it on as a
    subrequest to the user's bucket)."""
    parent = getattr(request, "parent", None)
    route = getattr(parent, "matched_route", None)
    return route is not None and route.name == DEFAULT_BUCKET_ROUTE
