"""The routing policy: how the selector turns the scored candidates into one choice.

The selector filters and scores exactly as before (:mod:`amm.selector`,
:mod:`amm.scoring`); a :class:`RoutingPolicy` then gives every eligible candidate a
probability, and one is drawn. The probabilities are logged with the decision (the
``amm.select`` span's ``amm.selection.candidates``), which is what lets
:mod:`analytics.ope` estimate offline what another policy would have done. The
logged probability is always the one the draw used, so it stays honest however
rough a policy's own arithmetic is.

Three built-in policies, chosen in the registry's ``"policy"`` object or with
``ModelManager.from_config(policy=...)``:

- ``{"kind": "score"}`` (:class:`ScorePolicy`, the default): the highest score,
  ties by id, probability 1: the seed's deterministic choice (``docs/seed.md``).
- ``{"kind": "softmax", "temperature": T, "floor": f}`` (:class:`SoftmaxPolicy`):
  ``p ∝ exp(score / T)`` over the same scores, then every explorable model gets
  at least ``f``.
- ``{"kind": "thompson", "reward": "quality - lambda * cost", "lambda": L, "floor": f}``
  (:class:`ThompsonPolicy`): per agent type, a Gaussian posterior over each model's
  mean reward (success x quality - L x USD per request) from the fleet's rolling
  statistics; the probability that each model has the highest reward (computed,
  not sampled, so it can be logged), floored the same way.

Exploration is bounded three ways, for every exploring policy: the ``floor``
(``f`` for each explorable model; ``n x f`` must stay below 1, else uniform),
``max_explore_cost_usd`` (a model whose estimated request cost is above it is never
*explored*; it keeps only the probability the policy itself gives it when it is
the greedy choice) and ``explore_high_priority`` (false: a ``priority="HIGH"``
request gets the greedy choice with probability 1). ``agent_types`` limits an
exploring policy to some agent types; the others use the score policy.

The random source is injected (``rng=random.Random(seed)``, or ``"seed"`` in the
config), so a test replays the same choices.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from amm.errors import ConfigurationError
from amm.models import Priority
from amm.scoring import PRIOR_QUALITY, PRIOR_SUCCESS_RATE, Candidate
from telemetry.events import StatsSnapshot

__all__ = [
    "POLICY_KINDS",
    "THOMPSON_REWARD",
    "DecisionContext",
    "RoutingPolicy",
    "ScorePolicy",
    "SoftmaxPolicy",
    "ThompsonPolicy",
    "policy_from_config",
]

POLICY_KINDS = ("score", "softmax", "thompson")
"""The ``kind`` values of the registry's ``"policy"`` object."""

THOMPSON_REWARD = "quality - lambda * cost"
"""The one reward the Thompson policy optimises (per request: quality, 0 when the
request failed, minus lambda times its cost in USD)."""

StatsFn = Callable[[str, str | None], StatsSnapshot | None]


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """What a policy sees of one selection: candidates ranked best score first
    (ties by id) with their scores, and where the fleet's statistics are."""

    agent_type: str
    priority: Priority
    candidates: Sequence[Candidate]
    scores: Sequence[float]
    stats: StatsFn | None = None


class RoutingPolicy(Protocol):
    """Probabilities over the ranked candidates, and a draw from them."""

    kind: str
    version: str

    def probabilities(self, ctx: DecisionContext) -> Sequence[float]:
        """One probability per ``ctx.candidates`` (same order), summing to 1."""
        ...

    def draw(self, probabilities: Sequence[float]) -> int:
        """The index drawn from ``probabilities`` (with the policy's own RNG)."""
        ...


def _version(kind: str, params: Mapping[str, Any]) -> str:
    # Same parameters, same version: a log can be grouped by the policy that wrote it.
    text = json.dumps({"kind": kind, **params}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


class ScorePolicy:
    """The highest score, probability 1 (the seed's behaviour)."""

    __slots__ = ("version",)
    kind = "score"

    def __init__(self) -> None:
        self.version = _version("score", {})

    def probabilities(self, ctx: DecisionContext) -> Sequence[float]:
        """``[1, 0, 0, ...]``: the candidates arrive best first."""
        return [1.0] + [0.0] * (len(ctx.candidates) - 1)

    def draw(self, probabilities: Sequence[float]) -> int:
        """Always the best (index 0)."""
        return 0

    def __repr__(self) -> str:
        return "ScorePolicy()"


class _Exploring:
    """What the exploring policies share: bounds, RNG, the draw, agent-type scope."""

    __slots__ = ("agent_types", "explore_high_priority", "floor", "max_explore_cost_usd", "rng",
                 "version")
    kind = "exploring"

    def __init__(self, floor: float, *, explore_high_priority: bool,
                 max_explore_cost_usd: float | None, agent_types: Collection[str] | None,
                 rng: random.Random | None, params: Mapping[str, Any]) -> None:
        if not 0.0 <= floor < 1.0:
            raise ConfigurationError(f"floor must be in [0, 1); got {floor!r}",
                                     field="policy.floor")
        self.floor = float(floor)
        self.explore_high_priority = explore_high_priority
        self.max_explore_cost_usd = max_explore_cost_usd
        self.agent_types = frozenset(agent_types) if agent_types is not None else None
        self.rng = rng if rng is not None else random.Random()
        self.version = _version(self.kind, {
            "floor": self.floor, "explore_high_priority": explore_high_priority,
            "max_explore_cost_usd": max_explore_cost_usd,
            "agent_types": sorted(self.agent_types) if self.agent_types is not None else None,
            **params})

    def applies_to(self, agent_type: str) -> bool:
        """Whether this policy decides for ``agent_type`` (else the score policy does)."""
        return self.agent_types is None or agent_type in self.agent_types

    def draw(self, probabilities: Sequence[float]) -> int:
        """Inverse-CDF draw with the injected RNG: the first index whose running total
        passes ``u`` (never a zero-probability one: its total equals the one before)."""
        u = self.rng.random()
        cumulative = list(itertools.accumulate(probabilities))
        i = bisect.bisect_right(cumulative, u)
        if i < len(cumulative):
            return i
        # Rounding left u above the total: the last index with a probability.
        return next((j for j in range(len(cumulative) - 1, -1, -1) if probabilities[j] > 0.0),
                    0)

    def _bounded(self, ctx: DecisionContext, raw: Sequence[float], greedy: int) -> list[float]:
        """``raw`` restricted to the explorable models, renormalised, then floored."""
        n = len(raw)
        if n == 1:
            return [1.0]
        if not self.applies_to(ctx.agent_type) or (
                ctx.priority is Priority.HIGH and not self.explore_high_priority):
            out = [0.0] * n
            out[greedy] = 1.0
            return out
        cap = self.max_explore_cost_usd
        if cap is None:
            total = sum(raw)
            if total > 0.0:  # every model explorable: the general case below, in one pass
                f = self.floor if n * self.floor < 1.0 else 1.0 / n
                scale = (1.0 - n * f) / total
                return [f + scale * q for q in raw]
            allowed = [True] * n
        else:
            allowed = [i == greedy or c.estimated_cost <= cap
                       for i, c in enumerate(ctx.candidates)]
        p = [r if ok else 0.0 for r, ok in zip(raw, allowed, strict=True)]
        total = sum(p)
        if total <= 0.0:
            p, total = [0.0] * n, 1.0
            p[greedy] = 1.0
        k = sum(allowed)
        f = self.floor if k * self.floor < 1.0 else 1.0 / k
        scale = (1.0 - k * f) / total
        return [f + scale * q if ok else 0.0 for q, ok in zip(p, allowed, strict=True)]


class SoftmaxPolicy(_Exploring):
    """``p ∝ exp(score / temperature)``, every explorable model at least ``floor``.

    >>> SoftmaxPolicy(temperature=0.05, floor=0.02, rng=random.Random(7))
    """

    __slots__ = ("temperature",)
    kind = "softmax"

    def __init__(self, temperature: float = 0.1, floor: float = 0.0, *,
                 explore_high_priority: bool = True, max_explore_cost_usd: float | None = None,
                 agent_types: Collection[str] | None = None,
                 rng: random.Random | None = None) -> None:
        if not temperature > 0.0 or not math.isfinite(temperature):
            raise ConfigurationError(f"temperature must be a number > 0; got {temperature!r}",
                                     field="policy.temperature")
        self.temperature = float(temperature)
        super().__init__(floor, explore_high_priority=explore_high_priority,
                         max_explore_cost_usd=max_explore_cost_usd, agent_types=agent_types,
                         rng=rng, params={"temperature": self.temperature})

    def probabilities(self, ctx: DecisionContext) -> Sequence[float]:
        """Softmax of the scores (the best first, so exp never overflows), bounded."""
        scores = ctx.scores
        top = scores[0]
        inv_t = 1.0 / self.temperature
        weights = [math.exp((s - top) * inv_t) for s in scores]
        return self._bounded(ctx, weights, 0)

    def __repr__(self) -> str:
        return (f"SoftmaxPolicy(temperature={self.temperature:g}, floor={self.floor:g}, "
                f"version={self.version!r})")


class ThompsonPolicy(_Exploring):
    """Probability matching on a Gaussian posterior of each model's mean reward.

    Reward of one request: quality (0 when it failed) minus ``lam`` x its cost in
    USD. For each (agent type, model), prior N(prior quality x prior success -
    lam x estimated cost, ``prior_sd``²), observations the rolling window's count,
    success rate, mean quality and mean cost, each request with noise ``noise_sd``.
    The probability that a model has the highest mean reward is integrated on a
    grid (bins of each model's CDF times the others' CDFs), so no sampling is
    needed to know it; it is recomputed every ``refresh_every`` decisions of an
    (agent type, eligible set), which keeps a selection cheap.

    >>> ThompsonPolicy(lam=20.0, floor=0.02, rng=random.Random(7))
    """

    __slots__ = ("_cache", "grid", "lam", "noise_sd", "prior_sd", "refresh_every")
    kind = "thompson"

    def __init__(self, lam: float = 0.0, floor: float = 0.0, *, noise_sd: float = 0.25,
                 prior_sd: float = 0.3, refresh_every: int = 16, grid: int = 48,
                 explore_high_priority: bool = True, max_explore_cost_usd: float | None = None,
                 agent_types: Collection[str] | None = None,
                 rng: random.Random | None = None) -> None:
        if not lam >= 0.0 or not math.isfinite(lam):
            raise ConfigurationError(f"lambda must be a number >= 0; got {lam!r}",
                                     field="policy.lambda")
        for name, value in (("noise_sd", noise_sd), ("prior_sd", prior_sd)):
            if not value > 0.0:
                raise ConfigurationError(f"{name} must be > 0; got {value!r}",
                                         field=f"policy.{name}")
        self.lam = float(lam)
        self.noise_sd = float(noise_sd)
        self.prior_sd = float(prior_sd)
        self.refresh_every = max(1, int(refresh_every))
        self.grid = max(8, int(grid))
        # (agent type, eligible ids) -> [decisions since computed, {id: probability}]
        self._cache: dict[tuple[str, tuple[str, ...]], list[Any]] = {}
        super().__init__(floor, explore_high_priority=explore_high_priority,
                         max_explore_cost_usd=max_explore_cost_usd, agent_types=agent_types,
                         rng=rng, params={"reward": THOMPSON_REWARD, "lambda": self.lam,
                                          "noise_sd": self.noise_sd, "prior_sd": self.prior_sd})

    def posterior(self, cand: Candidate, agent_type: str, stats: StatsFn | None
                  ) -> tuple[float, float]:
        """(mean, sd) of ``cand``'s mean reward for ``agent_type``."""
        prior_mean = PRIOR_QUALITY * PRIOR_SUCCESS_RATE - self.lam * cand.estimated_cost
        prior_prec = 1.0 / (self.prior_sd * self.prior_sd)
        snap = stats(cand.model.id, agent_type) if stats is not None else None
        if snap is None or snap.count <= 0:
            return prior_mean, self.prior_sd
        quality = snap.mean_quality if snap.mean_quality is not None else PRIOR_QUALITY
        observed = snap.success_rate * quality - self.lam * snap.cost_usd / snap.count
        data_prec = snap.count / (self.noise_sd * self.noise_sd)
        var = 1.0 / (prior_prec + data_prec)
        return var * (prior_mean * prior_prec + observed * data_prec), math.sqrt(var)

    def probabilities(self, ctx: DecisionContext) -> Sequence[float]:
        """P(each model has the highest reward), bounded; greedy = highest posterior mean."""
        cands = ctx.candidates
        key = (ctx.agent_type, tuple(c.model.id for c in cands))
        entry = self._cache.get(key)
        if entry is None or entry[0] >= self.refresh_every:
            post = [self.posterior(c, ctx.agent_type, ctx.stats) for c in cands]
            greedy = max(range(len(post)), key=lambda i: post[i][0])
            entry = self._cache[key] = [0, _prob_of_max(post, self.grid), greedy]
            if len(self._cache) > 4096:  # eligible sets churn under faults: stay bounded
                self._cache.pop(next(iter(self._cache)))
        entry[0] += 1
        return self._bounded(ctx, entry[1], entry[2])

    def __repr__(self) -> str:
        return (f"ThompsonPolicy(lambda={self.lam:g}, floor={self.floor:g}, "
                f"version={self.version!r})")


def _prob_of_max(post: Sequence[tuple[float, float]], grid: int) -> list[float]:
    """P(X_i is the largest) for independent X_i ~ N(mean_i, sd_i²).

    On bins [x_g, x_g+1] spanning where the maximum lies: the mass of X_i in the bin
    (a CDF difference, exact however narrow X_i is) times the mean over the bin's
    edges of the other CDFs' product (prefix and suffix products, no division).
    """
    n = len(post)
    if n == 1:
        return [1.0]
    lo = max(m - 5.0 * s for m, s in post)
    hi = max(m + 5.0 * s for m, s in post)
    if not hi > lo:
        return [1.0 / n] * n
    step = (hi - lo) / grid
    xs = [lo + g * step for g in range(grid + 1)]
    inv_sqrt2 = 1.0 / math.sqrt(2.0)
    cdf = [[0.5 * (1.0 + math.erf((x - m) / s * inv_sqrt2)) for x in xs] for m, s in post]
    # others[i][g] = prod_{j != i} cdf[j][g]
    others = [[1.0] * (grid + 1) for _ in range(n)]
    for g in range(grid + 1):
        acc = 1.0
        for i in range(n):
            others[i][g] = acc
            acc *= cdf[i][g]
        acc = 1.0
        for i in range(n - 1, -1, -1):
            others[i][g] *= acc
            acc *= cdf[i][g]
    probs = []
    for i in range(n):
        c, o = cdf[i], others[i]
        # Mass of X_i below lo: the others are then almost surely above it.
        total = 0.0
        for g in range(grid):
            total += (c[g + 1] - c[g]) * 0.5 * (o[g] + o[g + 1])
        probs.append(max(total, 0.0))
    s = sum(probs)
    return [p / s for p in probs] if s > 0 else [1.0 / n] * n


# -- configuration ------------------------------------------------------------------------

_COMMON_KEYS = {"kind", "floor", "explore_high_priority", "max_explore_cost_usd", "agent_types",
                "seed"}
_KEYS = {
    "score": {"kind"},
    "softmax": _COMMON_KEYS | {"temperature"},
    "thompson": _COMMON_KEYS | {"reward", "lambda", "noise_sd", "prior_sd", "refresh_every"},
}


def _number(raw: Mapping[str, Any], key: str, default: float | None, at: str) -> float | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"{at}.{key}: must be a number, got {value!r}",
                                 field=f"{at}.{key}")
    return float(value)


def policy_from_config(raw: Mapping[str, Any] | RoutingPolicy | str | None, *,
                       rng: random.Random | None = None, at: str = "policy") -> RoutingPolicy:
    """A policy from the registry's ``"policy"`` object (or a kind name, or a policy as is).

    >>> policy_from_config({"kind": "softmax", "temperature": 0.05, "floor": 0.02})
    SoftmaxPolicy(temperature=0.05, floor=0.02, ...)

    Errors are :class:`~amm.errors.ConfigurationError` naming the field
    (``policy.temperature: must be a number > 0``).
    """
    if raw is None:
        return ScorePolicy()
    if isinstance(raw, str):
        raw = {"kind": raw}
    if not isinstance(raw, Mapping):
        if hasattr(raw, "probabilities") and hasattr(raw, "draw"):
            return raw
        raise ConfigurationError(f"{at}: must be an object with a kind, got {raw!r}", field=at)
    kind = raw.get("kind", "score")
    if kind not in _KEYS:
        raise ConfigurationError(f"{at}.kind: must be one of {', '.join(POLICY_KINDS)}, "
                                 f"got {kind!r}", field=f"{at}.kind")
    unknown = sorted(set(raw) - _KEYS[kind])
    if unknown:
        raise ConfigurationError(f"{at}.{unknown[0]}: unknown key for kind {kind!r} (known: "
                                 f"{', '.join(sorted(_KEYS[kind]))})", field=f"{at}.{unknown[0]}")
    if kind == "score":
        return ScorePolicy()
    seed = raw.get("seed")
    if rng is None and seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigurationError(f"{at}.seed: must be an integer, got {seed!r}",
                                     field=f"{at}.seed")
        rng = random.Random(seed)
    agent_types = raw.get("agent_types")
    if agent_types is not None and (not isinstance(agent_types, list)
                                    or not all(isinstance(a, str) for a in agent_types)):
        raise ConfigurationError(f"{at}.agent_types: must be a list of strings, got "
                                 f"{agent_types!r}", field=f"{at}.agent_types")
    explore_high = raw.get("explore_high_priority", True)
    if not isinstance(explore_high, bool):
        raise ConfigurationError(f"{at}.explore_high_priority: must be true or false, got "
                                 f"{explore_high!r}", field=f"{at}.explore_high_priority")
    common: dict[str, Any] = {
        "explore_high_priority": explore_high,
        "max_explore_cost_usd": _number(raw, "max_explore_cost_usd", None, at),
        "agent_types": agent_types, "rng": rng,
    }
    floor = _number(raw, "floor", 0.0, at)
    assert floor is not None
    try:
        if kind == "softmax":
            temperature = _number(raw, "temperature", 0.1, at)
            assert temperature is not None
            return SoftmaxPolicy(temperature, floor, **common)
        reward = raw.get("reward", THOMPSON_REWARD)
        if " ".join(str(reward).split()) != THOMPSON_REWARD:
            raise ConfigurationError(f"{at}.reward: only {THOMPSON_REWARD!r} is supported, got "
                                     f"{reward!r}", field=f"{at}.reward")
        lam = _number(raw, "lambda", 0.0, at)
        assert lam is not None
        extra = {k: raw[k] for k in ("noise_sd", "prior_sd", "refresh_every") if k in raw}
        return ThompsonPolicy(lam, floor, **extra, **common)
    except ConfigurationError as exc:
        field = exc.field or at
        text = exc.error_message
        raise ConfigurationError(text if text.startswith(field) else f"{field}: {text}",
                                 field=field) from None
