"""amm's built-in provider adapter: one request through litellm, nothing more.

litellm is imported on first use (it costs seconds), set up once for offline,
quiet use (:func:`load_litellm`), and told never to retry: amm's retry loop in
:mod:`amm.api_client` is the only one. Its exceptions are mapped to
:mod:`amm.errors` in :mod:`amm._provider_errors`.

The adapter owns its HTTP clients and hands them to litellm (``client=``): a shared
``AsyncOpenAI`` per (base URL, key) over aiohttp for OpenAI-compatible endpoints and
one ``AsyncHTTPHandler`` for the others, so :meth:`LiteLLMAdapter.aclose` closes
exactly what amm opened without touching litellm's process-wide cache. The
registry's prices go to litellm as custom pricing, which spares it a walk of its
price map on every reply: with both, a managed call's median is below a default
``litellm.acompletion`` in ``make bench``.

Billing a stream that ends early. A provider bills the tokens it generated until it
noticed the client had left, and tells the client only in-band: OpenAI (with
``include_usage``) and Ollama at the very end, Anthropic the input in ``message_start``
and the output at the end, Gemini cumulative counts on every chunk. So when the caller
cancels (:meth:`LiteLLMStream.aclose`), amm does not drop the connection at once: it
reads on, passing nothing to the caller, while chunks keep coming within
:data:`CANCEL_DRAIN_GAP_S` of each other and for :data:`CANCEL_DRAIN_S` at most. If the
provider's stream ends in that time (the rest of a short or fast answer was already on
its way, or the caller stopped at a tool call just before the end) the bill is the
provider's own report, exact. Otherwise amm closes the connection and books an estimate,
flagged ``usage_estimated``: the counts the provider reported so far (a floor) and amm's
token estimate of everything received from the wire for the rest. It stays an estimate
because the tokens generated between the client's last read and the provider noticing
reach no client; counting chunks as tokens would not change that (and real chunks hold
several tokens), and no provider here offers a request's usage afterwards. The cost of
reading on is at most :data:`CANCEL_DRAIN_S` more of generation and of the caller's wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from amm._aio import running_loop
from amm._provider_errors import map_provider_error, rate_limit_info, server_of
from amm.errors import APIModelError
from amm.models import (
    DEFAULT_OUTPUT_TOKENS,
    ModelMetadata,
    ModelRequest,
    ModelResponse,
    RateLimitInfo,
    TokenUsage,
    ToolCall,
)
from amm.streaming import Accumulator, StreamChunk, ToolCallDelta

__all__ = ["DEFAULT_MAX_TOKENS", "PASSTHROUGH_PARAMETERS", "LiteLLMAdapter", "load_litellm",
           "warm_litellm"]

DEFAULT_MAX_TOKENS = DEFAULT_OUTPUT_TOKENS
"""``max_tokens`` sent when a request sets none (:data:`amm.models.DEFAULT_OUTPUT_TOKENS`):
providers then bill a known ceiling (Anthropic via litellm would otherwise get the model's
maximum), the one amm's estimates assume."""

PASSTHROUGH_PARAMETERS = frozenset({
    "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "response_format", "user",
    "parallel_tool_calls",
})
"""``ModelRequest.parameters`` given to litellm as they are (``temperature`` and
``priority`` are amm's own: the first is sent once, the second never)."""

_litellm: ModuleType | None = None
_setup_lock = threading.Lock()


def load_litellm() -> ModuleType:
    """Import litellm once, offline and quiet: local price map, no telemetry, no callbacks."""
    global _litellm
    if _litellm is None:
        with _setup_lock:
            if _litellm is None:
                # Must be set before the import, or litellm fetches its price map online.
                os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                os.environ.setdefault("LITELLM_TELEMETRY", "False")
                import litellm

                litellm.telemetry = False
                litellm.suppress_debug_info = True
                litellm.drop_params = True  # a parameter a provider lacks is dropped, not fatal
                litellm.callbacks = []
                litellm.success_callback = []
                litellm.failure_callback = []
                _litellm = litellm
    return _litellm


def warm_litellm() -> None:
    """Import litellm and walk one offline call through it (``mock_response``: no
    network), so the modules litellm imports lazily on its first request are loaded
    too. For a background thread at start-up; never raises."""
    litellm = load_litellm()
    try:
        litellm.completion(model="openai/amm-warm-up", api_key="none", max_retries=0,
                           messages=[{"role": "user", "content": "warm up"}],
                           mock_response="ok")
        import aiohttp  # noqa: F401  (the HTTP stack of amm's own clients)
        import openai  # noqa: F401
    except Exception:  # warming is an optimisation: the first call will pay instead
        pass


class _Clients:
    """The HTTP clients of one event loop (httpx pools cannot cross loops)."""

    __slots__ = ("handler", "httpx", "loop", "openai")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.httpx: Any = None  # httpx.AsyncClient shared by every AsyncOpenAI
        self.openai: dict[tuple[str | None, str | None], Any] = {}
        self.handler: Any = None  # litellm AsyncHTTPHandler for the other providers

    async def aclose(self) -> None:
        if self.handler is not None:
            await self.handler.close()
        if self.httpx is not None:
            await self.httpx.aclose()
        self.openai.clear()
        self.handler = self.httpx = None


class LiteLLMAdapter:
    """Sends one chat request through ``litellm.acompletion`` (a ProviderAdapter)."""

    __slots__ = ("_clients",)

    def __init__(self) -> None:
        self._clients: _Clients | None = None

    async def complete(
        self, model: ModelMetadata, request: ModelRequest, *, api_key: str | None, timeout_s: float
    ) -> ModelResponse:
        """One attempt, no retries; raises :mod:`amm.errors` exceptions."""
        litellm = load_litellm()
        litellm_model, kwargs = self._kwargs(model, request, api_key, timeout_s)
        raw = await _call(litellm, kwargs, model, request, api_key)
        return _to_response(litellm, raw, model, litellm_model)

    async def stream(
        self, model: ModelMetadata, request: ModelRequest, *, api_key: str | None, timeout_s: float
    ) -> LiteLLMStream:
        """Open a streamed attempt (no retries); an HTTP error status raises here, before
        any chunk. Usage is asked for in the final chunk (``include_usage``)."""
        litellm = load_litellm()
        _, kwargs = self._kwargs(model, request, api_key, timeout_s)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        raw = await _call(litellm, kwargs, model, request, api_key)
        return LiteLLMStream(raw, model, request.task_id, api_key)

    def _kwargs(self, model: ModelMetadata, request: ModelRequest, api_key: str | None,
                timeout_s: float) -> tuple[str, dict[str, Any]]:
        litellm_model = model.litellm_model or model.id
        kwargs: dict[str, Any] = {
            name: value for name, value in request.parameters.items()
            if name in PASSTHROUGH_PARAMETERS
        }
        kwargs.update(
            model=litellm_model,
            messages=request.chat_messages(),
            max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=request.effective_temperature,
            timeout=timeout_s,
            max_retries=0,
            drop_params=True,
            # The registry's prices as litellm's custom pricing: litellm prices every
            # reply itself, and without them it walks its whole price map (~0.4 ms).
            input_cost_per_token=model.cost_per_1k_input_tokens / 1000.0,
            output_cost_per_token=model.cost_per_1k_output_tokens / 1000.0,
        )
        if request.tools is not None:
            kwargs["tools"] = [dict(t) for t in request.tools]
        if request.tool_choice is not None:
            kwargs["tool_choice"] = request.tool_choice
        if request.response_format is not None:
            kwargs["response_format"] = dict(request.response_format)
        if api_key is not None:
            kwargs["api_key"] = api_key
        if model.api_base:
            kwargs["api_base"] = model.api_base
        client = self._client_for(litellm_model, model.api_base, api_key, timeout_s)
        if client is not None:
            kwargs["client"] = client
        return litellm_model, kwargs

    def _client_for(
        self, litellm_model: str, api_base: str | None, api_key: str | None, timeout_s: float
    ) -> Any:
        loop = asyncio.get_running_loop()
        clients = self._clients
        if clients is None or clients.loop is not loop:
            # A new loop (or the first call): the old loop's pools cannot be used here.
            clients = self._clients = _Clients(loop)
        prefix = litellm_model.split("/", 1)[0] if "/" in litellm_model else "openai"
        if prefix == "openai":
            client = clients.openai.get((api_base, api_key))
            if client is None:
                import httpx
                import openai

                if clients.httpx is None:
                    # aiohttp under httpx, as litellm's own default client does: httpcore's
                    # pool costs grow with connections (+1.3 ms CPU a call at concurrency 64
                    # in the benchmark), aiohttp's do not.
                    import aiohttp
                    from litellm.llms.custom_httpx.aiohttp_transport import (
                        LiteLLMAiohttpTransport,
                    )

                    clients.httpx = httpx.AsyncClient(
                        timeout=timeout_s,
                        transport=LiteLLMAiohttpTransport(client=lambda: aiohttp.ClientSession()),
                    )
                client = openai.AsyncOpenAI(
                    api_key=api_key or "none", base_url=api_base, max_retries=0,
                    timeout=timeout_s, http_client=clients.httpx,
                )
                clients.openai[(api_base, api_key)] = client
            return client
        if prefix in ("anthropic", "gemini", "ollama_chat", "ollama"):
            if clients.handler is None:
                from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

                clients.handler = AsyncHTTPHandler(timeout=timeout_s)
            return clients.handler
        return None  # other providers: litellm's own client handling

    async def aclose(self) -> None:
        """Close the HTTP clients this adapter opened (idempotent)."""
        clients, self._clients = self._clients, None
        if clients is None:
            return
        running = running_loop()
        if running is clients.loop:
            await clients.aclose()
            await _stop_logging_worker()
        elif not clients.loop.is_closed() and not clients.loop.is_running():
            clients.loop.run_until_complete(clients.aclose())
        # else: their loop is gone, and with it every connection it held.

    def close(self) -> None:
        """Close from sync code: done now when no loop runs; else scheduled on that loop."""
        clients = self._clients
        if clients is None:
            return
        running = running_loop()
        if running is None:
            self._clients = None
            if not clients.loop.is_closed() and not clients.loop.is_running():
                clients.loop.run_until_complete(clients.aclose())
        elif running is clients.loop:
            self._clients = None
            task = running.create_task(clients.aclose())
            _closing.add(task)  # keep it referenced until done
            task.add_done_callback(_closing.discard)
        else:
            self._clients = None


_closing: set[asyncio.Task[None]] = set()


async def _stop_logging_worker() -> None:
    """Stop the logging task litellm started on this loop for our calls; litellm
    restarts it on its next call, so other users of litellm lose nothing."""
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    # Its tasks may belong to a loop already closed (an earlier ``asyncio.run``): cancelling
    # them raises RuntimeError, and there is nothing left of ours to stop.
    with contextlib.suppress(RuntimeError):
        await GLOBAL_LOGGING_WORKER.stop(timeout=1.0)


async def _call(litellm: ModuleType, kwargs: dict[str, Any], model: ModelMetadata,
                request: ModelRequest, api_key: str | None) -> Any:
    """``litellm.acompletion(**kwargs)`` with its exceptions mapped to :mod:`amm.errors`."""
    try:
        return await litellm.acompletion(**kwargs)
    except APIModelError:
        raise
    except Exception as exc:
        raise map_provider_error(
            exc, model_id=model.id, task_id=request.task_id, secret=api_key
        ) from exc


CANCEL_DRAIN_S = 0.25
"""After a caller's cancel, how long at most a stream reads on for the provider's final
usage report (see the module docstring)."""

CANCEL_DRAIN_GAP_S = 0.05
"""... and how long it waits for each next chunk meanwhile: a provider that pauses is left
then, a stream whose rest is already on its way is read to its end. Not less: litellm
takes a few milliseconds to hand over a stream's last chunk (tens on a busy machine)."""


class LiteLLMStream:
    """One streamed attempt through litellm: an async iterator of :class:`StreamChunk`.

    Chunks without text or tool-call pieces (role-only, finish, usage) are read through,
    keeping ``finish_reason`` and the last reported ``usage`` (None: none reported). A
    provider error during iteration is raised mapped to :mod:`amm.errors`. A stream the
    caller closes early is billed as the module docstring says: ``usage`` is then the
    provider's final report, or an estimate with ``metadata["usage_estimated"]`` set.
    """

    __slots__ = ("_closed", "_ended", "_final", "_model", "_raw", "_received", "_secret",
                 "_task_id", "finish_reason", "metadata", "rate_limit", "usage")

    def __init__(self, raw: Any, model: ModelMetadata, task_id: str, secret: str | None) -> None:
        self._raw = raw
        self._model = model
        self._task_id = task_id
        self._secret = secret
        self._ended = False  # litellm's iterator has nothing more of the provider's to give
        self._final = False  # the provider's last chunk came (its finish reason): usage is final
        self._closed = False
        self._received = Accumulator()  # every content chunk read, also after a cancel
        self.finish_reason: str | None = None
        self.usage: TokenUsage | None = None
        self.metadata: dict[str, Any] = {"provider": model.provider}
        hidden: dict[str, Any] = getattr(raw, "_hidden_params", None) or {}
        self.rate_limit = _rate_limit(hidden)
        if self.rate_limit is not None:
            self.metadata["rate_limit"] = self.rate_limit.as_dict()

    def __aiter__(self) -> LiteLLMStream:
        return self

    async def __anext__(self) -> StreamChunk:
        while True:
            try:
                chunk = await self._raw.__anext__()
            except StopAsyncIteration:
                self._ended = True
                self._harvest_usage()
                raise
            except asyncio.CancelledError:
                # litellm's iterator ends with the interrupted read (and would then make up
                # a last chunk): nothing more of the provider's can be read from it.
                self._ended = True
                raise
            except APIModelError:
                self._harvest_usage()
                raise
            except Exception as exc:
                self._harvest_usage()
                raise map_provider_error(exc, model_id=self._model.id, task_id=self._task_id,
                                         secret=self._secret) from exc
            out = self._take(chunk)
            if out:
                self._received.add(out)
                return out

    def _harvest_usage(self) -> None:
        """The last usage the provider reported, also from chunks litellm received but
        held back (a usage report just before a cut): billing is exact when it exists."""
        for chunk in reversed(getattr(self._raw, "chunks", None) or ()):
            if self._take_usage(getattr(chunk, "usage", None)):
                return

    def _take_usage(self, usage: Any) -> bool:
        if usage is None:
            return False
        tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
        tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
        if not (tokens_in or tokens_out):
            return False
        self.usage = TokenUsage(tokens_in, tokens_out)
        return True

    def _take(self, chunk: Any) -> StreamChunk:
        self._take_usage(getattr(chunk, "usage", None))
        if "response_id" not in self.metadata and getattr(chunk, "id", None):
            self.metadata["response_id"] = chunk.id
            self.metadata["response_model"] = getattr(chunk, "model", None)
        choices = getattr(chunk, "choices", None)
        if not choices:
            return _EMPTY_CHUNK
        choice = choices[0]
        if getattr(choice, "finish_reason", None):
            self.finish_reason = choice.finish_reason
            self._final = True
        delta = getattr(choice, "delta", None)
        text = getattr(delta, "content", None) or ""
        calls = getattr(delta, "tool_calls", None) or ()
        if not text and not calls:
            return _EMPTY_CHUNK
        deltas = []
        for i, call in enumerate(calls):
            fn = getattr(call, "function", None)
            index = getattr(call, "index", None)
            deltas.append(ToolCallDelta(
                index=index if isinstance(index, int) else i, id=getattr(call, "id", None),
                name=getattr(fn, "name", None), arguments=getattr(fn, "arguments", None) or ""))
        return StreamChunk(text, tuple(deltas), self._model.id)

    async def aclose(self) -> None:
        """The caller cancels: read on briefly for the provider's final usage report, then
        close the provider's HTTP response (idempotent; never raises)."""
        if self._closed:
            return
        self._closed = True
        cancelled_again = False
        if not self._ended:
            cancelled_again = await self._read_on()
        self._harvest_usage()
        if not self._final:
            self._estimate_rest()
        close = getattr(self._raw, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):  # a broken stream: nothing left to save
                await close()
        if cancelled_again:
            # The cancel that came while reading on was held until the bill was made;
            # it lands at the caller's next await, as it would have without us.
            task = asyncio.current_task()
            if task is not None:
                task.cancel()

    async def _read_on(self) -> bool:
        """Read, passing nothing on, while chunks come within :data:`CANCEL_DRAIN_GAP_S`,
        for :data:`CANCEL_DRAIN_S` at most or to the stream's end. True when the task was
        cancelled (again) meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CANCEL_DRAIN_S
        seen = self.finish_reason  # the caller's answer did not finish: it was cancelled
        try:
            while (left := deadline - loop.time()) > 0:
                async with asyncio.timeout(min(left, CANCEL_DRAIN_GAP_S)):
                    chunk = await self._raw.__anext__()
                self._received.add(self._take(chunk))
        except StopAsyncIteration:
            self._ended = True
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # re-requested by aclose() once the bill is made
            return True
        except Exception:  # a pause (TimeoutError) or a broken stream: nothing more to read
            pass
        finally:
            self.finish_reason = seen
        return False

    def _estimate_rest(self) -> None:
        """No final report: keep what the provider counted so far (Anthropic's input,
        Gemini's cumulative counts), estimate the output it did not count from everything
        received, leave an unreported input to the caller's estimate of the prompt; and
        flag it all as an estimate."""
        reported = self.usage or TokenUsage()
        out = reported.output_tokens or self._received.output_estimate()
        self.usage = TokenUsage(reported.input_tokens, out)
        self.metadata["usage_estimated"] = True


_EMPTY_CHUNK = StreamChunk()


def _tool_calls(message: Any) -> list[ToolCall]:
    calls = getattr(message, "tool_calls", None) or ()
    out = []
    for i, call in enumerate(calls):
        fn = getattr(call, "function", None)
        arguments = getattr(fn, "arguments", None)
        if not isinstance(arguments, str):  # some providers hand back a dict
            import json

            arguments = json.dumps(arguments if arguments is not None else {})
        out.append(ToolCall(getattr(call, "id", None) or f"call_{i}",
                            getattr(fn, "name", None) or "", arguments))
    return out


def _to_response(litellm: ModuleType, raw: Any, model: ModelMetadata,
                 litellm_model: str) -> ModelResponse:
    choice = raw.choices[0] if raw.choices else None
    message = getattr(choice, "message", None)
    content = getattr(message, "content", None) or ""
    usage = getattr(raw, "usage", None)
    input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    hidden: dict[str, Any] = getattr(raw, "_hidden_params", None) or {}
    api_base = hidden.get("api_base") or model.api_base
    address, port = server_of(model.provider, api_base)
    metadata: dict[str, Any] = {
        "finish_reason": getattr(choice, "finish_reason", None),
        "response_id": getattr(raw, "id", None),
        "response_model": getattr(raw, "model", None),
        "provider": model.provider,
        "server_address": address,
        "server_port": port,
        "usage_reported": bool(input_tokens or output_tokens),
    }
    if api_base:
        metadata["api_base"] = api_base
    limits = _rate_limit(hidden)
    if limits is not None:
        metadata["rate_limit"] = limits.as_dict()
    return ModelResponse(
        content=content,
        model_id=model.id,
        token_usage=TokenUsage(input_tokens, output_tokens),
        latency_ms=0.0,  # the client measures the whole attempt
        cost=0.0,  # the client prices the reply: registry prices, else price_map_cost
        metadata=metadata,
        tool_calls=_tool_calls(message),
        finish_reason=getattr(choice, "finish_reason", None),
    )


def price_map_cost(litellm_model: str, input_tokens: int, output_tokens: int) -> float:
    """Cost from litellm's local price map; used only for models the registry lacks
    (the lookup walks the whole map for unknown names: keep it off the common path)."""
    litellm = load_litellm()
    try:
        prompt, completion = litellm.cost_per_token(
            model=litellm_model, prompt_tokens=input_tokens, completion_tokens=output_tokens
        )
    except Exception:  # a model litellm has no price for costs what we know: nothing
        return 0.0
    return float(prompt) + float(completion)


def _rate_limit(hidden: Mapping[str, Any]) -> RateLimitInfo | None:
    """The rate-limit headers litellm kept of the response, or None when there are none."""
    limits = rate_limit_info(hidden.get("additional_headers") or {})
    if not limits:
        return None
    requests, tokens = limits.get("remaining_requests"), limits.get("remaining_tokens")
    return RateLimitInfo(
        remaining_requests=None if requests is None else int(requests),
        remaining_tokens=None if tokens is None else int(tokens),
        reset_requests_s=limits.get("reset_requests_s"),
        reset_tokens_s=limits.get("reset_tokens_s"))
