"""Shared state on Redis: every worker of a fleet sees one window, one budget, one cache.

Admission (window + cool-down + budget) is one server-side script
(:mod:`amm.state._scripts`), so one round trip decides a request and no two workers
can take the same last slot or the same last dollar. The request path's round trip
is made as lean as it can be, because on a busy host each wake-up of the event loop
costs more than Redis's own time: the script is called by SHA (``EVALSHA``; loaded
only when the server says it does not know it) on a connection of the request path's
own (:class:`_Lane`), not a pooled one shared with background work, and with one
timeout around the exchange (no task per call). What calls leave behind
(settlements, cache entries) arrives as one batch (:meth:`RedisState.write`) and is
sent as one pipeline on the background lane. Everything else (flags, leases,
statistics, pings) uses redis-py's asyncio client; hiredis parses replies when
installed.

Every call is bounded by ``timeout_s`` (1 s by default; connect 0.5 s) and makes
no retries of its own: a Redis that does not answer in time is a
:class:`~amm.state.base.StateUnavailable`, and the caller falls back at once.
A client is bound to the event loop it was made on; another loop gets its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from amm.state import _scripts
from amm.state.base import Admission, CacheEntry, Settlement, StateUnavailable, Verdict

__all__ = ["RedisState"]

_SHA = {name: hashlib.sha1(body.encode()).hexdigest() for name, body in _scripts.SCRIPTS.items()}


class _Lane:
    """Connections kept for one kind of work, each used by one caller at a time.

    A caller takes an idle connection (or opens one), sends its commands in one write,
    reads every reply, and puts it back; a failure closes it. No pool lock, no health
    check, no retry layer: the request path pays one write and one read.
    """

    __slots__ = ("_idle", "_make", "_slots")

    def __init__(self, make: Callable[[], Any], size: int) -> None:
        self._make = make
        self._idle: list[Any] = []
        self._slots = asyncio.Semaphore(size)  # at most ``size`` connections open

    async def run(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` pipelined; their replies in order (a ``ResponseError``
        reply is returned, not raised, so one bad command does not hide the others)."""
        async with self._slots:
            return await self._exchange(commands)

    async def _exchange(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        from redis.exceptions import ResponseError

        conn = self._idle.pop() if self._idle else self._make()
        try:
            if not conn.is_connected:
                await conn.connect()
            await conn.send_packed_command(_pack(commands), check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # read whole: the connection stays in step
                    replies.append(exc)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            raise
        self._idle.append(conn)
        return replies

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)


class _Links:
    """One event loop's connections: the client, the request path's lane, the
    background lane."""

    __slots__ = ("back", "client", "front")

    def __init__(self, client: Any, make: Callable[[], Any], size: int) -> None:
        self.client = client
        self.front = _Lane(make, size)
        self.back = _Lane(make, max(1, size // 8))

    async def close(self) -> None:
        await self.front.close()
        await self.back.close()
        with contextlib.suppress(Exception):
            await self.client.aclose()


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
        self._links: dict[asyncio.AbstractEventLoop, _Links] = {}
        self._keys: dict[tuple[str, str], list[str]] = {}  # (model, day) -> script keys

    def __repr__(self) -> str:
        return f"RedisState({_redact(self.url)!r}, prefix={self._p!r})"

    # -- connection -----------------------------------------------------------------

    def _link(self) -> _Links:
        loop = asyncio.get_running_loop()
        links = self._links.get(loop)
        if links is None:
            from redis.asyncio import ConnectionPool, Redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # No socket timeout on the client either: redis-py 8.1's per-read timeout
            # loses a cancellation that arrives during the read (the task goes on as
            # if never cancelled, and a worker's shutdown waited forever on its sync
            # loop). :meth:`_run`'s one timeout bounds every call instead.
            client = Redis.from_url(
                self.url, socket_timeout=None,
                socket_connect_timeout=self._connect_timeout,
                max_connections=self._max_connections, retry=Retry(NoBackoff(), 0),
                decode_responses=True, health_check_interval=0)
            # The lanes' connections have no socket timeout of their own (redis-py
            # would wrap every write in a task for it): one timeout bounds each exchange.
            spec = ConnectionPool.from_url(
                self.url, socket_timeout=None, socket_connect_timeout=self._connect_timeout,
                decode_responses=True, retry=Retry(NoBackoff(), 0))
            links = _Links(client, lambda: spec.connection_class(**spec.connection_kwargs),
                           self._max_connections)
            self._links[loop] = links
        return links

    def _client(self) -> Any:
        return self._link().client

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
                async with asyncio.timeout(self._timeout):
                    return await work()
            except (RedisTimeout, TimeoutError) as exc:
                if last:
                    raise StateUnavailable(f"{_redact(self.url)}: timed out after "
                                           f"{self._timeout:g}s twice: {exc}") from exc
            except (RedisError, OSError) as exc:
                await self._drop_pool()  # its other connections are as dead as this one
                raise StateUnavailable(
                    f"{_redact(self.url)}: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    async def _scripts(self, lane: _Lane, calls: Sequence[tuple[str, list[str], list[Any]]],
                       ) -> list[Any]:
        """Run ``calls`` (script name, keys, args) pipelined on ``lane``, by SHA; the
        scripts the server does not know yet are loaded and those calls sent again."""
        from redis.exceptions import NoScriptError, ResponseError

        def command(name: str, keys: list[str], args: list[Any]) -> list[Any]:
            return ["EVALSHA", _SHA[name], len(keys), *keys, *args]

        replies = await lane.run([command(*c) for c in calls])
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:  # a fresh (or flushed) server: load, then send those again
            names = sorted({calls[i][0] for i in missing})
            await lane.run([["SCRIPT", "LOAD", _scripts.SCRIPTS[n]] for n in names])
            again = await lane.run([command(*calls[i]) for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply  # a script error is a bug: seen as the backend's failure
        return replies

    async def _drop_pool(self) -> None:
        """Forget this loop's connections: the next call connects afresh (a restarted
        server closed every one of them)."""
        links = self._links.pop(asyncio.get_running_loop(), None)
        if links is not None:
            await links.close()

    def _k(self, *parts: str) -> str:
        return ":".join((self._p, *parts))

    def _window_keys(self, model_id: str, day: str) -> list[str]:
        keys = self._keys.get((model_id, day))
        if keys is None:
            if len(self._keys) > 4096:  # days go by: start afresh now and then
                self._keys.clear()
            keys = self._keys[(model_id, day)] = [
                self._k("rl", model_id), self._k("rl", model_id, "tok"),
                self._k("rl", model_id, "sum"), self._k("cool", model_id),
                self._k("budget", day, "spent"), self._k("budget", day, "holds"),
                self._k("budget", day, "expiry"), self._k("budget", day, "held")]
        return keys

    # -- admission ------------------------------------------------------------------

    async def admit(self, a: Admission) -> Verdict:
        args = [a.ticket, a.tokens, a.request_cap, a.token_cap,
                max(1, math.ceil(a.window_s * 1000)), repr(a.cost_usd), repr(a.budget_usd),
                a.worker, repr(a.worker_spend_usd), math.ceil(a.hold_ttl_s * 1000)]
        call = ("ADMIT", self._window_keys(a.model_id, a.day), args)
        lane = self._link().front
        (reply,) = await self._run(lambda: self._scripts(lane, [call]))
        ok, reason, retry_ms, spend, n = reply
        return Verdict(bool(ok), str(reason), max(0.0, float(retry_ms) / 1000.0),
                       float(spend), int(n))

    async def write(self, settlements: Sequence[Settlement] = (),
                    cache: Sequence[CacheEntry] = ()) -> None:
        calls = [("SETTLE", self._window_keys(s.admission.model_id, s.admission.day),
                  [s.admission.ticket, "" if s.tokens is None else s.tokens,
                   s.admission.worker, repr(s.worker_spend_usd),
                   "1" if s.admission.budget_usd > 0 else "0"]) for s in settlements]
        index = self._k("cache-index")
        for e in cache:
            name = self._k("cache", e.key)
            calls.append(("CACHE_SET", [name, index],
                          [e.payload, max(1, math.ceil(e.ttl_s * 1000)), self._cache_max, name]))
        if calls:
            lane = self._link().back
            await self._run(lambda: self._scripts(lane, calls))

    async def cool_down(self, model_id: str, seconds: float) -> None:
        call = ("COOL", [self._k("cool", model_id)], [max(1, math.ceil(seconds * 1000))])
        lane = self._link().back
        await self._run(lambda: self._scripts(lane, [call]))

    # -- flags, leases ----------------------------------------------------------------

    async def put_flag(self, kind: str, key: str, value: str, ttl_s: float) -> None:
        r = self._client()
        name = self._k("flag", kind, key)
        if ttl_s <= 0:
            await self._run(lambda: r.delete(name))
        else:
            await self._run(lambda: r.set(name, value, px=max(1, math.ceil(ttl_s * 1000))))

    async def flags(self, kind: str) -> dict[str, tuple[str, float]]:
        r = self._client()
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
        call = ("LEASE", [self._k("lease", name)], [owner, max(1, math.ceil(ttl_s * 1000))])
        lane = self._link().back
        (got,) = await self._run(lambda: self._scripts(lane, [call]))
        return bool(got)

    # -- cache, statistics ------------------------------------------------------------

    async def cache_get(self, key: str) -> str | None:
        lane = self._link().front
        (value,) = await self._run(lambda: lane.run([["GET", self._k("cache", key)]]))
        return value if isinstance(value, str) else None

    async def cache_index(self, since: float) -> tuple[list[str], float]:
        r = self._client()
        prefix = self._k("cache", "")
        rows = await self._run(lambda: r.zrangebyscore(
            self._k("cache-index"), since, "+inf", withscores=True))
        keys = [name[len(prefix):] for name, _ in rows if name.startswith(prefix)]
        newest = max((float(at) for _, at in rows), default=since)
        return keys, newest

    async def put_stats(self, worker: str, payload: str, ttl_s: float) -> None:
        r = self._client()
        await self._run(lambda: r.set(self._k("stats", worker), payload,
                              px=max(1, math.ceil(ttl_s * 1000))))

    async def stats(self) -> dict[str, str]:
        r = self._client()
        prefix = self._k("stats", "")

        async def read() -> dict[str, str]:
            names = [n async for n in r.scan_iter(match=prefix + "*", count=500)]
            values = await r.mget(names) if names else []
            return {n[len(prefix):]: v for n, v in zip(names, values, strict=True)
                    if v is not None}

        result: dict[str, str] = await self._run(read)
        return result

    async def ping(self) -> None:
        r = self._client()
        await self._run(r.ping)

    async def aclose(self) -> None:
        links, self._links = self._links, {}
        for loop, link in links.items():
            if loop.is_closed():
                continue
            with contextlib.suppress(Exception):  # closing never fails the caller
                if loop is asyncio.get_running_loop():
                    await link.close()


def _pack(commands: Sequence[Sequence[Any]]) -> bytes:
    """``commands`` in Redis's wire format (RESP), in one buffer: redis-py's packer
    makes an encoder call per argument, and an admission has twenty of them."""
    out = bytearray()
    for command in commands:
        out += b"*%d\r\n" % len(command)
        for arg in command:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out += b"$%d\r\n%b\r\n" % (len(data), data)
    return bytes(out)


def _redact(url: str) -> str:
    """The URL without a password (``redis://:secret@h`` -> ``redis://:***@h``)."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
