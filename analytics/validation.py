"""Simulations with known truth: do the A/B rule and the degradation detector do what
the reports claim? The tests run a few hundred simulations; ``make validate`` runs a
thousand per cell and writes ``docs/validation.md``.

Every simulation is vectorised over runs (numpy arrays ``(runs, ...)``), so a cell of
a thousand 30-day experiments takes well under a second.

    cell = simulate_ab(arms=3, effect=0.0, runs=1000, seed=1)
    cell.family_wise_fp, cell.coverage
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from analytics.sequential import (
    EQUIVALENT,
    WINNER,
    Cumulative,
    first_decision,
    sequential_path,
)

__all__ = ["ABCell", "simulate_ab"]


@dataclass(frozen=True, slots=True)
class ABCell:
    """Outcome of ``runs`` simulated experiments with a known effect (arm 1 - arm 0)."""

    metric: str
    arms: int
    effect: float
    runs: int
    family_wise_fp: float  # share of runs with any winner among pairs with no true effect
    power: float  # share of runs where arm 1 beat arm 0 with the right sign
    wrong_sign: float
    median_days: float  # median look of the decisions on (0, 1), NaN if none
    coverage: float  # share of frozen intervals (all pairs) covering the true difference
    equivalence: float  # share of runs claiming (0, 1) equivalent
    wrong_equivalence: float  # equivalence claimed while |true difference| >= margin


def _draw(metric: str, rng: np.random.Generator, shape: tuple[int, ...],
          shift: np.ndarray) -> np.ndarray:
    """Per-request values; ``shift`` (per arm) is added to the mean (relative for cost)."""
    s = shift.reshape((1, -1) + (1,) * (len(shape) - 2))
    if metric == "quality":  # scores ~ N(0.75, 0.2); failures (5%) count 0
        q = rng.normal(0.75, 0.2, shape) + s
        return np.where(rng.random(shape) < 0.05, 0.0, q) / 0.95
    if metric == "success_rate":
        return (rng.random(shape) < 0.9 + s).astype(float)
    if metric == "cost_per_request":  # lognormal, mean 0.01 * (1 + shift)
        return 0.01 * (1 + s) * rng.lognormal(-0.125, 0.5, shape)
    raise ValueError(metric)


def simulate_ab(*, metric: str = "quality", arms: int = 2, effect: float = 0.0,
                runs: int = 1000, days: int = 30, per_day: int = 50, mde: float = 0.03,
                alpha: float = 0.05, seed: int = 0) -> ABCell:
    """``runs`` experiments of ``days`` daily looks, ``per_day`` requests per arm per
    day; arm 1 differs from the others by ``effect`` (relative for cost); the rule of
    :mod:`analytics.ab` (Bonferroni over pairs, frozen at the stopping look)."""
    rng = np.random.default_rng(seed)
    shift = np.zeros(arms)
    shift[1] = effect
    x = _draw(metric, rng, (runs, arms, days, per_day), shift)
    n = np.broadcast_to(np.arange(1, days + 1, dtype=float) * per_day, (runs, days))
    s = np.cumsum(x.sum(axis=-1), axis=-1)
    q = np.cumsum((x * x).sum(axis=-1), axis=-1)
    truth = {"quality": (0.75 + shift) * 0.95 / 0.95, "success_rate": 0.9 + shift,
             "cost_per_request": 0.01 * (1 + shift)}[metric]
    pairs = list(combinations(range(arms), 2))
    a_pair = alpha / len(pairs)
    any_fp = np.zeros(runs, bool)
    covered, total = 0, 0
    for i, j in pairs:
        margin = mde if metric != "cost_per_request" else mde * 0.01
        path = sequential_path(Cumulative(n, s[:, i], q[:, i]), Cumulative(n, s[:, j], q[:, j]),
                               tau=margin, alpha=a_pair, binary=metric == "success_rate")
        stop = first_decision(path, margin=margin)
        d, half = stop.take(path.diff), stop.take(path.half)
        true = truth[j] - truth[i]
        covered += int(np.sum(np.abs(d - true) <= half))
        total += runs
        if true == 0:
            any_fp |= stop.decision == WINNER
        if (i, j) == (0, 1):
            win = stop.decision == WINNER
            right = win & (np.sign(d) == np.sign(true)) if true else win
            power, wrong = float(np.mean(right)), float(np.mean(win & ~right)) if true else 0.0
            days_taken = stop.look[win] + 1
            median_days = float(np.median(days_taken)) if len(days_taken) else math.nan
            eq = stop.decision == EQUIVALENT
            equivalence = float(np.mean(eq))
            wrong_eq = equivalence if abs(true) >= margin else 0.0
    return ABCell(metric=metric, arms=arms, effect=effect, runs=runs,
                  family_wise_fp=float(np.mean(any_fp)), power=power, wrong_sign=wrong,
                  median_days=median_days, coverage=covered / total, equivalence=equivalence,
                  wrong_equivalence=wrong_eq)
