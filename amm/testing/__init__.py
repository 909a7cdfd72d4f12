"""Test tools that ship with amm: run the real request path on loopback, no keys needed.

- :class:`Simulator` with :class:`ModelProfile` (from :mod:`amm.sim`): a local provider
  speaking the OpenAI, Anthropic, Ollama and Gemini wire protocols, with healthy,
  flaky, rate-limited, slow and degrading models, deterministic under a seed;
  :func:`demo_profiles` are the demo's models, :func:`count_tokens` the simulator's
  token count. The pytest fixtures (``make_simulator``...) are in
  :mod:`amm.sim.pytest_plugin`.
- :class:`OTLPReceiver` (from :mod:`telemetry.receiver`): a local OTLP endpoint (gRPC
  and HTTP) that keeps what it receives as :class:`ReceivedSpan` and
  :class:`ReceivedMetric`, to check what a real exporter sent.
- :mod:`amm.testing.redis`: a throw-away ``redis-server`` on loopback, for the fleet
  state's tests and benchmarks.

These are test tools, not the SDK: the runtime (``amm`` and its components) imports
none of them. This package only re-exports them, each on first use, so importing it
starts nothing and loads neither aiohttp nor gRPC::

    from amm.testing import ModelProfile, Simulator

    with Simulator({"sim-gpt": ModelProfile(error_rate=0.1)}, seed=7) as sim:
        base = sim.api_base("openai")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amm.sim import ModelProfile, Simulator, count_tokens, demo_profiles
    from telemetry.receiver import OTLPReceiver, ReceivedMetric, ReceivedSpan

__all__ = [
    "ModelProfile",
    "OTLPReceiver",
    "ReceivedMetric",
    "ReceivedSpan",
    "Simulator",
    "count_tokens",
    "demo_profiles",
]

_WHERE = {
    "ModelProfile": "amm.sim",
    "Simulator": "amm.sim",
    "count_tokens": "amm.sim",
    "demo_profiles": "amm.sim",
    "OTLPReceiver": "telemetry.receiver",
    "ReceivedMetric": "telemetry.receiver",
    "ReceivedSpan": "telemetry.receiver",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'amm.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
