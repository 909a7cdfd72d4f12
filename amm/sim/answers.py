"""What the simulated model says to one request: tool calls, a JSON document or text.

The choice, in order: tool calls while the request declares tools, does not turn
them off and the conversation holds fewer tool-result turns than the profile's
``tool_rounds``; a JSON document when the request asks for JSON and the profile
supports it; otherwise text, which mentions the tool results when there are some.
Everything is drawn from the request's RNG, so a seeded simulator repeats itself.
"""

from __future__ import annotations

import json
import random
from typing import Any

from amm.sim.behaviour import Decision
from amm.sim.profile import ModelProfile
from amm.sim.schema import instance_of
from amm.sim.text import count_tokens, generate_text, key_terms, truncate_tokens
from amm.sim.wire import Answer, ParsedRequest, ToolCall, ToolSpec, rand_id

__all__ = ["compose"]

_RESULT_QUOTE_CHARS = 80
"""How much of each tool result the final text quotes."""


def compose(request: ParsedRequest, profile: ModelProfile, decision: Decision,
            rng: random.Random) -> Answer:
    """The answer ``profile``'s model gives to ``request``."""
    terms = key_terms(request.prompt) or ["value"]
    tools = _tools_to_call(request, profile)
    if tools:
        calls = tuple(ToolCall(rand_id(rng, 24), tool.name, _arguments(tool, terms))
                      for tool in tools)
        return Answer("", request.prompt_tokens, sum(c.tokens for c in calls), False, calls)
    if request.json_mode and profile.json_support:
        document = (instance_of(request.json_schema, terms) if request.json_schema is not None
                    else _generic_document(request, decision, rng, terms))
        if request.json_tool is not None:
            call = ToolCall(rand_id(rng, 24), request.json_tool,
                            document if isinstance(document, dict) else {"value": document})
            return Answer("", request.prompt_tokens, call.tokens, False, (call,))
        return _text_answer(json.dumps(document), request)
    text = generate_text(request.prompt, good=decision.good, rng=rng)
    if request.tool_results:
        quoted = "; ".join(r.strip()[:_RESULT_QUOTE_CHARS] for r in request.tool_results)
        text += f"\nAccording to the tool results: {quoted}."
    return _text_answer(text, request)


def _tools_to_call(request: ParsedRequest, profile: ModelProfile) -> list[ToolSpec]:
    tools = list(request.tools)
    if not tools or request.tool_choice == "none":
        return []
    if request.tool_turns >= profile.tool_rounds:
        return []
    forced = [t for t in tools if t.name == request.tool_choice]
    if forced:
        return forced
    return tools if profile.parallel_tool_calls else tools[:1]


def _arguments(tool: ToolSpec, terms: list[str]) -> dict[str, Any]:
    value = instance_of(tool.parameters, terms)
    # Providers always send an object of arguments, even for a schema-less tool.
    return value if isinstance(value, dict) else {}


def _generic_document(request: ParsedRequest, decision: Decision, rng: random.Random,
                      terms: list[str]) -> dict[str, Any]:
    text = generate_text(request.prompt, good=decision.good, rng=rng)
    return {"answer": text.splitlines()[0], "topics": terms[:3]}


def _text_answer(text: str, request: ParsedRequest) -> Answer:
    truncated = False
    if request.max_tokens is not None:
        text, truncated = truncate_tokens(text, request.max_tokens)
    return Answer(text, request.prompt_tokens, count_tokens(text), truncated)
