"""In-process shared state: the :class:`~amm.state.base.StateBackend` of one process.

The same semantics as the Redis backend, in dictionaries: used when a fleet's Redis
is away (each worker then keeps its own share of the limits) and by tests as the
reference the Redis scripts must agree with. No URL at all needs none of it: the
components' own per-process state is the whole story then.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from amm.state.base import Admission, CacheEntry, Settlement, Verdict

__all__ = ["InProcessState"]


class _Window:
    __slots__ = ("entries", "tokens")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, str]] = deque()  # (time, ticket), oldest first
        self.tokens: dict[str, int] = {}


class InProcessState:
    """Shared state kept in this process (see the module docstring).

    >>> state = InProcessState()
    >>> (await state.admit(Admission("t1", "m", 100, 27, 9000, 60.0))).admitted
    True
    """

    name = "in-process"

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 cache_max_entries: int = 10_000) -> None:
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._cool: dict[str, float] = {}
        # day -> ticket -> (USD, lapses at)
        self._holds: dict[str, dict[str, tuple[float, float]]] = {}
        self._spent: dict[str, dict[str, float]] = {}  # day -> worker -> USD
        self._flags: dict[tuple[str, str], tuple[str, float]] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        # key -> (payload, expires at, stored at), least recently used first
        self._cache: OrderedDict[str, tuple[str, float, float]] = OrderedDict()
        self._cache_max = cache_max_entries
        self._stats: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return (f"InProcessState(models={len(self._windows)}, cooling={len(self._cool)}, "
                f"cache={len(self._cache)})")

    async def admit(self, a: Admission) -> Verdict:
        now = self._clock()
        w = self._windows.get(a.model_id)
        if w is not None and a.ticket in w.tokens:  # asked again (a lost reply)
            return Verdict(True, "", 0.0, 0.0, len(w.entries))
        until = self._cool.get(a.model_id, 0.0)
        if until > now:
            return Verdict(False, "cooldown", until - now)
        w = self._windows.setdefault(a.model_id, _Window())
        cutoff = now - a.window_s
        while w.entries and w.entries[0][0] <= cutoff:
            w.tokens.pop(w.entries.popleft()[1], None)
        n, used = len(w.entries), sum(w.tokens.values())
        if a.request_cap > 0 and n + 1 > a.request_cap:
            return Verdict(False, "rate", w.entries[n - a.request_cap][0] + a.window_s - now,
                           in_window=n)
        if a.token_cap > 0 and n > 0 and used + a.tokens > a.token_cap:
            u, wait = used, a.window_s
            for t, ticket in w.entries:
                u -= w.tokens.get(ticket, 0)
                if u + a.tokens <= a.token_cap:
                    wait = t + a.window_s - now
                    break
            return Verdict(False, "rate", wait, in_window=n)
        spend = 0.0
        if a.budget_usd > 0:
            spent = self._spent.setdefault(a.day, {})
            spent[a.worker] = a.worker_spend_usd
            holds = self._holds.setdefault(a.day, {})
            for ticket in [t for t, (_, until) in holds.items() if until <= now]:
                del holds[ticket]  # a crashed worker's hold lapses
            spend = sum(spent.values())
            if spend + sum(usd for usd, _ in holds.values()) + a.cost_usd > a.budget_usd:
                return Verdict(False, "budget", 0.0, spend, n)
            holds[a.ticket] = (a.cost_usd, now + a.hold_ttl_s)
        w.entries.append((now, a.ticket))
        w.tokens[a.ticket] = a.tokens
        return Verdict(True, "", 0.0, spend, n + 1)

    async def write(self, settlements: Sequence[Settlement] = (),
                    cache: Sequence[CacheEntry] = ()) -> None:
        for s in settlements:
            self._settle(s.admission, s.tokens, s.worker_spend_usd)
        for entry in cache:
            self._cache_set(entry.key, entry.payload, entry.ttl_s)

    def _settle(self, a: Admission, tokens: int | None, worker_spend_usd: float) -> None:
        w = self._windows.get(a.model_id)
        if w is not None and a.ticket in w.tokens:
            if tokens is None:
                w.entries = deque(e for e in w.entries if e[1] != a.ticket)
                del w.tokens[a.ticket]
            else:
                w.tokens[a.ticket] = tokens
        if a.budget_usd > 0:
            self._holds.get(a.day, {}).pop(a.ticket, None)
            self._spent.setdefault(a.day, {})[a.worker] = worker_spend_usd

    async def cool_down(self, model_id: str, seconds: float) -> None:
        until = self._clock() + seconds
        if until > self._cool.get(model_id, 0.0):
            self._cool[model_id] = until

    async def put_flag(self, kind: str, key: str, value: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            self._flags.pop((kind, key), None)
        else:
            self._flags[(kind, key)] = (value, self._clock() + ttl_s)

    async def flags(self, kind: str) -> dict[str, tuple[str, float]]:
        now = self._clock()
        return {k: (v, until - now) for (kd, k), (v, until) in self._flags.items()
                if kd == kind and until > now}

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        now = self._clock()
        held = self._leases.get(name)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self._leases[name] = (owner, now + ttl_s)
        return True

    async def cache_get(self, key: str) -> str | None:
        hit = self._cache.get(key)
        if hit is None or hit[1] <= self._clock():
            return None
        self._cache.move_to_end(key)
        return hit[0]

    def _cache_set(self, key: str, payload: str, ttl_s: float) -> None:
        now = self._clock()
        self._cache[key] = (payload, now + ttl_s, now)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_max:
            self._cache.popitem(last=False)

    async def cache_index(self, since: float) -> tuple[list[str], float]:
        now = self._clock()
        keys = [k for k, (_, until, at) in self._cache.items() if at >= since and until > now]
        newest = max((at for _, _, at in self._cache.values()), default=since)
        return keys, max(newest, since)

    async def put_stats(self, worker: str, payload: str, ttl_s: float) -> None:
        self._stats[worker] = (payload, self._clock() + ttl_s)

    async def stats(self) -> dict[str, str]:
        now = self._clock()
        return {w: p for w, (p, until) in self._stats.items() if until > now}

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
