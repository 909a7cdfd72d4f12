"""``amm demo``: a multi-agent workload against the built-in provider simulator.

No keys needed. Five simulated models speak four wire protocols through litellm's
real HTTP path: a healthy one, a flaky one, one that hits its rate limit, one whose
quality degrades halfway, and a local (Ollama) one; the implementation agent runs
an A/B experiment. Deterministic for a given ``--seed`` (the workload, the prompts
and each simulated model's behaviour; wall-clock latencies differ).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amm._resources import demo_registry
from amm.report import DecisionCounts, demo_summary

__all__ = ["DemoResult", "run_demo"]

_TOPICS = ["a rate limiter", "an LRU cache", "a retry policy", "a JSON parser", "a job queue",
           "a config loader", "a CSV exporter", "a token bucket", "a priority scheduler",
           "a URL shortener", "a bloom filter", "a circuit breaker"]

_PROMPTS = {
    "planning": ("Plan the work to build {t}. List:\n1. the components\n2. the risks\n"
                 "3. the milestones"),
    "implementation": "Implement {t} as a Python function with tests. Write the code.",
    "review": "Review this design of {t} and list:\n- correctness issues\n- performance issues",
    "research": "Research how production systems implement {t}. Summarise the main approaches "
                "and their trade-offs for long documents.",
    "triage": "Triage this bug report about {t}: give the severity and the owning team.",
    "docs": "Write a short docstring for {t}.",
    # Agent calls: an ops agent that looks things up with tools, a chat agent that streams.
    "ops": "Which runbook covers {t} and who is on call for it?",
    "chat": "Explain {t} to a new engineer, step by step.",
}
_AGENT_CAPS = {
    "planning": ["reasoning"],
    "implementation": ["code-generation"],
    "review": ["analysis"],
    "research": ["long-context"],
    "triage": ["text-generation"],
    "docs": ["text-generation"],
    "ops": ["text-generation"],
    "chat": ["text-generation"],
}
# Triage is cost-sensitive and must not run on the local model: it lands on the
# cheap, flaky hosted one, whose errors the run fails over from.
_AGENT_OPTIONS: dict[str, dict[str, Any]] = {
    "triage": {"priority": "low", "excluded_providers": ["ollama"]},
    "docs": {"priority": "low"},  # free and local is good enough for docs
    # Research needs long context from a provider other than OpenAI: only the
    # degrading model offers it, so its decline keeps showing (and is detected)
    # even after the other agents have routed around it.
    "research": {"excluded_providers": ["openai"]},
}


@dataclass(frozen=True)
class DemoResult:
    """What the demo did: counts for the summary and the tests."""

    requests: int
    succeeded: int
    failed: Counter[str]
    store_path: Path
    elapsed_s: float
    summary: str


def _demo_profiles(requests: int) -> dict[str, Any]:
    from amm.sim import demo_profiles

    profiles = demo_profiles()
    # The degrading model degrades once it has seen about half of its traffic.
    gemini = profiles["sim-gemini"]
    profiles["sim-gemini"] = dataclasses.replace(gemini, degrade_after=max(20, requests // 10))
    profiles["sim-gpt-4o"] = dataclasses.replace(profiles["sim-gpt-4o"], quality=1.0)
    return profiles


_TOOLS = [
    {"type": "function", "function": {
        "name": "find_runbook", "description": "The runbook that covers a system",
        "parameters": {"type": "object", "properties": {"system": {"type": "string"}},
                       "required": ["system"]}}},
    {"type": "function", "function": {
        "name": "on_call", "description": "Who is on call for a team",
        "parameters": {"type": "object", "properties": {"team": {"type": "string"}},
                       "required": ["team"]}}},
]


def _run_tool(name: str, arguments: dict[str, Any]) -> str:
    """The ops agent's tools, answered locally (a real agent would call its systems)."""
    if name == "find_runbook":
        number = zlib.crc32(str(arguments).encode()) % 900 + 100
        return f"runbook RB-{number}: restart, then page the owner"
    return "on call: the platform team (pager 4242)"


async def _ops_agent(prompt: str, temperature: float, *, llm: Any) -> str:
    """A tool loop: ask, run the tools the model calls, send the results back."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    for _ in range(3):
        reply = await llm.complete(messages, tools=_TOOLS, max_tokens=200, temperature=temperature)
        if not reply.tool_calls:
            return str(reply.content)
        messages.append(reply.assistant_message())
        for call in reply.tool_calls:
            with llm.tool(call.name, call_id=call.id, arguments=call.arguments) as span:
                result = _run_tool(call.name, call.parsed())
                span.set_result(result)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    return ""


async def _chat_agent(prompt: str, temperature: float, *, llm: Any) -> str:
    """A streaming agent: the answer reaches the caller chunk by chunk."""
    stream = llm.stream(prompt, max_tokens=200, temperature=temperature)
    parts = [chunk.delta async for chunk in stream]
    return "".join(parts)


async def _plain_agent(prompt: str, temperature: float, *, llm: Any) -> str:
    reply = await llm.complete(prompt, max_tokens=200, temperature=temperature)
    return str(reply.content)


_AGENT_BODIES = {"ops": _ops_agent, "chat": _chat_agent}


class FirstChunkTimes:
    """A listener that keeps each model's times to first chunk (streamed attempts)."""

    def __init__(self) -> None:
        self.by_model: dict[str, list[float]] = {}

    def record(self, event: Any) -> None:
        ttfc = getattr(event, "time_to_first_chunk_s", None)
        if ttfc is not None and getattr(event, "success", False):
            self.by_model.setdefault(event.model_id, []).append(ttfc)

    def lines(self) -> list[str]:
        """One line per model: p50 and max time to first chunk, in ms."""
        out = []
        for model, times in sorted(self.by_model.items()):
            times = sorted(times)
            p50 = times[len(times) // 2] * 1000.0
            out.append(f"    {model:<14} {len(times):>4} streams  first chunk p50 {p50:6.1f} ms"
                       f"  max {times[-1] * 1000.0:6.1f} ms")
        return out


async def _workload(manager: Any, requests: int, concurrency: int, seed: int,
                    progress: Any) -> tuple[int, Counter[str]]:
    from amm.decorator import managed_model
    from amm.errors import APIModelError

    agents = {}
    for agent, caps in _AGENT_CAPS.items():
        body = _AGENT_BODIES.get(agent, _plain_agent)
        agents[agent] = managed_model(agent_type=agent, capabilities=caps, manager=manager,
                                      **_AGENT_OPTIONS.get(agent, {}))(body)

    rng = random.Random(seed)
    plan = []
    for i in range(requests):
        agent = rng.choice(list(_PROMPTS))
        topic = rng.choice(_TOPICS)
        # A quarter of the traffic is deterministic (temperature 0) over a small
        # pool of prompts: those repeat, and repeats are served from the cache.
        if rng.random() < 0.25:
            topic, temperature = _TOPICS[rng.randrange(4)], 0.0
        else:
            temperature = 0.7
        plan.append((i, agent, _PROMPTS[agent].format(t=topic) + f" (request {i})"
                     if temperature else _PROMPTS[agent].format(t=topic), temperature))

    sem = asyncio.Semaphore(concurrency)
    failed: Counter[str] = Counter()
    ok = 0

    async def one(i: int, agent: str, prompt: str, temperature: float) -> None:
        nonlocal ok
        async with sem:
            try:
                await agents[agent](prompt, temperature, task_id=f"{agent}-{seed}-{i:05d}")
                ok += 1
            except APIModelError as exc:
                failed[type(exc).__name__] += 1
            progress(ok + sum(failed.values()))

    await asyncio.gather(*(one(*p) for p in plan))
    return ok, failed


def _progress_bar(total: int, out: Any) -> Any:
    start = time.monotonic()
    live = bool(getattr(out, "isatty", lambda: False)())
    step = max(total // 10, 1)

    def show(done: int) -> None:
        if not live:  # a log, not a terminal: one line every tenth
            if done % step == 0 or done == total:
                rate = done / max(time.monotonic() - start, 1e-9)
                out.write(f"  {done}/{total} requests  {rate:5.1f} req/s\n")
            return
        width = 30
        filled = width * done // max(total, 1)
        rate = done / max(time.monotonic() - start, 1e-9)
        out.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total}  {rate:5.1f} req/s")
        if done == total:
            out.write("\n")
        out.flush()

    return show


def run_demo(
    *,
    requests: int = 300,
    concurrency: int = 8,
    seed: int = 7,
    data_dir: str | Path = "data",
    budget: float = 5.0,
    out: Any = None,
) -> DemoResult:
    """Run the demo workload; returns counts and the printed summary."""
    out = out or sys.stdout
    data_dir = Path(data_dir)
    store = data_dir / "amm.db"
    for suffix in ("", "-wal", "-shm"):  # a fresh store each run: the summary is this run's
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    from amm.sim import Simulator

    started = time.monotonic()
    with Simulator(_demo_profiles(requests), seed=seed) as sim:
        os.environ["AMM_SIM_URL"] = sim.base_url
        out.write(f"amm demo: {requests} requests, concurrency {concurrency}, seed {seed}\n")
        out.write(f"  provider simulator on {sim.base_url} "
                  "(OpenAI, Anthropic, Gemini, Ollama protocols)\n")
        counts = DecisionCounts()
        first_chunks = FirstChunkTimes()
        ok, failed = asyncio.run(_run(requests, concurrency, seed, data_dir, budget, counts,
                                      first_chunks, out))
        billed = sim.billed()
    summary, _ = demo_summary(store, counts=counts, billed=billed, budget=budget)
    summary += "\n\n  Streaming (chat agent), time to first chunk per model:\n" + (
        "\n".join(first_chunks.lines()) or "    no streamed answers")
    summary += "\n\n" + _what_if(store)
    out.write(summary + "\n")
    out.write(f"\n  store: {store}\n")
    from telemetry.setup import traces_destination

    where = (traces_destination()
             or "set OTEL_EXPORTER_OTLP_ENDPOINT to export them to Jaeger, Tempo or Phoenix")
    out.write(f"  traces: {where} (see deploy/README.md)\n")
    return DemoResult(requests, ok, failed, store, time.monotonic() - started, summary)


def _what_if(store: Path) -> str:
    """Off-policy estimates for the docs agent, the one that explores."""
    from analytics.ope import load_decisions, what_if

    decisions = load_decisions(store)
    docs = decisions[decisions["agent_type"] == "docs"]
    if docs.empty:
        return "  What if: no docs decisions logged"
    table = what_if(docs, ["always:sim-claude", "cheapest"], lam=10.0)
    return "  Docs agent (softmax, explores): " + table.strip()


async def _run(requests: int, concurrency: int, seed: int, data_dir: Path, budget: float,
               counts: DecisionCounts, first_chunks: FirstChunkTimes,
               out: Any) -> tuple[int, Counter[str]]:
    from amm.api_key_manager import APIKeyManager
    from amm.manager import BudgetPolicy, ModelManager

    keys = APIKeyManager()
    for provider in ("openai", "anthropic", "google"):
        keys.add_key(provider, f"sim-demo-key-{provider}-0123456789")
    out.write("  loading litellm...\n")
    out.flush()
    with demo_registry() as registry:  # package data: the same file in a checkout and a wheel
        manager = ModelManager.from_config(
            registry, data_dir=data_dir, daily_budget=budget,
            budget_policy=BudgetPolicy.DOWNGRADE, key_manager=keys, health_check_interval_s=2,
            base_backoff_seconds=0.05, timeout_s=10.0,
            # A compressed day: fail over at once, and watch for degradation every second
            # comparing the last 3 s with the minute before.
            retries_per_model=0, degradation_check_interval_s=1.0,
            performance_windows_s=(3.0, 60.0),
            # The docs agent explores (softmax over the scores, each model at least
            # 5%), so its logged decisions can answer "what if we had routed otherwise?".
            policy={"kind": "softmax", "temperature": 0.05, "floor": 0.05,
                    "agent_types": ["docs"], "seed": seed},
        )
    manager.recorder.add_listener(counts)
    manager.recorder.add_listener(first_chunks)
    async with manager:
        ok, failed = await _workload(manager, requests, concurrency, seed,
                                     _progress_bar(requests, out))
        await manager.check_degradation()
    return ok, failed


