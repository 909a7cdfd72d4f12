"""amm: routes each LLM agent call to the best available model, and shows why.

Every public name of the seed API (the reference amm implements: ``docs/seed.md``) is
importable from here. Names are resolved on first use (PEP 562), so ``import amm`` stays
cheap: litellm, pandas and streamlit are imported only by the code paths that need them.

>>> from amm import managed_model, ModelRequest
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # models
    **{name: "amm.models" for name in (
        "BudgetStatus", "CachedResponse", "ErrorResponse", "Experiment", "FailoverReason",
        "HealthStatus", "ModelAvailability", "ModelMetadata", "ModelRequest", "ModelResponse",
        "ModelSelection", "PerformanceDegradation", "PerformanceMetrics", "Priority",
        "ProviderAdapter", "QualityScore", "RateLimitStatus", "RateLimits",
        "SelectionConstraints", "TokenUsage", "ToolCall",
    )},
    # errors
    **{name: "amm.errors" for name in (
        "APIModelError", "AuthenticationError", "BudgetExceededError", "CacheError",
        "ConfigurationError", "ContextWindowExceededError", "FailoverError",
        "InvalidRequestError", "ModelNotFoundError", "ModelUnavailableError",
        "PerformanceMonitorError", "ProviderError", "ProviderTimeoutError",
        "QualityThresholdError", "QuotaExceededError", "RateLimitError",
        "StreamInterruptedError", "InvalidToolCallError", "CostTrackingError",
    )},
    # components
    "ModelRegistry": "amm.registry",
    "ModelSelector": "amm.selector",
    "HealthChecker": "amm.health_checker",
    "RateLimiter": "amm.rate_limiter",
    "FailoverManager": "amm.failover_manager",
    "APIClientManager": "amm.api_client",
    "APIKeyManager": "amm.api_key_manager",
    "ResponseEvaluator": "amm.evaluator",
    "LLMJudgeScorer": "amm.judge",
    "CacheManager": "amm.cache_manager",
    "CostTracker": "amm.cost_tracker",
    "PerformanceMonitor": "amm.performance_monitor",
    "APIModelAssignment": "amm.model_optimizer_integration",
    "integrate_with_model_optimizer": "amm.model_optimizer_integration",
    "select_model_with_optimizer": "amm.model_optimizer_integration",
    "report_performance_to_optimizer": "amm.model_optimizer_integration",
    "coordinate_failover": "amm.model_optimizer_integration",
    # composition root and decorator
    "ModelManager": "amm.manager",
    "BudgetPolicy": "amm.manager",
    "configure": "amm.decorator",
    "get_default_manager": "amm.decorator",
    "managed_model": "amm.decorator",
    "LLM": "amm.decorator",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'amm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from amm.api_client import APIClientManager
    from amm.api_key_manager import APIKeyManager
    from amm.cache_manager import CacheManager
    from amm.cost_tracker import CostTracker
    from amm.decorator import LLM, configure, get_default_manager, managed_model
    from amm.errors import *
    from amm.evaluator import ResponseEvaluator
    from amm.failover_manager import FailoverManager
    from amm.health_checker import HealthChecker
    from amm.judge import LLMJudgeScorer
    from amm.manager import BudgetPolicy, ModelManager
    from amm.model_optimizer_integration import (
        APIModelAssignment,
        coordinate_failover,
        integrate_with_model_optimizer,
        report_performance_to_optimizer,
        select_model_with_optimizer,
    )
    from amm.models import *
    from amm.performance_monitor import PerformanceMonitor
    from amm.rate_limiter import RateLimiter
    from amm.registry import ModelRegistry
    from amm.selector import ModelSelector
