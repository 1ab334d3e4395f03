"""The service's OpenAPI document, made true to what the service answers.

BentoML generates ``/docs.json`` from the API signatures, but (measured with schemathesis against the
running service) it says less than the service does: optional response fields are typed non-null
although they are ``null`` when unset, the 400 body's ``detail`` is declared a string although it
is pydantic's list of errors, and the answers the request guard gives before BentoML sees a request
(401/403 without the bearer token, 413 for an oversized body, 503 while no champion is loaded) and
the bearer security scheme are missing. ``complete_openapi`` adds them; the service serves the
result, and a schema-based fuzz test holds the service to it.
"""

from __future__ import annotations

import copy
from typing import Any

ERROR_BODY = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "what is wrong, and what to do next"}},
}
PYDANTIC_ERRORS = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "object", "additionalProperties": True}},
    ],
    "title": "Error Detail",
    "description": "the validation errors, one per field (loc, msg, type)",
}
GUARD_ERROR = "#/components/schemas/GuardError"
GUARD_ANSWERS = {
    "415": "a body that is not JSON (Content-Type other than application/json)",
    "413": "request body over DRIFTLOOP_SERVING__MAX_REQUEST_BYTES: split the batch",
    "503": "no champion is loaded yet (see /model_status); retry after Retry-After seconds",
}
AUTH_ANSWERS = {
    "401": "missing or wrong bearer token",
    "403": "this token may not call this endpoint (feedback needs the feedback token)",
}


def _nullable_defaults(node: Any) -> None:
    """A property whose default is ``null`` can be ``null``: say so where the generator dropped it."""
    if isinstance(node, dict):
        props = node.get("properties")
        if isinstance(props, dict):
            for prop in props.values():
                if isinstance(prop, dict) and "default" in prop and prop["default"] is None:
                    if "anyOf" not in prop and "type" in prop and prop["type"] != "null":
                        kept = {
                            k: prop.pop(k) for k in list(prop) if k not in ("default", "title", "description")
                        }
                        prop["anyOf"] = [kept, {"type": "null"}]
        for value in node.values():
            _nullable_defaults(value)
    elif isinstance(node, list):
        for value in node:
            _nullable_defaults(value)


ARROW_STREAM = "application/vnd.apache.arrow.stream"
BINARY = {"type": "string", "format": "binary"}


ARROW_ANSWERS = {  # what /predict_arrow answers per target kind (bentos/inputs.py: scored_to_arrow)
    "binary": "probability, label, model_version, arm, shadow_probability, shadow_version",
    "regression": "value, model_version, arm, shadow_value, shadow_version",
    "multiclass": "predicted_class, probabilities (a struct: one field per class), model_version, arm, "
    "shadow_class, shadow_version",
}


def arrow_operation(input_columns: list[str], kind: str = "binary") -> dict[str, Any]:
    """``/predict_arrow``, which BentoML's generator does not see (a mounted route, not a BentoML API)."""
    return {
        "post": {
            "operationId": "predict_arrow",
            "summary": "Score a batch sent as an Arrow IPC stream",
            "description": "Columns: the model's inputs (" + ", ".join(input_columns) + "), optionally "
            "correlation_id and routing_key. Answers an Arrow IPC stream, one row per input row, in order: "
            f"request_id, correlation_id, {ARROW_ANSWERS[kind]}.",
            "requestBody": {"required": True, "content": {ARROW_STREAM: {"schema": BINARY}}},
            "responses": {
                "200": {"description": "the answers", "content": {ARROW_STREAM: {"schema": BINARY}}},
                "400": {
                    "description": "not an Arrow IPC stream, or a column missing, unknown, of the wrong type "
                    "or out of range (named)",
                    "content": {"application/json": {"schema": {"$ref": GUARD_ERROR}}},
                },
            },
        }
    }


CALLER_FIELDS = ("correlation_id", "routing_key")  # a record's own fields, not model inputs


def _columns_like_records(spec: dict[str, Any], path: str, record: str, max_rows: int) -> None:
    """``path``'s ``columns`` (free-form in BentoML's document: ``dict[str, list]``) described from the
    record schema: one array per input column whose items are exactly what a record's field accepts,
    the required columns required, nothing else allowed; a generated client can build a valid batch."""
    body = spec.get("paths", {}).get(path, {}).get("post", {}).get("requestBody", {})
    schema = body.get("content", {}).get("application/json", {}).get("schema", {})
    fields = spec.get("components", {}).get("schemas", {}).get(record)
    if "columns" not in schema.get("properties", {}) or not fields:
        return
    inputs = {k: v for k, v in fields["properties"].items() if k not in CALLER_FIELDS}
    schema["properties"]["columns"] = {
        "type": "object",
        "description": "one array per input column, all of the same length (one entry per row; JSON "
        "Schema cannot say equal lengths, the service answers 400 otherwise); each entry is what a "
        f"{record} field accepts, optional columns may be left out or hold nulls",
        "properties": {
            name: {
                "type": "array",
                "items": {k: v for k, v in prop.items() if k not in ("title", "default")},
                "minItems": 1,
                "maxItems": max_rows,
            }
            for name, prop in inputs.items()
        },
        "required": [k for k in fields.get("required", []) if k in inputs],
        "additionalProperties": False,
    }


def complete_openapi(
    spec: dict[str, Any],
    scoring_paths: tuple[str, ...],
    feedback_paths: tuple[str, ...],
    auth: bool,
    extra_paths: dict[str, Any] | None = None,
    columns_of: dict[str, tuple[str, int]] | None = None,
) -> dict[str, Any]:
    """``spec`` with nullable optional fields, the real 400 body, the guard's answers and, when ``auth``,
    the bearer scheme on the endpoints that need it; ``extra_paths`` are operations served beside
    BentoML's (``/predict_arrow``); ``columns_of``: path -> (record schema, most rows) of the
    endpoints that take a batch column by column (``/predict_columns``)."""
    spec = copy.deepcopy(spec)
    spec.setdefault("paths", {}).update(copy.deepcopy(extra_paths or {}))
    _nullable_defaults(spec)
    for path, (record, max_rows) in (columns_of or {}).items():
        _columns_like_records(spec, path, record, max_rows)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for schema in schemas.values():
        if isinstance(schema, dict) and "detail" in schema.get("properties", {}):
            schema["properties"]["detail"] = PYDANTIC_ERRORS
    schemas["GuardError"] = ERROR_BODY
    if auth:
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            if "requestBody" not in operation:
                continue  # the open endpoints (health, metrics, docs): no guard in front of them
            body = operation["requestBody"].get("content", {}).get("application/json", {})
            if body.get("schema", {}).get("required"):
                operation["requestBody"]["required"] = True  # no body is a 400: say it is required
            answers = {"413": GUARD_ANSWERS["413"], "415": GUARD_ANSWERS["415"]}
            if ARROW_STREAM in operation["requestBody"].get("content", {}):
                answers["415"] = f"a body that is not {ARROW_STREAM}"
            if path in scoring_paths:
                answers["503"] = GUARD_ANSWERS["503"]
            if auth:
                answers["401"] = AUTH_ANSWERS["401"]
                if path in feedback_paths:
                    answers["403"] = AUTH_ANSWERS["403"]
                operation["security"] = [{"bearer": []}]
            responses = operation.setdefault("responses", {})
            for code, description in answers.items():
                responses.setdefault(
                    code,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": GUARD_ERROR}}},
                    },
                )
    return spec
