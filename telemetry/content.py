"""Opt-in capture of prompt and completion text (GenAI content capture).

``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (or the recorder's
``capture_content`` argument, which wins) is one of ``NO_CONTENT`` (default),
``SPAN_ONLY``, ``EVENT_ONLY``, ``SPAN_AND_EVENT``; ``true``/``false`` are accepted
as ``SPAN_AND_EVENT``/``NO_CONTENT``. Messages use the conventions' JSON shape
(``[{"role": ..., "parts": [{"type": "text", "content": ...}]}]``; tool calls as
``{"type": "tool_call", "id", "name", "arguments"}`` parts, tool results as
``tool_call_response`` parts). Tool definitions (``gen_ai.tool.definitions``) and tool
arguments count as content: without the opt-in they are recorded nowhere. Events
carry no API key, so captured content cannot contain one from amm.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from telemetry import conventions as c
from telemetry.events import AttemptEvent

__all__ = ["ContentPolicy", "content_attributes"]

_log = logging.getLogger("amm.telemetry")

_ALIASES = {
    "": c.CONTENT_NO_CONTENT,
    "false": c.CONTENT_NO_CONTENT,
    "0": c.CONTENT_NO_CONTENT,
    "no_content": c.CONTENT_NO_CONTENT,
    "true": c.CONTENT_SPAN_AND_EVENT,
    "1": c.CONTENT_SPAN_AND_EVENT,
    "span_only": c.CONTENT_SPAN_ONLY,
    "event_only": c.CONTENT_EVENT_ONLY,
    "span_and_event": c.CONTENT_SPAN_AND_EVENT,
}


@dataclass(frozen=True, slots=True)
class ContentPolicy:
    """Where message content goes: span attributes, a span event, both or nowhere."""

    mode: str

    @property
    def on_span(self) -> bool:
        """Content goes into ``gen_ai.input.messages``/``gen_ai.output.messages`` attributes."""
        return self.mode in (c.CONTENT_SPAN_ONLY, c.CONTENT_SPAN_AND_EVENT)

    @property
    def on_event(self) -> bool:
        """Content goes into a ``gen_ai.client.inference.operation.details`` span event."""
        return self.mode in (c.CONTENT_EVENT_ONLY, c.CONTENT_SPAN_AND_EVENT)

    @classmethod
    def resolve(cls, explicit: str | bool | None = None) -> ContentPolicy:
        """Explicit argument > environment variable > ``NO_CONTENT``.

        An unknown value is logged and treated as ``NO_CONTENT`` (privacy first).
        """
        if isinstance(explicit, bool):
            raw = "true" if explicit else "false"
        elif explicit is not None:
            raw = explicit
        else:
            raw = os.environ.get(c.ENV_CAPTURE_MESSAGE_CONTENT, "")
        mode = _ALIASES.get(raw.strip().lower())
        if mode is None:
            _log.warning("%s=%r is not one of NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT, "
                         "true, false; recording no content", c.ENV_CAPTURE_MESSAGE_CONTENT, raw)
            mode = c.CONTENT_NO_CONTENT
        return cls(mode)


def content_attributes(event: AttemptEvent) -> dict[str, str]:
    """The content attributes (JSON) of an attempt: ``gen_ai.input.messages``,
    ``gen_ai.output.messages`` (text and tool-call parts), ``gen_ai.tool.definitions``.

    Call it only under the opt-in: everything it returns is content.
    """
    out: dict[str, str] = {}
    if event.input_messages is not None:
        out[c.GEN_AI_INPUT_MESSAGES] = _dumps([_input_message(m) for m in event.input_messages])
    calls = event.output_tool_calls or ()
    if event.output_text is not None or calls:
        parts: list[dict[str, object]] = []
        if event.output_text or not calls:  # an answer of tool calls only has no text part
            parts.append(_text(event.output_text or ""))
        parts.extend(_tool_call_part(call) for call in calls)
        msg: dict[str, object] = {"role": "assistant", "parts": parts}
        if event.finish_reason:
            msg["finish_reason"] = event.finish_reason
        out[c.GEN_AI_OUTPUT_MESSAGES] = _dumps([msg])
    if event.tool_definitions:
        out[c.GEN_AI_TOOL_DEFINITIONS] = _dumps(list(event.tool_definitions))
    return out


def _dumps(value: object) -> str:
    # default=str: a value JSON cannot encode is shown, not allowed to lose the span.
    return json.dumps(value, ensure_ascii=False, default=str)


def _text(content: object) -> dict[str, object]:
    return {"type": "text", "content": str(content)}


def _input_message(m: Mapping[str, object]) -> dict[str, object]:
    """One request message (OpenAI shape) in the conventions' parts shape."""
    role = str(m.get("role", "user"))
    content = m.get("content")
    if role == "tool":
        return {"role": role, "parts": [{"type": "tool_call_response", "id": m.get("tool_call_id"),
                                          "response": content}]}
    parts: list[object] = []
    if isinstance(content, list):  # content parts: text as text, anything else as it came
        parts.extend(_text(p.get("text", "")) if isinstance(p, Mapping) and p.get("type") == "text"
                     else p for p in content)
    elif content is not None or not m.get("tool_calls"):
        parts.append(_text("" if content is None else content))
    tool_calls = m.get("tool_calls")
    if isinstance(tool_calls, list | tuple):
        parts.extend(_tool_call_part(call) for call in tool_calls if isinstance(call, Mapping))
    return {"role": role, "parts": parts}


def _tool_call_part(call: Mapping[str, object]) -> dict[str, object]:
    """A tool call, flat (``id``, ``name``, ``arguments``) or in the OpenAI shape
    (``function: {name, arguments}``), as a ``tool_call`` part; JSON arguments as an object."""
    fn = call.get("function")
    src = fn if isinstance(fn, Mapping) else call
    arguments = src.get("arguments")
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # not JSON: recorded as the text the model sent
            arguments = json.loads(arguments)
    return {"type": "tool_call", "id": call.get("id"), "name": src.get("name"),
            "arguments": arguments}
