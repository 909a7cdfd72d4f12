"""The built wheel, installed the way a user installs it, works away from the repository.

One wheel is built per session and installed into fresh virtual environments under
tmp: the core alone, the core with ``[analytics,dashboard]``, and one that another
distribution writes over. Versions are pinned to ``uv.lock`` (``uv export``), so uv
mostly links from its package cache; with the cache warm (after `make env`) the module
takes about a minute, most of it the demo and Streamlit starting. Every command runs
from an unrelated directory with an environment that does not point at the repository.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable
from email.parser import Parser
from pathlib import Path

import pytest

from amm._resources import DISTRIBUTION, TOP_LEVEL_PACKAGES
from tests.fixtures_manager import model_entry
from tests.test_quickstart import check_quickstart_output, keyless_env, quickstart_code

pytestmark = [pytest.mark.packaging, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("pandas", "scipy", "streamlit", "altair", "numpy")


def _uv() -> str:
    uv = ROOT / ".tools" / "bin" / "uv"  # where `make` installs it
    found = str(uv) if uv.exists() else shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed: run `make test`, which installs it into .tools/")
    return found


def _clean_env(**extra: str) -> dict[str, str]:
    """A user's environment: nothing that points at the repository or its venv."""
    env = {k: v for k, v in keyless_env().items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    return {**env, "UV_PYTHON_DOWNLOADS": "never", **extra}


def _run(cmd: list[str], cwd: Path, timeout: float = 300,
         **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=_clean_env(**env), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("packaging")


@pytest.fixture(scope="module")
def wheel(build_dir: Path) -> Path:
    out = _run([_uv(), "build", "--wheel", "--out-dir", str(build_dir / "dist"), str(ROOT)],
               cwd=build_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    (found,) = (build_dir / "dist").glob("*.whl")
    return found


@pytest.fixture(scope="module")
def constraints(build_dir: Path) -> Path:
    """The lock's versions, so the installs test what CI tests and hit uv's cache."""
    path = build_dir / "constraints.txt"
    out = _run([_uv(), "export", "--frozen", "--no-hashes", "--all-extras", "--no-emit-project",
                "--project", str(ROOT), "-o", str(path)], cwd=build_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    return path


@pytest.fixture(scope="module")
def make_venv(build_dir: Path, constraints: Path) -> Callable[..., Path]:
    def make(name: str, *requirements: str, no_deps: bool = False) -> Path:
        venv = build_dir / name
        out = _run([_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)],
                   cwd=build_dir)
        assert out.returncode == 0, out.stderr
        cmd = [_uv(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
               "-c", str(constraints), *(["--no-deps"] if no_deps else []), *requirements]
        out = _run(cmd, cwd=build_dir)
        assert out.returncode == 0, out.stderr[-3000:]
        return venv

    return make


@pytest.fixture(scope="module")
def core(make_venv: Callable[..., Path], wheel: Path) -> Path:
    return make_venv("core", str(wheel))


@pytest.fixture(scope="module")
def full(make_venv: Callable[..., Path], wheel: Path) -> Path:
    return make_venv("full", f"{DISTRIBUTION}[analytics,dashboard] @ {wheel.as_uri()}")


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """An unrelated working directory."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


def _one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_the_wheel_carries_the_package_data_and_owns_only_the_documented_names(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = Parser().parsestr(zf.read(next(n for n in names
                                              if n.endswith(".dist-info/METADATA"))).decode())
    assert {"amm/_data/demo_registry.json", "dashboards/app.py", "dashboards/charts.py",
            "analytics/report.py", "telemetry/setup.py", "amm/cli.py"} <= set(names)
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == set(TOP_LEVEL_PACKAGES)
    assert meta["Name"] == DISTRIBUTION
    core = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert not [r for r in core if r.split()[0].split(">")[0] in HEAVY], core
    assert any(r.startswith("jsonschema") for r in core)
    assert set(meta.get_all("Provides-Extra")) >= {"analytics", "dashboard"}


def test_core_install_imports_amm_from_site_packages_without_pandas_or_streamlit(core, elsewhere):
    probe = ("import importlib.util, sys, amm, amm.manager, amm.decorator, amm.sim\n"
             "print(amm.__file__)\n"
             f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
             f"print([m for m in {HEAVY!r} if importlib.util.find_spec(m)])\n")
    out = _run([str(core / "bin" / "python"), "-c", probe], cwd=elsewhere)
    assert out.returncode == 0, out.stderr[-3000:]
    where, imported, installed = out.stdout.splitlines()
    assert where.startswith(str(core)) and "site-packages" in where
    assert imported == "[]" and installed == "[]"


def test_core_install_routes_the_quickstarts_calls_through_the_simulator(core, elsewhere):
    (elsewhere / "quickstart.py").write_text(quickstart_code())
    out = _run([str(core / "bin" / "python"), "quickstart.py"], cwd=elsewhere, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    check_quickstart_output(out.stdout, elsewhere)


@pytest.mark.parametrize(("command", "extra"), [("demo", "analytics"), ("report", "analytics"),
                                                ("dashboard", "dashboard")])
def test_core_install_commands_name_the_extra_they_need(core, elsewhere, command, extra):
    out = _run([str(core / "bin" / "amm"), command], cwd=elsewhere, timeout=60)
    assert out.returncode == 3
    assert f"pip install '{DISTRIBUTION}[{extra}]'" in _one_line_error(out)


def test_core_install_models_without_a_registry_says_so_in_one_line(core, elsewhere):
    out = _run([str(core / "bin" / "amm"), "models"], cwd=elsewhere, timeout=60)
    assert out.returncode == 2
    assert "--config" in _one_line_error(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_full_install_runs_demo_report_and_a_headless_dashboard(full, elsewhere):
    amm = str(full / "bin" / "amm")
    demo = _run([amm, "demo", "--requests", "60", "--data-dir", "demo-data"], cwd=elsewhere)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    store = elsewhere / "demo-data" / "amm.db"
    assert store.exists() and "failovers" in demo.stdout

    report = _run([amm, "report", "--store", str(store)], cwd=elsewhere, timeout=120)
    assert report.returncode == 0, report.stderr[-3000:]
    assert report.stdout.strip()

    port = _free_port()
    proc = subprocess.Popen([amm, "dashboard", "--headless", "--store", str(store),
                             "--port", str(port)], cwd=elsewhere, env=_clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert proc.poll() is None, "the dashboard exited"
                assert time.monotonic() < deadline, "the dashboard never answered"
                time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert not _port_open(port), "Streamlit outlived amm dashboard"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None
    assert f"http://127.0.0.1:{port}" in proc.stdout.read()


def _fake_wheel(directory: Path, name: str, files: dict[str, str]) -> Path:
    """A minimal wheel of another distribution that installs ``files``."""
    dist_info = f"{name}-1.0.dist-info"
    contents = {**files,
                f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
                f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                      "Tag: py3-none-any\n"}
    record = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    wheel = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in contents.items():
            zf.writestr(path, text)
        zf.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel


def test_another_distribution_writing_over_analytics_is_reported_by_amm_check(
        make_venv, wheel, build_dir, elsewhere):
    venv = make_venv("collision", str(wheel))
    other = _fake_wheel(build_dir, "segment_like", {"analytics/__init__.py": "write_key = None\n"})
    python = str(venv / "bin" / "python")
    registry = elsewhere / "registry.json"
    registry.write_text(json.dumps({"models": [model_entry("local", provider="ollama",
                                                                   api_base="http://127.0.0.1:9")]}))
    check = [str(venv / "bin" / "amm"), "check", "--no-health", "--config", str(registry)]

    clean = _run(check, cwd=elsewhere, timeout=120)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "install:" not in clean.stdout

    out = _run([_uv(), "pip", "install", "--quiet", "--python", python, "--no-deps", str(other)],
               cwd=build_dir)
    assert out.returncode == 0, out.stderr
    overwritten = _run(check, cwd=elsewhere, timeout=120)
    assert overwritten.returncode == 3
    assert ("install: analytics/__init__.py: overwritten (also installed by segment_like)"
            in overwritten.stdout), overwritten.stdout

    # Uninstalling the other distribution deletes a file we installed: reported too.
    out = _run([_uv(), "pip", "uninstall", "--quiet", "--python", python, "segment_like"],
               cwd=build_dir)
    assert out.returncode == 0, out.stderr
    missing = _run(check, cwd=elsewhere, timeout=120)
    assert missing.returncode == 3
    assert "install: analytics/__init__.py: missing" in missing.stdout, missing.stdout
