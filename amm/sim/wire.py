"""What every simulated protocol shares: the parsed request, the answer, the base
class with OpenAI's rate-limit headers, request parsing helpers and error wording.

The four providers' formats are in :mod:`amm.sim.protocols`.
"""

from __future__ import annotations

import abc
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from amm.sim.behaviour import Decision, Fault, RateHeaders
from amm.sim.text import count_tokens

__all__ = [
    "Answer",
    "ParsedRequest",
    "ToolCall",
    "ToolSpec",
    "WireError",
    "WireProtocol",
    "bearer",
    "chat_request",
    "error_message",
    "json_object",
    "rand_id",
    "text_of",
    "tool_specs",
]

_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class WireError(ValueError):
    """The request body is not what the protocol expects (answered 400)."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the request declares: its name and its parameters' JSON schema."""

    name: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the simulated model makes. ``key`` is random letters that each
    protocol prefixes its own way (``call_``, ``toolu_01``)."""

    key: str
    name: str
    arguments: Mapping[str, Any]

    @property
    def arguments_json(self) -> str:
        """The arguments as the JSON text OpenAI and Anthropic streams carry."""
        return json.dumps(self.arguments)

    @property
    def tokens(self) -> int:
        """Output tokens the call is billed: its name and its serialized arguments."""
        return count_tokens(self.name) + count_tokens(self.arguments_json)


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """What the simulator needs from a request, whatever its protocol.

    ``tool_choice`` is ``None`` for auto, ``"none"``, ``"required"`` or the name of
    the tool the request forces. ``tool_turns`` counts the tool-result turns in the
    conversation, ``tool_results`` their texts. ``json_mode`` asks for JSON output,
    ``json_schema`` is its schema if any; ``json_tool`` names the tool through which
    the answer must be given (litellm's Anthropic JSON mode, ``json_tool_call``).
    """

    model: str
    prompt: str
    prompt_tokens: int
    max_tokens: int | None
    api_key: str | None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str | None = None
    tool_turns: int = 0
    tool_results: tuple[str, ...] = ()
    json_mode: bool = False
    json_schema: Mapping[str, Any] | None = None
    json_tool: str | None = None
    stream: bool = False
    include_usage: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    """What the model says, text or tool calls, and its accounting."""

    text: str
    input_tokens: int
    output_tokens: int
    truncated: bool
    tool_calls: tuple[ToolCall, ...] = ()


def text_of(content: Any) -> str:
    """Text of a message content: a string, or a list of text parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content
                         if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def bearer(headers: Mapping[str, str]) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, if any."""
    value = headers.get("Authorization", "")
    return value[7:] if value.startswith("Bearer ") else None


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or :class:`WireError`."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise WireError("request body must be a JSON object")
    return data


def _role_tool_results(message: dict[str, Any]) -> list[str] | None:
    """OpenAI's and Ollama's tool results: a message of role ``tool``."""
    if message.get("role") != "tool":
        return None
    return [text_of(message.get("content"))]


def chat_request(data: dict[str, Any], system: Any, max_tokens: Any, key: str | None,
                 tool_results_of: Callable[[dict[str, Any]], list[str] | None]
                 = _role_tool_results) -> ParsedRequest:
    """The common shape: ``model`` plus ``messages`` with role/content.

    ``tool_results_of`` returns a message's tool results, or ``None`` when it holds
    none; consecutive such messages make one tool-result turn.
    """
    model = data.get("model")
    messages = data.get("messages")
    if not isinstance(model, str) or not model:
        raise WireError("'model' is required")
    if not isinstance(messages, list) or not messages:
        raise WireError("'messages' must be a non-empty list")
    texts = [text_of(system)] if system else []
    prompt = ""
    results: list[str] = []
    turns = 0
    in_turn = False
    for message in messages:
        if not isinstance(message, dict):
            raise WireError("each message must be an object")
        text = text_of(message.get("content"))
        found = tool_results_of(message)
        if found is not None:
            turns += not in_turn
            results.extend(found)
            texts.extend(found)
        elif text and message.get("role") == "user":
            prompt = text
        in_turn = found is not None
        if text not in (found or ()):
            texts.append(text)
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise WireError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    return ParsedRequest(model, prompt or "\n".join(texts),
                         sum(count_tokens(t) for t in texts), max_tokens, key,
                         tool_turns=turns, tool_results=tuple(results))


def tool_specs(tools: Any, unwrap: Callable[[dict[str, Any]], tuple[Any, Any]]) -> list[ToolSpec]:
    """Declared tools from a request's list; ``unwrap`` gives a tool's (name, schema)."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise WireError("'tools' must be a list")
    specs = []
    for tool in tools:
        if not isinstance(tool, dict):
            raise WireError("each tool must be an object")
        name, schema = unwrap(tool)
        if not isinstance(name, str) or not name:
            raise WireError("each tool needs a name")
        specs.append(ToolSpec(name, schema if isinstance(schema, dict) else {}))
    return specs


def rand_id(rng: random.Random, n: int) -> str:
    """``n`` random letters and digits, as providers' ids use."""
    return "".join(rng.choice(_ID_CHARS) for _ in range(n))


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``120ms``, ``12.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 1):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest):d}s"


class WireProtocol(abc.ABC):
    """One provider's formats. Subclasses fill in parse, success and error bodies."""

    name: ClassVar[str]

    @abc.abstractmethod
    def parse(self, body: bytes, headers: Mapping[str, str], path_model: str | None,
              query: Mapping[str, str]) -> ParsedRequest:
        """The request's model, prompt, token count, ``max_tokens`` and API key."""
        ...

    @abc.abstractmethod
    def success(self, decision: Decision, answer: Answer, rng: random.Random) -> dict[str, Any]:
        """The provider's 200 body."""
        ...

    @abc.abstractmethod
    def error(self, decision: Decision, message: str) -> dict[str, Any]:
        """The provider's error body for ``decision.fault``."""
        ...

    def headers(self, decision: Decision, rng: random.Random) -> dict[str, str]:
        """Response headers: request id and rate-limit state (sent on every answer)."""
        out = {"x-request-id": f"req_{rand_id(rng, 24)}"}
        rate = decision.rate
        if rate is not None:
            out.update(self.rate_headers(rate))
        return out

    def rate_headers(self, rate: RateHeaders) -> dict[str, str]:
        """OpenAI's request-window headers, which every simulated protocol sends."""
        out = {
            "x-ratelimit-limit-requests": str(rate.limit),
            "x-ratelimit-remaining-requests": str(rate.remaining),
            "x-ratelimit-reset-requests": _duration(rate.reset_s),
        }
        if rate.retry_after_s is not None:
            out["retry-after"] = f"{rate.retry_after_s:g}"
        return out

    def malformed(self, decision: Decision) -> bytes:
        """A 200 body cut off mid-JSON (a proxy or the provider failing mid-answer)."""
        return b'{"id": "broken", "choices": [{"message": {"content": "cut off he'

    @abc.abstractmethod
    def empty(self, decision: Decision, input_tokens: int, rng: random.Random) -> dict[str, Any]:
        """A 200 body with nothing in it: no choice, no content block, no candidate."""
        ...

    usage_keys: ClassVar[tuple[str, ...]] = ("usage",)
    """The body's top-level usage fields, left out of a ``missing_usage`` answer."""

    def quote(self, body: dict[str, Any], note: str) -> dict[str, Any]:
        """``body`` (an error answer) with ``note`` appended to its message."""
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return {**body, "error": {**error, "message": f"{error['message']} {note}"}}
        if isinstance(error, str):
            return {**body, "error": f"{error} {note}"}
        return body


def error_message(decision: Decision) -> str:
    """Provider-neutral wording; protocols with known wording override per fault."""
    fault, model = decision.fault, decision.model
    if fault is Fault.NOT_FOUND:
        return f"The model `{model}` does not exist or you do not have access to it."
    if fault is Fault.AUTH:
        return "Incorrect API key provided."
    if fault is Fault.FORBIDDEN:
        return f"You are not allowed to use the model `{model}`."
    if fault is Fault.QUOTA:
        return ("You exceeded your current quota, please check your plan and billing "
                "details.")
    if fault is Fault.RATE_LIMIT:
        rate = decision.rate
        limit = rate.limit if rate else 0
        wait = rate.retry_after_s if rate else 1
        return (f"Rate limit reached for {model} on requests per min (RPM): Limit {limit}, "
                f"Used {limit}, Requested 1. Please try again in {wait:g}s.")
    if fault is Fault.UNAVAILABLE:
        return "The server is overloaded or not ready yet."
    if fault is Fault.CONTEXT:
        return (f"This model's maximum context length is {decision.max_context} tokens. "
                f"However, your messages resulted in {decision.prompt_tokens} tokens. "
                "Please reduce the length of the messages.")
    return "The server had an error while processing your request. Sorry about that!"
