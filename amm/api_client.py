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
from typing import TYPE_CHECKING, Any, Protocol

from amm._litellm import DEFAULT_MAX_TOKENS, LiteLLMAdapter, load_litellm
from amm._provider_errors import server_of
from amm.api_key_manager import APIKeyManager
from amm.errors import (
    APIModelError,
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ProviderError,
    RateLimitError,
)
from amm.models import ModelMetadata, ModelRequest, ModelResponse, ProviderAdapter, RateLimits
from telemetry.events import NULL_SINK, AttemptEvent, EventSink, RateLimitedEvent

if TYPE_CHECKING:
    from amm.registry import ModelRegistry

__all__ = ["KEYLESS_PROVIDERS", "APIClientManager", "guess_provider"]

KEYLESS_PROVIDERS = frozenset({"ollama"})
"""Providers that are called without an API key (a local server)."""

_KEYED_PROVIDERS = frozenset({"openai", "anthropic", "google"})
_PREFIX_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google",
                     "ollama": "ollama", "ollama_chat": "ollama"}


class _Random(Protocol):
    def random(self) -> float: ...


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
                    f"complete(model, request, *, api_key, timeout_s), got {type(adapter).__name__}",
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
        self._litellm: LiteLLMAdapter | None = None
        self._closed = False

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
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise InvalidRequestError(f"max_retries must be an integer >= 0; got {max_retries!r}",
                                      model_id=model_id, task_id=request.task_id or None,
                                      error_type="invalid_max_retries")
        retry = 0
        while True:
            try:
                return await self._attempt(model_id, request, attempt=retry + 1)
            except APIModelError as err:
                delay = self._delay_before_retry(err, retry, max_retries)
                if delay is None:
                    err.attempted_models = [model_id]
                    raise
            await self._sleep(delay)
            retry += 1

    def _delay_before_retry(self, err: APIModelError, retry: int, max_retries: int) -> float | None:
        """Seconds to wait before the next attempt, or None to give up now."""
        if not err.is_retryable or retry >= max_retries:
            return None
        delay = self.backoff(retry)
        if isinstance(err, RateLimitError) and err.retry_after_seconds is not None:
            if err.retry_after_seconds > self._backoff_max_s:
                return None
            delay = max(delay, err.retry_after_seconds)
        return delay

    def backoff(self, retry: int) -> float:
        """Full-jitter backoff before retry ``retry`` (0-based): uniform in [0, cap)."""
        cap = min(self._backoff_max_s, self._backoff_base_s * 2 ** retry)
        return cap * self._rng.random()

    # -- one attempt -------------------------------------------------------------------

    async def send_request(self, model_id: str, request: ModelRequest) -> ModelResponse:
        """One attempt at ``model_id``, no retry. Raises :mod:`amm.errors` exceptions."""
        return await self._attempt(model_id, request, attempt=1)

    async def _attempt(self, model_id: str, request: ModelRequest, *, attempt: int) -> ModelResponse:
        if self._closed:
            raise ProviderError("the API client is closed", model_id=model_id,
                                task_id=request.task_id or None, is_retryable=False,
                                error_type="client_closed")
        model, registered = self._resolve(model_id)
        adapter = self._adapters.get(model.provider) or self._litellm_adapter()
        key = self._keys.get_key(model.provider)
        start_ns = time.time_ns()
        started = time.perf_counter()
        try:
            if key is None and model.provider in _KEYED_PROVIDERS:
                raise AuthenticationError(
                    f"{model_id}: no usable API key for provider {model.provider!r} (set "
                    f"{model.provider.upper()}_API_KEY; keys rejected with 401/403 are disabled)",
                    error_type="missing_api_key")
            response = await adapter.complete(model, request, api_key=key, timeout_s=self._timeout_s)
        except Exception as exc:
            latency_ms = (time.perf_counter() - started) * 1000.0
            err = self._as_error(exc, model, request, key)
            self._record_failure(model, request, attempt, err, latency_ms, start_ns)
            if err is exc:
                raise
            raise err from exc
        latency_ms = (time.perf_counter() - started) * 1000.0
        response = self._finish(response, model, registered, latency_ms)
        self._record_success(model, request, attempt, response, start_ns)
        return response

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
        """``exc`` as a redacted amm error carrying the model and task; tells the key
        manager what the provider said about the key."""
        if isinstance(exc, APIModelError):
            err = exc
        else:  # a custom adapter broke its contract; still a provider failure to us
            err = ProviderError(f"{model.id}: {type(exc).__name__}: {exc}",
                                error_type=type(exc).__name__)
            for i, a in enumerate(exc.args):
                if isinstance(a, str):
                    exc.args = (*exc.args[:i], self._keys.redact(a), *exc.args[i + 1:])
        err.error_message = self._keys.redact(err.error_message)
        err.args = (err.error_message,)
        err.model_id = err.model_id or model.id
        err.task_id = err.task_id or request.task_id or None
        retry_after = err.retry_after_seconds if isinstance(err, RateLimitError) else None
        self._keys.report_failure(model.provider, key, err.status_code, retry_after_s=retry_after)
        return err

    def _finish(self, response: ModelResponse, model: ModelMetadata, registered: bool,
                latency_ms: float) -> ModelResponse:
        usage = response.token_usage
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
        metadata = dict(response.metadata)
        metadata.setdefault("provider", model.provider)
        if "server_address" not in metadata:
            metadata["server_address"], metadata["server_port"] = server_of(
                model.provider, model.api_base)
        return ModelResponse(content=response.content, model_id=model.id, token_usage=usage,
                             latency_ms=latency_ms, cost=cost, metadata=metadata)

    # -- events ------------------------------------------------------------------------

    def _record_success(self, model: ModelMetadata, request: ModelRequest, attempt: int,
                        response: ModelResponse, start_ns: int) -> None:
        meta = response.metadata
        self._events.record(AttemptEvent(
            model_id=model.id, provider=model.provider, agent_type=request.agent_type,
            task_id=request.task_id, attempt=attempt, latency_ms=response.latency_ms,
            success=True, input_tokens=response.token_usage.input_tokens,
            output_tokens=response.token_usage.output_tokens, cost_usd=response.cost,
            finish_reason=meta.get("finish_reason"), response_model=meta.get("response_model"),
            response_id=meta.get("response_id"), server_address=meta.get("server_address"),
            server_port=meta.get("server_port"), **self._request_fields(request),
            start_time_ns=start_ns, end_time_ns=time.time_ns(),
            output_text=response.content,
        ))

    def _record_failure(self, model: ModelMetadata, request: ModelRequest, attempt: int,
                        err: APIModelError, latency_ms: float, start_ns: int) -> None:
        address, port = server_of(model.provider, model.api_base)
        self._events.record(AttemptEvent(
            model_id=model.id, provider=model.provider, agent_type=request.agent_type,
            task_id=request.task_id, attempt=attempt, latency_ms=latency_ms, success=False,
            error_type=err.error_type, error_message=err.error_message,
            server_address=address, server_port=port, **self._request_fields(request),
            start_time_ns=start_ns, end_time_ns=time.time_ns(),
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
