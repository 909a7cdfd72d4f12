"""amm's dashboard (Streamlit): ``streamlit run dashboards/app.py -- --store data/amm.db``.

What it reads is a source (:func:`source_from`): ``--source`` or ``--store``, else
``$AMM_SOURCE`` or ``$AMM_STORE``, else ``data/amm.db``. A SQLite store is read through
read-only connections, so agents keep writing while it is open; a ``clickhouse://`` or
``chdb://`` URL reads the Collector's ``otel_traces`` (fleet analytics). "Live refresh"
re-reads it every few seconds. Pages: Overview, Models, A/B report, Failovers, Cost,
Why this call?, What if. All numbers come from :mod:`analytics`; the charts from
:mod:`dashboards.charts`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# `streamlit run` puts this file's folder on sys.path, not the repository root.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from analytics.ab import MetricResult, analyse_experiment  # noqa: E402
from analytics.cost import daily_spend, spend_by, spend_by_day_and  # noqa: E402
from analytics.degradation import (  # noqa: E402
    auto_frequency,
    detect_degradations,
    model_timeseries,
)
from analytics.explain import explain_request  # noqa: E402
from analytics.load import StoreData, load_store  # noqa: E402
from analytics.ope import MIN_ESS, PolicyEstimate, evaluate_policy, load_decisions  # noqa: E402
from analytics.pushdown import open_source  # noqa: E402
from analytics.report import model_table, overview, resolve_budget  # noqa: E402
from analytics.source import SpanSource  # noqa: E402
from analytics.synthetic import write_synthetic_store  # noqa: E402
from dashboards import charts  # noqa: E402

__all__ = ["DEFAULT_POLICIES", "DEFAULT_STORE", "DEMO_STORE", "PAGES", "is_url", "main",
           "source_from", "store_path_from"]

DEFAULT_STORE = Path("data/amm.db")
DEMO_STORE = Path(tempfile.gettempdir()) / "amm-demo-store.db"
PAGES = ("Overview", "Models", "A/B report", "Failovers", "Cost", "Why this call?", "What if")
DEFAULT_POLICIES = ("cheapest", "score")
"""Policies the "What if" page estimates until the analyst picks others."""
_URL_REFRESH_S = 10  # a server has no file stamp: a URL source is re-read at most this often


def _args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--store")
    parser.add_argument("--source")
    args, _ = parser.parse_known_args(list(argv))
    return args


def store_path_from(argv: Sequence[str], environ: Mapping[str, str]) -> Path:
    """``--store PATH`` > ``$AMM_STORE`` > ``data/amm.db`` (unknown arguments ignored)."""
    return Path(_args(argv).store or environ.get("AMM_STORE") or DEFAULT_STORE)


def source_from(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """What the dashboard reads: ``--source`` > ``--store`` > ``$AMM_SOURCE`` > ``$AMM_STORE``
    > ``data/amm.db``; a store path or a ``clickhouse://``/``chdb://`` URL."""
    args = _args(argv)
    return str(args.source or args.store or environ.get("AMM_SOURCE")
               or environ.get("AMM_STORE") or DEFAULT_STORE)


def is_url(spec: str) -> bool:
    """A source URL (``chdb:///dir``, ``clickhouse://host:8123/db``), not a store path."""
    return "://" in spec and not spec.startswith("sqlite://")


def _store_file(spec: str) -> Path:
    return Path(spec.removeprefix("sqlite://"))


def _stamp(path: Path) -> tuple[float, ...]:
    # The WAL file changes on every commit while the main file may not (until a
    # checkpoint): both belong in the cache key.
    return tuple(p.stat().st_mtime_ns + p.stat().st_size
                 for p in (path, Path(f"{path}-wal")) if p.exists())


def _version(spec: str) -> tuple[float, ...]:
    """The cache key of a source's contents: the file stamp of a store, a time bucket of
    a URL (so "Live refresh" re-reads it, at most every ``_URL_REFRESH_S``)."""
    if is_url(spec):
        return (time.time() // _URL_REFRESH_S,)
    return _stamp(_store_file(spec))


@st.cache_resource(max_entries=4)
def _source(spec: str) -> SpanSource:
    # One source object per spec: an embedded chdb engine is opened once per process.
    return open_source(spec)


@st.cache_data(show_spinner="Reading the store...", max_entries=4)
def _load(spec: str, stamp: tuple[float, ...]) -> StoreData:
    return load_store(_source(spec))


@st.cache_data(show_spinner="Reading the routing decisions...", max_entries=4)
def _decisions(spec: str, stamp: tuple[float, ...]) -> object:
    return load_decisions(_source(spec))


def _use_demo_store() -> None:
    write_synthetic_store(DEMO_STORE)
    st.session_state["store"] = str(DEMO_STORE)


def _page_overview(data: StoreData, budget: float) -> None:
    ov = overview(data, daily_budget=budget)
    cols = st.columns(5)
    cols[0].metric("Requests", f"{ov.requests:,}")
    cols[1].metric("Success rate", f"{ov.success_rate:.1%}")
    if ov.budget is not None:
        cols[2].metric(f"Cost {ov.budget.day:%b %d} vs budget", f"${ov.budget.spent_usd:,.2f}",
                       f"{ov.budget.utilization:.0%} of ${ov.budget.budget_usd:,.0f}",
                       delta_color="off")
    else:
        cols[2].metric("Cost today vs budget", "$0.00")
    cols[3].metric("Cache hit rate", f"{ov.cache_hit_rate:.1%}")
    cols[4].metric("Failovers", f"{ov.failovers:,}")
    if ov.requests:
        st.altair_chart(charts.outcomes_over_time(
            data.requests, freq=auto_frequency(data.requests["time"])), width="stretch")
        by_agent = data.requests.groupby("agent_type", observed=True).agg(
            requests=("trace_id", "size"), quality=("quality", "mean"),
            cost_usd=("cost_usd", "sum")).reset_index()
        st.dataframe(by_agent, hide_index=True, width="stretch")


def _page_models(data: StoreData) -> None:
    left, right = st.columns(2)
    choice = left.selectbox("Resolution", ["auto", "1min", "15min", "1h", "3h", "6h", "1D"],
                            index=0, key="freq")
    freq = auto_frequency(data.attempts["time"]) if choice == "auto" else choice
    threshold = right.slider("Degradation threshold", 0.5, 0.95, 0.8, 0.05, key="threshold")
    changes = detect_degradations(data.attempts, threshold=threshold)
    if changes:
        for d in changes:
            st.warning(d.describe())
    else:
        st.success(f"No degradation below the {threshold:.2f} threshold.")
        st.dataframe([{
            "model": d.model, "metric": d.metric, "before": _fmt_level(d.metric, d.baseline),
            "after": _fmt_level(d.metric, d.current), "ratio": f"{d.ratio:.2f}",
            "change at": f"{d.change_time:%Y-%m-%d %H:%M}",
            "between": f"{d.change_low:%m-%d %H:%M} .. {d.change_high:%m-%d %H:%M}"
            if d.change_low and d.change_high else "",
            "detected at": f"{d.detected_at:%Y-%m-%d %H:%M}" if d.detected_at else "",
            "n before / after": f"{d.baseline_n:,} / {d.current_n:,}"} for d in changes],
            hide_index=True, width="stretch")
    st.dataframe(model_table(data), hide_index=True, width="stretch")
    series = model_timeseries(data.attempts, freq=freq)
    for metric in ("error_rate", "p95_latency_ms", "quality"):
        st.altair_chart(charts.metric_over_time(series, metric, changes),
                        width="stretch")


def _page_ab(data: StoreData) -> None:
    names = sorted(data.requests["experiment"].dropna().unique())
    if not names:
        st.info("No experiment in this store.")
        return
    name = st.selectbox("Experiment", names, key="experiment")
    rep = analyse_experiment(data.requests, str(name))
    for line in rep.verdicts:
        st.markdown(f"**Verdict:** {line.split(': ', 1)[1]}")
    st.caption(f"Randomised traffic only: {sum(a.n for a in rep.arms):,} requests; "
               f"{rep.excluded:,} left out (arm not honoured or cache hit). Each metric is "
               "decided by an always-valid test (mSPRT), so reading it daily keeps false "
               "positives at alpha; failed requests score quality 0; with more than two "
               "arms, alpha is split over the pairs (Bonferroni).")
    table = rep.arms_table()
    st.dataframe(table, hide_index=True, width="stretch")
    left, right = st.columns(2)
    left.altair_chart(charts.arm_ci_chart(table, "quality", "Mean quality (95% CI)"),
                      width="stretch")
    right.altair_chart(charts.arm_ci_chart(table, "cost_per_request",
                                           "Cost per request, USD (95% CI)"),
                       width="stretch")
    for c in rep.comparisons:
        st.markdown(f"**{c.arm_b} vs {c.arm_a}** (difference b - a; always-valid "
                    "intervals and p-values, frozen when decided)")
        st.dataframe([_metric_row(r) for r in c.results], hide_index=True, width="stretch")


def _fmt_level(metric: str, x: float) -> str:
    if x != x:
        return "-"
    if metric in ("success_rate", "error_rate"):
        return f"{x:.1%}"
    if metric in ("latency_ms", "p95_latency_ms"):
        return f"{x:,.0f} ms"
    if metric == "cost_per_request":
        return f"${x:.5f}"
    return f"{x:.3f}"


def _fmt_diff(metric: str, x: float) -> str:
    if x != x:
        return "-"
    if metric == "success_rate":
        return f"{x * 100:+.1f} pts"
    if metric == "latency_ms":
        return f"{x:+,.0f} ms"
    if metric == "cost_per_request":
        return f"{'-' if x < 0 else '+'}${abs(x):.5f}"
    return f"{x:+.3f}"


def _metric_row(r: MetricResult) -> dict[str, object]:
    decision = {"winner": f"winner: {r.winner}",
                "equivalent": f"equivalent within +-{_fmt_diff(r.metric, r.margin)[1:]}",
                "continue": "continue" + (f" (~{r.more_needed_per_arm:,} more per arm)"
                                          if r.more_needed_per_arm > 0 else "")}[r.decision]
    return {
        "metric": r.metric, "n (a / b)": f"{r.n_a:,} / {r.n_b:,}",
        "a": _fmt_level(r.metric, r.mean_a), "b": _fmt_level(r.metric, r.mean_b),
        "difference": _fmt_diff(r.metric, r.diff.estimate),
        f"{r.level:.0%} interval": f"{_fmt_diff(r.metric, r.diff.low)} .. "
                                   f"{_fmt_diff(r.metric, r.diff.high)}",
        "p-value": f"{r.p_value:.2g}" if r.p_value >= 1e-4 else f"{r.p_value:.1e}",
        "decision": decision,
        "decided at": f"{r.stopped_at:%Y-%m-%d %H:%M}" if r.stopped_at else "",
    }


def _page_why(data: StoreData, source: SpanSource) -> None:
    r = data.requests.sort_values("time", ascending=False).head(500)
    if r.empty:
        st.info("No requests recorded.")
        return
    labels = [f"{t:%m-%d %H:%M:%S} {a} -> {m} ({tid[:8]})" for t, a, m, tid in zip(
        r["time"], r["agent_type"].fillna("?"), r["model"].fillna("?"), r["trace_id"],
        strict=True)]
    i = st.selectbox("Request (newest first)", range(len(labels)),
                     format_func=lambda k: labels[k], key="why_request")
    row = r.iloc[int(i)]
    why = explain_request(source, str(row["trace_id"]),
                          around=row["time"].floor("us").to_pydatetime())
    if why is None:
        st.info("This request has no amm.select span (e.g. a cache hit).")
        return
    st.markdown(f"**Chosen:** {why.chosen or '-'} · **why:** {why.reason or '-'}")
    if why.experiment:
        st.caption(f"Experiment {why.experiment}, arm {why.arm}; propensity {why.propensity}")
    st.dataframe([{"candidate": m, "score": f"{s:.4f}"} for m, s in why.candidates]
                 or [{"candidate": "-", "score": "-"}], hide_index=True, width="stretch")
    st.dataframe([{"excluded": m, "reason": reason} for m, reason in why.excluded]
                 or [{"excluded": "none", "reason": ""}], hide_index=True, width="stretch")


def _support(e: PolicyEstimate) -> str:
    if not e.support_ok:
        return "not identified"
    if e.effective_sample_size < MIN_ESS:
        return f"ESS < {MIN_ESS}: too few comparable decisions"
    return "ok"


def _what_if_rows(estimates: Sequence[PolicyEstimate]) -> list[dict[str, object]]:
    """The logged policy's actual values, then each target's estimates (as ``what_if``)."""
    e0 = estimates[0]
    m = e0.logged_metrics
    rows: list[dict[str, object]] = [{
        "policy": "logged (actual)", "reward": round(e0.logged_value, 4), "interval": "",
        "quality": round(m["quality"], 3), "cost $": round(m["cost_usd"], 5),
        "latency ms": round(m["latency_ms"]), "success": round(m["success"], 3),
        "ESS": e0.n, "support": "logged"}]
    for e in estimates:
        x = e.metrics
        rows.append({
            "policy": e.policy, "reward": round(e.value, 4),
            "interval": f"[{e.ci_low:.4f}, {e.ci_high:.4f}]",
            "quality": round(x["quality"].value, 3), "cost $": round(x["cost_usd"].value, 5),
            "latency ms": round(x["latency_ms"].value) if x["latency_ms"].value == x[
                "latency_ms"].value else None,
            "success": round(x["success"].value, 3),
            "ESS": round(e.effective_sample_size), "support": _support(e)})
    return rows


def _page_what_if(spec: str, stamp: tuple[float, ...]) -> None:
    import pandas as pd

    decisions = _decisions(spec, stamp)
    assert isinstance(decisions, pd.DataFrame)
    if decisions.empty:
        st.info("No logged routing decisions (amm.select spans with their candidates) in "
                "this store.")
        return
    st.caption("Off-policy estimates (doubly robust, 95% intervals) of what other routing "
               "policies would have given on the logged decisions, from the logged "
               "probabilities of every candidate. Only a logger that explores (softmax, "
               "thompson) supports policies other than itself.")
    agents = sorted(decisions["agent_type"].dropna().astype(str).unique())
    left, mid, right = st.columns([1, 1, 2])
    agent = left.selectbox("Agent type", ["all", *agents], key="whatif_agent")
    lam = mid.number_input("Cost weight λ (reward = quality − λ × cost)", min_value=0.0,
                           value=10.0, step=1.0, key="whatif_lambda")
    models = sorted({str(c["model"]) for cs in decisions["candidates"] for c in cs})
    options = [*DEFAULT_POLICIES, *(f"always:{m}" for m in models)]
    picked = right.multiselect("Policies", options, default=list(DEFAULT_POLICIES),
                               key="whatif_policies")
    typed = st.text_input("More policies (comma-separated: always:<model>, cheapest, score)",
                          key="whatif_typed")
    policies = list(dict.fromkeys([*picked, *(t.strip() for t in typed.split(",")
                                              if t.strip())]))
    if not policies:
        st.info("Pick or type a policy to estimate.")
        return
    log = decisions if agent == "all" else decisions[decisions["agent_type"] == agent]
    try:
        estimates = [evaluate_policy(log, p, lam=float(lam)) for p in policies]
    except ValueError as exc:  # an unknown policy name
        st.error(str(exc))
        return
    st.dataframe(_what_if_rows(estimates), hide_index=True, width="stretch")
    for e in estimates:
        if not e.support_ok:
            st.warning(f"{e.policy}: not identified by this log: {e.support_reason}")
        elif e.effective_sample_size < MIN_ESS:
            st.warning(f"{e.policy}: effective sample size {e.effective_sample_size:.0f} < "
                       f"{MIN_ESS}: the interval is not to be trusted; log more.")
    st.altair_chart(charts.policy_value_chart(estimates), width="stretch")
    if estimates[0].n_cache_hits:
        st.caption(f"{estimates[0].n_cache_hits:,} cache hits left out (no routing decision).")


def _page_failovers(data: StoreData) -> None:
    f = data.failovers
    if f.empty:
        st.info("No failovers recorded.")
        return
    st.metric("Failovers", f"{len(f):,}")
    st.altair_chart(charts.failover_chart(f), width="stretch")
    routes = (f.groupby(["from_model", "to_model", "reason"], observed=True, dropna=False)
              .size().rename("failovers").reset_index()
              .sort_values("failovers", ascending=False, ignore_index=True))
    st.dataframe(routes, hide_index=True, width="stretch")


def _page_cost(data: StoreData, budget: float, cost_basis: str) -> None:
    ledger = data.ledger
    if ledger.empty:
        st.info("The cost ledger is empty.")
        return
    if cost_basis == "ledger":
        st.metric("Total spend (ledger)", f"${ledger['cost_usd'].sum():,.2f}")
    else:
        st.metric("Total spend (chat spans)", f"${ledger['cost_usd'].sum():,.2f}")
        st.caption("Summed from the `amm.cost_usd` of the chat spans that reached this "
                   "source: as complete as the traces that arrived (sampling, a collector "
                   "down). Each host's own store holds the exact cost ledger.")
    st.altair_chart(charts.daily_cost_chart(daily_spend(ledger, budget)),
                    width="stretch")
    left, right = st.columns(2)
    left.altair_chart(charts.cost_by_chart(spend_by_day_and(ledger, "model_id"), "model_id"),
                      width="stretch")
    right.altair_chart(charts.cost_by_chart(spend_by_day_and(ledger, "agent_type"),
                                            "agent_type"), width="stretch")
    st.subheader("Most expensive tasks")
    st.dataframe(spend_by(ledger, "task_id").head(20), hide_index=True,
                 width="stretch")


def _render(spec: str) -> None:
    stamp = _version(spec)
    data = _load(spec, stamp)
    source = _source(spec)
    cost_basis = str(getattr(source, "cost_basis", "ledger"))
    budget = st.sidebar.number_input("Daily budget (USD)", min_value=0.01,
                                     value=float(resolve_budget(data)), key="budget")
    st.caption(f"{'Source' if is_url(spec) else 'Store'}: `{spec}` · "
               f"{len(data.requests):,} requests · cost from "
               f"{'the cost ledger' if cost_basis == 'ledger' else 'chat spans'}")
    tabs = st.tabs(list(PAGES))
    with tabs[0]:
        _page_overview(data, budget)
    with tabs[1]:
        _page_models(data)
    with tabs[2]:
        _page_ab(data)
    with tabs[3]:
        _page_failovers(data)
    with tabs[4]:
        _page_cost(data, budget, cost_basis)
    with tabs[5]:
        _page_why(data, source)
    with tabs[6]:
        _page_what_if(spec, stamp)


def _opened(spec: str) -> bool:
    """Whether ``spec`` can be read; says why not on the page."""
    if not is_url(spec):
        if _store_file(spec).is_file():
            return True
        st.error(f"No amm store at `{spec}`. Record one with `amm demo` (it writes "
                 "`data/amm.db`), point the sidebar at another file or a source URL, or "
                 "open the synthetic demo store.")
        st.button("Open the synthetic demo store", on_click=_use_demo_store, key="demo")
        return False
    try:
        _source(spec)
    except (ValueError, ImportError, RuntimeError) as exc:  # bad URL, extra, server down
        st.error(f"Cannot open `{spec}`: {exc}")
        return False
    return True


def main() -> None:
    """The Streamlit page."""
    st.set_page_config(page_title="amm: models, experiments, cost", layout="wide")
    st.title("amm: which model, how well, at what cost")
    if "store" not in st.session_state:
        st.session_state["store"] = source_from(sys.argv[1:], os.environ)
    spec = st.sidebar.text_input("Store (SQLite file) or source URL", key="store",
                                 help="a store path, chdb:///dir or clickhouse://host:8123/db")
    live = st.sidebar.toggle("Live refresh", value=False, key="live")
    every = st.sidebar.number_input("Refresh every (s)", 2, 300, 10, key="every")
    if not _opened(spec):
        return

    @st.fragment(run_every=float(every) if live else None)
    def body() -> None:
        _render(spec)

    body()


if __name__ == "__main__":
    main()
