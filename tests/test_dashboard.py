"""The Streamlit dashboard, driven through every page by Streamlit's AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analytics.ab import analyse_experiment
from analytics.degradation import detect_degradations, model_timeseries
from analytics.load import load_store
from analytics.report import overview
from dashboards import charts
from dashboards.app import PAGES, store_path_from

APP = str(Path(__file__).resolve().parents[1] / "dashboards" / "app.py")


@pytest.fixture
def app(small_store, monkeypatch) -> AppTest:
    monkeypatch.setenv("AMM_STORE", str(small_store.path))
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    return at


def test_every_page_renders_with_the_key_numbers(app, small_store):
    data = load_store(small_store.path)
    ov = overview(data)
    assert [t.label for t in app.tabs] == list(PAGES)
    metrics = {m.label: m.value for m in app.metric}
    # Overview
    assert metrics["Requests"] == f"{ov.requests:,}"
    assert metrics["Cache hit rate"] == f"{ov.cache_hit_rate:.1%}"
    assert any(label.startswith("Cost ") and value == f"${ov.budget.spent_usd:,.2f}"
               for label, value in metrics.items())
    # Models: each detected degradation is a warning
    warnings = [w.value for w in app.warning]
    assert warnings == [d.describe() for d in detect_degradations(data.attempts)]
    assert any(small_store.degraded_model in w for w in warnings)
    # A/B report
    verdict = analyse_experiment(data.requests, small_store.experiment).verdicts[0]
    assert any(verdict.split(": ", 1)[1] in m.value for m in app.markdown)
    # Failovers
    assert metrics["Failovers"] == f"{len(data.failovers):,}"
    # Cost
    assert metrics["Total spend (ledger)"] == f"${data.ledger['cost_usd'].sum():,.2f}"


def test_models_page_threshold_changes_what_is_reported(app):
    before = len(app.warning)
    app.slider(key="threshold").set_value(0.5).run()
    assert not app.exception
    assert 0 < len(app.warning) < before


def test_ab_page_selects_an_experiment_and_live_refresh_runs(app, small_store):
    app.selectbox(key="experiment").select(small_store.experiment).run()
    assert not app.exception
    app.toggle(key="live").set_value(True).run()
    assert not app.exception and len(app.tabs) == len(PAGES)


def test_missing_store_says_so_and_offers_the_demo_store(tmp_path, monkeypatch):
    monkeypatch.setenv("AMM_STORE", str(tmp_path / "missing.db"))
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception
    assert "No amm store at" in at.error[0].value
    at.button(key="demo").click().run()
    assert not at.exception
    assert [t.label for t in at.tabs] == list(PAGES)
    assert at.text_input(key="store").value.endswith("amm-demo-store.db")


def test_store_path_precedence():
    assert store_path_from(["--store", "a.db"], {"AMM_STORE": "b.db"}) == Path("a.db")
    assert store_path_from(["-q", "x"], {"AMM_STORE": "b.db"}) == Path("b.db")
    assert store_path_from([], {}) == Path("data/amm.db")


def test_charts_build_valid_vega_lite(small_store):
    data = load_store(small_store.path)
    series = model_timeseries(data.attempts, freq="6h")
    changes = detect_degradations(data.attempts)
    spec = charts.metric_over_time(series, "p95_latency_ms", changes).to_dict()
    assert spec["layer"][1]["mark"]["type"] == "rule"
    assert charts.failover_chart(data.failovers).to_dict()["mark"]["type"] == "bar"


def test_ab_page_shows_the_reports_numbers_per_metric(app, small_store):
    from analytics.report import report_json

    doc = report_json(small_store.path)
    shown = [df.value for df in app.dataframe]
    tables = [t for t in shown if "p-value" in t.columns]
    assert tables, "no per-metric A/B table"
    rows = tables[0].set_index("metric")
    for e in doc["experiments"]:
        p = e["p_value"]
        assert rows.loc[e["metric"], "p-value"] == (f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}")
        assert rows.loc[e["metric"], "decision"].startswith(e["decision"])


def test_why_page_lists_candidates_and_exclusions(app):
    assert not app.exception
    assert any(m.value.startswith("**Chosen:**") for m in app.markdown)
    assert any("candidate" in df.value.columns for df in app.dataframe)


def test_an_error_rate_change_is_marked_on_the_error_rate_chart(small_store):
    import json
    from datetime import UTC, datetime

    from analytics.degradation import Degradation

    data = load_store(small_store.path)
    series = model_timeseries(data.attempts, freq="6h")
    model = str(series["model"].iloc[0])
    change = Degradation(model=model, agent_type=None, metric="error_rate",
                         change_time=datetime(2026, 11, 2, tzinfo=UTC), baseline=0.01,
                         current=0.05, ratio=0.2, threshold=0.8, baseline_n=500, current_n=500)
    marked = json.dumps(charts.metric_over_time(series, "error_rate", [change]).to_dict())
    assert f"{model} degraded" in marked
    unmarked = json.dumps(charts.metric_over_time(series, "quality", [change]).to_dict())
    assert f"{model} degraded" not in unmarked
