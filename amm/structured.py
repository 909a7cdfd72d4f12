"""Is an agent-call answer well formed? Tool calls against the declared tools, JSON
answers against the request's schema.

Both checks return the list of problems (empty: well formed), so that quality can
score by them and ``on_invalid="failover"`` can name them in the failure reason.
Schemas are checked with ``jsonschema`` (Draft 2020-12 unless the schema says
otherwise); a validator is built once per schema and kept.

>>> tool_call_problems([ToolCall("c1", "get_weather", '{"city": 1}')], tools)
['c1 get_weather: arguments: 1 is not of type 'string' (at city)']
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from amm.models import ModelRequest, ModelResponse, ToolCall

__all__ = ["answer_problems", "json_problems", "tool_call_problems"]

_MAX_PROBLEMS = 5


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError:
        return None  # a schema amm cannot check with: only JSON-ness is checked
    return cls(schema)


def _schema_problems(value: Any, schema: Mapping[str, Any] | None) -> list[str]:
    if not schema:
        return []
    validator = _validator(json.dumps(schema, sort_keys=True))
    if validator is None:
        return []
    problems = []
    for error in validator.iter_errors(value):
        where = "/".join(str(p) for p in error.absolute_path)
        problems.append(error.message + (f" (at {where})" if where else ""))
        if len(problems) == _MAX_PROBLEMS:
            break
    return problems


def tool_call_problems(calls: Sequence[ToolCall],
                       tools: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """What is wrong with ``calls``: a tool that was not declared, arguments that are not
    a JSON object, arguments that break the tool's parameter schema."""
    declared = {t["function"]["name"]: t["function"].get("parameters") for t in tools or ()}
    problems = []
    for call in calls:
        label = f"{call.id} {call.name or '(no name)'}"
        if call.name not in declared:
            problems.append(f"{label}: not a declared tool")
            continue
        try:
            arguments = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as exc:
            problems.append(f"{label}: arguments are not JSON ({exc.msg})")
            continue
        if not isinstance(arguments, dict):
            problems.append(f"{label}: arguments are not a JSON object")
            continue
        problems.extend(f"{label}: arguments: {p}"
                        for p in _schema_problems(arguments, declared[call.name]))
    return problems


def json_problems(content: str, schema: Mapping[str, Any] | None) -> list[str]:
    """What is wrong with ``content`` as the JSON answer: not JSON, or not valid
    against ``schema``. Code fences around the JSON are tolerated."""
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text[text.find("\n") + 1:] if "\n" in text else text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return [f"the answer is not JSON ({exc.msg} at char {exc.pos})"]
    return _schema_problems(value, schema)


def answer_problems(response: ModelResponse, request: ModelRequest) -> list[str]:
    """Problems of an agent-call answer: its tool calls, else its JSON when the request
    asked for JSON. Plain text answers to plain requests have none."""
    if response.tool_calls:
        return tool_call_problems(response.tool_calls, request.tools)
    if request.wants_json:
        return json_problems(response.content, request.response_schema)
    return []
