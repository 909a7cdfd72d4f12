"""Fixtures that build a real ModelManager over the provider simulator.

Every model of a test registry points at a simulator started for the test; the
manager writes its store to the test's tmp_path. Nothing of amm is mocked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from telemetry.events import Event

PROTOCOL_PREFIX = {"openai": "openai", "anthropic": "anthropic", "google": "gemini",
                   "ollama": "ollama_chat"}


def model_entry(model_id: str, *, provider: str = "openai", cost_in: float = 0.001,
                cost_out: float = 0.002, capabilities: list[str] | None = None,
                rpm: int = 1000, tpm: int = 1_000_000, context: int = 32000,
                latency_ms: float = 500, api_base: str = "") -> dict[str, Any]:
    """One registry entry in the config file's shape."""
    return {
        "id": model_id, "provider": provider, "name": model_id,
        "litellm_model": f"{PROTOCOL_PREFIX[provider]}/{model_id}", "api_base": api_base,
        "capabilities": capabilities or ["text-generation", "code-generation", "analysis"],
        "cost_per_1k_input_tokens": cost_in, "cost_per_1k_output_tokens": cost_out,
        "rate_limits": {"requests_per_minute": rpm, "tokens_per_minute": tpm},
        "context_window": context, "average_response_time_ms": latency_ms, "enabled": True,
    }


class EventLog:
    """A listener that keeps every event the recorder fans out (for assertions)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def record(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def build_manager(tmp_path: Path,
                  make_simulator: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """``build_manager(profiles, models, experiments=(), **from_config)`` ->
    (manager, simulator, event_log). Models are ``model_entry`` dicts; their
    api_base is filled with the simulator's for their provider."""
    from amm.api_key_manager import APIKeyManager
    from amm.manager import ModelManager

    def build(profiles: dict[str, Any], models: list[dict[str, Any]],
              experiments: list[dict[str, Any]] | tuple[()] = (), **kwargs: Any) -> Any:
        sim = make_simulator(profiles)
        for m in models:
            m["api_base"] = sim.api_base(m["provider"])
        config = tmp_path / "registry.json"
        config.write_text(json.dumps({"models": models, "experiments": list(experiments)}))
        keys = APIKeyManager()
        for provider in ("openai", "anthropic", "google"):
            keys.add_key(provider, f"sk-test-{provider}-0123456789abcdef0123")
        kwargs.setdefault("telemetry", False)
        kwargs.setdefault("start_health_checks", False)
        kwargs.setdefault("base_backoff_seconds", 0.001)
        kwargs.setdefault("timeout_s", 5.0)
        manager = ModelManager.from_config(config, data_dir=tmp_path / "data", key_manager=keys,
                                           **kwargs)
        log = EventLog()
        manager.recorder.add_listener(log)
        return manager, sim, log

    yield build
