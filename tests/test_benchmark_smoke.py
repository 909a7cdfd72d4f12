"""The benchmark runs end to end in quick mode and reports every budgeted figure.

No timing is asserted: only that each figure is measured, that the report is
written, and that every span amm emitted reached the OTLP receiver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from benchmarks.mock_server import COMPLETION_TEXT, MockServer
from benchmarks.report import BUDGETS, evaluate
from benchmarks.stats import percentile

REPO = Path(__file__).resolve().parents[1]


def test_mock_server_answers_openai_chat_completions_with_usage_on_one_keepalive_connection() -> None:
    with MockServer() as server, httpx.Client(timeout=10) as client:
        replies = [client.post(server.url, json={"model": "m", "messages": []}) for _ in range(3)]
        missing = client.post(server.api_base + "/embeddings", json={})
    assert [r.status_code for r in replies] == [200, 200, 200]
    body = replies[0].json()
    assert body["choices"][0]["message"]["content"] == COMPLETION_TEXT
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert missing.status_code == 404


def test_mock_server_stop_ends_its_process_and_is_idempotent() -> None:
    server = MockServer()
    server.start()
    pid = server.pid
    server.stop()
    server.stop()
    assert server.pid is None and pid is not None
    with pytest.raises(ProcessLookupError):  # exited and reaped
        os.kill(pid, 0)


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0


def test_a_budget_whose_figure_was_not_measured_is_skipped_not_passed() -> None:
    rows = evaluate({"paths": {}})
    assert {r["verdict"] for r in rows} == {"SKIP"}


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_quick_benchmark_writes_every_figure_and_loses_no_span(tmp_path: Path) -> None:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}
    env.pop("OTEL_SDK_DISABLED", None)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=140,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads((tmp_path / "latest.json").read_text())
    rows = {row["figure"]: row for row in results["budgets"]}
    assert set(rows) == {b.figure for b in BUDGETS}
    not_measured = [name for name, row in rows.items() if row["measured"] is None]
    assert not_measured == []
    assert {row["verdict"] for row in rows.values()} <= {"PASS", "FAIL"}

    for path in ("raw_httpx", "litellm", "router", "amm", "amm_decorator"):
        for level in ("c1", "c16", "c64"):
            summary = results["paths"][path][level]
            assert summary["errors"] == 0, (path, level, summary.get("first_error"))
            assert summary["calls"] > 0 and summary["p99_ms"] >= summary["p50_ms"] > 0

    spans = results["spans"]
    assert spans["emitted"] > 0
    assert spans["received"] == spans["emitted"]
    assert spans["dropped_by_processor"] == 0
    assert results["memory"]["errors"] == 0
    assert results["micro"]["cache_hit"]["provider_calls_during_hits"] == 0
    assert results["mock_server"]["ceiling_rps"] > 0
    assert results["import_amm"]["median_ms"] > 0
    assert "| figure | measured | budget | verdict |" in (tmp_path / "latest.md").read_text()
