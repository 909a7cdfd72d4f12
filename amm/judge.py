"""An LLM-as-judge quality scorer, through amm's own client.

Not the default (the heuristic scorer is: free, deterministic, microseconds). Give
it to the evaluator when answers need a judge that reads them::

    evaluator = ResponseEvaluator(scorer=LLMJudgeScorer(api_client, "gpt-4o-mini"))

The judge model rates completeness, relevance and coherence from 0 to 10; the
overall score keeps the seed's weights (40/35/25; ``docs/seed.md``). The judge's own call is a real,
billed request: it goes through the same client, so its tokens reach the cost
ledger, under the agent type ``quality-judge``. When the judge fails or answers in
a form it cannot read, the heuristic score stands, so evaluation never fails a call.
"""

from __future__ import annotations

import inspect
import logging
import re
from typing import Any

from amm.errors import APIModelError
from amm.models import ModelRequest, ModelResponse, QualityScore, utcnow
from amm.quality import HeuristicScorer, QualityScorer

__all__ = ["JUDGE_AGENT_TYPE", "LLMJudgeScorer", "parse_verdict"]

logger = logging.getLogger(__name__)

JUDGE_AGENT_TYPE = "quality-judge"

_PROMPT = """You grade an AI assistant's answer. Reply with exactly one line:
completeness=<0-10> relevance=<0-10> coherence=<0-10>

completeness: does it address every part of the task?
relevance: is it about the task?
coherence: is it well formed, complete, not repetitive?

TASK:
{task}

ANSWER:
{answer}"""

_SCORE = re.compile(r"\b(completeness|relevance|coherence)\s*[=:]\s*(10|\d(?:\.\d+)?)\b", re.I)
_WEIGHTS = {"completeness": 0.40, "relevance": 0.35, "coherence": 0.25}
_MAX_CHARS = 6000  # the task and answer shown to the judge, each


def parse_verdict(text: str) -> dict[str, float] | None:
    """``{"completeness": c, "relevance": r, "coherence": h}`` in [0, 1] from the judge's
    line, or None unless all three are there."""
    found = {name.lower(): min(float(value), 10.0) / 10.0 for name, value in _SCORE.findall(text)}
    return found if set(found) == set(_WEIGHTS) else None


class LLMJudgeScorer:
    """Scores an answer by asking ``judge_model_id`` through ``api_client``.

    ``score`` is a coroutine; :class:`~amm.evaluator.ResponseEvaluator` awaits it.
    """

    def __init__(self, api_client: Any, judge_model_id: str, *,
                 fallback: QualityScorer | None = None, max_tokens: int = 32) -> None:
        self._client = api_client
        self.judge_model_id = judge_model_id
        self._fallback = fallback if fallback is not None else HeuristicScorer()
        self._max_tokens = max_tokens

    async def score(self, response: ModelResponse, task: ModelRequest) -> QualityScore:
        """The judge's scores, or the fallback scorer's when the judge cannot give them."""
        prompt = _PROMPT.format(task=task.text()[:_MAX_CHARS],
                                answer=response.content[:_MAX_CHARS])
        request = ModelRequest(prompt=prompt, parameters={"temperature": 0.0},
                               task_id=task.task_id, agent_type=JUDGE_AGENT_TYPE,
                               max_tokens=self._max_tokens)
        try:
            verdict = parse_verdict((await self._client.send_request(
                self.judge_model_id, request)).content)
        except APIModelError as exc:
            logger.warning("quality judge %s failed, heuristic score used: %s",
                           self.judge_model_id, exc)
            verdict = None
        if verdict is None:
            fallback = self._fallback.score(response, task)
            return await fallback if inspect.isawaitable(fallback) else fallback
        overall = sum(verdict[k] * w for k, w in _WEIGHTS.items())
        return QualityScore(overall_score=round(overall, 6), timestamp=utcnow(), **verdict)

    def __repr__(self) -> str:
        return f"LLMJudgeScorer(judge_model_id={self.judge_model_id!r})"
