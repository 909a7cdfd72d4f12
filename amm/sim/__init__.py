"""A local provider simulator: OpenAI, Anthropic, Ollama and Gemini wire protocols.

Tests and the demo point litellm at it to exercise the real HTTP path with
healthy, flaky, rate-limited, degrading and broken models, deterministically
under a seed. Models answer tool calls, JSON output and streams in each provider's
own shapes; ``Simulator.stream_gate`` holds a model's streams after their first
chunk so a test can check what arrived first; ``Simulator.billed()`` sums the
tokens billed per model and ``Simulator.bills()`` lists them answer by answer
(:class:`amm.sim.behaviour.Bill`)::

    from amm.sim import ModelProfile, Simulator

    with Simulator({"sim-gpt": ModelProfile(error_rate=0.1)}, seed=7) as sim:
        litellm.completion(model="openai/sim-gpt", api_base=sim.api_base("openai"),
                           api_key="any", messages=[...], max_tokens=64)

Importing this package does not import aiohttp; starting a server does.
"""

from __future__ import annotations

from amm.sim.profile import PROTOCOLS, ModelProfile, demo_profiles
from amm.sim.server import Simulator
from amm.sim.text import count_tokens

__all__ = ["PROTOCOLS", "ModelProfile", "Simulator", "count_tokens", "demo_profiles"]
