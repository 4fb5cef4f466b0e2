"""/schema/openapi.json tells the truth: every header, answer and problem a route really gives.

Litestar documents what a handler declares plus a 400 ValidationException copool never sends
(copool answers 422). This module rewrites the generated document once, from what each route is:
a route with a body can be 413, 415 and 422; one with parameters 422; one behind the bearer token
401; one with guards 403; one with path parameters 404; one that opens a database session, or is
idempotent, 503; an idempotent one (`opt={"idempotent": True}`) takes an `Idempotency-Key` header
and can be 409. Every problem answer is `application/problem+json`. New routes get it for free.
"""

from __future__ import annotations

import copy
import inspect
import typing
from collections.abc import Iterator
from http import HTTPStatus
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.routes import HTTPRoute

from app.problems import PROBLEM_JSON, problem_type

IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
IDEMPOTENCY_HEADER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Send one to make the request safe to retry: a repeat with the same key and "
    "body answers what the first did and moves nothing again; the same key with another body "
    "is 409 `idempotency-key-reused`. Keys belong to the caller and are kept 24 hours.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 128,
        "pattern": IDEMPOTENCY_KEY_PATTERN,
    },
}
#: Problems a route gives that nothing in its signature tells: (method, path) -> statuses.
#: GET /v1/me is 404 once the caller's account is gone.
EXTRA_PROBLEMS: dict[tuple[str, str], tuple[int, ...]] = {("GET", "/v1/me"): (404,)}
#: Dependencies that open a database session.
DATABASE_DEPENDENCIES = frozenset({"session", "reader", "uow"})

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ProblemDetail",
    "description": "RFC 9457 problem details; `type` is a stable code. Some problems add "
    "members (e.g. `errors`).",
    "properties": {
        "type": {"type": "string", "description": "stable code, e.g. `insufficient-funds`"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
    "examples": [
        {
            "type": "insufficient-funds",
            "title": "Insufficient funds",
            "status": 402,
            "detail": "the source account has less than 500 CNY available",
        }
    ],
}
_FIELD_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "FieldError",
    "properties": {
        "field": {"type": "string", "description": "the field, parameter or `body`"},
        "message": {"type": "string"},
    },
    "required": ["field", "message"],
}
_VALIDATION_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ValidationProblem",
    "description": "422: what was wrong with the request; `errors` names each field when the "
    "body or a parameter failed its schema (`type` `validation-error`).",
    "properties": {
        **_PROBLEM_SCHEMA["properties"],
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
    },
    "required": ["type", "title", "status", "detail"],
    "examples": [
        {
            "type": "validation-error",
            "title": "Unprocessable Entity",
            "status": 422,
            "detail": "Validation failed for POST /v1/wallet/top-ups",
            "errors": [{"field": "amount_minor", "message": "Expected `int`, got `str`"}],
        }
    ],
}


def _http_routes(app: Litestar) -> Iterator[tuple[str, str, HTTPRouteHandler]]:
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                for method in handler.http_methods:
                    yield method.lower(), route.path_format or "/", handler


def _reaches(handler: HTTPRouteHandler, names: frozenset[str]) -> bool:
    """Does the handler, or a dependency it asks for (at any depth), ask for one of `names`?"""
    provided = handler.resolve_dependencies()
    seen: set[str] = set()
    todo = list(handler.parsed_fn_signature.parameters)
    while todo:
        name = todo.pop()
        if name in names:
            return True
        if name in seen or name not in provided:
            continue
        seen.add(name)
        todo.extend(inspect.signature(provided[name].dependency).parameters)
    return False


def _inner_schema(handler: HTTPRouteHandler, name: str) -> dict[str, Any]:
    """msgspec's JSON schema of the non-None type of an optional parameter (its Meta), if any."""
    for python_name, field in handler.parsed_fn_signature.parameters.items():
        alias = getattr(field.kwarg_definition, "query", None) or python_name
        if alias != name:
            continue
        inner = [arg for arg in typing.get_args(field.annotation) if arg is not type(None)]
        if len(inner) == 1 and typing.get_origin(inner[0]) is Annotated:
            try:
                schema: dict[str, Any] = msgspec.json.schema(inner[0])
            except TypeError:
                return {}
            return {} if "$ref" in schema or "$defs" in schema else schema
    return {}


def _drop_null(parameter: dict[str, Any], handler: HTTPRouteHandler) -> None:
    """An optional parameter is absent, never null: document its value's type and constraints
    (Litestar drops the Meta of an `X | None` parameter, e.g. the currency pattern)."""
    schema = parameter.get("schema", {})
    options = schema.get("oneOf", [])
    values = [option for option in options if option != {"type": "null"}]
    if parameter.get("required") or len(values) != 1 or len(options) != 2:
        return
    rest = {key: value for key, value in schema.items() if key != "oneOf"}
    parameter["schema"] = {**values[0], **rest, **_inner_schema(handler, parameter["name"])}


def _problem_answer(status: int) -> dict[str, Any]:
    schema = "ValidationProblem" if status == 422 else "ProblemDetail"
    answer: dict[str, Any] = {
        "description": f"{HTTPStatus(status).phrase}: problem details, type "
        f"`{problem_type(status)}` or a domain code",
        "content": {PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }
    if status in {429, 503}:
        answer["headers"] = {
            "Retry-After": {
                "description": "seconds to wait before retrying",
                "schema": {"type": "integer"},
            }
        }
    return answer


def _rebuilt(code: str, answer: dict[str, Any]) -> bool:
    """Litestar's 400 (copool answers 422 instead) and every problem answer are rebuilt."""
    if code == "400":
        return True
    content = answer.get("content")
    return code.isdigit() and int(code) >= 400 and (not content or PROBLEM_JSON in content)


def _problems_of(
    method: str, path: str, handler: HTTPRouteHandler, operation: dict[str, Any]
) -> set[int]:
    declared = {int(code) for code in operation.get("responses", {}) if code.isdigit()}
    statuses = {code for code in declared if code >= 400 and code != 400}
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    if has_body:
        statuses |= {413, 415, 422}
    if parameters:
        statuses.add(422)
    if any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    if operation.get("security") != [{}]:
        statuses.add(401)
    if handler.resolve_guards():
        statuses.add(403)
    idempotent = bool(handler.opt.get("idempotent"))
    if idempotent:
        statuses.add(409)
    if idempotent or _reaches(handler, DATABASE_DEPENDENCIES):
        statuses.add(503)
    statuses.update(EXTRA_PROBLEMS.get((method.upper(), path), ()))
    return statuses


_OUR_PACKAGES = frozenset({"app", "groupbuy", "matching", "payments", "rides", "trust", "workers"})


def _closed_structs() -> set[str]:
    """The names of the request bodies that refuse unknown fields (forbid_unknown_fields)."""
    names, seen = set(), [msgspec.Struct]
    while seen:
        for struct in seen.pop().__subclasses__():
            seen.append(struct)
            ours = struct.__module__.partition(".")[0] in _OUR_PACKAGES
            if ours and struct.__struct_config__.forbid_unknown_fields:
                names.add(struct.__name__)
    return names


def document_api(schema: dict[str, Any], app: Litestar) -> dict[str, Any]:
    """A copy of Litestar's OpenAPI document with the headers and problems copool really has."""
    schema = copy.deepcopy(schema)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ProblemDetail"] = _PROBLEM_SCHEMA
    components["FieldError"] = _FIELD_ERROR_SCHEMA
    components["ValidationProblem"] = _VALIDATION_PROBLEM_SCHEMA
    for name in _closed_structs() & components.keys():
        components[name]["additionalProperties"] = False  # an unknown field is 422
    paths: dict[str, dict[str, Any]] = schema.get("paths", {})
    for method, path, handler in _http_routes(app):
        operation = paths.get(path, {}).get(method)
        if operation is None:
            continue
        for parameter in operation.get("parameters", []):
            _drop_null(parameter, handler)
        if handler.opt.get("idempotent"):
            parameters = operation.setdefault("parameters", [])
            parameters[:] = [p for p in parameters if p.get("name") != "Idempotency-Key"]
            parameters.append(copy.deepcopy(IDEMPOTENCY_HEADER))
        statuses = _problems_of(method, path, handler, operation)
        answers = {
            code: answer
            for code, answer in operation.get("responses", {}).items()
            if not _rebuilt(code, answer)
        }
        for status in statuses:
            answers[str(status)] = _problem_answer(status)
        operation["responses"] = dict(sorted(answers.items()))
    return schema


class TrueJsonRenderPlugin(JsonRenderPlugin):
    """Serves /schema/openapi.json as `document_api` rewrites it, built once per app."""

    def __init__(self) -> None:
        super().__init__()
        self._rendered: bytes | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._rendered is None:
            self._rendered = self.render_json(request, document_api(openapi_schema, request.app))
        return self._rendered


def openapi_config() -> OpenAPIConfig:
    """The app's OpenAPI: interactive docs under /schema, the true document at openapi.json."""
    return OpenAPIConfig(
        title="copool API",
        version="1.0.0",
        description="Group-buy pools, carpool matching, trust and a double-entry ledger. "
        "Errors are RFC 9457 problem details (application/problem+json).",
        path="/schema",
        render_plugins=[
            ScalarRenderPlugin(),
            SwaggerRenderPlugin(path="/swagger"),
            TrueJsonRenderPlugin(),
        ],
    )
