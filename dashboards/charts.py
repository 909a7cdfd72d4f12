"""Altair charts of the dashboard: pure functions from analytics frames to charts.

Kept apart from the Streamlit script so they are importable and testable without a
running app (and reusable from a notebook).
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from analytics.degradation import Degradation
from analytics.ope import PolicyEstimate

__all__ = [
    "arm_ci_chart",
    "cost_by_chart",
    "daily_cost_chart",
    "failover_chart",
    "metric_over_time",
    "outcomes_over_time",
    "policy_value_chart",
]

_METRIC_TITLES = {
    "error_rate": "Error rate", "p95_latency_ms": "p95 latency (ms)", "quality": "Mean quality",
}
# Which Degradation.metric marks which chart (the detector watches these same three).
_DEGRADATION_METRIC = {"error_rate": "error_rate", "p95_latency_ms": "p95_latency_ms",
                       "quality": "quality"}


def _time_axis(times: pd.Series) -> alt.X:
    """A time axis whose labels suit the span: seconds for a short run, dates for weeks."""
    span = (times.max() - times.min()).total_seconds() if len(times) else 0.0
    fmt = "%H:%M:%S" if span < 600 else "%H:%M" if span < 2 * 86400 else "%b %d"
    return alt.X("time:T", title=None, axis=alt.Axis(format=fmt, labelOverlap=True))


def outcomes_over_time(requests: pd.DataFrame, freq: str = "1h") -> alt.Chart:
    """Stacked area: requests per time bin by outcome (success, cache hit, error)."""
    counts = (requests.groupby([pd.Grouper(key="time", freq=freq), "outcome"], observed=True)
              .size().rename("requests").reset_index())
    return alt.Chart(counts).mark_area(opacity=0.85).encode(
        x=_time_axis(counts["time"]),
        y=alt.Y("requests:Q", stack=True, title=f"requests per {freq}"),
        color=alt.Color("outcome:N", scale=alt.Scale(
            domain=["success", "cache_hit", "error"], range=["#4c78a8", "#72b7b2", "#e45756"])),
        tooltip=["time:T", "outcome:N", "requests:Q"],
    ).properties(height=260)


def metric_over_time(series: pd.DataFrame, metric: str,
                     changes: Sequence[Degradation] = ()) -> alt.LayerChart:
    """One line per model for ``metric`` (a column of ``model_timeseries``), with a
    dashed rule at each detected change point of that metric."""
    line = alt.Chart(series).mark_line(point=False, interpolate="monotone").encode(
        x=_time_axis(series["time"]),
        y=alt.Y(f"{metric}:Q", title=_METRIC_TITLES.get(metric, metric)),
        color=alt.Color("model:N", legend=alt.Legend(orient="bottom")),
        tooltip=["time:T", "model:N", alt.Tooltip(f"{metric}:Q", format=".3f")],
    )
    wanted = _DEGRADATION_METRIC.get(metric, metric)
    marks = pd.DataFrame([
        {"time": d.change_time, "model": d.model, "label": f"{d.model} degraded"}
        for d in changes if d.metric == wanted
    ], columns=["time", "model", "label"])
    rules = alt.Chart(marks).mark_rule(strokeDash=[6, 4], size=2).encode(
        x="time:T", color="model:N", tooltip=["label:N", "time:T"])
    text = alt.Chart(marks).mark_text(align="left", dx=4, dy=-6, fontWeight="bold").encode(
        x="time:T", y=alt.value(8), text="label:N", color="model:N")
    return alt.layer(line, rules, text).properties(
        height=240, title=_METRIC_TITLES.get(metric, metric))


def arm_ci_chart(arms: pd.DataFrame, metric: str, title: str) -> alt.LayerChart:
    """Point and 95% CI bar per arm for ``metric`` (a column of ``arms_table``)."""
    base = alt.Chart(arms).encode(y=alt.Y("arm:N", title=None, axis=alt.Axis(labelLimit=200)))
    bars = base.mark_rule(size=3).encode(
        x=alt.X(f"{metric}_low:Q", title=title, scale=alt.Scale(zero=False)),
        x2=f"{metric}_high:Q", color=alt.Color("arm:N", legend=None))
    points = base.mark_point(filled=True, size=120).encode(
        x=f"{metric}:Q", color=alt.Color("arm:N", legend=None),
        tooltip=["arm:N", "n:Q", alt.Tooltip(f"{metric}:Q", format=".4f"),
                 alt.Tooltip(f"{metric}_low:Q", format=".4f"),
                 alt.Tooltip(f"{metric}_high:Q", format=".4f")])
    # A fixed band per arm: a height in pixels gets squeezed by a stretched container.
    return alt.layer(bars, points).properties(height=alt.Step(44), title=title)


def failover_chart(failovers: pd.DataFrame) -> alt.Chart:
    """Horizontal bars: failovers per ``from > to`` route, coloured by reason."""
    routes = failovers.assign(
        route=failovers["from_model"].astype(str) + " → " + failovers["to_model"].fillna(
            "none").astype(str))
    counts = routes.groupby(["route", "reason"], observed=True).size().rename(
        "failovers").reset_index()
    return alt.Chart(counts).mark_bar().encode(
        y=alt.Y("route:N", sort="-x", title=None, axis=alt.Axis(labelLimit=320)),
        x=alt.X("failovers:Q", stack=True),
        color=alt.Color("reason:N", legend=alt.Legend(orient="bottom")),
        tooltip=["route:N", "reason:N", "failovers:Q"],
    ).properties(height=alt.Step(36))


def daily_cost_chart(daily: pd.DataFrame) -> alt.LayerChart:
    """Bars of spend per day (red when over budget) and the budget as a rule."""
    bars = alt.Chart(daily).mark_bar().encode(
        x=alt.X("day:O", title=None),
        y=alt.Y("cost_usd:Q", title="USD"),
        color=alt.condition("datum.over_budget", alt.value("#e45756"), alt.value("#4c78a8")),
        tooltip=["day:O", alt.Tooltip("cost_usd:Q", format="$.2f"),
                 alt.Tooltip("utilization:Q", format=".0%")])
    rule = alt.Chart(daily).mark_rule(color="#333", strokeDash=[4, 4], size=2).encode(
        y="mean(budget_usd):Q")
    return alt.layer(bars, rule).properties(height=260, title="Daily spend vs budget")


def cost_by_chart(by_day: pd.DataFrame, by: str) -> alt.Chart:
    """Stacked bars of spend per day split by ``by`` (model_id or agent_type)."""
    return alt.Chart(by_day).mark_bar().encode(
        x=alt.X("day:O", title=None), y=alt.Y("cost_usd:Q", title="USD", stack=True),
        color=alt.Color(f"{by}:N", legend=alt.Legend(orient="bottom")),
        tooltip=["day:O", f"{by}:N", alt.Tooltip("cost_usd:Q", format="$.2f")],
    ).properties(height=260, title=f"Spend by {by.replace('_', ' ')}")


def policy_value_chart(estimates: Sequence[PolicyEstimate]) -> alt.LayerChart:
    """Each target policy's estimated reward with its interval (grey when the log does
    not identify it), and the logged policy's actual reward as a dashed rule."""
    rows = pd.DataFrame([{"policy": e.policy, "reward": e.value, "low": e.ci_low,
                          "high": e.ci_high, "identified": e.support_ok} for e in estimates])
    logged = pd.DataFrame({"reward": [estimates[0].logged_value if estimates else float("nan")],
                           "label": ["logged (actual)"]})
    base = alt.Chart(rows).encode(y=alt.Y("policy:N", title=None,
                                          axis=alt.Axis(labelLimit=260)))
    color = alt.condition("datum.identified", alt.value("#4c78a8"), alt.value("#aaaaaa"))
    bars = base.mark_rule(size=3).encode(
        x=alt.X("low:Q", title="reward (quality - λ x cost)", scale=alt.Scale(zero=False)),
        x2="high:Q", color=color)
    points = base.mark_point(filled=True, size=120).encode(
        x="reward:Q", color=color,
        tooltip=["policy:N", alt.Tooltip("reward:Q", format=".4f"),
                 alt.Tooltip("low:Q", format=".4f"), alt.Tooltip("high:Q", format=".4f")])
    rule = alt.Chart(logged).mark_rule(strokeDash=[6, 4], size=2, color="#e45756").encode(
        x="reward:Q", tooltip=["label:N", alt.Tooltip("reward:Q", format=".4f")])
    return alt.layer(bars, points, rule).properties(
        height=alt.Step(44), title="Estimated reward per policy (dashed: logged policy)")
