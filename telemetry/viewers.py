"""What GenAI trace viewers read besides the GenAI conventions (Arize Phoenix, Langfuse).

Both viewers understand ``gen_ai.*`` on their own for ``chat``, ``invoke_agent`` and
``execute_tool`` spans (Phoenix 20.x synthesises OpenInference attributes from them;
Langfuse maps ``gen_ai.operation.name``). What they cannot derive, amm writes next to
the convention names while :data:`~telemetry.conventions.ENV_VIEWER_ATTRIBUTES` is on
(the default):

* ``openinference.span.kind`` on every amm span (AGENT, CHAIN, LLM, EVALUATOR, TOOL):
  ``amm.select`` and ``amm.evaluate`` have no GenAI operation, and viewers that read
  only OpenInference (Arize AX, older Phoenix) need it on the others too;
* cost: ``gen_ai.usage.cost`` (Langfuse) and ``llm.cost.total`` (OpenInference), both
  equal to ``amm.cost_usd``, and OpenInference's split ``llm.cost.prompt`` /
  ``llm.cost.completion`` when amm priced the attempt per token (registered models);
* ``session.id`` next to ``gen_ai.conversation.id``;
* under the content opt-in only, ``input.value`` / ``output.value`` (the trace list's
  Input and Output columns) on ``invoke_agent`` and ``chat``;
* the resource's ``openinference.project.name`` (Phoenix's project; it ignores
  ``service.name``), set by :func:`telemetry.setup`.

Token counts, model and provider names are not duplicated: both viewers read them
from ``gen_ai.*``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from telemetry import conventions as c

__all__ = ["cost_attributes", "input_text", "kind", "viewer_attributes_enabled"]

_log = logging.getLogger("amm.telemetry")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def viewer_attributes_enabled(explicit: bool | None = None) -> bool:
    """Explicit argument > ``AMM_TELEMETRY_VIEWER_ATTRIBUTES`` > on.

    >>> viewer_attributes_enabled(False)
    False
    """
    if explicit is not None:
        return explicit
    raw = os.environ.get(c.ENV_VIEWER_ATTRIBUTES, "").strip().lower()
    if not raw or raw in _TRUE:
        return True
    if raw not in _FALSE:
        _log.warning("%s=%r is neither true nor false; writing the viewer attributes",
                     c.ENV_VIEWER_ATTRIBUTES, raw)
        return True
    return False


def kind(value: str) -> dict[str, Any]:
    """``{"openinference.span.kind": value}``."""
    return {c.OPENINFERENCE_SPAN_KIND: value}


def cost_attributes(cost_usd: float, input_cost_usd: float | None = None,
                    output_cost_usd: float | None = None) -> dict[str, Any]:
    """The cost of one attempt where Langfuse and OpenInference viewers read it: the
    total, and its prompt and completion parts when both are known.

    >>> cost_attributes(0.003, 0.001, 0.002)[c.LLM_COST_COMPLETION]
    0.002
    """
    cost = float(cost_usd)
    attrs: dict[str, Any] = {c.GEN_AI_USAGE_COST: cost, c.LLM_COST_TOTAL: cost}
    if input_cost_usd is not None and output_cost_usd is not None:
        attrs[c.LLM_COST_PROMPT] = float(input_cost_usd)
        attrs[c.LLM_COST_COMPLETION] = float(output_cost_usd)
    return attrs


def input_text(messages: Sequence[Mapping[str, object]] | None) -> str | None:
    """The text of the last user message (what a trace list shows as Input), if any.

    Content: call it only under the opt-in.
    """
    for message in reversed(messages or ()):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = [str(p.get("text", "")) for p in content
                     if isinstance(p, Mapping) and p.get("type") == "text"]
            return "\n".join(texts) if texts else None
    return None
