"""Streamed answers: the chunks a caller sees, and how they add up to one answer.

A stream is opened by ``llm.stream(...)`` / :meth:`amm.manager.ModelManager.stream`
and read with ``async for`` (or ``for`` in a sync agent)::

    stream = llm.stream("Summarise the incident", max_tokens=300)
    async for chunk in stream:
        print(chunk.delta, end="", flush=True)
    reply = stream.response          # the whole ModelResponse: usage, cost, quality

Honest semantics: retries and failover happen only before the first chunk reaches
the caller. After that a provider error ends the stream with
:class:`~amm.errors.StreamInterruptedError` (partial text, usage so far, billed);
closing the stream early (``break``, ``await stream.aclose()``, leaving ``async with``,
or the caller's task cancelled) ends it for the caller at once and settles its
rate-limit and budget holds. By default (``on_cancel="drain"``) the manager then reads
the provider's stream to its end in the background and bills the provider's own usage
report, exact (the rest of the answer is paid for); with ``on_cancel="close"`` the
connection is closed at once and the bill is an estimate flagged ``usage_estimated``
(see :mod:`amm._drains` and :mod:`amm._litellm`). ``await manager.drain_streams()``
waits for pending bills.

This module holds the value objects and the accumulator; the provider side is in
:mod:`amm._litellm` and :mod:`amm.api_client`, the request path in :mod:`amm.manager`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from amm._aio import running_loop
from amm.errors import CANCELLED
from amm.models import ModelRequest, ModelResponse, TokenUsage, ToolCall, estimate_tokens

__all__ = ["Accumulator", "ManagedStream", "StreamChunk", "ToolCallDelta"]


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of one tool call: ``index`` says which call; ``id`` and ``name`` come
    with its first piece, ``arguments`` is the next fragment of the JSON text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """What one step of a stream gives the caller: new text (may be empty) and
    tool-call pieces (possibly none)."""

    delta: str = ""
    tool_call_deltas: tuple[ToolCallDelta, ...] = ()
    model_id: str = ""

    def __bool__(self) -> bool:
        return bool(self.delta or self.tool_call_deltas)


@dataclass(slots=True)
class _CallParts:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class Accumulator:
    """Adds chunks up: the text so far, tool calls by index, the provider's usage.

    ``usage`` is the last usage the provider reported (None: it reported none), so a
    stream cut after a usage report is billed exactly that.
    """

    __slots__ = ("_calls", "_text", "chunks", "finish_reason", "usage")

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, _CallParts] = {}
        self.chunks = 0
        self.finish_reason: str | None = None
        self.usage: TokenUsage | None = None

    def add(self, chunk: StreamChunk) -> None:
        """Take one chunk in (empty chunks count for nothing)."""
        if not chunk:
            return
        self.chunks += 1
        if chunk.delta:
            self._text.append(chunk.delta)
        for d in chunk.tool_call_deltas:
            parts = self._calls.get(d.index)
            if parts is None:
                parts = self._calls[d.index] = _CallParts()
            if d.id:
                parts.id = d.id
            if d.name:
                parts.name = d.name
            if d.arguments:
                parts.arguments.append(d.arguments)

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._text)

    def tool_calls(self) -> list[ToolCall]:
        """The tool calls received so far, in the provider's order."""
        return [ToolCall(p.id or f"call_{i}", p.name, "".join(p.arguments))
                for i, p in sorted(self._calls.items())]

    def output_estimate(self) -> int:
        """amm's estimate (:func:`~amm.models.estimate_tokens`) of the output received so
        far: the text, the tool calls' names and arguments."""
        out = self.text + "".join("".join(p.arguments) + p.name for p in self._calls.values())
        return estimate_tokens(out)

    def usage_or_estimate(self, prompt_tokens: int) -> tuple[TokenUsage, bool]:
        """The provider's usage where it reported it; each part it did not report (zero)
        is estimated: ``prompt_tokens`` in, the received text and tool arguments out.
        The flag says some part was estimated (e.g. Anthropic counts the input when a
        stream starts and the output only at its end: a cut stream has the first only)."""
        reported = self.usage or TokenUsage()
        tokens_in, tokens_out = reported.input_tokens, reported.output_tokens
        estimated = False
        if not tokens_in:
            tokens_in, estimated = prompt_tokens, True
        if not tokens_out and (guess := self.output_estimate()):
            tokens_out, estimated = guess, True
        return TokenUsage(tokens_in, tokens_out), estimated


class ManagedStream:
    """A request streamed through the whole managed path (see the module docstring).

    Built by :meth:`amm.manager.ModelManager.stream` (and ``llm.stream``); nothing is
    sent until the first ``__anext__``. Read it with ``async for``, or ``for`` from sync
    code (each step then runs on amm's portal loop). ``response`` is the whole answer
    once the loop has ended; ``model_id`` the model that is streaming.
    """

    __slots__ = ("_cache_key", "_cached", "_manager", "_opened", "_reservation", "_source",
                 "_span", "_sync", "constraints", "request", "response")

    def __init__(self, manager: Any, request: ModelRequest, constraints: Any) -> None:
        self._manager = manager
        self.request = request
        self.constraints = constraints
        self._opened = False
        self._source: Any = None  # amm.api_client.AttemptStream
        self._cached: list[StreamChunk] | None = None
        self._reservation: Any = None
        self._cache_key: str | None = None
        self._span: Any = None  # the invoke_agent span this stream opened, if any
        self._sync = False
        self.response: ModelResponse | None = None

    @property
    def model_id(self) -> str | None:
        """The model answering (None before the first chunk)."""
        if self.response is not None:
            return self.response.model_id
        return self._source.model.id if self._source is not None else None

    def __repr__(self) -> str:
        state = ("done" if self.response is not None
                 else "streaming" if self._opened else "not started")
        return (f"ManagedStream({state}, agent_type={self.request.agent_type!r}, "
                f"model={self.model_id!r})")

    # -- called by the manager while opening -------------------------------------------

    def serve_cached(self, response: ModelResponse) -> None:
        """A cache hit: stream the cached answer (its text, then its tool calls)."""
        deltas = tuple(ToolCallDelta(i, c.id, c.name, c.arguments)
                       for i, c in enumerate(response.tool_calls))
        chunks = [StreamChunk(response.content, (), response.model_id)] if response.content else []
        if deltas:
            chunks.append(StreamChunk("", deltas, response.model_id))
        self._cached = chunks
        self.response = response

    def serve(self, source: Any, reservation: Any, cache_key: str | None) -> None:
        """A provider stream whose first chunk has arrived."""
        self._source = source
        self._reservation = reservation
        self._cache_key = cache_key

    # -- iteration -----------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        # A generator, so that leaving ``async for`` early (break, return, an exception
        # in the body) closes the stream: the generator's finaliser runs aclose().
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[StreamChunk]:
        try:
            while True:
                try:
                    chunk = await self.__anext__()
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            if self.response is None:  # left before the end: cancel the provider call
                await self.aclose()

    async def __anext__(self) -> StreamChunk:
        if not self._opened:
            await self._open()
        active = self._activate()
        try:
            return await self._next()
        finally:
            _deactivate(active)

    async def _next(self) -> StreamChunk:
        if self._cached is not None:
            if self._cached:
                return self._cached.pop(0)
            self._end_span(None)
            raise StopAsyncIteration
        source = self._source
        if source is None or self.response is not None:
            raise StopAsyncIteration
        try:
            chunk: StreamChunk = await source.__anext__()
            return chunk
        except StopAsyncIteration:
            await self._finish()
            raise
        except BaseException as exc:
            if source.done:  # interrupted: billed by the attempt; free the headroom
                self._settle(source.response_or_billed())
                self._end_span(exc)
            else:  # the caller's task was cancelled mid-read: cancel the provider call
                await self.aclose()
            raise

    async def _open(self) -> None:
        from amm.manager import ACTIVE_AGENT

        self._opened = True
        m, rq = self._manager, self.request
        if not self._sync and ACTIVE_AGENT.get() != (rq.agent_type, rq.task_id):
            # Current only while amm works on the stream (_activate), never in the
            # caller's loop body or after it: a loop left by ``break`` leaves nothing.
            self._span = m.recorder.agent_span(rq.agent_type, rq.task_id)
            self._span.start()
        active = self._activate()
        try:
            await m._open_stream(self)
        except BaseException as exc:
            self._end_span(exc)
            raise
        finally:
            _deactivate(active)

    def _activate(self) -> tuple[Any, Any] | None:
        """This stream's agent span made current (None: it has none)."""
        span = self._span
        return (span, span.activate()) if span is not None else None

    async def _finish(self) -> None:
        source = self._source
        response = source.response
        self._settle(response)
        try:
            self.response = await self._manager._close_stream(self.request, response,
                                                              self._cache_key)
        except BaseException as exc:
            self.response = response
            self._end_span(exc)
            raise
        self._end_span(None)

    def _settle(self, billed: ModelResponse | None) -> None:
        """Settle the rate-limit and budget holds with what was billed (idempotent)."""
        holds, self._reservation = self._reservation, None
        if holds is None:
            return
        limit, budget = holds
        limit.settle(billed.token_usage.total_tokens or 0 if billed is not None else 0)
        if budget is not None:
            budget.settle(billed.cost if billed is not None else 0.0)

    def _end_span(self, exc: BaseException | None) -> None:
        span, self._span = self._span, None
        if span is not None:
            span.finish(exc)

    async def aclose(self) -> None:
        """Stop: the caller gets nothing more, at once; the rate-limit reservation and
        the budget hold are settled now. The provider's stream is then read to its end
        in the background and billed its own usage report (``on_cancel="drain"``, the
        default), or closed now and billed an estimate, flagged (``"close"``); see
        :mod:`amm._drains`. Safe to call twice, and after the end."""
        source = self._source
        active = self._activate()
        try:
            if source is not None and not source.done:
                await self._leave(source)
                cancelled = _Cancelled(f"{source.model.id}: the caller closed the stream")
                self._end_span(cancelled)
            else:
                self._end_span(None)
        finally:
            _deactivate(active)
        self._cached = None if self._cached is None else []

    async def _leave(self, source: Any) -> None:
        m = self._manager
        settings = m.settings
        if settings.on_cancel == "close":
            try:
                await source.aclose()
            finally:  # settled even when a second cancel interrupts the close
                self._settle(source.response_or_billed())
            return
        holds = self._reservation
        self._settle(source.leave())  # no await from the caller's leaving to here
        # Started while the agent span is current: the chat span the drain records when
        # it books the attempt is that span's child (and may end after it).
        m.stream_drains.start(source, holds[0] if holds is not None else None,
                              timeout_s=settings.cancel_drain_timeout_s)

    def __del__(self) -> None:
        # Dropped mid-stream without aclose(): close it on its loop, so the provider's
        # connection and the rate-limit and budget holds are not kept until exit.
        source = self._source
        if source is None or source.done:
            return
        loop = running_loop()
        if loop is None:
            return
        task = loop.create_task(self.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def __aenter__(self) -> ManagedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- sync use ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[StreamChunk]:
        from amm.decorator import _portal

        portal = _portal()
        self._sync = True
        try:
            while True:
                try:
                    chunk = portal.run(self.__anext__())
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            if self.response is None:
                portal.run(self.aclose())

    def close(self) -> None:
        """Blocking :meth:`aclose`, for sync agents."""
        from amm.decorator import _portal

        _portal().run(self.aclose())

    def __enter__(self) -> ManagedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.response is None:
            self.close()


_closing: set[asyncio.Task[None]] = set()


def _deactivate(active: tuple[Any, Any] | None) -> None:
    """Undo :meth:`ManagedStream._activate` (its span may have ended meanwhile)."""
    if active is not None:
        span, tokens = active
        span.deactivate(tokens)


class _Cancelled(Exception):
    """Ends the agent span of a stream the caller closed (``error.type`` cancelled)."""

    error_type = CANCELLED
