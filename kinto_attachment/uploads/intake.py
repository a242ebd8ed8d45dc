"""The upload pipeline shared by every entry point: a byte stream in, a stored blob out.

Every upload (a multipart form, a raw ``/data/files`` body, a tus upload) goes through the
same two steps:

1. **Plan**: :func:`plan_attachment` (or a route's own rules, for ``/data/files``) checks the
   name against the collection's policy and decides the blob's key and media type, before any
   byte is read: a :class:`Plan`.
2. **Receive**: ``with Intake(store, plan) as received:`` stages the blob and sees each byte
   once (a :class:`~.meter.Meter` counts it, hashes it, refuses it past the size limit) on its
   way to the store's staged writer. Leaving the block commits the blob (``received.blob``);
   any exception aborts it, which leaves nothing behind.

A blob for a record then becomes its attachment through :mod:`~kinto_attachment.uploads.record`.

A tus upload spreads the second step over requests: its :class:`~.meter.Meter` carries a
resumable hash state and the store appends to an upload instead of a staged writer
(:mod:`kinto_attachment.views.resumable`). Nothing here holds more than the chunk it is given
and the one before, while a hashing thread hashes it.
"""

import dataclasses
import mimetypes
import posixpath
from datetime import UTC, datetime

from .. import errors
from ..state import instance, shared, storable
from ..storage import ISettlingStaged
from ..storage.keys import join_key, safe_name
from ..web.media_types import parse_media_type
from .meter import Meter


GENERIC_TYPES = ("", "application/octet-stream")
#: The text fields an upload may carry with its file (form fields, tus metadata): the
#: record's data and permissions, JSON objects.
RECORD_FIELDS = ("data", "permissions")


@dataclasses.dataclass(frozen=True)
class Blob:
    """A committed file and the metadata written onto its record."""

    key: str
    filename: str
    hash: str
    size: int
    mimetype: str

    def attachment(self, location):
        """The record's ``attachment`` field, as kinto-attachment writes it."""
        return {
            "filename": self.filename,
            "hash": self.hash,
            "location": location,
            "mimetype": self.mimetype,
            "size": self.size,
        }


def extension_of(filename):
    return posixpath.splitext(filename)[1].lower()


def resolve_mimetype(policy, filename, declared, untyped="application/octet-stream"):
    """Configured type for the extension, else the client's, else a guess from the name,
    else ``untyped``.

    A declared type that is not a valid media type is ignored, as if none had been sent
    (guessed from the name: friendlier than a 400 for clients that send junk); it is never
    stored as sent.
    """
    extension = extension_of(filename)
    if extension in policy.mimetypes:
        return policy.mimetypes[extension]
    declared = parse_media_type(declared) or ""
    if declared not in GENERIC_TYPES:
        return declared
    # From the extension alone: guess_type() reads a whole name as a URL, and would take
    # ``data:text/html,x.txt`` for a data URL of that type.
    return mimetypes.guess_type(f"file{extension}", strict=False)[0] or untyped


def blob_key(policy, tag, bucket_id, collection_id, record_id, filename):
    """Where a new file goes: ``folder/`` + a random name carrying ``tag`` (the instance's:
    :mod:`kinto_attachment.state.instance`) or ``filename_pattern``.

    400 unless the stored name's extension is allowed too: it is the one a web server or a
    bucket types the file by, and it may differ from the client's (sanitised, shortened).
    """
    if policy.randomize:
        name = instance.tagged_name(tag) + extension_of(safe_name(filename))
    else:
        name = policy.filename_pattern.format(
            datetime=datetime.now(UTC).strftime("%Y%m%d%H%M%S%f"),
            rid=record_id,
            filename=safe_name(filename),
        )
    name = safe_name(name)
    _check_extension(policy, name)
    return join_key(policy.folder_for(bucket_id, collection_id, record_id), name)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where and how a file will be stored, decided before its first byte is read."""

    key: str
    filename: str
    mimetype: str
    #: Bytes at most (0: no limit).
    max_size: int = 0
    #: The key's name is random: a store need not look for a free name.
    random: bool = False


def plan_attachment(
    policy, tag, ids, filename, declared_type=None, untyped="application/octet-stream"
):
    """The :class:`Plan` of a record's attachment, once its name passes the collection's
    policy (``ids``: bucket, collection and record ids); a 400 otherwise. ``untyped``: the
    type of a file neither declared nor guessed (:func:`resolve_mimetype`)."""
    check_name(policy, filename)
    return Plan(
        key=blob_key(policy, tag, *ids, filename),
        filename=filename,
        mimetype=resolve_mimetype(policy, filename, declared_type, untyped),
        max_size=policy.max_size_bytes,
        random=policy.randomize,
    )


class Intake:
    """One file's bytes on their way into the store, as a context manager.

    ``write()`` what arrives; leaving the ``with`` block commits the blob (then
    ``self.blob``), leaving it on an exception aborts the staged write (the exception goes
    on). A store failure is a 503 (:func:`~kinto_attachment.errors.store_errors`).
    """

    def __init__(self, store, plan, txn=None):
        self.plan = plan
        self.meter = Meter(plan.max_size)
        self.blob = None
        self._txn = txn
        with errors.store_errors():
            self._staged = store.stage(plan.key, plan.mimetype, random=plan.random)

    def __enter__(self):
        return self

    def write(self, chunk):
        self.meter.feed(chunk)
        with errors.store_errors():
            self._staged.write(chunk)

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            try:
                with errors.store_errors():
                    key = self._commit()
            except BaseException:
                self._staged.abort()
                raise
            plan, meter = self.plan, self.meter
            self.blob = Blob(
                key, plan.filename, meter.sha256.hexdigest(), meter.size, plan.mimetype
            )
        else:
            self._staged.abort()
        return False

    def _commit(self):
        """Commit the staged blob; with the request's transaction (``txn``) and a store that
        can, without waiting for the disk: the transaction's commit waits for it instead, and
        fails (nothing is written) if the blob cannot be made durable."""
        if self._txn is None or not ISettlingStaged.providedBy(self._staged):
            return self._staged.commit()
        key, settle = self._staged.commit_unsettled()
        self._txn.addBeforeCommitHook(_settle, args=(settle,))
        return key


def settling_transaction(request):
    """The transaction an :class:`Intake` of ``request`` may leave the durability of its blob
    to: the request's, when Kinto's storage rolls back (PostgreSQL), so that a blob that cannot
    be made durable undoes the record's write; None on the memory backend, which cannot roll
    back: the blob is durable before the record is written."""
    return request.tm.get() if shared.rolls_back(request.registry.storage) else None


def _settle(settle):
    with errors.store_errors():
        settle()


def record_fields(texts, refuse):
    """The record's ``data`` and ``permissions`` among ``texts`` (``{name: text}``), parsed:
    each must be a JSON object that Kinto's storage can hold (:mod:`~.storable`).
    ``refuse(name, description)`` builds the refusal of a field that is not (every entry point
    words it in its own terms)."""
    parsed = {}
    for name in RECORD_FIELDS:
        if name not in texts:
            continue
        try:
            parsed[name] = storable.json_object(texts[name])
        except storable.Unstorable as e:
            raise refuse(name, f"{e}.") from e
        except ValueError as e:
            raise refuse(name, f"is not valid JSON ({e})") from e
        except RecursionError as e:  # Nested deeper than the interpreter can parse.
            raise refuse(name, "is nested too deeply.") from e
        if not isinstance(parsed[name], dict):
            raise refuse(name, "should be a JSON object.")
    modified = parsed.get("data", {}).get("last_modified")
    if modified is not None and not storable.is_timestamp(modified):
        raise refuse("data", "last_modified should be a timestamp in milliseconds.")
    return parsed


def check_storable(filename):
    """400 unless Kinto's storage can hold ``filename`` (PostgreSQL cannot hold a NUL)."""
    try:
        storable.check_text(filename)
    except storable.Unstorable as e:
        raise errors.refuse("invalid_body", description=f"Filename {e}.") from e


def check_name(policy, filename):
    """400 unless an attachment may have this name under the collection's policy, and
    Kinto's storage can hold it (a NUL: 0x00)."""
    if not filename:
        raise errors.refuse("invalid_body", description="Filename is required.")
    check_storable(filename)
    _check_extension(policy, filename)
    _check_extension(policy, safe_name(filename))


def _check_extension(policy, name):
    if not policy.allows_extension(extension_of(name).lstrip(".")):
        raise errors.refuse("invalid_body", description="File extension is not allowed.")
