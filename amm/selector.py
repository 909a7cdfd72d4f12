"""Model selection: which registered model should serve this request, and why.

:meth:`ModelSelector.select_model` runs the seed's algorithm (``docs/seed.md``):

1. **filter** every registered model, recording why each one is out: already tried
   in this request, disabled, provider excluded, missing a required capability,
   context window smaller than prompt + ``max_tokens``, estimated cost above
   ``max_cost_per_request``, unavailable (health), rate-limited, latency above
   ``max_latency_ms`` (the measured p95 once the model has ``min_samples`` requests,
   else the registry's ``average_response_time_ms``), demoted for the agent type
   (demoted models are used only when nothing else is eligible);
2. **score** the eligible ones with the scorer (:mod:`amm.scoring`: capability 30 %,
   cost 25 %, performance 25 %, availability 20 %, shifted by the task priority);
3. the **policy** (:mod:`amm.policy`) gives each eligible model a probability from
   the ranked scores and one is drawn: by default (``score``) the highest score
   with probability 1, ties broken by model id; ``softmax`` and ``thompson``
   explore within their bounds. A failover re-selection (``exclude`` non-empty)
   always takes the highest score: exploring is for the routing decision only;
4. an **experiment** on the agent type (:mod:`amm.experiments`) decides first: its
   arm is taken when eligible, else the policy's draw is, and the selection
   records the assigned arm and why it was not honoured. The logged probability of
   each model is then ``arm weight (if an eligible arm) + ineligible arms' weight x
   policy probability``: the whole mixture, so it stays honest;
5. return the choice with every candidate's score, probability and features in the
   :class:`~telemetry.events.SelectionEvent`, or None when nothing is eligible.

Prompt tokens are estimated by :func:`amm.models.estimate_tokens` (``ceil(len(text) /
4)``: about four characters per token in English; cheap and close enough for
filtering); output tokens as ``max_tokens``, or :data:`DEFAULT_OUTPUT_TOKENS` when the
request sets none.

The components are typed by the Protocols of :mod:`amm.protocols` (registry, health,
rate limits, statistics). Optional queries are used when the components offer them:
the health checker's ``get_model_status(model_id).last_error`` (for the reason of an
unavailable model) and a rate limiter's cheap ``headroom(model_id) -> float`` (the
fraction of its window left, for the availability factor; without it headroom counts
as full, and models at the limiter's line are filtered out anyway).

Everything that depends only on the registry (capability sets, prices, providers)
is indexed once per ``registry.version``, and what the filters decide from the
request's shape alone (constraints, tools, schema, streaming) once per shape and
version; a selection does no awaits and calls only the components' cheap
synchronous queries.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from amm.errors import ConfigurationError, InvalidRequestError
from amm.experiments import Assigner, HashAssigner
from amm.models import (
    DEFAULT_OUTPUT_TOKENS,
    ModelAvailability,
    ModelMetadata,
    ModelRequest,
    ModelSelection,
    PerformanceMetrics,
    SelectionConstraints,
    estimate_tokens,
)
from amm.policy import DecisionContext, RoutingPolicy, policy_from_config
from amm.protocols import (
    AvailabilitySource,
    HeadroomSource,
    LimitSource,
    ModelSource,
    PolicySource,
    ResetSource,
    StatsSource,
    StatusSource,
)
from amm.scoring import (
    PRIOR_QUALITY,
    PRIOR_SUCCESS_RATE,
    Candidate,
    ScoreBreakdown,
    ScoreContext,
    Scorer,
    WeightedScorer,
)
from telemetry.events import (
    NULL_SINK,
    SELECTION_CACHE_HIT,
    SELECTION_FAILOVER,
    SELECTION_INITIAL,
    EventSink,
    SelectionEvent,
    StatsSnapshot,
)

__all__ = [
    "DEFAULT_OUTPUT_TOKENS", "Exclusion", "ModelSelector", "Reason", "estimate_prompt_tokens",
]


class Exclusion(enum.StrEnum):
    """Why a model was left out of a selection: a stable code to count and act on."""

    ALREADY_TRIED = "already_tried"
    DISABLED = "disabled"
    NOT_ALLOWED = "not_allowed"
    PROVIDER_EXCLUDED = "provider_excluded"
    NO_KEY = "no_key"
    MISSING_CAPABILITY = "missing_capability"
    NO_TOOLS = "no_tools"
    NO_SCHEMA = "no_schema"
    NO_STREAMING = "no_streaming"
    CONTEXT = "context"
    COST = "cost"
    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"
    LATENCY = "latency"
    DEMOTED = "demoted"

    @property
    def temporary(self) -> bool:
        """Whether the reason passes with time (health, limits, demotion, a resting key)."""
        return self in _TEMPORARY


_TEMPORARY = frozenset({Exclusion.UNAVAILABLE, Exclusion.RATE_LIMITED, Exclusion.DEMOTED,
                        Exclusion.NO_KEY})


class Reason(str):
    """An exclusion reason: the text people read (it is a ``str``: spans and errors
    show it as it is) with its :class:`Exclusion` ``code`` for code that counts."""

    __slots__ = ("code",)
    code: Exclusion

    def __new__(cls, message: str, code: Exclusion) -> Reason:
        self = super().__new__(cls, message)
        self.code = code
        return self


# The reasons that never vary, made once (selection excludes models on every request).
_ALREADY_TRIED = Reason("already tried", Exclusion.ALREADY_TRIED)
_DISABLED = Reason("disabled", Exclusion.DISABLED)
_NOT_ALLOWED = Reason("not allowed by this call (model=/fallbacks=/exclude_models=)",
                      Exclusion.NOT_ALLOWED)
_NO_TOOLS = Reason("does not support tools (supports_tools: false)", Exclusion.NO_TOOLS)
_NO_SCHEMA = Reason("cannot honour response_format (supports_response_schema: false)",
                    Exclusion.NO_SCHEMA)
_NO_STREAMING = Reason("does not stream (supports_streaming: false)", Exclusion.NO_STREAMING)


_EMPTY: frozenset[str] = frozenset()


def estimate_prompt_tokens(task: ModelRequest) -> int:
    """A cheap token estimate of the request's text (:func:`amm.models.estimate_tokens`)."""
    return estimate_tokens(task.text())


class _Entry:
    """What selection needs of one registered model, derived once per registry version."""

    __slots__ = ("_missing", "caps", "enabled", "id", "in_price", "latency", "model", "no_key",
                 "out_price", "provider", "schema", "streaming", "tools", "window")

    def __init__(self, model: ModelMetadata) -> None:
        self.model = model
        self.id = model.id
        self.provider = model.provider
        self.caps = frozenset(model.capabilities)
        self.in_price = model.cost_per_1k_input_tokens / 1000.0
        self.out_price = model.cost_per_1k_output_tokens / 1000.0
        self.window = model.context_window
        self.latency = model.average_response_time_ms
        self.enabled = model.enabled
        self.tools = model.supports_tools
        self.streaming = model.supports_streaming
        self.schema = model.supports_response_schema
        self._missing: dict[frozenset[str], Reason] = {}
        # Made here, not per request: a partly configured machine excludes many models so.
        self.no_key = Reason(f"no usable API key for provider {model.provider}", Exclusion.NO_KEY)

    def missing(self, required: frozenset[str]) -> Reason:
        """Why this model lacks ``required`` (made once per set of capabilities asked)."""
        reason = self._missing.get(required)
        if reason is None:
            reason = self._missing[required] = Reason(
                "missing capabilities: " + ", ".join(sorted(required - self.caps)),
                Exclusion.MISSING_CAPABILITY)
        return reason

    def shape_verdicts(self, rq: _Request) -> tuple[Reason | None, Reason | None]:
        """What the request's shape alone (constraints, tools, schema, streaming) says of
        this model, in the filter's order: the reason found before the key check, and the
        one found after it (None: passes)."""
        pre = post = None
        if not self.enabled:
            pre = _DISABLED
        elif self.id in rq.not_models or (rq.only_models is not None
                                          and self.id not in rq.only_models):
            pre = _NOT_ALLOWED
        elif self.provider in rq.providers or (rq.only_providers is not None
                                               and self.provider not in rq.only_providers):
            pre = Reason(f"provider {self.provider} excluded", Exclusion.PROVIDER_EXCLUDED)
        if rq.required and not rq.required <= self.caps:
            post = self.missing(rq.required)
        elif rq.needs_tools and not self.tools:
            post = _NO_TOOLS
        elif rq.needs_schema and not self.schema:
            post = _NO_SCHEMA
        elif rq.needs_streaming and not self.streaming:
            post = _NO_STREAMING
        return pre, post


_Verdicts = tuple[tuple[_Entry, Reason | None, Reason | None], ...]


class _Shape:
    """The registry split by one request shape's verdicts (made once per shape).

    ``passing``: the entries the shape lets through, in registry order. ``stopped``: the
    others with their verdicts; ``reasons`` their exclusion when no per-request check
    can change it (nothing excluded by the caller, no key check: ``pre``, else ``post``);
    ``unstopped`` the passing entries with no verdicts (what the per-request checks take);
    ``order`` every id in registry order.
    """

    __slots__ = ("order", "passing", "reasons", "stopped", "unstopped")

    def __init__(self, verdicts: _Verdicts) -> None:
        self.passing = tuple(e for e, pre, post in verdicts if pre is None and post is None)
        self.unstopped: _Verdicts = tuple((e, None, None) for e in self.passing)
        self.stopped = tuple(v for v in verdicts if v[1] is not None or v[2] is not None)
        self.reasons: dict[str, Reason] = {}
        for e, pre, post in self.stopped:
            reason = pre if pre is not None else post
            if reason is not None:
                self.reasons[e.id] = reason
        self.order = tuple(e.id for e, _, _ in verdicts)


class _Request:
    """Per-request values the filter needs, computed once per selection."""

    __slots__ = ("agent_type", "demoted", "exclude", "max_cost", "max_latency", "needed_context",
                 "needs_schema", "needs_streaming", "needs_tools", "not_models", "only_models",
                 "only_providers", "out_tokens", "prompt_tokens", "providers", "required",
                 "shape")

    def __init__(self, task: ModelRequest, agent_type: str,
                 constraints: SelectionConstraints | None,
                 exclude: Collection[str], demoted: Collection[str]) -> None:
        if not isinstance(task, ModelRequest):
            raise InvalidRequestError(f"task must be a ModelRequest; got {type(task).__name__}")
        if not isinstance(agent_type, str):
            raise InvalidRequestError(f"agent_type must be a str; got {agent_type!r}",
                                      task_id=task.task_id or None)
        self.agent_type = agent_type
        self.prompt_tokens = estimate_prompt_tokens(task)
        self.out_tokens = task.max_tokens or DEFAULT_OUTPUT_TOKENS
        self.needed_context = self.prompt_tokens + (task.max_tokens or 0)
        self.exclude = exclude
        self.demoted = demoted
        # What the model must honour; litellm would drop what it cannot, silently.
        self.needs_tools = task.tools is not None
        self.needs_schema = task.wants_json
        self.needs_streaming = task.stream
        if constraints is None:
            self.required, self.providers, self.not_models = _EMPTY, _EMPTY, _EMPTY
            self.max_cost = self.max_latency = self.only_models = self.only_providers = None
        else:
            self.required = frozenset(constraints.required_capabilities)
            self.providers = frozenset(constraints.excluded_providers)
            self.max_cost = constraints.max_cost_per_request
            self.max_latency = constraints.max_latency_ms
            # Per-call narrowing (llm.complete(model=..., exclude_models=..., providers=...)).
            self.not_models = constraints.excluded_models
            self.only_models = constraints.only_models
            self.only_providers = constraints.only_providers
        # What _Entry.shape_verdicts reads: requests with equal shapes share the verdicts.
        self.shape = (self.required, self.providers, self.not_models, self.only_models,
                      self.only_providers, self.needs_tools, self.needs_schema,
                      self.needs_streaming)


class ModelSelector:
    """Chooses the model for each request and says why (see the module docstring).

    >>> selection = await selector.select_model(request, "implementation")
    """

    def __init__(
        self,
        registry: ModelSource,
        health_checker: AvailabilitySource,
        rate_limiter: LimitSource,
        performance_monitor: StatsSource | None,
        *,
        scorer: Scorer | None = None,
        assigner: Assigner | None = None,
        events: EventSink = NULL_SINK,
        min_samples: int = 5,
        demotion: Callable[[str, str], bool] | None = None,
        key_check: Callable[[ModelMetadata], bool] | None = None,
        policy: RoutingPolicy | Mapping[str, Any] | str | None = None,
    ) -> None:
        """``policy``: how the final choice is made (:mod:`amm.policy`; a policy, or the
        registry's ``"policy"`` object; None: the registry's, else ``score``).
        ``demotion(model_id, agent_type)`` (e.g. ``ResponseEvaluator.should_demote``)
        marks models to use only when nothing else is eligible, like ``demoted=``.
        ``key_check(model)`` says whether a usable API key exists for the model: a model
        without one is excluded ("no API key"), so a partly configured machine routes
        to what it can reach."""
        if not isinstance(min_samples, int) or min_samples < 1:
            raise ConfigurationError(f"min_samples must be an int >= 1; got {min_samples!r}",
                                     field="min_samples")
        self.registry = registry
        self.health_checker = health_checker
        self.rate_limiter = rate_limiter
        self.performance_monitor = performance_monitor
        self.scorer: Scorer = scorer if scorer is not None else WeightedScorer()
        self.assigner: Assigner = assigner if assigner is not None else HashAssigner()
        self.min_samples = min_samples
        self._events = events
        self._demotion = demotion
        self._key_check = key_check
        # Optional queries (amm.protocols), looked up once: absent ones mean "no
        # information" (a seed-style monitor without ``snapshot``: priors only).
        # The direct reads (snapshot_fn, ...) only where the class itself offers them:
        # a wrapper that delegates attributes (FleetStats merges the fleet's statistics
        # into ``snapshot``) must be asked through its own methods.
        monitor: Any = performance_monitor
        limits: Any = rate_limiter
        self._snapshot_fn: Callable[[str, str | None], StatsSnapshot | None] | None = (
            None if not isinstance(performance_monitor, StatsSource)
            else monitor.snapshot_fn if hasattr(type(monitor), "snapshot_fn")
            else performance_monitor.snapshot)
        self._headroom_fn: Callable[[str], float] | None = (
            rate_limiter.headroom if isinstance(rate_limiter, HeadroomSource) else None)
        # Every candidate's rate-limit view and statistics at once, where the sources
        # offer it.
        self._limits_fn: Callable[[Iterable[str]], list[tuple[bool, float]]] | None = (
            limits.views_fn if hasattr(type(limits), "views_fn") else None)
        self._snapshots_fn: Callable[[Iterable[str], str | None],
                                     list[StatsSnapshot | None]] | None = (
            monitor.snapshots_fn if hasattr(type(monitor), "snapshots_fn") else None)
        self._status_fn: Callable[[str], ModelAvailability] | None = (
            health_checker.get_model_status if isinstance(health_checker, StatusSource)
            else None)
        self._reset_fn: Callable[[str], int | None] | None = (
            rate_limiter.get_time_until_reset if isinstance(rate_limiter, ResetSource)
            else None)
        if policy is None and isinstance(registry, PolicySource):
            policy = registry.policy_config()
        self.policy: RoutingPolicy = policy_from_config(policy)
        self._index_version: int | None = None
        self._entries: tuple[_Entry, ...] = ()
        self._by_id: dict[str, _Entry] = {}
        self._shapes: dict[tuple[Any, ...], _Shape] = {}

    # -- registry index -----------------------------------------------------------------

    def _index(self) -> tuple[_Entry, ...]:
        version = self.registry.version
        if version != self._index_version:
            self._entries = tuple(_Entry(m) for m in self.registry.models())
            self._by_id = {e.id: e for e in self._entries}
            self._shapes = {}
            self._index_version = version
        return self._entries

    def _entry(self, model: ModelMetadata) -> _Entry:
        self._index()
        entry = self._by_id.get(model.id)
        return entry if entry is not None and entry.model is model else _Entry(model)

    # -- filtering ----------------------------------------------------------------------

    def _shape(self, rq: _Request) -> _Shape:
        """Every registered model with its :meth:`_Entry.shape_verdicts` for ``rq``, made
        once per request shape and registry version (the hot path's requests mostly share
        one shape: those checks then cost nothing per model)."""
        entries = self._index()
        shapes = self._shapes
        try:
            shape = shapes.get(rq.shape)
        except TypeError:  # an unhashable constraint (not a frozenset): no sharing
            return _Shape(tuple((e, *e.shape_verdicts(rq)) for e in entries))
        if shape is None:
            shape = _Shape(tuple((e, *e.shape_verdicts(rq)) for e in entries))
            if self._entries is entries:  # not if the registry changed meanwhile
                if len(shapes) >= 64:
                    shapes.clear()
                shapes[rq.shape] = shape
        return shape

    def _examine(self, e: _Entry, rq: _Request) -> Candidate | Reason:
        """The candidate for ``e``, or why it is excluded (cheapest checks first)."""
        return self._check_all(((e, *e.shape_verdicts(rq)),), rq)[0]

    def _check_all(self, items: Sequence[tuple[_Entry, Reason | None, Reason | None]],
                   rq: _Request) -> list[Candidate | Reason]:
        """:meth:`_examine` of each entry given its shape verdicts for ``rq``, in order.

        One loop for all of a selection's models, every lookup made once before it: the
        hot path's cost is per model (34 of 50 in ``make bench``)."""
        exclude, needed, max_cost, max_latency = (rq.exclude, rq.needed_context, rq.max_cost,
                                                  rq.max_latency)
        prompt_tokens, out_tokens, agent_type = rq.prompt_tokens, rq.out_tokens, rq.agent_type
        key_check, status_fn, reset_fn = self._key_check, self._status_fn, self._reset_fn
        available = self.health_checker.is_model_available
        limited_fn = self.rate_limiter.is_rate_limited
        snapshot, min_samples = self._snapshot_fn, self.min_samples
        headroom_fn = self._headroom_fn
        # Every model's rate-limit view and statistics in two calls (each reads its clock
        # once); a model excluded before them is read for nothing, which costs less.
        ids = [e.id for e, _, _ in items]
        views = self._limits_fn(ids) if self._limits_fn is not None else None
        snaps = (self._snapshots_fn(ids, agent_type) if self._snapshots_fn is not None
                 else None)
        out: list[Candidate | Reason] = []
        append = out.append
        for i, (e, pre, post) in enumerate(items):
            mid = e.id
            if mid in exclude:
                append(_ALREADY_TRIED)
                continue
            if pre is not None:
                append(pre)
                continue
            if key_check is not None and not key_check(e.model):
                append(e.no_key)
                continue
            if post is not None:
                append(post)
                continue
            if needed > e.window:
                append(Reason(f"context window {e.window} < {needed} tokens needed",
                              Exclusion.CONTEXT))
                continue
            cost = prompt_tokens * e.in_price + out_tokens * e.out_price
            if max_cost is not None and cost > max_cost:
                append(Reason(f"estimated cost ${cost:.4f} > max ${max_cost:.4f}",
                              Exclusion.COST))
                continue
            if not available(mid):
                # Only for the unavailable few: get_model_status is not a hot-path query.
                status = status_fn(mid) if status_fn is not None else None
                error = status.last_error if status is not None else None
                append(Reason(f"unavailable: {error}" if error else "unavailable",
                              Exclusion.UNAVAILABLE))
                continue
            if views is not None:
                limited, headroom = views[i]
            else:
                limited, headroom = limited_fn(mid), 1.0
            if limited:
                reset = reset_fn(mid) if reset_fn is not None else None
                append(Reason(f"rate-limited (resets in {reset}s)" if reset else "rate-limited",
                              Exclusion.RATE_LIMITED))
                continue
            if views is None and headroom_fn is not None:
                headroom = headroom_fn(mid)
            snap = None
            if snapshot is not None:
                snap = snaps[i] if snaps is not None else snapshot(mid, agent_type)
                if (snap is None or snap.count < min_samples) and agent_type is not None:
                    snap = snapshot(mid, None)  # all agent types: more samples
            cand = _measured(e, cost, snap, min_samples, headroom)
            if max_latency is not None and cand.p95_latency_ms > max_latency:
                source = "measured p95" if cand.measured else "expected"
                append(Reason(f"latency {source} {cand.p95_latency_ms:.0f} ms > "
                              f"max {max_latency:.0f} ms", Exclusion.LATENCY))
                continue
            append(cand)
        return out

    def _candidate(self, e: _Entry, cost: float, agent_type: str | None,
                   performance_data: PerformanceMetrics | None = None) -> Candidate:
        """The scorer's view of ``e``: measured statistics when there are enough, else priors."""
        headroom = self._headroom_fn(e.id) if self._headroom_fn is not None else 1.0
        if performance_data is not None and performance_data.total_requests >= self.min_samples:
            pd = performance_data
            # PerformanceMetrics (the seed's record) has success_rate in percent, the one
            # place it is; the scorer takes a fraction. 0.0 quality there means "none".
            quality = pd.average_quality_score if pd.average_quality_score > 0 else PRIOR_QUALITY
            return Candidate(e.model, e.caps, cost, pd.p50_latency_ms, pd.success_rate / 100.0,
                             quality, True, pd.p95_latency_ms, headroom)
        snap = None
        if performance_data is None and self._snapshot_fn is not None:
            snap = self._snapshot_fn(e.id, agent_type)
            if (snap is None or snap.count < self.min_samples) and agent_type is not None:
                snap = self._snapshot_fn(e.id, None)  # all agent types: more samples
        return _measured(e, cost, snap, self.min_samples, headroom)

    def check_eligibility(self, model_id: str, task: ModelRequest, agent_type: str = "",
                          constraints: SelectionConstraints | None = None) -> str | None:
        """None if ``model_id`` would pass the filters for this request, else why not."""
        rq = _Request(task, agent_type, constraints, (), ())
        self._index()
        entry = self._by_id.get(model_id)
        if entry is None:
            return "not in the registry"
        result = self._examine(entry, rq)
        return result if isinstance(result, str) else None

    def exclusions(self, task: ModelRequest, agent_type: str,
                   constraints: SelectionConstraints | None = None, *,
                   demoted: Collection[str] = ()) -> dict[str, str]:
        """Every registered model that the filters exclude for ``task``, with why (for
        the error that says why nothing matched; not on the hot path)."""
        rq = _Request(task, agent_type, constraints, (), demoted)
        out: dict[str, str] = {}
        for e in self._index():
            result = self._examine(e, rq)
            if isinstance(result, str):
                out[e.id] = result
            elif e.id in demoted:
                out[e.id] = Reason(f"demoted for {agent_type or 'this agent type'}",
                                   Exclusion.DEMOTED)
        return out

    def eligible_costs(self, task: ModelRequest, agent_type: str,
                       constraints: SelectionConstraints | None = None) -> dict[str, float]:
        """Every model that passes the filters for ``task`` now (demoted ones too: they are
        a last resort, not excluded), with the request's estimated cost on it; what a
        budget downgrade chooses the cheapest of. Not on the hot path."""
        rq = _Request(task, agent_type, constraints, (), ())
        return {e.id: result.estimated_cost for e in self._index()
                if isinstance(result := self._examine(e, rq), Candidate)}

    def known_capabilities(self) -> frozenset[str]:
        """Every capability some registered model has."""
        caps: set[str] = set()
        for e in self._index():
            caps |= e.caps
        return frozenset(caps)

    # -- selection ----------------------------------------------------------------------

    async def select_model(
        self,
        task: ModelRequest,
        agent_type: str,
        constraints: SelectionConstraints | None = None,
        *,
        exclude: Collection[str] = (),
        demoted: Collection[str] = (),
    ) -> ModelSelection | None:
        """The best eligible model for ``task``, or None when no model passes the filters.

        ``exclude``: models already tried for this request (never chosen again).
        ``demoted``: models to use only when nothing else is eligible.
        Emits one :class:`~telemetry.events.SelectionEvent`, also when returning None.
        """
        start = time.time_ns()
        rq = _Request(task, agent_type, constraints, exclude, demoted)
        selection, reason, excluded, experiment, arm, logged = self._select(task, rq)
        self._events.record(SelectionEvent(
            agent_type=agent_type, task_id=task.task_id,
            chosen=selection.model_id if selection else None, reason=reason,
            scores=selection.scores if selection else {}, excluded=excluded,
            experiment=experiment, arm=arm,
            propensity=selection.propensity if selection else 1.0,
            start_time_ns=start, end_time_ns=time.time_ns(),
            candidates=logged, policy=self._policy_kind(rq),
            policy_version=self.policy.version, features=_features(task, rq),
            stage=SELECTION_FAILOVER if rq.exclude else SELECTION_INITIAL,
        ))
        return selection

    def record_cache_hit(self, agent_type: str, task_id: str, model_id: str) -> None:
        """Log the decision of a request answered from the cache: no routing happened,
        ``model_id`` (the cached answer's) is the choice with probability 1, marked
        ``stage=cache_hit`` so off-policy evaluation can leave it out. Never raises."""
        now = time.time_ns()
        self._events.record(SelectionEvent(
            agent_type=agent_type, task_id=task_id, chosen=model_id,
            reason=f"cache hit: answered by {model_id} from the cache", propensity=1.0,
            start_time_ns=now, end_time_ns=now,
            candidates=((model_id, float("nan"), 1.0, 0.0, float("nan"), 0.0, 1.0),),
            policy=self.policy.kind, policy_version=self.policy.version,
            features={"agent_type": agent_type}, stage=SELECTION_CACHE_HIT,
        ))

    def _policy_kind(self, rq: _Request) -> str:
        applies = getattr(self.policy, "applies_to", None)
        if rq.exclude or (applies is not None and not applies(rq.agent_type)):
            return "score"
        return self.policy.kind

    def _select(self, task: ModelRequest, rq: _Request) -> tuple[
            ModelSelection | None, str, dict[str, str], str | None, str | None, tuple[Any, ...]]:
        eligible: list[Candidate] = []
        held_back: list[Candidate] = []  # demoted: a last resort
        demotion = self._demotion
        check = self._check_all
        shape = self._shape(rq)
        if rq.exclude or self._key_check is not None:
            excluded: dict[str, str] = {}
            for (e, _, _), verdict in zip(shape.stopped, check(shape.stopped, rq), strict=True):
                if isinstance(verdict, str):  # a Reason: the shape stopped it
                    excluded[e.id] = verdict
        else:
            excluded = dict(shape.reasons)
        stopped = len(excluded)
        for e, result in zip(shape.passing, check(shape.unstopped, rq), strict=True):
            if isinstance(result, str):
                excluded[e.id] = result
            elif e.id in rq.demoted or (demotion is not None and demotion(e.id, rq.agent_type)):
                held_back.append(result)
            else:
                eligible.append(result)
        if stopped and len(excluded) > stopped:  # both kinds: in registry order, as checked
            excluded = {mid: excluded[mid] for mid in shape.order if mid in excluded}
        note = ""
        if held_back:
            if eligible:
                demoted = Reason(f"demoted for {rq.agent_type or 'this agent type'}",
                                 Exclusion.DEMOTED)
                for c in held_back:
                    excluded[c.model.id] = demoted
            else:
                eligible = held_back
                note = "; only demoted models were eligible"

        experiment = self.registry.experiment_for(rq.agent_type) if task.task_id else None
        arm = self.assigner.assign(experiment, task.task_id) if experiment is not None else None
        exp_name = experiment.name if experiment is not None else None
        if not eligible:
            reason = "no eligible model: " + (_summarise(excluded, limit=5)
                                              or "no models registered")
            return None, reason, excluded, exp_name, arm, ()

        context = self._context(eligible, rq.required, task)
        scorer = self.scorer
        score_all = getattr(scorer, "score_all", None)  # one call for all (WeightedScorer)
        breakdowns = (score_all(eligible, context) if score_all is not None
                      else [scorer.score(cand, context) for cand in eligible])
        scores: dict[str, float] = {}
        # (-score, id) sorts best first with ties broken by id; ids are unique, so the
        # candidate and breakdown in the tuple are never compared.
        ranked: list[tuple[float, str, Candidate, ScoreBreakdown]] = []
        for cand, b in zip(eligible, breakdowns, strict=True):
            mid = cand.model.id
            total = b.total
            scores[mid] = total
            ranked.append((-total, mid, cand, b))
        ranked.sort()
        # The final choice: the policy's probabilities over the ranked candidates (a
        # failover re-selection takes the highest score), then the experiment's arm.
        policy = self.policy
        probs: list[float]
        if policy.kind == "score" or rq.exclude or len(ranked) == 1:
            probs, pick = [0.0] * len(ranked), 0
            probs[0] = 1.0
        else:
            given = policy.probabilities(DecisionContext(
                rq.agent_type, task.effective_priority, [r[2] for r in ranked],
                [-r[0] for r in ranked], self._snapshot_fn))
            probs = given if type(given) is list else list(given)  # only read below
            pick = policy.draw(probs)
        drawn = probs[pick] < 1.0
        if experiment is not None and arm is not None:
            # The arm comes from the task id's hash, independent of the policy's draw.
            weights = experiment.arms
            total_w = sum(weights.values()) or 1.0
            fallback = sum(w for a, w in weights.items() if a not in scores) / total_w
            probs = [weights.get(r[1], 0.0) / total_w + fallback * p
                     for r, p in zip(ranked, probs, strict=True)]
            if arm in scores:
                pick = next(i for i, r in enumerate(ranked) if r[1] == arm)
        _, cid, chosen_cand, b = ranked[pick]
        propensity = min(1.0, probs[pick])
        why = f"score {b.total:.2f} ({b.describe()})"
        fell_back = "highest" if not drawn else f"{policy.kind} policy's draw"
        if experiment is not None and arm is not None:
            if cid == arm:
                head = f"experiment {exp_name}: arm {arm} (propensity {propensity:.2f}); {why}"
            else:
                head = (f"experiment {exp_name}: arm {arm} unavailable: "
                        f"{excluded.get(arm, 'not eligible')}; fell back to {fell_back} {why}")
        elif drawn:
            head = (f"{policy.kind} policy drew {cid} (probability {propensity:.2f}); {why}: "
                    f"{_traits(chosen_cand, context)}")
        else:
            head = f"highest {why}: {_traits(chosen_cand, context)}"
        others = _summarise(excluded, limit=3, skip=arm)
        reason = head + note + (f"; {others}" if others else "")
        selection = ModelSelection(
            model_id=cid, model_metadata=chosen_cand.model, suitability_score=b.total,
            alternatives=[r[1] for r in ranked if r[1] != cid],
            selection_reason=reason, scores=scores, excluded=excluded,
            experiment=exp_name, arm=arm, propensity=propensity,
        )
        logged = tuple([(mid, -neg, p, c.estimated_cost, c.quality, c.latency_ms, c.success_rate)
                        for (neg, mid, c, _), p in zip(ranked, probs, strict=True)])
        return selection, reason, excluded, exp_name, arm, logged

    @staticmethod
    def _context(cands: list[Candidate], required: frozenset[str], task: ModelRequest
                 ) -> ScoreContext:
        first = cands[0]
        low = high = first.estimated_cost
        fastest = first.latency_ms
        most = len(first.capabilities)
        for c in cands:  # one pass for the four bounds
            cost = c.estimated_cost
            if cost < low:
                low = cost
            elif cost > high:
                high = cost
            if c.latency_ms < fastest:
                fastest = c.latency_ms
            if len(c.capabilities) > most:
                most = len(c.capabilities)
        return ScoreContext(
            required_capabilities=required,
            priority=task.effective_priority,
            min_cost=low,
            max_cost=high,
            fastest_latency_ms=fastest,
            max_capability_count=most,
        )

    # -- pure scoring -------------------------------------------------------------------

    def rank_models(self, models: Iterable[ModelMetadata], task: ModelRequest
                    ) -> list[tuple[ModelMetadata, float]]:
        """Score ``models`` against each other for ``task`` (no filtering), best first,
        ties broken by id. Measured statistics are used where there are enough."""
        rq = _Request(task, task.agent_type, None, (), ())
        cands = [self._candidate(e, rq.prompt_tokens * e.in_price + rq.out_tokens * e.out_price,
                                 task.agent_type or None)
                 for e in (self._entry(m) for m in models)]
        if not cands:
            return []
        context = self._context(cands, _EMPTY, task)
        scored = [(c.model, self.scorer.score(c, context).total) for c in cands]
        scored.sort(key=lambda pair: (-pair[1], pair[0].id))
        return scored

    def calculate_suitability_score(self, model: ModelMetadata, task: ModelRequest,
                                    performance_data: PerformanceMetrics | None = None) -> float:
        """``model``'s score for ``task`` relative to the enabled registry models.

        The cost and latency bounds come from the registry (prices at this request's
        token counts, ``average_response_time_ms``); ``performance_data`` (the seed's
        :class:`PerformanceMetrics`) is used when it has ``min_samples`` requests, else
        the monitor's rolling snapshot, else the priors.
        """
        rq = _Request(task, task.agent_type, None, (), ())
        entry = self._entry(model)
        cand = self._candidate(entry, rq.prompt_tokens * entry.in_price
                               + rq.out_tokens * entry.out_price, task.agent_type or None,
                               performance_data)
        peers = [e for e in self._index() if e.enabled] or [entry]
        costs = [rq.prompt_tokens * e.in_price + rq.out_tokens * e.out_price for e in peers]
        context = ScoreContext(
            required_capabilities=_EMPTY,
            priority=task.effective_priority,
            min_cost=min(*costs, cand.estimated_cost),
            max_cost=max(*costs, cand.estimated_cost),
            fastest_latency_ms=min(*(e.latency for e in peers), cand.latency_ms),
            max_capability_count=max(*(len(e.caps) for e in peers), len(entry.caps)),
        )
        return self.scorer.score(cand, context).total

    def __repr__(self) -> str:
        return (f"ModelSelector(models={len(self._entries)}, registry_version="
                f"{self._index_version}, scorer={self.scorer!r}, min_samples={self.min_samples})")


def _measured(e: _Entry, cost: float, snap: StatsSnapshot | None, min_samples: int,
              headroom: float) -> Candidate:
    """The scorer's view of ``e`` from its statistics when they have ``min_samples``
    requests, else from the priors."""
    if snap is not None and snap.count >= min_samples:
        quality = snap.mean_quality
        return Candidate(e.model, e.caps, cost, snap.p50_latency_ms, snap.success_rate,
                         PRIOR_QUALITY if quality is None else quality, True,
                         snap.p95_latency_ms, headroom)
    return Candidate(e.model, e.caps, cost, e.latency, PRIOR_SUCCESS_RATE, PRIOR_QUALITY, False,
                     e.latency, headroom)


def _features(task: ModelRequest, rq: _Request) -> dict[str, str | int | float]:
    """The request features a policy may use, as logged with the decision."""
    return {"agent_type": rq.agent_type, "priority": str(task.effective_priority),
            "prompt_tokens": rq.prompt_tokens, "output_tokens": rq.out_tokens,
            "required_capabilities": ",".join(sorted(rq.required))}


def _traits(chosen: Candidate, context: ScoreContext) -> str:
    """What sets the chosen model apart, e.g. ``cheapest with code-generation``."""
    traits = []
    if chosen.estimated_cost <= context.min_cost:
        traits.append("cheapest")
    if chosen.latency_ms <= context.fastest_latency_ms:
        traits.append("fastest")
    if len(chosen.capabilities) >= context.max_capability_count:
        traits.append("broadest capabilities")
    text = " and ".join(traits) if traits else "best balance"
    if context.required_capabilities:
        text += " with " + ", ".join(sorted(context.required_capabilities))
    return text


def _summarise(excluded: dict[str, str], *, limit: int, skip: str | None = None) -> str:
    """``a excluded: rate-limited; b excluded: disabled; +3 more excluded`` ('' if none)."""
    parts: list[str] = []
    for mid, why in excluded.items():
        if mid == skip:
            continue
        if len(parts) == limit:
            parts.append(f"+{len(excluded) - limit - (skip in excluded)} more excluded")
            break
        parts.append(f"{mid} excluded: {why}")
    return "; ".join(parts)
