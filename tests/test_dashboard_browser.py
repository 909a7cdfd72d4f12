"""The dashboard in a real browser: `streamlit run` on loopback, Debian's Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")

pytestmark = [
    pytest.mark.browser,
    # Skip only on a developer machine without chromium; CI installs it and must run this.
    pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                       reason="chromium is not installed (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], deadline_s: float = 90) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not become healthy at {url}")


@pytest.fixture(params=["sqlite", "chdb"])
def dashboard_url(request, small_store, tmp_path):
    port = _free_port()
    env = os.environ | {"AMM_STORE": str(small_store.path)}
    if request.param == "chdb":
        # The store copied into embedded ClickHouse (the exporter's DDL) by `amm export`
        # in its own process: an embedded engine's directory is locked by its user.
        pytest.importorskip("chdb")
        url = f"chdb://{tmp_path / 'traces'}"
        subprocess.run([sys.executable, "-m", "amm", "export", "--store",
                        str(small_store.path), "--to", url], check=True, cwd=ROOT,
                       capture_output=True, timeout=300)
        env = os.environ | {"AMM_SOURCE": url}
    log = (tmp_path / "streamlit.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboards" / "app.py"),
         "--server.headless", "true", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_dashboard_renders_in_chromium(dashboard_url, tmp_path, small_store):
    from playwright.sync_api import sync_playwright

    shot = tmp_path / "dashboard.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(dashboard_url)
            page.get_by_text("Cache hit rate").wait_for(timeout=90_000)
            # Charts are drawn by vega-embed after the metrics: wait for one canvas/svg.
            page.locator(".vega-embed").first.wait_for(timeout=90_000)
            page.wait_for_timeout(1500)  # let the chart animation settle before the shot
            assert page.get_by_text(f"{small_store.requests:,}").first.is_visible()
            page.screenshot(path=str(shot), full_page=True)
            # The Models page: lines per model with the detected change points marked.
            page.get_by_role("tab", name="Models").click()
            page.get_by_text(f"{small_store.degraded_model}: p95_latency_ms").wait_for(
                timeout=60_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(tmp_path / "models.png"), full_page=True)
        finally:
            browser.close()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000
    assert (tmp_path / "models.png").stat().st_size > 30_000
    keep = os.environ.get("AMM_SCREENSHOT_DIR")
    if keep:  # lets a person look at what the browser showed
        for name in ("dashboard.png", "models.png"):
            shutil.copy(tmp_path / name, Path(keep) / name)
