"""A valid instance of a JSON schema: the simulated model's tool arguments and JSON.

Deterministic: the same schema and terms give the same instance. Strings echo the
prompt's key terms so an answer visibly relates to its request.

>>> instance_of({"type": "object", "properties": {"n": {"type": "integer"}},
...              "required": ["n"]}, ["paris"])
{'n': 1}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["instance_of"]

_MAX_DEPTH = 8
"""Recursive schemas (a tree whose nodes hold nodes) stop here with the smallest value."""

_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z", "date": "2026-01-01", "time": "00:00:00",
    "email": "user@example.com", "uri": "https://example.com/", "uuid":
    "00000000-0000-4000-8000-000000000000", "ipv4": "127.0.0.1",
}


def instance_of(schema: Mapping[str, Any], terms: Sequence[str] = ()) -> Any:
    """A value valid against ``schema``: required properties filled, enums take their
    first value, strings echo ``terms`` (the prompt's key terms) in turn."""
    return _Builder(schema, list(terms) or ["value"]).build(schema, 0)


class _Builder:
    __slots__ = ("_root", "_terms", "_used")

    def __init__(self, root: Mapping[str, Any], terms: list[str]) -> None:
        self._root = root
        self._terms = terms
        self._used = 0

    def build(self, schema: Any, depth: int) -> Any:
        if not isinstance(schema, Mapping):
            return {}  # ``true`` or a missing schema accepts anything
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        for key in ("anyOf", "oneOf", "allOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                # The first non-null option; allOf's first part is usually the base.
                typed = [o for o in options if not (isinstance(o, Mapping)
                                                    and _type(o) == "null")]
                return self.build((typed or options)[0], depth)
        kind = _type(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "string":
            return self._string(schema)
        if kind in ("integer", "number"):
            return _number(schema, kind)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return {}

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        ref = schema.get("$ref")
        # Local references only (``#/$defs/Name``), as pydantic writes them.
        for _ in range(_MAX_DEPTH):
            if not isinstance(ref, str) or not ref.startswith("#/"):
                return schema
            target: Any = self._root
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, Mapping) else {}
            schema = target if isinstance(target, Mapping) else {}
            ref = schema.get("$ref")
        return schema

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return {}
        required = schema.get("required")
        names = list(required) if isinstance(required, list) else list(properties)
        if depth >= _MAX_DEPTH:
            names = list(required) if isinstance(required, list) else []
        return {name: self.build(properties.get(name, {}), depth + 1) for name in names}

    def _array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        least = schema.get("minItems")
        least = least if isinstance(least, int) else 0
        count = max(1, least) if depth < _MAX_DEPTH else least
        if isinstance(schema.get("maxItems"), int):
            count = min(count, schema["maxItems"])
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            return [self.build(item, depth + 1) for item in prefix]
        return [self.build(schema.get("items", {}), depth + 1) for _ in range(count)]

    def _string(self, schema: Mapping[str, Any]) -> str:
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            return _FORMATS[fmt]
        text = self._terms[self._used % len(self._terms)]
        self._used += 1
        low, high = schema.get("minLength"), schema.get("maxLength")
        if isinstance(low, int) and len(text) < low:
            text = text + "x" * (low - len(text))
        if isinstance(high, int):
            text = text[:high]
        return text


def _type(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the first real type
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if isinstance(kind, str):
        return kind.lower()  # Gemini's OpenAPI schemas spell types in capitals
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return None


def _number(schema: Mapping[str, Any], kind: str) -> int | float:
    value: float = 1
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if isinstance(low, (int, float)) and not isinstance(low, bool):
        value = max(value, low + (1 if "exclusiveMinimum" in schema and "minimum" not in schema
                                  else 0))
    if isinstance(high, (int, float)) and not isinstance(high, bool):
        value = min(value, high - (1 if "exclusiveMaximum" in schema and "maximum" not in schema
                                   else 0))
    return int(value) if kind == "integer" else float(value)
