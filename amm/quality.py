"""Heuristic response quality: completeness, relevance, coherence, each in [0, 1].

Deterministic, dependency-free and fast (well under 1 ms for a 500-token answer):
the evaluator runs on the request path. Text is reduced to *terms*: lower-cased
words without stop words or instruction verbs ("write", "explain"), lightly stemmed
(``numbers`` -> ``number``, ``calculating`` -> ``calculat``).

- **completeness**: how much of the task is addressed. The requirements are the
  prompt's numbered or bulleted items when it has them (an item counts as addressed
  when at least half of its terms occur in the answer), else the prompt's key terms
  (60 % of them present counts as complete: answers paraphrase). Code tasks (the
  prompt asks for code, a function, a script...) blend in a code score, half and
  half (a code task: "write/implement/fix ... function/code/script/class..." in
  one clause): 1.0 for a fenced block that parses (``ast.parse`` for Python; other
  languages are taken as given), 0.3 for a Python block with a syntax error, 0.6 for
  unfenced code that parses, 0 for no code. Short answers are scaled by
  ``min(1, 0.5 + distinct words / 20)``; ``finish_reason == "length"`` multiplies by 0.6.
- **relevance**: 0.5 x cosine + 0.5 x recall. The cosine is between sublinear-TF
  term vectors (``1 + ln tf``) of prompt and answer, stop words removed (the stop
  list stands in for the IDF of the most common words), saturating at 0.5: a long
  answer shares only part of its vocabulary with a short prompt. The recall is the
  fraction of the prompt's terms the answer uses, saturating at 0.6.
- **coherence**: 0.35 x sentence form + 0.40 x repetition + 0.25 x ending. Sentence
  form: share of prose sentences with 3-60 words (list items and headings count as
  well formed; fenced code is left out). Repetition: share of repeated word
  trigrams, 1.0 up to 10 %, falling linearly to 0 at 50 % (runaway loops). Ending:
  1.0 when the text ends with closing punctuation, a closed code fence or a list
  item, 0.3 when it stops mid-sentence, 0 when ``finish_reason == "length"``.
- **overall** = 0.40 completeness + 0.35 relevance + 0.25 coherence (the seed's weights,
  ``docs/seed.md``).

Agent calls are scored on what they are, not as prose (:mod:`amm.structured`):

- an answer with **tool calls** scores the share of calls that name a declared tool
  and whose arguments parse and validate against that tool's schema, on every
  metric (a reply made only of tool calls is not an empty answer);
- a **JSON answer** to a request that asked for JSON scores 0 on every metric when
  it is not JSON or breaks the schema; when valid, completeness and coherence are
  1.0 and relevance is that of its string values to the prompt (schema-valid: 1.0),
  so JSON is never penalised for not being sentences.
"""

from __future__ import annotations

import ast
import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import lru_cache
from typing import Protocol

from amm.models import ModelRequest, ModelResponse, QualityScore, utcnow

__all__ = [
    "COHERENCE_WEIGHT",
    "COMPLETENESS_WEIGHT",
    "RELEVANCE_WEIGHT",
    "HeuristicScorer",
    "QualityScorer",
    "terms",
]

COMPLETENESS_WEIGHT = 0.40
RELEVANCE_WEIGHT = 0.35
COHERENCE_WEIGHT = 0.25

_WORD_RE = re.compile(r"[a-z][a-z0-9_]*")
_FENCE_RE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_ITEM_RE = re.compile(r"^[ \t]*(?:\d+[.)]|[-*\u2022])[ \t]+(.+)$", re.M)
_SENTENCE_RE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)", re.M)
_STRUCTURAL_RE = re.compile(r"^\s*(?:[-*\u2022#>|]|\d+[.)])")
# A code task asks to produce code: an action verb, then a code noun in the same clause.
_CODE_TASK_RE = re.compile(
    r"\bimplement\w*\b|\b(?:write|create|generate|build|fix|refactor|add|define|modify|"
    r"complete|code)\b[^.?!\n]{0,60}?\b(?:code|functions?|scripts?|programs?|class(?:es)?|"
    r"methods?|snippets?|quer(?:y|ies)|regex|modules?|tests?)\b", re.I)
_CODE_LINE_RE = re.compile(r"^\s*(?:def |class |import |from \w+ import |return\b)", re.M)
_PYTHON_LANGS = frozenset({"", "python", "py", "python3"})
_GOOD_ENDINGS = (".", "!", "?", ")", '"', "'", "`", "*", ":", ";", "]", "}")

_STOP_WORDS_TEXT = """
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers him his i if in into is it its itself just
me more most my no nor not now of off on once only or other our ours out over own same she
should so some such than that the their theirs them then there these they this those
through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself etc e g ie eg via per let lets may might must shall
one two use using used get got like well way ways thing things
write explain describe list give show provide create make tell please help need want
"""
# Common English words and instruction verbs: they say nothing about the topic.
_STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """A light suffix stripper: enough to match ``numbers``/``number``,
    ``calculate``/``calculating``; not linguistics."""
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    return word


def terms(text: str) -> list[str]:
    """The content terms of ``text``, in order (stop words dropped, stemmed)."""
    return [_stem(w) for w in _WORD_RE.findall(text.lower()) if w not in _STOP_WORDS and len(w) > 1]


def _vector(ts: list[str]) -> dict[str, float]:
    return {t: 1.0 + math.log(n) for t, n in Counter(ts).items()}


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    if not a or not b:
        return 0.0
    if len(a) > len(b):
        a, b = b, a
    dot = sum(w * b[t] for t, w in a.items() if t in b)
    norm = math.sqrt(sum(w * w for w in a.values())) * math.sqrt(sum(w * w for w in b.values()))
    return dot / norm if norm else 0.0


def _clamp(x: float) -> float:
    return 0.0 if x < 0.0 else (1.0 if x > 1.0 else x)


def _cut_by_length(response: ModelResponse) -> bool:
    return response.metadata.get("finish_reason") == "length"


def _code_score(content: str) -> float:
    blocks = _FENCE_RE.findall(content)
    if blocks:
        best = 0.0
        for lang, body in blocks:
            if lang.lower() not in _PYTHON_LANGS:
                best = max(best, 1.0 if body.strip() else 0.0)
                continue
            try:
                ast.parse(body)
            except (SyntaxError, ValueError):
                best = max(best, 0.3)
            else:
                best = max(best, 1.0 if body.strip() else 0.0)
        return best
    if _CODE_LINE_RE.search(content):
        try:
            ast.parse(content)
        except (SyntaxError, ValueError):
            return 0.3
        return 0.6
    return 0.0


class QualityScorer(Protocol):
    """A quality policy: one response to one task -> scores in [0, 1]. ``score`` may be
    a coroutine (a scorer that asks a model, :class:`amm.judge.LLMJudgeScorer`)."""

    def score(self, response: ModelResponse, task: ModelRequest
              ) -> QualityScore | Awaitable[QualityScore]:
        """Score ``response`` as an answer to ``task``."""
        ...


class HeuristicScorer:
    """The built-in scorer (see the module docstring for every metric).

    >>> HeuristicScorer().score(response, request).overall_score
    """

    __slots__ = ("_clock",)

    def __init__(self, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._clock = clock

    def completeness(self, response: ModelResponse, task: ModelRequest) -> float:
        """How much of the task's requirements the response addresses."""
        content = response.content
        answer_terms = set(terms(content))
        if not answer_terms and not content.strip():
            return 0.0
        prompt = task.text()
        items = _ITEM_RE.findall(prompt)
        if items:
            addressed = 0
            for item in items:
                item_terms = set(terms(item))
                if not item_terms or len(item_terms & answer_terms) * 2 >= len(item_terms):
                    addressed += 1
            coverage = addressed / len(items)
        else:
            key = set(terms(prompt))
            coverage = _clamp(len(key & answer_terms) / len(key) / 0.6) if key else 1.0
        if _CODE_TASK_RE.search(prompt):
            coverage = 0.5 * coverage + 0.5 * _code_score(content)
        # Distinct words, so that a runaway loop of three words is not a long answer.
        words = len(set(_WORD_RE.findall(content.lower())))
        score = coverage * min(1.0, 0.5 + words / 20)
        if _cut_by_length(response):
            score *= 0.6
        return _clamp(score)

    def relevance(self, response: ModelResponse, task: ModelRequest) -> float:
        """How on-topic the response is: term cosine and recall against the prompt."""
        prompt_terms = terms(task.text())
        answer_terms = terms(response.content)
        if not prompt_terms or not answer_terms:
            return 0.0
        cosine = _cosine(_vector(prompt_terms), _vector(answer_terms))
        key = set(prompt_terms)
        recall = len(key.intersection(answer_terms)) / len(key)
        return _clamp(0.5 * _clamp(cosine / 0.5) + 0.5 * _clamp(recall / 0.6))

    def coherence(self, response: ModelResponse) -> float:
        """Well-formed sentences, no runaway repetition, not cut off."""
        content = response.content.strip()
        if not content:
            return 0.0
        prose = _FENCE_RE.sub("\n", content)
        total = good = 0
        for line in prose.splitlines():
            if not line.strip():
                continue
            if _STRUCTURAL_RE.match(line):
                total += 1
                good += 1
                continue
            for sentence in _SENTENCE_RE.findall(line):
                n = len(sentence.split())
                if n == 0:
                    continue
                total += 1
                good += 3 <= n <= 60
        form = good / total if total else 1.0

        words = content.lower().split()
        grams = len(words) - 2
        if grams >= 8:
            repeated = 1.0 - len(set(zip(words, words[1:], words[2:], strict=False))) / grams
            repetition = _clamp(1.0 - (repeated - 0.1) / 0.4)
        else:
            repetition = 1.0

        if _cut_by_length(response):
            ending = 0.0
        else:
            last = content.splitlines()[-1]
            ended = content.endswith(_GOOD_ENDINGS) or bool(_STRUCTURAL_RE.match(last))
            ending = 1.0 if ended else 0.3
        return _clamp(0.35 * form + 0.40 * repetition + 0.25 * ending)

    def score(self, response: ModelResponse, task: ModelRequest) -> QualityScore:
        """All three metrics and their weighted overall score."""
        if response.tool_calls or task.wants_json:
            return self._score_structured(response, task)
        completeness = self.completeness(response, task)
        relevance = self.relevance(response, task)
        coherence = self.coherence(response)
        overall = (COMPLETENESS_WEIGHT * completeness + RELEVANCE_WEIGHT * relevance
                   + COHERENCE_WEIGHT * coherence)
        return QualityScore(overall_score=_clamp(overall), completeness=completeness,
                            relevance=relevance, coherence=coherence, timestamp=self._clock())

    def _score_structured(self, response: ModelResponse, task: ModelRequest) -> QualityScore:
        from amm.structured import json_problems, tool_call_problems

        if response.tool_calls:
            bad = {p.split(" ", 1)[0] for p in tool_call_problems(response.tool_calls, task.tools)}
            share = 1.0 - len(bad) / len(response.tool_calls)
            return QualityScore(overall_score=share, completeness=share, relevance=share,
                                coherence=share, timestamp=self._clock())
        if json_problems(response.content, task.response_schema):
            return QualityScore(overall_score=0.0, completeness=0.0, relevance=0.0,
                                coherence=0.0, timestamp=self._clock())
        if task.response_schema is not None:
            relevance = 1.0
        else:
            values = " ".join(_json_strings(response.content))
            prompt_terms, answer_terms = terms(task.text()), terms(values)
            relevance = (_clamp(len(set(prompt_terms) & set(answer_terms)) / len(set(prompt_terms))
                                / 0.6) if prompt_terms and answer_terms else 0.5)
        overall = COMPLETENESS_WEIGHT + RELEVANCE_WEIGHT * relevance + COHERENCE_WEIGHT
        return QualityScore(overall_score=_clamp(overall), completeness=1.0, relevance=relevance,
                            coherence=1.0, timestamp=self._clock())

    def __repr__(self) -> str:
        return "HeuristicScorer()"


def _json_strings(content: str) -> list[str]:
    """Every string (keys and values) of a JSON document, depth first."""
    import json

    out: list[str] = []
    stack: list[object] = [json.loads(content.strip().strip("`").removeprefix("json"))]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            out.extend(str(k) for k in value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return out
