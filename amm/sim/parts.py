"""Pieces of the providers' JSON that whole answers and streams share: how each
protocol spells a tool call, reads a tool result or a tool choice, and reports usage.

:mod:`amm.sim.protocols` builds whole bodies from them, :mod:`amm.sim.streams` chunks.
"""

from __future__ import annotations

import json
from typing import Any

from amm.sim.wire import ToolCall, text_of

__all__ = [
    "JSON_TOOL",
    "anthropic_tool_results",
    "anthropic_tool_use",
    "either",
    "function_responses",
    "function_tool",
    "gemini_function_call",
    "gemini_usage",
    "include_usage",
    "ollama_tool_call",
    "openai_tool_call",
    "openai_tool_choice",
]

JSON_TOOL = "json_tool_call"
"""The tool litellm forces on Anthropic to get JSON output; its input is the answer."""


def anthropic_tool_results(message: dict[str, Any]) -> list[str] | None:
    """The ``tool_result`` blocks of a user message, as text."""
    content = message.get("content")
    if not isinstance(content, list):
        return None
    results = [block for block in content
               if isinstance(block, dict) and block.get("type") == "tool_result"]
    return [text_of(block.get("content")) for block in results] if results else None


def function_tool(tool: dict[str, Any]) -> tuple[Any, Any]:
    """OpenAI's and Ollama's tool: ``{"type": "function", "function": {name, parameters}}``."""
    function = tool.get("function") or {}
    return function.get("name"), function.get("parameters")


def openai_tool_choice(choice: Any) -> str | None:
    if choice in ("none", "required"):
        return str(choice)
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return name if isinstance(name, str) else None
    return None


def include_usage(data: dict[str, Any]) -> bool:
    options = data.get("stream_options") or {}
    return isinstance(options, dict) and options.get("include_usage") is True


def openai_tool_call(call: ToolCall) -> dict[str, Any]:
    """A call in OpenAI's message (and stream) shape."""
    return {"id": f"call_{call.key}", "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_json}}


def anthropic_tool_use(call: ToolCall, *, streamed: bool = False) -> dict[str, Any]:
    """A ``tool_use`` content block; a streamed one opens with empty input."""
    return {"type": "tool_use", "id": f"toolu_01{call.key[:22]}", "name": call.name,
            "input": {} if streamed else dict(call.arguments)}


def ollama_tool_call(call: ToolCall) -> dict[str, Any]:
    """A call in Ollama's shape: arguments as an object, no id."""
    return {"function": {"name": call.name, "arguments": dict(call.arguments)}}


def gemini_function_call(call: ToolCall) -> dict[str, Any]:
    """A ``functionCall`` part."""
    return {"functionCall": {"name": call.name, "args": dict(call.arguments)}}


def gemini_usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    """Gemini's ``usageMetadata``."""
    return {"promptTokenCount": input_tokens, "candidatesTokenCount": output_tokens,
            "totalTokenCount": input_tokens + output_tokens}


def either(data: Any, camel: str, snake: str) -> Any:
    """A Gemini field, which clients spell in camelCase or snake_case."""
    if not isinstance(data, dict):
        return None
    return data[camel] if camel in data else data.get(snake)


def function_responses(parts: Any) -> list[str]:
    if not isinstance(parts, list):
        return []
    found = [either(p, "functionResponse", "function_response") for p in parts]
    return [json.dumps(f.get("response", {})) for f in found if isinstance(f, dict)]
