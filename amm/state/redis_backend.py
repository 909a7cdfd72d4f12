"""Shared state on Redis: every worker of a fleet sees one window, one budget, one cache.

redis-py's asyncio client with a connection pool (hiredis parses replies when
installed). Admission (window + cool-down + budget) and settlement are one
server-side script each (:mod:`amm.state._scripts`), so one round trip decides a
request and no two workers can take the same last slot or the same last dollar.

Every call is bounded by ``timeout_s`` (1 s by default; connect 0.5 s) and makes
no retries of its own: a Redis that does not answer in time is a
:class:`~amm.state.base.StateUnavailable`, and the caller falls back at once.
A client is bound to the event loop it was made on; another loop gets its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any

from amm.state import _scripts
from amm.state.base import Admission, StateUnavailable, Verdict

__all__ = ["RedisState"]


class RedisState:
    """:class:`~amm.state.base.StateBackend` on one Redis (``redis://host:port/db``).

    >>> state = RedisState("redis://127.0.0.1:6379/0")
    >>> await state.ping()
    """

    name = "redis"

    def __init__(self, url: str, *, prefix: str = "amm", timeout_s: float = 1.0,
                 connect_timeout_s: float = 0.5, max_connections: int = 64,
                 cache_max_entries: int = 100_000) -> None:
        try:
            import redis.asyncio  # noqa: F401  (the optional extra: fail here, clearly)
        except ImportError as exc:  # pragma: no cover - depends on the install
            from amm.errors import ConfigurationError

            raise ConfigurationError(
                f"state_url {url!r} needs the redis client: pip install 'amm-sdk[redis]'",
                field="state_url") from exc
        self.url = url
        self._p = prefix
        self._timeout = timeout_s
        self._connect_timeout = connect_timeout_s
        self._max_connections = max_connections
        self._cache_max = cache_max_entries
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}
        self._scripts: dict[asyncio.AbstractEventLoop, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"RedisState({_redact(self.url)!r}, prefix={self._p!r})"

    # -- connection -----------------------------------------------------------------

    def _client(self) -> tuple[Any, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            from redis.asyncio import Redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            client = Redis.from_url(
                self.url, socket_timeout=self._timeout,
                socket_connect_timeout=self._connect_timeout,
                max_connections=self._max_connections, retry=Retry(NoBackoff(), 0),
                decode_responses=True, health_check_interval=0)
            self._clients[loop] = client
            self._scripts[loop] = {name: client.register_script(getattr(_scripts, name))
                                   for name in _scripts.__all__}
        return client, self._scripts[loop]

    async def _run(self, work: Callable[[], Awaitable[Any]]) -> Any:
        """Await ``work()`` within the timeout; any failure is StateUnavailable.

        A timeout is tried once more (every operation here is idempotent: an admission
        already in the window is admitted again, not twice), because a timeout is not
        always the server's: an event loop held up by other work reads the reply late.
        """
        from redis.exceptions import RedisError
        from redis.exceptions import TimeoutError as RedisTimeout

        for last in (False, True):
            try:
                return await asyncio.wait_for(work(), self._timeout)
            except (RedisTimeout, TimeoutError) as exc:
                if last:
                    raise StateUnavailable(f"{_redact(self.url)}: timed out after "
                                           f"{self._timeout:g}s twice: {exc}") from exc
            except (RedisError, OSError) as exc:
                await self._drop_pool()  # its other connections are as dead as this one
                raise StateUnavailable(
                    f"{_redact(self.url)}: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    async def _drop_pool(self) -> None:
        """Forget this loop's client: the next call connects afresh (a restarted server
        closed every pooled connection)."""
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        self._scripts.pop(loop, None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    def _k(self, *parts: str) -> str:
        return ":".join((self._p, *parts))

    def _window_keys(self, model_id: str, day: str) -> list[str]:
        return [self._k("rl", model_id), self._k("rl", model_id, "tok"),
                self._k("rl", model_id, "sum"), self._k("cool", model_id),
                self._k("budget", day, "spent"), self._k("budget", day, "holds"),
                self._k("budget", day, "expiry")]

    # -- admission ------------------------------------------------------------------

    async def admit(self, a: Admission) -> Verdict:
        _, scripts = self._client()
        args = [a.ticket, a.tokens, a.request_cap, a.token_cap,
                max(1, math.ceil(a.window_s * 1000)), repr(a.cost_usd), repr(a.budget_usd),
                a.worker, repr(a.worker_spend_usd), math.ceil(a.hold_ttl_s * 1000)]
        keys = self._window_keys(a.model_id, a.day)
        ok, reason, retry_ms, spend, n = await self._run(
            lambda: scripts["ADMIT"](keys=keys, args=args))
        return Verdict(bool(ok), str(reason), max(0.0, float(retry_ms) / 1000.0),
                       float(spend), int(n))

    async def settle(self, a: Admission, tokens: int | None, worker_spend_usd: float) -> None:
        _, scripts = self._client()
        args = [a.ticket, "" if tokens is None else tokens, a.worker, repr(worker_spend_usd),
                "1" if a.budget_usd > 0 else "0"]
        keys = self._window_keys(a.model_id, a.day)
        await self._run(lambda: scripts["SETTLE"](keys=keys, args=args))

    async def cool_down(self, model_id: str, seconds: float) -> None:
        _, scripts = self._client()
        await self._run(lambda: scripts["COOL"](keys=[self._k("cool", model_id)],
                                        args=[max(1, math.ceil(seconds * 1000))]))

    # -- flags, leases ----------------------------------------------------------------

    async def put_flag(self, kind: str, key: str, value: str, ttl_s: float) -> None:
        r, _ = self._client()
        name = self._k("flag", kind, key)
        if ttl_s <= 0:
            await self._run(lambda: r.delete(name))
        else:
            await self._run(lambda: r.set(name, value, px=max(1, math.ceil(ttl_s * 1000))))

    async def flags(self, kind: str) -> dict[str, tuple[str, float]]:
        r, _ = self._client()
        prefix = self._k("flag", kind, "")

        async def read() -> dict[str, tuple[str, float]]:
            names = [n async for n in r.scan_iter(match=prefix + "*", count=500)]
            if not names:
                return {}
            pipe = r.pipeline(transaction=False)
            for n in names:
                pipe.get(n)
                pipe.pttl(n)
            values = await pipe.execute()
            out = {}
            for i, n in enumerate(names):
                value, ttl = values[2 * i], values[2 * i + 1]
                if value is not None and ttl and ttl > 0:
                    out[n[len(prefix):]] = (value, ttl / 1000.0)
            return out

        result: dict[str, tuple[str, float]] = await self._run(read)
        return result

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        _, scripts = self._client()
        got = await self._run(lambda: scripts["LEASE"](keys=[self._k("lease", name)],
                                               args=[owner, max(1, math.ceil(ttl_s * 1000))]))
        return bool(got)

    # -- cache, statistics ------------------------------------------------------------

    async def cache_get(self, key: str) -> str | None:
        r, _ = self._client()
        value: str | None = await self._run(lambda: r.get(self._k("cache", key)))
        return value

    async def cache_set(self, key: str, payload: str, ttl_s: float) -> None:
        _, scripts = self._client()
        name = self._k("cache", key)
        await self._run(lambda: scripts["CACHE_SET"](
            keys=[name, self._k("cache-index")],
            args=[payload, max(1, math.ceil(ttl_s * 1000)), self._cache_max, name]))

    async def put_stats(self, worker: str, payload: str, ttl_s: float) -> None:
        r, _ = self._client()
        await self._run(lambda: r.set(self._k("stats", worker), payload,
                              px=max(1, math.ceil(ttl_s * 1000))))

    async def stats(self) -> dict[str, str]:
        r, _ = self._client()
        prefix = self._k("stats", "")

        async def read() -> dict[str, str]:
            names = [n async for n in r.scan_iter(match=prefix + "*", count=500)]
            values = await r.mget(names) if names else []
            return {n[len(prefix):]: v for n, v in zip(names, values, strict=True)
                    if v is not None}

        result: dict[str, str] = await self._run(read)
        return result

    async def ping(self) -> None:
        r, _ = self._client()
        await self._run(r.ping)

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        self._scripts = {}
        for loop, client in clients.items():
            if loop.is_closed():
                continue
            with contextlib.suppress(Exception):  # closing never fails the caller
                if loop is asyncio.get_running_loop():
                    await client.aclose()


def _redact(url: str) -> str:
    """The URL without a password (``redis://:secret@h`` -> ``redis://:***@h``)."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
