"""Seed Example 7: Response Caching.

The seed's code (api-model-management-api.md, "Usage Examples") with only the import
prefix changed. The seed's top-level ``await`` runs inside ``main()``; ``api_client``
and ``request`` come from the scaffold, which runs the snippet twice: the first run
misses and stores, the second (a new CacheManager on the same file) hits.

    python examples/example_07_response_caching.py [--workdir DIR]
"""

from pathlib import Path

from _scaffold import Workspace, run

# ---- seed code ---------------------------------------------------------------------
from amm import CacheManager


async def main(api_client, request):
    # Initialize cache manager
    cache_manager = CacheManager(
        db_path=Path("data/cache.db"),
        max_size_mb=1000,
        default_ttl_seconds=3600
    )

    # Generate cache key
    cache_key = cache_manager.generate_cache_key(request)

    # Check cache before making request
    cached = await cache_manager.get(cache_key)
    if cached:
        print("Cache hit! Using cached response")
        response = cached.response
    else:
        print("Cache miss. Making API request")
        response = await api_client.send_request("gpt-4-turbo", request)

        # Store in cache
        await cache_manager.set(
            cache_key=cache_key,
            response=response,
            ttl_seconds=3600  # Cache for 1 hour
        )

    # Periodic cache maintenance
    expired_count = await cache_manager.evict_expired()
    print(f"Evicted {expired_count} expired entries")

    # LRU eviction if cache too large
    evicted_count = await cache_manager.evict_lru(target_size_mb=800)
    print(f"Evicted {evicted_count} LRU entries")


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """The seed's snippet twice: a miss that stores, then a hit."""
    async with Workspace(workdir=workdir) as ws:
        api_client, request = await ws.provide("api_client", "request")
        await main(api_client, request)
        await main(api_client, request)
        print(f"(simulator: gpt-4-turbo received {ws.requests_to('gpt-4-turbo')} request)")


if __name__ == "__main__":
    run(example)
