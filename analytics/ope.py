"""Off-policy evaluation: what would quality and cost have been under another routing policy?

Every ``amm.select`` span logs the whole decision: each eligible model with its score,
its features and the probability the logging policy gave it
(``amm.selection.candidates``), the chosen one's probability
(``amm.selection.propensity``), the policy and the stage (``initial``, ``failover``,
``cache_hit``). :func:`load_decisions` reads one row per request: its first,
routing decision joined with the request's outcome (quality, cost, latency, success,
the failover path: a failover belongs to the outcome of the first choice). Cache hits
are routed by nobody and are left out of the estimates (counted in ``n_cache_hits``).

:func:`evaluate_policy` then estimates a target policy's value from that log, with
``w = π(a|x) / μ(a|x)`` (target over logged probability of the chosen model):

- **IPS**: ``mean(w r)``, unbiased when the log has support; interval from its
  standard error;
- **SNIPS** (self-normalised, Swaminathan & Joachims 2015): ``sum(w r) / sum(w)``,
  biased by O(1/n) but far less variable; delta-method interval;
- **DR** (doubly robust, Dudík, Langford & Li 2011): a reward model ``q(agent, model)``
  (the mean logged reward of each model per agent type, shrunk towards the model's
  mean over all agent types) plus the importance-weighted residual,
  ``sum_k π(k|x) q(x, k) + w (r - q(x, a))``; unbiased if either the propensities or
  the reward model are right. The default.

Intervals are normal-approximation (CLT) intervals of the per-decision terms; the
effective sample size is ``(Σw)² / Σw²``. The **support check** fails when the
target puts probability on a model the logger gave probability 0 in that decision
(a deterministic logger supports only itself): no estimator can identify such a
policy from this log, and the reason names the models, agent types and counts.

Reward: ``quality - lam * cost_usd`` per request (quality 0 when the request failed),
the one :class:`amm.policy.ThompsonPolicy` optimises. Quality, cost, latency and
success are estimated separately too, with the same method and weights.

    est = evaluate_policy("data/amm.db", "always:sim-claude", lam=10.0)
    est.value, est.ci_low, est.ci_high, est.support_ok, est.metrics["cost_usd"]
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analytics.load import load_requests
from analytics.source import SpanSource, as_source
from telemetry import conventions as cv

__all__ = [
    "DECISION_COLUMNS",
    "METHODS",
    "METRICS",
    "MIN_ESS",
    "Estimate",
    "LoggedCandidate",
    "LoggedDecision",
    "PolicyEstimate",
    "TargetPolicy",
    "evaluate_policy",
    "load_decisions",
    "named_policy",
    "what_if",
]

METHODS = ("ips", "snips", "dr")
"""Estimators :func:`evaluate_policy` computes (``method`` picks the headline one)."""
METRICS = ("quality", "cost_usd", "latency_ms", "success")
"""Outcomes estimated separately besides the reward."""
DECISION_COLUMNS = ("time", "trace_id", "agent_type", "task_id", "chosen", "propensity",
                    "policy", "policy_version", "stage", "candidates", "features", "model",
                    "quality", "cost_usd", "latency_ms", "success", "failover_path")
"""Columns of :func:`load_decisions` (``candidates``: list of dicts, ``features``: dict)."""

_SELECT_ATTRS = (cv.AMM_SELECTION_CANDIDATES, cv.AMM_SELECTION_PROPENSITY,
                 cv.AMM_SELECTION_CHOSEN, cv.AMM_SELECTION_POLICY,
                 cv.AMM_SELECTION_POLICY_VERSION, cv.AMM_SELECTION_FEATURES,
                 cv.AMM_SELECTION_STAGE)
_SHRINK = 5.0  # pseudo-observations pulling q(agent, model) towards the model's mean


@dataclass(frozen=True, slots=True)
class LoggedCandidate:
    """One eligible model of a logged decision: score, logged probability, features."""

    model: str
    score: float
    probability: float
    cost_usd: float = float("nan")
    quality: float = float("nan")
    latency_ms: float = float("nan")
    success_rate: float = float("nan")


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    """What a target policy sees of one logged decision (candidates best score first)."""

    agent_type: str
    candidates: tuple[LoggedCandidate, ...]
    features: Mapping[str, Any] = field(default_factory=dict)


TargetPolicy = Callable[[LoggedDecision], Mapping[str, float]]
"""A target policy: a logged decision -> {model: probability} over its candidates."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """A value with its interval."""

    value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True, slots=True)
class PolicyEstimate:
    """A target policy's estimated value (reward), with the logged policy's beside it.

    ``methods`` holds the reward under every estimator (ips, snips, dr); ``metrics``
    quality, cost_usd, latency_ms and success under ``method``; ``logged_*`` are the
    actual means of the logged traffic. ``support_ok`` is false, with the reason,
    when the log cannot identify the policy.
    """

    policy: str
    method: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    effective_sample_size: float
    support_ok: bool
    support_reason: str
    methods: Mapping[str, Estimate]
    metrics: Mapping[str, Estimate]
    logged_value: float
    logged_metrics: Mapping[str, float]
    lam: float = 0.0
    n_cache_hits: int = 0

    def summary(self) -> str:
        """One line: ``dr 0.812 [0.790, 0.834] (logged 0.775), ESS 1830 of 5000``."""
        text = (f"{self.policy}: {self.method} {self.value:.4f} [{self.ci_low:.4f}, "
                f"{self.ci_high:.4f}] (logged {self.logged_value:.4f}), "
                f"ESS {self.effective_sample_size:.0f} of {self.n}")
        return text if self.support_ok else f"{text}; NOT IDENTIFIED: {self.support_reason}"


# -- loading ---------------------------------------------------------------------------------

def _json(raw: object, default: Any) -> Any:
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return default
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return default
    return raw


def _candidates(raw: object) -> list[dict[str, Any]]:
    out = []
    for item in _json(raw, []) or []:
        if isinstance(item, dict):
            out.append(item)
        else:  # "model=0.8123": a store written before the decision log (no probability)
            model, _, score = str(item).rpartition("=")
            try:
                out.append({"model": model, "score": float(score), "probability": None})
            except ValueError:
                continue
    return out


def load_decisions(source_or_path: SpanSource | str | Path, since: datetime | None = None,
                   until: datetime | None = None) -> pd.DataFrame:
    """One row per request: its first selection (the routing decision; a cache hit's
    own decision for cache hits) and its outcome. Columns: :data:`DECISION_COLUMNS`."""
    source = as_source(source_or_path)
    requests = load_requests(source, since, until)
    spans = source.spans(("gen_ai.operation.name", *_SELECT_ATTRS), since, None)
    select = spans[spans["SpanName"] == cv.SPAN_SELECT].copy()
    if requests.empty or select.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in DECISION_COLUMNS})
    select["time"] = pd.to_datetime(select["Timestamp"], utc=True, format="ISO8601")
    select = select.sort_values("time", kind="stable")
    stage = select[cv.AMM_SELECTION_STAGE].fillna("initial").astype(str)
    # The routing decision: the first initial (or cache-hit) selection of each request.
    first = select[stage != "failover"].drop_duplicates(["TraceId", "ParentSpanId"])
    first = first.set_index(first["TraceId"] + ":" + first["ParentSpanId"].fillna(""))
    key = requests["trace_id"].astype(str) + ":" + requests["span_id"].astype(str)
    row = first.reindex(key.to_numpy())
    quality = requests["quality"].to_numpy(float)
    success = (requests["outcome"] != "error").to_numpy(bool)
    out = pd.DataFrame({
        "time": requests["time"].to_numpy(),
        "trace_id": requests["trace_id"].to_numpy(),
        "agent_type": requests["agent_type"].to_numpy(),
        "task_id": requests["task_id"].to_numpy(),
        "chosen": row[cv.AMM_SELECTION_CHOSEN].to_numpy(),
        "propensity": pd.to_numeric(row[cv.AMM_SELECTION_PROPENSITY], errors="coerce").to_numpy(),
        "policy": row[cv.AMM_SELECTION_POLICY].to_numpy(),
        "policy_version": row[cv.AMM_SELECTION_POLICY_VERSION].to_numpy(),
        "stage": np.where(requests["cache_hit"].to_numpy(bool), "cache_hit",
                          row[cv.AMM_SELECTION_STAGE].fillna("initial").to_numpy()),
        "candidates": [_candidates(c) for c in row[cv.AMM_SELECTION_CANDIDATES]],
        "features": [_json(f, {}) for f in row[cv.AMM_SELECTION_FEATURES]],
        "model": requests["model"].to_numpy(),
        "quality": np.where(success, quality, 0.0),
        "cost_usd": requests["cost_usd"].to_numpy(float),
        "latency_ms": requests["latency_ms"].to_numpy(float),
        "success": success.astype(float),
        "failover_path": requests["failover_path"].to_numpy(),
    })
    return out[out["chosen"].notna()].reset_index(drop=True)


# -- target policies ---------------------------------------------------------------------------

def named_policy(name: str) -> TargetPolicy:
    """``always:<model>`` (that model when it is eligible, else the best score),
    ``cheapest`` (lowest estimated cost, ties by score), ``score`` (the seed's choice:
    the highest score, ties by id)."""

    def best(d: LoggedDecision) -> str:
        return min(d.candidates, key=lambda c: (-c.score, c.model)).model

    if name.startswith("always:"):
        model = name.removeprefix("always:")

        def always(d: LoggedDecision) -> Mapping[str, float]:
            ids = {c.model for c in d.candidates}
            return {model if model in ids else best(d): 1.0}
        return always
    if name == "cheapest":
        return lambda d: {
            min(d.candidates, key=lambda c: (c.cost_usd, -c.score, c.model)).model: 1.0}
    if name == "score":
        return lambda d: {best(d): 1.0}
    raise ValueError(f"unknown policy {name!r} (always:<model>, cheapest, score, or a callable)")


def _decision(agent: str, cands: Sequence[Mapping[str, Any]], features: Any) -> LoggedDecision:
    def num(c: Mapping[str, Any], key: str) -> float:
        v = c.get(key)
        return float(v) if v is not None else float("nan")

    return LoggedDecision(agent, tuple(
        LoggedCandidate(str(c["model"]), num(c, "score"), num(c, "probability"), num(c, "cost_usd"),
                        num(c, "quality"), num(c, "latency_ms"), num(c, "success_rate"))
        for c in cands), features if isinstance(features, Mapping) else {})


# -- estimation --------------------------------------------------------------------------------

def _interval(terms: np.ndarray, z: float) -> Estimate:
    n = len(terms)
    value = float(terms.mean()) if n else float("nan")
    se = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return Estimate(value, value - z * se, value + z * se)


def _snips(w: np.ndarray, r: np.ndarray, z: float) -> Estimate:
    sw = w.sum()
    if sw <= 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    value = float((w * r).sum() / sw)
    n = len(w)
    # Delta method: var = mean(w^2 (r - V)^2) / mean(w)^2 / n.
    se = math.sqrt(float(np.mean((w * (r - value)) ** 2)) / float(np.mean(w)) ** 2 / n)
    return Estimate(value, value - z * se, value + z * se)


def _reward_model(agent: np.ndarray, action: np.ndarray, r: np.ndarray, k: int) -> np.ndarray:
    """q[agent code, model index]: per-(agent, model) mean shrunk to the model's mean."""
    n_agents = int(agent.max()) + 1 if len(agent) else 0
    total = np.zeros((n_agents, k))
    count = np.zeros((n_agents, k))
    np.add.at(total, (agent, action), r)
    np.add.at(count, (agent, action), 1.0)
    model_n = count.sum(0)
    overall = float(r.mean()) if len(r) else 0.0
    model_mean = np.where(model_n > 0, total.sum(0) / np.maximum(model_n, 1), overall)
    return (total + _SHRINK * model_mean) / (count + _SHRINK)


def _z(alpha: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - alpha / 2)


def evaluate_policy(source: SpanSource | str | Path | pd.DataFrame,
                    policy: TargetPolicy | str, *, method: str = "dr", lam: float = 0.0,
                    alpha: float = 0.05, since: datetime | None = None,
                    until: datetime | None = None) -> PolicyEstimate:
    """Estimate ``policy``'s value on the logged decisions of ``source`` (a store, a
    :class:`SpanSource`, or a frame from :func:`load_decisions`).

    ``policy``: a callable ``LoggedDecision -> {model: probability}`` or a name
    (:func:`named_policy`). Reward ``quality - lam * cost_usd``; ``method`` one of
    :data:`METHODS`; ``1 - alpha`` intervals.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    frame = source if isinstance(source, pd.DataFrame) else load_decisions(source, since, until)
    name = policy if isinstance(policy, str) else getattr(policy, "__name__", repr(policy))
    target = named_policy(policy) if isinstance(policy, str) else policy
    is_hit = (frame["stage"] == "cache_hit").to_numpy(bool) if len(frame) else np.zeros(0, bool)
    log = frame[~is_hit].reset_index(drop=True)
    n = len(log)
    z = _z(alpha)
    if n == 0:
        nan = Estimate(float("nan"), float("nan"), float("nan"))
        return PolicyEstimate(name, method, nan.value, nan.ci_low, nan.ci_high, 0, 0.0, False,
                              "no logged routing decisions", dict.fromkeys(METHODS, nan),
                              dict.fromkeys(METRICS, nan), float("nan"),
                              dict.fromkeys(METRICS, float("nan")), lam, int(is_hit.sum()))

    models = sorted({str(c["model"]) for cs in log["candidates"] for c in cs}
                    | set(log["chosen"].astype(str)))
    index = {m: i for i, m in enumerate(models)}
    k = len(models)
    mu = np.zeros((n, k))
    pi = np.zeros((n, k))
    missing_probability = 0
    problems: dict[tuple[str, str], int] = {}
    agents = log["agent_type"].astype(str).to_numpy()
    for i, (agent, cands, feats) in enumerate(zip(agents, log["candidates"], log["features"],
                                                  strict=True)):
        for c in cands:
            p = c.get("probability")
            if p is None:
                missing_probability += 1
            else:
                mu[i, index[str(c["model"])]] = float(p)
        for model, p in target(_decision(agent, cands, feats)).items():
            if p <= 0:
                continue
            j = index.get(model)
            if j is None or mu[i, j] <= 0:
                problems[(model, agent)] = problems.get((model, agent), 0) + 1
                if j is None:
                    continue
            pi[i, j] = p
    action = np.array([index[str(a)] for a in log["chosen"]])
    rows = np.arange(n)
    logged_p = pd.to_numeric(log["propensity"], errors="coerce").to_numpy(float)
    logged_p = np.where(np.isfinite(logged_p) & (logged_p > 0), logged_p, mu[rows, action])
    w = np.where(logged_p > 0, pi[rows, action] / np.where(logged_p > 0, logged_p, 1.0), 0.0)

    support_ok = not problems and not missing_probability
    reasons = []
    if missing_probability:
        reasons.append(f"{missing_probability} logged candidates have no probability "
                       "(a store written before the decision log)")
    if problems:
        listed = ", ".join(f"{m} for {a} ({c} decisions)" for (m, a), c in
                           sorted(problems.items(), key=lambda kv: -kv[1])[:5])
        reasons.append("the target picks models the logging policy gave probability 0: "
                       + listed)
    support_reason = "; ".join(reasons)

    codes, _ = pd.factorize(agents)
    outcome = {m: log[m].to_numpy(float) for m in METRICS}
    reward = outcome["quality"] - lam * outcome["cost_usd"]

    def estimate(r: np.ndarray, how: str) -> Estimate:
        ok = np.isfinite(r)
        if not ok.all():  # e.g. a request with no latency recorded: leave it out
            r = np.where(ok, r, np.nanmean(r) if ok.any() else 0.0)
        if how == "ips":
            return _interval(w * r, z)
        if how == "snips":
            return _snips(w, r, z)
        q = _reward_model(codes, action, r, k)[codes]
        return _interval((pi * q).sum(1) + w * (r - q[rows, action]), z)

    methods = {how: estimate(reward, how) for how in METHODS}
    metrics = {m: estimate(outcome[m], method) for m in METRICS}
    head = methods[method]
    ess = float(w.sum() ** 2 / (w ** 2).sum()) if (w ** 2).sum() > 0 else 0.0
    return PolicyEstimate(
        policy=name, method=method, value=head.value, ci_low=head.ci_low, ci_high=head.ci_high,
        n=n, effective_sample_size=ess, support_ok=support_ok, support_reason=support_reason,
        methods=methods, metrics=metrics, logged_value=float(reward.mean()),
        logged_metrics={m: float(np.nanmean(outcome[m])) for m in METRICS}, lam=lam,
        n_cache_hits=int(is_hit.sum()))


MIN_ESS = 10
"""Below this effective sample size an estimate's interval is flagged as untrustworthy."""


def what_if(source: SpanSource | str | Path | pd.DataFrame, policies: Sequence[TargetPolicy | str],
            *, lam: float = 0.0, method: str = "dr", alpha: float = 0.05) -> str:
    """A text table: the logged policy's actual values, then each target's estimates
    (what ``amm report --policy`` prints).

    >>> print(what_if("data/amm.db", ["always:sim-claude", "cheapest"], lam=10.0))
    """
    frame = source if isinstance(source, pd.DataFrame) else load_decisions(source)
    estimates = [evaluate_policy(frame, p, method=method, lam=lam, alpha=alpha) for p in policies]
    pct = round(100 * (1 - alpha))
    lines = [f"What if (off-policy, {method}, {pct}% intervals; "
             f"reward = quality - {lam:g} x cost):",
             f"  {'policy':<28} {'reward':>26} {'quality':>8} {'cost $':>10} {'latency ms':>11} "
             f"{'success':>8} {'ESS':>7}"]
    if estimates:
        e0 = estimates[0]
        m = e0.logged_metrics
        lines.append(f"  {'logged (actual)':<28} {e0.logged_value:>26.4f} {m['quality']:>8.3f} "
                     f"{m['cost_usd']:>10.5f} {m['latency_ms']:>11.0f} {m['success']:>8.3f} "
                     f"{e0.n:>7}")
    for e in estimates:
        m2 = e.metrics
        reward = f"{e.value:.4f} [{e.ci_low:.4f}, {e.ci_high:.4f}]"
        lines.append(f"  {e.policy:<28} {reward:>26} {m2['quality'].value:>8.3f} "
                     f"{m2['cost_usd'].value:>10.5f} {m2['latency_ms'].value:>11.0f} "
                     f"{m2['success'].value:>8.3f} {e.effective_sample_size:>7.0f}")
        if not e.support_ok:
            lines.append(f"    not identified by this log: {e.support_reason}")
        elif e.effective_sample_size < MIN_ESS:
            lines.append(f"    too few comparable decisions (effective sample size "
                         f"{e.effective_sample_size:.0f} < {MIN_ESS}): the interval is not "
                         f"to be trusted; log more")
    if estimates and estimates[0].n_cache_hits:
        lines.append(f"  ({estimates[0].n_cache_hits} cache hits left out: no routing decision)")
    return "\n".join(lines)
