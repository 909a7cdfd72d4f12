"""Stored spans as request records: the ONE place that maps span attributes to columns.

A request is one ``invoke_agent {agent_type}`` span with its descendants:
``amm.select`` (choice, experiment, arm), one ``chat {model}`` span per provider
attempt (tokens, cost, errors, ``gen_ai.evaluation.result`` events) and
``amm.evaluate``. Attribute names come from :mod:`telemetry.conventions`.

Speed: one query per load; attributes are projected by the source (SQLite's JSON
functions run in C), only the Events of spans that have any are parsed in Python,
and requests are assembled with vectorised group-bys. On this 2-core machine a
store of 100k spans (about 25k requests) loads in well under two seconds
(``tests/test_analytics_load.py`` prints the measured time).

    reqs = load_requests("data/amm.db", since=datetime(2026, 11, 1, tzinfo=UTC))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analytics.source import SpanSource, SQLiteSource, StoreNotFoundError, as_source
from telemetry import conventions as cv

__all__ = [
    "ARM_HONOURED",
    "ATTEMPT_COLUMNS",
    "FAILOVER_COLUMNS",
    "REQUEST_COLUMNS",
    "SQLiteSource",
    "SpanSource",
    "StoreData",
    "StoreNotFoundError",
    "load_attempts",
    "load_failovers",
    "load_ledger",
    "load_requests",
    "load_store",
]

ARM_HONOURED = getattr(cv, "AMM_SELECTION_ARM_HONOURED", "amm.selection.arm_honoured")
"""``amm.select`` attribute: the experiment's assigned arm was actually used."""

# Span attributes projected from the store (everything the analyses read).
_ATTRS = (
    cv.GEN_AI_OPERATION_NAME, cv.AMM_AGENT_TYPE, cv.GEN_AI_AGENT_NAME, cv.AMM_TASK_ID,
    cv.AMM_CACHE_HIT,
    cv.ERROR_TYPE, cv.AMM_SELECTION_CHOSEN, cv.AMM_SELECTION_REASON,
    cv.AMM_SELECTION_PROPENSITY, cv.AMM_EXPERIMENT_NAME, cv.AMM_EXPERIMENT_ARM, ARM_HONOURED,
    cv.GEN_AI_REQUEST_MODEL, cv.GEN_AI_RESPONSE_MODEL, cv.GEN_AI_PROVIDER_NAME,
    cv.GEN_AI_USAGE_INPUT_TOKENS, cv.GEN_AI_USAGE_OUTPUT_TOKENS, cv.AMM_COST_USD,
    cv.AMM_ATTEMPT, cv.GEN_AI_RESPONSE_FINISH_REASONS,
)
_EVAL_COLUMNS = {"overall": "quality", "completeness": "completeness",
                 "relevance": "relevance", "coherence": "coherence"}
# A request's children may start after `until` although the request started before it.
_CHILD_SLACK = timedelta(minutes=15)

REQUEST_COLUMNS = {
    "time": "datetime64[ns, UTC]", "trace_id": "string", "span_id": "string",
    "agent_type": "string", "task_id": "string", "model": "string", "provider": "string",
    "experiment": "string", "arm": "string", "arm_honoured": "boolean",
    "propensity": "float64", "selection_reason": "string", "outcome": "string",
    "error_type": "string", "latency_ms": "float64", "input_tokens": "int64",
    "output_tokens": "int64", "cost_usd": "float64", "quality": "float64",
    "completeness": "float64", "relevance": "float64", "coherence": "float64",
    "cache_hit": "bool", "attempts": "int64", "failover_path": "string",
}
"""Columns of :func:`load_requests` and their dtypes (``outcome``: success/error/cache_hit)."""
ATTEMPT_COLUMNS = {
    "time": "datetime64[ns, UTC]", "trace_id": "string", "span_id": "string",
    "agent_type": "string", "task_id": "string", "model": "string",
    "response_model": "string", "provider": "string", "attempt": "int64", "success": "bool",
    "error_type": "string", "latency_ms": "float64", "input_tokens": "int64",
    "output_tokens": "int64", "cost_usd": "float64", "finish_reasons": "string",
    "quality": "float64", "completeness": "float64", "relevance": "float64",
    "coherence": "float64",
}
FAILOVER_COLUMNS = {
    "time": "datetime64[ns, UTC]", "trace_id": "string", "agent_type": "string",
    "task_id": "string", "from_model": "string", "to_model": "string", "reason": "string",
}
LEDGER_DTYPES = {
    "id": "string", "time": "datetime64[ns, UTC]", "day": "string", "model_id": "string",
    "agent_type": "string", "task_id": "string", "input_tokens": "int64",
    "output_tokens": "int64", "cost_usd": "float64", "source": "string",
}


@dataclass(frozen=True, slots=True)
class StoreData:
    """Everything the analyses read, loaded once (the dashboard's unit of refresh)."""

    requests: pd.DataFrame
    attempts: pd.DataFrame
    failovers: pd.DataFrame
    ledger: pd.DataFrame
    daily_budget: float | None


def _empty(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in columns.items()})


def _typed(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    out = frame.reindex(columns=list(columns))
    for col, dtype in columns.items():
        if dtype in ("int64", "bool"):
            out[col] = pd.to_numeric(out[col], errors="coerce").fillna(0).astype(dtype)
        elif dtype == "float64":
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
        elif dtype == "boolean":
            out[col] = out[col].map(_truth, na_action="ignore").astype("boolean")
        elif dtype == "string":
            out[col] = out[col].astype("string")
    return out.reset_index(drop=True)


def _truth(value: Any) -> bool:
    # SQLite's json_extract gives 1/0; a ClickHouse map gives 'true'/'false'.
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _spans(source: SpanSource, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """Spans with parsed time and ``owner``: the SpanId of their invoke_agent span."""
    raw = source.spans(_ATTRS, since, None if until is None else until + _CHILD_SLACK)
    if raw.empty:
        return raw.assign(time=pd.Series(dtype="datetime64[ns, UTC]"), owner=pd.Series(dtype=str),
                          is_root=pd.Series(dtype=bool))
    df = raw.copy()
    df["time"] = pd.to_datetime(df["Timestamp"], utc=True, format="ISO8601")
    op = df[cv.GEN_AI_OPERATION_NAME].astype("string")
    name = df["SpanName"].astype(str)
    df["is_root"] = (op == cv.OP_INVOKE_AGENT).fillna(False).to_numpy(bool) | name.str.startswith(
        cv.OP_INVOKE_AGENT + " ").to_numpy(bool)
    key = df["TraceId"] + ":" + df["SpanId"]
    parent = df["TraceId"] + ":" + df["ParentSpanId"].fillna("")
    root_keys = set(key[df["is_root"]])
    parent_of = pd.Series(parent.to_numpy(), index=key.to_numpy())
    # Walk up to the nearest invoke_agent ancestor (children are direct in amm's
    # recorder; a few levels more cover spans a user nests under them).
    owner = pd.Series(np.where(df["is_root"], key, None), index=df.index, dtype=object)
    cursor = parent.copy()
    for _ in range(6):
        todo = owner.isna() & cursor.notna()
        if not todo.any():
            break
        hit = todo & cursor.isin(root_keys)
        owner[hit] = cursor[hit]
        cursor = cursor.map(parent_of).where(todo & ~hit)
    df["owner"] = owner
    df = df[df["owner"].notna()]
    roots = df[df["is_root"]]
    if since is not None:
        roots = roots[roots["time"] >= since]
    if until is not None:
        roots = roots[roots["time"] < until]
    return df[df["owner"].isin(set(roots["TraceId"] + ":" + roots["SpanId"]))]


def _events(df: pd.DataFrame) -> pd.DataFrame:
    """One row per span event: owner, SpanId, time, name, attributes (dict)."""
    has = df[df["Events"].notna() & (df["Events"] != "[]") & (df["Events"] != "")]
    rows = [
        (owner, span, ev.get("Timestamp"), ev.get("Name"), ev.get("Attributes") or {})
        for owner, span, text in zip(has["owner"], has["SpanId"], has["Events"], strict=True)
        for ev in json.loads(text)
    ]
    return pd.DataFrame(rows, columns=["owner", "SpanId", "Timestamp", "name", "attrs"],
                        dtype=object)


def _scores(events: pd.DataFrame, by: str) -> pd.DataFrame:
    """Evaluation scores pivoted to quality/completeness/relevance/coherence per ``by``."""
    ev = events[events["name"] == cv.GEN_AI_EVALUATION_RESULT]
    if ev.empty:
        return pd.DataFrame(columns=list(_EVAL_COLUMNS.values()))
    table = pd.DataFrame({
        by: ev[by].to_numpy(),
        "metric": [a.get(cv.GEN_AI_EVALUATION_NAME) for a in ev["attrs"]],
        "value": pd.to_numeric([a.get(cv.GEN_AI_EVALUATION_SCORE_VALUE) for a in ev["attrs"]],
                               errors="coerce"),
    })
    # The last score of each name wins (a re-evaluation replaces the first).
    wide = table.pivot_table(index=by, columns="metric", values="value", aggfunc="last")
    return wide.rename(columns=_EVAL_COLUMNS).reindex(columns=list(_EVAL_COLUMNS.values()))


def _failover_rows(df: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    ev = events[events["name"] == cv.AMM_FAILOVER]
    roots = df[df["is_root"]].set_index("owner")
    out = pd.DataFrame({
        "time": pd.to_datetime(ev["Timestamp"], utc=True, format="ISO8601").to_numpy(),
        "owner": ev["owner"].to_numpy(),
        "from_model": [a.get(cv.AMM_FAILOVER_FROM) for a in ev["attrs"]],
        "to_model": [a.get(cv.AMM_FAILOVER_TO) for a in ev["attrs"]],
        "reason": [a.get(cv.AMM_FAILOVER_REASON) for a in ev["attrs"]],
    })
    out["trace_id"] = out["owner"].map(roots["TraceId"])
    out["agent_type"] = out["owner"].map(_agent_types(roots))
    out["task_id"] = out["owner"].map(roots[cv.AMM_TASK_ID])
    return out.sort_values("time", kind="stable")


def _agent_types(roots: pd.DataFrame) -> pd.Series:
    # amm.agent_type is the routing key; gen_ai.agent.name may be the function's name.
    from_name = roots["SpanName"].astype(str).str.removeprefix(cv.OP_INVOKE_AGENT + " ")
    return (roots[cv.AMM_AGENT_TYPE].astype("string")
            .fillna(roots[cv.GEN_AI_AGENT_NAME].astype("string"))
            .fillna(from_name.astype("string")))


def _attempt_rows(df: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    op = df[cv.GEN_AI_OPERATION_NAME].astype("string")
    is_chat = (op == cv.OP_CHAT).fillna(False) | df["SpanName"].astype(str).str.startswith(
        cv.OP_CHAT + " ")
    chats = df[is_chat.to_numpy(bool) & ~df["is_root"].to_numpy(bool)]
    roots = df[df["is_root"]].set_index("owner")
    scores = _scores(events, "SpanId")
    error = chats[cv.ERROR_TYPE].astype("string")
    out = pd.DataFrame({
        "time": chats["time"], "trace_id": chats["TraceId"], "span_id": chats["SpanId"],
        "owner": chats["owner"],
        "agent_type": chats["owner"].map(_agent_types(roots)),
        "task_id": chats["owner"].map(roots[cv.AMM_TASK_ID]),
        "model": chats[cv.GEN_AI_REQUEST_MODEL].astype("string").fillna(
            chats["SpanName"].astype(str).str.removeprefix(cv.OP_CHAT + " ").astype("string")),
        "response_model": chats[cv.GEN_AI_RESPONSE_MODEL],
        "provider": chats[cv.GEN_AI_PROVIDER_NAME],
        "attempt": chats[cv.AMM_ATTEMPT],
        "success": ((chats["StatusCode"] != "Error") & error.isna()).to_numpy(bool),
        "error_type": error,
        "latency_ms": chats["Duration"].astype("float64") / 1e6,
        "input_tokens": chats[cv.GEN_AI_USAGE_INPUT_TOKENS],
        "output_tokens": chats[cv.GEN_AI_USAGE_OUTPUT_TOKENS],
        "cost_usd": pd.to_numeric(chats[cv.AMM_COST_USD], errors="coerce").fillna(0.0),
        "finish_reasons": chats[cv.GEN_AI_RESPONSE_FINISH_REASONS],
    })
    out = out.join(scores, on="span_id")
    return out.sort_values(["time"], kind="stable")


def _request_rows(df: pd.DataFrame, attempts: pd.DataFrame, events: pd.DataFrame,
                  failovers: pd.DataFrame) -> pd.DataFrame:
    roots = df[df["is_root"]].set_index("owner")
    # A failover re-selects; the first selection holds the experiment's assignment.
    select = df[df["SpanName"] == cv.SPAN_SELECT].sort_values("time", kind="stable")
    select = select.drop_duplicates("owner", keep="first").set_index("owner")
    by_req = attempts.groupby("owner", sort=False)
    last = attempts.drop_duplicates("owner", keep="last").set_index("owner")
    cache_hit = roots[cv.AMM_CACHE_HIT].map(_truth, na_action="ignore").fillna(False).astype(bool)
    failed = (roots["StatusCode"] == "Error") | roots[cv.ERROR_TYPE].notna()
    model = (last["response_model"].astype("string").fillna(last["model"].astype("string"))
             .reindex(roots.index)
             .fillna(roots[cv.GEN_AI_RESPONSE_MODEL].astype("string"))
             .fillna(roots[cv.GEN_AI_REQUEST_MODEL].astype("string"))
             .fillna(select[cv.AMM_SELECTION_CHOSEN].astype("string").reindex(roots.index)))
    out = pd.DataFrame({
        "time": roots["time"], "trace_id": roots["TraceId"], "span_id": roots["SpanId"],
        "agent_type": _agent_types(roots), "task_id": roots[cv.AMM_TASK_ID],
        "model": model,
        "provider": last["provider"].reindex(roots.index).fillna(
            roots[cv.GEN_AI_PROVIDER_NAME]),
        "experiment": select[cv.AMM_EXPERIMENT_NAME].reindex(roots.index),
        "arm": select[cv.AMM_EXPERIMENT_ARM].reindex(roots.index),
        "arm_honoured": _honoured(select, model).reindex(roots.index),
        "propensity": select[cv.AMM_SELECTION_PROPENSITY].reindex(roots.index),
        "selection_reason": select[cv.AMM_SELECTION_REASON].reindex(roots.index),
        "outcome": np.where(cache_hit, "cache_hit", np.where(failed, "error", "success")),
        "error_type": roots[cv.ERROR_TYPE].astype("string").fillna(
            last["error_type"].reindex(roots.index).where(failed)),
        "latency_ms": roots["Duration"].astype("float64") / 1e6,
        "input_tokens": by_req["input_tokens"].sum(min_count=1).reindex(roots.index),
        "output_tokens": by_req["output_tokens"].sum(min_count=1).reindex(roots.index),
        "cost_usd": by_req["cost_usd"].sum().reindex(roots.index).fillna(0.0),
        "cache_hit": cache_hit,
        "attempts": by_req.size().reindex(roots.index).fillna(0),
    })
    scores = _scores(events, "owner")
    out = out.join(scores)
    out["failover_path"] = _paths(failovers, attempts).reindex(out.index)
    return out.sort_values("time", kind="stable")


def _honoured(select: pd.DataFrame, model: pd.Series) -> pd.Series:
    """The recorded ``amm.selection.arm_honoured``; where a recorder does not write it,
    the arm was honoured when it was chosen and also answered (no failover away)."""
    arm = select[cv.AMM_EXPERIMENT_ARM].astype("string")
    derived = ((arm == select[cv.AMM_SELECTION_CHOSEN].astype("string"))
               & (arm == model.reindex(select.index))).astype("boolean").where(arm.notna())
    recorded = select[ARM_HONOURED].map(_truth, na_action="ignore").astype("boolean")
    return recorded.fillna(derived)


def _paths(failovers: pd.DataFrame, attempts: pd.DataFrame) -> pd.Series:
    """'a>b>c' per request: failover events if recorded, else the attempted models."""
    paths: dict[str, str] = {}
    # Only requests with several attempts can have a path: a small share, so the
    # Python-level join below runs on few groups.
    multi = attempts[attempts["owner"].duplicated(keep=False)]
    for owner, group in multi.groupby("owner", sort=False)["model"]:
        models = [m for i, m in enumerate(group) if i == 0 or m != group.iloc[i - 1]]
        if len(models) > 1:
            paths[owner] = ">".join(models)
    for owner, group in failovers.groupby("owner", sort=False):
        hops = [group["from_model"].iloc[0], *group["to_model"].fillna("none")]
        paths[owner] = ">".join(str(h) for h in hops)
    return pd.Series(paths, dtype="string")


def _load(source_or_path: SpanSource | str | Path, since: datetime | None,
          until: datetime | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    df = _spans(as_source(source_or_path), since, until)
    if df.empty:
        return _empty(REQUEST_COLUMNS), _empty(ATTEMPT_COLUMNS), _empty(FAILOVER_COLUMNS)
    events = _events(df)
    attempts = _attempt_rows(df, events)
    failovers = _failover_rows(df, events)
    requests = _request_rows(df, attempts, events, failovers)
    return (_typed(requests, REQUEST_COLUMNS), _typed(attempts, ATTEMPT_COLUMNS),
            _typed(failovers, FAILOVER_COLUMNS))


def load_requests(source_or_path: SpanSource | str | Path, since: datetime | None = None,
                  until: datetime | None = None) -> pd.DataFrame:
    """One row per request (per ``invoke_agent`` span) started in ``[since, until)``;
    columns and dtypes as :data:`REQUEST_COLUMNS`, ordered by time."""
    return _load(source_or_path, since, until)[0]


def load_attempts(source_or_path: SpanSource | str | Path, since: datetime | None = None,
                  until: datetime | None = None) -> pd.DataFrame:
    """One row per provider attempt (``chat`` span); columns as :data:`ATTEMPT_COLUMNS`."""
    return _load(source_or_path, since, until)[1]


def load_failovers(source_or_path: SpanSource | str | Path, since: datetime | None = None,
                   until: datetime | None = None) -> pd.DataFrame:
    """One row per ``amm.failover`` event; columns as :data:`FAILOVER_COLUMNS`."""
    return _load(source_or_path, since, until)[2]


def load_ledger(source_or_path: SpanSource | str | Path, since: datetime | None = None,
                until: datetime | None = None) -> pd.DataFrame:
    """The cost ledger (exact spend; spans may be sampled), ``time`` tz-aware UTC."""
    raw = as_source(source_or_path).ledger()
    if raw.empty:
        return _empty(LEDGER_DTYPES)
    ts = raw["ts"]
    numeric = pd.to_numeric(ts, errors="coerce")
    # The ledger's ts may be epoch seconds or ISO text; both are accepted.
    time = (pd.to_datetime(numeric, unit="s", utc=True) if numeric.notna().all()
            else pd.to_datetime(ts, utc=True, format="ISO8601"))
    out = raw.assign(time=time)
    out["day"] = out["day"].fillna(out["time"].dt.strftime("%Y-%m-%d"))
    if since is not None:
        out = out[out["time"] >= since]
    if until is not None:
        out = out[out["time"] < until]
    return _typed(out.sort_values("time", kind="stable"), LEDGER_DTYPES)


def load_store(source_or_path: SpanSource | str | Path, since: datetime | None = None,
               until: datetime | None = None) -> StoreData:
    """Requests, attempts, failovers, ledger and budget with one read of the spans."""
    source = as_source(source_or_path)
    requests, attempts, failovers = _load(source, since, until)
    return StoreData(requests, attempts, failovers, load_ledger(source, since, until),
                     source.daily_budget())
