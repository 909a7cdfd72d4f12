"""The response cache: L1 in memory (an LRU of live entries), L2 the local store, and
for a fleet a shared level after L2.

A key (:func:`cache_key`) is the SHA-256 of the request's content: its messages (a
prompt is the same as one user message), ``max_tokens``, the effective temperature and
the other ``parameters`` (``priority`` is routing, not content), plus a ``model_id``
when given. The manager asks without a model id, so its cache is model-agnostic per
agent request: a hit returns what any model answered to the same request.

``get`` looks in L1 (microseconds, the hot path), then L2 (one primary-key read);
each hit counts in ``hit_count`` and refreshes the entry's last access. Those
access updates are written to L2 in batches (at the next write, eviction or close),
so an L1 hit never touches the disk. ``set`` writes L1 at once and queues the L2
row on the store's shared writer (:mod:`telemetry.store_writer`), which commits it
off the request path. Entries live ``default_ttl_seconds`` unless ``set`` says
otherwise; expired entries are misses. When the stored payloads pass ``max_size_mb``
the least recently used entries go until 90 % of it is left.

With :meth:`CacheManager.share` (a fleet's :class:`~amm.state.FleetState`, wired by
``ModelManager.from_config`` when a ``state_url`` is set) a miss in L1 and L2 asks the
fleet's shared level, and every ``set`` is copied there in the background.

L2 is the table ``amm_cache`` of the local store (``{data_dir}/amm.db``, whose other
tables belong to other components); responses are stored as JSON, never pickle. A file
that cannot be opened, a corrupt entry or a failed read raises
:class:`~amm.errors.CacheError`, and the manager carries on without the cache. A failed
background write is not raised to anyone (the answer was served already): the shared
writer logs and counts it (``StoreWriter.write_failures``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from cachetools import LRUCache

from amm._store import open_store
from amm.errors import CacheError, ConfigurationError, InvalidRequestError
from amm.models import CachedResponse, ModelRequest, ModelResponse, TokenUsage, ToolCall
from telemetry.events import NULL_SINK, CacheEvent, EventSink
from telemetry.store_schema import CACHE_TABLE
from telemetry.store_writer import StoreWriter

__all__ = ["CACHE_TABLE", "CacheManager", "cache_key"]

logger = logging.getLogger(__name__)

_MB = 1024 * 1024
_KEY_VERSION = "amm-cache-v1"
_NOT_CONTENT = frozenset({"priority", "temperature"})  # temperature enters as effective
_TOUCH_BATCH = 256  # L1 hits whose access updates wait before one L2 write
_STORE = f"INSERT OR REPLACE INTO {CACHE_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)"
_TOUCH = f"UPDATE {CACHE_TABLE} SET last_access = ?, hit_count = ? WHERE key = ?"
_T = TypeVar("_T")


# One encoder, built once: json.dumps with options builds a new one per call.
_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                         default=str).encode


def cache_key(request: ModelRequest, model_id: str | None = None) -> str:
    """SHA-256 hex key of a request's content (and ``model_id`` when given).

    Parameter order does not matter; a different temperature, ``max_tokens``, message
    or parameter gives a different key. The common shape (a prompt or one user
    message, no extra parameters) skips JSON entirely.
    """
    params = request.parameters
    extra = ""
    if params and not params.keys() <= _NOT_CONTENT:
        extra = _json({k: v for k, v in params.items() if k not in _NOT_CONTENT})
    msgs = request.messages
    if not msgs:
        body = "p" + request.prompt
    elif (len(msgs) == 1 and len(msgs[0]) == 2 and msgs[0].get("role") == "user"
          and isinstance(msgs[0].get("content"), str)):
        body = "p" + msgs[0]["content"]  # the same request as a prompt
    else:
        body = "m" + _json([m if type(m) is dict else dict(m) for m in msgs])
    if request.tools is not None or request.tool_choice is not None or request.response_format:
        # An agent call: the same words with other tools or another schema are another request.
        extra += _json({"tools": request.tools, "tool_choice": request.tool_choice,
                        "response_format": request.response_format})
    if request.model is not None or request.exclude_models or request.providers is not None:
        # A call narrowed to some models may only be answered from those.
        extra += _json({"model": request.model, "fallbacks": list(request.fallbacks),
                        "exclude": sorted(request.exclude_models),
                        "providers": sorted(request.providers or ())})
    # Only the last field may hold a NUL (JSON escapes them, repr quotes the id), so
    # the fields cannot run into each other.
    material = (f"{_KEY_VERSION}\x00{model_id!r}\x00{request.max_tokens}\x00"
                f"{float(request.effective_temperature)!r}\x00{extra}\x00{body}")
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def _dump(response: ModelResponse) -> str:
    usage = response.token_usage
    return _json({
        "content": response.content, "model_id": response.model_id,
        "token_usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                        "total_tokens": usage.total_tokens},
        "latency_ms": response.latency_ms, "cost": response.cost, "metadata": response.metadata,
        "tool_calls": [[c.id, c.name, c.arguments] for c in response.tool_calls],
        "finish_reason": response.finish_reason,
    })


def _load(payload: str) -> ModelResponse:
    data = json.loads(payload)
    return ModelResponse(
        content=data["content"], model_id=data["model_id"],
        token_usage=TokenUsage(**data["token_usage"]), latency_ms=float(data["latency_ms"]),
        cost=float(data["cost"]), metadata=dict(data["metadata"]),
        tool_calls=[ToolCall(*c) for c in data.get("tool_calls", ())],
        finish_reason=data.get("finish_reason"),
    )


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class _Entry:
    """One live L1 entry; ``hits`` is its hit count, the same as L2's."""

    __slots__ = ("cached_at", "cached_ts", "expires_at", "expires_ts", "hits", "response")

    def __init__(self, response: ModelResponse, cached_ts: float, expires_ts: float,
                 hits: int) -> None:
        self.response = response
        self.cached_ts = cached_ts
        self.cached_at = _utc(cached_ts)
        self.expires_ts = expires_ts
        self.expires_at = _utc(expires_ts)
        self.hits = hits


class CacheManager:
    """Two-level response cache (L1 memory, L2 SQLite) with TTL and LRU eviction.

    >>> cache = CacheManager(Path("data/cache.db"), max_size_mb=1000, default_ttl_seconds=3600)
    >>> key = cache.generate_cache_key(request)
    >>> hit = await cache.get(key)   # None on a miss
    >>> await cache.set(key, response)
    """

    def __init__(
        self,
        db_path: Path | str,
        max_size_mb: float = 1000,
        default_ttl_seconds: float = 3600,
        *,
        l1_max_entries: int = 1024,
        clock: Callable[[], float] = time.time,
        events: EventSink = NULL_SINK,
        cache_nondeterministic: bool = False,
        store: StoreWriter | None = None,
    ) -> None:
        if max_size_mb <= 0 or default_ttl_seconds <= 0:
            raise ConfigurationError(
                f"max_size_mb and default_ttl_seconds must be > 0; got {max_size_mb!r}, "
                f"{default_ttl_seconds!r}", error_type="invalid_cache_settings",
                field="max_size_mb" if max_size_mb <= 0 else "default_ttl_seconds")
        self._path = Path(db_path)
        self._max_bytes = max_size_mb * _MB
        self._ttl = float(default_ttl_seconds)
        self._clock = clock
        self._events = events
        self._nondeterministic = cache_nondeterministic
        # _l1_lock guards the memory level, the touches and the stores not yet
        # committed; an L1 hit takes only it, so it never waits for a disk write.
        self._l1_lock = threading.Lock()
        self._l1: LRUCache[str, _Entry] | None = (
            LRUCache(maxsize=l1_max_entries) if l1_max_entries > 0 else None)
        self._touched: dict[str, tuple[float, int]] = {}  # key -> (last access, hits)
        self._pending: dict[str, tuple[int, _Entry]] = {}  # stored: (ticket, entry)
        self._closed = False
        self._owned = store is None
        self._shared: Any = None  # a fleet's shared level (FleetState), after L2
        try:
            self._store = store if store is not None else open_store(self._path)
        except ConfigurationError as exc:
            raise CacheError(f"cache {self._path}: cannot open: {exc.__cause__}") from exc
        self._unsized = 0  # bytes stored since the size was last read from the file
        self._size = int(self._sql(lambda c: c.execute(
            f"SELECT COALESCE(SUM(size_bytes), 0) FROM {CACHE_TABLE}").fetchone()[0]))

    @property
    def db_path(self) -> Path:
        """The SQLite file this component writes."""
        return self._path

    def share(self, fleet: Any) -> None:
        """Use ``fleet`` (a :class:`~amm.state.FleetState`) as a shared level after L1 and
        the local L2: a miss here asks the fleet (one round trip, bounded by its
        timeout), and every store is shared too, off the request path, with its TTL.
        The shared level's own bound (its entry count) keeps the server's memory in check."""
        self._shared = fleet

    # -- keys --------------------------------------------------------------------------

    def generate_cache_key(self, request: ModelRequest, model_id: str | None = None) -> str:
        """The request's cache key (see :func:`cache_key`)."""
        return cache_key(request, model_id)

    def is_cacheable(self, request: ModelRequest) -> bool:
        """Deterministic requests (temperature 0) only, unless ``cache_nondeterministic``."""
        return self._nondeterministic or request.effective_temperature == 0

    # -- lookups and stores -------------------------------------------------------------

    async def get(self, cache_key: str, *, agent_type: str = "",
                  task_id: str = "") -> CachedResponse | None:
        """The live entry for ``cache_key`` (its ``hit_count`` counts this hit), or None.

        Records a ``CacheEvent``. Raises CacheError when L2 is corrupt or unreadable.
        """
        hit: CachedResponse | None = None
        try:
            hit = self._get(cache_key)
            if hit is None and self._shared is not None:
                hit = await self._get_shared(cache_key)
        finally:
            self._events.record(CacheEvent(
                hit=hit is not None, agent_type=agent_type,
                model_id=hit.response.model_id if hit is not None else None, task_id=task_id))
        return hit

    def _get(self, key: str) -> CachedResponse | None:
        now = self._clock()
        touched: dict[str, tuple[float, int]] = {}
        if self._l1 is not None:
            with self._l1_lock:
                entry = self._l1.get(key)
                if entry is not None:
                    if entry.expires_ts <= now:
                        del self._l1[key]
                        return None  # L2 holds the same expiry
                    entry.hits += 1
                    self._touched[key] = (now, entry.hits)
                    if len(self._touched) >= _TOUCH_BATCH:
                        touched, self._touched = self._touched, {}
                    hit = CachedResponse(entry.response, entry.cached_at, entry.expires_at,
                                         entry.hits)
            if entry is not None:
                if touched:  # access times go to disk with the next batch
                    self._store.submit_many(_TOUCH, [(at, hits, k)
                                                     for k, (at, hits) in touched.items()])
                return hit
        with self._l1_lock:
            pending = self._pending.get(key)
            if pending is not None and self._store.is_committed(pending[0]):
                del self._pending[key]  # on disk now: read it there
                pending = None
        if pending is not None and pending[1].expires_ts > now:  # stored, not yet on disk
            e = pending[1]
            e.hits += 1
            with self._l1_lock:
                self._touched[key] = (now, e.hits)
            return CachedResponse(e.response, e.cached_at, e.expires_at, e.hits)
        return self._read(lambda c: self._get_l2(c, key, now))

    async def _get_shared(self, key: str) -> CachedResponse | None:
        """The fleet's entry, kept in L1 from now on (with the fleet's expiry)."""
        payload = await self._shared.cache_get(key)
        if payload is None:
            return None
        try:
            cached_ts, expires_ts, body = json.loads(payload)
            response = _load(body)
        except (ValueError, KeyError, TypeError):
            logger.warning("cache: ignored a corrupt shared entry %s", key[:12])
            return None
        now = self._clock()
        if expires_ts <= now:
            return None
        entry = _Entry(response, cached_ts, expires_ts, 1)
        if self._l1 is not None:
            with self._l1_lock:
                self._l1[key] = entry
        return CachedResponse(response, entry.cached_at, entry.expires_at, 1)

    def _get_l2(self, conn: sqlite3.Connection, key: str, now: float) -> CachedResponse | None:
        row = conn.execute(
            f"SELECT payload, cached_at, expires_at, hit_count FROM {CACHE_TABLE} WHERE key = ?",
            (key,)).fetchone()
        if row is None or row[2] <= now:
            return None
        payload, cached_ts, expires_ts, hits = row
        try:
            response = _load(payload)
        except (ValueError, KeyError, TypeError) as exc:
            self._sql(lambda c: c.execute(f"DELETE FROM {CACHE_TABLE} WHERE key = ?", (key,)))
            raise CacheError(f"cache {self._path}: entry {key[:12]} is corrupt; "
                             f"removed: {exc}") from exc
        hits += 1
        entry = _Entry(response, cached_ts, expires_ts, hits)
        with self._l1_lock:  # the access is written with the next batch, by the writer
            self._touched[key] = (now, hits)
            if self._l1 is not None:
                self._l1[key] = entry
        return CachedResponse(response, entry.cached_at, entry.expires_at, hits)

    async def set(self, cache_key: str, response: ModelResponse,
                  ttl_seconds: float | None = None) -> None:
        """Store ``response`` under ``cache_key`` for ``ttl_seconds`` (default TTL when None).

        L1 holds it at once; the L2 row is committed later by the store's writer, and a
        failure there is logged and counted by the writer, not raised here. Raises
        CacheError only when the cache is closed.
        """
        ttl = self._ttl if ttl_seconds is None else ttl_seconds
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
            raise InvalidRequestError(f"ttl_seconds must be > 0; got {ttl_seconds!r}",
                                      error_type="invalid_ttl")
        payload = _dump(response)
        size = len(payload.encode("utf-8", "surrogatepass"))
        now = self._clock()
        entry = _Entry(response, now, now + ttl, 0)
        # L1 at once; the disk write is queued on the store's writer thread, off the
        # request path (a commit, or a WAL checkpoint, took up to 50 ms there).
        with self._l1_lock:
            if self._closed:
                raise CacheError(f"cache {self._path} is closed")
            if self._l1 is not None:
                self._l1[cache_key] = entry
            ticket = self._store.submit(_STORE, (cache_key, payload, size, now, now + ttl,
                                                 now, 0))
            self._pending[cache_key] = (ticket, entry)
            if len(self._pending) > 4 * _TOUCH_BATCH:
                self._prune_pending_locked()
            self._unsized += size
            oversize = self._size + self._unsized > self._max_bytes
        if oversize:  # re-read the size in the batch and evict there if it is real
            self._store.submit(self._evict_if_over)
        if self._shared is not None:  # off the request path: the fleet's level
            shared = json.dumps([now, now + ttl, payload], separators=(",", ":"))
            self._shared.spawn(self._shared.cache_set(cache_key, shared, ttl))

    def _prune_pending_locked(self) -> None:
        done = [k for k, (t, _) in self._pending.items() if self._store.is_committed(t)]
        for k in done:
            del self._pending[k]

    def _evict_if_over(self, conn: sqlite3.Connection) -> None:
        """Queued work: size from the file, LRU eviction when past the maximum. It
        reads what it needs, so running it again after a failed batch is harmless."""
        self._write_touches(conn)
        with self._l1_lock:
            self._unsized = 0
        self._size = int(conn.execute(
            f"SELECT COALESCE(SUM(size_bytes), 0) FROM {CACHE_TABLE}").fetchone()[0])
        if self._size > self._max_bytes:
            self._evict_lru(conn, self._max_bytes * 0.9)

    def flush(self) -> None:
        """Write every pending store (and access time) to L2 now. Raises CacheError
        when L2 refuses (the stores stay queued for the next try)."""
        with self._l1_lock:
            touched, self._touched = self._touched, {}
        if touched:
            self._store.submit_many(_TOUCH, [(at, hits, key)
                                             for key, (at, hits) in touched.items()])
        try:
            self._store.flush()
        except sqlite3.Error as exc:
            raise CacheError(f"cache {self._path}: {exc}") from exc
        with self._l1_lock:
            self._prune_pending_locked()

    # -- maintenance -------------------------------------------------------------------

    async def evict_expired(self) -> int:
        """Remove every expired entry; returns how many."""
        self.flush()
        now = self._clock()

        def evict(conn: sqlite3.Connection) -> int:
            self._write_touches(conn)
            gone = conn.execute(f"DELETE FROM {CACHE_TABLE} WHERE expires_at <= ? "
                                f"RETURNING key, size_bytes", (now,)).fetchall()
            self._size -= sum(size for _, size in gone)
            keys = {key for key, _ in gone}
            if self._l1 is not None:
                with self._l1_lock:
                    stale = [k for k, e in self._l1.items() if e.expires_ts <= now]
                    for k in stale:
                        del self._l1[k]
                keys.update(stale)
            return len(keys)

        return await asyncio.to_thread(self._sql, evict)

    async def evict_lru(self, target_size_mb: float) -> int:
        """Remove the least recently used entries until the payloads fit in
        ``target_size_mb`` (MiB); returns how many were removed."""
        if isinstance(target_size_mb, bool) or not isinstance(target_size_mb, int | float) \
                or target_size_mb < 0:
            raise InvalidRequestError(f"target_size_mb must be >= 0; got {target_size_mb!r}",
                                      error_type="invalid_target_size")
        self.flush()

        def evict(conn: sqlite3.Connection) -> int:
            self._write_touches(conn)
            return self._evict_lru(conn, target_size_mb * _MB)

        return await asyncio.to_thread(self._sql, evict)

    def _evict_lru(self, conn: sqlite3.Connection, target_bytes: float) -> int:
        total = conn.execute(
            f"SELECT COALESCE(SUM(size_bytes), 0) FROM {CACHE_TABLE}").fetchone()[0]
        victims: list[str] = []
        for key, size in conn.execute(
                f"SELECT key, size_bytes FROM {CACHE_TABLE} ORDER BY last_access, key"):
            if total <= target_bytes:
                break
            victims.append(key)
            total -= size
        conn.executemany(f"DELETE FROM {CACHE_TABLE} WHERE key = ?", [(k,) for k in victims])
        self._size = total
        if self._l1 is not None:
            with self._l1_lock:
                for key in victims:
                    self._l1.pop(key, None)
        return len(victims)

    def size_bytes(self) -> int:
        """Bytes of the stored payloads (read from the file: other instances count too)."""
        self.flush()

        def total(conn: sqlite3.Connection) -> int:
            self._size = int(conn.execute(
                f"SELECT COALESCE(SUM(size_bytes), 0) FROM {CACHE_TABLE}").fetchone()[0])
            return self._size
        return self._sql(total)

    def __len__(self) -> int:
        self.flush()
        return int(self._sql(
            lambda c: c.execute(f"SELECT COUNT(*) FROM {CACHE_TABLE}").fetchone()[0]))

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Write pending stores and access updates, and let go of the store.
        Idempotent; never raises (what could not be written is logged)."""
        with self._l1_lock:
            if self._closed:
                return
            self._closed = True
            touched, self._touched = self._touched, {}
        if touched:
            self._store.submit_many(_TOUCH, [(at, hits, key)
                                             for key, (at, hits) in touched.items()])
        if self._owned:
            self._store.release()
        else:
            self._store.flush_quietly()

    def __enter__(self) -> CacheManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> CacheManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        l1 = len(self._l1) if self._l1 is not None else 0
        return (f"CacheManager({str(self._path)!r}, l1_entries={l1}, "
                f"size={self._size}B of {int(self._max_bytes)}B)")

    # -- the database ------------------------------------------------------------------

    def _read(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run read-only ``work`` on the store's reader connection: WAL lets it run
        beside a batch being written, so a cache miss never waits for the writer."""
        return self._on_store(self._store.read, work)

    def _sql(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in a transaction of the store's writer connection (after what
        is queued)."""
        return self._on_store(self._store.run, work)

    def _on_store(self, run: Callable[[Callable[[sqlite3.Connection], _T]], _T],
                  work: Callable[[sqlite3.Connection], _T]) -> _T:
        """``run(work)``, mapping database failures (and a closed cache) to CacheError."""
        if self._closed:
            raise CacheError(f"cache {self._path} is closed")
        try:
            return run(work)
        except sqlite3.Error as exc:
            raise CacheError(f"cache {self._path}: {exc}") from exc

    def _write_touches(self, conn: sqlite3.Connection) -> None:
        with self._l1_lock:
            touched, self._touched = self._touched, {}
        if touched:
            conn.executemany(_TOUCH, [(at, hits, key) for key, (at, hits) in touched.items()])
