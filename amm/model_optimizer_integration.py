"""Integration with an existing ModelOptimizer (an external system amm does not own).

The optimizer proposes, amm checks: :func:`select_model_with_optimizer` takes the
optimizer's choice when it is an API model of the registry that passes the
selector's filters (enabled, healthy, not rate-limited...), lets the API selector
decide among the API models when it is not, and keeps the optimizer's own choice
when no API model is eligible and the choice is not an API model (a local or
embedded model: backward compatible). An assignment with ``api_enabled=False``
always stands.

The optimizer needs only :class:`ModelOptimizer`'s ``select_model_for_agent``.
Performance feedback is reported to the first of :data:`FEEDBACK_METHODS` it has,
called as ``method(model_id, agent_type, performance_data)``; an optimizer with
none of them is fine (a debug log, nothing else). Feedback never fails the caller:
an exception inside the optimizer is logged and swallowed. Both methods must be
synchronous, as in the seed (``docs/seed.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from amm.errors import ConfigurationError, InvalidRequestError, ModelUnavailableError
from amm.models import FailoverReason, ModelRequest, utcnow

__all__ = [
    "API_COMPONENTS",
    "FEEDBACK_METHODS",
    "REQUIRED_COMPONENTS",
    "APIIntegration",
    "APIModelAssignment",
    "ModelOptimizer",
    "coordinate_failover",
    "integrate_with_model_optimizer",
    "report_performance_to_optimizer",
    "select_model_with_optimizer",
]

log = logging.getLogger(__name__)

API_COMPONENTS = (
    "registry", "selector", "health_checker", "rate_limiter", "performance_monitor",
    "cost_tracker", "cache_manager", "evaluator", "api_client", "failover_manager",
)
"""The keys :func:`integrate_with_model_optimizer` accepts (the seed's example dict)."""

REQUIRED_COMPONENTS = ("registry", "selector")
"""The keys it needs: selection cannot work without them."""

FEEDBACK_METHODS = ("record_performance", "update_performance", "report_performance")
"""Optimizer methods tried, in order, by :func:`report_performance_to_optimizer`."""

_NUMERIC_FEEDBACK = ("latency_ms", "quality_score", "cost")


@dataclass(frozen=True, slots=True)
class APIModelAssignment:
    """A ModelOptimizer assignment extended with API details.

    ``model_id`` is the optimizer's name for the model, ``api_model_id`` the
    registry id it maps to (None: the same id). ``api_enabled=False`` keeps the
    assignment off the API path (a local model).
    """

    model_id: str
    agent_type: str
    api_model_id: str | None = None
    provider: str | None = None
    api_enabled: bool = True
    confidence: float = 1.0
    reason: str = ""
    fallback_model_ids: tuple[str, ...] = ()
    assigned_at: datetime = field(default_factory=utcnow)

    @property
    def registry_id(self) -> str:
        """The id to look up in amm's registry."""
        return self.api_model_id or self.model_id


@runtime_checkable
class ModelOptimizer(Protocol):
    """What amm needs of the existing optimizer: its proposal for an agent's task."""

    def select_model_for_agent(self, agent_type: str, task: Any) -> tuple[str, Any]:
        """``(model_id, assignment)``; the assignment may be an :class:`APIModelAssignment`."""
        ...


@dataclass(frozen=True, slots=True)
class APIIntegration:
    """The amm components attached to an optimizer (``optimizer.api_integration``)."""

    registry: Any
    selector: Any
    health_checker: Any = None
    rate_limiter: Any = None
    performance_monitor: Any = None
    cost_tracker: Any = None
    cache_manager: Any = None
    evaluator: Any = None
    api_client: Any = None
    failover_manager: Any = None


def integrate_with_model_optimizer(model_optimizer: Any, api_components: Mapping[str, Any]
                                   ) -> APIIntegration:
    """Validate ``api_components`` and attach them to the optimizer as ``api_integration``.

    Raises ConfigurationError (and attaches nothing) for an unknown key, a missing or
    None required component, or an optimizer without ``select_model_for_agent``.
    """
    if not isinstance(api_components, Mapping):
        raise ConfigurationError(
            f"api_components must be a mapping; got {type(api_components).__name__}",
            field="api_components")
    unknown = sorted(set(api_components) - set(API_COMPONENTS))
    if unknown:
        raise ConfigurationError(
            f"api_components: unknown key(s) {', '.join(map(str, unknown))}; "
            f"allowed: {', '.join(API_COMPONENTS)}", field="api_components")
    missing = [k for k in REQUIRED_COMPONENTS if api_components.get(k) is None]
    if missing:
        raise ConfigurationError(
            f"api_components: missing required component(s) {', '.join(missing)}",
            field="api_components")
    if not callable(getattr(api_components["selector"], "select_model", None)):
        raise ConfigurationError("api_components['selector'] has no select_model method",
                                 field="api_components.selector")
    if not callable(getattr(model_optimizer, "select_model_for_agent", None)):
        raise ConfigurationError(
            f"{type(model_optimizer).__name__} has no select_model_for_agent method",
            field="model_optimizer")
    integration = APIIntegration(**dict(api_components))
    try:
        model_optimizer.api_integration = integration
    except AttributeError as exc:
        raise ConfigurationError(
            f"cannot attach the API components to {type(model_optimizer).__name__}: {exc}",
            field="model_optimizer") from exc
    log.info("API model management attached to %s (%s)", type(model_optimizer).__name__,
             ", ".join(k for k in API_COMPONENTS if api_components.get(k) is not None))
    return integration


def _proposal(model_optimizer: Any, agent_type: str, task: ModelRequest) -> tuple[str, Any]:
    result = model_optimizer.select_model_for_agent(agent_type=agent_type, task=task)
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], str)):
        raise InvalidRequestError(
            f"{type(model_optimizer).__name__}.select_model_for_agent must return "
            f"(model_id, assignment); got {result!r}", task_id=task.task_id or None)
    return result


async def select_model_with_optimizer(model_optimizer: Any, api_selector: Any,
                                      task: ModelRequest, agent_type: str) -> str:
    """The model to use for ``task``: the optimizer proposes, amm checks (module docstring).

    Raises ModelUnavailableError when the optimizer proposed an API model that is not
    eligible and no other API model is either.
    """
    proposed, assignment = _proposal(model_optimizer, agent_type, task)
    if isinstance(assignment, APIModelAssignment):
        if not assignment.api_enabled:
            return proposed
        candidate = assignment.registry_id
    else:
        candidate = proposed
    is_api_model = api_selector.registry.get_model(candidate) is not None
    if is_api_model:
        why_not = api_selector.check_eligibility(candidate, task, agent_type)
        if why_not is None:
            return candidate
        log.info("optimizer proposed %s for %s, not eligible (%s): the API selector decides",
                 candidate, agent_type, why_not)
    selection = await api_selector.select_model(task, agent_type)
    if selection is not None:
        return str(selection.model_id)
    if not is_api_model:
        return proposed
    raise ModelUnavailableError(
        f"optimizer proposed {candidate}, which is not eligible, and no other API model is",
        model_id=candidate, task_id=task.task_id or None)


def report_performance_to_optimizer(model_optimizer: Any, model_id: str, agent_type: str,
                                    performance_data: Mapping[str, Any]) -> bool:
    """Give the optimizer feedback on one request. True if a feedback method took it.

    ``performance_data``: ``latency_ms``, ``quality_score``, ``cost`` (numbers),
    ``success`` (bool), and anything else the optimizer understands.
    """
    if not isinstance(performance_data, Mapping):
        raise InvalidRequestError(
            f"performance_data must be a mapping; got {type(performance_data).__name__}")
    for key in _NUMERIC_FEEDBACK:
        value = performance_data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidRequestError(f"performance_data[{key!r}] must be a number; got {value!r}")
    if "success" in performance_data and not isinstance(performance_data["success"], bool):
        raise InvalidRequestError(
            f"performance_data['success'] must be a bool; got {performance_data['success']!r}")
    for name in FEEDBACK_METHODS:
        method = getattr(model_optimizer, name, None)
        if callable(method):
            try:
                method(model_id, agent_type, dict(performance_data))
            except Exception:  # an external system's feedback hook must not fail a request
                log.warning("%s.%s failed; feedback for %s dropped",
                            type(model_optimizer).__name__, name, model_id, exc_info=True)
                return False
            return True
    log.debug("%s takes no performance feedback (none of %s); skipped",
              type(model_optimizer).__name__, ", ".join(FEEDBACK_METHODS))
    return False


async def coordinate_failover(model_optimizer: Any, api_selector: Any, failed_model: str,
                              task: ModelRequest, reason: FailoverReason | str) -> str | None:
    """An alternative to ``failed_model``: the optimizer's proposal when it is another
    eligible API model, else the API selector's choice (never ``failed_model``), else None.

    The failure is reported to the optimizer as feedback (``success=False``).
    """
    try:
        reason = FailoverReason(reason)
    except ValueError:
        raise InvalidRequestError(
            f"reason must be a FailoverReason; got {reason!r}", model_id=failed_model,
            task_id=task.task_id or None) from None
    agent_type = task.agent_type
    report_performance_to_optimizer(model_optimizer, failed_model, agent_type,
                                    {"success": False, "failover_reason": reason.value})
    proposed, assignment = _proposal(model_optimizer, agent_type, task)
    candidate = (assignment.registry_id if isinstance(assignment, APIModelAssignment)
                 else proposed)
    if candidate != failed_model and api_selector.check_eligibility(
            candidate, task, agent_type) is None:
        return candidate
    selection = await api_selector.select_model(task, agent_type, exclude={failed_model})
    return str(selection.model_id) if selection is not None else None
