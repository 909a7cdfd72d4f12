"""The README's quickstart runs exactly as printed: on a machine with no keys, in a
directory of its own, as a script and (with ``await main()``) in a notebook."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY",
        "OLLAMA_BASE_URL", "AMM_CONFIG", "AMM_DATA_DIR", "AMM_SIM_URL")
LAST_LINE = "asyncio.run(main())"


def quickstart_code(readme: Path = ROOT / "README.md") -> str:
    """The first ``python`` block of the README's Quickstart section, as printed."""
    section = readme.read_text().split("\n## Quickstart", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert found, "the Quickstart section has no python block"
    return found.group(1)


def keyless_env() -> dict[str, str]:
    """This environment without any provider key or amm setting: a fresh machine."""
    env = {k: v for k, v in os.environ.items() if k not in KEYS and not k.startswith("AMM_")}
    return {**env, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}


def check_quickstart_output(stdout: str, workdir: Path) -> None:
    """What a run of the quickstart leaves: two answers, its own store, nothing in data/."""
    assert "def " in stdout, stdout[-2000:]
    assert (workdir / "amm-quickstart" / "registry.yaml").exists()
    assert (workdir / "amm-quickstart" / "data" / "amm.db").exists()
    assert not (workdir / "data").exists(), "the quickstart wrote into the demo's data/"


def test_the_quickstart_is_the_printed_block_and_ends_in_asyncio_run():
    code = quickstart_code()
    assert "from amm.sim import" in code and "amm.configure(" in code
    last = [line for line in code.splitlines() if line.strip()][-1]
    assert last.startswith(LAST_LINE) and "await main()" in last


def test_the_quickstart_runs_as_written_with_no_keys(tmp_path):
    (tmp_path / "quickstart.py").write_text(quickstart_code())
    out = subprocess.run([sys.executable, "quickstart.py"], cwd=tmp_path, env=keyless_env(),
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    check_quickstart_output(out.stdout, tmp_path)


def test_the_quickstart_runs_in_a_notebook_with_top_level_await(tmp_path):
    import nbformat
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    code = quickstart_code().rstrip().rsplit("\n", 1)[0] + "\nawait main()\n"
    nb = new_notebook(cells=[new_code_cell(code)])
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(keyless_env())  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=180, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    outputs = nb.cells[0].get("outputs", [])
    assert not [o for o in outputs if o.get("output_type") == "error"], outputs
    check_quickstart_output("".join(o.get("text", "") for o in outputs), tmp_path)
    nbformat.validate(nb)
