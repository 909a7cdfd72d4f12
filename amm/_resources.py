"""What the installed distribution carries, what it leaves to extras, and whether
another distribution has written over it.

- **Package data** (the demo registry, the dashboard app) is found through
  :mod:`importlib.resources`, so it is the same files in the repository (editable
  install) and in a wheel installed anywhere, whatever the working directory.
- **Extras**: the core install routes calls; ``amm-sdk[analytics]`` adds pandas and
  scipy (``amm report``, the demo's summary), ``amm-sdk[dashboard]`` adds streamlit
  and altair. A command whose extra is missing raises :class:`MissingExtraError`
  before doing any work, naming the extra to install.
- **Shared top-level names**: the wheel installs the import packages ``amm``,
  ``telemetry``, ``analytics`` and ``dashboards``. Other distributions may install
  the same generic names (Segment's ``analytics-python`` installs ``analytics``),
  and pip lets the last install overwrite the first without a word.
  :func:`installation_problems` compares each installed file with the hash in the
  wheel's RECORD and names the other distributions that claim the same path.

>>> with demo_registry() as path:
...     path.name
'demo_registry.json'
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DISTRIBUTION",
    "EXTRAS",
    "TOP_LEVEL_PACKAGES",
    "InstallationProblem",
    "MissingExtraError",
    "dashboard_app",
    "demo_registry",
    "installation_problems",
    "require_extra",
]

DISTRIBUTION = "amm-sdk"
"""The name on PyPI (``amm`` belongs to another project): ``pip install amm-sdk``."""

TOP_LEVEL_PACKAGES = ("amm", "telemetry", "analytics", "dashboards")
"""The import names the wheel installs (pyproject's ``[tool.hatch.build.targets.wheel]``)."""

EXTRAS: dict[str, tuple[str, ...]] = {
    "analytics": ("pandas", "numpy", "scipy"),
    "dashboard": ("streamlit", "altair", "pandas", "numpy", "scipy"),
}
"""Each extra -> the import names it provides (pyproject's optional dependencies)."""


class MissingExtraError(ImportError):
    """A command needs an extra that is not installed.

    >>> str(MissingExtraError("amm report", "analytics", ["pandas"]))
    "amm report needs the 'analytics' extra (missing: pandas): pip install 'amm-sdk[analytics]'"
    """

    def __init__(self, command: str, extra: str, missing: list[str]) -> None:
        self.command = command
        self.extra = extra
        self.missing = tuple(missing)
        super().__init__(f"{command} needs the {extra!r} extra (missing: {', '.join(missing)}): "
                         f"pip install '{DISTRIBUTION}[{extra}]'")


def require_extra(extra: str, command: str) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``extra`` is importable.

    Looks modules up without importing them, so the check costs milliseconds.
    """
    missing = [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(command, extra, missing)


@contextmanager
def _resource(package: str, *parts: str) -> Iterator[Path]:
    resource = importlib.resources.files(package)
    for part in parts:
        resource = resource / part
    # A real path for the wheel installed on disk; a temporary copy for a zipped install.
    with importlib.resources.as_file(resource) as path:
        if not path.exists():
            raise FileNotFoundError(f"{'/'.join((package, *parts))}: not in the installed "
                                    f"package; reinstall {DISTRIBUTION}")
        yield path


def demo_registry() -> AbstractContextManager[Path]:
    """The registry ``amm demo`` runs (five simulated models, one experiment), as a path."""
    return _resource("amm", "_data", "demo_registry.json")


def dashboard_app() -> AbstractContextManager[Path]:
    """The Streamlit app ``amm dashboard`` serves, as a path."""
    return _resource("dashboards", "app.py")


@dataclass(frozen=True, slots=True)
class InstallationProblem:
    """One installed file of ours that is not what our wheel wrote.

    ``problem`` is ``"overwritten"`` (its hash differs from our RECORD), ``"missing"``
    (deleted, e.g. by uninstalling another distribution that listed it too) or
    ``"shared"`` (intact, but another distribution lists it and will delete it when
    uninstalled); ``others`` names those distributions.
    """

    path: str
    problem: str
    others: tuple[str, ...]

    def __str__(self) -> str:
        by = f" (also installed by {', '.join(self.others)})" if self.others else ""
        return f"{self.path}: {self.problem}{by}"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_hash(path: Path, mode: str) -> str:
    digest = hashlib.new(mode, path.read_bytes()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def installation_problems(distribution: str = DISTRIBUTION) -> list[InstallationProblem]:
    """The files of ``distribution`` that another distribution overwrote, deleted or shares.

    Empty for an editable install (its RECORD lists no package files) and when the
    distribution is not installed at all (running from a source checkout).
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return []
    ours = {str(f): f for f in dist.files or () if f.parts[0] in TOP_LEVEL_PACKAGES and f.hash}
    if not ours:
        return []
    owners: dict[str, list[str]] = defaultdict(list)
    for other in importlib.metadata.distributions():
        name = other.metadata["Name"] or "?"
        if _canonical(name) == _canonical(distribution):
            continue
        for f in other.files or ():
            if str(f) in ours:
                owners[str(f)].append(name)
    problems = []
    for key, f in sorted(ours.items()):
        path = Path(str(f.locate()))
        assert f.hash is not None  # filtered above
        if not path.exists():
            problem = "missing"
        elif _record_hash(path, f.hash.mode) != f.hash.value:
            problem = "overwritten"
        elif key in owners:
            problem = "shared"
        else:
            continue
        problems.append(InstallationProblem(key, problem, tuple(sorted(set(owners[key])))))
    return problems
