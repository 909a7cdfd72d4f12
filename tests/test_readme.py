"""The README says how to get and install amm; its quickstart is run by
``tests/test_quickstart.py`` (as a script, in a notebook) and ``tests/test_packaging.py``
(from the built wheel)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from amm._resources import DISTRIBUTION, EXTRAS, TOP_LEVEL_PACKAGES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_readme_opens_with_the_two_commands():
    head = README.split("\n## ", 1)[0]
    assert "make demo" in head and "make test" in head


def test_install_names_the_distribution_and_each_extra():
    install = section("Install")
    assert PYPROJECT["project"]["name"] == DISTRIBUTION
    assert f"pip install {DISTRIBUTION}" in install
    for extra in EXTRAS:
        assert f"'{DISTRIBUTION}[{extra}]'" in install


def test_install_warns_of_every_top_level_name_the_wheel_installs():
    install = section("Install")
    wheel = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert sorted(wheel) == sorted(TOP_LEVEL_PACKAGES)
    for name in TOP_LEVEL_PACKAGES:
        assert f"`{name}`" in install
    assert "analytics-python" in install and "amm check" in install


def test_the_core_leaves_analytics_and_the_dashboard_to_extras():
    core = " ".join(PYPROJECT["project"]["dependencies"])
    extras = {name: " ".join(deps) for name, deps in
              PYPROJECT["project"]["optional-dependencies"].items()}
    for heavy in ("pandas", "numpy", "scipy", "streamlit", "altair"):
        assert heavy not in core
    assert "jsonschema" in core and "litellm" in core
    for extra, modules in EXTRAS.items():  # what each command checks is what the extra installs
        for module in modules:
            assert module in extras[extra] or (
                f"{DISTRIBUTION}[analytics]" in extras[extra] and module in extras["analytics"])
    dev = extras["dev"]  # make test installs every extra
    assert all(f"{name}" in dev for name in ("analytics", "dashboard", "clickhouse", "redis"))
    assert "chdb" not in core and "redis" not in core and "clickhouse" not in core
