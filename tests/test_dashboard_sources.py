"""The dashboard on other sources than a local store file, and its "What if" page.

The demo's store (a live softmax logger for the docs agent) is copied into embedded
ClickHouse with the Collector exporter's DDL; the dashboard opens that ``chdb://``
URL and shows the same request count as the report of that source.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analytics.ope import MIN_ESS, evaluate_policy, load_decisions
from dashboards.app import PAGES, is_url, source_from

APP = str(Path(__file__).resolve().parents[1] / "dashboards" / "app.py")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("demo")
    subprocess.run([sys.executable, "-m", "amm", "demo", "--requests", "200", "--data-dir",
                    str(data)], check=True, capture_output=True, timeout=240)
    return data / "amm.db"


def _app(monkeypatch: pytest.MonkeyPatch, **env: str) -> AppTest:
    for name in ("AMM_SOURCE", "AMM_STORE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    return at


def _table(at: AppTest, column: str):
    frames = [df.value for df in at.dataframe if column in df.value.columns]
    assert frames, f"no table with a {column!r} column"
    return frames[0]


def test_source_precedence_urls_and_paths():
    env = {"AMM_SOURCE": "chdb:///srv/traces", "AMM_STORE": "b.db"}
    assert source_from(["--source", "clickhouse://h:8123/otel"], env) == "clickhouse://h:8123/otel"
    assert source_from(["--store", "a.db"], env) == "a.db"
    assert source_from([], env) == "chdb:///srv/traces"
    assert source_from([], {"AMM_STORE": "b.db"}) == "b.db"
    assert source_from([], {}) == "data/amm.db"
    assert is_url("chdb:///x") and not is_url("data/amm.db") and not is_url("sqlite:///a.db")


def test_dashboard_runs_on_embedded_clickhouse(demo_store, tmp_path, monkeypatch):
    pytest.importorskip("chdb")
    from analytics.clickhouse import export_store
    from analytics.pushdown import open_source
    from analytics.report import report_json

    url = f"chdb://{tmp_path / 'traces'}"
    assert export_store(demo_store, url) > 0
    at = _app(monkeypatch, AMM_SOURCE=url)
    assert [t.label for t in at.tabs] == list(PAGES)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Requests"] == f"{report_json(open_source(url))['requests']:,}"
    # Cost from chat spans, and the page says so (each host's ledger is the exact one).
    assert "Total spend (chat spans)" in metrics
    assert any("cost from chat spans" in c.value for c in at.caption)
    # The "Why this call?" page reads the same source.
    assert any(m.value.startswith("**Chosen:**") for m in at.markdown)
    # The "What if" page too: the logged policy's row is there.
    assert _table(at, "support")["policy"].iloc[0] == "logged (actual)"


def test_a_bad_source_url_is_reported_on_the_page(monkeypatch):
    at = _app(monkeypatch, AMM_SOURCE="chdb://")
    assert "Cannot open `chdb://`" in at.error[0].value
    assert not at.tabs


def test_what_if_page_estimates_picked_and_typed_policies(demo_store, monkeypatch):
    at = _app(monkeypatch, AMM_STORE=str(demo_store))
    at.selectbox(key="whatif_agent").select("docs").run()
    at.text_input(key="whatif_typed").set_value("always:sim-claude").run()
    assert not at.exception, at.exception
    table = _table(at, "support").set_index("policy")
    assert list(table.index) == ["logged (actual)", "cheapest", "score", "always:sim-claude"]

    decisions = load_decisions(demo_store)
    docs = decisions[decisions["agent_type"] == "docs"]
    for name in ("cheapest", "score", "always:sim-claude"):
        e = evaluate_policy(docs, name, lam=10.0)
        row = table.loc[name]
        assert row["reward"] == round(e.value, 4)
        assert row["interval"] == f"[{e.ci_low:.4f}, {e.ci_high:.4f}]"
        assert row["ESS"] == round(e.effective_sample_size)
        expected = ("not identified" if not e.support_ok else "ok"
                    if e.effective_sample_size >= MIN_ESS else
                    f"ESS < {MIN_ESS}: too few comparable decisions")
        assert row["support"] == expected, name
    assert table.loc["logged (actual)", "reward"] == round(e.logged_value, 4)
    assert table.loc["logged (actual)", "ESS"] == len(docs[docs["stage"] != "cache_hit"])
    # A flagged estimate is also a warning that says why.
    flagged = [n for n in table.index[1:] if table.loc[n, "support"] != "ok"]
    assert flagged and all(any(w.value.startswith(f"{n}:") for w in at.warning) for n in flagged)


def test_what_if_page_changes_with_lambda_and_refuses_unknown_policies(demo_store, monkeypatch):
    at = _app(monkeypatch, AMM_STORE=str(demo_store))
    at.selectbox(key="whatif_agent").select("docs").run()
    before = _table(at, "support").set_index("policy")
    at.number_input(key="whatif_lambda").set_value(1000.0).run()
    after = _table(at, "support").set_index("policy")
    # A larger cost weight never raises a reward, and lowers it for every policy whose
    # cost shows in the table (the docs agent's local model costs nothing or next to it).
    assert (after["reward"] <= before["reward"]).all()
    costly = before.index[before["cost $"] > 0]
    assert len(costly) > 0
    assert (after.loc[costly, "reward"] < before.loc[costly, "reward"]).all()
    at.text_input(key="whatif_typed").set_value("fastest").run()
    assert not at.exception
    assert any("unknown policy 'fastest'" in e.value for e in at.error)


def test_amm_dashboard_source_tells_the_app_and_checks_the_url(tmp_path):
    from amm.cli import _dashboard_env

    url = f"chdb://{tmp_path / 'traces'}"
    shown, env = _dashboard_env(url, None, {"AMM_STORE": "old.db", "PATH": "/bin"})
    assert shown == url and env["AMM_SOURCE"] == url and env["PATH"] == "/bin"
    shown, env = _dashboard_env(f"sqlite://{tmp_path / 'a.db'}", None, {"AMM_SOURCE": url})
    assert env["AMM_STORE"] == str(tmp_path / "a.db") and "AMM_SOURCE" not in env
    _, env = _dashboard_env(None, str(tmp_path / "b.db"), {"AMM_SOURCE": url})
    assert env["AMM_STORE"] == str(tmp_path / "b.db") and "AMM_SOURCE" not in env
    for bad in ("ftp://host/x", "chdb://"):
        out = subprocess.run([sys.executable, "-m", "amm", "dashboard", "--source", bad],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and bad in out.stderr, out.stderr
