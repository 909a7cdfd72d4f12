"""Opt-in capture of prompt and completion text (GenAI content capture).

``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (or the recorder's
``capture_content`` argument, which wins) is one of ``NO_CONTENT`` (default),
``SPAN_ONLY``, ``EVENT_ONLY``, ``SPAN_AND_EVENT``; ``true``/``false`` are accepted
as ``SPAN_AND_EVENT``/``NO_CONTENT``. Messages use the conventions' JSON shape
(``[{"role": ..., "parts": [{"type": "text", "content": ...}]}]``). Events carry no
API key, so captured content cannot contain one from amm.
"""

from __future__ import annotations

import json
import logging
import os
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
    """``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON) of an attempt."""
    out: dict[str, str] = {}
    if event.input_messages is not None:
        msgs = [{"role": str(m.get("role", "user")),
                 "parts": [{"type": "text", "content": str(m.get("content", ""))}]}
                for m in event.input_messages]
        out[c.GEN_AI_INPUT_MESSAGES] = json.dumps(msgs, ensure_ascii=False)
    if event.output_text is not None:
        msg = {"role": "assistant", "parts": [{"type": "text", "content": event.output_text}]}
        if event.finish_reason:
            msg["finish_reason"] = event.finish_reason
        out[c.GEN_AI_OUTPUT_MESSAGES] = json.dumps([msg], ensure_ascii=False)
    return out
