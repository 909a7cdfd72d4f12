"""Sends requests to providers: one attempt, or a retry loop with backoff around it.

The send path is a chain of one-concern steps::

    send_request_with_retry   retry retryable errors; backoff with full jitter; Retry-After
      -> send_request         one attempt: resolve the model, pick a key, time it, record it
        -> adapter.complete   one HTTP request (litellm by default; max_retries=0)

Provider exceptions are mapped to :mod:`amm.errors` once, at the adapter boundary
(:mod:`amm._provider_errors`). Every attempt is reported as exactly one
:class:`~telemetry.events.AttemptEvent` (and a provider 429 also as a
:class:`~telemetry.events.RateLimitedEvent`) to the injected ``events`` sink. Every
error text passes the key manager's :meth:`~amm.api_key_manager.APIKeyManager.redact`.

>>> async with APIClientManager(keys) as client:
...     response = await client.send_request_with_retry("gpt-4-turbo", request)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from amm._litellm import DEFAULT_MAX_TOKENS, LiteLLMAdapter, load_litellm
from amm._provider_errors import server_of
from amm.api_key_manager import APIKeyManager
from amm.backoff import ExponentialBackoff
from amm.errors import (
    CANCELLED,
    APIModelError,
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ProviderError,
    RateLimitError,
    StreamInterruptedError,
)
from amm.models import (
    ModelMetadata,
    ModelRequest,
    ModelResponse,
    ProviderAdapter,
    RateLimitInfo,
    RateLimits,
    TokenUsage,
    estimate_tokens,
)
from amm.streaming import Accumulator, StreamChunk, ToolCallDelta
from amm.timeouts import attempt_timeout, remaining
from telemetry.events import NULL_SINK, AttemptEvent, EventSink, RateLimitedEvent

if TYPE_CHECKING:
    from amm.registry import ModelRegistry

__all__ = ["KEYLESS_PROVIDERS", "APIClientManager", "AttemptStream", "guess_provider"]

_T = TypeVar("_T")

KEYLESS_PROVIDERS = frozenset({"ollama"})
"""Providers that are called without an API key (a local server)."""

_KEYED_PROVIDERS = frozenset({"openai", "anthropic", "google"})
_PREFIX_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google",
                     "ollama": "ollama", "ollama_chat": "ollama"}


class _Random(Protocol):
    def random(self) -> float: ...


def _cost_split(model: ModelMetadata, usage: TokenUsage, cost: float
                ) -> tuple[float | None, float | None]:
    """``input_cost_usd``/``output_cost_usd`` of an AttemptEvent: tokens at the model's
    per-1k prices, when those prices are what made ``cost``; else nothing (the adapter
    or litellm's price map priced it, split unknown)."""
    input_cost = usage.input_tokens * model.cost_per_1k_input_tokens / 1000.0
    output_cost = usage.output_tokens * model.cost_per_1k_output_tokens / 1000.0
    if abs(input_cost + output_cost - cost) > 1e-9 * max(abs(cost), 1e-9):
        return None, None
    return input_cost, output_cost


def guess_provider(litellm_model: str) -> str:
    """The provider of a model id the registry lacks, from its litellm prefix
    (``gemini/x`` -> google); bare names by family (``claude-...`` -> anthropic)."""
    if "/" in litellm_model:
        prefix = litellm_model.split("/", 1)[0]
        return _PREFIX_PROVIDERS.get(prefix, prefix)
    if litellm_model.startswith("claude"):
        return "anthropic"
    if litellm_model.startswith("gemini"):
        return "google"
    return "openai"


class APIClientManager:
    """Routes each request to its provider's adapter, with keys, retries and events.

    ``adapters`` maps a provider (``"openai"``...) to a
    :class:`~amm.models.ProviderAdapter` that replaces litellm for it; every other
    provider goes through litellm. ``registry`` (default: :func:`get_default_registry`,
    loaded on first use) says where a model id goes and what it costs; an id the
    registry lacks is given to litellm as it is, priced from litellm's price map.
    ``sleep`` and ``rng`` are injected so backoff is tested without waiting.
    """

    def __init__(
        self,
        api_key_manager: APIKeyManager,
        adapters: Mapping[str, ProviderAdapter] | None = None,
        *,
        registry: ModelRegistry | None = None,
        timeout_s: float = 60.0,
        events: EventSink = NULL_SINK,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: _Random | None = None,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        for name, value in (("timeout_s", timeout_s), ("backoff_base_s", backoff_base_s),
                            ("backoff_max_s", backoff_max_s)):
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigurationError(f"APIClientManager.{name}: must be a number > 0, "
                                         f"got {value!r}", field=name)
        for provider, adapter in (adapters or {}).items():
            if not isinstance(adapter, ProviderAdapter):
                raise ConfigurationError(
                    f"APIClientManager.adapters[{provider}]: must have an async "
                    "complete(model, request, *, api_key, timeout_s), "
                    f"got {type(adapter).__name__}",
                    field=f"adapters[{provider}]")
        self._keys = api_key_manager
        self._adapters: dict[str, ProviderAdapter] = dict(adapters or {})
        self._registry = registry
        self._timeout_s = float(timeout_s)
        self._events = events
        self._sleep = sleep
        self._rng: _Random = rng if rng is not None else random.Random()
        self._backoff_base_s = float(backoff_base_s)
        self._backoff_max_s = float(backoff_max_s)
        self._backoff = ExponentialBackoff(self._backoff_base_s, max_s=self._backoff_max_s,
                                           jitter=True, rng=self._rng)
        self._litellm: LiteLLMAdapter | None = None
        self._closed = False
        self._can_call: dict[str, tuple[int, float, bool]] = {}  # model -> (version, until, answer)

    # -- the retry loop ----------------------------------------------------------------

    async def send_request_with_retry(
        self, model_id: str, request: ModelRequest, max_retries: int = 3
    ) -> ModelResponse:
        """Send with up to ``max_retries`` retries after the first attempt.

        Only retryable errors are retried, after ``min(backoff_max_s, backoff_base_s *
        2**n) * U[0, 1)`` seconds (full jitter), or at least the provider's Retry-After.
        A Retry-After longer than ``backoff_max_s`` is raised at once: failing over is
        better than waiting. The last error is raised with ``attempted_models=[model_id]``.
        """
        return await self._retrying(model_id, request, max_retries, self._attempt)

    async def open_stream_with_retry(
        self, model_id: str, request: ModelRequest, max_retries: int = 3
    ) -> AttemptStream:
        """Open a streamed attempt on ``model_id``, retried like
        :meth:`send_request_with_retry` until its first chunk has arrived; after that
        nothing is retried (see :class:`AttemptStream`)."""
        return await self._retrying(model_id, request, max_retries, self._open_stream)

    async def _retrying(self, model_id: str, request: ModelRequest, max_retries: int,
                        attempt: Callable[..., Awaitable[_T]]) -> _T:
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise InvalidRequestError(f"max_retries must be an integer >= 0; got {max_retries!r}",
                                      model_id=model_id, task_id=request.task_id or None,
                                      error_type="invalid_max_retries")
        retry = 0
        while True:
            try:
                return await attempt(model_id, request, attempt=retry + 1)
            except APIModelError as err:
                delay = self._delay_before_retry(err, retry, max_retries)
                left = remaining()
                if delay is None or (left is not None and delay >= left):
                    # No retry, or none that would end before the request's deadline.
                    err.attempted_models = [model_id]
                    raise
            await self._sleep(delay)
            retry += 1

    def _delay_before_retry(self, err: APIModelError, retry: int, max_retries: int) -> float | None:
        """Seconds to wait before the next attempt, or None to give up now (and fail over).

        A 429 is retried no sooner than the provider's Retry-After or, without one,
        amm's own window: the time until the key manager has a key ready for the model
        (another key: now; only the 429'd one: its cool-down, the rate limiter's
        default for a keyless provider). A wait beyond ``backoff_max_s`` gives up at
        once: failing over is better than waiting.
        """
        if not err.is_retryable or retry >= max_retries:
            return None
        delay = self.backoff(retry)
        if isinstance(err, RateLimitError):
            window = err.retry_after_seconds
            if window is None and err.status_code == 429 and err.model_id:
                from amm.rate_limiter import DEFAULT_RETRY_AFTER_S

                model, _ = self._resolve(err.model_id)
                ready = self._keys.seconds_until_ready(model.provider, model.id, model.api_base)
                window = DEFAULT_RETRY_AFTER_S if ready is None else ready
            if window is not None:
                if window > self._backoff_max_s:
                    return None
                delay = max(delay, window)
        return delay

    def backoff(self, retry: int) -> float:
        """Full-jitter backoff before retry ``retry`` (0-based): uniform in [0, cap)."""
        return self._backoff.delay(retry)

    # -- one attempt -------------------------------------------------------------------

    async def send_request(self, model_id: str, request: ModelRequest) -> ModelResponse:
        """One attempt at ``model_id``, no retry. Raises :mod:`amm.errors` exceptions."""
        return await self._attempt(model_id, request, attempt=1)

    def _prepare(self, model_id: str, request: ModelRequest
                 ) -> tuple[ModelMetadata, bool, Any, str | None]:
        """The model, whether the registry has it, its adapter and the key to use."""
        if self._closed:
            raise ProviderError("the API client is closed", model_id=model_id,
                                task_id=request.task_id or None, is_retryable=False,
                                error_type="client_closed")
        model, registered = self._resolve(model_id)
        adapter = self._adapters.get(model.provider) or self._litellm_adapter()
        key = self._keys.get_key(model.provider, model.id, model.api_base)
        return model, registered, adapter, key

    @staticmethod
    def _require_key(model: ModelMetadata, key: str | None) -> None:
        if key is None and model.provider in _KEYED_PROVIDERS:
            raise AuthenticationError(
                f"{model.id}: no usable API key for provider {model.provider!r} (set "
                f"{model.provider.upper()}_API_KEY; keys rejected with 401/403 rest for a while)",
                error_type="missing_api_key")

    async def _attempt(self, model_id: str, request: ModelRequest, *,
                       attempt: int) -> ModelResponse:
        model, registered, adapter, key = self._prepare(model_id, request)
        start_ns = time.time_ns()
        started = time.perf_counter()
        try:
            self._require_key(model, key)
            response = await adapter.complete(model, request, api_key=key,
                                              timeout_s=attempt_timeout(self._timeout_s))
        except Exception as exc:
            latency_ms = (time.perf_counter() - started) * 1000.0
            err = self._as_error(exc, model, request, key)
            self._record_failure(model, request, attempt, err, latency_ms, start_ns)
            if err is exc:
                raise
            raise err from exc
        latency_ms = (time.perf_counter() - started) * 1000.0
        response = self._finish(response, model, registered, latency_ms, request)
        if not response.content.strip() and not response.tool_calls:
            # A 200 with nothing in it is the provider failing, not an answer: fail over.
            err = ProviderError(f"{model_id}: the provider answered with no content and no tool "
                                f"calls (finish_reason={response.finish_reason})",
                                model_id=model_id, task_id=request.task_id or None,
                                error_type="empty_response")
            self._record_failure(model, request, attempt, err, latency_ms, start_ns,
                                 billed=response)
            raise err
        self._record_success(model, request, attempt, response, start_ns)
        return response

    async def _open_stream(self, model_id: str, request: ModelRequest, *,
                           attempt: int) -> AttemptStream:
        """One streamed attempt up to its first chunk: errors before it are raised here
        (and so retried or failed over); an adapter without ``stream`` answers whole,
        as one chunk."""
        model, registered, adapter, key = self._prepare(model_id, request)
        start_ns = time.time_ns()
        started = time.perf_counter()
        provider: Any = None
        try:
            self._require_key(model, key)
            if hasattr(adapter, "stream"):
                provider = await adapter.stream(model, request, api_key=key,
                                                timeout_s=attempt_timeout(self._timeout_s))
            else:
                provider = _Whole(await adapter.complete(model, request, api_key=key,
                                                         timeout_s=attempt_timeout(self._timeout_s)))
            try:
                first = await provider.__anext__()
            except StopAsyncIteration:
                raise ProviderError(f"{model_id}: the stream ended with no content and no tool "
                                    "calls", error_type="empty_response") from None
        except Exception as exc:
            latency_ms = (time.perf_counter() - started) * 1000.0
            if provider is not None:
                await provider.aclose()
            err = self._as_error(exc, model, request, key)
            self._record_failure(model, request, attempt, err, latency_ms, start_ns,
                                 stream={"stream": True})
            if err is exc:
                raise
            raise err from exc
        ttfc_s = time.perf_counter() - started
        return AttemptStream(self, model, registered, request, attempt, provider, first,
                             start_ns=start_ns, started=started, ttfc_s=ttfc_s, key=key)

    def can_call(self, model: ModelMetadata) -> bool:
        """Whether a key usable for ``model`` exists (always, for keyless providers and
        providers amm does not key itself).

        Selection asks this for every model of every request: an answer is reused until
        the key manager changes (a key added or rested) or a second has passed (a rest
        that ends by itself)."""
        if model.provider not in _KEYED_PROVIDERS:
            return True
        keys = self._keys
        now = keys.now()
        cached = self._can_call.get(model.id)
        if cached is not None and cached[0] == keys.version and cached[1] > now:
            return cached[2]
        version = keys.version
        answer = keys.has_key(model.provider, model_id=model.id, base_url=model.api_base)
        self._can_call[model.id] = (version, now + 1.0, answer)
        return answer

    def _resolve(self, model_id: str) -> tuple[ModelMetadata, bool]:
        registry = self._registry
        if registry is None:
            from amm.registry import get_default_registry

            registry = self._registry = get_default_registry()
        model = registry.get_model(model_id)
        if model is not None:
            return model, True
        provider = guess_provider(model_id)
        return ModelMetadata(
            id=model_id, provider=provider, name=model_id, capabilities=[],
            cost_per_1k_input_tokens=0.0, cost_per_1k_output_tokens=0.0,
            rate_limits=RateLimits(1, 1), context_window=1, average_response_time_ms=0.0,
            litellm_model=model_id, api_base=self._keys.base_url(provider),
        ), False

    def _litellm_adapter(self) -> ProviderAdapter:
        if self._litellm is None:
            load_litellm()  # seconds, once: not part of the first attempt's latency
            self._litellm = LiteLLMAdapter()
        return self._litellm

    def _as_error(self, exc: Exception, model: ModelMetadata, request: ModelRequest,
                  key: str | None) -> APIModelError:
        """``exc`` as an amm error carrying the model and task; tells the key manager
        what the provider said about the key.

        Its message and its whole ``__cause__`` chain pass the one redaction step
        (:meth:`APIKeyManager.redact`: keys, and the request's text unless content
        capture is on): the provider's exceptions, which keep what it echoed in args,
        ``body`` and ``response``, are replaced by redacted stand-ins.
        """
        from amm._provider_errors import is_client_side, sanitized_chain, scrub_in_place
        from telemetry.redaction import content_capture_enabled, message_texts

        contents = () if content_capture_enabled() else message_texts(request.chat_messages())

        def redact(text: str) -> str:
            return self._keys.redact(text, contents=contents)

        if isinstance(exc, APIModelError):
            err = exc
            cause = exc.__cause__ or exc.__context__
            if cause is not None:
                err.__cause__ = sanitized_chain(cause, redact)
                err.__context__ = None
        else:
            # A custom adapter broke its contract. Refusing the input before sending is
            # the request's fault; anything else is a provider failure to us.
            if is_client_side(exc):
                err = InvalidRequestError(f"{model.id}: {type(exc).__name__}: {exc}",
                                          error_type="client_error")
            else:
                err = ProviderError(f"{model.id}: {type(exc).__name__}: {exc}",
                                    error_type=type(exc).__name__)
            scrub_in_place(exc, redact)  # it stays in the chain: raise err from exc
        err.error_message = redact(err.error_message)
        err.args = (err.error_message,)
        err.model_id = err.model_id or model.id
        err.task_id = err.task_id or request.task_id or None
        retry_after = err.retry_after_seconds if isinstance(err, RateLimitError) else None
        self._keys.report_failure(model.provider, key, err.status_code, retry_after_s=retry_after,
                                  model_id=model.id, base_url=model.api_base)
        return err

    def _finish(self, response: ModelResponse, model: ModelMetadata, registered: bool,
                latency_ms: float, request: ModelRequest) -> ModelResponse:
        usage = response.token_usage
        metadata = dict(response.metadata)
        if metadata.get("usage_reported") is False and not usage.total_tokens:
            # No usage from the provider: bill amm's estimate, flagged, never zero.
            out = response.content + "".join(c.name + c.arguments for c in response.tool_calls)
            usage = TokenUsage(estimate_tokens(request.text()), estimate_tokens(out))
            metadata["usage_estimated"] = True
        # Registry prices are amm's truth; for a model the registry lacks, the adapter's
        # own price, else litellm's price map.
        if registered:
            cost = model.estimate_cost(usage.input_tokens, usage.output_tokens)
        elif response.cost > 0:
            cost = response.cost
        else:
            from amm._litellm import price_map_cost

            cost = price_map_cost(model.litellm_model or model.id, usage.input_tokens,
                                  usage.output_tokens)
        metadata.setdefault("provider", model.provider)
        if "server_address" not in metadata:
            metadata["server_address"], metadata["server_port"] = server_of(
                model.provider, model.api_base)
        finish = response.finish_reason or metadata.get("finish_reason")
        metadata["finish_reason"] = finish
        return ModelResponse(content=response.content, model_id=model.id, token_usage=usage,
                             latency_ms=latency_ms, cost=cost, metadata=metadata,
                             tool_calls=list(response.tool_calls), finish_reason=finish,
                             rate_limit=response.rate_limit)

    def _price(self, model: ModelMetadata, registered: bool, usage: TokenUsage) -> float:
        if registered:
            return model.estimate_cost(usage.input_tokens, usage.output_tokens)
        from amm._litellm import price_map_cost

        return price_map_cost(model.litellm_model or model.id, usage.input_tokens,
                              usage.output_tokens)

    # -- events ------------------------------------------------------------------------

    def _record_success(self, model: ModelMetadata, request: ModelRequest, attempt: int,
                        response: ModelResponse, start_ns: int,
                        stream: dict[str, Any] | None = None) -> None:
        meta = response.metadata
        input_cost, output_cost = _cost_split(model, response.token_usage, response.cost)
        self._events.record(AttemptEvent(
            model_id=model.id, provider=model.provider, agent_type=request.agent_type,
            task_id=request.task_id, attempt=attempt, latency_ms=response.latency_ms,
            success=True, input_tokens=response.token_usage.input_tokens,
            output_tokens=response.token_usage.output_tokens, cost_usd=response.cost,
            finish_reason=meta.get("finish_reason"), response_model=meta.get("response_model"),
            response_id=meta.get("response_id"), server_address=meta.get("server_address"),
            server_port=meta.get("server_port"), **self._request_fields(request),
            start_time_ns=start_ns, end_time_ns=time.time_ns(),
            output_text=response.content, tool_call_count=len(response.tool_calls),
            usage_estimated=bool(meta.get("usage_estimated")),
            output_tool_calls=tuple(c.to_message() for c in response.tool_calls) or None,
            **(stream or {}), input_cost_usd=input_cost, output_cost_usd=output_cost,
        ))

    def _record_failure(self, model: ModelMetadata, request: ModelRequest, attempt: int,
                        err: APIModelError, latency_ms: float, start_ns: int, *,
                        billed: ModelResponse | None = None,
                        stream: dict[str, Any] | None = None) -> None:
        """One failed attempt; ``billed`` is what the provider charged for it anyway
        (an empty answer, a stream cut or cancelled after some chunks)."""
        address, port = server_of(model.provider, model.api_base)
        usage = billed.token_usage if billed is not None else TokenUsage()
        input_cost, output_cost = _cost_split(
            model, usage, billed.cost if billed is not None else 0.0)
        self._events.record(AttemptEvent(
            model_id=model.id, provider=model.provider, agent_type=request.agent_type,
            task_id=request.task_id, attempt=attempt, latency_ms=latency_ms, success=False,
            error_type=err.error_type, error_message=err.error_message,
            server_address=address, server_port=port, **self._request_fields(request),
            start_time_ns=start_ns, end_time_ns=time.time_ns(),
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            cost_usd=billed.cost if billed is not None else 0.0,
            finish_reason=billed.finish_reason if billed is not None else None,
            usage_estimated=bool(billed is not None and billed.metadata.get("usage_estimated")),
            **(stream or {}),
            input_cost_usd=input_cost, output_cost_usd=output_cost,
        ))
        if isinstance(err, RateLimitError) and err.status_code == 429:
            self._events.record(RateLimitedEvent(
                model_id=model.id, source="provider", retry_after_s=err.retry_after_seconds,
                agent_type=request.agent_type, task_id=request.task_id,
            ))

    @staticmethod
    def _request_fields(request: ModelRequest) -> dict[str, Any]:
        return {
            "request_max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "request_temperature": request.effective_temperature,
            "input_messages": tuple(request.chat_messages()),
            "tool_definitions": tuple(dict(t) for t in request.tools) if request.tools else None,
        }

    # -- lifecycle ---------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the HTTP clients opened for requests (idempotent)."""
        self._closed = True
        if self._litellm is not None:
            await self._litellm.aclose()

    def close(self) -> None:
        """Close from sync code (idempotent); inside a running loop prefer ``aclose``."""
        self._closed = True
        if self._litellm is not None:
            self._litellm.close()

    async def __aenter__(self) -> APIClientManager:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    def __enter__(self) -> APIClientManager:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        custom = ", ".join(sorted(self._adapters)) or "none"
        return f"APIClientManager({state}, custom adapters: {custom}, timeout={self._timeout_s:g}s)"


class _Whole:
    """A whole answer as a one-chunk stream, for adapters that cannot stream."""

    __slots__ = ("_chunk", "finish_reason", "metadata", "rate_limit", "usage")

    def __init__(self, response: ModelResponse) -> None:
        deltas = tuple(ToolCallDelta(i, c.id, c.name, c.arguments)
                       for i, c in enumerate(response.tool_calls))
        chunk = StreamChunk(response.content, deltas, response.model_id)
        self._chunk: StreamChunk | None = chunk if chunk else None
        self.finish_reason = response.finish_reason or response.metadata.get("finish_reason")
        usage = response.token_usage
        self.usage = usage if usage.total_tokens else None
        self.metadata = dict(response.metadata)
        self.rate_limit = response.rate_limit

    async def __anext__(self) -> StreamChunk:
        chunk, self._chunk = self._chunk, None
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self._chunk = None


class AttemptStream:
    """One streamed attempt whose first chunk has arrived: iterate it for chunks.

    It settles itself exactly once: at the end of the stream (``response`` holds the
    whole answer, its usage and cost, and the attempt is recorded as a success); on a
    provider error mid-stream (recorded as failed, billed for what was received, and
    raised as :class:`~amm.errors.StreamInterruptedError`); or when the caller leaves
    before the end, recorded with ``error.type`` ``cancelled`` and billed for what the
    provider reported, else an estimate: by :meth:`aclose` (the provider's response
    closed now), or by :meth:`leave` (nothing more for the caller) then :meth:`drain`
    (the rest read to the provider's final report, in the background).
    """

    __slots__ = (
        "_attempt",
        "_billed_last",
        "_client",
        "_first",
        "_key",
        "_provider",
        "_registered",
        "_start_ns",
        "_started",
        "_ttfc_s",
        "acc",
        "done",
        "model",
        "request",
        "response",
    )

    def __init__(self, client: APIClientManager, model: ModelMetadata, registered: bool,
                 request: ModelRequest, attempt: int, provider: Any, first: StreamChunk, *,
                 start_ns: int, started: float, ttfc_s: float, key: str | None) -> None:
        self._client = client
        self.model = model
        self._registered = registered
        self.request = request
        self._attempt = attempt
        self._provider = provider
        self._first: StreamChunk | None = first
        self._start_ns = start_ns
        self._started = started
        self._ttfc_s = ttfc_s
        self._key = key
        self.acc = Accumulator()
        self.done = False
        self.response: ModelResponse | None = None
        self._billed_last: ModelResponse | None = None

    def response_or_billed(self) -> ModelResponse | None:
        """The whole answer, or what was billed for a stream that ended early."""
        return self.response if self.response is not None else self._billed_last

    @property
    def provider_metadata(self) -> dict[str, Any]:
        """What the provider said about the answer so far (ids, rate-limit headers)."""
        metadata: dict[str, Any] = self._provider.metadata
        return metadata

    @property
    def rate_limit(self) -> RateLimitInfo | None:
        """What the provider said of its rate limits when the stream opened (None when it
        said nothing, or a custom adapter's stream does not carry it)."""
        limits: RateLimitInfo | None = getattr(self._provider, "rate_limit", None)
        return limits

    @property
    def time_to_first_chunk_s(self) -> float:
        """Seconds from sending the request to its first chunk."""
        return self._ttfc_s

    def __aiter__(self) -> AttemptStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self.done:
            raise StopAsyncIteration
        chunk = self._first
        if chunk is not None:
            self._first = None
        else:
            try:
                chunk = await self._provider.__anext__()
            except StopAsyncIteration:
                self._finish()
                raise
            except Exception as exc:
                raise self._interrupt(exc) from None
        self.acc.add(chunk)
        return chunk

    async def aclose(self) -> ModelResponse | None:
        """Cancel before the end: close the provider's response, bill what it reported.
        Returns what was billed (None when the stream had already settled)."""
        if self.done:
            return None
        self.done = True
        try:
            await self._provider.aclose()
        finally:  # billed even when a second cancel interrupts the close
            billed = self._record_cancel()
        return billed

    def leave(self) -> ModelResponse | None:
        """The caller leaves before the end: nothing more reaches it, nothing is recorded
        yet (:meth:`drain` does that). Returns amm's estimate of what was used so far, to
        settle the holds with now (None when the stream had already settled)."""
        if self.done:
            return None
        self.done = True
        return self._billed()

    async def drain(self, timeout_s: float) -> ModelResponse:
        """After :meth:`leave`: read the rest to the provider's final usage report (for
        ``timeout_s`` at most; an adapter's stream without ``drain`` is closed), then
        record the attempt as cancelled, billed that report, else an estimate (flagged).
        Returns what was billed; it is recorded also when the drain is cancelled."""
        drain = getattr(self._provider, "drain", None)
        try:
            if drain is not None:
                await drain(timeout_s)
            else:
                await self._provider.aclose()
        finally:
            billed = self._record_cancel()
        return billed

    def _record_cancel(self) -> ModelResponse:
        err = ProviderError(f"{self.model.id}: the caller closed the stream",
                            model_id=self.model.id, task_id=self.request.task_id or None,
                            error_type=CANCELLED, is_retryable=False)
        billed = self._billed_last = self._billed()
        self._client._record_failure(self.model, self.request, self._attempt, err,
                                     self._elapsed_ms(), self._start_ns, billed=billed,
                                     stream=self._stream_fields())
        return billed

    def _finish(self) -> None:
        self.done = True
        billed = self._billed()
        if not billed.content.strip() and not billed.tool_calls:
            raise self._interrupt(ProviderError(
                f"{self.model.id}: the stream ended with no content and no tool calls",
                error_type="empty_response"))
        self.response = billed
        self._client._record_success(self.model, self.request, self._attempt, billed,
                                     self._start_ns, stream=self._stream_fields())

    def _interrupt(self, exc: Exception) -> StreamInterruptedError:
        self.done = True
        client = self._client
        err = client._as_error(exc, self.model, self.request, self._key)
        billed = self._billed_last = self._billed()
        client._record_failure(self.model, self.request, self._attempt, err, self._elapsed_ms(),
                               self._start_ns, billed=billed, stream=self._stream_fields())
        usage = billed.token_usage
        return StreamInterruptedError(
            f"{self.model.id}: the stream broke after {self.acc.chunks} chunks: "
            f"{err.error_message}", model_id=self.model.id, task_id=self.request.task_id or None,
            partial_text=self.acc.text, usage=usage,
            usage_estimated=bool(billed.metadata.get("usage_estimated")), cost=billed.cost,
            attempted_models=[self.model.id], failure_reasons={self.model.id: err.error_message},
            error_type="stream_interrupted", status_code=err.status_code)

    def _billed(self) -> ModelResponse:
        """What was received, as a response: usage reported by the provider, else estimated."""
        provider = self._provider
        self.acc.usage = provider.usage
        usage, estimated = self.acc.usage_or_estimate(estimate_tokens(self.request.text()))
        metadata = dict(provider.metadata)
        metadata.setdefault("provider", self.model.provider)
        if "server_address" not in metadata:
            metadata["server_address"], metadata["server_port"] = server_of(
                self.model.provider, self.model.api_base)
        if estimated:
            metadata["usage_estimated"] = True
        metadata["finish_reason"] = provider.finish_reason
        metadata["time_to_first_chunk_s"] = self._ttfc_s
        return ModelResponse(
            content=self.acc.text, model_id=self.model.id, token_usage=usage,
            latency_ms=self._elapsed_ms(), cost=self._client._price(self.model, self._registered,
                                                                    usage),
            metadata=metadata, tool_calls=self.acc.tool_calls(),
            finish_reason=provider.finish_reason)

    def _stream_fields(self) -> dict[str, Any]:
        return {"stream": True, "time_to_first_chunk_s": self._ttfc_s,
                "output_chunks": self.acc.chunks}

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self._started) * 1000.0
