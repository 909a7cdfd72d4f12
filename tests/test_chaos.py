"""Chaos: every fault mode of the simulator at once, at concurrency 64, through the real
manager with telemetry on. Bounded: 320 requests, well under a minute.

Asserts the promises: every request ends in a response or a typed amm error; the
ledger equals the simulator's bill for every model whose answers carry usage; no API
key and no prompt text in any error, log line, span or store row.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import traceback
from typing import Any

import pytest

from amm.errors import APIModelError
from amm.models import ModelRequest, ModelResponse
from amm.sim import ModelProfile
from tests.fixtures_manager import model_entry

# The keys build_manager gives the manager (tests/fixtures_manager.py).
SECRETS = [f"sk-test-{p}-0123456789abcdef0123" for p in ("openai", "anthropic", "google")]
MARKER = "Project Nightingale quarterly figures"

# Models whose every billed token reaches amm in usage it can book exactly.
EXACT = {
    "flaky": ModelProfile(latency_ms=2, error_rate=0.3, error_status=503, echo_key=True,
                          echo_prompt=True),
    "limited": ModelProfile(latency_ms=2, rpm_limit=40, retry_after_s=1, protocol="anthropic"),
    "hollow": ModelProfile(latency_ms=2, empty_choices_rate=0.3, protocol="google"),
    "steady": ModelProfile(latency_ms=3, protocol="ollama"),
    "cutter": ModelProfile(latency_ms=2, stream_cut_after=2),
}
# Models whose faults the provider bills without telling amm (no usage, broken body,
# a 403/quota that bills nothing but must not leak): outcomes checked, ledger not.
OPAQUE = {
    "mute": ModelProfile(latency_ms=2, missing_usage_rate=0.5),
    "garbled": ModelProfile(latency_ms=2, truncated_body_rate=0.3, malformed_rate=0.2),
    "locked": ModelProfile(forbidden=True, echo_key=True),
    "broke": ModelProfile(quota_exhausted=True, protocol="anthropic"),
}
PROVIDER = {"openai": "openai", "anthropic": "anthropic", "google": "google", "ollama": "ollama"}


def entries() -> list[dict[str, Any]]:
    out = []
    for name, profile in {**EXACT, **OPAQUE}.items():
        out.append(model_entry(name, provider=PROVIDER[profile.protocol], cost_in=0.001,
                               cost_out=0.002, rpm=10_000))
    return out


def dump(db: Any) -> str:
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(str(row) for t in tables for row in conn.execute(f"SELECT * FROM {t}"))


@pytest.mark.slow
async def test_chaos_at_concurrency_64_ends_typed_exact_and_leaks_nothing(
        build_manager, caplog: pytest.LogCaptureFixture):
    manager, sim, _ = build_manager({**EXACT, **OPAQUE}, entries(), telemetry=True,
                                    retries_per_model=1, timeout_s=3.0,
                                    request_timeout_s=20.0, max_failovers=4)
    caplog.set_level(logging.INFO)
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> Any:
        request = ModelRequest(prompt=f"{MARKER}: summarise item {i} for the board",
                               task_id=f"chaos-{i}", agent_type="research", max_tokens=60)
        async with sem:
            try:
                if i % 4 == 0:
                    stream = manager.stream(request)
                    async with stream:
                        async for _ in stream:
                            pass
                    return stream.response
                return await manager.complete(request)
            except APIModelError as exc:
                return exc

    async with manager:
        outcomes = await asyncio.gather(*(one(i) for i in range(320)), return_exceptions=True)
    untyped = [o for o in outcomes if not isinstance(o, ModelResponse | APIModelError)]
    assert not untyped, untyped[:3]
    answered = sum(isinstance(o, ModelResponse) for o in outcomes)
    assert answered >= 200, f"only {answered} of 320 answered"

    manager.cost_tracker.flush()
    with sqlite3.connect(manager.cost_tracker.db_path) as conn:
        booked = {m: (int(i), int(o)) for m, i, o in conn.execute(
            "SELECT model_id, SUM(input_tokens), SUM(output_tokens) FROM amm_cost_ledger "
            "GROUP BY model_id")}
    billed = sim.billed()
    for model in EXACT:
        if model in billed and billed[model] != (0, 0):
            assert booked.get(model) == billed[model], model

    # The faults really happened (the checks below are not vacuous).
    assert sim.status_counts("flaky").get(503, 0) > 0
    assert sim.status_counts("locked").get(403, 0) > 0
    assert sim.request_count("cutter") > 0 and sim.request_count("hollow") > 0

    errors = [o for o in outcomes if isinstance(o, APIModelError)]
    printed = [str(e) + "".join(traceback.format_exception(e)) for e in errors]
    logged = [r.getMessage() for r in caplog.records]
    texts = printed + logged + [dump(manager.cost_tracker.db_path)]
    for text in texts:
        assert not any(secret in text for secret in SECRETS)
        assert MARKER not in text
    spans = dump(manager.cost_tracker.db_path)
    assert "chat flaky" in spans and "[redacted prompt]" in spans  # echoed, then redacted
