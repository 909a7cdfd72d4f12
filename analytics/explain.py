"""Why did this call go there? One request's selection, read from its ``amm.select`` span.

The span carries every candidate with its score (``amm.selection.candidates``, a
JSON list of ``{"model", "score", "probability", ...}``; older stores
``"model=0.8123"``), every excluded model with the reason (``amm.selection.excluded``,
``"model: reason"``), the chosen model and the reason for the choice.

    why = explain_request("data/amm.db", trace_id, around=request_time)
    why.candidates, why.excluded
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from analytics.source import SpanSource, as_source
from telemetry import conventions as cv

__all__ = ["SelectionExplanation", "explain_request"]

_ATTRS = (cv.AMM_SELECTION_CHOSEN, cv.AMM_SELECTION_REASON, cv.AMM_SELECTION_CANDIDATES,
          cv.AMM_SELECTION_EXCLUDED, cv.AMM_SELECTION_PROPENSITY, cv.AMM_EXPERIMENT_NAME,
          cv.AMM_EXPERIMENT_ARM)


@dataclass(frozen=True, slots=True)
class SelectionExplanation:
    """The selection of one request: candidates by score, exclusions with reasons."""

    trace_id: str
    chosen: str | None
    reason: str | None
    propensity: float | None
    experiment: str | None
    arm: str | None
    candidates: tuple[tuple[str, float], ...]
    excluded: tuple[tuple[str, str], ...]


def _list(raw: object) -> list[Any]:
    if raw is None:
        return []
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            return [raw]
        return list(value) if isinstance(value, list) else [str(value)]
    return [str(v) for v in raw] if isinstance(raw, list | tuple) else [str(raw)]


def _candidate(item: Any) -> tuple[str, float]:
    if isinstance(item, dict):  # {"model", "score", "probability", ...} (the decision log)
        score = item.get("score")
        return str(item.get("model")), float(score) if score is not None else float("nan")
    model, _, score = str(item).rpartition("=")  # "model=0.8123", as older stores hold
    try:
        return model, float(score)
    except ValueError:
        return str(item), float("nan")


def explain_request(store: SpanSource | str | Path, trace_id: str, *,
                    around: datetime | None = None) -> SelectionExplanation | None:
    """The ``amm.select`` span of the request ``trace_id`` (``around``: its start time, to
    read only the spans near it), or None when the store has none."""
    since = until = None
    if around is not None:
        since, until = around - timedelta(minutes=1), around + timedelta(minutes=15)
    spans = as_source(store).spans(_ATTRS, since, until)
    rows = spans[(spans["TraceId"] == trace_id) & (spans["SpanName"] == "amm.select")]
    if rows.empty:
        return None
    row = rows.iloc[0]

    def text(key: str) -> str | None:
        value = row[key]
        return None if value is None or value != value else str(value)

    propensity = row[cv.AMM_SELECTION_PROPENSITY]
    return SelectionExplanation(
        trace_id=trace_id, chosen=text(cv.AMM_SELECTION_CHOSEN),
        reason=text(cv.AMM_SELECTION_REASON),
        propensity=None if propensity is None or propensity != propensity else float(propensity),
        experiment=text(cv.AMM_EXPERIMENT_NAME), arm=text(cv.AMM_EXPERIMENT_ARM),
        candidates=tuple(_candidate(c) for c in _list(row[cv.AMM_SELECTION_CANDIDATES])),
        excluded=tuple((m.strip(), r.strip()) for m, _, r in
                       (str(e).partition(":") for e in _list(row[cv.AMM_SELECTION_EXCLUDED]))))
