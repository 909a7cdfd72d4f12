"""Local sliding-window rate limits per model, so amm stops short of the provider's 429.

Each model has one exact sliding window (``window_s``, 60 s by default) of the requests
it sent and the tokens they used, taken from ``registry.get_model(id).rate_limits``.
A model is *limited* once either window reaches ``threshold`` (90 %) of its limit;
the capacity is an integer, ``floor(threshold * limit)``, so with 10 requests/min the
9th request is admitted and makes the model limited.

Counting rule, one per request (nothing is counted twice):

- ``acquire(model_id, estimated_tokens)`` checks and reserves in one step (so many
  concurrent callers never overshoot); then ``reservation.settle(actual_tokens)``
  once the answer is in, or ``reservation.release()`` if nothing was sent; or
- ``check_rate_limit`` (a query, reserves nothing) then ``record_request`` after the call.

Provider 429s come in as ``record_request(..., was_rate_limited=True)``,
``provider_limited(model_id, retry_after_s)`` or, as a listener, a
``RateLimitedEvent(source="provider")``: the model is limited until
now + Retry-After (60 s when unknown); a longer Retry-After extends, a shorter one
never shortens. ``update_from_headers`` believes the provider when it reports less
remaining capacity than we estimate.

Thread- and task-safe: one ``threading.Lock``, never held across an await.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from amm._rate_windows import INF, Entry, Window, capacity, wait_until_fits
from amm.errors import APIModelError, ConfigurationError, InvalidRequestError
from amm.models import RateLimits, RateLimitStatus, utcnow
from telemetry.events import NULL_SINK, Event, EventSink, RateLimitedEvent

__all__ = ["DEFAULT_RETRY_AFTER_S", "RateLimiter", "Reservation"]

logger = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER_S = 60.0
"""How long a provider 429 without a Retry-After keeps a model limited."""

_UNTOUCHED = (False, 1.0)  # (limited, headroom) of a model with no window yet


class Reservation:
    """A request slot and its estimated tokens, taken by :meth:`RateLimiter.acquire`.

    Call :meth:`settle` with the tokens actually used once the answer is in, or
    :meth:`release` if nothing was sent. Either is safe to call more than once:
    settling again corrects the tokens again; release after settle does nothing.
    """

    __slots__ = ("_entry", "_limiter", "_on_end", "_state", "estimated_tokens", "model_id")

    def __init__(self, limiter: RateLimiter, model_id: str, entry: Entry) -> None:
        self._limiter = limiter
        self._entry = entry
        self._state = "open"
        self._on_end: Callable[[int | None], None] | None = None
        self.model_id = model_id
        self.estimated_tokens = entry.tokens

    def on_end(self, callback: Callable[[int | None], None]) -> None:
        """Call ``callback(tokens)`` when this reservation first ends: the tokens it
        settled with, or None when released unsent (the fleet's shared window settles
        so). One callback; a later one replaces it."""
        self._on_end = callback

    def _ended(self, tokens: int | None) -> None:
        callback, self._on_end = self._on_end, None
        if callback is not None:
            try:
                callback(tokens)
            except Exception:  # settling never fails the call that settles
                logger.warning("rate limiter: an end callback failed", exc_info=True)

    def settle(self, actual_tokens: int) -> None:
        """Replace the estimated tokens with the ``actual_tokens`` the call used."""
        _check_tokens(actual_tokens, "actual_tokens")
        if self._state == "released":
            return
        self._limiter._adjust(self.model_id, self._entry, actual_tokens, release=False)
        self._state = "settled"
        self._ended(actual_tokens)

    def release(self) -> None:
        """Give the slot and its tokens back (nothing was sent)."""
        if self._state != "open":
            return
        self._limiter._adjust(self.model_id, self._entry, 0, release=True)
        self._state = "released"
        self._ended(None)

    @property
    def state(self) -> str:
        """``open``, ``settled`` or ``released``."""
        return self._state

    def __repr__(self) -> str:
        return (
            f"Reservation(model_id={self.model_id!r}, tokens={self._entry.tokens}, "
            f"state={self._state})"
        )


def _check_tokens(value: object, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRequestError(
            f"{name} must be a non-negative integer; got {value!r}", error_type="invalid_tokens"
        )

class RateLimiter:
    """Sliding-window limits of requests/min and tokens/min per model.

    >>> limiter = RateLimiter(registry)
    >>> reservation = limiter.acquire("gpt-4-turbo", estimated_tokens=1200)
    >>> if reservation is not None:  # admitted; settle with what the call used
    ...     reservation.settle(1050)
    """

    def __init__(
        self,
        registry: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utcnow,
        threshold: float = 0.9,
        window_s: float = 60.0,
        events: EventSink = NULL_SINK,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ConfigurationError(
                f"threshold must be in (0, 1]; got {threshold!r}", field="threshold",
                error_type="invalid_threshold",
            )
        if window_s <= 0:
            raise ConfigurationError(
                f"window_s must be > 0; got {window_s!r}", field="window_s",
                error_type="invalid_window",
            )
        self._registry = registry
        self._clock = clock
        self._wall_clock = wall_clock
        self._threshold = threshold
        self._window_s = float(window_s)
        self._events = events
        self._lock = threading.Lock()
        self._windows: dict[str, Window] = {}

    # -- queries -------------------------------------------------------------------

    async def check_rate_limit(self, model_id: str, estimated_tokens: int) -> RateLimitStatus:
        """Would a request of ``estimated_tokens`` cross the 90 % line now? Reserves nothing.

        ``requests_remaining``/``tokens_remaining`` count against the 90 % line (what
        amm will still admit), not the provider's full limit. ``reset_time`` is the
        exact wall time at which enough of the window expires to admit this request
        (None when it is admitted now). A refusal is recorded as a
        ``RateLimitedEvent(source="local")``.
        """
        _check_tokens(estimated_tokens, "estimated_tokens")
        with self._lock:
            w, now = self._window_now(model_id, require_known=True)
            wait = self._wait_locked(w, now, estimated_tokens)
            status = RateLimitStatus(
                model_id=model_id,
                is_limited=wait > 0,
                requests_remaining=self._remaining(w.requests, w.extra_requests,
                                                   w.extra_requests_until, w.request_cap, now),
                tokens_remaining=self._remaining(w.tokens, w.extra_tokens,
                                                 w.extra_tokens_until, w.token_cap, now),
                reset_time=self._wall_at(wait) if wait > 0 else None,
            )
        if status.is_limited:
            self._events.record(RateLimitedEvent(model_id, "local", retry_after_s=wait))
        return status

    def is_rate_limited(self, model_id: str) -> bool:
        """True while the model is at 90 % of either limit or under a provider 429.

        Unknown models have no local limits: False unless a provider 429 said otherwise.
        """
        return self._view(model_id)[0]

    def headroom(self, model_id: str) -> float:
        """The share of the model's admitted capacity still free now, in [0, 1]: the
        smaller of the requests' and the tokens' share (0 under a provider 429). The
        selector scores availability by it."""
        return self._view(model_id)[1]

    @property
    def views_fn(self) -> Callable[[Iterable[str]], list[tuple[bool, float]]] | None:
        """:meth:`views`, for the selector, which asks both queries of every candidate;
        None when a subclass overrides either (the selector then calls them)."""
        cls = type(self)
        if (cls.is_rate_limited is not RateLimiter.is_rate_limited
                or cls.headroom is not RateLimiter.headroom):
            return None
        return self.views

    def views(self, model_ids: Iterable[str]) -> list[tuple[bool, float]]:
        """``(is_rate_limited, headroom)`` of each of ``model_ids``, in order, at one
        moment (the clock and the registry's version read once)."""
        windows = self._windows.get
        registry_version = getattr(self._registry, "version", None)
        now = self._clock()
        out: list[tuple[bool, float]] = []
        append = out.append
        for model_id in model_ids:
            w = windows(model_id)
            if w is None:
                append(_UNTOUCHED)
                continue
            version, seen_registry, until, limited, headroom = w.memo  # before w.version
            if (version == w.version and now < until and seen_registry == registry_version
                    and registry_version is not None):
                append((limited, headroom))
            else:
                append(self._view(model_id))
        return out

    def _view(self, model_id: str) -> tuple[bool, float]:
        """(limited, headroom) now. The selector asks both of every candidate, so the
        answer is kept on the window with the moment time alone would change it (the
        oldest entry leaving, a 429 hold or a header's reset ending) and read without
        the lock while the window, the registry and that moment stand."""
        w = self._windows.get(model_id)
        if w is None:
            return _UNTOUCHED  # nothing sent, nothing reported: every change makes a window
        registry_version = getattr(self._registry, "version", None)
        now = self._clock()
        version, seen_registry, until, limited, headroom = w.memo  # before w.version
        if (version == w.version and now < until and seen_registry == registry_version
                and registry_version is not None):
            return limited, headroom
        with self._lock:
            w, now = self._window_now(model_id, require_known=False)
            limited = not (w.provider_until <= now and self._has_room(w, now)) and (
                self._wait_locked(w, now, 1) > 0)  # the walk only when there is no room
            if w.provider_until > now:
                headroom = 0.0
            elif w.limits is None:
                headroom = 1.0
            else:
                free_req = self._remaining(w.requests, w.extra_requests,
                                           w.extra_requests_until, w.request_cap,
                                           now) / max(w.request_cap, 1.0)
                free_tok = self._remaining(w.tokens, w.extra_tokens, w.extra_tokens_until,
                                           w.token_cap, now) / max(w.token_cap, 1.0)
                headroom = max(0.0, min(1.0, free_req, free_tok))
            until = min([t for t in (w.provider_until, w.extra_requests_until,
                                     w.extra_tokens_until) if t > now],
                        default=INF)
            if w.entries:
                until = min(until, w.entries[0].t + self._window_s)
            w.memo = (w.version, registry_version, until, limited, headroom)
        return limited, headroom

    @staticmethod
    def _has_room(w: Window, now: float) -> bool:
        """One more request (of one token) fits under both caps right now."""
        if w.limits is None:
            return True
        extra_req = w.extra_requests if w.extra_requests_until > now else 0
        extra_tok = w.extra_tokens if w.extra_tokens_until > now else 0
        return (w.requests + extra_req + 1 <= w.request_cap
                and w.tokens + extra_tok + 1 <= w.token_cap)

    def get_time_until_reset(self, model_id: str) -> int | None:
        """Whole seconds (rounded up) until the model stops being limited; None when it
        is not limited now."""
        with self._lock:
            w, now = self._window_now(model_id, require_known=False)
            wait = self._wait_locked(w, now, 1)
        return math.ceil(wait) if wait > 0 else None

    def caps(self, model_id: str) -> tuple[int, int, float]:
        """The model's integer (requests, tokens) capacity per window at the threshold
        (0: unlimited) and the window's length: what a fleet's shared window admits."""
        limits = self._limits_of(model_id)
        if limits is None:
            return 0, 0, self._window_s
        req = capacity(limits.requests_per_minute, self._threshold, self._window_s)
        tok = capacity(limits.tokens_per_minute, self._threshold, self._window_s)
        return (0 if req == INF else int(req)), (0 if tok == INF else int(tok)), self._window_s

    @property
    def window_s(self) -> float:
        """The sliding window's length in seconds."""
        return self._window_s

    @property
    def events(self) -> EventSink:
        """Where refusals are recorded."""
        return self._events

    def usage(self, model_id: str) -> tuple[int, int]:
        """Requests and tokens this process has in the model's window now (reservations
        included): a fleet's fallback holds each worker to its share by it."""
        with self._lock:
            w, _ = self._window_now(model_id, require_known=False)
            return w.requests, w.tokens

    def hold(self, model_id: str, seconds: float) -> None:
        """Treat the model as limited for ``seconds`` (the fleet's window is full or it
        cools down): selection looks elsewhere meanwhile. Never shortens a longer hold."""
        with self._lock:
            w, now = self._window_now(model_id, require_known=False)
            self._limit_until(w, now, max(0.0, float(seconds)))

    # -- counting ------------------------------------------------------------------

    def acquire(self, model_id: str, estimated_tokens: int) -> Reservation | None:
        """Check and reserve one request and ``estimated_tokens`` in one atomic step.

        Returns None (and reserves nothing) when the request would cross the line. It
        records no event: its caller has the request's agent and task and records the
        refusal (``RateLimitedEvent(source="local")``), as ``ModelManager`` does.
        """
        _check_tokens(estimated_tokens, "estimated_tokens")
        with self._lock:
            w, now = self._window_now(model_id, require_known=True)
            if self._wait_locked(w, now, estimated_tokens) > 0:
                return None
            return Reservation(self, model_id, self._append(w, now, estimated_tokens))

    def wait_time(self, model_id: str, estimated_tokens: int = 1) -> float:
        """Exact seconds until a request of ``estimated_tokens`` would be admitted (0.0:
        now). Unknown models have no local limits."""
        _check_tokens(estimated_tokens, "estimated_tokens")
        with self._lock:
            w, now = self._window_now(model_id, require_known=False)
            return self._wait_locked(w, now, estimated_tokens)

    async def record_request(
        self, model_id: str, tokens_used: int, was_rate_limited: bool = False
    ) -> None:
        """Count a request that was sent without :meth:`acquire` (the seed's flow,
        ``docs/seed.md``).

        ``was_rate_limited``: the provider answered 429, so the model is limited for
        the default Retry-After (use :meth:`provider_limited` when it said how long).
        """
        _check_tokens(tokens_used, "tokens_used")
        with self._lock:
            w, now = self._window_now(model_id, require_known=False)
            self._append(w, now, tokens_used)
            if was_rate_limited:
                self._limit_until(w, now, None)

    def provider_limited(self, model_id: str, retry_after_s: float | None = None) -> None:
        """The provider said 429: limited until now + ``retry_after_s`` (60 s when None).

        A later, longer Retry-After extends the limit; a shorter one never shortens it.
        """
        if retry_after_s is not None and (
            isinstance(retry_after_s, bool) or not isinstance(retry_after_s, int | float)
            or retry_after_s < 0 or math.isnan(retry_after_s)
        ):
            raise InvalidRequestError(
                f"retry_after_s must be a non-negative number; got {retry_after_s!r}",
                model_id=model_id, error_type="invalid_retry_after",
            )
        with self._lock:
            w, now = self._window_now(model_id, require_known=False)
            self._limit_until(w, now, retry_after_s)

    def update_from_headers(
        self,
        model_id: str,
        remaining_requests: int | None = None,
        remaining_tokens: int | None = None,
        reset_requests_s: float | None = None,
        reset_tokens_s: float | None = None,
    ) -> None:
        """Correct the local estimate from the provider's ``x-ratelimit-*`` headers.

        When the provider reports less remaining capacity than we count, the
        difference is held as extra usage until its reset (a window when not given);
        when it reports more, our own count stands (it is the safer one).
        """
        for name, value in (("remaining_requests", remaining_requests),
                            ("remaining_tokens", remaining_tokens)):
            if value is not None:
                _check_tokens(value, name)
        for name, secs in (("reset_requests_s", reset_requests_s),
                           ("reset_tokens_s", reset_tokens_s)):
            if secs is not None and (not isinstance(secs, int | float) or secs < 0):
                raise InvalidRequestError(
                    f"{name} must be a non-negative number; got {secs!r}",
                    model_id=model_id, error_type="invalid_reset",
                )
        with self._lock:
            w, now = self._window_now(model_id, require_known=False)
            limits = w.limits
            if limits is None:
                return
            if remaining_requests is not None and limits.requests_per_minute > 0:
                used = limits.requests_per_minute - remaining_requests
                w.extra_requests = max(0, used - w.requests)
                w.extra_requests_until = now + (
                    self._window_s if reset_requests_s is None else reset_requests_s)
            if remaining_tokens is not None and limits.tokens_per_minute > 0:
                used = limits.tokens_per_minute - remaining_tokens
                w.extra_tokens = max(0, used - w.tokens)
                w.extra_tokens_until = now + (
                    self._window_s if reset_tokens_s is None else reset_tokens_s)
            w.version += 1

    def record(self, event: Event) -> None:
        """Listener: a provider ``RateLimitedEvent`` limits the model. Never raises.

        Local events are this limiter's own and AttemptEvents are not counted here
        (callers count through acquire/settle or record_request), so nothing is
        counted twice.
        """
        if isinstance(event, RateLimitedEvent) and event.source == "provider":
            try:
                self.provider_limited(event.model_id, event.retry_after_s)
            except Exception:  # a listener must never fail the recorder
                logger.warning("ignored a bad RateLimitedEvent for %s", event.model_id,
                               exc_info=True)

    # -- internals (called with the lock held unless said otherwise) ---------------

    def _adjust(self, model_id: str, entry: Entry, tokens: int, *, release: bool) -> None:
        """Settle or release a reservation (takes the lock)."""
        with self._lock:
            w = self._windows[model_id]
            now = self._clock()
            self._prune(w, now)
            # After pruning, an entry is still in the window iff it is younger than the
            # window; one that already left no longer counts for anything.
            if entry.t > now - self._window_s:
                w.tokens += tokens - entry.tokens
                if release:
                    w.requests -= entry.requests
                    entry.requests = 0
            entry.tokens = tokens
            w.version += 1

    def _window_now(self, model_id: str, *, require_known: bool) -> tuple[Window, float]:
        limits = self._limits_of(model_id)
        if limits is None and require_known:
            raise InvalidRequestError(
                f"unknown model {model_id!r}: not in the registry", model_id=model_id,
                error_type="unknown_model",
            )
        w = self._windows.get(model_id)
        if w is None:
            w = self._windows[model_id] = Window()
        if limits is not w.limits:
            w.limits = limits
            w.version += 1
            if limits is None:
                w.request_cap = w.token_cap = INF
            else:
                threshold, window_s = self._threshold, self._window_s
                w.request_cap = capacity(limits.requests_per_minute, threshold, window_s)
                w.token_cap = capacity(limits.tokens_per_minute, threshold, window_s)
        now = self._clock()
        self._prune(w, now)
        return w, now

    def _limits_of(self, model_id: str) -> RateLimits | None:
        try:
            model = self._registry.get_model(model_id)
        except (KeyError, APIModelError):
            return None
        return None if model is None else model.rate_limits

    def _prune(self, w: Window, now: float) -> None:
        cutoff = now - self._window_s
        entries = w.entries
        while entries and entries[0].t <= cutoff:
            e = entries.popleft()
            w.requests -= e.requests
            w.tokens -= e.tokens
            w.version += 1

    def _append(self, w: Window, now: float, tokens: int) -> Entry:
        entry = Entry(now, tokens)
        w.entries.append(entry)
        w.requests += 1
        w.tokens += tokens
        w.version += 1
        return entry

    def _limit_until(self, w: Window, now: float, retry_after_s: float | None) -> None:
        secs = DEFAULT_RETRY_AFTER_S if retry_after_s is None else float(retry_after_s)
        w.provider_until = max(w.provider_until, now + secs)
        w.version += 1

    def _wait_locked(self, w: Window, now: float, tokens: int) -> float:
        wait = max(0.0, w.provider_until - now)
        if w.limits is None:
            return wait
        req = wait_until_fits(w.entries, lambda e: e.requests, w.requests, w.extra_requests,
                    w.extra_requests_until, w.request_cap, 1, now, self._window_s, False)
        tok = wait_until_fits(w.entries, lambda e: e.tokens, w.tokens, w.extra_tokens,
                    w.extra_tokens_until, w.token_cap, tokens, now, self._window_s, True)
        return max(wait, req, tok)

    @staticmethod
    def _remaining(used: int, extra: int, extra_until: float, cap: float, now: float) -> int:
        if cap == INF:
            return 2**31 - 1
        if extra_until <= now:
            extra = 0
        return max(0, int(cap) - used - extra)

    def _wall_at(self, wait_s: float) -> datetime | None:
        if wait_s == INF:
            return None
        return self._wall_clock() + timedelta(seconds=wait_s)

    def __repr__(self) -> str:
        with self._lock:
            now = self._clock()
            parts = []
            for model_id, w in self._windows.items():
                self._prune(w, now)
                held = max(0.0, w.provider_until - now)
                parts.append(
                    f"{model_id}: {w.requests}/{_fmt(w.request_cap)} req, "
                    f"{w.tokens}/{_fmt(w.token_cap)} tok"
                    + (f", 429 for {held:.1f}s" if held > 0 else "")
                )
        return f"RateLimiter(threshold={self._threshold}, window_s={self._window_s:g}, " \
               f"[{'; '.join(parts)}])"


def _fmt(cap: float) -> str:
    return "inf" if cap == INF else str(int(cap))
