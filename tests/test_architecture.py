"""The dependency rules of the layout (docs/architecture.md), checked on the source.

Every import statement of every module is read with ``ast`` (top level and inside
functions alike, since a lazy import is still a dependency):

- ``telemetry`` imports nothing of ``amm``, ``analytics`` or ``dashboards``;
- ``analytics`` imports nothing of ``amm`` or ``dashboards`` (it reads the store's
  schema from ``telemetry`` only);
- the ``amm`` runtime (everything but the application layer: ``cli``, ``demo``,
  ``report``, and the test tool ``sim``) imports no pandas, streamlit or ``analytics``;
- ``import amm`` itself loads no litellm, pandas or streamlit (checked in a subprocess).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPLICATION = {"cli", "demo", "report", "__main__", "sim"}
HEAVY = {"pandas", "streamlit", "altair", "scipy", "analytics", "dashboards"}


def imports(package: str) -> dict[str, set[str]]:
    """module path -> the top-level names it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_telemetry_imports_no_amm_analytics_or_dashboards():
    bad = {m: n & {"amm", "analytics", "dashboards"} for m, n in imports("telemetry").items()}
    assert not {m: n for m, n in bad.items() if n}


def test_analytics_imports_no_amm_or_dashboards():
    bad = {m: n & {"amm", "dashboards"} for m, n in imports("analytics").items()}
    assert not {m: n for m, n in bad.items() if n}


def test_the_amm_runtime_imports_no_pandas_streamlit_or_analytics():
    bad = {}
    for module, names in imports("amm").items():
        parts = Path(module).with_suffix("").parts  # ("amm", "sim", "server")
        if len(parts) > 1 and parts[1] in APPLICATION:
            continue
        if names & HEAVY:
            bad[module] = names & HEAVY
    assert not bad


def test_import_amm_loads_no_heavy_library():
    code = ("import sys, amm; from amm import ModelRequest, managed_model; "
            "print(sorted(m for m in ('litellm', 'pandas', 'streamlit', 'analytics') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_the_reader_sees_lazy_imports_too():
    # The application layer does import analytics, inside a function: the walker sees it.
    assert "analytics" in imports("amm")["amm/cli.py"]
    assert "litellm" in imports("amm")["amm/_litellm.py"]
