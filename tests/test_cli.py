"""The ``amm`` command line, run as subprocesses the way a user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures_manager import model_entry

ROOT = Path(__file__).resolve().parent.parent
AMM = [sys.executable, "-m", "amm"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 180,
        cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AMM, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, **(env or {})})


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for command in ("demo", "sim", "models", "check", "report", "dashboard"):
        assert command in out.stdout


def test_models_prints_the_registry_as_a_table():
    out = run("models", "--config", str(ROOT / "config" / "model_registry.json"))
    assert out.returncode == 0, out.stderr
    assert "gpt-4-turbo" in out.stdout and "claude-3.5-sonnet" in out.stdout
    assert "$/1k in" in out.stdout


def test_models_without_a_registry_says_where_to_give_one_in_one_line(tmp_path):
    out = run("models", cwd=tmp_path, env={"AMM_CONFIG": ""})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "amm models: config/model_registry.json: no registry file here; give --config FILE or "
        "set AMM_CONFIG (amm demo needs none)"]


def test_models_with_an_invalid_registry_prints_one_line_naming_the_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"models": [{"id": "x"}]}))
    out = run("models", "--config", str(bad))
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("amm models: ") and "bad.json" in line and "models[x]" in line


def test_check_reports_an_invalid_config_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"models": [{"id": "x"}]}))
    out = run("check", "--config", str(bad), "--no-health")
    assert out.returncode == 2
    assert "INVALID" in out.stdout and "bad.json" in out.stdout
    assert "Traceback" not in out.stderr


def test_check_tells_which_keys_are_present_without_printing_them(tmp_path):
    secret = "sk-test-secret-value-0123456789abcdef"
    env = {"OPENAI_API_KEY": secret, "ANTHROPIC_API_KEY": "", "GOOGLE_API_KEY": "",
           "GEMINI_API_KEY": ""}
    out = run("check", "--config", str(ROOT / "config" / "model_registry.json"), "--no-health",
              env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "key openai: present" in out.stdout
    assert "key anthropic: MISSING" in out.stdout
    assert secret not in out.stdout + out.stderr


def test_check_health_checks_each_model_against_the_simulator(tmp_path, make_simulator):
    from amm.sim import ModelProfile

    sim = make_simulator({"up": ModelProfile(latency_ms=1), "down": ModelProfile(error_rate=1.0)})
    models = [model_entry("up", api_base=sim.api_base("openai")),
              model_entry("down", api_base=sim.api_base("openai"))]
    config = tmp_path / "registry.json"
    config.write_text(json.dumps({"models": models}))
    out = run("check", "--config", str(config), env={"OPENAI_API_KEY": "sk-sim-0123456789abcdefgh"})
    assert out.returncode == 1  # one model failed its check
    assert "health up: ok" in out.stdout
    assert "health down: FAILED" in out.stdout


def test_sim_serves_until_stopped():
    proc = subprocess.Popen([*AMM, "sim", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            found = re.search(r"http://127\.0\.0\.1:\d+", line)
            url = found.group(0) if found else None
        assert url, "the simulator did not print its URL"
        with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_demo_shows_every_behaviour_and_report_prints_the_dashboards_verdicts(tmp_path):
    from analytics.ab import summarize
    from analytics.load import load_requests

    data = tmp_path / "data"
    started = time.monotonic()
    demo = run("demo", "--data-dir", str(data), timeout=300)
    elapsed = time.monotonic() - started
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert elapsed < 120, f"the demo took {elapsed:.0f} s"
    facts = json.loads((data / "demo_summary.json").read_text())
    assert facts["requests"] == 300 and facts["succeeded"] == 300
    assert facts["failovers"] >= 1
    assert facts["rate_limit_avoided"] >= 1
    assert facts["degradations"], "no degradation detected"
    assert facts["cache_hits"] >= 1
    assert len(facts["experiment_arms"]) == 2 and min(facts["experiment_arms"].values()) > 0
    assert facts["ledger_requests_usd"] == pytest.approx(facts["request_cost_total_usd"], abs=1e-9)
    assert facts["ledger_tokens"] == facts["billed_tokens"]
    for line in ("failovers", "rate limits", "cost", "experiment", "degradation"):
        assert line in demo.stdout

    report = run("report", "--store", str(data / "amm.db"))
    assert report.returncode == 0, report.stderr
    for verdict in summarize(load_requests(data / "amm.db")):
        assert verdict in report.stdout


def test_report_without_a_store_says_how_to_get_one(tmp_path):
    out = run("report", "--store", str(tmp_path / "missing.db"))
    assert out.returncode == 2
    assert "amm demo" in out.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_dashboard_serves_the_report_and_stopping_the_command_stops_streamlit(tmp_path, signum):
    from analytics.synthetic import write_synthetic_store

    store = tmp_path / "amm.db"
    write_synthetic_store(store)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*AMM, "dashboard", "--store", str(store), "--port", str(port),
                             "--headless"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                            timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert proc.poll() is None, "the dashboard exited"
                assert time.monotonic() < deadline, "the dashboard never answered"
                time.sleep(0.5)
        proc.send_signal(signum)  # only to amm, as a supervisor would: not its process group
        assert proc.wait(timeout=30) == 0
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "Streamlit outlived amm dashboard"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None
    assert f"http://127.0.0.1:{port}" in proc.stdout.readline()  # headless: the URL, printed
