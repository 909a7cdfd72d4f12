"""Screenshot of one amm trace in Arize Phoenix's UI, for the README (docs/phoenix-trace.png).

Starts Phoenix from the venv of ``deploy/phoenix/install.sh`` on free ports, runs a
short ``amm demo`` that exports to it (Phoenix annotations and the content opt-in
on, so the Input/Output and Annotations views have something to show), picks a
trace that failed over (a failed ``chat`` attempt, then an evaluated one), opens
that evaluated chat span in headless Chromium, waits until the span tree and the
span's details have rendered, and saves the PNG. Phoenix is stopped afterwards.

    .venv/bin/python deploy/phoenix/screenshot.py [--out docs/phoenix-trace.png] [--keep]

Needs Chromium (Debian ``chromium``) and Playwright (the dev extra).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PHOENIX_VENV = Path(os.environ.get("AMM_PHOENIX_VENV",
                                   Path.home() / ".cache" / "amm-phoenix" / "venv"))
PROJECT = "amm-demo"
REQUESTS = 24
VIEWPORT = {"width": 1800, "height": 1050}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def start_phoenix(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    phoenix = PHOENIX_VENV / "bin" / "phoenix"
    if not phoenix.exists():
        sys.exit(f"Phoenix is not installed at {PHOENIX_VENV}: run deploy/phoenix/install.sh")
    port = free_port()
    env = {**os.environ, "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(port),
           "PHOENIX_GRPC_PORT": str(free_port()), "PHOENIX_WORKING_DIR": str(workdir),
           "PHOENIX_TELEMETRY_ENABLED": "false"}
    log = (workdir / "phoenix.log").open("wb")
    proc = subprocess.Popen([str(phoenix), "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=2).close()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                sys.exit(f"Phoenix did not start: {(workdir / 'phoenix.log').read_text()[-2000:]}")
            time.sleep(0.5)


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_demo(url: str, workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"OTEL_SERVICE_NAME": PROJECT, "OTEL_EXPORTER_OTLP_ENDPOINT": url,
            "OTEL_METRICS_EXPORTER": "none", "AMM_PHOENIX_ANNOTATIONS": url,
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}
    subprocess.run([sys.executable, "-m", "amm", "demo", "--requests", str(REQUESTS),
                    "--data-dir", str(workdir / "data")], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def spans(url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = get(f"{url}/v1/projects/{PROJECT}/spans?limit=1000"
                   + (f"&cursor={cursor}" if cursor else ""))
        out.extend(page["data"])
        cursor = page.get("next_cursor") or ""
        if not cursor:
            return out


def pick_span(url: str) -> dict[str, Any]:
    """The evaluated chat span of a trace that failed over first; else any evaluated one."""
    deadline = time.monotonic() + 60
    while True:
        by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for span in spans(url):
            if span["name"].startswith("chat "):
                by_trace[span["context"]["trace_id"]].append(span)
        evaluated = [s for chats in by_trace.values() for s in chats if s["events"]]
        failed_over = [s for s in evaluated if any(
            other["status_code"] == "ERROR" for other in by_trace[s["context"]["trace_id"]])]
        if failed_over or (evaluated and time.monotonic() > deadline):
            return (failed_over or evaluated)[0]
        if time.monotonic() > deadline:
            sys.exit("no evaluated chat span reached Phoenix")
        time.sleep(1.0)


def wait_for_annotations(url: str, span_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = get(f"{url}/v1/projects/{PROJECT}/span_annotations?span_ids={span_id}")["data"]
        if len(found) >= 4:
            return
        time.sleep(1.0)
    sys.exit(f"the annotations of span {span_id} did not reach Phoenix")


def screenshot(url: str, span: dict[str, Any], out: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu",
                                          "--disable-dev-shm-usage"])
        page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
        page.goto(f"{url}/redirects/spans/{span['context']['span_id']}")
        page.wait_for_load_state("networkidle")
        # The trace's span tree (its agent span) and the selected chat span's details.
        page.get_by_text(span["name"], exact=True).first.wait_for(timeout=60_000)
        page.get_by_text("invoke_agent", exact=False).first.wait_for(timeout=60_000)
        # Open the Annotations card as a table: amm's four scores, kind CODE, the overall
        # one with its pass/fail label and explanation.
        page.get_by_role("heading", name=re.compile(r"^Annotations")).first.click()
        page.get_by_text("Table", exact=True).first.click()
        page.get_by_text("explanation", exact=True).first.wait_for(timeout=30_000)
        page.wait_for_load_state("networkidle")
        time.sleep(2.0)  # let the last panels settle (fonts, charts)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "phoenix-trace.png")
    parser.add_argument("--keep", action="store_true",
                        help="leave Phoenix running (its URL is printed) to look around")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="amm-phoenix-shot-"))
    proc, url = start_phoenix(workdir)
    try:
        run_demo(url, workdir)
        span = pick_span(url)
        wait_for_annotations(url, span["context"]["span_id"])
        screenshot(url, span, args.out)
        print(f"{args.out}: trace {span['context']['trace_id']}, span {span['name']} "
              f"({url}/redirects/spans/{span['context']['span_id']})")
        if args.keep:
            print(f"Phoenix keeps running on {url}; Ctrl-C stops it")
            signal.pause()
    finally:
        stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
