"""What a worker's calls leave behind goes out in batches, and a cache miss is free.

The request path's only round trip is the admission: settlements and the responses
shared with the fleet's cache wait in an outbox and go out together; the fleet's
cache is asked only for keys it is known to hold. A counting backend (the real
in-process one, its writes and reads counted) shows it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amm.rate_limiter import RateLimiter
from amm.registry import ModelRegistry
from amm.state import Admission, FleetState, InProcessState
from amm.state.base import CacheEntry, Settlement


class CountingState(InProcessState):
    """The in-process backend, with every write and cache read written down."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[int, int]] = []  # (settlements, cache entries) per write
        self.reads: list[str] = []

    async def write(self, settlements: Sequence[Settlement] = (),
                    cache: Sequence[CacheEntry] = ()) -> None:
        self.writes.append((len(settlements), len(cache)))
        await super().write(settlements, cache)

    async def cache_get(self, key: str) -> str | None:
        self.reads.append(key)
        return await super().cache_get(key)


def _limiter(tmp_path: Path) -> RateLimiter:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"models": [{
        "id": "m", "provider": "openai", "name": "m", "litellm_model": "openai/m",
        "capabilities": ["text-generation"], "cost_per_1k_input_tokens": 0.001,
        "cost_per_1k_output_tokens": 0.002,
        "rate_limits": {"requests_per_minute": 1000, "tokens_per_minute": 10**6},
        "context_window": 32000, "average_response_time_ms": 5, "enabled": True}]}))
    return RateLimiter(ModelRegistry(path))


async def _settle_soon(fleet: FleetState) -> None:
    await asyncio.sleep(fleet.write_delay_s * 6)


async def test_the_settlements_of_many_calls_go_out_in_one_write(tmp_path: Path) -> None:
    backend = CountingState()
    limiter = _limiter(tmp_path)
    fleet = FleetState(backend, limiter=limiter, worker="w1")
    reservations: list[Any] = [limiter.acquire("m", 100) for _ in range(8)]
    for r in reservations:
        await fleet.admit("m", r)
    for r in reservations[:7]:
        r.settle(40)
    reservations[7].release()  # never sent: its slot is given back
    assert backend.writes == []  # nothing on the request path
    await _settle_soon(fleet)
    assert backend.writes == [(8, 0)]
    probe = await backend.admit(Admission("probe", "m", 1, 0, 0, 60.0))
    assert probe.in_window == 8  # 7 kept their slot, the released one gave it back


async def test_shared_cache_entries_ride_with_the_settlements(tmp_path: Path) -> None:
    backend = CountingState()
    limiter = _limiter(tmp_path)
    fleet = FleetState(backend, limiter=limiter, worker="w1")
    reservation: Any = limiter.acquire("m", 100)
    await fleet.admit("m", reservation)
    reservation.settle(30)
    await fleet.cache_set("k", "payload", 60)
    await _settle_soon(fleet)
    assert backend.writes == [(1, 1)]
    assert await backend.cache_get("k") == "payload"


async def test_a_cache_miss_on_a_key_the_fleet_does_not_hold_makes_no_round_trip(
        tmp_path: Path) -> None:
    backend = CountingState()
    limiter = _limiter(tmp_path)
    mine = FleetState(backend, limiter=limiter, worker="w1")
    other = FleetState(backend, limiter=limiter, worker="w2")
    await mine.sync()
    assert await mine.cache_get("k") is None
    assert backend.reads == []  # a miss answered here
    await other.cache_set("k", "payload", 60)
    await other.flush()
    assert await mine.cache_get("k") is None  # not seen before the next sync round
    await mine.sync()  # reads the keys stored since its last round
    assert await mine.cache_get("k") == "payload"
    assert backend.reads == ["k"]


async def test_stop_writes_what_is_still_in_the_outbox(tmp_path: Path) -> None:
    backend = CountingState()
    limiter = _limiter(tmp_path)
    fleet = FleetState(backend, limiter=limiter, worker="w1", write_delay_s=60.0)
    await fleet.start()
    reservation: Any = limiter.acquire("m", 100)
    await fleet.admit("m", reservation)
    reservation.settle(30)
    await fleet.stop()
    assert backend.writes == [(1, 0)]
