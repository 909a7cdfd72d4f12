"""Response evaluation: score each answer and say when a model should be switched.

:class:`ResponseEvaluator` scores a response with its scorer (the built-in
:class:`~amm.quality.HeuristicScorer`: overall = 0.40 completeness + 0.35 relevance +
0.25 coherence; see :mod:`amm.quality`) and emits a ``QualityEvent``. It also keeps
a bounded window of recent overall scores per (model, agent type), which the
manager feeds with :meth:`~ResponseEvaluator.record_score` and reads with
:meth:`~ResponseEvaluator.should_demote`. The manager, not the evaluator, records
the demotion event (one fact, one place).

Switching rule (:meth:`~ResponseEvaluator.should_switch_model`): over the last
``evaluation_window`` scores, switch when their mean is below ``quality_threshold``,
given at least ``min(evaluation_window, 3)`` scores: one bad answer is noise, three
in a row are a pattern. The seed's Example 4 (``docs/seed.md``; 0.65, 0.68, 0.62, 0.70,
0.64; mean 0.658 < 0.7) says switch.
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime

from amm.errors import ConfigurationError, InvalidRequestError
from amm.models import ModelRequest, ModelResponse, QualityScore, utcnow
from amm.quality import HeuristicScorer, QualityScorer
from telemetry.conventions import EVAL_LABEL_FAIL, EVAL_LABEL_PASS
from telemetry.events import NULL_SINK, EventSink, QualityEvent

__all__ = ["MIN_SCORES_TO_SWITCH", "ResponseEvaluator"]

MIN_SCORES_TO_SWITCH = 3
"""Fewest scores (capped at the window size) on which a switch is recommended."""


def _as_float(score: float | QualityScore, name: str) -> float:
    value = score.overall_score if isinstance(score, QualityScore) else score
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InvalidRequestError(f"{name} must be a number in [0, 1]; got {value!r}",
                                  error_type="invalid_quality_score")
    return float(value)


class ResponseEvaluator:
    """Scores responses and tracks recent quality per (model, agent type).

    >>> evaluator = ResponseEvaluator(quality_threshold=0.7, evaluation_window=10)
    >>> quality = await evaluator.evaluate_response(response, request)
    """

    def __init__(
        self,
        quality_threshold: float = 0.7,
        evaluation_window: int = 10,
        *,
        scorer: QualityScorer | None = None,
        events: EventSink = NULL_SINK,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if (isinstance(quality_threshold, bool) or not isinstance(quality_threshold, int | float)
                or not 0.0 <= quality_threshold <= 1.0):
            raise ConfigurationError(
                f"quality_threshold must be a number in [0, 1]; got {quality_threshold!r}",
                field="quality_threshold")
        if (isinstance(evaluation_window, bool) or not isinstance(evaluation_window, int)
                or evaluation_window < 1):
            raise ConfigurationError(
                f"evaluation_window must be an int >= 1; got {evaluation_window!r}",
                field="evaluation_window")
        self.quality_threshold = float(quality_threshold)
        self.evaluation_window = evaluation_window
        self._heuristic = HeuristicScorer(clock=clock)
        self.scorer: QualityScorer = scorer if scorer is not None else self._heuristic
        self._events = events
        self._windows: dict[tuple[str, str], deque[float]] = {}

    # -- scoring --------------------------------------------------------------------------

    async def evaluate_response(self, response: ModelResponse, task: ModelRequest
                                ) -> QualityScore:
        """Score ``response`` as an answer to ``task`` and emit a QualityEvent.

        Does not record the score in the window: call :meth:`record_score` for that.
        """
        start = time.time_ns()
        scored = self.scorer.score(response, task)
        quality = await scored if inspect.isawaitable(scored) else scored
        self._events.record(QualityEvent(
            model_id=response.model_id, agent_type=task.agent_type, task_id=task.task_id,
            overall=quality.overall_score, completeness=quality.completeness,
            relevance=quality.relevance, coherence=quality.coherence,
            start_time_ns=start, end_time_ns=time.time_ns(),
            # One tolerance with should_switch_model: a mean at the threshold passes.
            label=(EVAL_LABEL_PASS if quality.overall_score >= self.quality_threshold - 1e-9
                   else EVAL_LABEL_FAIL),
            explanation=(f"completeness {quality.completeness:.2f}, relevance "
                         f"{quality.relevance:.2f}, coherence {quality.coherence:.2f}; overall "
                         f"{quality.overall_score:.2f}, threshold {self.quality_threshold:.2f}"),
        ))
        return quality

    def calculate_completeness(self, response: ModelResponse, task: ModelRequest) -> float:
        """Share of the task's requirements addressed, in [0, 1] (see :mod:`amm.quality`)."""
        return self._heuristic.completeness(response, task)

    def calculate_relevance(self, response: ModelResponse, task: ModelRequest) -> float:
        """How on-topic the response is, in [0, 1] (see :mod:`amm.quality`)."""
        return self._heuristic.relevance(response, task)

    def calculate_coherence(self, response: ModelResponse) -> float:
        """Sentence form, repetition and ending, in [0, 1] (see :mod:`amm.quality`)."""
        return self._heuristic.coherence(response)

    # -- switching and demotion -------------------------------------------------------------

    def should_switch_model(self, model_id: str, recent_scores: Iterable[float | QualityScore]
                            ) -> bool:
        """True when the mean of the last ``evaluation_window`` scores is below the
        threshold and there are at least ``min(evaluation_window, 3)`` of them."""
        window = [_as_float(s, "recent_scores item") for s in recent_scores]
        window = window[-self.evaluation_window:]
        if len(window) < min(self.evaluation_window, MIN_SCORES_TO_SWITCH):
            return False
        # The tolerance keeps a mean that equals the threshold in decimals (0.65, 0.75,
        # 0.70 -> 0.6999999999999998 in binary) from counting as below it.
        return sum(window) / len(window) < self.quality_threshold - 1e-9

    def record_score(self, model_id: str, agent_type: str, score: float | QualityScore) -> None:
        """Add ``score`` (overall, in [0, 1]) to the (model, agent type) window."""
        value = _as_float(score, "score")
        key = (model_id, agent_type)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = deque(maxlen=self.evaluation_window)
        window.append(value)

    def recent_scores(self, model_id: str, agent_type: str) -> list[float]:
        """The (model, agent type) window, oldest first."""
        return list(self._windows.get((model_id, agent_type), ()))

    def should_demote(self, model_id: str, agent_type: str) -> bool:
        """:meth:`should_switch_model` over the recorded window of (model, agent type)."""
        window = self._windows.get((model_id, agent_type))
        # Demotion acts on a full window: two bad answers among the first three are
        # noise, not a verdict on the model.
        if window is None or len(window) < self.evaluation_window:
            return False
        return self.should_switch_model(model_id, window)

    def reset(self, model_id: str, agent_type: str | None = None) -> None:
        """Forget the recorded scores of ``model_id`` (for one agent type, or all)."""
        for key in [k for k in self._windows if k[0] == model_id
                    and (agent_type is None or k[1] == agent_type)]:
            del self._windows[key]

    def __repr__(self) -> str:
        return (f"ResponseEvaluator(quality_threshold={self.quality_threshold:g}, "
                f"evaluation_window={self.evaluation_window}, scorer={self.scorer!r}, "
                f"windows={len(self._windows)})")
