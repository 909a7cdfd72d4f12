"""A/B experiment arm assignment and the propensity of what was finally chosen.

An :class:`Assigner` maps (experiment, task id) to an arm. The built-in
:class:`HashAssigner` is deterministic: ``sha256(name + "\\x00" + task_id)`` gives a
uniform number in [0, 1), and the arm is found by cumulative weight over the arms
sorted by model id (so reordering the config file does not reshuffle traffic). The
same task id therefore always gets the same arm, in every process.

The selector honours the arm when its model is eligible and otherwise falls back to
the best-scoring eligible model. :func:`logging_propensity` gives the probability
with which that whole policy (draw an arm, fall back when it is ineligible) picks
the chosen model under the current eligibility: what off-policy evaluation needs.
The A/B report compares arms only where the arm was honoured (chosen == arm).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from typing import Protocol

from amm.models import Experiment

__all__ = ["Assigner", "HashAssigner", "logging_propensity"]

_SCALE = float(1 << 64)


class Assigner(Protocol):
    """An arm assignment policy."""

    def assign(self, experiment: Experiment, task_id: str) -> str:
        """The arm (a model id of ``experiment.arms``) for ``task_id``."""
        ...


class HashAssigner:
    """Deterministic assignment by hash of the experiment name and the task id.

    >>> HashAssigner().assign(Experiment("e", "impl", {"a": 0.5, "b": 0.5}), "task-1")
    """

    __slots__ = ("_arms",)

    def __init__(self) -> None:
        # experiment name + arms -> arms sorted by id with cumulative upper bounds
        self._arms: dict[tuple[str, tuple[tuple[str, float], ...]], tuple[tuple[str, float], ...]]
        self._arms = {}

    @staticmethod
    def bucket(experiment_name: str, task_id: str) -> float:
        """The uniform number in [0, 1) that decides ``task_id``'s arm."""
        digest = hashlib.sha256(f"{experiment_name}\x00{task_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / _SCALE

    def assign(self, experiment: Experiment, task_id: str) -> str:
        """The arm whose cumulative-weight interval holds :meth:`bucket`."""
        key = (experiment.name, tuple(experiment.arms.items()))
        bounds = self._arms.get(key)
        if bounds is None:
            total = sum(experiment.arms.values())
            cumulative = 0.0
            acc = []
            for arm, weight in sorted(experiment.arms.items()):
                cumulative += weight / total
                acc.append((arm, cumulative))
            bounds = self._arms[key] = tuple(acc)
        u = self.bucket(experiment.name, task_id)
        for arm, upper in bounds:
            if u < upper:
                return arm
        return bounds[-1][0]  # float rounding left u above the last bound

    def __repr__(self) -> str:
        return f"HashAssigner(experiments_cached={len(self._arms)})"


def logging_propensity(
    arms: Mapping[str, float], chosen: str, ineligible_arms: Collection[str], fallback: str | None
) -> float:
    """P(the selection policy picks ``chosen``) given which arms are ineligible now.

    The policy draws an arm by weight; an eligible arm is taken, an ineligible one
    falls back to ``fallback`` (the best-scoring eligible model in this state). So
    P(chosen) = its weight if it is an eligible arm, plus the weight of every
    ineligible arm if it is the fallback. With every arm eligible this is the arm
    weight; a fallback to a model outside the experiment gets the ineligible arms'
    total weight.

    >>> logging_propensity({"a": 0.5, "b": 0.5}, "c", ["a"], fallback="c")
    0.5
    """
    total = sum(arms.values()) or 1.0
    p = 0.0
    if chosen in arms and chosen not in ineligible_arms:
        p += arms[chosen]
    if chosen == fallback:
        p += sum(arms[a] for a in set(ineligible_arms) if a in arms)
    return min(1.0, p / total)
