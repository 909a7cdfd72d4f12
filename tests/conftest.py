"""Shared pytest setup: litellm offline, no real keys from the developer's shell."""

from __future__ import annotations

import os

# litellm must run offline and quietly in every test (see shared litellm notes).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")
os.environ.setdefault("OTEL_SDK_DISABLED", "false")

# Fixture modules, one per area; each helper owns its own module.
pytest_plugins = [
    "amm.sim.pytest_plugin",
    "tests.fixtures_telemetry",
    "tests.fixtures_manager",
    "tests.fixtures_analytics",
]
