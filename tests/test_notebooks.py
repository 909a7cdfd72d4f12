"""The notebooks run top to bottom from a fresh kernel (the venv's Python)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # First cell: which interpreter the kernel runs (must be this venv's).
    nb.cells.insert(0, new_code_cell("import sys; print(sys.executable)"))
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))


def _images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []))


def test_notebooks_are_stored_without_outputs():
    for name in ("degradation.ipynb", "ab_test.ipynb"):
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), name


@pytest.mark.slow
def test_degradation_notebook_runs_and_finds_the_planted_change(small_store, monkeypatch):
    monkeypatch.setenv("AMM_STORE", str(small_store.path))
    nb = _execute("degradation.ipynb")
    text = _text(nb)
    assert text.splitlines()[0] == sys.executable
    assert f"{small_store.degraded_model}: p95_latency_ms" in text
    assert _images(nb) >= 2


@pytest.mark.slow
def test_degradation_notebook_reads_a_clickhouse_source(small_store, tmp_path, monkeypatch):
    pytest.importorskip("chdb")
    url = f"chdb://{tmp_path / 'traces'}"
    # `amm export` in its own process: the kernel must be the one to open the directory.
    subprocess.run([sys.executable, "-m", "amm", "export", "--store", str(small_store.path),
                    "--to", url], check=True, capture_output=True, timeout=300)
    monkeypatch.delenv("AMM_STORE", raising=False)
    monkeypatch.setenv("AMM_SOURCE", url)
    text = _text(_execute("degradation.ipynb"))
    assert f"{url}: {small_store.requests:,} requests" in text
    assert f"{small_store.degraded_model}: p95_latency_ms" in text


@pytest.mark.slow
def test_ab_notebook_runs_on_a_generated_store_when_none_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("AMM_STORE", str(tmp_path / "missing.db"))
    nb = _execute("ab_test.ipynb")
    text = _text(nb)
    assert "no store found; generated a synthetic store" in text
    assert "impl-gpt4-vs-claude: claude-3.5-sonnet better on quality" in text
    assert _images(nb) >= 2
