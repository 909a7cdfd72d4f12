"""CacheManager: keys, TTL, hit counts, L2 across instances, LRU eviction by size,
corrupt and unwritable files, events."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from amm.cache_manager import CacheManager, cache_key
from amm.errors import CacheError, ConfigurationError, InvalidRequestError
from amm.models import ModelRequest, ModelResponse, TokenUsage
from telemetry.events import CacheEvent


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


class ListSink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def record(self, event: object) -> None:
        self.events.append(event)


def response(content: str = "answer", model: str = "m1", **metadata: object) -> ModelResponse:
    return ModelResponse(content=content, model_id=model, token_usage=TokenUsage(12, 34),
                         latency_ms=120.5, cost=0.0042, metadata=dict(metadata))


def request(**kw: object) -> ModelRequest:
    base: dict[str, object] = {"prompt": "Sort a list", "task_id": "t1",
                               "agent_type": "impl", "temperature": 0.0}
    base.update(kw)
    return ModelRequest(**base)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "amm.db"


@pytest.fixture
def cache(db: Path, clock: Clock) -> Iterator[CacheManager]:
    with CacheManager(db, clock=clock) as c:
        yield c


async def test_a_stored_response_comes_back_with_its_content_and_metadata(
    cache: CacheManager,
) -> None:
    stored = response(finish_reason="stop", tags=["a", "b"])
    await cache.set("k", stored)
    hit = await cache.get("k")
    assert hit is not None and hit.response == stored
    assert (hit.expires_at - hit.cached_at).total_seconds() == 3600
    assert await cache.get("other") is None


async def test_entries_expire_after_their_ttl(cache: CacheManager, clock: Clock) -> None:
    await cache.set("default", response())
    await cache.set("short", response(), ttl_seconds=10)
    clock.t += 9.9
    assert await cache.get("short") is not None
    clock.t += 0.1
    assert await cache.get("short") is None
    assert await cache.get("default") is not None
    clock.t += 3600
    assert await cache.get("default") is None


async def test_expired_entries_are_misses_in_l2_too(db: Path, clock: Clock) -> None:
    with CacheManager(db, clock=clock) as first:
        await first.set("k", response(), ttl_seconds=5)
    clock.t += 5
    with CacheManager(db, clock=clock) as second:
        assert await second.get("k") is None


async def test_hit_count_grows_with_each_hit_and_survives_a_new_instance(
    db: Path, clock: Clock
) -> None:
    with CacheManager(db, clock=clock) as first:
        await first.set("k", response())
        counts = [(await first.get("k")).hit_count for _ in range(3)]  # type: ignore[union-attr]
        assert counts == [1, 2, 3]
    with CacheManager(db, clock=clock) as second:  # L2 only: a new, empty L1
        assert second.db_path == db
        hit = await second.get("k")
        assert hit is not None and hit.hit_count == 4 and hit.response == response()


async def test_a_store_is_written_to_disk_behind_the_caller(db: Path, clock: Clock) -> None:
    with CacheManager(db, clock=clock) as cache:
        await cache.set("k", response())
        for _ in range(200):  # the writer thread commits within its interval
            with sqlite3.connect(db) as conn:
                if conn.execute("SELECT COUNT(*) FROM amm_cache").fetchone()[0] == 1:
                    break
            time.sleep(0.01)
        else:
            pytest.fail("the store never reached the file")


async def test_l2_serves_when_there_is_no_l1(db: Path, clock: Clock) -> None:
    with CacheManager(db, clock=clock, l1_max_entries=0) as cache:
        await cache.set("k", response())
        assert (await cache.get("k")).hit_count == 1  # type: ignore[union-attr]
        assert (await cache.get("k")).hit_count == 2  # type: ignore[union-attr]


async def test_responses_are_stored_as_json(cache: CacheManager, db: Path) -> None:
    await cache.set("k", response(finish_reason="stop"))
    cache.flush()  # stores are written behind, off the request path
    with sqlite3.connect(db) as conn:
        (payload,) = conn.execute("SELECT payload FROM amm_cache WHERE key = 'k'").fetchone()
    assert json.loads(payload)["metadata"] == {"finish_reason": "stop"}


async def test_evict_expired_removes_only_expired_entries(
    cache: CacheManager, clock: Clock
) -> None:
    await cache.set("a", response(), ttl_seconds=10)
    await cache.set("b", response(), ttl_seconds=10)
    await cache.set("c", response(), ttl_seconds=100)
    clock.t += 10
    assert await cache.evict_expired() == 2
    assert await cache.evict_expired() == 0
    assert len(cache) == 1 and await cache.get("c") is not None


async def test_evict_lru_removes_least_recently_used_until_the_target_size(
    cache: CacheManager, clock: Clock
) -> None:
    for key in ("a", "b", "c"):
        await cache.set(key, response("x" * 1000))
        clock.t += 1
    one = cache.size_bytes() // 3
    assert await cache.get("a") is not None  # now "b" is the least recently used
    evicted = await cache.evict_lru(target_size_mb=(2 * one) / (1024 * 1024))
    assert evicted == 1
    assert await cache.get("b") is None
    assert await cache.get("a") is not None and await cache.get("c") is not None
    assert cache.size_bytes() == 2 * one
    assert await cache.evict_lru(target_size_mb=0) == 2
    assert cache.size_bytes() == 0


async def test_storing_past_max_size_evicts_the_oldest_entries(db: Path, clock: Clock) -> None:
    with CacheManager(db, clock=clock) as probe:
        await probe.set("probe", response("y" * 2000))
        size_of_one = probe.size_bytes()
    db.unlink()
    max_mb = 3.5 * size_of_one / (1024 * 1024)
    with CacheManager(db, max_size_mb=max_mb, clock=clock) as cache:
        for i in range(4):
            await cache.set(f"k{i}", response("y" * 2000))
            clock.t += 1
        assert cache.size_bytes() <= max_mb * 1024 * 1024 * 0.9
        assert await cache.get("k0") is None and await cache.get("k3") is not None


async def test_each_get_records_a_cache_event(db: Path, clock: Clock) -> None:
    sink = ListSink()
    with CacheManager(db, clock=clock, events=sink) as cache:
        await cache.get("k", agent_type="impl", task_id="t1")
        await cache.set("k", response(model="m7"))
        await cache.get("k", agent_type="impl", task_id="t2")
    assert sink.events == [CacheEvent(hit=False, agent_type="impl", task_id="t1"),
                           CacheEvent(hit=True, agent_type="impl", model_id="m7", task_id="t2")]


def test_a_corrupt_database_file_raises_cache_error(db: Path) -> None:
    db.write_bytes(b"this is not a sqlite database, just bytes" * 100)
    with pytest.raises(CacheError, match="cannot open"):
        CacheManager(db)


def test_an_unwritable_location_raises_cache_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where a directory should be")
    with pytest.raises(CacheError, match="cannot open"):
        CacheManager(tmp_path / "file" / "cache.db")
    (tmp_path / "dir").mkdir()
    with pytest.raises(CacheError, match="cannot open"):
        CacheManager(tmp_path / "dir")


async def test_a_corrupt_entry_is_removed_and_reported(cache: CacheManager, db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO amm_cache VALUES ('bad', '{not json', 9, 0, 9e99, 0, 0)")
    with pytest.raises(CacheError, match="corrupt"):
        await cache.get("bad")
    assert await cache.get("bad") is None


async def test_a_closed_cache_raises_cache_error_and_close_is_idempotent(
    db: Path, clock: Clock
) -> None:
    cache = CacheManager(db, clock=clock, l1_max_entries=0)
    cache.close()
    cache.close()
    with pytest.raises(CacheError, match="closed"):
        await cache.set("k", response())
    with pytest.raises(CacheError, match="closed"):
        await cache.get("k")


async def test_bad_ttl_and_sizes_raise_invalid_request(cache: CacheManager, db: Path) -> None:
    with pytest.raises(InvalidRequestError, match="ttl_seconds"):
        await cache.set("k", response(), ttl_seconds=0)
    with pytest.raises(InvalidRequestError, match="target_size_mb"):
        await cache.evict_lru(-1)
    with pytest.raises(ConfigurationError, match="max_size_mb"):
        CacheManager(db, max_size_mb=0)
    assert len(cache) == 0


def test_the_key_is_stable_and_ignores_parameter_order_and_priority() -> None:
    a = request(parameters={"top_p": 0.5, "stop": ["\n"], "priority": "high"})
    b = request(parameters={"stop": ["\n"], "top_p": 0.5}, priority="low")
    assert cache_key(a) == cache_key(b)
    assert len(cache_key(a)) == 64 and int(cache_key(a), 16) >= 0
    assert cache_key(request()) == cache_key(request())


def test_the_key_changes_with_every_part_of_the_content() -> None:
    base = cache_key(request())
    variants = [
        request(temperature=0.5),
        request(parameters={"temperature": 0.3}),
        request(max_tokens=100),
        request(prompt="Sort a list!"),
        request(parameters={"top_p": 0.5}),
        request(messages=[{"role": "system", "content": "Sort a list"}]),
    ]
    keys = {cache_key(v) for v in variants}
    assert len(keys) == len(variants) and base not in keys
    assert cache_key(request(), model_id="m1") != base
    assert cache_key(request(), model_id="m1") != cache_key(request(), model_id="m2")


def test_equal_requests_written_differently_share_a_key() -> None:
    assert cache_key(request(temperature=0)) == cache_key(request(temperature=0.0))
    assert cache_key(request(parameters={"temperature": 0})) == cache_key(request())
    as_message = request(prompt="", messages=[{"role": "user", "content": "Sort a list"}])
    assert cache_key(as_message) == cache_key(request())
    two = [{"role": "system", "content": "be brief"}, {"content": "hi", "role": "user"}]
    assert cache_key(request(messages=two)) == cache_key(
        request(messages=[{"content": "be brief", "role": "system"},
                          {"role": "user", "content": "hi"}]))


def test_only_deterministic_requests_are_cacheable_unless_configured(
    cache: CacheManager, db: Path
) -> None:
    assert cache.is_cacheable(request())
    assert not cache.is_cacheable(request(temperature=0.7))
    assert not cache.is_cacheable(request(parameters={"temperature": 0.2}))
    with CacheManager(db, cache_nondeterministic=True) as loose:
        assert loose.is_cacheable(request(temperature=0.7))
    assert cache.generate_cache_key(request()) == cache_key(request())


async def test_two_caches_on_two_files_do_not_share_entries(tmp_path: Path) -> None:
    with CacheManager(tmp_path / "a.db") as a, CacheManager(tmp_path / "b.db") as b:
        await a.set("k", response())
        assert await b.get("k") is None


async def test_a_batch_waits_out_another_writer_of_the_shared_file(db: Path, clock: Clock) -> None:
    import threading

    with CacheManager(db, clock=clock) as cache:
        other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another component holds the write lock
        release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        release.start()
        await cache.set("k", response())
        cache.flush()  # waits for the lock, then writes: nothing is dropped
        release.join()
        other.close()
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM amm_cache").fetchone()[0] == 1
