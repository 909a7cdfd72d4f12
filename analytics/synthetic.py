"""A synthetic amm store with known answers, for tests, notebooks and the demo.

:func:`write_synthetic_store` writes spans in exactly the shape the recorder writes
(``otel_traces`` of :mod:`telemetry.store_schema`, names of
:mod:`telemetry.conventions`) plus the ``amm_cost_ledger`` rows of every billed
attempt, and returns a :class:`SyntheticTruth` saying what was planted: an
experiment with a known quality effect, a model that degrades at a known time,
failovers, cache hits and costs.

    truth = write_synthetic_store("demo.db", seed=7)
    truth.degradation_time, truth.experiment_effect
"""

from __future__ import annotations

import json
import random
import sqlite3
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from telemetry import conventions as cv
from telemetry.store_schema import BUDGET_DDL, LEDGER_DDL, connect, ensure_schema

__all__ = [
    "ARM_HONOURED",
    "SyntheticModel",
    "SyntheticTruth",
    "write_synthetic_store",
]

ARM_HONOURED = getattr(cv, "AMM_SELECTION_ARM_HONOURED", "amm.selection.arm_honoured")
"""Attribute on ``amm.select``: the experiment's assigned arm was actually used."""






@dataclass(frozen=True, slots=True)
class SyntheticModel:
    """One simulated model: prices, typical latency, error rate and quality."""

    id: str
    provider: str
    cost_in_per_1k: float
    cost_out_per_1k: float
    latency_ms: float
    error_rate: float
    quality: float


MODELS: tuple[SyntheticModel, ...] = (
    SyntheticModel("gpt-4-turbo", "openai", 0.01, 0.03, 2000, 0.02, 0.80),
    SyntheticModel("gpt-3.5-turbo", "openai", 0.0005, 0.0015, 800, 0.03, 0.68),
    SyntheticModel("claude-3.5-sonnet", "anthropic", 0.003, 0.015, 1800, 0.02, 0.86),
    SyntheticModel("gemini-pro", "gcp.gemini", 0.00125, 0.01, 2500, 0.02, 0.78),
    SyntheticModel("llama3", "ollama", 0.0, 0.0, 1200, 0.05, 0.62),
)

# Which models serve which agent type outside the experiment (weights).
ROUTING: dict[str, dict[str, float]] = {
    "planning": {"gpt-4-turbo": 0.4, "gemini-pro": 0.6},
    "review": {"claude-3.5-sonnet": 0.5, "gemini-pro": 0.5},
    "research": {"gemini-pro": 0.7, "gpt-3.5-turbo": 0.3},
    "summarization": {"gpt-3.5-turbo": 0.6, "llama3": 0.4},
}
ERROR_TYPES = ("RateLimitError", "Timeout", "ServiceUnavailableError", "APIConnectionError")


@dataclass(frozen=True, slots=True)
class SyntheticTruth:
    """What :func:`write_synthetic_store` planted, to check analyses against."""

    path: Path
    start: datetime
    end: datetime
    requests: int
    experiment: str
    experiment_agent_type: str
    control_arm: str
    treatment_arm: str
    experiment_effect: float  # treatment minus control, mean overall quality
    degraded_model: str
    degradation_time: datetime
    daily_budget_usd: float
    models: tuple[str, ...] = field(default_factory=lambda: tuple(m.id for m in MODELS))


class _Writer:
    """Accumulates rows and writes them in one transaction (fast on 100k spans)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.spans: list[tuple[object, ...]] = []
        self.ledger: list[tuple[object, ...]] = []

    def hex_id(self, bits: int) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def span(self, *, trace: str, parent: str, name: str, kind: str, start_ns: int,
             duration_ns: int, attrs: dict[str, object], status: str = "Unset",
             events: list[dict[str, object]] | None = None) -> str:
        span_id = self.hex_id(64)
        self.spans.append((
            _iso(start_ns), trace, span_id, parent, name, kind, "amm-synthetic",
            json.dumps({"service.name": "amm-synthetic"}), json.dumps(attrs), int(duration_ns),
            status, json.dumps(events or []),
        ))
        return span_id


def _iso(ns: int) -> str:
    seconds, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def write_synthetic_store(
    path: str | Path,
    *,
    seed: int = 0,
    days: int = 7,
    requests_per_day: int = 1200,
    start: datetime | None = None,
    experiment_effect: float = 0.06,
    degraded_model: str = "gemini-pro",
    degradation_at: float = 0.6,
    cache_hit_rate: float = 0.08,
    daily_budget_usd: float = 25.0,
) -> SyntheticTruth:
    """Write a store of ``days * requests_per_day`` requests to ``path`` (replaced).

    The experiment ``impl-gpt4-vs-claude`` splits ``implementation`` traffic 50/50
    between gpt-4-turbo (control) and claude-3.5-sonnet (treatment, mean quality
    higher by ``experiment_effect``). ``degraded_model`` gets 2.5x latency, 15x error
    rate and 0.2 lower quality from ``degradation_at`` (a fraction of the period), so
    each of its metrics crosses ``detect_degradation``'s default threshold of 0.8.
    """
    path = Path(path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    rng = random.Random(seed)
    start = start or datetime(2026, 11, 18, tzinfo=UTC)
    period = timedelta(days=days)
    degradation_time = start + period * degradation_at
    models = {m.id: m for m in MODELS}
    w = _Writer(rng)
    n = days * requests_per_day
    # Requests arrive uniformly at random over the period, in time order.
    offsets = sorted(rng.random() * period.total_seconds() for _ in range(n))
    for i, off in enumerate(offsets):
        t = start + timedelta(seconds=off)
        _request(w, rng, models, t, i, degraded_model if t >= degradation_time else None,
                 experiment_effect, cache_hit_rate)
    conn = connect(path)
    try:
        ensure_schema(conn)
        conn.executescript(LEDGER_DDL + BUDGET_DDL)
        conn.executemany(
            "INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind,"
            " ServiceName, ResourceAttributes, SpanAttributes, Duration, StatusCode, Events)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", w.spans)
        conn.executemany(
            "INSERT INTO amm_cost_ledger (id, ts, day, model_id, agent_type, task_id,"
            " input_tokens, output_tokens, cost_usd, source) VALUES (?,?,?,?,?,?,?,?,?,?)",
            w.ledger)
        conn.executemany(
            "INSERT INTO amm_budget (day, daily_budget_usd) VALUES (?, ?)",
            [((start + timedelta(days=d)).date().isoformat(), daily_budget_usd)
             for d in range(days + 1)])
        conn.commit()
    except sqlite3.Error:
        conn.rollback()
        raise
    finally:
        conn.close()
    return SyntheticTruth(
        path=path, start=start, end=start + period, requests=n,
        experiment="impl-gpt4-vs-claude", experiment_agent_type="implementation",
        control_arm="gpt-4-turbo", treatment_arm="claude-3.5-sonnet",
        experiment_effect=experiment_effect, degraded_model=degraded_model,
        degradation_time=degradation_time, daily_budget_usd=daily_budget_usd,
    )


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _request(w: _Writer, rng: random.Random, models: dict[str, SyntheticModel], t: datetime,
             i: int, degraded: str | None, effect: float, cache_hit_rate: float) -> None:
    agent = rng.choice(["implementation", "implementation", *ROUTING])
    task_id = f"task-{i:06d}"
    trace = w.hex_id(128)
    root_attrs: dict[str, object] = {
        cv.GEN_AI_OPERATION_NAME: cv.OP_INVOKE_AGENT, cv.GEN_AI_AGENT_NAME: agent,
        cv.AMM_TASK_ID: task_id,
    }
    t0 = _ns(t)
    experiment = arm = None
    if agent == "implementation":
        experiment = "impl-gpt4-vs-claude"
        # Deterministic per task, as the real assignment (hash of task_id).
        arm = "gpt-4-turbo" if zlib.crc32(task_id.encode()) % 2 == 0 else "claude-3.5-sonnet"
        chosen, propensity = arm, 0.5
    else:
        chosen = _pick(rng, ROUTING[agent])
        propensity = ROUTING[agent][chosen]

    if rng.random() < cache_hit_rate:
        root_attrs[cv.AMM_CACHE_HIT] = True
        root_attrs[cv.GEN_AI_RESPONSE_MODEL] = chosen
        w.span(trace=trace, parent="", name=cv.agent_span_name(agent), kind="Internal",
               start_ns=t0, duration_ns=int(rng.uniform(0.2, 2.0) * 1e6), attrs=root_attrs)
        return

    root_id = w.hex_id(64)  # children need the root's id before the root is complete
    honoured = True
    # Sometimes the assigned arm is unavailable at selection time (health/rate limit).
    if experiment and rng.random() < 0.05:
        chosen, honoured = "gemini-pro", False
    select_attrs: dict[str, object] = {
        cv.AMM_SELECTION_CHOSEN: chosen, cv.AMM_SELECTION_PROPENSITY: propensity,
        cv.AMM_SELECTION_REASON: "experiment arm" if experiment else "highest score",
    }
    if experiment:
        select_attrs |= {cv.AMM_EXPERIMENT_NAME: experiment, cv.AMM_EXPERIMENT_ARM: arm}
    cursor = t0 + int(rng.uniform(0.1, 0.5) * 1e6)
    select_ns = int(rng.uniform(0.05, 0.3) * 1e6)
    failovers: list[dict[str, object]] = []
    model = chosen
    tried: list[str] = []
    ok = False
    attempt = 0
    chat_specs: list[tuple[str, int, int, dict[str, object], str, list[dict[str, object]]]] = []
    while attempt < 3:
        attempt += 1
        tried.append(model)
        m = models[model]
        is_degraded = model == degraded
        err_rate = min(0.9, m.error_rate * (15 if is_degraded else 1))
        latency = m.latency_ms * rng.lognormvariate(0, 0.35) * (2.5 if is_degraded else 1)
        failed = rng.random() < err_rate
        in_tok = rng.randint(200, 1500)
        attrs: dict[str, object] = {
            cv.GEN_AI_OPERATION_NAME: cv.OP_CHAT, cv.GEN_AI_PROVIDER_NAME: m.provider,
            cv.GEN_AI_REQUEST_MODEL: model, cv.AMM_ATTEMPT: attempt,
            cv.SERVER_ADDRESS: "127.0.0.1",
        }
        events: list[dict[str, object]] = []
        if failed:
            err = rng.choice(ERROR_TYPES)
            latency *= rng.uniform(0.1, 0.6)
            attrs |= {cv.ERROR_TYPE: err, cv.GEN_AI_USAGE_INPUT_TOKENS: 0,
                      cv.GEN_AI_USAGE_OUTPUT_TOKENS: 0, cv.AMM_COST_USD: 0.0}
            status = "Error"
        else:
            out_tok = rng.randint(100, 900)
            cost = in_tok / 1000 * m.cost_in_per_1k + out_tok / 1000 * m.cost_out_per_1k
            attrs |= {cv.GEN_AI_RESPONSE_MODEL: model, cv.GEN_AI_USAGE_INPUT_TOKENS: in_tok,
                      cv.GEN_AI_USAGE_OUTPUT_TOKENS: out_tok, cv.AMM_COST_USD: round(cost, 8),
                      cv.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"]}
            status = "Unset"
            q_mean = m.quality - (0.2 if is_degraded else 0.0)
            if experiment and model == "claude-3.5-sonnet":
                # The planted effect: claude's mean quality is control + effect here.
                q_mean = models["gpt-4-turbo"].quality + effect
            overall = min(1.0, max(0.0, rng.gauss(q_mean, 0.12)))
            for name in cv.EVAL_NAMES:
                value = (overall if name == "overall"
                         else min(1.0, max(0.0, rng.gauss(overall, 0.05))))
                events.append({"Timestamp": _iso(cursor + int(latency * 1e6)),
                               "Name": cv.GEN_AI_EVALUATION_RESULT,
                               "Attributes": {cv.GEN_AI_EVALUATION_NAME: name,
                                              cv.GEN_AI_EVALUATION_SCORE_VALUE: round(value, 4)}})
            w.ledger.append((w.hex_id(128), _iso(cursor + int(latency * 1e6)),
                             _iso(cursor)[:10], model, agent, task_id, in_tok, out_tok,
                             round(cost, 8), "attempt"))
        chat_specs.append((model, cursor, int(latency * 1e6), attrs, status, events))
        cursor += int(latency * 1e6) + int(rng.uniform(1, 20) * 1e6)
        if not failed:
            ok = True
            break
        alternatives = [x for x in ROUTING.get(agent, {"gpt-4-turbo": 1, "gemini-pro": 1})
                        if x not in tried] or [x for x in models if x not in tried]
        nxt = rng.choice(alternatives)
        failovers.append({"Timestamp": _iso(cursor), "Name": cv.AMM_FAILOVER,
                          "Attributes": {cv.AMM_FAILOVER_FROM: model, cv.AMM_FAILOVER_TO: nxt,
                                         cv.AMM_FAILOVER_REASON: attrs[cv.ERROR_TYPE]}})
        model = nxt
    if experiment:
        select_attrs[ARM_HONOURED] = honoured and not failovers
    root_error = {} if ok else {cv.ERROR_TYPE: "AllModelsFailedError"}
    w.spans.append((_iso(t0), trace, root_id, "", cv.agent_span_name(agent), "Internal",
                    "amm-synthetic", json.dumps({"service.name": "amm-synthetic"}),
                    json.dumps(root_attrs | root_error),
                    cursor - t0, "Unset" if ok else "Error", json.dumps(failovers)))
    w.span(trace=trace, parent=root_id, name=cv.SPAN_SELECT, kind="Internal",
           start_ns=t0 + 50_000, duration_ns=select_ns, attrs=select_attrs)
    for model_id, start_ns, dur, attrs, status, events in chat_specs:
        w.span(trace=trace, parent=root_id, name=cv.chat_span_name(model_id), kind="Client",
               start_ns=start_ns, duration_ns=dur, attrs=attrs, status=status, events=events)
    if ok:
        w.span(trace=trace, parent=root_id, name=cv.SPAN_EVALUATE, kind="Internal",
               start_ns=cursor - 2_000_000, duration_ns=1_000_000, attrs={})
