"""The seed's usage examples 1-14 run against the simulator and print what the seed says.

All examples run in ONE subprocess (``examples/run_all.py``: litellm is imported once);
each test then reads its example's section of that output. One more subprocess runs
a script on its own, as a user would. A litellm-free test checks that every script
still holds its seed example's code line for line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_seed import require_seed

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
SEED_PREFIX = "agentic_sdlc.orchestration.api_model_management"
REGISTERED = {"gpt-4-turbo", "gpt-3.5-turbo", "claude-3.5-sonnet", "gemini-pro", "llama3"}
NUMBERS = [f"{n:02d}" for n in range(1, 15)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # unbuffered: log lines (stderr) interleave with prints (stdout) in the order made
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False",
               PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    return env


def _script(number: str) -> Path:
    (path,) = EXAMPLES.glob(f"example_{number}_*.py")
    return path


@pytest.fixture(scope="module")
def run_all() -> subprocess.CompletedProcess[str]:
    """Every example, once, in one process."""
    return subprocess.run([sys.executable, str(EXAMPLES / "run_all.py")], cwd=REPO, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=240)


@pytest.fixture(scope="module")
def sections(run_all: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each example's output (stdout and log lines), by script name."""
    return dict(re.findall(r"^===== (\w+) =====\n(.*?)^----- \1: ", run_all.stdout,
                           flags=re.M | re.S))


def section(sections: dict[str, str], run_all: subprocess.CompletedProcess[str],
            key: str) -> str:
    """The output of the script named ``example_<key>_...`` (a number) or ``<key>...``."""
    prefix = f"example_{key}_" if key.isdigit() else key
    status = re.search(rf"^----- ({re.escape(prefix)}\w*): (\w+)", run_all.stdout, flags=re.M)
    assert status is not None, f"{prefix} did not run:\n{run_all.stdout[-3000:]}"
    name, outcome = status.groups()
    assert outcome == "ok", f"{name} failed:\n{sections.get(name)}"
    return sections[name]


def value(text: str, label: str) -> str:
    match = re.search(rf"^\s*{re.escape(label)}\s*(.+)$", text, flags=re.M)
    assert match is not None, f"no {label!r} line in:\n{text}"
    return match.group(1).strip()


def test_run_all_runs_every_example_and_exits_nonzero_only_on_a_failure(run_all):
    summary = re.search(r"^(\d+)/(\d+) examples ok", run_all.stdout, flags=re.M)
    assert summary is not None, run_all.stdout[-4000:]
    ok, total = int(summary.group(1)), int(summary.group(2))
    assert total == len(list(EXAMPLES.glob("*example_*.py"))) == 19
    assert run_all.returncode == (0 if ok == total else 1)


def test_example_01_prints_the_selected_model_its_score_and_reason(sections, run_all):
    out = section(sections, run_all, "01")
    assert value(out, "Selected:") in REGISTERED
    assert 0.0 <= float(value(out, "Score:")) <= 1.0
    assert value(out, "Reason:")


def test_example_02_finds_a_code_model_outside_ollama(sections, run_all):
    out = section(sections, run_all, "02")
    chosen = value(out, "Found suitable model:")
    assert chosen in REGISTERED - {"llama3"}


def test_example_03_fails_over_away_from_the_failing_primary(sections, run_all):
    out = section(sections, run_all, "03")
    assert "All models failed" not in out
    assert value(out, "Model used:") in REGISTERED - {"gpt-4-turbo"}
    assert value(out, "Response:")
    assert re.match(r"\$\d+\.\d{4}$", value(out, "Cost:"))
    # the primary really was tried (and answered 503) before the failover
    attempts = int(re.search(r"gpt-4-turbo received (\d+) requests", out).group(1))
    assert attempts >= 1


def test_example_04_prints_the_four_quality_scores(sections, run_all):
    out = section(sections, run_all, "04")
    for label in ("Overall quality:", "Completeness:", "Relevance:", "Coherence:"):
        assert 0.0 <= float(value(out, label)) <= 1.0


def test_example_05_prints_budget_status_and_cost_by_model(sections, run_all):
    out = section(sections, run_all, "05")
    assert value(out, "Daily budget:") == "$100.00"
    assert value(out, "Current spend:").startswith("$")
    assert value(out, "Utilization:").endswith("%")
    assert value(out, "Remaining:").startswith("$")
    assert re.search(r"^gpt-4-turbo: \$\d+\.\d\d$", out, flags=re.M)


def test_example_06_prints_the_recorded_request_metrics(sections, run_all):
    out = section(sections, run_all, "06")
    assert value(out, "Total requests:") == "1"
    assert value(out, "Success rate:") == "100.0%"
    assert re.match(r"\d+ms$", value(out, "Average latency:"))
    assert re.match(r"\d+ms$", value(out, "P95 latency:"))
    assert 0.0 <= float(value(out, "Average quality:")) <= 1.0


def test_example_07_misses_then_hits_the_cache_with_one_provider_request(sections, run_all):
    out = section(sections, run_all, "07")
    miss = out.find("Cache miss. Making API request")
    hit = out.find("Cache hit! Using cached response")
    assert 0 <= miss < hit
    assert out.count("Evicted 0 expired entries") == 2
    assert re.search(r"^Evicted \d+ LRU entries$", out, flags=re.M)
    assert "gpt-4-turbo received 1 request" in out


def test_example_08_runs_the_end_to_end_workflow(sections, run_all):
    out = section(sections, run_all, "08")
    assert value(out, "Selected model:") in REGISTERED
    assert 0.0 <= float(value(out, "Quality score:")) <= 1.0
    assert value(out, "Final response:")


def test_example_09_selects_a_model_for_each_of_ten_tasks(sections, run_all):
    out = section(sections, run_all, "09")
    counts = re.search(r"Provider distribution: Counter\((\{.*\})\)", out)
    assert counts is not None, out
    distribution = json.loads(counts.group(1).replace("'", '"'))
    assert sum(distribution.values()) == 10
    assert set(distribution) <= {"openai", "anthropic", "google", "ollama"}


def test_example_10_selects_a_cheap_model_for_the_short_task(sections, run_all):
    out = section(sections, run_all, "10")
    chosen = re.search(r"^Selected (\S+) for complex task$", out, flags=re.M)
    assert chosen is not None, out
    # the prompt is under 100 characters: max $0.01 for 2,000 output tokens rules out
    # gpt-4-turbo ($0.06), claude ($0.03) and gemini ($0.02)
    assert chosen.group(1) in {"gpt-3.5-turbo", "llama3"}
    assert re.match(r"\$\d+\.\d{4}$", value(out, "Estimated cost:"))


def test_example_11_shows_one_dashboard_round(sections, run_all):
    out = section(sections, run_all, "11")
    assert out.count("API Model Management Dashboard") == 1
    assert value(out, "Daily Limit:") == "$100.00"
    assert "Model Status:" in out
    assert re.search(r"^  GPT-4 Turbo: ✓ Available$", out, flags=re.M)
    assert "Performance (Last 24h):" in out
    assert value(out, "Requests:") == "1"
    assert value(out, "Success Rate:") == "100.0%"


def test_example_12_processes_every_task_of_the_batch(sections, run_all):
    out = section(sections, run_all, "12")
    assert "Batch Processing Complete:" in out
    assert value(out, "Total Tasks:") == "4"
    assert value(out, "Total Cost:").startswith("$")
    assert value(out, "Average Cost:").startswith("$")


def test_example_13_compares_three_models_and_names_a_winner(sections, run_all):
    out = section(sections, run_all, "13")
    assert "A/B Test Results:" in out
    for model in ("gpt-4-turbo", "claude-3.5-sonnet", "gemini-pro"):
        assert re.search(rf"^{re.escape(model)}:$", out, flags=re.M)
    assert out.count("Quality Score:") == 3
    winner = re.search(r"^Winner: (\S+) \(Quality: (\d\.\d\d)\)$", out, flags=re.M)
    assert winner is not None and winner.group(1) in REGISTERED


def test_example_14_answers_from_the_api_then_from_the_local_fallback(sections, run_all):
    out = section(sections, run_all, "14")
    healthy, failing = out.split("Every API model failing:")
    assert re.search(r"answered by (\S+):", healthy).group(1) in REGISTERED
    assert "answered by local/local-fallback" in failing
    assert "All API models failed" in failing


def test_error_example_1_reports_the_retry_after_then_fails_over(sections, run_all):
    out = section(sections, run_all, "error_example_1")
    assert value(out, "Rate limited:")
    assert value(out, "Retry after:") == "30.0s"
    assert re.search(r"^\(answered by (\S+)\)$", out, flags=re.M).group(1) in (
        REGISTERED - {"gpt-4-turbo"})


def test_error_example_2_selects_an_alternative_when_the_model_is_unavailable(sections, run_all):
    out = section(sections, run_all, "error_example_2")
    assert value(out, "Model unavailable:") == "gpt-4-turbo"
    assert re.search(r"^\(answered by (\S+)\)$", out, flags=re.M).group(1) in (
        REGISTERED - {"gpt-4-turbo"})


def test_error_example_3_falls_back_to_a_cheap_model_over_budget(sections, run_all):
    out = section(sections, run_all, "error_example_3")
    assert value(out, "Budget exceeded:") == "Daily budget of $100.0 exceeded"
    chosen = re.search(r"^\(answered by (\S+), cost \$(\d+\.\d+)\)$", out, flags=re.M)
    assert chosen.group(1) in {"gpt-3.5-turbo", "llama3"}


def test_error_example_4_robust_request_gets_an_answer(sections, run_all):
    out = section(sections, run_all, "error_example_4")
    assert value(out, "Robust request answered by") in REGISTERED


def test_integration_example_runs_the_four_integration_points(sections, run_all):
    out = section(sections, run_all, "integration_example")
    assert "1. Assignment: gpt-4-turbo -> gpt-4-turbo (openai, api_enabled=True)" in out
    assert "2. Optimizer feedback: gpt-4-turbo success=True" in out
    assert value(out, "3. Failover from gpt-4-turbo coordinated to:") in (
        REGISTERED - {"gpt-4-turbo"})
    # the stand-in optimizer proposes gpt-4-turbo for implementation; it is healthy
    assert "4. Integrated request answered by gpt-4-turbo; optimizer feedback entries: 1" in out


def test_an_example_runs_on_its_own_and_keeps_its_files_in_workdir(tmp_path):
    done = subprocess.run([sys.executable, str(_script("02")), "--workdir", str(tmp_path)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Found suitable model:" in done.stdout
    registry = json.loads((tmp_path / "config" / "model_registry.json").read_text())
    assert {m["id"] for m in registry["models"]} >= REGISTERED
    assert all(m["api_base"].startswith("http://127.0.0.1:") for m in registry["models"])
    assert any((tmp_path / "data").iterdir())


def _seed_examples() -> dict[str, str]:
    """Seed Example N's python block, by two-digit number (Usage and Advanced only)."""
    text = require_seed().read_text()
    usage = text[text.index("## Usage Examples"):text.index("## Integration with ModelOptimizer")]
    advanced = text[text.index("## Advanced Usage Examples"):text.index("## Additional Resources")]
    blocks = {}
    for part in (usage, advanced):
        for number, code in re.findall(r"### Example (\d+):.*?\n```python\n(.*?)```", part,
                                       flags=re.S):
            blocks[f"{int(number):02d}"] = code
    return blocks


def _code_lines(text: str) -> list[str]:
    """Non-blank lines, stripped, without trailing comments (the scripts add noqa)."""
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# Seed lines the scripts replace with scaffolding, by example.
_REPLACED = {"01": {"asyncio.run(main())"}}


@pytest.mark.parametrize("number", NUMBERS)
def test_example_script_holds_the_seed_code_with_only_the_import_prefix_changed(number):
    seed = _seed_examples()[number].replace(SEED_PREFIX, "amm")
    script = _code_lines(_script(number).read_text())
    position = 0
    for line in _code_lines(seed):
        if line in _REPLACED.get(number, ()):
            continue
        try:
            position = script.index(line, position) + 1
        except ValueError:
            pytest.fail(f"seed line missing or out of order in example {number}: {line!r}")
