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
and the output at the end, Gemini cumulative counts on every chunk. No provider here
offers a request's usage afterwards. So a stream the caller leaves has two endings
(the manager's ``on_cancel``, :mod:`amm._drains`):

- :meth:`LiteLLMStream.drain` (the default): read the rest, passing nothing on, to the
  provider's final usage report, which is then the bill, exact. It runs in the
  background, so the caller does not wait for it; the provider generates (and bills)
  the rest of the answer meanwhile, up to ``max_tokens``. Once the caller holds the
  stream (after the first content chunk), a reader task of the stream's own reads
  litellm's iterator and the caller takes from it, so that a cancel of the caller's
  task mid-read cancels only its wait and not litellm's iterator (which would end with
  the interrupted read): the drain goes on from where the reader is. (The whole
  stream's time and CPU are unchanged by it within the noise of ``make bench``'s mock;
  the first chunk is read without it.)
- :meth:`LiteLLMStream.aclose`: close the connection at once. The provider stops when
  it notices, and the bill is an estimate, flagged ``usage_estimated``: the counts the
  provider reported so far (a floor) and amm's token estimate of everything received
  for the rest. It stays an estimate because the tokens generated between the client's
  last read and the provider noticing reach no client.

A drain that runs out of time, or a stream that breaks without a report, is closed and
billed the same estimate.
"""

from __future__ import annotations

import asyncio
import collections
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


class LiteLLMStream:
    """One streamed attempt through litellm: an async iterator of :class:`StreamChunk`.

    Chunks without text or tool-call pieces (role-only, finish, usage) are read through,
    keeping ``finish_reason`` and the last reported ``usage`` (None: none reported). A
    provider error during iteration is raised mapped to :mod:`amm.errors`. A stream the
    caller leaves early ends with :meth:`drain` (read to its end: ``usage`` is the
    provider's final report) or :meth:`aclose` (closed at once); where no final report
    came, ``usage`` is an estimate and ``metadata["usage_estimated"]`` is set (see the
    module docstring).
    """

    __slots__ = ("_closed", "_ended", "_final", "_model", "_pump", "_queue", "_raw",
                 "_received", "_secret", "_task_id", "_waiter", "finish_reason", "metadata",
                 "rate_limit", "usage")

    def __init__(self, raw: Any, model: ModelMetadata, task_id: str, secret: str | None) -> None:
        self._raw = raw
        self._model = model
        self._task_id = task_id
        self._secret = secret
        self._ended = False  # litellm's iterator has nothing more of the provider's to give
        self._final = False  # the provider's last chunk came (its finish reason): usage is final
        self._closed = False
        # The reader task once the caller holds the stream (see _read), what it has read
        # and not yet handed over (litellm's chunk, or the exception that ended it), and
        # the future of a read waiting for it.
        self._pump: asyncio.Task[None] | None = None
        self._queue: collections.deque[tuple[bool, Any]] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
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
                chunk = await self._read()
            except StopAsyncIteration:
                self._ended = True
                self._harvest_usage()
                raise
            except asyncio.CancelledError:
                if self._pump is None:
                    # A read of its own (the first): litellm's iterator ends with it (and
                    # would then make up a last chunk): nothing more can be read from it.
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

    async def _read(self) -> Any:
        """litellm's next chunk. The first content chunk (which the time to first chunk
        measures) is read here; after it, while the caller holds the stream, a reader
        task of the stream's own (:meth:`_run_pump`) reads and this takes from it. A
        cancel of the caller's task mid-read then cancels only the wait, not litellm's
        iterator (which would end with the interrupted read), so :meth:`drain` can read
        on to the provider's usage report. A drain without a reader reads itself."""
        if self._pump is None:
            if not self._received.chunks or self._closed:
                return await self._raw.__anext__()
            self._pump = asyncio.get_running_loop().create_task(self._run_pump())
        queue = self._queue
        while not queue:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter
        ok, item = queue.popleft()
        if ok:
            return item
        raise item

    async def _run_pump(self) -> None:
        """Read litellm's chunks into the queue, in order, to the end of the stream."""
        raw = self._raw
        ok, item = True, None
        try:
            while ok:
                try:
                    item = await raw.__anext__()
                except Exception as exc:  # StopAsyncIteration too: handed over in order
                    ok, item = False, exc
                self._queue.append((ok, item))
                if self._wake():
                    # The reader waited: let it take the chunk before the next is read
                    # (a burst already received would otherwise all be read first).
                    await asyncio.sleep(0)
        except asyncio.CancelledError:  # closed: a read waiting must not wait forever
            self._queue.append((False, ConnectionError("the stream was closed")))
            self._wake()
            raise

    def _wake(self) -> bool:
        """Wake a read waiting for the queue; True when there was one."""
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return False
        waiter.set_result(None)
        return True

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

    async def drain(self, timeout_s: float) -> None:
        """The caller left: read the rest, passing nothing on, to the provider's final
        usage report (exact), for ``timeout_s`` at most; then close. Where the stream
        ends without a report, breaks, runs out of time or this is cancelled (a manager
        closing), ``usage`` is an estimate (flagged). Idempotent; raises only a cancel."""
        if self._closed:
            return
        self._closed = True
        seen = self.finish_reason  # the caller's answer did not finish: it was cancelled
        try:
            if not self._ended:
                async with asyncio.timeout(timeout_s):
                    while True:
                        self._received.add(self._take(await self._read()))
        except StopAsyncIteration:
            self._ended = True
        except Exception:  # out of time, or a broken stream: nothing more to read
            pass
        finally:
            self.finish_reason = seen
            self._settle_usage()
            await self._close_raw()

    async def aclose(self) -> None:
        """Close the provider's HTTP response now (the provider stops generating when it
        notices); ``usage`` is what it reported so far, the rest estimated (flagged).
        Idempotent; never raises."""
        if self._closed:
            return
        self._closed = True
        self._settle_usage()
        await self._close_raw()

    def _settle_usage(self) -> None:
        self._harvest_usage()
        if not self._final:
            self._estimate_rest()

    async def _close_raw(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None and not pump.done():
            pump.cancel()  # its read unwound before the response is closed under it
            await asyncio.wait([pump])  # (wait() never raises what ended the pump)
        close = getattr(self._raw, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):  # a broken stream: nothing left to save
                await close()

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
