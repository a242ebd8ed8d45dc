"""Every route of ours in the OpenAPI 2.0 description Kinto publishes at ``/__api__``.

Kinto builds that description from its Cornice services alone (``kinto.core.views.openapi``):
of ours, only ``{record}/attachment`` is one, known by name and methods only; the others are
plain Pyramid routes. :data:`OPERATIONS` describes each method of each route of
:data:`~kinto_attachment.routes.ROUTES` (parameters, bodies, responses, the errors by their
:data:`~kinto_attachment.errors.REFUSALS` names); :func:`paths` turns the routes an app
registered into the description's ``paths``. A new route in the table needs its operations
here: ``tests/test_openapi.py`` names what is missing.

How they reach Kinto's description: Kinto offers no extension point for paths (only
``OpenAPI.expose_authentication_method``, for security definitions), so :func:`includeme`
adds a view deriver that wraps the view of Kinto's ``openapi`` route and adds ours to the
dict it returns, before it is rendered. Chosen as the least fragile way, since it leans on two
things only, the route's name and the view returning the description as a dict, and nothing of
how Kinto builds it: no Kinto code copied or patched, Kinto's own cache of its description is
left untouched (ours are added to a copy), and each app adds the routes it registered. The
others: overriding the view conflicts with the one Kinto scans after including plugins;
patching ``OpenAPI.generate`` changes every app of the process; a tween would parse and
serialise the JSON again. Should Kinto change either (or register its view before plugins are
included, out of the deriver's reach), ``tests/test_openapi.py`` fails.

No operation of ours has a ``default`` response (Kinto's operations do): a status that is not
listed is a bug of the description or of the server, which ``tests/live/test_schemathesis.py``
reports.

Paths are relative to the API prefix (``basePath``), as Kinto's are: ``/data/files`` at the
server root, the same views, is said in their descriptions, since OpenAPI 2.0 has one base.
"""

import dataclasses
import re
from collections.abc import Mapping

from kinto.core.errors import ErrorSchema
from kinto.core.openapi import OpenAPI
from pyramid.interfaces import IRoutesMapper

from . import routes
from .errors import REFUSALS
from .protocols import tus


#: The name of Kinto's route serving ``/__api__`` (its Cornice service).
KINTO_ROUTE = "openapi"
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
)
#: What ``downloads.respond`` answers, and the refusals of every download.
DOWNLOADED = {
    200: Reply("The content.", BINARY, ("ETag", "Last-Modified", "Content-Disposition")),
    206: Reply("The requested range.", BINARY, ("Content-Range",)),
    304: Reply("Not modified since the validators of the request."),
}
DOWNLOAD_REFUSALS = ("range_not_satisfiable", "missing", "storage_failed", "replaced_meanwhile")
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

TUS_VERSION = header("Tus-Resumable", "The tus version of the client.", True, enum=[tus.VERSION])
#: Headers of a tus upload's state.
TUS_PROGRESS = ("Tus-Resumable", "Upload-Offset", "Upload-Expires")
TUS_CHUNK = (
    header("Upload-Checksum", "``sha1|md5|sha256 <base64 digest>`` of the chunk."),
    {"name": "chunk", "in": "body", "required": False, "schema": BINARY},
)
TUS_CHUNK_REFUSALS = (
    "not_an_integer",
    "integer_too_long",
    "checksum_algorithm",
    "checksum_base64",
    "chunk_too_large",
    "checksum_mismatch",
    "short_body",
    "body_interrupted",
    "storage_failed",
    "upload_gone",
)
TUS_REFUSALS = ("tus_version", "unauthenticated", "forbidden", "missing", "method_override")

#: Who may see ``/data/files`` (a 404 to others, a 403 to other sites' pages).
DATA_FILES_VISIBILITY = ("hidden", "foreign_host", "cross_site")
AT_ROOT = " Served at the server root too (``/data/files...``, outside the API prefix)."
DATA_FILE_ENTRY = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "expiration": {"type": "integer", "x-nullable": True, "description": "Epoch ms."},
        "filename": {"type": "string"},
        "size": {"type": "integer"},
        "mimetype": {"type": "string"},
        "hash": {"type": "string"},
    },
    "required": ["id", "filename", "size", "mimetype", "hash"],
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

#: Each route's operations, by method.
OPERATIONS = {
    routes.ATTACHMENT.name: {
        "POST": Operation(
            "Upload the record's attachment (multipart/form-data), creating the record if "
            "needed; the replaced file is deleted.",
            {
                200: Reply("The attachment of an existing record.", ATTACHMENT_METADATA),
                201: Reply("The attachment of a new record.", ATTACHMENT_METADATA, ("Location",)),
            },
            refusals=(
                *ON_RECORD,
                *RECORD_FIELDS,
                "attachment_missing",
                "not_multipart",
                "invalid_boundary",
                "short_body",
                "body_interrupted",
                "too_large",
                "storage_failed",
            ),
            parameters=(
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
            {204: Reply("Removed (or there was none).")},
            refusals=(*ON_RECORD, "storage_failed"),
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
            {204: Reply("The server's tus capabilities.", headers=("Tus-Version",))},
            parameters=(header("Access-Control-Request-Method", "A CORS preflight."),),
            public=True,
        ),
        "POST": Operation(
            "Create a tus upload of the record's attachment (creation, creation-with-upload).",
            {201: Reply("Created.", headers=("Location", *TUS_PROGRESS))},
            refusals=(
                *TUS_REFUSALS,
                *TUS_CHUNK_REFUSALS,
                "anonymous_upload",
                "defer_length",
                "too_large",
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
                header("Upload-Length", "The size of the file.", type="integer", minimum=0),
                header("Upload-Defer-Length", "Not supported."),
                header(
                    "Upload-Metadata",
                    "``filename`` (required), ``filetype``, ``data``, ``permissions``.",
                ),
                header("X-HTTP-Method-Override", "The method meant, for clients that need it."),
                *TUS_CHUNK,
            ),
            consumes=(tus.CHUNK_TYPE,),
        ),
    },
    routes.TUS_UPLOAD.name: {
        "OPTIONS": Operation(
            "tus discovery.",
            {204: Reply("The server's tus capabilities.", headers=("Tus-Version",))},
            public=True,
        ),
        "HEAD": Operation(
            "The upload's offset.",
            {200: Reply("Its state.", headers=(*TUS_PROGRESS, "Upload-Length"))},
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
                "modified_meanwhile",
                "invalid_posted_data",
                "attachment_edit",
            ),
            parameters=(
                TUS_VERSION,
                header("Upload-Offset", "Where the chunk goes.", True, type="integer", minimum=0),
                *TUS_CHUNK,
            ),
            consumes=(tus.CHUNK_TYPE,),
        ),
        "DELETE": Operation(
            "Terminate the upload (or forget a finished one).",
            {204: Reply("Terminated.", headers=("Tus-Resumable",))},
            refusals=(*TUS_REFUSALS, "unknown_upload", "upload_locked"),
            parameters=(TUS_VERSION,),
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
                "invalid_parameter",
                "length_required",
                "too_large",
                "short_body",
                "body_interrupted",
                "storage_failed",
                "transfers_busy",
            ),
            parameters=(
                query("id", "The file's id (a new one by default).", type="string"),
                query("ttl", "Lifetime in milliseconds.", type="integer", minimum=1),
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
        "DELETE": _data_files("Delete the file (or nothing).", {204: Reply("Deleted.")}),
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


def path_of(route):
    """The OpenAPI path of ``route``: Pyramid's ``*key`` remainder is a ``{key}``."""
    return re.sub(r"\*(\w+)", r"{\1}", route.pattern)


def _path_parameters(route):
    names = re.findall(r"{(\w+)}", path_of(route))
    return [{"name": name, "in": "path", "required": True, "type": "string"} for name in names]


def _errors(refusals):
    """Error responses by status, each described by its refusals' messages."""
    by_status = {}
    for name in refusals:
        refusal = REFUSALS[name]
        by_status.setdefault(refusal.status, []).append(refusal.message or name.replace("_", " "))
    return {
        str(status): {"description": " | ".join(dict.fromkeys(texts)), "schema": ERROR}
        for status, texts in sorted(by_status.items())
    }


def _error_schema():
    """Kinto's error body, converted as Kinto converts its own (its ``Any`` type too)."""
    converter = OpenAPI.type_converter(
        OpenAPI.custom_type_converters, OpenAPI.default_type_converter
    )
    return converter(ErrorSchema())


def _reply(reply):
    described = {"description": reply.description}
    if reply.schema is not None:
        described["schema"] = reply.schema
    if reply.headers:
        described["headers"] = {name: {"type": "string"} for name in reply.headers}
    return described


def operation(route, method, described):
    verb = {"POST": "create", "PUT": "update"}.get(method, method.lower())
    result = {
        "summary": described.summary,
        "operationId": f"{verb}_{route.name}".replace("-", "_"),
        "tags": [TAG.get(route.name, "Attachment")],
        "produces": list(described.produces),
        "parameters": list(described.parameters),
        "responses": {
            **{str(status): _reply(reply) for status, reply in described.replies.items()},
            **_errors(described.refusals),
        },
        "security": []
        if described.public
        else [{name: list(roles)} for name, roles in OpenAPI.security_roles.items()],
    }
    if described.consumes:
        result["consumes"] = list(described.consumes)
    return result


def paths(registered):
    """The ``paths`` of our routes among the ``registered`` route names."""
    return {
        path_of(route): {
            "parameters": _path_parameters(route),
            **{
                method.lower(): operation(route, method, described)
                for method, described in OPERATIONS[route.name].items()
            },
        }
        for route in routes.ROUTES
        # A route without operations yet is left out (tests/test_openapi.py tells), not a 500.
        if route.name in registered and route.name in OPERATIONS
    }


def extended(spec, registry):
    """A copy of Kinto's ``spec`` with our routes, as ``registry``'s app registered them."""
    registered = {route.name for route in registry.getUtility(IRoutesMapper).get_routes()}
    ours = paths(registered)
    tags = [*spec.get("tags", [])]
    for name in dict.fromkeys(TAG.values()):
        if {"name": name} not in tags:
            tags.append({"name": name})
    return {
        **spec,
        "tags": tags,
        "paths": {**spec.get("paths", {}), **ours},
        "definitions": {**spec.get("definitions", {}), "Error": _error_schema()},
    }


def describing_ours(view, info):
    """View deriver: Kinto's ``openapi`` view, with our routes added to what it returns."""
    if info.options.get("route_name") != KINTO_ROUTE:
        return view

    def wrapped(context, request):
        return extended(view(context, request), request.registry)

    return wrapped


def includeme(config):
    # Under Pyramid's renderer: the deriver sees the view's dict, not its rendered response.
    config.add_view_deriver(describing_ours, under="rendered_view", over="mapped_view")
