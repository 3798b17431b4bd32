"""The OpenAPI 3.1 document of the API, served at /api/openapi.json.

Generated, never written by hand: every route under /api/ carries an ``Operation``
(``@operation`` from server/wire.py, next to the view) naming the pydantic models of
its body and answers; path parameters come from the route's converters. The schemas are
the models' own JSON schemas (``models_json_schema``), so a field added to a model is in
the document, and the views answer through the same models (server/wire.py ``Output``).
docs/api.md says how to add an operation.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, current_app
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from werkzeug.routing import BaseConverter, IntegerConverter, Rule, UnicodeConverter, UUIDConverter

from server.web_errors import ErrorOut
from server.wire import Multipart, Operation, Part, operation_of

REF = "#/components/schemas/{model}"
ERROR = {"$ref": "#/components/responses/Error"}
_ARGUMENT = re.compile(r"<(?:[a-zA-Z_][a-zA-Z0-9_]*(?:\([^)]*\))?:)?([a-zA-Z_][a-zA-Z0-9_]*)>")
_IGNORED_METHODS = {"HEAD", "OPTIONS"}
# Operation.security -> the operation's security requirement ({}: no token needed).
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "device": [{"device": []}],
    "none": [],
    "either": [{}, {"device": []}],
}


class UndocumentedRoute(RuntimeError):
    """A route under /api/ without an ``@operation``: the document would be incomplete."""


def openapi_document(app: Flask | None = None) -> dict[str, Any]:
    """The document (built once per app: it depends only on the code)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    cached: dict[str, Any] | None = app.extensions.get("dibao.openapi")
    if cached is None:
        cached = build_document(app)
        app.extensions["dibao.openapi"] = cached
    return cached


def api_operations(app: Flask) -> list[tuple[Rule, str, Operation]]:
    """(route, method, operation) of every route under /api/, in URL-map order."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        spec = operation_of(app.view_functions[rule.endpoint])
        if spec is None:
            raise UndocumentedRoute(f"{rule.rule} ({rule.endpoint}) has no @operation")
        for method in sorted((rule.methods or set()) - _IGNORED_METHODS):
            found.append((rule, method, spec))
    return found


def build_document(app: Flask) -> dict[str, Any]:
    operations = api_operations(app)
    schemas = _Schemas()
    schemas.add(ErrorOut, "serialization")
    for _, _, spec in operations:
        for model in _request_models(spec):
            schemas.add(model, "validation")
        for answer in spec.responses.values():
            if isinstance(answer, type):
                schemas.add(answer, "serialization")
    schemas.build()

    paths: dict[str, dict[str, Any]] = {}
    for rule, method, spec in operations:
        path = _ARGUMENT.sub(r"{\1}", rule.rule)
        paths.setdefault(path, {})[method.lower()] = _operation(rule, spec, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dibao tablet and phone API",
            "version": "1",
            "description": (
                "Every error is JSON: {error: {code, message, details}} (docs/api.md). "
                "Tablets send 'Authorization: Bearer <device token>'. Generated from the "
                "models the views use (mobile_api/openapi.py)."
            ),
        },
        "components": {
            "securitySchemes": {
                "device": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a device token from POST /api/v1/auth/device-tokens",
                }
            },
            "schemas": schemas.definitions,
            "responses": {
                "Error": {
                    "description": "an error: the envelope",
                    "content": {"application/json": {"schema": schemas.ref(ErrorOut)}},
                }
            },
        },
        "paths": paths,
    }


class _Schemas:
    """The models' JSON schemas as components, each model once per mode."""

    def __init__(self) -> None:
        self.wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = []
        self.refs: dict[Any, dict[str, Any]] = {}
        self.definitions: dict[str, Any] = {}

    def add(self, model: type[BaseModel], mode: JsonSchemaMode) -> None:
        if (model, mode) not in self.wanted:
            self.wanted.append((model, mode))

    def build(self) -> None:
        refs, top = models_json_schema(self.wanted, ref_template=REF)
        self.refs = dict(refs)
        self.definitions = dict(sorted(top.get("$defs", {}).items()))

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode = "serialization") -> Any:
        return self.refs[(model, mode)]


def _request_models(spec: Operation) -> list[type[BaseModel]]:
    models: list[type[BaseModel]] = []
    if isinstance(spec.json_body, tuple):
        models.extend(spec.json_body)
    elif spec.json_body is not None:
        models.append(spec.json_body)
    if spec.multipart is not None:
        parts = [*spec.multipart.parts.values(), spec.multipart.other_parts]
        models.extend(p.schema for p in parts if p is not None and isinstance(p.schema, type))
    return models


def _operation(rule: Rule, spec: Operation, schemas: _Schemas) -> dict[str, Any]:
    parameters = [_path_parameter(name, converter) for name, converter in _converters(rule)]
    parameters += [
        {
            "name": q.name,
            "in": "query",
            "required": q.required,
            "schema": q.schema,
            "description": q.description,
        }
        for q in spec.query
    ]
    if spec.etag:
        parameters.append(
            {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "the ETag of an earlier answer: 304 if nothing changed",
            }
        )
    security = _SECURITY[spec.security]
    document: dict[str, Any] = {
        "operationId": rule.endpoint,
        "summary": spec.summary,
        "security": security,
        "responses": _responses(spec, schemas),
    }
    if spec.description:
        document["description"] = spec.description
    if parameters:
        document["parameters"] = parameters
    body = _request_body(spec, schemas)
    if body is not None:
        document["requestBody"] = body
    return document


def _converters(rule: Rule) -> list[tuple[str, BaseConverter]]:
    converters: dict[str, BaseConverter] = rule._converters  # werkzeug keeps them here
    return [(name, converters[name]) for name in _ARGUMENT.findall(rule.rule)]


def _path_parameter(name: str, converter: BaseConverter) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _converter_schema(converter)}


def _converter_schema(converter: BaseConverter) -> dict[str, Any]:
    """What a path segment may hold, from the route's converter."""
    own = getattr(converter, "json_schema", None)
    if isinstance(own, dict):  # a converter of ours says it itself
        return own
    if isinstance(converter, IntegerConverter):
        schema: dict[str, Any] = {"type": "integer"}
        minimum = converter.min if converter.min is not None else None
        if not converter.signed:
            minimum = max(minimum or 0, 0)
        if minimum is not None:
            schema["minimum"] = minimum
        if converter.max is not None:
            schema["maximum"] = converter.max
        return schema
    if isinstance(converter, UUIDConverter):
        return {"type": "string", "format": "uuid"}
    if isinstance(converter, UnicodeConverter):
        # One path segment: at least one character, never a slash.
        return {"type": "string", "pattern": "^[^/]+$"}
    return {"type": "string"}


def _request_body(spec: Operation, schemas: _Schemas) -> dict[str, Any] | None:
    content: dict[str, Any] = {}
    if isinstance(spec.json_body, tuple):
        content["application/json"] = {
            "schema": {"oneOf": [schemas.ref(m, "validation") for m in spec.json_body]}
        }
    elif spec.json_body is not None:
        content["application/json"] = {"schema": schemas.ref(spec.json_body, "validation")}
    if spec.multipart is not None:
        content["multipart/form-data"] = _multipart(spec.multipart, schemas)
    for media_type in spec.raw_body:
        content[media_type] = {"schema": {"type": "string", "format": "binary"}}
    if not content:
        return None
    return {"required": spec.body_required, "content": content}


def _part_schema(part: Part, schemas: _Schemas) -> dict[str, Any]:
    if isinstance(part.schema, type):
        schema = dict(schemas.ref(part.schema, "validation"))
    else:
        schema = dict(part.schema)
    if part.description:
        schema["description"] = part.description
    return schema


def _multipart(body: Multipart, schemas: _Schemas) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {name: _part_schema(p, schemas) for name, p in body.parts.items()},
        "required": [name for name, p in body.parts.items() if p.required],
        "additionalProperties": (
            _part_schema(body.other_parts, schemas) if body.other_parts is not None else False
        ),
    }
    media: dict[str, Any] = {"schema": schema}
    encoding = {
        name: {"contentType": "application/json"}
        for name, p in body.parts.items()
        if isinstance(p.schema, type)
    }
    if encoding:
        media["encoding"] = encoding
    return media


def _responses(spec: Operation, schemas: _Schemas) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, answer in sorted(spec.responses.items()):
        if isinstance(answer, str):
            responses[str(status)] = {"description": answer}
            continue
        response: dict[str, Any] = {
            "description": (answer.__doc__ or answer.__name__).strip().splitlines()[0],
            "content": {"application/json": {"schema": schemas.ref(answer)}},
        }
        if spec.etag:
            response["headers"] = {
                "ETag": {"schema": {"type": "string"}, "description": "send it as If-None-Match"}
            }
        responses[str(status)] = response
    errors = dict(spec.errors)
    if spec.security == "device":
        errors.setdefault(401, "no device token, or an unknown, expired or revoked one")
    if spec.query:
        # Every query string is checked before the view (server/validation.py: NUL).
        errors.setdefault(400, "invalid_parameter: a query-string value that is refused")
    for status, when in sorted(errors.items()):
        responses[str(status)] = {**ERROR, "description": when}
    return responses
