"""The public surface: every name of the seed API reference exists under ``amm``.

The seed's "Data Models" section is parsed for each dataclass and its fields, and its
"Public Interfaces" section for each method; both are checked against ``amm``. The
names themselves are also pinned here, so the test runs without the document too.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import amm
import amm.errors
from tests.fixtures_seed import require_seed

ROOT = Path(__file__).resolve().parent.parent

DATA_MODELS = {
    "ModelMetadata": ["id", "provider", "name", "capabilities", "cost_per_1k_input_tokens",
                      "cost_per_1k_output_tokens", "rate_limits", "context_window",
                      "average_response_time_ms", "enabled"],
    "ModelRequest": ["prompt", "parameters", "task_id", "agent_type", "max_tokens", "temperature"],
    "ModelResponse": ["content", "model_id", "token_usage", "latency_ms", "cost", "metadata"],
    "ModelSelection": ["model_id", "model_metadata", "suitability_score", "alternatives",
                       "selection_reason"],
    "SelectionConstraints": ["max_cost_per_request", "required_capabilities",
                             "excluded_providers", "max_latency_ms"],
    "HealthStatus": ["model_id", "is_available", "response_time_ms", "last_check",
                     "consecutive_failures", "error_message"],
    "RateLimitStatus": ["model_id", "is_limited", "requests_remaining", "tokens_remaining",
                        "reset_time"],
    "QualityScore": ["overall_score", "completeness", "relevance", "coherence", "timestamp"],
    "BudgetStatus": ["daily_budget", "current_spend", "utilization_percent", "is_over_budget",
                     "remaining_budget"],
    "PerformanceMetrics": ["model_id", "window_hours", "total_requests", "successful_requests",
                           "failed_requests", "success_rate", "average_latency_ms",
                           "p50_latency_ms", "p95_latency_ms", "p99_latency_ms",
                           "average_quality_score"],
    "ErrorResponse": ["error_type", "error_message", "model_id", "task_id", "is_retryable",
                      "attempted_models", "failure_reasons", "timestamp"],
    # Used by the seed without being described:
    "RateLimits": ["requests_per_minute", "tokens_per_minute"],
    "TokenUsage": ["input_tokens", "output_tokens", "total_tokens"],
    "CachedResponse": ["response", "cached_at", "expires_at", "hit_count"],
    "PerformanceDegradation": ["metric", "current_value", "baseline_value", "threshold"],
    "ModelAvailability": ["model_id", "is_available"],
}
ERRORS = ["RateLimitError", "FailoverError", "ModelUnavailableError", "ConfigurationError",
          "AuthenticationError", "InvalidRequestError", "ProviderError", "CacheError",
          "BudgetExceededError", "QualityThresholdError", "PerformanceMonitorError"]
COMPONENTS = {
    "ModelRegistry": ["load_config", "get_model", "get_models_by_provider",
                      "get_models_by_capability", "get_models_by_cost_range", "update_model",
                      "add_model"],
    "ModelSelector": ["select_model", "calculate_suitability_score", "rank_models"],
    "HealthChecker": ["start", "stop", "check_model_health", "get_model_status",
                      "is_model_available"],
    "RateLimiter": ["check_rate_limit", "record_request", "is_rate_limited",
                    "get_time_until_reset"],
    "FailoverManager": ["execute_with_failover", "select_alternative", "record_failover"],
    "APIClientManager": ["send_request", "send_request_with_retry"],
    "ResponseEvaluator": ["evaluate_response", "should_switch_model", "calculate_completeness",
                          "calculate_relevance", "calculate_coherence"],
    "CacheManager": ["get", "set", "generate_cache_key", "evict_expired", "evict_lru"],
    "CostTracker": ["record_cost", "get_daily_cost", "get_cost_by_model", "check_budget"],
    "PerformanceMonitor": ["record_performance", "get_model_performance", "detect_degradation"],
    "APIKeyManager": ["load_keys", "add_key"],
}


def top_level_split(params: str) -> list[str]:
    """Split a parameter list at the commas outside brackets."""
    parts, depth, current = [], 0, ""
    for ch in params.replace("\n", " "):
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("name", sorted(DATA_MODELS))
def test_each_seed_data_model_has_its_documented_fields_in_order(name):
    cls = getattr(amm, name)
    assert dataclasses.is_dataclass(cls)
    documented = DATA_MODELS[name]
    assert fields(cls)[: len(documented)] == documented


def test_the_seed_document_lists_no_data_model_or_field_that_amm_lacks():
    text = require_seed().read_text()
    models = text.split("## Data Models", 1)[1].split("## Public Interfaces", 1)[0]
    blocks = re.findall(r"class (\w+):\n(.*?)```", models, flags=re.S)
    assert len(blocks) >= 11
    for name, body in blocks:
        documented = re.findall(r"^\s+(\w+):", body, flags=re.M)
        cls = getattr(amm, name)
        assert fields(cls)[: len(documented)] == documented, name
        assert name in DATA_MODELS


def test_the_seed_document_lists_no_method_that_amm_lacks():
    text = require_seed().read_text()
    text = text.split("## Public Interfaces", 1)[1].split("## Usage Examples", 1)[0]
    for cls_name, body in re.findall(r"class (\w+):\n(.*?)```", text, flags=re.S):
        cls = getattr(amm, cls_name)
        for method, params in re.findall(r"(?:async )?def (\w+)\(self,?\s*([^)]*)\)", body):
            assert hasattr(cls, method), f"{cls_name}.{method}"
            documented = [p.split(":")[0].split("=")[0].strip()
                          for p in top_level_split(params) if p.strip()]
            actual = list(inspect.signature(getattr(cls, method)).parameters)[1:]  # less self
            assert actual[: len(documented)] == documented, f"{cls_name}.{method}"


@pytest.mark.parametrize("name", ERRORS)
def test_each_seed_error_is_an_api_model_error_and_takes_a_bare_message(name):
    cls = getattr(amm, name)
    assert issubclass(cls, amm.APIModelError)
    err = cls("something went wrong")
    assert err.error_message == "something went wrong"
    assert "something went wrong" in str(err)
    for attr in ("model_id", "task_id", "is_retryable", "attempted_models", "failure_reasons"):
        assert hasattr(err, attr)


def test_rate_limit_error_carries_retry_after_and_failover_error_its_reasons():
    err = amm.RateLimitError("slow down", retry_after_seconds=2.5, model_id="m")
    assert err.retry_after_seconds == 2.5 and err.is_retryable
    assert "retry after 2.5s" in str(err)
    fail = amm.FailoverError("all failed", attempted_models=["a", "b"],
                             failure_reasons={"a": "timeout", "b": "503"}, task_id="t")
    assert fail.attempted_models == ["a", "b"]
    assert "a: timeout" in str(fail) and "b: 503" in str(fail)
    response = fail.to_error_response()
    assert response.failure_reasons == {"a": "timeout", "b": "503"}


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_each_seed_component_is_exported_with_its_methods(name):
    cls = getattr(amm, name)
    for method in COMPONENTS[name]:
        assert callable(getattr(cls, method)), f"{name}.{method}"


def test_every_exported_name_resolves_and_all_is_sorted():
    assert amm.__all__ == sorted(amm.__all__)
    for name in amm.__all__:
        assert getattr(amm, name) is not None


def test_import_amm_is_cheap_and_pulls_in_no_heavy_dependency():
    code = ("import sys, amm, amm.models, amm.errors; from amm import managed_model, ModelRequest; "
            "heavy = [m for m in ('litellm', 'pandas', 'streamlit', 'opentelemetry') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_bad_requests_are_refused_with_a_typed_error_that_names_the_field():
    with pytest.raises(amm.InvalidRequestError, match="prompt or messages"):
        amm.ModelRequest(prompt="", task_id="t", agent_type="a")
    with pytest.raises(amm.InvalidRequestError, match="max_tokens"):
        amm.ModelRequest(prompt="p", max_tokens=0)
    with pytest.raises(amm.InvalidRequestError, match="temperature"):
        amm.ModelRequest(prompt="p", parameters={"temperature": 5})
    with pytest.raises(amm.InvalidRequestError, match=r"messages\[0\]"):
        amm.ModelRequest(messages=[{"content": "no role"}])
    with pytest.raises(amm.InvalidRequestError, match="required_capabilities"):
        amm.SelectionConstraints(required_capabilities="code-generation")  # type: ignore[arg-type]


def test_a_request_accepts_chat_messages_instead_of_a_prompt():
    request = amm.ModelRequest(messages=[{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": "hi"}], task_id="t")
    assert request.chat_messages()[1] == {"role": "user", "content": "hi"}
    assert request.text() == "be brief\nhi"
    assert amm.ModelRequest(prompt="x", priority="high").effective_priority == "HIGH"
