"""Value objects of amm: the seed's data models and the few it uses without describing.

"The seed" is the API reference amm implements (``docs/seed.md`` says what it is, where
it lives and how its names map to amm's).

Every record is a frozen dataclass with ``slots``: cheap to build on the hot path,
safe to share between tasks, and never a dict passed around as a record. Mutable
defaults use ``default_factory`` (the seed's ``= []`` is prose, not code). Change a
record with :func:`dataclasses.replace`.

Validation that a caller can get wrong (an empty prompt, a negative ``max_tokens``)
raises :class:`amm.errors.InvalidRequestError` at construction, so a bad request
never reaches selection.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from amm.errors import InvalidRequestError, InvalidToolCallError

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "BudgetStatus",
    "CachedResponse",
    "ErrorResponse",
    "Experiment",
    "FailoverReason",
    "HealthStatus",
    "ModelAvailability",
    "ModelMetadata",
    "ModelRequest",
    "ModelResponse",
    "ModelSelection",
    "PerformanceDegradation",
    "PerformanceMetrics",
    "Priority",
    "ProviderAdapter",
    "QualityScore",
    "RateLimitInfo",
    "RateLimitStatus",
    "RateLimits",
    "SelectionConstraints",
    "TokenUsage",
    "ToolCall",
    "estimate_tokens",
    "utcnow",
]


def estimate_tokens(text: str) -> int:
    """``ceil(len(text) / 4)``: amm's one token estimate, for budgets and limits before a
    provider counts, and for usage a provider did not report."""
    return (len(text) + 3) // 4


DEFAULT_OUTPUT_TOKENS = 1024
"""``max_tokens`` for a request that sets none: what the built-in adapter sends, and so
the output amm assumes before a call (cost estimates in selection and budget holds,
rate-limit reservations)."""


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (every timestamp amm makes is)."""
    return datetime.now(UTC)


class Priority(enum.StrEnum):
    """Task priority: HIGH weights capability and quality up, LOW weights cost up."""

    # Upper-case values: the seed compares ``task.priority == "HIGH"``.
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"

    @classmethod
    def parse(cls, value: object) -> Priority:
        """Accept a Priority, or its name/value in any case (``"HIGH"``, ``"low"``)."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            try:
                return cls(value.upper())
            except ValueError:
                pass
        raise InvalidRequestError(
            f"priority must be one of high, medium, low; got {value!r}",
            error_type="invalid_priority",
        )


class FailoverReason(enum.StrEnum):
    """Why a request left a model for another one."""

    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"
    ERROR = "error"
    TIMEOUT = "timeout"
    LOW_QUALITY = "low_quality"
    AUTHENTICATION = "authentication"
    MODEL_NOT_FOUND = "model_not_found"
    CONTEXT_TOO_LONG = "context_too_long"
    QUOTA_EXCEEDED = "quota_exceeded"
    BUDGET = "budget"


@dataclass(frozen=True, slots=True)
class RateLimits:
    """A provider's published limits for one model."""

    requests_per_minute: int
    tokens_per_minute: int


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """Metadata for an AI model, as the registry holds it.

    ``litellm_model`` and ``api_base`` say where litellm sends the request; the
    registry fills ``litellm_model`` from the provider when the config leaves it out.
    ``supports_tools`` / ``supports_streaming`` / ``supports_response_schema`` say what
    the model can honour; selection excludes a model that cannot honour a request.
    """

    id: str
    provider: str
    name: str
    capabilities: list[str]
    cost_per_1k_input_tokens: float
    cost_per_1k_output_tokens: float
    rate_limits: RateLimits
    context_window: int
    average_response_time_ms: float
    enabled: bool = True
    litellm_model: str | None = None
    api_base: str | None = None
    supports_tools: bool = field(default=False, kw_only=True)
    supports_streaming: bool = field(default=True, kw_only=True)
    supports_response_schema: bool = field(default=False, kw_only=True)

    def estimate_cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for the given token counts at this model's prices."""
        return (
            input_tokens * self.cost_per_1k_input_tokens
            + output_tokens * self.cost_per_1k_output_tokens
        ) / 1000.0


@dataclass(frozen=True, slots=True)
class Experiment:
    """An A/B experiment: one agent type's traffic split between models by weight."""

    name: str
    agent_type: str
    arms: Mapping[str, float]
    enabled: bool = True


_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_ON_INVALID = frozenset({"return", "failover", "raise"})
_MAX_OUTPUT_TOKENS = 10_000_000
"""No model answers with more tokens than this; a larger ``max_tokens`` is a mistake."""


def _bad(message: str, task_id: str, error_type: str) -> InvalidRequestError:
    return InvalidRequestError(message, task_id=task_id or None, error_type=error_type)


def _check_text(value: str, where: str, task_id: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _bad(f"{where}: not valid Unicode text ({exc.reason} at {exc.start})", task_id,
                   "invalid_text") from None


def _check_content(content: Any, where: str, task_id: str) -> None:
    """A message content: text, or a list of parts (``{"type": "text", "text": ...}``...)."""
    if isinstance(content, str):
        _check_text(content, where, task_id)
        return
    if isinstance(content, list) and content:
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
                raise _bad(f"{where}[{j}]: a content part must be a mapping with a 'type'",
                           task_id, "invalid_messages")
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise _bad(f"{where}[{j}].text: must be a string", task_id, "invalid_messages")
                _check_text(part["text"], f"{where}[{j}].text", task_id)
        return
    raise _bad(f"{where}: must be a string or a non-empty list of content parts; "
               f"got {type(content).__name__}", task_id, "invalid_messages")


def _check_message(i: int, m: Any, task_id: str) -> None:
    """One chat message in the OpenAI shape (tool calls and tool results included)."""
    where = f"messages[{i}]"
    if not isinstance(m, Mapping):
        raise _bad(f"{where}: must be a mapping with 'role' and 'content'", task_id,
                   "invalid_messages")
    role = m.get("role")
    if role not in _ROLES:
        raise _bad(f"{where}.role: must be one of {', '.join(sorted(_ROLES))}; got {role!r}",
                   task_id, "invalid_messages")
    content = m.get("content")
    if role == "assistant" and m.get("tool_calls"):
        calls = m["tool_calls"]
        if not isinstance(calls, list) or not all(
            isinstance(c, Mapping) and isinstance(c.get("function"), Mapping) for c in calls
        ):
            raise _bad(f"{where}.tool_calls: must be a list of {{'id', 'type', 'function'}}",
                       task_id, "invalid_messages")
        if content is not None and content != "":
            _check_content(content, f"{where}.content", task_id)
        return
    if role == "tool" and not isinstance(m.get("tool_call_id"), str):
        raise _bad(f"{where}.tool_call_id: a tool message needs the id of the call it answers",
                   task_id, "invalid_messages")
    if "content" not in m:
        raise _bad(f"{where}: must be a mapping with 'role' and 'content'", task_id,
                   "invalid_messages")
    _check_content(content, f"{where}.content", task_id)


def _check_tools(tools: Any, tool_choice: Any, task_id: str) -> None:
    if tools is not None:
        if not isinstance(tools, Sequence) or isinstance(tools, str | bytes) or not tools:
            raise _bad("tools: must be a non-empty list of tool definitions", task_id,
                       "invalid_tools")
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, Mapping) else None
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise _bad(f"tools[{i}]: must be {{'type': 'function', 'function': {{'name', "
                           f"'parameters'}}}}", task_id, "invalid_tools")
            params = fn.get("parameters")
            if params is not None and not isinstance(params, Mapping):
                raise _bad(f"tools[{i}].function.parameters: must be a JSON schema object",
                           task_id, "invalid_tools")
    if tool_choice is None:
        return
    if isinstance(tool_choice, str):
        if tool_choice not in ("auto", "none", "required"):
            raise _bad(f"tool_choice: must be 'auto', 'none', 'required' or a function; "
                       f"got {tool_choice!r}", task_id, "invalid_tools")
        if tool_choice != "none" and tools is None:
            raise _bad(f"tool_choice={tool_choice!r} needs tools", task_id, "invalid_tools")
        return
    name = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, Mapping) else None
    declared = {t["function"]["name"] for t in tools or ()}
    if name not in declared:
        raise _bad(f"tool_choice: names {name!r}, which is not a declared tool", task_id,
                   "invalid_tools")


def _check_response_format(response_format: Any, task_id: str) -> None:
    if response_format is None:
        return
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise _bad("response_format: must be {'type': 'text' | 'json_object' | 'json_schema', ...}"
                   f"; got {response_format!r}", task_id, "invalid_response_format")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
            raise _bad("response_format.json_schema.schema: must be a JSON schema object",
                       task_id, "invalid_response_format")


def _str_list(value: Any, name: str, task_id: str) -> None:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not all(
            isinstance(v, str) and v for v in value):
        raise _bad(f"{name}: must be a list of model or provider names; got {value!r}",
                   task_id, "invalid_request")


def _check_call_options(r: ModelRequest, task_id: str) -> None:
    if r.model is not None and (not isinstance(r.model, str) or not r.model):
        raise _bad(f"model: must be a registry model id; got {r.model!r}", task_id,
                   "invalid_request")
    _str_list(r.fallbacks, "fallbacks", task_id)
    _str_list(r.exclude_models, "exclude_models", task_id)
    if r.fallbacks and r.model is None:
        raise _bad("fallbacks: only with model= (they say where a pinned call may fail over)",
                   task_id, "invalid_request")
    if r.providers is not None:
        _str_list(r.providers, "providers", task_id)
    t = r.timeout_s
    if t is not None and (isinstance(t, bool) or not isinstance(t, int | float)
                          or not 0 < t <= 86_400):
        raise _bad(f"timeout: must be seconds in (0, 86400]; got {t!r}", task_id,
                   "invalid_request")
    n = r.max_retries
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 100):
        raise _bad(f"max_retries: must be an integer in [0, 100]; got {n!r}", task_id,
                   "invalid_request")
    if not isinstance(r.cache, bool):
        raise _bad(f"cache: must be true or false; got {r.cache!r}", task_id, "invalid_request")
    md = r.metadata
    if md is not None and (not isinstance(md, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str | int | float | bool)
            for k, v in md.items())):
        raise _bad("metadata: must map string keys to strings, numbers or booleans", task_id,
                   "invalid_request")


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """Request to an AI model.

    Give ``prompt`` or chat ``messages`` in the OpenAI chat shape (assistant messages
    with ``tool_calls``, ``role: "tool"`` results with ``tool_call_id``, content as text
    or a list of parts). ``parameters`` may carry ``temperature`` (it wins over the
    field, as in the seed's examples) and ``priority``.

    Agent calls (keyword-only): ``tools`` and ``tool_choice`` in the OpenAI shape;
    ``response_format`` (``{"type": "json_schema", "json_schema": {"name", "schema"}}``
    or ``{"type": "json_object"}``); ``on_invalid`` says what an answer that breaks the
    schema does: ``"return"`` it (scored as a quality failure, the default),
    ``"failover"`` to the next model, or ``"raise"``. ``stream`` is set by
    ``ModelManager.stream`` (selection then needs a model that streams).

    Per-call control (keyword-only): ``model`` pins a registry model (failover only
    to the ``fallbacks`` listed); ``exclude_models`` and ``providers`` narrow the
    candidates; ``timeout_s`` bounds the whole call, failover included;
    ``max_retries`` overrides the retries per model; ``cache=False`` skips the
    cache; ``metadata`` (string keys and values) is recorded on the call's spans as
    ``amm.metadata.<key>`` (``session.id`` and ``user.id`` as themselves).

    >>> ModelRequest(prompt="Hi", parameters={}, task_id="t1", agent_type="research")
    """

    prompt: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    task_id: str = ""
    agent_type: str = ""
    max_tokens: int | None = None
    temperature: float = 0.7
    messages: Sequence[Mapping[str, Any]] | None = None
    priority: Priority | str | None = None
    tools: Sequence[Mapping[str, Any]] | None = field(default=None, kw_only=True)
    tool_choice: str | Mapping[str, Any] | None = field(default=None, kw_only=True)
    response_format: Mapping[str, Any] | None = field(default=None, kw_only=True)
    on_invalid: str = field(default="return", kw_only=True)
    stream: bool = field(default=False, kw_only=True)
    model: str | None = field(default=None, kw_only=True)
    fallbacks: Sequence[str] = field(default=(), kw_only=True)
    exclude_models: Sequence[str] = field(default=(), kw_only=True)
    providers: Sequence[str] | None = field(default=None, kw_only=True)
    timeout_s: float | None = field(default=None, kw_only=True)
    max_retries: int | None = field(default=None, kw_only=True)
    cache: bool = field(default=True, kw_only=True)
    metadata: Mapping[str, str] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        task = self.task_id if isinstance(self.task_id, str) else ""
        for name in ("task_id", "agent_type"):
            if not isinstance(getattr(self, name), str):
                raise _bad(f"{name}: must be a string; got {type(getattr(self, name)).__name__}",
                           task, "invalid_request")
        if not isinstance(self.prompt, str):
            raise _bad(f"prompt: must be a string (or give messages); got "
                       f"{type(self.prompt).__name__}", task, "invalid_prompt")
        if not isinstance(self.parameters, Mapping):
            raise _bad(f"parameters: must be a mapping; got {type(self.parameters).__name__}",
                       task, "invalid_parameters")
        if self.messages is not None and (
            isinstance(self.messages, str | bytes) or not isinstance(self.messages, Sequence)
        ):
            raise _bad("messages: must be a list of chat messages", task, "invalid_messages")
        if not self.prompt.strip() and not self.messages:
            raise _bad("a ModelRequest needs a prompt or messages"
                       + (" (the prompt is only whitespace)" if self.prompt else ""),
                       task, "empty_request")
        _check_text(self.prompt, "prompt", task)
        if self.messages is not None:
            for i, m in enumerate(self.messages):
                _check_message(i, m, task)
        if self.max_tokens is not None and (
            not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool)
            or not 0 < self.max_tokens <= _MAX_OUTPUT_TOKENS
        ):
            raise _bad(f"max_tokens must be a positive integer <= {_MAX_OUTPUT_TOKENS:,}; "
                       f"got {self.max_tokens!r}", task, "invalid_max_tokens")
        t = self.effective_temperature
        if not isinstance(t, int | float) or isinstance(t, bool) or not 0.0 <= t <= 2.0:
            raise _bad(f"temperature must be a number in [0, 2]; got {t!r}", task,
                       "invalid_temperature")
        stop = self.parameters.get("stop")
        if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(x, str) for x in stop)
        ):
            raise _bad(f"parameters.stop: must be a string or a list of strings; got {stop!r}",
                       task, "invalid_parameters")
        _check_tools(self.tools, self.tool_choice, task)
        _check_response_format(self.response_format, task)
        _check_call_options(self, task)
        if self.on_invalid not in _ON_INVALID:
            raise _bad(f"on_invalid: must be one of {', '.join(sorted(_ON_INVALID))}; "
                       f"got {self.on_invalid!r}", task, "invalid_request")
        if self.priority is not None:
            object.__setattr__(self, "priority", Priority.parse(self.priority))

    @property
    def effective_temperature(self) -> float:
        """``parameters["temperature"]`` when given, else the ``temperature`` field."""
        value = self.parameters.get("temperature", self.temperature)
        return value  # type: ignore[no-any-return,unused-ignore]

    @property
    def effective_priority(self) -> Priority:
        """The request's priority: the field, else ``parameters["priority"]``, else MEDIUM."""
        if self.priority is not None:
            return self.priority  # type: ignore[return-value]
        raw = self.parameters.get("priority")
        return Priority.parse(raw) if raw is not None else Priority.MEDIUM

    @property
    def response_schema(self) -> Mapping[str, Any] | None:
        """The JSON schema the answer must follow (``response_format`` json_schema), if any."""
        rf = self.response_format
        if rf is None or rf.get("type") != "json_schema":
            return None
        schema: Mapping[str, Any] = rf["json_schema"]["schema"]
        return schema

    @property
    def wants_json(self) -> bool:
        """Whether the answer must be JSON (``json_object`` or ``json_schema``)."""
        rf = self.response_format
        return rf is not None and rf.get("type") in ("json_object", "json_schema")

    def chat_messages(self) -> list[dict[str, Any]]:
        """The request as chat messages (the prompt becomes one user message)."""
        if self.messages:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.prompt}]

    def text(self) -> str:
        """All the request's text, for token estimates and relevance scoring."""
        if self.messages:
            return "\n".join(_message_text(m) for m in self.messages)
        return self.prompt


def _message_text(m: Mapping[str, Any]) -> str:
    content = m.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "\n".join(p.get("text", "") for p in content
                         if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    else:
        text = ""
    for call in m.get("tool_calls") or ():
        fn = call.get("function") or {}
        text += f"\n{fn.get('name', '')}({fn.get('arguments', '')})"
    return text


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call of an answer: ``arguments`` is the JSON text the provider sent.

    >>> ToolCall("call_1", "get_weather", '{"city": "Paris"}').parsed()
    {'city': 'Paris'}
    """

    id: str
    name: str
    arguments: str

    def parsed(self) -> dict[str, Any]:
        """The arguments as a dict; :class:`~amm.errors.InvalidToolCallError` when they
        are not a JSON object."""
        import json

        try:
            value = json.loads(self.arguments or "{}")
        except ValueError as exc:
            raise InvalidToolCallError(
                f"tool call {self.id} ({self.name}): arguments are not JSON: {exc}",
                error_type="invalid_tool_arguments") from None
        if not isinstance(value, dict):
            raise InvalidToolCallError(
                f"tool call {self.id} ({self.name}): arguments must be a JSON object, got "
                f"{type(value).__name__}", error_type="invalid_tool_arguments")
        return value

    def to_message(self) -> dict[str, Any]:
        """This call in the OpenAI shape of an assistant message's ``tool_calls`` item."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts of one response; ``total_tokens`` is derived when not given."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.total_tokens is None:
            object.__setattr__(self, "total_tokens", self.input_tokens + self.output_tokens)


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What a provider's response headers said of its rate limits (``x-ratelimit-*``,
    ``anthropic-ratelimit-*``): requests and tokens left, seconds until each resets;
    None where the provider did not say."""

    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None

    def as_dict(self) -> dict[str, float]:
        """The fields the provider sent, by name (how ``metadata["rate_limit"]`` shows them)."""
        return {k: v for k in self.__slots__ if (v := getattr(self, k)) is not None}


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """Response from an AI model. ``metadata`` holds provider details (response id,
    provider-reported model, cache flags) for people and their code. ``tool_calls`` holds
    the answer's tool calls in the provider's order (empty when none); ``finish_reason``
    is ``"stop"``, ``"tool_calls"``, ``"length"``... ``rate_limit`` is what the provider
    said of its limits with this answer (the manager corrects its limiter from it; also
    shown as ``metadata["rate_limit"]``); a custom adapter sets it when it can. The
    manager reads it from fresh attempts only, never from cached answers.
    """

    content: str
    model_id: str
    token_usage: TokenUsage
    latency_ms: float
    cost: float
    metadata: dict[str, Any] = field(default_factory=dict)
    tool_calls: list[ToolCall] = field(default_factory=list, kw_only=True)
    finish_reason: str | None = field(default=None, kw_only=True)
    rate_limit: RateLimitInfo | None = field(default=None, kw_only=True, compare=False)

    def assistant_message(self) -> dict[str, Any]:
        """This answer as the assistant message to append to the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [c.to_message() for c in self.tool_calls]
        return message


@dataclass(frozen=True, slots=True)
class ModelSelection:
    """Result of model selection.

    Beyond the seed's fields: ``scores`` (every scored candidate), ``excluded`` (each
    filtered-out model and why), the experiment and arm when one decided, and the
    ``propensity`` with which the chosen model was chosen (1.0 when deterministic).
    """

    model_id: str
    model_metadata: ModelMetadata
    suitability_score: float
    alternatives: list[str]
    selection_reason: str
    scores: Mapping[str, float] = field(default_factory=dict)
    excluded: Mapping[str, str] = field(default_factory=dict)
    experiment: str | None = None
    arm: str | None = None
    propensity: float = 1.0


@dataclass(frozen=True, slots=True)
class SelectionConstraints:
    """Constraints for model selection."""

    max_cost_per_request: float | None = None
    required_capabilities: list[str] = field(default_factory=list)
    excluded_providers: list[str] = field(default_factory=list)
    max_latency_ms: float | None = None
    excluded_models: frozenset[str] = field(default=frozenset(), kw_only=True)
    only_models: frozenset[str] | None = field(default=None, kw_only=True)
    only_providers: frozenset[str] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.max_cost_per_request is not None and self.max_cost_per_request < 0:
            raise InvalidRequestError(
                f"max_cost_per_request must be >= 0; got {self.max_cost_per_request}",
                error_type="invalid_constraints",
            )
        if self.max_latency_ms is not None and self.max_latency_ms <= 0:
            raise InvalidRequestError(
                f"max_latency_ms must be > 0; got {self.max_latency_ms}",
                error_type="invalid_constraints",
            )
        for name in ("required_capabilities", "excluded_providers"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise InvalidRequestError(
                    f"{name} must be a list of strings; got {value!r}",
                    error_type="invalid_constraints",
                )


@dataclass(frozen=True, slots=True)
class HealthStatus:
    """Result of one health check."""

    model_id: str
    is_available: bool
    response_time_ms: float
    last_check: datetime
    consecutive_failures: int
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class ModelAvailability:
    """The health state of one model and why: what a person reads to see its state."""

    model_id: str
    is_available: bool
    consecutive_failures: int = 0
    last_check: datetime | None = None
    last_error: str | None = None
    unavailable_since: datetime | None = None
    next_check: datetime | None = None
    last_response_time_ms: float | None = None

    @property
    def reason(self) -> str:
        """One line: 'available' or why not."""
        if self.is_available:
            return "available"
        since = f" since {self.unavailable_since.isoformat()}" if self.unavailable_since else ""
        return (
            f"unavailable{since} after {self.consecutive_failures} consecutive failures"
            f": {self.last_error or 'unknown error'}"
        )


@dataclass(frozen=True, slots=True)
class RateLimitStatus:
    """Rate limit status for a model."""

    model_id: str
    is_limited: bool
    requests_remaining: int
    tokens_remaining: int
    reset_time: datetime | None


@dataclass(frozen=True, slots=True)
class QualityScore:
    """Response quality evaluation; every score in [0, 1]."""

    overall_score: float
    completeness: float
    relevance: float
    coherence: float
    timestamp: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Budget utilisation for the current (UTC) day."""

    daily_budget: float
    current_spend: float
    utilization_percent: float
    is_over_budget: bool
    remaining_budget: float


@dataclass(frozen=True, slots=True)
class PerformanceMetrics:
    """Performance of a model over a time window (the seed's record).

    ``success_rate`` is a **percentage** (0-100), because the seed defines it so and its
    examples print it with ``%``. This is the one place in amm where a success rate is
    a percentage: everywhere else (:class:`~telemetry.events.StatsSnapshot`, the
    scorer, the policies, analytics) it is a fraction in [0, 1].
    :meth:`~amm.performance_monitor.PerformanceMonitor.get_model_performance` converts
    into it, and :meth:`~amm.selector.ModelSelector.calculate_suitability_score` back
    out of it; nothing else reads it. Latency percentiles are over every attempt,
    failures included, as in the rolling statistics and the OpenTelemetry duration
    metric (``gen_ai.client.operation.duration`` records failed operations too).
    """

    model_id: str
    window_hours: int
    total_requests: int
    successful_requests: int
    failed_requests: int
    success_rate: float
    average_latency_ms: float
    p50_latency_ms: float
    p95_latency_ms: float
    p99_latency_ms: float
    average_quality_score: float


@dataclass(frozen=True, slots=True)
class PerformanceDegradation:
    """A metric of a model that got worse: recent window against a baseline window.

    ``threshold`` is the ratio the seed's ``detect_degradation(threshold=0.8)`` takes:
    a degradation is reported when recent/baseline falls below it (for latency,
    baseline/recent, since higher is worse).
    """

    metric: str
    current_value: float
    baseline_value: float
    threshold: float
    model_id: str = ""
    agent_type: str | None = None
    detected_at: datetime = field(default_factory=utcnow)

    @property
    def ratio(self) -> float:
        """How the current value compares with the baseline (1.0 = unchanged)."""
        if self.baseline_value == 0:
            return 1.0
        return self.current_value / self.baseline_value


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """Standardised error response (see :meth:`amm.errors.APIModelError.to_error_response`)."""

    error_type: str
    error_message: str
    model_id: str
    task_id: str
    is_retryable: bool
    attempted_models: list[str] = field(default_factory=list)
    failure_reasons: dict[str, str] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A cached response with its lifetime and how often it was served."""

    response: ModelResponse
    cached_at: datetime
    expires_at: datetime
    hit_count: int = 0


@runtime_checkable
class ProviderAdapter(Protocol):
    """Sends one request to one provider. amm's built-in adapter is litellm; give
    ``APIClientManager(adapters={"openai": MyAdapter()})`` to replace it per provider.

    Raise :mod:`amm.errors` exceptions (mapped once, at this boundary).
    """

    async def complete(
        self, model: ModelMetadata, request: ModelRequest, *, api_key: str | None, timeout_s: float
    ) -> ModelResponse: ...
