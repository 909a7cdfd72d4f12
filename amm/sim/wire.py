"""What every simulated protocol shares: the parsed request, the answer, the base
class with OpenAI's rate-limit headers, request parsing helpers and error wording.

The four providers' formats are in :mod:`amm.sim.protocols`.
"""

from __future__ import annotations

import abc
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from amm.sim.behaviour import Decision, Fault, RateHeaders
from amm.sim.text import count_tokens

__all__ = [
    "Answer",
    "ParsedRequest",
    "WireError",
    "WireProtocol",
    "bearer",
    "chat_request",
    "error_message",
    "json_object",
    "rand_id",
    "text_of",
]

_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class WireError(ValueError):
    """The request body is not what the protocol expects (answered 400)."""


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """What the simulator needs from a request, whatever its protocol."""

    model: str
    prompt: str
    prompt_tokens: int
    max_tokens: int | None
    api_key: str | None


@dataclass(frozen=True, slots=True)
class Answer:
    """The generated text and its accounting."""

    text: str
    input_tokens: int
    output_tokens: int
    truncated: bool


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


def chat_request(data: dict[str, Any], system: Any, max_tokens: Any,
                 key: str | None) -> ParsedRequest:
    """The common shape: ``model`` plus ``messages`` with role/content."""
    model = data.get("model")
    messages = data.get("messages")
    if not isinstance(model, str) or not model:
        raise WireError("'model' is required")
    if not isinstance(messages, list) or not messages:
        raise WireError("'messages' must be a non-empty list")
    texts = [text_of(system)] if system else []
    prompt = ""
    for message in messages:
        if not isinstance(message, dict):
            raise WireError("each message must be an object")
        text = text_of(message.get("content"))
        texts.append(text)
        if message.get("role") == "user":
            prompt = text
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise WireError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    return ParsedRequest(model, prompt or "\n".join(texts),
                         sum(count_tokens(t) for t in texts), max_tokens, key)


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
                f"However, your messages resulted in {decision.prompt_tokens} tokens. Please reduce "
                f"the length of the messages.")
    return "The server had an error while processing your request. Sorry about that!"
