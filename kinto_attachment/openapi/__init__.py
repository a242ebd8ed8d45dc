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

import re

from kinto.core.errors import ErrorSchema
from kinto.core.openapi import OpenAPI
from pyramid.interfaces import IRoutesMapper

from .. import routes
from ..data_files import visibility
from ..errors import REFUSALS
from .operations import ERROR, OPERATIONS, TAG


#: The name of Kinto's route serving ``/__api__`` (its Cornice service).
KINTO_ROUTE = "openapi"


def path_of(route):
    """The OpenAPI path of ``route``: Pyramid's ``*key`` remainder is a ``{key}``."""
    return re.sub(r"\*(\w+)", r"{\1}", route.pattern)


def _path_parameters(route):
    names = re.findall(r"{(\w+)}", path_of(route))
    return [{"name": name, "in": "path", "required": True, "type": "string"} for name in names]


def _errors(refusals, headers=()):
    """Error responses by status, each described by its refusals' messages, with the headers
    they send (``Retry-After``, ``Allow``, ``Content-Range``...) and ``headers``, every
    error's of the route."""
    by_status, sent = {}, {}
    for name in refusals:
        refusal = REFUSALS[name]
        by_status.setdefault(refusal.status, []).append(refusal.message or name.replace("_", " "))
        sent.setdefault(refusal.status, {}).update(dict.fromkeys((*headers, *refusal.headers)))
    errors = {}
    for status, texts in sorted(by_status.items()):
        described = {"description": " | ".join(dict.fromkeys(texts)), "schema": ERROR}
        if sent[status]:
            described["headers"] = {name: {"type": "string"} for name in sent[status]}
        errors[str(status)] = described
    return errors


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


#: Headers of every error of a route, by route name.
TUS_ERROR_HEADERS = dict.fromkeys(
    (routes.TUS_UPLOADS.name, routes.TUS_UPLOAD.name), ("Tus-Resumable",)
)


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
            # tus answers every error of its routes with Tus-Resumable.
            **_errors(described.refusals, TUS_ERROR_HEADERS.get(route.name, ())),
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


def extended(spec, registry, hidden=()):
    """A copy of Kinto's ``spec`` with our routes, as ``registry``'s app registered them,
    but the ``hidden`` ones."""
    registered = {route.name for route in registry.getUtility(IRoutesMapper).get_routes()}
    registered -= {route.name for route in hidden}
    ours = paths(registered)
    _data_files_security(ours, registry.attachment_settings.data_files)
    tags = [*spec.get("tags", [])]
    # The tags of the routes described only: one of a route hidden or not served says it.
    described = [route.name for route in routes.ROUTES if route.name in registered]
    for name in dict.fromkeys(TAG[route] for route in described if route in OPERATIONS):
        if {"name": name} not in tags:
            tags.append({"name": name})
    return {
        **spec,
        "tags": tags,
        "paths": {**spec.get("paths", {}), **ours},
        "definitions": {**spec.get("definitions", {}), "Error": _error_schema()},
    }


def _data_files_security(ours, options):
    """``/data/files`` is for callers of trusted networks (no credentials) or, with
    ``data_files.principals``, for those principals (credentials): its operations then say
    both (Swagger's security alternatives, ``{}`` for none), where they say none otherwise."""
    if options.visibility == "public" or not options.principals:
        return
    alternatives = [{}, *({name: list(roles)} for name, roles in OpenAPI.security_roles.items())]
    for route in (routes.DATA_FILES, routes.DATA_FILE):
        for described in ours.get(path_of(route), {}).values():
            if isinstance(described, dict) and "security" in described:
                described["security"] = alternatives


def describing_ours(view, info):
    """View deriver: Kinto's ``openapi`` view, with our routes added to what it returns."""
    if info.options.get("route_name") != KINTO_ROUTE:
        return view

    def wrapped(context, request):
        # ``/data/files``, to whom it is a path that does not exist, is not described either.
        hidden = () if visibility.sees(request) else (routes.DATA_FILES, routes.DATA_FILE)
        return extended(view(context, request), request.registry, hidden)

    return wrapped


def includeme(config):
    # Under Pyramid's renderer: the deriver sees the view's dict, not its rendered response.
    config.add_view_deriver(describing_ours, under="rendered_view", over="mapped_view")
