"""The README's quickstart runs as written, against the simulator instead of real providers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.fixtures_manager import model_entry

ROOT = Path(__file__).resolve().parent.parent


def quickstart() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text().split("\n## ", 1)[0]
    assert "make demo" in head and "make test" in head


def test_the_quickstart_runs_as_written(tmp_path, make_simulator):
    from amm.sim import ModelProfile

    sim = make_simulator({"coder": ModelProfile(latency_ms=1), "reviewer": ModelProfile(latency_ms=1)})
    (tmp_path / "config").mkdir()
    models = [
        model_entry("coder", api_base=sim.api_base("openai"),
                    capabilities=["text-generation", "code-generation"]),
        model_entry("reviewer", provider="anthropic", api_base=sim.api_base("anthropic"),
                    capabilities=["text-generation", "analysis"]),
    ]
    (tmp_path / "config" / "model_registry.json").write_text(json.dumps({"models": models}))
    (tmp_path / "quickstart.py").write_text(quickstart())
    env = {**os.environ, "OPENAI_API_KEY": "sk-quickstart-0123456789abcdef",
           "ANTHROPIC_API_KEY": "sk-ant-quickstart-0123456789abcdef",
           "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "quickstart.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "def " in out.stdout or "merge" in out.stdout.lower()
    assert (tmp_path / "data" / "amm.db").exists()
