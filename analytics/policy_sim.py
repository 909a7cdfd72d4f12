"""A synthetic routing world with known truth, to check the off-policy estimators.

:class:`World` fixes, per (agent type, model), the true success rate, mean quality,
mean cost and mean latency, and the selector-like score each model gets. A
*logging* policy (softmax over the scores with a floor, as ``amm.policy``'s
``softmax``) routes ``n`` requests; outcomes are drawn from the truth; the log has
exactly the shape :func:`analytics.ope.load_decisions` reads from a store (one row
per request, ``candidates`` as ``{model, score, probability, cost_usd, ...}``).
It is vectorised (numpy), so the 100-repetition coverage check runs in seconds; a
real end-to-end run through the manager and the simulator is in the tests.

Since everything is known, :func:`true_value` gives a target policy's exact value,
and :func:`coverage` counts how often the estimators' intervals cover it.

    world = World.default()
    log = world.log(5000, rng=np.random.default_rng(1))
    evaluate_policy(log, "cheapest", lam=world.lam)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics.ope import (
    METHODS,
    LoggedCandidate,
    LoggedDecision,
    TargetPolicy,
    evaluate_policy,
    named_policy,
)

__all__ = ["World", "coverage", "thompson_target", "true_value"]


@dataclass(frozen=True)
class World:
    """Truth per (agent type, model): arrays of shape (agents, models), costs per model."""

    agents: tuple[str, ...]
    models: tuple[str, ...]
    quality: np.ndarray  # mean quality of a successful answer
    success: np.ndarray
    cost_usd: np.ndarray  # (models,) mean cost of one request
    latency_ms: np.ndarray  # (models,)
    scores: np.ndarray  # the selector's score, (agents, models)
    lam: float = 10.0
    temperature: float = 0.05
    floor: float = 0.05

    @staticmethod
    def default() -> World:
        """5 models, 3 agent types: a cheap model as good as the dear one for two types."""
        models = ("sim-gpt-4o", "sim-claude", "sim-mini", "sim-llama", "sim-gemini")
        agents = ("implementation", "review", "research")
        quality = np.array([[0.90, 0.92, 0.89, 0.70, 0.80],
                            [0.91, 0.93, 0.90, 0.72, 0.78],
                            [0.92, 0.94, 0.62, 0.65, 0.85]])
        success = np.array([[0.98, 0.97, 0.99, 0.95, 0.96]] * 3)
        cost = np.array([0.010, 0.015, 0.001, 0.0005, 0.004])
        latency = np.array([900.0, 1100.0, 400.0, 1500.0, 600.0])
        # The seed's score: cost weighs in, and the scorer cannot see per-agent quality.
        scores = np.array([[0.78, 0.76, 0.83, 0.74, 0.80]] * 3)
        return World(agents, models, quality, success, cost, latency, scores)

    def mean_reward(self) -> np.ndarray:
        """E[quality x success - lam x cost] per (agent, model)."""
        reward = self.success * self.quality - self.lam * self.cost_usd[None, :]
        return np.asarray(reward, dtype=float)

    def logging_probabilities(self) -> np.ndarray:
        """The logging softmax-with-floor probabilities per (agent, model)."""
        z = np.exp((self.scores - self.scores.max(1, keepdims=True)) / self.temperature)
        soft = z / z.sum(1, keepdims=True)
        k = self.scores.shape[1]
        return np.asarray(self.floor + (1 - k * self.floor) * soft, dtype=float)

    def log(self, n: int, *, rng: np.random.Generator,
            probabilities: np.ndarray | None = None) -> pd.DataFrame:
        """``n`` logged decisions (agent types uniform), as :func:`load_decisions` rows."""
        probs = self.logging_probabilities() if probabilities is None else probabilities
        agent = rng.integers(len(self.agents), size=n)
        cum = probs.cumsum(1)[agent]
        action = np.minimum((rng.random(n)[:, None] > cum).sum(1), len(self.models) - 1)
        ok = rng.random(n) < self.success[agent, action]
        q = self.quality[agent, action]
        kappa = 20.0  # Beta(q k, (1 - q) k): mean q, sd about 0.06
        quality = np.where(ok, rng.beta(q * kappa, (1 - q) * kappa), 0.0)
        sigma = 0.3  # lognormal with mean exactly 1
        cost = self.cost_usd[action] * rng.lognormal(-sigma ** 2 / 2, sigma, n)
        latency = self.latency_ms[action] * rng.lognormal(-sigma ** 2 / 2, sigma, n)
        cands = [[{"model": m, "score": float(self.scores[a, j]), "probability": float(probs[a, j]),
                   "cost_usd": float(self.cost_usd[j]), "quality": float(self.quality[a, j]),
                   "latency_ms": float(self.latency_ms[j]),
                   "success_rate": float(self.success[a, j])}
                  for j, m in enumerate(self.models)] for a in range(len(self.agents))]
        model = np.array(self.models)[action]
        return pd.DataFrame({
            "agent_type": np.array(self.agents)[agent], "chosen": model,
            "propensity": probs[agent, action], "policy": "softmax", "stage": "initial",
            "candidates": [cands[a] for a in agent],
            "features": [{"agent_type": self.agents[a]} for a in agent],
            "model": model, "quality": quality, "cost_usd": cost, "latency_ms": latency,
            "success": ok.astype(float),
        })

    def target_matrix(self, policy: TargetPolicy) -> np.ndarray:
        """The target's probabilities per (agent, model) (targets here see only the agent
        type and the candidates, which the world fixes per agent type)."""
        out = np.zeros(self.scores.shape)
        probs = self.logging_probabilities()
        for a, agent in enumerate(self.agents):
            decision = LoggedDecision(agent, tuple(_candidate(self, a, j, probs)
                                                   for j in range(len(self.models))))
            for model, p in policy(decision).items():
                out[a, self.models.index(model)] = p
        return out


def _candidate(world: World, a: int, j: int, probs: np.ndarray) -> LoggedCandidate:
    return LoggedCandidate(world.models[j], float(world.scores[a, j]), float(probs[a, j]),
                           float(world.cost_usd[j]), float(world.quality[a, j]),
                           float(world.latency_ms[j]), float(world.success[a, j]))


def true_value(world: World, policy: TargetPolicy) -> float:
    """The exact expected reward per request of ``policy`` (agent types uniform)."""
    return float((world.target_matrix(policy) * world.mean_reward()).sum(1).mean())


def thompson_target(world: World, pilot: pd.DataFrame, *, noise_sd: float = 0.25,
                    prior_sd: float = 0.3, draws: int = 20000, seed: int = 0) -> TargetPolicy:
    """A Thompson policy frozen at the posterior of a pilot log (per agent type, Gaussian
    posterior of each model's mean reward; P(best) by Monte Carlo), as a target."""
    rng = np.random.default_rng(seed)
    reward = pilot["quality"].to_numpy(float) - world.lam * pilot["cost_usd"].to_numpy(float)
    table: dict[str, dict[str, float]] = {}
    for agent in world.agents:
        means, sds = [], []
        for model in world.models:
            chosen = (pilot["agent_type"] == agent) & (pilot["chosen"] == model)
            r = reward[chosen.to_numpy()]
            prec = 1 / prior_sd ** 2 + len(r) / noise_sd ** 2
            prior = 0.7 - world.lam * float(world.cost_usd[world.models.index(model)])
            means.append((prior / prior_sd ** 2 + r.sum() / noise_sd ** 2) / prec)
            sds.append(prec ** -0.5)
        best = (rng.normal(means, sds, size=(draws, len(world.models)))).argmax(1)
        share = np.bincount(best, minlength=len(world.models)) / draws
        table[agent] = {m: float(p) for m, p in zip(world.models, share, strict=True) if p > 0}

    def thompson(decision: LoggedDecision) -> Mapping[str, float]:
        return table[decision.agent_type]
    return thompson


def coverage(world: World, targets: Mapping[str, TargetPolicy | str], *, reps: int = 100,
             n: int = 5000, seed: int = 0, alpha: float = 0.05
             ) -> dict[str, dict[str, float]]:
    """Per target: its true value and, per method, the share of ``reps`` logs whose
    interval covered it, the mean estimate and the mean interval width."""
    rng = np.random.default_rng(seed)
    resolved = {name: named_policy(t) if isinstance(t, str) else t for name, t in targets.items()}
    truth = {name: true_value(world, t) for name, t in resolved.items()}
    hits = {name: dict.fromkeys(METHODS, 0) for name in resolved}
    sums = {name: dict.fromkeys(METHODS, 0.0) for name in resolved}
    widths = {name: dict.fromkeys(METHODS, 0.0) for name in resolved}
    for _ in range(reps):
        log = world.log(n, rng=rng)
        for name, target in resolved.items():
            est = evaluate_policy(log, target, lam=world.lam, alpha=alpha)
            for how in METHODS:
                e = est.methods[how]
                hits[name][how] += e.ci_low <= truth[name] <= e.ci_high
                sums[name][how] += e.value
                widths[name][how] += e.ci_high - e.ci_low
    out: dict[str, dict[str, float]] = {}
    for name in resolved:
        row = {"true": truth[name]}
        for how in METHODS:
            row[f"{how}_coverage"] = hits[name][how] / reps
            row[f"{how}_mean"] = sums[name][how] / reps
            row[f"{how}_width"] = widths[name][how] / reps
        out[name] = row
    return out

