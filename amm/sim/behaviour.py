"""What the simulator does with one request: the per-model state and the decision.

Everything here is plain, synchronous and clock-injected, so determinism, the rpm
window and degradation are tested without a server. The server asks
:meth:`ModelState.decide` under its lock, then carries the :class:`Decision` out.

Decisions are drawn from an RNG seeded by (seed, model, request index), so they do
not depend on how requests to *other* models interleave, nor on concurrency.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum

from amm.sim.profile import ModelProfile

__all__ = ["BILLS_KEPT", "WINDOW_S", "Bill", "Decision", "Fault", "ModelState", "RateHeaders",
           "model_seed"]

WINDOW_S = 60.0
"""Length of the sliding window ``rpm_limit`` counts requests in."""

BILLS_KEPT = 10_000
"""Per-request bills each model keeps, the oldest dropped first: a test run's worth,
bounded for a long-running ``amm sim``."""

_UNLIMITED_RPM = 10_000
"""The limit advertised in rate-limit headers when the profile sets none, so that
clients see the headers on every answer, as OpenAI sends them."""


class Fault(Enum):
    """Why a request is not answered normally. Protocols map each to their error."""

    NOT_FOUND = "not_found"
    AUTH = "auth"
    FORBIDDEN = "forbidden"
    QUOTA = "quota"
    RATE_LIMIT = "rate_limit"
    UNAVAILABLE = "unavailable"
    SERVER_ERROR = "server_error"
    CONTEXT = "context"
    BAD_REQUEST = "bad_request"


@dataclass(frozen=True, slots=True)
class RateHeaders:
    """The request-window state a provider reports in its rate-limit headers."""

    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """How to answer one request.

    ``fault`` is ``None`` for a 200; then ``malformed`` says the body is broken,
    ``good`` picks the text quality and ``delay_s`` is the wait before answering
    (a hang included). ``rng_seed`` seeds ids and text so they are reproducible.
    ``empty``, ``missing_usage`` and ``truncated_body`` are the other broken 200s
    (see :class:`ModelProfile`); streamed answers ignore them.
    """

    model: str
    index: int
    status: int
    fault: Fault | None = None
    delay_s: float = 0.0
    good: bool = True
    malformed: bool = False
    rng_seed: int = 0
    rate: RateHeaders | None = None
    max_context: int | None = None
    prompt_tokens: int = 0
    empty: bool = False
    missing_usage: bool = False
    truncated_body: bool = False


@dataclass(frozen=True, slots=True)
class Bill:
    """One billed answer, a line of the provider's usage export.

    ``prompt`` is the request's last user text (how a test finds its request);
    ``ended`` says how the answer ended: ``complete``, ``cut`` (the simulator cut the
    stream), or ``client_left`` (the client closed it first: billed up to the chunk
    being written when the simulator noticed, as providers bill what they generated).
    """

    model: str
    prompt: str
    input_tokens: int
    output_tokens: int
    stream: bool = False
    ended: str = "complete"


def model_seed(seed: int, model: str) -> int:
    """A stable 64-bit seed for ``model`` (``hash()`` is salted per process)."""
    digest = hashlib.sha256(f"{seed}\x00{model}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(slots=True)
class ModelState:
    """One model's profile, request index, rpm window and counters."""

    model: str
    profile: ModelProfile | None
    seed: int
    next_index: int = 0
    window: deque[float] = field(default_factory=deque)
    statuses: Counter[int] = field(default_factory=Counter)
    input_tokens: int = 0
    output_tokens: int = 0
    billed_answers: int = 0
    received_unparsed: int = 0
    bills: deque[Bill] = field(default_factory=lambda: deque(maxlen=BILLS_KEPT))

    def reset(self) -> None:
        """Request index, window and counters back to zero; the profile stays."""
        self.next_index = 0
        self.window.clear()
        self.statuses.clear()
        self.input_tokens = 0
        self.output_tokens = 0
        self.billed_answers = 0
        self.received_unparsed = 0
        self.bills.clear()

    @property
    def received(self) -> int:
        """Requests received since the last reset, unparseable ones included."""
        return self.next_index + self.received_unparsed

    def decide(self, *, api_key: str | None, prompt_tokens: int, now: float) -> Decision:
        """Take the next request index and decide how to answer it."""
        index = self.next_index
        self.next_index += 1
        profile = self.profile
        if profile is None:
            return Decision(self.model, index, 404, Fault.NOT_FOUND)
        # Draw every random number up front, in a fixed order, so that the decision for
        # index i is the same whichever branch an earlier check takes.
        rng = random.Random(self.seed ^ (index * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF))
        u_error, u_timeout, u_malformed, u_quality, u_jitter = (rng.random() for _ in range(5))
        rng_seed = rng.getrandbits(64)
        # Drawn after rng_seed so that adding them kept every earlier answer the same.
        u_empty, u_usage, u_truncated = (rng.random() for _ in range(3))

        if profile.api_key is not None and api_key != profile.api_key:
            return Decision(self.model, index, 401, Fault.AUTH)
        if profile.forbidden:
            return Decision(self.model, index, 403, Fault.FORBIDDEN)
        if profile.quota_exhausted:
            return Decision(self.model, index, 429, Fault.QUOTA)
        rate = self._admit(profile, now)
        if rate.retry_after_s is not None:
            return Decision(self.model, index, 429, Fault.RATE_LIMIT, rate=rate)
        if profile.in_outage(index):
            return Decision(self.model, index, 503, Fault.UNAVAILABLE, rate=rate)
        if u_error < profile.error_rate:
            status = profile.error_status
            fault = Fault.UNAVAILABLE if status == 503 else Fault.SERVER_ERROR
            return Decision(self.model, index, status, fault, rate=rate)
        if profile.max_context is not None and prompt_tokens > profile.max_context:
            return Decision(self.model, index, 400, Fault.CONTEXT, rate=rate,
                            max_context=profile.max_context, prompt_tokens=prompt_tokens)

        degraded = profile.degraded(index)
        quality = profile.quality
        latency_ms = profile.latency_ms
        if degraded:
            if profile.degraded_quality is not None:
                quality = profile.degraded_quality
            latency_ms *= profile.degraded_latency_factor
        jitter_ms = profile.latency_jitter_ms * (2.0 * u_jitter - 1.0)
        delay_s = max(0.0, latency_ms + jitter_ms) / 1000.0
        if u_timeout < profile.timeout_rate:
            delay_s += profile.hang_s
        return Decision(
            self.model, index, 200,
            delay_s=delay_s,
            good=u_quality < quality,
            malformed=u_malformed < profile.malformed_rate,
            rng_seed=rng_seed,
            rate=rate,
            empty=u_empty < profile.empty_choices_rate,
            missing_usage=u_usage < profile.missing_usage_rate,
            truncated_body=u_truncated < profile.truncated_body_rate,
        )

    def _admit(self, profile: ModelProfile, now: float) -> RateHeaders:
        """Count the request in the sliding window unless the window is full."""
        window = self.window
        while window and window[0] <= now - WINDOW_S:
            window.popleft()
        limit = profile.rpm_limit or _UNLIMITED_RPM
        if len(window) >= limit:
            free_in = window[0] + WINDOW_S - now
            retry = profile.retry_after_s if profile.retry_after_s is not None else free_in
            return RateHeaders(limit, 0, free_in, retry_after_s=float(math.ceil(retry)))
        window.append(now)
        reset_s = window[0] + WINDOW_S - now
        return RateHeaders(limit, limit - len(window), reset_s)

    def record(self, status: int, bill: Bill | None = None) -> None:
        """Count an answer sent; a billed one (200 with usage) adds its ``bill``."""
        self.statuses[status] += 1
        if bill is not None:
            self.billed_answers += 1
            self.input_tokens += bill.input_tokens
            self.output_tokens += bill.output_tokens
            self.bills.append(bill)
