"""The always-valid two-arm test over looks, vectorised: one rule for every A/B metric.

At each look (e.g. each day) the running difference of means ``d = mean(b) - mean(a)``
and its variance ``V`` give the mSPRT statistic (see :mod:`analytics.stats`)

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))

and the confidence sequence ``d +- half``, the set of effects the same test does not
reject. Both hold at any stopping time (Ville's inequality): the analyst may look
every day. From them, one decision per look:

- ``winner``: ``Lambda >= 1 / alpha`` (the interval leaves 0);
- ``equivalent``: the interval lies inside ``(-margin, +margin)`` (an equivalence
  claim is wrong only when the interval misses the truth: at most ``alpha``);
- ``continue`` otherwise.

The first look that decides is the *stopping time*: its estimate, interval and n are
frozen and later data do not change them (recomputing at later looks is what let an
estimate leave its printed interval and a winner flip).

Everything takes arrays ``(..., looks)`` of *cumulative* counts, sums and sums of
squares, so ``make validate`` runs a thousand experiments in one call.

    path = sequential_path(cum_a, cum_b, tau=0.03, alpha=0.05)
    stop = first_decision(path, margin=0.03)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = [
    "CONTINUE",
    "EQUIVALENT",
    "WINNER",
    "Cumulative",
    "SequentialPath",
    "Stop",
    "cumulative",
    "first_decision",
    "half_width",
    "needed_per_arm",
    "sequential_path",
]

CONTINUE, WINNER, EQUIVALENT = 0, 1, 2
"""Decision codes of :func:`first_decision` (``continue`` / ``winner`` / ``equivalent``)."""


@dataclass(frozen=True, slots=True)
class Cumulative:
    """Cumulative n, sum and sum of squares of one arm at each look: arrays ``(..., looks)``."""

    n: np.ndarray
    s: np.ndarray
    q: np.ndarray


def cumulative(looks: list[np.ndarray]) -> Cumulative:
    """The :class:`Cumulative` of one arm from the values that arrived before each look."""
    n = np.cumsum([len(x) for x in looks]).astype(float)
    s = np.cumsum([float(np.sum(x)) for x in looks])
    q = np.cumsum([float(np.sum(np.square(x))) for x in looks])
    return Cumulative(n, s, q)


@dataclass(frozen=True, slots=True)
class SequentialPath:
    """The test at every look: estimate, variance, log Lambda, interval half-width."""

    diff: np.ndarray
    var: np.ndarray
    log_lambda: np.ndarray
    half: np.ndarray
    mean_a: np.ndarray
    mean_b: np.ndarray
    n_a: np.ndarray
    n_b: np.ndarray
    alpha: float

    @property
    def p_value(self) -> np.ndarray:
        """The always-valid p-value at each look: ``min over looks so far of 1/Lambda``."""
        running = np.maximum.accumulate(np.nan_to_num(self.log_lambda, nan=-np.inf), axis=-1)
        return np.minimum(1.0, np.exp(-np.maximum(running, 0.0)))


def half_width(var: np.ndarray | float, tau: float, alpha: float) -> np.ndarray:
    """Half-width of the mSPRT confidence sequence for a difference with variance ``var``."""
    v = np.maximum(np.asarray(var, dtype=float), 1e-300)
    t2 = tau * tau
    return np.asarray(
        np.sqrt(v * (v + t2) / t2 * (np.log((v + t2) / v) + 2 * math.log(1 / alpha))),
        dtype=float)


def sequential_path(a: Cumulative, b: Cumulative, *, tau: float, alpha: float,
                    binary: bool = False) -> SequentialPath:
    """The mSPRT of ``mean(b) - mean(a)`` at every look (arrays broadcast together).

    Looks with fewer than 2 values in an arm are undefined (NaN) and never decide.
    ``binary``: the values are 0/1; the variance uses ``(s + 1) / (n + 2)`` for the
    rate, so that an arm with no failure yet does not claim a variance of 0.
    """
    if tau <= 0 or not 0 < alpha < 1:
        raise ValueError(f"need tau > 0 and 0 < alpha < 1; got tau={tau}, alpha={alpha}")
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (a.n >= 2) & (b.n >= 2)
        ma, mb = a.s / a.n, b.s / b.n
        if binary:
            pa, pb = (a.s + 1) / (a.n + 2), (b.s + 1) / (b.n + 2)
            va, vb = pa * (1 - pa) * a.n / (a.n - 1), pb * (1 - pb) * b.n / (b.n - 1)
        else:
            va = np.maximum((a.q - a.s * a.s / a.n) / (a.n - 1), 0.0)
            vb = np.maximum((b.q - b.s * b.s / b.n) / (b.n - 1), 0.0)
        v = np.where(ok, np.maximum(va / a.n + vb / b.n, 1e-18), np.nan)
        d = np.where(ok, mb - ma, np.nan)
        t2 = tau * tau
        log_lambda = 0.5 * np.log(v / (v + t2)) + t2 * d * d / (2 * v * (v + t2))
    return SequentialPath(diff=d, var=v, log_lambda=log_lambda, half=half_width(v, tau, alpha),
                          mean_a=ma, mean_b=mb, n_a=a.n, n_b=b.n, alpha=alpha)


@dataclass(frozen=True, slots=True)
class Stop:
    """Where each experiment decided: look index (last look if undecided) and decision."""

    look: np.ndarray  # int, (...)
    decision: np.ndarray  # CONTINUE / WINNER / EQUIVALENT, (...)

    def take(self, values: np.ndarray) -> np.ndarray:
        """``values[..., look]``: a path quantity frozen at the stopping look."""
        return np.take_along_axis(values, self.look[..., None], axis=-1)[..., 0]


def first_decision(path: SequentialPath, *, margin: float) -> Stop:
    """The first look at which the test rejects or the interval fits inside ``+-margin``."""
    reject = np.nan_to_num(path.log_lambda, nan=-np.inf) >= math.log(1 / path.alpha)
    with np.errstate(invalid="ignore"):
        inside = np.abs(path.diff) + path.half < margin
    decided = reject | inside
    looks = decided.shape[-1]
    any_decided = decided.any(axis=-1)
    first = np.where(any_decided, decided.argmax(axis=-1), looks - 1)
    at_reject = np.take_along_axis(reject, first[..., None], axis=-1)[..., 0]
    decision = np.where(~any_decided, CONTINUE, np.where(at_reject, WINNER, EQUIVALENT))
    return Stop(look=first.astype(int), decision=decision.astype(int))


def needed_per_arm(sd: float, mde: float, *, alpha: float, power: float = 0.8,
                   cap: int = 10_000_000) -> int:
    """n per arm at which the sequential rule finds a true difference of ``mde`` with
    probability ``power`` (its interval, at that n alone, leaves 0), for per-request
    standard deviation ``sd``. Conservative: earlier looks only add power.

    It is larger than the fixed-sample n (about 2x at alpha 0.05): the price of
    being allowed to look every day.
    """
    if mde <= 0 or sd <= 0 or math.isnan(sd):
        return 0 if sd == 0 else -1
    z = sps.norm.ppf(power)

    def powered(n: float) -> bool:
        v = 2 * sd * sd / n
        return bool(mde - half_width(v, mde, alpha) >= z * math.sqrt(v))

    hi = 2
    while not powered(hi):
        hi *= 2
        if hi > cap:
            return cap
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if powered(mid) else (mid, hi)
    return hi
