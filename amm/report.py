"""The demo's end-of-run summary: what the store says, beside what the run decided.

Store figures come from :mod:`analytics` (the same loader the dashboard and
``amm report`` use); the routing decisions that leave no row of their own (a model
skipped because it neared its rate limit, a demotion) are counted from the events
the recorder fanned out during the run, by :class:`DecisionCounts`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amm.selector import Exclusion
from telemetry.events import (
    HEALTH_CHECK_AGENT,
    DegradationEvent,
    Event,
    FailoverEvent,
    ModelDemotedEvent,
    RateLimitedEvent,
    SelectionEvent,
)

__all__ = ["DecisionCounts", "DemoFacts", "demo_summary"]



class DecisionCounts:
    """A recorder listener that counts the routing decisions of a run."""

    def __init__(self) -> None:
        self.failover_reasons: Counter[str] = Counter()
        self.rate_limit_avoided: Counter[str] = Counter()  # model -> selections that skipped it
        self.local_refusals: Counter[str] = Counter()
        self.provider_429s: Counter[str] = Counter()
        self.demotions: list[str] = []
        self.degradations: list[str] = []
        self.failover_alerts: list[str] = []

    def record(self, event: Event) -> None:
        if isinstance(event, SelectionEvent):
            for model, why in event.excluded.items():
                if getattr(why, "code", None) is Exclusion.RATE_LIMITED:
                    self.rate_limit_avoided[model] += 1
        elif isinstance(event, FailoverEvent):
            self.failover_reasons[event.reason] += 1
        elif isinstance(event, RateLimitedEvent):
            (self.local_refusals if event.source == "local" else self.provider_429s)[
                event.model_id] += 1
        elif isinstance(event, ModelDemotedEvent):
            self.demotions.append(f"{event.model_id} for {event.agent_type}: {event.reason}")
        elif isinstance(event, DegradationEvent) and event.metric == "failovers":
            # The failover manager's alert (more failovers in an hour than its threshold).
            self.failover_alerts.append(
                f"{event.model_id}: {event.current_value:g} failovers within the hour "
                f"(alert above {event.threshold:g})")
        elif isinstance(event, DegradationEvent):
            self.degradations.append(
                f"{event.model_id} {event.metric}: {event.baseline_value:.3g} -> "
                f"{event.current_value:.3g} (threshold {event.threshold:g})")


@dataclass
class DemoFacts:
    """The summary's numbers, also written to ``demo_summary.json`` beside the store."""

    requests: int = 0
    succeeded: int = 0
    cache_hits: int = 0
    failovers: int = 0
    failover_reasons: dict[str, int] = field(default_factory=dict)
    rate_limit_avoided: int = 0
    provider_429s: int = 0
    degradations: list[str] = field(default_factory=list)
    demotions: list[str] = field(default_factory=list)
    experiment_arms: dict[str, int] = field(default_factory=dict)
    experiment_verdicts: list[str] = field(default_factory=list)
    ledger_total_usd: float = 0.0
    ledger_requests_usd: float = 0.0  # the ledger less health checks (billed, not requests)
    request_cost_total_usd: float = 0.0
    billed_tokens: dict[str, list[int]] = field(default_factory=dict)
    ledger_tokens: dict[str, list[int]] = field(default_factory=dict)


def demo_summary(store: Path, *, counts: DecisionCounts, billed: dict[str, tuple[int, int]],
                 budget: float) -> tuple[str, DemoFacts]:
    """The summary text and its facts, read back from the store the demo wrote."""
    from analytics.ab import analyse_experiments
    from analytics.degradation import detect_degradations
    from analytics.load import load_store
    from analytics.report import model_table

    data = load_store(store)
    req, ledger = data.requests, data.ledger
    facts = DemoFacts(
        requests=len(req),
        succeeded=int((req["outcome"] != "error").sum()),
        cache_hits=int(req["cache_hit"].sum()),
        failovers=len(data.failovers),
        failover_reasons=dict(Counter(data.failovers["reason"].astype(str))),
        rate_limit_avoided=sum(counts.rate_limit_avoided.values()) + sum(
            counts.local_refusals.values()),
        provider_429s=sum(counts.provider_429s.values()),
        demotions=list(counts.demotions),
        ledger_total_usd=float(ledger["cost_usd"].sum()),
        ledger_requests_usd=float(
            ledger.loc[ledger["agent_type"] != HEALTH_CHECK_AGENT, "cost_usd"].sum()),
        request_cost_total_usd=float(req["cost_usd"].sum()),
        billed_tokens={m: [i, o] for m, (i, o) in sorted(billed.items())},
        ledger_tokens={
            str(m): [int(g["input_tokens"].sum()), int(g["output_tokens"].sum())]
            for m, g in ledger.groupby("model_id")
        },
    )
    found = detect_degradations(data.attempts, threshold=0.8)
    facts.degradations = [d.describe() for d in found] + [
        f"(live) {d}" for d in counts.degradations]
    lines = ["", "Summary", "-------"]
    lines.append(f"requests     {facts.requests} ({facts.succeeded} answered, "
                 f"{facts.requests - facts.succeeded} failed), cache hits {facts.cache_hits} "
                 f"({facts.cache_hits / max(facts.requests, 1):.0%})")
    reasons = ", ".join(f"{r} {n}" for r, n in facts.failover_reasons.items()) or "none"
    lines.append(f"failovers    {facts.failovers} ({reasons})")
    lines += [f"             alert: {a}" for a in counts.failover_alerts[:3]]
    avoided = ", ".join(f"{m} skipped {n}x" for m, n in counts.rate_limit_avoided.items())
    lines.append(f"rate limits  {facts.rate_limit_avoided} avoided before sending"
                 f" ({avoided or 'none'}); provider 429s {facts.provider_429s}")
    lines += ["", "by model     " + "  ".join(
        ["requests", "errors", "p95 ms", "quality", "cost $"])]
    for row in model_table(data).itertuples():
        lines.append(f"  {row.model:<13}{row.attempts:>8}{row.error_rate:>8.0%}"
                     f"{row.p95_latency_ms:>8.0f}{row.quality:>9.2f}{row.cost_usd:>9.4f}")
    health = facts.ledger_total_usd - facts.ledger_requests_usd
    lines.append(f"cost         ${facts.ledger_total_usd:.4f} of ${budget:.2f} daily budget "
                 f"({facts.ledger_total_usd / budget:.1%}), of which health checks ${health:.6f}")
    lines.append(f"             ledger (requests) = sum of per-request costs in the store: "
                 f"{_same(facts.ledger_requests_usd, facts.request_cost_total_usd)}")
    lines.append(f"tokens       ledger = simulator's billed tokens: "
                 f"{'yes' if facts.ledger_tokens == facts.billed_tokens else 'NO'}")
    for report in analyse_experiments(req):
        facts.experiment_arms = {a.arm: a.n for a in report.arms}
        facts.experiment_verdicts = list(report.verdicts)
        arms = ", ".join(f"{a.arm} n={a.n} quality {a.quality.estimate:.2f}" for a in report.arms)
        lines += [f"experiment   {report.name}: {arms}"]
        lines += [f"             {v}" for v in facts.experiment_verdicts]
    lines += ["degradation  " + (("\n             ".join(facts.degradations))
                                 if facts.degradations else "none detected")]
    if facts.demotions:
        lines += ["demotions    " + "\n             ".join(facts.demotions)]
    (store.parent / "demo_summary.json").write_text(json.dumps(asdict(facts), indent=2))
    return "\n".join(lines), facts


def _same(a: float, b: float) -> str:
    if abs(a - b) <= 1e-9 * max(1.0, abs(a)):
        return f"yes (${a:.6f})"
    return f"NO (${a:.6f} vs ${b:.6f})"

