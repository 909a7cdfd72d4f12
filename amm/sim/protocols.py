"""The four wire formats: parse a request, shape an answer, shape an error.

Each protocol knows one provider's JSON: the request fields litellm sends, the
success body (ids, usage, stop reason) and the error body, with the messages and
codes the real provider uses, so that litellm maps them as it would for the real
thing. The HTTP plumbing lives in :mod:`amm.sim.server`, the shared parts in
:mod:`amm.sim.wire`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from amm.sim.behaviour import Decision, Fault, RateHeaders
from amm.sim.text import count_tokens
from amm.sim.wire import (
    Answer,
    ParsedRequest,
    WireError,
    WireProtocol,
    bearer,
    chat_request,
    json_object,
    rand_id,
    text_of,
)

__all__ = [
    "PROTOCOL_CLASSES",
    "AnthropicProtocol",
    "GoogleProtocol",
    "OllamaProtocol",
    "OpenAIProtocol",
]


class OpenAIProtocol(WireProtocol):
    """``POST /v1/chat/completions``, Bearer auth."""

    name = "openai"
    _ERROR_KIND: ClassVar[dict[Fault, tuple[str, str | None]]] = {
        Fault.NOT_FOUND: ("invalid_request_error", "model_not_found"),
        Fault.AUTH: ("invalid_request_error", "invalid_api_key"),
        Fault.FORBIDDEN: ("invalid_request_error", "model_access_denied"),
        Fault.QUOTA: ("insufficient_quota", "insufficient_quota"),
        Fault.RATE_LIMIT: ("requests", "rate_limit_exceeded"),
        Fault.UNAVAILABLE: ("server_error", None),
        Fault.SERVER_ERROR: ("server_error", None),
        Fault.CONTEXT: ("invalid_request_error", "context_length_exceeded"),
        Fault.BAD_REQUEST: ("invalid_request_error", None),
    }

    def parse(self, body: bytes, headers: Mapping[str, str], path_model: str | None,
              query: Mapping[str, str]) -> ParsedRequest:
        data = json_object(body)
        max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
        return chat_request(data, None, max_tokens, bearer(headers))

    def success(self, decision: Decision, answer: Answer, rng: random.Random) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{rand_id(rng, 29)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": decision.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer.text, "refusal": None},
                "logprobs": None,
                "finish_reason": "length" if answer.truncated else "stop",
            }],
            "usage": {
                "prompt_tokens": answer.input_tokens,
                "completion_tokens": answer.output_tokens,
                "total_tokens": answer.input_tokens + answer.output_tokens,
            },
            "system_fingerprint": "fp_amm_sim",
        }

    def error(self, decision: Decision, message: str) -> dict[str, Any]:
        kind, code = self._ERROR_KIND[decision.fault or Fault.SERVER_ERROR]
        param = "messages" if decision.fault is Fault.CONTEXT else None
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class AnthropicProtocol(WireProtocol):
    """``POST /v1/messages``, ``x-api-key`` and ``anthropic-version`` headers."""

    name = "anthropic"
    _ERROR_TYPE: ClassVar[dict[Fault, str]] = {
        Fault.NOT_FOUND: "not_found_error",
        Fault.AUTH: "authentication_error",
        Fault.FORBIDDEN: "permission_error",
        # Anthropic signals an empty balance as a billing error; the message keeps
        # OpenAI's code word so one check recognises a permanent quota on every protocol.
        Fault.QUOTA: "billing_error",
        Fault.RATE_LIMIT: "rate_limit_error",
        Fault.UNAVAILABLE: "api_error",
        Fault.SERVER_ERROR: "api_error",
        Fault.CONTEXT: "invalid_request_error",
        Fault.BAD_REQUEST: "invalid_request_error",
    }

    def parse(self, body: bytes, headers: Mapping[str, str], path_model: str | None,
              query: Mapping[str, str]) -> ParsedRequest:
        if "anthropic-version" not in headers:
            raise WireError("anthropic-version: header is required")
        data = json_object(body)
        return chat_request(data, data.get("system"), data.get("max_tokens"), headers.get("x-api-key"))

    def success(self, decision: Decision, answer: Answer, rng: random.Random) -> dict[str, Any]:
        return {
            "id": f"msg_01{rand_id(rng, 22)}",
            "type": "message",
            "role": "assistant",
            "model": decision.model,
            "content": [{"type": "text", "text": answer.text}],
            "stop_reason": "max_tokens" if answer.truncated else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": answer.input_tokens,
                      "output_tokens": answer.output_tokens},
        }

    def error(self, decision: Decision, message: str) -> dict[str, Any]:
        fault = decision.fault or Fault.SERVER_ERROR
        if fault is Fault.NOT_FOUND:
            message = f"model: {decision.model}"
        elif fault is Fault.AUTH:
            message = "invalid x-api-key"
        elif fault is Fault.CONTEXT:
            message = (f"prompt is too long: {decision.prompt_tokens} tokens > "
                       f"{decision.max_context} maximum")
        elif fault is Fault.QUOTA:
            message = ("insufficient_quota: Your credit balance is too low to access the "
                       "Anthropic API.")
        elif decision.status == 529:
            # Anthropic's own overload answer; litellm maps it to InternalServerError.
            return {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        elif fault is Fault.UNAVAILABLE:
            message = "Service Unavailable"
        return {"type": "error", "error": {"type": self._ERROR_TYPE[fault], "message": message}}

    def rate_headers(self, rate: RateHeaders) -> dict[str, str]:
        reset_at = datetime.now(UTC) + timedelta(seconds=rate.reset_s)
        out = super().rate_headers(rate)
        out.update({
            "anthropic-ratelimit-requests-limit": str(rate.limit),
            "anthropic-ratelimit-requests-remaining": str(rate.remaining),
            "anthropic-ratelimit-requests-reset": reset_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        })
        return out


class OllamaProtocol(WireProtocol):
    """``POST /api/chat`` (non-streaming), no auth unless the profile sets a key."""

    name = "ollama"

    def parse(self, body: bytes, headers: Mapping[str, str], path_model: str | None,
              query: Mapping[str, str]) -> ParsedRequest:
        data = json_object(body)
        if data.get("stream"):
            raise WireError("streaming is not supported by the simulator; send stream: false")
        options = data.get("options") or {}
        return chat_request(data, data.get("system"), options.get("num_predict"), bearer(headers))

    def success(self, decision: Decision, answer: Answer, rng: random.Random) -> dict[str, Any]:
        total_ns = int(decision.delay_s * 1e9)
        return {
            "model": decision.model,
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "message": {"role": "assistant", "content": answer.text},
            "done_reason": "length" if answer.truncated else "stop",
            "done": True,
            "total_duration": total_ns,
            "load_duration": 0,
            "prompt_eval_count": answer.input_tokens,
            "prompt_eval_duration": total_ns // 4,
            "eval_count": answer.output_tokens,
            "eval_duration": total_ns - total_ns // 4,
        }

    def error(self, decision: Decision, message: str) -> dict[str, Any]:
        fault = decision.fault
        if fault is Fault.NOT_FOUND:
            message = f'model "{decision.model}" not found, try pulling it first'
        elif fault is Fault.UNAVAILABLE:
            message = "server busy, please try again.  maximum pending requests exceeded"
        elif fault is Fault.QUOTA:
            message = f"insufficient_quota: {message}"
        return {"error": message}


class GoogleProtocol(WireProtocol):
    """``POST /v1beta/models/<model>:generateContent``, ``x-goog-api-key`` header."""

    name = "google"
    _STATUS: ClassVar[dict[int, str]] = {
        400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
        404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }

    def parse(self, body: bytes, headers: Mapping[str, str], path_model: str | None,
              query: Mapping[str, str]) -> ParsedRequest:
        if not path_model:
            raise WireError("the model must be in the path: models/<model>:generateContent")
        data = json_object(body)
        contents = data.get("contents")
        if not isinstance(contents, list) or not contents:
            raise WireError("'contents' must be a non-empty list")
        system = data.get("systemInstruction") or data.get("system_instruction") or {}
        texts = [text_of(system.get("parts"))] if isinstance(system, dict) else []
        prompt = ""
        for content in contents:
            if not isinstance(content, dict):
                raise WireError("each item of 'contents' must be an object")
            text = text_of(content.get("parts"))
            texts.append(text)
            if content.get("role", "user") == "user":
                prompt = text
        config = data.get("generationConfig") or {}
        max_tokens = config.get("maxOutputTokens", config.get("max_output_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise WireError(f"max_output_tokens must be a positive integer, got {max_tokens!r}")
        key = headers.get("x-goog-api-key") or query.get("key")
        return ParsedRequest(path_model, prompt, sum(count_tokens(t) for t in texts),
                             max_tokens, key)

    def success(self, decision: Decision, answer: Answer, rng: random.Random) -> dict[str, Any]:
        return {
            "candidates": [{
                "content": {"parts": [{"text": answer.text}], "role": "model"},
                "finishReason": "MAX_TOKENS" if answer.truncated else "STOP",
                "index": 0,
            }],
            "usageMetadata": {
                "promptTokenCount": answer.input_tokens,
                "candidatesTokenCount": answer.output_tokens,
                "totalTokenCount": answer.input_tokens + answer.output_tokens,
            },
            "modelVersion": decision.model,
            "responseId": rand_id(rng, 22),
        }

    def error(self, decision: Decision, message: str) -> dict[str, Any]:
        fault = decision.fault
        details: list[dict[str, Any]] = []
        if fault is Fault.NOT_FOUND:
            message = (f"models/{decision.model} is not found for API version v1beta, or is "
                       f"not supported for generateContent.")
        elif fault is Fault.AUTH:
            message = "API key not valid. Please pass a valid API key."
        elif fault is Fault.UNAVAILABLE:
            message = "The model is overloaded. Please try again later."
        elif fault is Fault.QUOTA:
            message = f"{message} (insufficient_quota)"
            details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "insufficient_quota"})
        elif fault is Fault.RATE_LIMIT and decision.rate is not None:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": f"{decision.rate.retry_after_s:g}s"})
        elif fault is Fault.CONTEXT:
            message = (f"The input token count ({decision.prompt_tokens}) exceeds the maximum "
                       f"number of tokens allowed ({decision.max_context}).")
        body: dict[str, Any] = {"code": decision.status, "message": message,
                                "status": self._STATUS.get(decision.status, "UNKNOWN")}
        if details:
            body["details"] = details
        return {"error": body}

    def malformed(self, decision: Decision) -> bytes:
        return b'{"candidates": [{"content": {"parts": [{"text": "cut off he'


PROTOCOL_CLASSES: dict[str, type[WireProtocol]] = {
    cls.name: cls for cls in (OpenAIProtocol, AnthropicProtocol, OllamaProtocol, GoogleProtocol)
}
"""Protocol name -> its class, in :data:`amm.sim.profile.PROTOCOLS` order."""
