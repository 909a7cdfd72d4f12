"""pytest fixtures for a running provider simulator (listed in ``tests/conftest.py``).

- ``simulator``: a started :class:`Simulator` with one instant, healthy, good model
  per protocol (:data:`TEST_PROFILES`), stopped at teardown.
- ``make_simulator``: a factory ``make_simulator(profiles, seed=0, **options)`` that
  returns started simulators and stops them all at teardown.

A server starts in milliseconds (aiohttp's import, ~0.3 s, is paid once per process).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from amm.sim.profile import ModelProfile
from amm.sim.server import Simulator

__all__ = ["TEST_PROFILES", "make_simulator", "simulator"]

TEST_PROFILES: dict[str, ModelProfile] = {
    f"sim-{protocol}": ModelProfile(latency_ms=0, latency_jitter_ms=0, quality=1.0,
                                    protocol=protocol)
    for protocol in ("openai", "anthropic", "ollama", "google")
}
"""``sim-openai``, ``sim-anthropic``, ``sim-ollama``, ``sim-google``: no delay, no
faults, always good answers; each names the protocol a test should use for it."""


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., Simulator]]:
    """Factory of started simulators, all stopped at teardown."""
    started: list[Simulator] = []

    def make(profiles: Mapping[str, ModelProfile] | None = None, *, seed: int = 0,
             **options: Any) -> Simulator:
        sim = Simulator(TEST_PROFILES if profiles is None else profiles, seed=seed, **options)
        started.append(sim)
        sim.start()
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def simulator(make_simulator: Callable[..., Simulator]) -> Simulator:
    """A started simulator serving :data:`TEST_PROFILES`."""
    return make_simulator()
