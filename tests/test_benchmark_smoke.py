"""The benchmark runs end to end in quick mode (streaming section included) and reports
every budgeted figure.

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


def test_mock_server_answers_openai_chat_completions_with_usage_on_one_keepalive_connection(
) -> None:
    with MockServer() as server, httpx.Client(timeout=10) as client:
        replies = [client.post(server.url, json={"model": "m", "messages": []}) for _ in range(3)]
        missing = client.post(server.api_base + "/embeddings", json={})
    assert [r.status_code for r in replies] == [200, 200, 200]
    body = replies[0].json()
    assert body["choices"][0]["message"]["content"] == COMPLETION_TEXT
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert missing.status_code == 404


def _events(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.split("\n\n") if line]


def test_mock_server_streams_openai_chunks_with_a_usage_chunk_only_when_asked() -> None:
    streamed = {"model": "m", "messages": [], "stream": True}
    with MockServer() as server, httpx.Client(timeout=10) as client:
        with_usage = client.post(
            server.url, json={**streamed, "stream_options": {"include_usage": True}})
        without = client.post(server.url, json=streamed)
        plain = client.post(server.url, json={"model": "m", "messages": []})  # same connection
    assert with_usage.headers["content-type"].startswith("text/event-stream")
    assert with_usage.headers["transfer-encoding"] == "chunked"
    events = _events(with_usage.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == COMPLETION_TEXT
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 26
    assert all("usage" not in json.loads(e) for e in _events(without.text)[:-1])
    assert plain.json()["choices"][0]["message"]["content"] == COMPLETION_TEXT


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
@pytest.mark.timeout(270)
def test_quick_benchmark_writes_every_figure_and_loses_no_span(tmp_path: Path) -> None:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}
    env.pop("OTEL_SDK_DISABLED", None)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=260,
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

    for path in ("litellm_stream", "amm_stream", "amm_decorator_stream"):
        streamed = results["streaming"][path]
        first, last = streamed["first_chunk"], streamed["last_chunk"]
        assert first["errors"] == 0, (path, streamed.get("first_error"))
        assert first["calls"] == last["calls"] > 0
        assert 0 < first["p50_ms"] <= last["p50_ms"]
    assert "Streamed calls" in (tmp_path / "latest.md").read_text()

    spans = results["spans"]
    assert spans["emitted"] > 0
    assert spans["received"] == spans["emitted"]
    assert spans["dropped_by_processor"] == 0
    assert results["memory"]["errors"] == 0
    assert results["micro"]["cache_hit"]["provider_calls_during_hits"] == 0
    # Every managed call of the latency section (both amm paths) awaited the durable ledger.
    paths = results["paths"]
    managed_calls = paths["amm"]["c1"]["calls"] + paths["amm_decorator"]["c1"]["calls"]
    assert results["durable_ledger"]["calls"] == managed_calls
    assert 0 < results["durable_ledger"]["p50_ms"] <= results["durable_ledger"]["p99_ms"]
    assert results["micro"]["reservation"]["p50_us"] > 0
    # Throughput with each client alone in its own process (the budgeted figure).
    for path in ("litellm", "router", "amm", "amm_decorator"):
        isolated = results["isolated"][path]
        assert isolated["errors"] == 0 and isolated["calls_per_s"] > 0, (path, isolated)
    for run in results["isolated"]["amm"]["runs"]:
        assert run["spans"]["received"] == run["spans"]["emitted"] > 0
        assert run["spans"]["dropped_by_processor"] == 0
    assert results["gc"]["frozen_objects"] > 0
    assert results["mock_server"]["ceiling_rps"] > 0
    assert results["import_amm"]["median_ms"] > 0
    assert "| figure | measured | budget | verdict |" in (tmp_path / "latest.md").read_text()
