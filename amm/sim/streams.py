"""Streamed answers: each protocol's chunk format, and the gate tests order streams by.

An answer is cut into content pieces (a few tokens of text, a tool call's opening,
a fragment of its arguments); an encoder per protocol turns each piece into the
bytes the provider would send, plus the frames around them (OpenAI's role chunk
and ``[DONE]``, Anthropic's ``message_start`` ... ``message_stop``, Ollama's final
``done: true`` line, Gemini's closing candidate). The server writes one piece per
socket write, so a client sees each chunk as it is sent.
"""

from __future__ import annotations

import abc
import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from amm.sim.behaviour import Decision
from amm.sim.parts import (
    anthropic_tool_use,
    gemini_function_call,
    gemini_usage,
    ollama_tool_call,
    openai_tool_call,
)
from amm.sim.protocols import AnthropicProtocol, GoogleProtocol, OpenAIProtocol
from amm.sim.text import count_tokens, split_tokens
from amm.sim.wire import Answer, ParsedRequest, rand_id

__all__ = ["ENCODERS", "Piece", "StreamEncoder", "StreamGate", "pieces"]

TOKENS_PER_PIECE = 4
"""Tokens of text (or of tool arguments) per content chunk."""

_GATE_POLL_S = 0.002
"""How often a gated stream looks at its gate; the gate is a threading.Event set from
the test's thread, which the server's loop cannot await directly."""


class StreamGate:
    """Holds every stream of one model after its first content chunk until released.

    >>> gate = sim.stream_gate("sim-openai")   # closed
    >>> # ... start a stream; gate.first_chunk_sent.wait(); assert a chunk arrived
    >>> gate.release()
    """

    __slots__ = ("_released", "client_gone", "first_chunk_sent")

    def __init__(self) -> None:
        self.first_chunk_sent = threading.Event()
        """Set by the server once a gated stream has written its first content chunk."""
        self.client_gone = threading.Event()
        """Set by the server when a client closed its connection while its stream waited at
        the gate (the stream's next write then fails: billed as ``client_left``)."""
        self._released = threading.Event()

    def __repr__(self) -> str:
        state = "released" if self._released.is_set() else "closed"
        return f"<StreamGate {state} first_chunk_sent={self.first_chunk_sent.is_set()}>"

    @property
    def closed(self) -> bool:
        """Whether streams still wait at the gate."""
        return not self._released.is_set()

    def release(self) -> None:
        """Let every waiting and later stream go on (thread-safe, idempotent)."""
        self._released.set()

    async def passed(self, gone: Callable[[], bool] | None = None) -> None:
        """Called by a stream after its first content chunk: wait while closed, noting
        (``client_gone``) when ``gone()`` says the client closed the connection."""
        self.first_chunk_sent.set()
        while not self._released.is_set():
            if gone is not None and not self.client_gone.is_set() and gone():
                self.client_gone.set()
            await asyncio.sleep(_GATE_POLL_S)


@dataclass(frozen=True, slots=True)
class Piece:
    """One content chunk: text, or part of tool call number ``call``.

    A call's opening piece (``opens``) carries its name; the others carry argument
    text. ``tokens`` is what the piece adds to the output bill.
    """

    text: str
    tokens: int
    call: int | None = None
    opens: bool = False


def pieces(answer: Answer, *, whole_calls: bool) -> list[Piece]:
    """``answer`` as content chunks; ``whole_calls`` sends each tool call in one chunk
    (Gemini, Ollama) instead of an opening and argument fragments (OpenAI, Anthropic)."""
    out: list[Piece] = []
    if answer.text or not answer.tool_calls:
        out.extend(Piece(t, count_tokens(t)) for t in split_tokens(answer.text, TOKENS_PER_PIECE))
    for index, call in enumerate(answer.tool_calls):
        if whole_calls:
            out.append(Piece(call.arguments_json, call.tokens, index, opens=True))
            continue
        out.append(Piece("", count_tokens(call.name), index, opens=True))
        out.extend(Piece(t, count_tokens(t), index)
                   for t in split_tokens(call.arguments_json, TOKENS_PER_PIECE))
    return out


class StreamEncoder(abc.ABC):
    """One protocol's stream frames for one answer. Each method returns the bytes to
    write; ``sent`` is the output tokens sent so far, this piece included."""

    content_type: ClassVar[str] = "text/event-stream"
    whole_calls: ClassVar[bool] = False

    def __init__(self, decision: Decision, request: ParsedRequest, answer: Answer,
                 rng: random.Random) -> None:
        self.decision = decision
        self.request = request
        self.answer = answer
        self.rng = rng

    def opening(self) -> bytes:
        """Frames before the first piece."""
        return b""

    @abc.abstractmethod
    def piece(self, piece: Piece, sent: int) -> bytes:
        """The frames of one content piece."""

    @abc.abstractmethod
    def closing(self) -> bytes:
        """Frames after the last piece: stop reason, usage, end marker."""

    def usage_before_cut(self, sent: int) -> bytes:
        """The in-stream usage report sent just before a cut, where the protocol has one."""
        return b""


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


class OpenAIStream(StreamEncoder):
    """``chat.completion.chunk`` events, a ``choices: []`` usage chunk when asked, ``[DONE]``."""

    def __init__(self, decision: Decision, request: ParsedRequest, answer: Answer,
                 rng: random.Random) -> None:
        super().__init__(decision, request, answer, rng)
        self._head = {"id": f"chatcmpl-{rand_id(rng, 29)}", "object": "chat.completion.chunk",
                      "created": int(time.time()), "model": decision.model,
                      "system_fingerprint": "fp_amm_sim"}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**self._head, "choices": [choice]})

    def _usage(self, output_tokens: int) -> bytes:
        tokens = self.answer.input_tokens
        usage = {"prompt_tokens": tokens, "completion_tokens": output_tokens,
                 "total_tokens": tokens + output_tokens}
        return _sse({**self._head, "choices": [], "usage": usage})

    def opening(self) -> bytes:
        content = None if self.answer.tool_calls else ""
        return self._chunk({"role": "assistant", "content": content, "refusal": None})

    def piece(self, piece: Piece, sent: int) -> bytes:
        if piece.call is None:
            return self._chunk({"content": piece.text})
        call = openai_tool_call(self.answer.tool_calls[piece.call])
        if piece.opens:
            call["function"]["arguments"] = ""
            return self._chunk({"tool_calls": [{"index": piece.call, **call}]})
        return self._chunk({"tool_calls": [{"index": piece.call,
                                            "function": {"arguments": piece.text}}]})

    def closing(self) -> bytes:
        out = self._chunk({}, OpenAIProtocol.finish_reason(self.answer))
        if self.request.include_usage:
            out += self._usage(self.answer.output_tokens)
        return out + b"data: [DONE]\n\n"

    def usage_before_cut(self, sent: int) -> bytes:
        return self._usage(sent) if self.request.include_usage else b""


class AnthropicStream(StreamEncoder):
    """``message_start``, content blocks (``text_delta`` / ``input_json_delta``),
    ``message_delta`` with the stop reason and usage, ``message_stop``."""

    def __init__(self, decision: Decision, request: ParsedRequest, answer: Answer,
                 rng: random.Random) -> None:
        super().__init__(decision, request, answer, rng)
        self._block = -1
        self._block_open = False

    def opening(self) -> bytes:
        message: dict[str, Any] = {
            "id": f"msg_01{rand_id(self.rng, 22)}", "type": "message", "role": "assistant",
            "model": self.decision.model, "content": [], "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.answer.input_tokens, "output_tokens": 0}}
        return _sse({"type": "message_start", "message": message}, "message_start")

    def _start(self, block: dict[str, Any]) -> bytes:
        out = self._stop()
        self._block += 1
        self._block_open = True
        return out + _sse({"type": "content_block_start", "index": self._block,
                           "content_block": block}, "content_block_start")

    def _stop(self) -> bytes:
        if not self._block_open:
            return b""
        self._block_open = False
        return _sse({"type": "content_block_stop", "index": self._block}, "content_block_stop")

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _sse({"type": "content_block_delta", "index": self._block, "delta": delta},
                    "content_block_delta")

    def piece(self, piece: Piece, sent: int) -> bytes:
        if piece.call is None:
            out = b"" if self._block_open else self._start({"type": "text", "text": ""})
            return out + self._delta({"type": "text_delta", "text": piece.text})
        if piece.opens:
            call = self.answer.tool_calls[piece.call]
            return self._start(anthropic_tool_use(call, streamed=True))
        return self._delta({"type": "input_json_delta", "partial_json": piece.text})

    def _message_delta(self, stop_reason: str | None, output_tokens: int) -> bytes:
        usage = {"input_tokens": self.answer.input_tokens, "output_tokens": output_tokens}
        return _sse({"type": "message_delta",
                     "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                     "usage": usage}, "message_delta")

    def closing(self) -> bytes:
        return (self._stop()
                + self._message_delta(AnthropicProtocol.stop_reason(self.answer),
                                      self.answer.output_tokens)
                + _sse({"type": "message_stop"}, "message_stop"))

    # No usage before a cut: Anthropic reports output usage only in ``message_delta``,
    # which ends the message for every client, so a cut after it would look complete.
    # The input count is in ``message_start``; the output must be estimated.


class OllamaStream(StreamEncoder):
    """NDJSON lines, ``done: false`` then a last ``done: true`` line with the counts."""

    content_type = "application/x-ndjson"
    whole_calls = True

    def _line(self, message: dict[str, Any], **extra: Any) -> bytes:
        created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body = {"model": self.decision.model, "created_at": created,
                "message": {"role": "assistant", **message}, **extra}
        return json.dumps(body).encode() + b"\n"

    def piece(self, piece: Piece, sent: int) -> bytes:
        if piece.call is None:
            return self._line({"content": piece.text}, done=False)
        call = ollama_tool_call(self.answer.tool_calls[piece.call])
        return self._line({"content": "", "tool_calls": [call]}, done=False)

    def closing(self) -> bytes:
        total_ns = int(self.decision.delay_s * 1e9)
        return self._line(
            {"content": ""}, done_reason="length" if self.answer.truncated else "stop", done=True,
            total_duration=total_ns, load_duration=0,
            prompt_eval_count=self.answer.input_tokens, prompt_eval_duration=total_ns // 4,
            eval_count=self.answer.output_tokens, eval_duration=total_ns - total_ns // 4)


class GoogleStream(StreamEncoder):
    """``data:`` chunks of candidates, each with the cumulative ``usageMetadata``."""

    whole_calls = True

    def __init__(self, decision: Decision, request: ParsedRequest, answer: Answer,
                 rng: random.Random) -> None:
        super().__init__(decision, request, answer, rng)
        self._response_id = rand_id(rng, 22)

    def _chunk(self, parts: list[dict[str, Any]], sent: int, finish: str | None = None) -> bytes:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish is not None:
            candidate["finishReason"] = finish
        return _sse({"candidates": [candidate],
                     "usageMetadata": gemini_usage(self.answer.input_tokens, sent),
                     "modelVersion": self.decision.model, "responseId": self._response_id})

    def piece(self, piece: Piece, sent: int) -> bytes:
        if piece.call is None:
            return self._chunk([{"text": piece.text}], sent)
        return self._chunk([gemini_function_call(self.answer.tool_calls[piece.call])], sent)

    def closing(self) -> bytes:
        return self._chunk([{"text": ""}], self.answer.output_tokens,
                           GoogleProtocol.finish_reason(self.answer))


ENCODERS: dict[str, type[StreamEncoder]] = {
    "openai": OpenAIStream, "anthropic": AnthropicStream, "ollama": OllamaStream,
    "google": GoogleStream,
}
"""Protocol name -> its stream encoder."""
