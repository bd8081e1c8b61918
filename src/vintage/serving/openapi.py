"""The OpenAPI document of a scoring server, with the model's input schema."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vintage.model.load import ModelInfo

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "string"}},
            },
        }
    },
}


def openapi_document(info: ModelInfo) -> dict[str, Any]:
    """OpenAPI 3.0 description of every endpoint; ``/invocations`` documents the model's columns."""
    number = {"type": "number"}
    columns = list(info.columns)
    row = {"type": "array", "items": number, "minItems": len(columns), "maxItems": len(columns)}
    record = {
        "type": "object",
        "properties": {c: number for c in columns},
        "required": columns,
        "additionalProperties": False,
    }
    split = {
        "type": "object",
        "required": ["columns", "data"],
        "properties": {
            "columns": {"type": "array", "items": {"type": "string", "enum": columns}},
            "data": {"type": "array", "items": row, "minItems": 1},
            "index": {"type": "array"},
        },
    }
    request = {
        "oneOf": [
            {"type": "object", "required": ["dataframe_split"], "properties": {"dataframe_split": split}},
            {
                "type": "object",
                "required": ["dataframe_records"],
                "properties": {"dataframe_records": {"type": "array", "items": record, "minItems": 1}},
            },
            {"type": "object", "required": ["instances"], "properties": {"instances": {"type": "array"}}},
            {"type": "object", "required": ["inputs"], "properties": {"inputs": {}}},
            split,
        ]
    }
    errors = {str(s): _response("error", _ERROR) for s in (400, 401, 413, 415, 504)}
    text = {"content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"vintage scoring server: {info.name or 'model'}",
            "version": str(info.version or "0"),
        },
        "paths": {
            "/invocations": {
                "post": {
                    "summary": "Score rows (MLflow scoring formats, the bare split-orient object, or CSV).",
                    "security": [{"apiKey": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": request},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": _response(
                            "predictions",
                            {
                                "type": "object",
                                "required": ["predictions"],
                                "properties": {"predictions": {"type": "array", "items": number}},
                            },
                        ),
                        **errors,
                    },
                }
            },
            "/health": {"get": {"summary": "Alive.", "responses": {"200": {"description": "alive", **text}}}},
            "/ready": {
                "get": {
                    "summary": "Ready to score (model loaded and warmed, not draining).",
                    "responses": {
                        "200": {"description": "ready", **text},
                        "503": {"description": "not ready", **text},
                    },
                }
            },
            "/version": {
                "get": {
                    "summary": "The model being served.",
                    "responses": {"200": _response("model", {"type": "object"})},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics.",
                    "responses": {"200": {"description": "metrics", **text}},
                }
            },
        },
        "components": {"securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
    }


def _response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}
