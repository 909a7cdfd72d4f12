"""The four wire formats: parse a request, shape an answer, shape an error.

Each protocol knows one provider's JSON: the request fields litellm sends, the
success body (ids, usage, stop reason) and the error body, with the messages and
codes the real provider uses, so that litellm maps them as it would for the real
thing. The HTTP plumbing lives in :mod:`amm.sim.server`, the shared parts in
:mod:`amm.sim.wire`, the tool-call and usage pieces streams reuse in
:mod:`amm.sim.parts`.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from amm.sim.behaviour import Decision, Fault, RateHeaders
from amm.sim.parts import (
    JSON_TOOL,
    anthropic_tool_results,
    anthropic_tool_use,
    either,
    function_responses,
    function_tool,
    gemini_function_call,
    gemini_usage,
    include_usage,
    ollama_tool_call,
    openai_tool_call,
    openai_tool_choice,
)
from amm.sim.text import count_tokens
from amm.sim.wire import (
    Answer,
    ParsedRequest,
    ToolSpec,
    WireError,
    WireProtocol,
    bearer,
    chat_request,
    json_object,
    rand_id,
    text_of,
    tool_specs,
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
        request = chat_request(data, None, max_tokens, bearer(headers))
        fmt = data.get("response_format")
        fmt = fmt if isinstance(fmt, dict) else {}
        schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" \
            else None
        return dataclasses.replace(
            request, tools=tuple(tool_specs(data.get("tools"), function_tool)),
            tool_choice=openai_tool_choice(data.get("tool_choice")),
            json_mode=fmt.get("type") in ("json_object", "json_schema"),
            json_schema=schema if isinstance(schema, dict) else None,
            stream=data.get("stream") is True, include_usage=include_usage(data))

    @staticmethod
    def finish_reason(answer: Answer) -> str:
        """``tool_calls``, ``length`` or ``stop``."""
        if answer.tool_calls:
            return "tool_calls"
        return "length" if answer.truncated else "stop"

    def success(self, decision: Decision, answer: Answer, rng: random.Random) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None}
        if answer.tool_calls:
            message["content"] = None
            message["tool_calls"] = [openai_tool_call(c) for c in answer.tool_calls]
        return {
            "id": f"chatcmpl-{rand_id(rng, 29)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": decision.model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": self.finish_reason(answer),
            }],
            "usage": {
                "prompt_tokens": answer.input_tokens,
                "completion_tokens": answer.output_tokens,
                "total_tokens": answer.input_tokens + answer.output_tokens,
            },
            "system_fingerprint": "fp_amm_sim",
        }

    def empty(self, decision: Decision, input_tokens: int, rng: random.Random) -> dict[str, Any]:
        return {**self.success(decision, Answer("", input_tokens, 0, False), rng), "choices": []}

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
        request = chat_request(data, data.get("system"), data.get("max_tokens"),
                               headers.get("x-api-key"), anthropic_tool_results)
        tools = tool_specs(data.get("tools"), lambda t: (t.get("name"), t.get("input_schema")))
        choice = data.get("tool_choice") or {}
        kind = choice.get("type") if isinstance(choice, dict) else None
        tool_choice = {"none": "none", "any": "required"}.get(str(kind)) or (
            choice.get("name") if kind == "tool" and isinstance(choice, dict) else None)
        # litellm asks for JSON through a forced tool; the answer is a call to it.
        json_tool = next((t for t in tools if t.name == JSON_TOOL), None)
        if json_tool is not None:
            tools.remove(json_tool)
            tool_choice = None if tool_choice == JSON_TOOL else tool_choice
        return dataclasses.replace(
            request, tools=tuple(tools), tool_choice=tool_choice,
            json_mode=json_tool is not None,
            json_schema=json_tool.parameters if json_tool is not None else None,
            json_tool=JSON_TOOL if json_tool is not None else None,
            stream=data.get("stream") is True)

    @staticmethod
    def stop_reason(answer: Answer) -> str:
        """``tool_use``, ``max_tokens`` or ``end_turn``."""
        if answer.tool_calls:
            return "tool_use"
        return "max_tokens" if answer.truncated else "end_turn"

    def success(self, decision: Decision, answer: Answer, rng: random.Random) -> dict[str, Any]:
        content: list[dict[str, Any]] = [anthropic_tool_use(c) for c in answer.tool_calls]
        if answer.text or not content:
            content.insert(0, {"type": "text", "text": answer.text})
        return {
            "id": f"msg_01{rand_id(rng, 22)}",
            "type": "message",
            "role": "assistant",
            "model": decision.model,
            "content": content,
            "stop_reason": self.stop_reason(answer),
            "stop_sequence": None,
            "usage": {"input_tokens": answer.input_tokens,
                      "output_tokens": answer.output_tokens},
        }

    def empty(self, decision: Decision, input_tokens: int, rng: random.Random) -> dict[str, Any]:
        return {**self.success(decision, Answer("", input_tokens, 0, False), rng), "content": []}

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
    """``POST /api/chat``, no auth unless the profile sets a key. A request without
    ``stream: true`` gets one JSON body (Ollama itself streams unless told not to)."""

    name = "ollama"
    usage_keys = ("prompt_eval_count", "eval_count", "prompt_eval_duration", "eval_duration")

    def parse(self, body: bytes, headers: Mapping[str, str], path_model: str | None,
              query: Mapping[str, str]) -> ParsedRequest:
        data = json_object(body)
        options = data.get("options") or {}
        request = chat_request(data, data.get("system"), options.get("num_predict"),
                               bearer(headers))
        fmt = data.get("format")
        return dataclasses.replace(
            request, tools=tuple(tool_specs(data.get("tools"), function_tool)),
            json_mode=fmt == "json" or isinstance(fmt, dict),
            json_schema=fmt if isinstance(fmt, dict) else None, stream=data.get("stream") is True)

    def success(self, decision: Decision, answer: Answer, rng: random.Random) -> dict[str, Any]:
        total_ns = int(decision.delay_s * 1e9)
        message: dict[str, Any] = {"role": "assistant", "content": answer.text}
        if answer.tool_calls:
            message["tool_calls"] = [ollama_tool_call(c) for c in answer.tool_calls]
        return {
            "model": decision.model,
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "message": message,
            "done_reason": "length" if answer.truncated else "stop",
            "done": True,
            "total_duration": total_ns,
            "load_duration": 0,
            "prompt_eval_count": answer.input_tokens,
            "prompt_eval_duration": total_ns // 4,
            "eval_count": answer.output_tokens,
            "eval_duration": total_ns - total_ns // 4,
        }

    def empty(self, decision: Decision, input_tokens: int, rng: random.Random) -> dict[str, Any]:
        # Ollama has no list of choices: its empty answer is an empty message.
        return self.success(decision, Answer("", input_tokens, 0, False), rng)

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
    """``POST /v1beta/models/<model>:generateContent`` (or ``:streamGenerateContent?alt=sse``),
    ``x-goog-api-key`` header; fields in camelCase or snake_case, as clients send both."""

    name = "google"
    _STATUS: ClassVar[dict[int, str]] = {
        400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
        404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }

    def parse(self, body: bytes, headers: Mapping[str, str], path_model: str | None,
              query: Mapping[str, str]) -> ParsedRequest:
        model, _, action = (path_model or "").rpartition(":")
        if not model:
            raise WireError("the model must be in the path: models/<model>:generateContent")
        if action not in ("generateContent", "streamGenerateContent"):
            raise WireError(f"unsupported method {action!r}: the simulator serves "
                            "generateContent and streamGenerateContent")
        stream = action == "streamGenerateContent"
        if stream and query.get("alt") != "sse":
            raise WireError("streamGenerateContent: the simulator streams with alt=sse only")
        data = json_object(body)
        contents = data.get("contents")
        if not isinstance(contents, list) or not contents:
            raise WireError("'contents' must be a non-empty list")
        system = data.get("systemInstruction") or data.get("system_instruction") or {}
        texts = [text_of(system.get("parts"))] if isinstance(system, dict) else []
        prompt = ""
        results: list[str] = []
        turns = 0
        for content in contents:
            if not isinstance(content, dict):
                raise WireError("each item of 'contents' must be an object")
            text = text_of(content.get("parts"))
            texts.append(text)
            found = function_responses(content.get("parts"))
            turns += bool(found)
            results.extend(found)
            texts.extend(found)
            if text and content.get("role", "user") == "user":
                prompt = text
        config = either(data, "generationConfig", "generation_config") or {}
        max_tokens = either(config, "maxOutputTokens", "max_output_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise WireError(f"max_output_tokens must be a positive integer, got {max_tokens!r}")
        schema = (either(config, "responseJsonSchema", "response_json_schema")
                  or either(config, "responseSchema", "response_schema"))
        key = headers.get("x-goog-api-key") or query.get("key")
        return ParsedRequest(
            model, prompt, sum(count_tokens(t) for t in texts), max_tokens, key,
            tools=tuple(self._tools(data)), tool_choice=self._tool_choice(data),
            tool_turns=turns, tool_results=tuple(results),
            json_mode=either(config, "responseMimeType", "response_mime_type")
            == "application/json",
            json_schema=schema if isinstance(schema, dict) else None, stream=stream)

    @staticmethod
    def _tools(data: dict[str, Any]) -> list[ToolSpec]:
        groups = data.get("tools") or []
        if not isinstance(groups, list):
            raise WireError("'tools' must be a list")
        declarations = [d for g in groups if isinstance(g, dict)
                        for d in either(g, "functionDeclarations", "function_declarations") or []]
        return tool_specs(declarations, lambda d: (d.get("name"), d.get("parameters")))

    @staticmethod
    def _tool_choice(data: dict[str, Any]) -> str | None:
        config = either(data, "toolConfig", "tool_config") or {}
        calling = either(config, "functionCallingConfig", "function_calling_config") or {}
        mode = str(calling.get("mode", "AUTO")).upper()
        names = either(calling, "allowedFunctionNames", "allowed_function_names") or []
        if mode == "NONE":
            return "none"
        if mode == "ANY":
            return names[0] if len(names) == 1 else "required"
        return None

    @staticmethod
    def finish_reason(answer: Answer) -> str:
        """``MAX_TOKENS`` or ``STOP`` (Gemini ends a function call with STOP too)."""
        return "MAX_TOKENS" if answer.truncated else "STOP"

    def success(self, decision: Decision, answer: Answer, rng: random.Random) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [gemini_function_call(c) for c in answer.tool_calls]
        if answer.text or not parts:
            parts.insert(0, {"text": answer.text})
        return {
            "candidates": [{
                "content": {"parts": parts, "role": "model"},
                "finishReason": self.finish_reason(answer),
                "index": 0,
            }],
            "usageMetadata": gemini_usage(answer.input_tokens, answer.output_tokens),
            "modelVersion": decision.model,
            "responseId": rand_id(rng, 22),
        }

    usage_keys = ("usageMetadata",)

    def empty(self, decision: Decision, input_tokens: int, rng: random.Random) -> dict[str, Any]:
        return {**self.success(decision, Answer("", input_tokens, 0, False), rng),
                "candidates": []}

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
