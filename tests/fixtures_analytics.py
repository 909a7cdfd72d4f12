"""Fixtures of the analytics tests: synthetic stores with known planted answers."""

from __future__ import annotations

import pytest

from analytics.load import StoreData, load_store
from analytics.synthetic import SyntheticTruth, write_synthetic_store


@pytest.fixture(scope="session")
def synthetic_truth(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruth:
    """A week of traffic (8,400 requests): experiment effect +0.06, gemini-pro degrading."""
    return write_synthetic_store(tmp_path_factory.mktemp("analytics") / "amm.db", seed=1)


@pytest.fixture(scope="session")
def synthetic_data(synthetic_truth: SyntheticTruth) -> StoreData:
    """The synthetic store, loaded once."""
    return load_store(synthetic_truth.path)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruth:
    """A smaller store (4 days x 600 requests) for the dashboard and notebooks."""
    return write_synthetic_store(tmp_path_factory.mktemp("dash") / "amm.db", seed=3, days=4,
                                 requests_per_day=600)
