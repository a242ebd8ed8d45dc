"""tus's concatenation extension: partial uploads, written as any other but never the
attachment by themselves, and the final upload that names them.

A *partial* upload (``Upload-Concat: partial``) is created and written as any other (same
permissions, quota and expiration); once it has all its bytes it waits, as it is, for a *final*
upload to name it. The final upload (``Upload-Concat: final;URL URL...``) is created whole from
the user's finished partial uploads of the same record: the store concatenates them
(:class:`~kinto_attachment.storage.IConcatenatingStore`), the sha256 goes on from the first
one's hash state, and the file becomes the attachment through the same step as any upload. The
partial uploads are removed in that transaction and their bytes deleted once it has committed:
until then they are as they were, so a failed or killed final creation can be sent again, and
what it left behind is named by no state (the garbage collector's).
"""

from ..protocols import tus, tus_concat
from ..routes import TUS_UPLOAD, TUS_UPLOADS, path_of, url_of
from ..state import instance, records, tus_uploads
from ..storage import IConcatenatingStore
from ..storage.keys import join_key
from ..uploads import hash_behind, intake, lifecycle
from ..uploads.meter import Meter
from ..uploads.record import refuse_missing_parents, require_storable_ids
from .tus_steps import finish, is_mine, policy_of, store_errors


def requested(request):
    """``Upload-Concat`` of a creation (:class:`~kinto_attachment.protocols.tus_concat.Concat`), or
    None; 400 if the store cannot concatenate."""
    concat = tus_concat.concat(request.headers.get("Upload-Concat"))
    if concat is not None and not IConcatenatingStore.providedBy(
        request.registry.attachment_store
    ):
        raise tus.error("concat_unsupported")
    return concat


def partial_plan(policy, tag, ids, filename):
    """Where a partial upload's bytes go while it waits for its final upload: a random name
    in the collection's folder, never an attachment's (the final upload's plan decides
    that); stores that need one (S3 completes each partial upload into an object) use it.
    Its name, if any, is kept with it: 400 unless Kinto's storage can hold it."""
    intake.check_storable(filename)
    key = join_key(policy.folder_for(*ids), f"{instance.tagged_name(tag)}.partial")
    return intake.Plan(
        key=key, filename=filename, mimetype="application/octet-stream", random=True
    )


def create_final(request, concat, client):
    """The final upload of concatenation: the partial uploads it names, in order, become one
    file, which becomes the record's attachment; the partial uploads go with this
    transaction, their bytes once it has committed."""
    headers = request.headers
    tus_concat.require_creation_of_final(
        headers.get("Upload-Length"), headers.get("Upload-Defer-Length"), request.content_type
    )
    context = request.context
    policy = policy_of(request)
    metadata = tus.metadata(headers.get("Upload-Metadata"))
    fields = intake.record_fields(metadata, tus.invalid_metadata)
    require_storable_ids(context)
    refuse_missing_parents(request, context)
    # Before anything is copied: data or permissions no write could take (as at a creation).
    records.check(request, context, fields.get("data"), fields.get("permissions"))
    uploads_paths = [path_of(request, TUS_UPLOADS.name, **request.matchdict)]
    if (parent := getattr(request, "parent", None)) is not None:  # The default bucket's.
        uploads_paths.append(parent.path)
    upload_ids = tus_concat.upload_ids(concat.urls, *uploads_paths)
    named = {}  # Each upload read (and held) once, however often it is named.
    for upload_id, url in zip(upload_ids, concat.urls, strict=True):
        if upload_id not in named:
            named[upload_id] = _partial(request, upload_id, url)
    partials = [named[upload_id] for upload_id in upload_ids]
    length = sum(partial["length"] for partial in partials)
    if policy.max_size_bytes and length > policy.max_size_bytes:
        raise tus.too_large(policy.max_size_bytes)
    ids = (context.bucket_id, context.collection_id, context.record_id)
    tag = instance.tag(request.registry)
    plan = intake.plan_attachment(policy, tag, ids, metadata["filename"], metadata.get("filetype"))

    store = request.registry.attachment_store
    # The store reads the parts after the first to copy them (or back, once composed): the
    # meter hashes each block on a hashing thread meanwhile, from the first part's hash.
    parts = [(partial["store"], partial["length"]) for partial in partials]
    with store_errors():
        meter = Meter(sha256=hash_behind.caught_up(store, partials[0]))
        holding = lifecycle.name_holder(request.registry)
        progress = store.concatenate(
            parts, plan.key, plan.mimetype, meter, plan.random, holding=holding
        )
    upload = tus_uploads.new(
        ids,
        request.prefixed_userid,
        length,
        plan,
        fields,
        headers.get("Upload-Metadata"),
        None,
        client=client,
        concat=concat.header,
    )
    # Made whole: never saved, so no state to remove.
    finish(request, {**upload, "offset": length}, progress, meter.sha256.hexdigest())
    for partial in named.values():
        tus_uploads.remove(request.registry.storage, partial)
    location = url_of(request, TUS_UPLOAD.name, upload_id=upload["id"], **request.matchdict)
    return tus.response(201, Location=location, **tus.progress(length))


def _partial(request, upload_id, url):
    """The user's finished partial upload ``upload_id`` of this record (named ``url`` in
    ``Upload-Concat``), held for the request (``423`` while another one holds it)."""
    try:
        tus_uploads.lock(request.registry, upload_id)
    except tus_uploads.Locked:
        raise tus.locked() from None
    upload = tus_uploads.get(request.registry.storage, upload_id)
    if upload is None:
        # A finished upload (single or final) is no partial one, as its HEAD says.
        done = tus_uploads.finished(request.registry.storage, request.registry.cache, upload_id)
        if done is not None and is_mine(request, done):
            raise tus_concat.concat_refusal("not_partial", url)
    if upload is None or not is_mine(request, upload):
        raise tus_concat.concat_refusal("unknown", url)
    if upload.get("concat") != "partial":
        raise tus_concat.concat_refusal("not_partial", url)
    if upload["length"] is None or upload["offset"] != upload["length"]:
        raise tus_concat.concat_refusal("unfinished", url)
    return upload
