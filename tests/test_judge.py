"""The optional LLM-as-judge scorer: parsing, scoring through the client, fallback."""

from __future__ import annotations

import pytest

from amm.api_client import APIClientManager
from amm.api_key_manager import APIKeyManager
from amm.evaluator import ResponseEvaluator
from amm.judge import JUDGE_AGENT_TYPE, LLMJudgeScorer, parse_verdict
from amm.models import ModelMetadata, ModelRequest, ModelResponse, RateLimits, TokenUsage
from amm.quality import HeuristicScorer
from amm.registry import ModelRegistry
from amm.sim import ModelProfile
from telemetry.events import AttemptEvent, QualityEvent

TASK = ModelRequest(prompt="List three uses of a hash map.", task_id="t-judge",
                    agent_type="research", max_tokens=200)
ANSWER = ModelResponse(content="1. Caches. 2. Counting words. 3. Indexing records by key.",
                       model_id="worker", token_usage=TokenUsage(10, 20), latency_ms=5.0,
                       cost=0.0, metadata={"finish_reason": "stop"})


class Sink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def record(self, event: object) -> None:
        self.events.append(event)


def judge_model(api_base: str | None = None, provider: str = "openai") -> ModelMetadata:
    return ModelMetadata(
        id="judge", provider=provider, name="judge", capabilities=["text-generation"],
        cost_per_1k_input_tokens=0.001, cost_per_1k_output_tokens=0.002,
        rate_limits=RateLimits(1000, 1_000_000), context_window=32000,
        average_response_time_ms=100, litellm_model=f"{provider}/judge", api_base=api_base)


class FormattedJudge:
    """A provider that answers like a well-behaved judge model (the provider is the
    external part; the client, scorer and evaluator around it are amm's own)."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.prompts: list[str] = []

    async def complete(self, model, request, *, api_key, timeout_s):
        self.prompts.append(request.prompt)
        return ModelResponse(content=self.reply, model_id=model.id,
                             token_usage=TokenUsage(100, 8), latency_ms=1.0, cost=0.0)


@pytest.mark.parametrize(("text", "expected"), [
    ("completeness=8 relevance=9 coherence=10", {"completeness": 0.8, "relevance": 0.9,
                                                   "coherence": 1.0}),
    ("Completeness: 7\nRelevance: 6.5\nCoherence: 9", {"completeness": 0.7, "relevance": 0.65,
                                                         "coherence": 0.9}),
    ("completeness=8 relevance=9", None),
    ("I think it is fine.", None),
])
def test_a_verdict_is_read_only_when_all_three_scores_are_there(text, expected):
    verdict = parse_verdict(text)
    assert verdict == (pytest.approx(expected) if expected else None)


async def test_the_judges_scores_are_weighted_like_the_seed_and_recorded():
    judge = FormattedJudge("completeness=8 relevance=9 coherence=10")
    keys = APIKeyManager()
    keys.add_key("openai", "sk-judge-0123456789abcdef0123")
    sink = Sink()
    client = APIClientManager(keys, adapters={"openai": judge},
                              registry=ModelRegistry.from_models([judge_model()]), events=sink)
    evaluator = ResponseEvaluator(scorer=LLMJudgeScorer(client, "judge"), events=sink)
    quality = await evaluator.evaluate_response(ANSWER, TASK)
    assert (quality.completeness, quality.relevance, quality.coherence) == (0.8, 0.9, 1.0)
    assert quality.overall_score == pytest.approx(0.40 * 0.8 + 0.35 * 0.9 + 0.25 * 1.0)
    assert "List three uses of a hash map." in judge.prompts[0] and "Caches" in judge.prompts[0]
    billed = [e for e in sink.events if isinstance(e, AttemptEvent)]
    assert [(e.agent_type, e.task_id, e.input_tokens) for e in billed] == [
        (JUDGE_AGENT_TYPE, "t-judge", 100)]
    assert [e.overall for e in sink.events if isinstance(e, QualityEvent)] == [
        pytest.approx(quality.overall_score)]


@pytest.mark.parametrize("profile", [ModelProfile(latency_ms=1), ModelProfile(error_rate=1.0)],
                         ids=["unreadable-answer", "judge-down"])
async def test_the_heuristic_score_stands_when_the_judge_cannot_answer(make_simulator, profile):
    sim = make_simulator({"judge": profile})
    keys = APIKeyManager()
    keys.add_key("openai", "sk-judge-0123456789abcdef0123")
    registry = ModelRegistry.from_models([judge_model(sim.api_base("openai"))])
    async with APIClientManager(keys, registry=registry) as client:
        quality = await LLMJudgeScorer(client, "judge").score(ANSWER, TASK)
    expected = HeuristicScorer().score(ANSWER, TASK)
    assert (quality.overall_score, quality.completeness) == (expected.overall_score,
                                                             expected.completeness)
    assert sim.request_count("judge") == 1  # the judge was really asked, once
