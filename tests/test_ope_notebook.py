"""notebooks/off_policy.ipynb runs top to bottom and prints the what-if table."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "off_policy.ipynb"


def test_off_policy_notebook_runs_and_shows_the_estimates():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "logged (actual)" in text and "always:sim-claude" in text
    assert "DR coverage" in text and "False - the target picks models" in text
