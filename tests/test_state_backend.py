"""The state backends agree: in-process and Redis (a real redis-server on loopback)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from amm.state import Admission, InProcessState, StateBackend, open_backend
from amm.state.base import CacheEntry, Settlement
from amm.state.redis_backend import RedisState
from tests.fixtures_redis import RedisServer, redis_server  # noqa: F401  (fixture)


@pytest.fixture(params=["memory", "redis"])
async def backend(request: Any, tmp_path: Any) -> AsyncIterator[StateBackend]:
    if request.param == "memory":
        yield InProcessState()
        return
    server = RedisServer(tmp_path / "redis")
    server.start()
    state = RedisState(server.url)
    try:
        yield state
    finally:
        await state.aclose()
        server.kill()


def _adm(ticket: str, tokens: int = 100, *, model: str = "m", window_s: float = 60.0,
         req: int = 3, tok: int = 1000, **budget: Any) -> Admission:
    return Admission(ticket, model, tokens, req, tok, window_s, day="2026-01-01", **budget)


async def test_a_window_admits_up_to_its_request_cap_then_says_when(backend: StateBackend) -> None:
    verdicts = [await backend.admit(_adm(f"t{i}")) for i in range(4)]
    assert [v.admitted for v in verdicts] == [True, True, True, False]
    assert verdicts[3].reason == "rate"
    assert 59.0 < verdicts[3].retry_after_s <= 60.0


async def test_an_admission_asked_twice_takes_one_slot(backend: StateBackend) -> None:
    assert (await backend.admit(_adm("a", req=2))).admitted
    assert (await backend.admit(_adm("a", req=2))).admitted  # the reply was lost: again
    assert (await backend.admit(_adm("b", req=2))).admitted
    assert not (await backend.admit(_adm("c", req=2))).admitted


async def test_tokens_settle_to_what_was_used_and_free_the_window(backend: StateBackend) -> None:
    a = _adm("a", 900, req=10)
    assert (await backend.admit(a)).admitted
    assert not (await backend.admit(_adm("b", 200, req=10))).admitted  # 900 + 200 > 1000
    await backend.write([Settlement(a, 100, 0.0)])
    assert (await backend.admit(_adm("c", 200, req=10))).admitted


async def test_a_released_slot_is_given_back(backend: StateBackend) -> None:
    first = _adm("a", req=1)
    assert (await backend.admit(first)).admitted
    assert not (await backend.admit(_adm("b", req=1))).admitted
    await backend.write([Settlement(first, None, 0.0)])
    assert (await backend.admit(_adm("c", req=1))).admitted


async def test_the_window_slides(backend: StateBackend) -> None:
    assert (await backend.admit(_adm("a", req=1, window_s=0.2))).admitted
    assert not (await backend.admit(_adm("b", req=1, window_s=0.2))).admitted
    await asyncio.sleep(0.25)
    assert (await backend.admit(_adm("c", req=1, window_s=0.2))).admitted


async def test_a_cool_down_refuses_every_request_of_the_model_and_never_shortens(
        backend: StateBackend) -> None:
    await backend.cool_down("m", 30.0)
    await backend.cool_down("m", 1.0)
    v = await backend.admit(_adm("a"))
    assert (v.admitted, v.reason) == (False, "cooldown")
    assert 29.0 < v.retry_after_s <= 30.0
    assert (await backend.admit(_adm("b", model="other"))).admitted


async def test_the_budget_counts_every_workers_spend_and_holds(backend: StateBackend) -> None:
    def ask(ticket: str, worker: str, spend: float, cost: float) -> Admission:
        return _adm(ticket, req=100, tok=10**6, cost_usd=cost, budget_usd=1.0, worker=worker,
                    worker_spend_usd=spend)

    assert (await backend.admit(ask("a", "w1", 0.4, 0.2))).admitted
    v = await backend.admit(ask("b", "w2", 0.3, 0.2))  # 0.7 spent + 0.2 held + 0.2 > 1
    assert (v.admitted, v.reason) == (False, "budget")
    assert v.fleet_spend_usd == pytest.approx(0.7)
    await backend.write([Settlement(ask("a", "w1", 0.4, 0.2), 10, 0.45)])  # hold gone
    assert (await backend.admit(ask("c", "w2", 0.3, 0.2))).admitted  # 0.75 + 0.2 <= 1


async def test_settled_holds_free_the_budget_and_lapsed_ones_leave_it(
        backend: StateBackend) -> None:
    def ask(ticket: str, cost: float, ttl: float = 300.0) -> Admission:
        return _adm(ticket, req=100, tok=10**6, cost_usd=cost, budget_usd=1.0, worker="w1",
                    hold_ttl_s=ttl)

    held = [ask(f"h{i}", 0.3) for i in range(3)]
    assert [(await backend.admit(a)).admitted for a in held] == [True, True, True]
    assert not (await backend.admit(ask("x", 0.3))).admitted  # 0.9 held + 0.3 > 1
    await backend.write([Settlement(a, 10, 0.0) for a in held])  # one batch, nothing spent
    assert (await backend.admit(ask("short", 0.9, ttl=0.1))).admitted
    assert not (await backend.admit(ask("y", 0.3))).admitted
    await asyncio.sleep(0.15)  # the short hold lapsed (its worker never settled)
    assert (await backend.admit(ask("z", 0.9))).admitted


async def test_one_write_settles_many_admissions_and_shares_cache_entries(
        backend: StateBackend) -> None:
    firsts = [_adm(f"a{i}", req=3) for i in range(3)]
    for a in firsts:
        assert (await backend.admit(a)).admitted
    await backend.write([Settlement(a, None, 0.0) for a in firsts],
                        [CacheEntry("k1", "one", 60), CacheEntry("k2", "two", 60)])
    assert [(await backend.admit(_adm(f"b{i}", req=3))).admitted for i in range(3)] == \
        [True, True, True]
    assert (await backend.cache_get("k1"), await backend.cache_get("k2")) == ("one", "two")


async def test_the_cache_index_lists_the_keys_stored_since_a_cursor(
        backend: StateBackend) -> None:
    await backend.write(cache=[CacheEntry("k1", "x", 60)])
    keys, cursor = await backend.cache_index(0.0)
    assert keys == ["k1"]
    await asyncio.sleep(0.01)
    await backend.write(cache=[CacheEntry("k2", "x", 60)])
    later, _ = await backend.cache_index(cursor)
    assert "k2" in later and set(later) <= {"k1", "k2"}  # the cursor's own instant again


async def test_a_window_idle_past_its_length_empties_however_full_it_was(
        redis_server: RedisServer) -> None:  # noqa: F811
    state = RedisState(redis_server.url)
    many = 12_000  # more than one Lua unpack() can take at once
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_server.url)
    await client.zadd("amm:rl:m", {f"old{i}": 1 for i in range(many)})
    await client.hset("amm:rl:m:tok", mapping={f"old{i}": 5 for i in range(many)})
    await client.set("amm:rl:m:sum", 5 * many)
    v = await state.admit(_adm("new", req=10, tok=1000))
    assert (v.admitted, v.in_window) == (True, 1)
    assert int(await client.get("amm:rl:m:sum")) == 100
    await client.aclose()
    await state.aclose()


async def test_a_flushed_script_cache_is_loaded_again(
        redis_server: RedisServer) -> None:  # noqa: F811
    state = RedisState(redis_server.url)
    assert (await state.admit(_adm("a"))).admitted
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_server.url)
    await client.script_flush()
    await client.aclose()
    assert (await state.admit(_adm("b"))).admitted  # NOSCRIPT: loaded, sent again
    await state.write([Settlement(_adm("b"), 5, 0.0)])
    await state.aclose()


async def test_a_lease_has_one_holder_until_it_expires(backend: StateBackend) -> None:
    assert await backend.lease("probe:m", "w1", 0.2)
    assert not await backend.lease("probe:m", "w2", 0.2)
    assert await backend.lease("probe:m", "w1", 0.2)  # renewed by its holder
    await asyncio.sleep(0.25)
    assert await backend.lease("probe:m", "w2", 0.2)


async def test_flags_expire(backend: StateBackend) -> None:
    await backend.put_flag("health", "m", "down|boom", 0.2)
    await backend.put_flag("health", "n", "down|x", 30)
    await backend.put_flag("health", "n", "", 0)  # deleted
    assert set(await backend.flags("health")) == {"m"}
    await asyncio.sleep(0.25)
    assert await backend.flags("health") == {}


async def test_cache_entries_live_for_their_ttl(backend: StateBackend) -> None:
    await backend.write(cache=[CacheEntry("k", "payload", 0.2)])
    assert await backend.cache_get("k") == "payload"
    await asyncio.sleep(0.25)
    assert await backend.cache_get("k") is None


async def test_stats_payloads_are_read_back_per_worker(backend: StateBackend) -> None:
    await backend.put_stats("w1", '{"a":1}', 30)
    await backend.put_stats("w2", '{"b":2}', 30)
    assert await backend.stats() == {"w1": '{"a":1}', "w2": '{"b":2}'}


async def test_the_redis_cache_is_bounded_by_its_entry_count(
        redis_server: RedisServer) -> None:  # noqa: F811
    state = RedisState(redis_server.url, cache_max_entries=3)
    for i in range(5):
        await state.write(cache=[CacheEntry(f"k{i}", "x", 60)])
    assert [await state.cache_get(f"k{i}") for i in range(5)] == [None, None, "x", "x", "x"]
    await state.aclose()


async def test_more_concurrent_admissions_than_connections_wait_their_turn(
        redis_server: RedisServer) -> None:  # noqa: F811
    state = RedisState(redis_server.url, max_connections=4)
    verdicts = await asyncio.gather(*(state.admit(_adm(f"t{i}", req=1000, tok=10**6))
                                      for i in range(200)))
    assert all(v.admitted for v in verdicts)  # none refused as "too many connections"
    await state.write([Settlement(_adm(f"t{i}"), 1, 0.0) for i in range(200)])
    await state.aclose()


async def test_a_down_redis_is_state_unavailable_within_the_timeout() -> None:
    from amm.state import StateUnavailable

    state = open_backend("redis://127.0.0.1:1/0")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StateUnavailable):
        await state.admit(_adm("a"))
    assert loop.time() - started < 0.5
    await state.aclose()


def test_a_url_that_is_not_redis_is_a_configuration_error() -> None:
    from amm.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="state_url"):
        open_backend("http://localhost:6379")


@pytest.mark.timeout(120)
async def test_a_call_cancelled_mid_way_ends_cancelled(backend: StateBackend) -> None:
    # A worker stops its sync loop by cancelling it. redis-py's own per-read timeout
    # lost such a cancellation now and then (about 1 in 15 here): the loop went on and
    # the worker's shutdown waited on it forever. Each cancelled call must end cancelled.
    rng = random.Random(3)

    async def publish() -> None:
        while True:
            await backend.put_stats("w", "{}", 5.0)
            await asyncio.sleep(0)  # the in-process backend never waits: let go here

    for _ in range(150):
        task = asyncio.create_task(publish())
        await asyncio.sleep(rng.random() * 0.004)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        ended = bool(done) and task.cancelled()
        while not task.done():  # a failed run leaves nothing running behind it
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        assert ended
