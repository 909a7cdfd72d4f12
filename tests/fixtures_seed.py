"""The seed document (the API reference amm implements), for the tests that read it.

It lives beside the repository (``../shared/seed/``, or ``AMM_SEED_DOC``), not in it
(``docs/seed.md`` says what it is). Without it those tests are skipped locally and
fail under ``CI=true``, where a silent skip would hide that they never ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["SEED", "require_seed"]

REPO = Path(__file__).resolve().parent.parent
SEED = Path(os.environ.get("AMM_SEED_DOC",
                           REPO.parent / "shared" / "seed" / "api-model-management-api.md"))


def require_seed() -> Path:
    """The seed document's path; skips the test without it (fails it under ``CI=true``)."""
    if not SEED.is_file():
        message = f"seed document not found at {SEED} (set AMM_SEED_DOC to its path)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return SEED
