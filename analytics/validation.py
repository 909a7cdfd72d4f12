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

from analytics.degradation import Change, degradation_ratio, find_changes
from analytics.sequential import (
    EQUIVALENT,
    WINNER,
    Cumulative,
    first_decision,
    sequential_path,
)
from analytics.stats import p95_latency_ms

__all__ = ["ABCell", "DegradationCell", "simulate_ab", "simulate_degradation"]


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


# --- Degradation ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DegradationCell:
    """Outcome of ``runs`` simulated series of one metric, re-analysed every ``rerun``
    requests as the watch does. ``change_at`` is None for stable series."""

    scenario: str
    runs: int
    length: int
    false_reports_per_10k: float  # distinct reports before the change (or anywhere if stable)
    found: float  # share of runs reporting the change within ``window`` requests of it
    median_delay: float  # requests from the change to the first report
    median_location_error: float  # |reported change - true change|, requests
    interval_coverage: float  # share of reported intervals containing the true change


def _series(scenario: str, rng: np.random.Generator, runs: int, n: int,
            change_at: int | None) -> tuple[np.ndarray, bool, str]:
    """Oriented values (worse is up) ``(runs, n)``, whether binary, and the metric."""
    i = np.arange(n)
    after = (i >= change_at) if change_at is not None else np.zeros(n, bool)
    ramp = np.clip((i - (change_at or 0)) / 1000, 0, 1) if change_at is not None else 0 * i
    kind, _, size = scenario.partition(":")
    if kind.startswith("latency"):  # latency-<log sd>:<x step> / drift
        sd = float(kind.split("-")[1]) if "-" in kind else 0.5
        shift = 0.0 if not size else np.log(float(size.rstrip("x~")))
        level = shift * (ramp if size.endswith("~") else after)
        return rng.normal(0, sd, (runs, n)) + level, False, "p95_latency_ms"
    if kind == "quality":  # quality ~ N(0.8, 0.1) clipped; step down by <size>
        drop = float(size.rstrip("~")) if size else 0.0
        level = drop * (ramp if size.endswith("~") else after)
        return -np.clip(rng.normal(0.8, 0.1, (runs, n)) - level, 0, 1), False, "quality"
    if kind.startswith("errors"):  # errors-<base %>:<new %>
        base = float(kind.split("-")[1]) / 100 if "-" in kind else 0.01
        new = float(size.rstrip("%~")) / 100 if size else base
        p = base + (new - base) * (ramp if size.endswith("~") else after)
        return (rng.random((runs, n)) < p).astype(float), True, "error_rate"
    raise ValueError(scenario)


def _value(metric: str, x: np.ndarray) -> float:
    if metric == "p95_latency_ms":
        return p95_latency_ms(np.exp(x))
    return float(np.mean(x)) if metric == "error_rate" else float(-np.mean(x))


def _reported(x: np.ndarray, binary: bool, metric: str, threshold: float) -> list[Change]:
    out = []
    for ch in find_changes(x, binary=binary):
        ref = x[ch.reference[0]:ch.reference[1]]
        seg = x[ch.segment[0]:ch.segment[1]]
        if degradation_ratio(metric, _value(metric, ref), _value(metric, seg)) < threshold:
            out.append(ch)
    return out


def simulate_degradation(scenario: str, *, runs: int = 1000, length: int = 4000,
                         change_at: int | None = None, rerun: int = 100,
                         window: int = 1000, threshold: float = 0.8,
                         seed: int = 0) -> DegradationCell:
    """Scenarios: ``latency-0.8`` (stable, log-sd 0.8), ``latency-0.5:1.5x`` (step x1.5),
    ``latency-0.5:2x~`` (drift to x2 over 1,000 requests), ``quality:0.15``,
    ``errors-1:5%``, ``errors-1`` (stable 1%)..."""
    rng = np.random.default_rng(seed)
    xs, binary, metric = _series(scenario, rng, runs, length, change_at)
    false, delays, errors, covered, found = 0, [], [], [], 0
    for x in xs:
        seen: list[int] = []
        first_true: Change | None = None
        first_at = 0
        for end in range(rerun, length + 1, rerun):
            for ch in _reported(x[:end], binary, metric, threshold):
                true = change_at is not None and ch.segment[1] > change_at - 100 and (
                    ch.index >= change_at - window)
                if true and first_true is None:
                    first_true, first_at = ch, end
                elif not true and all(abs(ch.index - s) > 200 for s in seen):
                    seen.append(ch.index)
                    false += 1
            if first_true is not None and change_at is None:
                break
        if first_true is not None and change_at is not None:
            delay = first_at - change_at
            if delay <= window:
                found += 1
                delays.append(delay)
                errors.append(abs(first_true.index - change_at))
                covered.append(first_true.low <= change_at <= first_true.high)
    stable_requests = runs * (change_at if change_at is not None else length)
    return DegradationCell(
        scenario=scenario, runs=runs, length=length,
        false_reports_per_10k=false / stable_requests * 10_000,
        found=found / runs if change_at is not None else math.nan,
        median_delay=float(np.median(delays)) if delays else math.nan,
        median_location_error=float(np.median(errors)) if errors else math.nan,
        interval_coverage=float(np.mean(covered)) if covered else math.nan)
