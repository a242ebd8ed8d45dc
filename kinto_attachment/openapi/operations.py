"""What each method of each route of ours is, in OpenAPI 2.0 terms: its parameters, bodies,
replies and refusals (by their :data:`~kinto_attachment.errors.REFUSALS` names), by route name
(:data:`OPERATIONS`), and the tag that groups it (:data:`TAG`). Data only: the package turns
it into the description's ``paths``."""

import dataclasses
from collections.abc import Mapping

from .. import routes
from ..protocols import tus


JSON = "application/json"
ERROR = {"$ref": "#/definitions/Error"}
BINARY = {"type": "string", "format": "binary"}
TAG = {
    routes.ATTACHMENT.name: "Attachment",
    routes.TUS_UPLOADS.name: "Attachment",
    routes.TUS_UPLOAD.name: "Attachment",
    routes.DATA_FILES.name: "Data files",
    routes.DATA_FILE.name: "Data files",
    routes.SERVED_FILES.name: "Files",
    routes.ATTACHMENT_FETCH.name: "Files",
}


@dataclasses.dataclass(frozen=True)
class Reply:
    """A response of success: its description, body schema and headers."""

    description: str
    schema: dict | None = None
    headers: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Operation:
    """One method of one route. ``refusals``: the names of :data:`~kinto_attachment.errors.
    REFUSALS` it may answer, which make its error responses. ``public``: no authentication
    needed (the views decide who sees what)."""

    summary: str
    replies: Mapping[int, Reply]
    refusals: tuple[str, ...] = ()
    parameters: tuple[dict, ...] = ()
    consumes: tuple[str, ...] = ()
    produces: tuple[str, ...] = (JSON,)
    public: bool = False


def header(name, description, required=False, **schema):
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "type": "string",
        **schema,
    }


def query(name, description, **schema):
    return {"name": name, "in": "query", "required": False, "description": description, **schema}


DOWNLOAD_HEADERS = (
    header("Range", "One byte range (``bytes=first-last``)."),
    header("If-Range", "The ``ETag`` or ``Last-Modified`` the range is of."),
    header("If-None-Match", "``ETag`` values: 304 if one matches."),
    header("If-Modified-Since", "An HTTP date: 304 if unmodified since."),
    header("If-Match", "``ETag`` values (``*``: any): 412 unless one is the file's."),
    header("If-Unmodified-Since", "An HTTP date: 412 if modified since."),
)
#: What ``downloads.respond`` answers, and the refusals of every download.
DOWNLOADED = {
    200: Reply("The content.", BINARY, ("ETag", "Last-Modified", "Content-Disposition")),
    206: Reply(
        "The requested range.",
        BINARY,
        ("Content-Range", "ETag", "Last-Modified", "Content-Disposition"),
    ),
    304: Reply("Not modified since the validators of the request."),
}
DOWNLOAD_REFUSALS = (
    "range_not_satisfiable",
    "download_precondition",
    "missing",
    "storage_failed",
    "replaced_meanwhile",
)
REDIRECTED = Reply("To the store's signed URL (``redirect_expires``).", headers=("Location",))

#: The record's ``attachment`` field, as written by an upload.
ATTACHMENT_METADATA = {
    "type": "object",
    "properties": {
        "filename": {"type": "string"},
        "hash": {"type": "string", "description": "sha256 of the content, in hexadecimal."},
        "location": {"type": "string", "description": "URL of the file."},
        "mimetype": {"type": "string"},
        "size": {"type": "integer"},
    },
    "required": ["filename", "hash", "location", "mimetype", "size"],
}
RECORD_FIELDS = ("attachment_edit", "invalid_body", "invalid_posted_data")
#: Refusals of any request on a record's attachment: its ids and its parents.
ON_RECORD = ("ids_too_long", "unauthenticated", "forbidden", "missing", "modified_meanwhile")
#: The preconditions of a write of the record (Kinto's: a quoted version, or ``*``), and their
#: refusal when malformed (a failed one is ``modified_meanwhile``, 412).
RECORD_PRECONDITIONS = (
    header(
        "If-Match",
        'The record\'s version (``"1700000000000"``), or ``*``.',
        pattern=r'^"([0-9]+?)"$|^\*$',
    ),
    header(
        "If-None-Match", "``*``: only if the record does not exist.", pattern=r'^"([0-9]+?)"$|^\*$'
    ),
)
#: Refusals of every request body streamed to the store: its framing.
BODY_REFUSALS = ("short_body", "body_interrupted", "length_required", "transfer_coding")

TUS_VERSION = header("Tus-Resumable", "The tus version of the client.", True, enum=[tus.VERSION])
#: Headers of a tus upload's state.
TUS_PROGRESS = ("Tus-Resumable", "Upload-Offset", "Upload-Expires")
TUS_CHUNK = (
    header("Upload-Checksum", "``sha1|md5|sha256 <base64 digest>`` of the chunk."),
    {"name": "chunk", "in": "body", "required": False, "schema": BINARY},
)
TUS_CHUNK_REFUSALS = (
    *BODY_REFUSALS,
    "not_an_integer",
    "integer_too_long",
    "checksum_algorithm",
    "checksum_base64",
    "chunk_too_large",
    "checksum_mismatch",
    "storage_failed",
    "upload_gone",
    "invalid_parameter",
)
TUS_REFUSALS = ("tus_version", "unauthenticated", "forbidden", "missing", "method_override")
#: What tus discovery answers (``OPTIONS``).
TUS_DISCOVERY = Reply(
    "The server's tus capabilities.",
    headers=(
        "Tus-Resumable",
        "Tus-Version",
        "Tus-Extension",
        "Tus-Checksum-Algorithm",
        "Tus-Max-Size",
    ),
)

#: Who may see ``/data/files`` (a 404 to others, a 403 to other sites' pages).
DATA_FILES_VISIBILITY = ("hidden", "foreign_host", "cross_site")
AT_ROOT = " Served at the server root too (``/data/files...``, outside the API prefix)."
DATA_FILE_ENTRY = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "expiration": {"type": "integer", "x-nullable": True, "description": "Epoch ms."},
        "expireAtUtcTicks": {
            "type": "integer",
            "description": "SlimFaas's: the expiration in .NET ticks, -1 for none.",
        },
        "filename": {"type": "string"},
        "size": {"type": "integer"},
        "mimetype": {"type": "string"},
        "hash": {"type": "string"},
    },
    "required": ["id", "expireAtUtcTicks", "filename", "size", "mimetype", "hash"],
}
PREFLIGHT = Reply(
    "``Allow``; a CORS preflight's answer to allowed origins.",
    headers=("Allow", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers"),
)


def _download(summary, refusals=(), public=False, redirects=False, parameters=()):
    """``GET`` and ``HEAD`` of a download route; ``redirects``: to a store's signed URL, when
    ``redirect_expires`` is set; ``parameters``: besides the conditional and range headers."""
    common = {"refusals": (*refusals, *DOWNLOAD_REFUSALS), "public": public}
    parameters = (*parameters, *DOWNLOAD_HEADERS)
    replies = {**DOWNLOADED, **({307: REDIRECTED} if redirects else {})}
    return {
        "GET": Operation(summary, replies, parameters=parameters, produces=("*/*",), **common),
        "HEAD": Operation(
            summary + " Headers only.",
            {status: dataclasses.replace(reply, schema=None) for status, reply in replies.items()},
            parameters=parameters,
            produces=("*/*",),
            **common,
        ),
    }


def _data_files(summary, replies, refusals=(), **options):
    """An operation of ``/data/files``: public, but only to those who may see it."""
    return Operation(
        summary + AT_ROOT,
        replies,
        refusals=(*DATA_FILES_VISIBILITY, *refusals),
        public=True,
        **options,
    )


DATA_FILES_OPTIONS = _data_files("Allowed methods; CORS preflights.", {204: PREFLIGHT})
#: The preconditions of the writes of ``/data/files`` (412 when one fails).
WRITE_PRECONDITIONS = (
    header("If-Match", "``ETag`` values (``*``: any): only that version is written."),
    header("If-None-Match", "``ETag`` values (``*``: any): only if none is there."),
    header("If-Unmodified-Since", "An HTTP date: only if unmodified since."),
)

#: Each route's operations, by method.
OPERATIONS = {
    routes.ATTACHMENT.name: {
        "POST": Operation(
            "Upload the record's attachment (multipart/form-data), creating the record if "
            "needed; the replaced file is deleted.",
            {
                200: Reply(
                    "The attachment of an existing record.",
                    ATTACHMENT_METADATA,
                    ("Location", "ETag", "Last-Modified"),
                ),
                201: Reply(
                    "The attachment of a new record.",
                    ATTACHMENT_METADATA,
                    ("Location", "ETag", "Last-Modified"),
                ),
            },
            refusals=(
                *ON_RECORD,
                *RECORD_FIELDS,
                *BODY_REFUSALS,
                "attachment_missing",
                "not_multipart",
                "invalid_boundary",
                "too_large",
                "storage_failed",
                "invalid_parameter",
            ),
            parameters=(
                *RECORD_PRECONDITIONS,
                {"name": "attachment", "in": "formData", "type": "file", "required": True},
                {
                    "name": "data",
                    "in": "formData",
                    "type": "string",
                    "description": "JSON object: the record's fields.",
                },
                {
                    "name": "permissions",
                    "in": "formData",
                    "type": "string",
                    "description": "JSON object: the record's permissions.",
                },
            ),
            consumes=("multipart/form-data",),
        ),
        "DELETE": Operation(
            "Remove the record's attachment and its file.",
            {204: Reply("Removed (or there was none).", headers=("ETag", "Last-Modified"))},
            refusals=(*ON_RECORD, "storage_failed", "invalid_parameter"),
            parameters=RECORD_PRECONDITIONS,
        ),
        **_download(
            "Download the record's attachment, for whoever may read the record.",
            refusals=("unauthenticated", "forbidden"),
            redirects=True,
        ),
    },
    routes.TUS_UPLOADS.name: {
        "OPTIONS": Operation(
            "tus discovery: the version, extensions and checksums supported.",
            {204: TUS_DISCOVERY},
            refusals=("missing",),
            parameters=(header("Access-Control-Request-Method", "A CORS preflight."),),
            public=True,
        ),
        "POST": Operation(
            "Create a tus upload of the record's attachment (creation, creation-with-upload, "
            "creation-defer-length), a partial upload, or the final upload made of partial "
            "ones (concatenation), which becomes the attachment.",
            {201: Reply("Created.", headers=("Location", *TUS_PROGRESS))},
            refusals=(
                *TUS_REFUSALS,
                *TUS_CHUNK_REFUSALS,
                "anonymous_upload",
                "defer_length",
                "defer_length_and_length",
                "too_large",
                "concat_unsupported",
                "concat_header",
                "concat_too_many",
                "concat_url",
                "concat_final_length",
                "concat_final_body",
                "concat_unknown",
                "concat_not_partial",
                "concat_unfinished",
                "upload_locked",
                "bad_metadata",
                "metadata_filename",
                "metadata_invalid",
                "invalid_posted_data",
                "attachment_edit",
                "ids_too_long",
                "too_many_uploads",
                "modified_meanwhile",
            ),
            parameters=(
                TUS_VERSION,
                header(
                    "Upload-Length",
                    "The size of the file (or of the partial upload); none for a final upload.",
                    type="integer",
                    minimum=0,
                ),
                header(
                    "Upload-Defer-Length",
                    "``1``: the size is not known yet, a later ``PATCH`` tells it "
                    "(``Upload-Length``), once.",
                ),
                header(
                    "Upload-Concat",
                    "``partial``: a part of a file, sent apart (in parallel), never the "
                    "attachment by itself; ``final;URL URL...``: the file made of the user's "
                    "finished partial uploads of this record, in order.",
                ),
                header(
                    "Upload-Metadata",
                    "``filename`` (required, but for a partial upload), ``filetype``, "
                    "``data``, ``permissions``.",
                ),
                header("X-HTTP-Method-Override", "The method meant, for clients that need it."),
                *RECORD_PRECONDITIONS,
                *TUS_CHUNK,
            ),
            consumes=(tus.CHUNK_TYPE,),
        ),
    },
    routes.TUS_UPLOAD.name: {
        "OPTIONS": Operation(
            "tus discovery.",
            {204: TUS_DISCOVERY},
            refusals=("missing",),
            public=True,
        ),
        "HEAD": Operation(
            "The upload's offset.",
            {
                200: Reply(
                    "Its state.",
                    headers=(
                        *TUS_PROGRESS,
                        "Upload-Length",
                        "Upload-Defer-Length",
                        "Upload-Concat",
                        "Upload-Metadata",
                    ),
                )
            },
            refusals=(*TUS_REFUSALS, "unknown_upload"),
            parameters=(TUS_VERSION,),
        ),
        "PATCH": Operation(
            "Append a chunk at ``Upload-Offset``; the last one makes the file the record's "
            "attachment.",
            {204: Reply("Appended.", headers=TUS_PROGRESS)},
            refusals=(
                *TUS_REFUSALS,
                *TUS_CHUNK_REFUSALS,
                "unknown_upload",
                "upload_locked",
                "chunk_type",
                "offset_conflict",
                "upload_complete",
                "concat_final_patch",
                "length_changed",
                "length_below_offset",
                "too_large",
                "modified_meanwhile",
                "invalid_posted_data",
                "attachment_edit",
            ),
            parameters=(
                TUS_VERSION,
                header("Upload-Offset", "Where the chunk goes.", True, type="integer", minimum=0),
                header(
                    "Upload-Length",
                    "The size of an upload created with ``Upload-Defer-Length``, once known.",
                    type="integer",
                    minimum=0,
                ),
                *RECORD_PRECONDITIONS,
                *TUS_CHUNK,
            ),
            consumes=(tus.CHUNK_TYPE,),
        ),
        "DELETE": Operation(
            "Terminate the upload (or forget a finished one).",
            {204: Reply("Terminated.", headers=("Tus-Resumable",))},
            refusals=(*TUS_REFUSALS, "unknown_upload", "upload_locked", "invalid_parameter"),
            parameters=(TUS_VERSION, *RECORD_PRECONDITIONS),
        ),
    },
    routes.DATA_FILES.name: {
        "GET": _data_files(
            "The live files.",
            {200: Reply("Their list.", {"type": "array", "items": DATA_FILE_ENTRY})},
        ),
        "HEAD": _data_files(
            "The live files, headers only.", {200: Reply("The headers of their list.")}
        ),
        "POST": _data_files(
            "Store the raw body as a file (any type).",
            {200: Reply("Its id.", {"type": "string"})},
            refusals=(
                *BODY_REFUSALS,
                "invalid_parameter",
                "too_large",
                "storage_failed",
                "transfers_busy",
                "write_precondition",
            ),
            parameters=(
                *WRITE_PRECONDITIONS,
                query(
                    "id",
                    "The file's id (a new one by default).",
                    type="string",
                    pattern=r"^[A-Za-z0-9._-]+$",
                    maxLength=128,
                ),
                query(
                    "ttl",
                    "Lifetime in milliseconds.",
                    type="integer",
                    minimum=1,
                    maximum=2**63 - 1,
                ),
                header("Content-Disposition", "The file's name (``filename``, ``filename*``)."),
                {"name": "content", "in": "body", "required": False, "schema": BINARY},
            ),
            consumes=("application/octet-stream",),
            produces=("text/plain", JSON),
        ),
        "OPTIONS": DATA_FILES_OPTIONS,
    },
    routes.DATA_FILE.name: {
        **_download(
            "The file's content." + AT_ROOT,
            refusals=(*DATA_FILES_VISIBILITY, "transfers_busy"),
            public=True,
        ),
        "DELETE": _data_files(
            "Delete the file (or nothing).",
            {204: Reply("Deleted.")},
            refusals=("write_precondition",),
            parameters=WRITE_PRECONDITIONS,
        ),
        "OPTIONS": DATA_FILES_OPTIONS,
    },
    routes.SERVED_FILES.name: {
        **_download(
            "A stored file, as a web server would serve it (``serve_files``).", public=True
        ),
        # A key with a line break matches no route (Pyramid's ``*key`` is ``.*``): Kinto's 404.
        "OPTIONS": Operation("CORS preflights.", {204: PREFLIGHT}, ("hidden",), public=True),
    },
    routes.ATTACHMENT_FETCH.name: _download(
        "A stored version, by the signed URL of its event (no credentials needed).",
        refusals=("bad_signature",),
        public=True,
        parameters=(
            query("expires", "Until when the URL is valid (epoch seconds).", type="string"),
            query("signature", "HMAC-SHA256 of the key and ``expires``.", type="string"),
        ),
    ),
}
