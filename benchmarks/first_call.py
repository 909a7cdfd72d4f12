"""First-call latency, cold and warm: what the first request of a new process waits for.

``python -m benchmarks.first_call [--runs N]``. Each run is a fresh Python process
(nothing imported yet) that builds a manager on the zero-delay mock and times its
first ``complete()``:

- **cold**: ``warm=False``; the first call imports litellm itself (5-8 s here);
- **warm**: ``ModelManager.start()`` imports litellm in the background (the default)
  and the service waits for ``manager.warmed()`` before it reports ready, then the
  first call.

Prints the median of each and the runs, as JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.mock_server import MockServer

_CHILD = r"""
import asyncio, json, sys, time
from pathlib import Path
from amm.api_key_manager import APIKeyManager
from amm.manager import ModelManager
from amm.models import ModelRequest

api_base, data_dir, warm = sys.argv[1], sys.argv[2], sys.argv[3] == "warm"
config = Path(data_dir) / "registry.json"
config.write_text(json.dumps({"models": [{
    "id": "bench-model", "provider": "openai", "name": "bench", "api_base": api_base,
    "litellm_model": "openai/bench-model", "capabilities": ["text-generation"],
    "cost_per_1k_input_tokens": 0.001, "cost_per_1k_output_tokens": 0.002,
    "rate_limits": {"requests_per_minute": 100000, "tokens_per_minute": 100000000},
    "context_window": 32000, "average_response_time_ms": 10}]}))
keys = APIKeyManager()
keys.add_key("openai", "sk-bench-not-a-real-key")

async def main():
    manager = ModelManager.from_config(config, data_dir=data_dir, key_manager=keys,
                                       telemetry=False, start_health_checks=False, warm=warm)
    async with manager:
        if warm:
            await manager.warmed()  # a service's readiness check
        started = time.perf_counter()
        await manager.complete(ModelRequest(prompt="first", task_id="t", agent_type="a",
                                            max_tokens=16))
        print(json.dumps({"first_call_s": time.perf_counter() - started}))

asyncio.run(main())
"""


def one(api_base: str, mode: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}
        out = subprocess.run([sys.executable, "-c", _CHILD, api_base, tmp, mode], env=env,
                             capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent.parent)
        return float(json.loads(out.stdout.strip().splitlines()[-1])["first_call_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    with MockServer() as server:
        runs = {mode: [one(server.api_base, mode) for _ in range(args.runs)]
                for mode in ("cold", "warm")}
    result = {mode: {"median_s": statistics.median(v), "runs_s": v} for mode, v in runs.items()}
    for mode, r in result.items():
        print(f"first call {mode:<5} median {r['median_s'] * 1000:8.1f} ms  "
              f"runs {', '.join(f'{x * 1000:.0f}' for x in r['runs_s'])} ms")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
