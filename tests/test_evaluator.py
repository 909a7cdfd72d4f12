"""ResponseEvaluator and the heuristic quality metrics."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from amm.errors import ConfigurationError, InvalidRequestError
from amm.evaluator import ResponseEvaluator
from amm.models import ModelRequest, ModelResponse, QualityScore, TokenUsage
from amm.quality import HeuristicScorer, terms
from telemetry.events import QualityEvent
from tests.routing_fakes import ListSink

FIXED = datetime(2026, 1, 1, tzinfo=UTC)


def response(content: str, *, finish_reason: str = "stop", model_id: str = "m") -> ModelResponse:
    return ModelResponse(content=content, model_id=model_id, token_usage=TokenUsage(10, 50),
                         latency_ms=100.0, cost=0.001, metadata={"finish_reason": finish_reason})


ASYNC_TASK = ModelRequest(prompt="Explain how async/await works in Python", task_id="t-1",
                          agent_type="research")
ASYNC_ANSWER = """Async/await in Python is built on coroutines and the event loop. Defining a \
function with `async def` makes calling it return a coroutine object instead of running the \
body. When a coroutine reaches an `await`, it suspends and hands control back to the event \
loop, which runs other tasks while the awaited I/O completes.

Key points:
- `async def` declares a coroutine function.
- `await` suspends the coroutine until the awaitable finishes.
- `asyncio.run()` starts the event loop and runs the main coroutine.

This cooperative multitasking makes Python efficient for I/O-bound work."""
OFF_TOPIC_CUT = ("The weather in Paris is usually mild in spring and the city has many museums "
                 "and the city has many museums and the city has")

CODE_TASK = ModelRequest(prompt="Write a Python function to calculate fibonacci numbers",
                         task_id="t-2", agent_type="implementation")
GOOD_CODE = """Here is an iterative function that calculates Fibonacci numbers:

```python
def fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
```

It runs in O(n) time and constant memory."""
BROKEN_CODE = GOOD_CODE.replace("def fibonacci(n: int) -> int:", "def fibonacci(n: int) -> int")


def evaluator(**kw) -> ResponseEvaluator:
    return ResponseEvaluator(clock=lambda: FIXED, **kw)


async def test_overall_is_40_35_25_weighted_sum_of_the_three_metrics():
    ev = evaluator()
    for content, task in [(ASYNC_ANSWER, ASYNC_TASK), (OFF_TOPIC_CUT, ASYNC_TASK),
                          (BROKEN_CODE, CODE_TASK)]:
        q = await ev.evaluate_response(response(content), task)
        assert q.overall_score == pytest.approx(
            0.40 * q.completeness + 0.35 * q.relevance + 0.25 * q.coherence)
        assert (q.completeness, q.relevance, q.coherence) == (
            ev.calculate_completeness(response(content), task),
            ev.calculate_relevance(response(content), task),
            ev.calculate_coherence(response(content)))


async def test_scores_are_deterministic():
    a = await evaluator().evaluate_response(response(ASYNC_ANSWER), ASYNC_TASK)
    b = await evaluator().evaluate_response(response(ASYNC_ANSWER), ASYNC_TASK)
    assert a == b
    assert a.timestamp == FIXED


async def test_on_topic_answer_scores_above_the_threshold_and_off_topic_truncated_far_below():
    ev = evaluator()
    good = await ev.evaluate_response(response(ASYNC_ANSWER), ASYNC_TASK)
    bad = await ev.evaluate_response(response(OFF_TOPIC_CUT, finish_reason="length"), ASYNC_TASK)
    assert good.overall_score > 0.8
    assert bad.overall_score < 0.3
    assert good.relevance > bad.relevance
    assert good.completeness > bad.completeness
    assert good.coherence > bad.coherence


def test_code_task_rewards_a_code_block_that_parses():
    ev = evaluator()
    parsed = ev.calculate_completeness(response(GOOD_CODE), CODE_TASK)
    broken = ev.calculate_completeness(response(BROKEN_CODE), CODE_TASK)
    prose = ev.calculate_completeness(
        response("Fibonacci numbers are a sequence where each is the sum of the two before."),
        CODE_TASK)
    assert parsed == pytest.approx(1.0)
    assert parsed > broken > prose


def test_explanations_about_a_language_are_not_code_tasks():
    # "Python" alone does not ask for code: a prose answer can be complete.
    assert evaluator().calculate_completeness(response(ASYNC_ANSWER), ASYNC_TASK) == 1.0


def test_numbered_requirements_count_one_by_one():
    task = ModelRequest(prompt="Review this design:\n1. List the security risks\n"
                               "2. Suggest caching improvements\n3. Estimate the monthly cost",
                        task_id="t-3", agent_type="review")
    full = ("Security risks: keys are stored in plain text and endpoints lack limits.\n\n"
            "Caching improvements: put an LRU cache in front of the database.\n\n"
            "Monthly cost estimate: about $200 for the extra cache nodes.")
    one_of_three = "Security risks: keys are stored in plain text and endpoints lack limits."
    ev = evaluator()
    assert ev.calculate_completeness(response(full), task) == pytest.approx(1.0)
    # a third of the asks; 11 distinct words keep the short-answer factor at 1
    assert ev.calculate_completeness(response(one_of_three), task) == pytest.approx(1 / 3)


def test_finish_reason_length_lowers_completeness_and_coherence():
    ev = evaluator()
    done, cut = response(ASYNC_ANSWER), response(ASYNC_ANSWER, finish_reason="length")
    assert ev.calculate_completeness(cut, ASYNC_TASK) == pytest.approx(
        0.6 * ev.calculate_completeness(done, ASYNC_TASK))
    assert ev.calculate_coherence(cut) < ev.calculate_coherence(done)


def test_runaway_repetition_lowers_coherence():
    ev = evaluator()
    looping = response("async await python " * 60)
    assert ev.calculate_coherence(looping) < 0.2
    assert ev.calculate_coherence(response(ASYNC_ANSWER)) > 0.9


def test_text_cut_mid_sentence_lowers_coherence():
    ev = evaluator()
    whole = response("The event loop runs coroutines. Each await yields control to the loop.")
    cut = response("The event loop runs coroutines. Each await yields control to the")
    assert ev.calculate_coherence(whole) == pytest.approx(1.0)
    assert ev.calculate_coherence(cut) == pytest.approx(1.0 - 0.25 * 0.7)


def test_empty_response_scores_zero_and_every_metric_stays_in_unit_interval():
    ev = evaluator()
    assert ev.calculate_completeness(response(""), ASYNC_TASK) == 0.0
    assert ev.calculate_relevance(response(""), ASYNC_TASK) == 0.0
    assert ev.calculate_coherence(response("   ")) == 0.0
    for content in ["?", "```", "a" * 5000, "1. 2. 3.", GOOD_CODE * 3, "¿Qué? ¡Sí!"]:
        q = HeuristicScorer().score(response(content), CODE_TASK)
        assert all(0.0 <= v <= 1.0 for v in (q.overall_score, q.completeness, q.relevance,
                                             q.coherence))


def test_terms_drop_stop_words_and_stem_lightly():
    assert terms("Write the numbers while calculating") == ["number", "calculat"]


async def test_evaluation_emits_one_quality_event_with_times():
    sink = ListSink()
    ev = evaluator(events=sink)
    q = await ev.evaluate_response(response(ASYNC_ANSWER, model_id="gpt-x"), ASYNC_TASK)
    (event,) = sink.events
    assert isinstance(event, QualityEvent)
    assert (event.model_id, event.agent_type, event.task_id) == ("gpt-x", "research", "t-1")
    assert (event.overall, event.completeness, event.relevance, event.coherence) == (
        q.overall_score, q.completeness, q.relevance, q.coherence)
    assert 0 < event.start_time_ns <= event.end_time_ns


async def test_custom_scorer_replaces_the_heuristic():
    class Constant:
        def score(self, response: ModelResponse, task: ModelRequest) -> QualityScore:
            return QualityScore(0.5, 0.5, 0.5, 0.5, FIXED)

    q = await evaluator(scorer=Constant()).evaluate_response(response(ASYNC_ANSWER), ASYNC_TASK)
    assert q.overall_score == 0.5


def test_should_switch_model_on_the_seeds_example_4_scores():
    assert evaluator().should_switch_model("gpt-4-turbo", [0.65, 0.68, 0.62, 0.70, 0.64])


def test_should_not_switch_when_the_mean_meets_the_threshold():
    assert not evaluator().should_switch_model("m", [0.65, 0.75, 0.70])


def test_should_not_switch_on_fewer_than_three_scores():
    ev = evaluator()
    assert not ev.should_switch_model("m", [0.1, 0.1])
    assert ev.should_switch_model("m", [0.1, 0.1, 0.1])
    assert evaluator(evaluation_window=2).should_switch_model("m", [0.1, 0.1])


def test_only_the_last_window_of_scores_counts():
    ev = evaluator(evaluation_window=3)
    assert not ev.should_switch_model("m", [0.1, 0.1, 0.1, 0.9, 0.9, 0.9])
    assert ev.should_switch_model("m", [0.9, 0.9, 0.9, 0.1, 0.1, 0.1])


def test_should_switch_accepts_quality_scores():
    low = QualityScore(0.5, 0.5, 0.5, 0.5, FIXED)
    assert evaluator().should_switch_model("m", [low, low, low])


def test_recorded_scores_are_windowed_per_model_and_agent_type_and_drive_demotion():
    ev = evaluator(evaluation_window=4)
    for score in [0.9, 0.2, 0.3, 0.4, 0.5]:
        ev.record_score("m", "review", score)
    assert ev.recent_scores("m", "review") == [0.2, 0.3, 0.4, 0.5]
    assert ev.should_demote("m", "review")
    assert not ev.should_demote("m", "research")
    assert ev.recent_scores("m", "research") == []
    ev.reset("m")
    assert not ev.should_demote("m", "review")


def test_bad_settings_and_scores_are_typed_errors():
    with pytest.raises(ConfigurationError, match="quality_threshold"):
        ResponseEvaluator(quality_threshold=1.5)
    with pytest.raises(ConfigurationError, match="evaluation_window"):
        ResponseEvaluator(evaluation_window=0)
    ev = evaluator()
    with pytest.raises(InvalidRequestError, match="score"):
        ev.record_score("m", "review", 1.2)
    assert ev.recent_scores("m", "review") == []
    with pytest.raises(InvalidRequestError):
        ev.should_switch_model("m", [0.5, "high"])  # type: ignore[list-item]
