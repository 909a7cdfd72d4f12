"""The one recorder: each event is fanned out, in one call, to spans, metrics and listeners.

Span tree of one managed call (parent > children)::

    invoke_agent {agent}            agent_span(); gen_ai.operation.name=invoke_agent
    ├── amm.select                  SelectionEvent (built after the fact)
    ├── chat {model}  (CLIENT)      AttemptEvent, one per attempt; failed: error.type + ERROR
    │     events: gen_ai.evaluation.result x4 (overall, completeness, relevance, coherence)
    ├── execute_tool {tool}         tool_span(), one per tool execution the agent runs
    └── amm.evaluate                QualityEvent (built after the fact)

Every span also carries ``openinference.span.kind`` (AGENT, CHAIN, LLM, TOOL,
EVALUATOR), each ``chat`` span its cost as ``gen_ai.usage.cost`` and ``llm.cost.total``
too (with ``llm.cost.prompt`` / ``llm.cost.completion`` when the split is known), and
under the content opt-in ``invoke_agent`` shows the last user message and the
answer as ``input.value`` / ``output.value``: what trace viewers (Phoenix, Langfuse)
read, see :mod:`telemetry.viewers`; ``viewer_attributes=False`` (or
``AMM_TELEMETRY_VIEWER_ATTRIBUTES=false``) leaves them out. ``session.id``,
``gen_ai.conversation.id`` and ``user.id`` given to :meth:`Recorder.agent_span` are
copied onto every span recorded in its scope.

When ``invoke_agent`` ends it carries ``gen_ai.invoke_agent.inference_calls`` and
``gen_ai.invoke_agent.tool_calls``: the ``chat`` attempts and ``execute_tool`` spans
recorded directly in its scope (a nested agent span counts its own).

The successful attempt's ``chat`` span is kept open until the matching
``QualityEvent`` (same task and model) arrives, so the evaluation events land on
it; it is then ended with the attempt's own end time. The ``overall`` event carries
the event's pass/fail label (else one against the recorder's ``quality_threshold``)
and its explanation. With an annotator (``AMM_PHOENIX_ANNOTATIONS``, see
:mod:`telemetry.phoenix`) the evaluated span's scores also go to Phoenix as span
annotations, off the request path. A span still pending is
ended when its enclosing :meth:`Recorder.agent_span` ends or on
:meth:`Recorder.end_pending`. Pending spans live in a holder set by
``agent_span`` in a context variable, so concurrent tasks never mix them.

Listeners (rolling stats, cost ledger, health, rate limiter) get every event even
when tracing is sampled off or disabled; a listener that raises is logged and
never breaks the caller.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from telemetry import conventions as c
from telemetry.content import ContentPolicy, content_attributes
from telemetry.events import (
    SELECTION_CACHE_HIT,
    AttemptEvent,
    BudgetAlertEvent,
    CacheEvent,
    DegradationEvent,
    Event,
    EventSink,
    FailoverEvent,
    HealthChangeEvent,
    ModelDemotedEvent,
    QualityEvent,
    RateLimitedEvent,
    SelectionEvent,
)
from telemetry.finished_span import FinishedSpans
from telemetry.instruments import Instruments
from telemetry.phoenix import SpanAnnotator, annotator_from_env
from telemetry.redaction import message_texts, redact
from telemetry.viewers import cost_attributes, input_text, kind, viewer_attributes_enabled

__all__ = ["AgentSpan", "Recorder", "ToolSpan"]

_log = logging.getLogger("amm.telemetry")

# Pending chat spans kept outside any agent span (a caller that records without
# agent_span); beyond this many the oldest is ended, so memory stays bounded.
_MAX_UNSCOPED_PENDING = 256

# Attributes of an agent span copied onto every span of its scope.
_INHERITED = frozenset({c.GEN_AI_CONVERSATION_ID, c.SESSION_ID, c.USER_ID})


class _Pending:
    """One agent scope: its chat spans still waiting for their quality event, how
    many inference calls and tool executions ran in it, its agent span and the
    attributes (session, user) every span in it inherits."""

    __slots__ = ("agent", "inference_calls", "inherited", "lock", "spans", "tool_calls")

    def __init__(self, agent: Span = trace.INVALID_SPAN,
                 inherited: Mapping[str, Any] | None = None) -> None:
        self.spans: dict[tuple[str, str], tuple[Span, int]] = {}
        self.lock = threading.Lock()
        self.inference_calls = 0
        self.tool_calls = 0
        self.agent = agent
        self.inherited: dict[str, Any] = dict(inherited or {})

    def put(self, key: tuple[str, str], span: Span, end_ns: int, limit: int | None = None) -> None:
        with self.lock:
            older = self.spans.pop(key, None)
            self.spans[key] = (span, end_ns)
            oldest = None
            if limit is not None and len(self.spans) > limit:
                oldest = self.spans.pop(next(iter(self.spans)))
        for stale in (older, oldest):
            if stale is not None:
                stale[0].end(end_time=stale[1])

    def pop(self, key: tuple[str, str]) -> tuple[Span, int] | None:
        with self.lock:
            return self.spans.pop(key, None)

    def end_all(self) -> None:
        with self.lock:
            pending, self.spans = list(self.spans.values()), {}
        for span, end_ns in pending:
            span.end(end_time=end_ns)


class AgentSpan:
    """One ``invoke_agent {agent}`` span (from :meth:`Recorder.agent_span`).

    As a context manager it is current inside the ``with`` block. Code that works for an
    agent in pieces (a stream: opened, read and closed by the caller's loop) uses
    :meth:`start`, then :meth:`activate`/:meth:`deactivate` around each piece, and
    :meth:`finish`: the span is current only while amm works, never in the caller's code
    between the pieces.
    """

    __slots__ = ("_attrs", "_name", "_pending", "_recorder", "_tokens", "span")

    def __init__(self, recorder: Recorder, name: str, attrs: dict[str, Any]) -> None:
        self._recorder = recorder
        self._name = name
        self._attrs = attrs
        self.span: Span = trace.INVALID_SPAN
        self._pending: _Pending | None = None  # made by start()
        self._tokens: tuple[object, Token[_Pending | None]] | None = None

    def start(self) -> Span:
        """Open the span (a child of the current span), without making it current."""
        rec = self._recorder
        outer = rec._scope.get()
        # A nested agent inherits its caller's session and user unless given its own.
        inherited = {**(outer.inherited if outer is not None else {}),
                     **{k: v for k, v in self._attrs.items() if k in _INHERITED}}
        attrs = {**inherited, **self._attrs}
        self.span = rec._tracer.start_span(self._name, kind=SpanKind.INTERNAL, attributes=attrs)
        self._pending = _Pending(self.span, inherited)
        return self.span

    def activate(self) -> tuple[object, Token[_Pending | None]]:
        """Make the span (and its scope) current; give the result to :meth:`deactivate`,
        in the same context."""
        return (otel_context.attach(trace.set_span_in_context(self.span)),
                self._recorder._scope.set(self._pending))

    def deactivate(self, tokens: tuple[object, Token[_Pending | None]]) -> None:
        """Undo :meth:`activate`."""
        self._recorder._scope.reset(tokens[1])
        otel_context.detach(tokens[0])  # type: ignore[arg-type]

    def finish(self, exc: BaseException | None = None) -> None:
        """End the span: its pending chat spans first, the counts of what ran in it, and
        ``error.type`` (the exception's ``error_type`` if it has one, else its class name)
        with ERROR status when ``exc`` is given."""
        scope = self._pending
        span = self.span
        if scope is None:  # never started
            return
        scope.end_all()
        if not span.is_recording():
            return
        span.set_attributes({
            c.GEN_AI_INVOKE_AGENT_INFERENCE_CALLS: scope.inference_calls,
            c.GEN_AI_INVOKE_AGENT_TOOL_CALLS: scope.tool_calls,
        })
        if exc is not None:
            error_type = getattr(exc, "error_type", None) or type(exc).__name__
            span.set_attribute(c.ERROR_TYPE, str(error_type))
            span.set_status(Status(StatusCode.ERROR, _status_text(str(exc))))
        span.end()

    def __enter__(self) -> Span:
        span = self.start()
        self._tokens = self.activate()
        return span

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        tokens, self._tokens = self._tokens, None
        if tokens is not None:
            self.deactivate(tokens)
        self.finish(exc)


class ToolSpan:
    """Context manager of one ``execute_tool {tool}`` span (from :meth:`Recorder.tool_span`).

    Entering yields this object: :meth:`set_result` records what the tool returned
    (content opt-in only). An exception sets ``error.type`` and ERROR status and
    re-raises; its message is kept only under the content opt-in, since a tool's
    error may quote its arguments.
    """

    __slots__ = ("_attrs", "_capture", "_ctx_token", "_name", "_recorder", "span")

    def __init__(self, recorder: Recorder, name: str, attrs: dict[str, Any], capture: bool) -> None:
        self._recorder = recorder
        self._name = name
        self._attrs = attrs
        self._capture = capture
        self.span: Span = trace.INVALID_SPAN
        self._ctx_token: object = None

    def __enter__(self) -> ToolSpan:
        rec = self._recorder
        scope = rec._scope.get()
        if scope is not None:
            scope.tool_calls += 1
        try:
            attrs = {**scope.inherited, **self._attrs} if scope is not None else self._attrs
            self.span = rec._tracer.start_span(self._name, kind=SpanKind.INTERNAL,
                                               attributes=attrs)
            self._ctx_token = otel_context.attach(trace.set_span_in_context(self.span))
        except Exception:  # telemetry must never fail the tool
            _log.exception("opening %s failed", self._name)
        return self

    def set_result(self, result: object) -> None:
        """Record the tool's result as ``gen_ai.tool.call.result`` (content opt-in only;
        a non-string is recorded as JSON)."""
        if not self._capture or not self.span.is_recording():
            return
        try:
            text = result if isinstance(result, str) else json.dumps(
                result, ensure_ascii=False, default=str)
            self.span.set_attribute(c.GEN_AI_TOOL_CALL_RESULT, text)
        except Exception:  # telemetry must never fail the tool
            _log.exception("recording the result of %s failed", self._name)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc is not None and self.span.is_recording():
                error_type = str(getattr(exc, "error_type", None) or type(exc).__name__)
                self.span.set_attribute(c.ERROR_TYPE, error_type)
                detail = _status_text(str(exc)) if self._capture else error_type
                self.span.set_status(Status(StatusCode.ERROR, detail))
            if self._ctx_token is not None:
                otel_context.detach(self._ctx_token)  # type: ignore[arg-type]
            self.span.end()
        except Exception:  # telemetry must never fail the tool
            _log.exception("closing %s failed", self._name)


class Recorder:
    """Implements :class:`~telemetry.events.EventSink`; fans each event out once.

    >>> rec = Recorder(listeners=[performance_monitor, cost_tracker])
    >>> with rec.agent_span("implementation", "task-1"):
    ...     rec.record(SelectionEvent(...)); rec.record(AttemptEvent(...))
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        listeners: Iterable[EventSink] = (),
        capture_content: str | bool | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        viewer_attributes: bool | None = None,
        quality_threshold: float | None = None,
        annotator: SpanAnnotator | None = None,
    ) -> None:
        """``viewer_attributes``: also write what trace viewers read (see
        :mod:`telemetry.viewers`); default from ``AMM_TELEMETRY_VIEWER_ATTRIBUTES``, on.
        ``quality_threshold``: label the ``overall`` evaluation ``pass``/``fail`` against it
        when the event has no label (no label when None). ``annotator``: receives each
        evaluated chat span (:mod:`telemetry.phoenix`); default from
        ``AMM_PHOENIX_ANNOTATIONS``, none."""
        tp = tracer_provider or trace.get_tracer_provider()
        mp = meter_provider or otel_metrics.get_meter_provider()
        self._tracer = tp.get_tracer(c.INSTRUMENTATION_SCOPE)
        self._finished = FinishedSpans(self._tracer)
        self._instruments = Instruments(mp)
        self._listeners: tuple[EventSink, ...] = tuple(listeners)
        self._content = ContentPolicy.resolve(capture_content)
        self._clock_ns = clock_ns
        self._viewer = viewer_attributes_enabled(viewer_attributes)
        self._quality_threshold = quality_threshold
        self._annotator = annotator if annotator is not None else _annotator_from_env(tp)
        self._scope: ContextVar[_Pending | None] = ContextVar(f"amm_pending_{id(self)}",
                                                              default=None)
        self._unscoped = _Pending()
        self._handlers: dict[type, Callable[[Any], None]] = {
            SelectionEvent: self._on_selection,
            AttemptEvent: self._on_attempt,
            QualityEvent: self._on_quality,
            FailoverEvent: self._on_failover,
            RateLimitedEvent: self._on_rate_limited,
            CacheEvent: self._on_cache,
            BudgetAlertEvent: self._on_budget_alert,
            HealthChangeEvent: self._on_health_change,
            DegradationEvent: self._on_degradation,
            ModelDemotedEvent: self._on_demoted,
        }

    def __repr__(self) -> str:
        return f"Recorder(listeners={len(self._listeners)}, content={self._content.mode})"

    # --- public ---------------------------------------------------------------------
    @property
    def annotator(self) -> SpanAnnotator | None:
        """Where evaluated chat spans also go (a :class:`~telemetry.phoenix.PhoenixAnnotator`),
        if anywhere."""
        return self._annotator

    def add_listener(self, listener: EventSink) -> None:
        """Add a listener that gets every recorded event (``listener.record(event)``)."""
        self._listeners = (*self._listeners, listener)

    def record(self, event: Event) -> None:
        """Fan ``event`` out to the current span, the metrics and every listener. Never raises."""
        handler = self._handlers.get(type(event))
        if handler is not None:
            try:
                handler(event)
            except Exception:  # telemetry must never fail the request
                _log.exception("recording %s failed", type(event).__name__)
        for listener in self._listeners:
            try:
                listener.record(event)
            except Exception:  # a broken listener must never break the call
                _log.exception("listener %r failed on %s", listener, type(event).__name__)

    def agent_span(self, agent_type: str, task_id: str, *, agent_name: str | None = None,
                   session_id: str | None = None, user_id: str | None = None,
                   attributes: Mapping[str, Any] | None = None) -> AgentSpan:
        """Context manager opening ``invoke_agent {agent}``; yields the span.

        ``session_id`` becomes ``gen_ai.conversation.id`` (and ``session.id`` for the
        viewers), ``user_id`` becomes ``user.id``; both are copied onto every span
        recorded inside (chat, select, evaluate, tools, nested agents), so a viewer
        can group and filter traces by them. ``attributes`` are added to this span
        only (amm's own names win over them).

        >>> with rec.agent_span("research", "task-1", session_id="chat-42", user_id="u-7"):
        ...     ...

        Nested use nests spans; an exception sets error status and ``error.type``
        (the exception's ``error_type`` if it has one, else its class name) and re-raises.
        """
        name = agent_name or agent_type
        attrs: dict[str, Any] = dict(attributes or {})
        if session_id:
            attrs[c.GEN_AI_CONVERSATION_ID] = str(session_id)
            if self._viewer:
                attrs[c.SESSION_ID] = str(session_id)
        if user_id:
            attrs[c.USER_ID] = str(user_id)
        attrs.update({c.GEN_AI_OPERATION_NAME: c.OP_INVOKE_AGENT, c.GEN_AI_AGENT_NAME: name,
                      c.AMM_AGENT_TYPE: agent_type, c.AMM_TASK_ID: task_id})
        if self._viewer:
            attrs.update(kind(c.OI_KIND_AGENT))
        return AgentSpan(self, c.agent_span_name(name), attrs)

    def tool_span(self, name: str, *, call_id: str | None = None, arguments: str | None = None,
                  tool_type: str = c.TOOL_TYPE_FUNCTION) -> ToolSpan:
        """Context manager opening ``execute_tool {name}`` under the current span; yields
        a :class:`ToolSpan`. ``arguments`` and the result are recorded only under the
        content opt-in.

        >>> with rec.tool_span("get_weather", call_id=call.id, arguments=call.arguments) as tool:
        ...     tool.set_result(get_weather(**call.parsed()))
        """
        attrs: dict[str, Any] = {c.GEN_AI_OPERATION_NAME: c.OP_EXECUTE_TOOL,
                                 c.GEN_AI_TOOL_NAME: name, c.GEN_AI_TOOL_TYPE: tool_type}
        if self._viewer:
            attrs.update(kind(c.OI_KIND_TOOL))
        if call_id is not None:
            attrs[c.GEN_AI_TOOL_CALL_ID] = call_id
        capture = self._content.on_span
        if capture and arguments is not None:
            attrs[c.GEN_AI_TOOL_CALL_ARGUMENTS] = arguments
        return ToolSpan(self, c.tool_span_name(name), attrs, capture)

    def end_pending(self) -> None:
        """End every chat span still waiting for a quality event (this scope and unscoped)."""
        scope = self._scope.get()
        if scope is not None:
            scope.end_all()
        self._unscoped.end_all()

    def observe_budget(self, source: Callable[[], float | None]) -> None:
        """Report ``source()`` (percent of the daily budget) as ``amm.budget.utilization``."""
        self._instruments.observe_budget(source)

    def observe_availability(self, source: Callable[[], Mapping[str, bool]]) -> None:
        """Report ``source()`` ({model: available}) as ``amm.model.available``."""
        self._instruments.observe_availability(source)

    # --- handlers -------------------------------------------------------------------
    def _times(self, start_ns: int, end_ns: int) -> tuple[int, int]:
        now = self._clock_ns()
        return (start_ns or now), (end_ns or now)

    def _on_selection(self, e: SelectionEvent) -> None:
        start, end = self._times(e.start_time_ns, e.end_time_ns)
        attrs: dict[str, Any] = {
            c.AMM_AGENT_TYPE: e.agent_type,
            c.AMM_TASK_ID: e.task_id,
            c.AMM_SELECTION_REASON: e.reason,
            c.AMM_SELECTION_PROPENSITY: float(e.propensity),
            c.AMM_SELECTION_CANDIDATES: _candidates_json(e),
            c.AMM_SELECTION_EXCLUDED: [f"{m}: {r}" for m, r in e.excluded.items()],
            c.AMM_SELECTION_POLICY: e.policy,
            c.AMM_SELECTION_STAGE: e.stage,
        }
        if e.policy_version:
            attrs[c.AMM_SELECTION_POLICY_VERSION] = e.policy_version
        if e.features:
            attrs[c.AMM_SELECTION_FEATURES] = _COMPACT_JSON.encode(dict(e.features))
        if e.stage == SELECTION_CACHE_HIT:
            attrs[c.AMM_CACHE_HIT] = True
        if e.chosen is not None:
            attrs[c.AMM_SELECTION_CHOSEN] = e.chosen
        if e.experiment is not None:
            attrs[c.AMM_EXPERIMENT_NAME] = e.experiment
        if e.arm is not None:
            attrs[c.AMM_EXPERIMENT_ARM] = e.arm
            attrs[c.AMM_SELECTION_ARM_HONOURED] = e.chosen == e.arm
        self._add_common(attrs, c.OI_KIND_CHAIN, self._scope.get())
        status = None if e.chosen is not None else Status(StatusCode.ERROR,
                                                          _status_text(e.reason))
        self._finished.emit(c.SPAN_SELECT, attrs, start, end, status)

    def _on_attempt(self, e: AttemptEvent) -> None:
        scope = self._scope.get()
        if scope is not None:
            scope.inference_calls += 1
        provider = c.provider_name(e.provider)
        self._instruments.attempt(e, provider)
        start, end = self._times(e.start_time_ns, e.end_time_ns)
        if not e.start_time_ns and e.latency_ms:
            start = end - int(e.latency_ms * 1e6)
        attrs: dict[str, Any] = {
            c.GEN_AI_OPERATION_NAME: c.OP_CHAT,
            c.GEN_AI_PROVIDER_NAME: provider,
            c.GEN_AI_REQUEST_MODEL: e.model_id,
            c.AMM_TASK_ID: e.task_id,
            c.AMM_AGENT_TYPE: e.agent_type,
            c.AMM_ATTEMPT: e.attempt,
            c.AMM_CACHE_HIT: False,
            c.AMM_COST_USD: float(e.cost_usd),
            c.GEN_AI_USAGE_INPUT_TOKENS: e.input_tokens,
            c.GEN_AI_USAGE_OUTPUT_TOKENS: e.output_tokens,
        }
        if e.response_model:
            attrs[c.GEN_AI_RESPONSE_MODEL] = e.response_model
        if e.response_id:
            attrs[c.GEN_AI_RESPONSE_ID] = e.response_id
        if e.finish_reason:
            attrs[c.GEN_AI_RESPONSE_FINISH_REASONS] = [e.finish_reason]
        if e.request_max_tokens is not None:
            attrs[c.GEN_AI_REQUEST_MAX_TOKENS] = e.request_max_tokens
        if e.request_temperature is not None:
            attrs[c.GEN_AI_REQUEST_TEMPERATURE] = float(e.request_temperature)
        if e.server_address:
            attrs[c.SERVER_ADDRESS] = e.server_address
        if e.server_port is not None:
            attrs[c.SERVER_PORT] = e.server_port
        if e.stream:
            attrs[c.GEN_AI_REQUEST_STREAM] = True
        if e.time_to_first_chunk_s is not None:
            attrs[c.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = float(e.time_to_first_chunk_s)
        if e.usage_estimated:  # amm.cost_usd is then priced from the estimate too
            attrs[c.AMM_USAGE_ESTIMATED] = True
            attrs[c.AMM_COST_ESTIMATED] = True
        if e.tool_call_count:
            attrs[c.AMM_TOOL_CALLS] = e.tool_call_count
        if not e.success:
            attrs[c.ERROR_TYPE] = e.error_type or c.ERROR_TYPE_OTHER
        if self._viewer:
            attrs.update(cost_attributes(e.cost_usd, e.input_cost_usd, e.output_cost_usd))
        if self._content.on_span:
            attrs.update(content_attributes(e))
            if self._viewer:
                self._add_io(attrs, scope, e)
        self._add_common(attrs, c.OI_KIND_LLM, scope)
        span = self._tracer.start_span(c.chat_span_name(e.model_id), kind=SpanKind.CLIENT,
                                       attributes=attrs, start_time=start)
        if self._content.on_event and span.is_recording():
            span.add_event(c.GEN_AI_INFERENCE_DETAILS, content_attributes(e), timestamp=end)
        if not e.success:
            # Without the content opt-in, what the provider quoted of the request goes too.
            contents = () if self._content.mode != c.CONTENT_NO_CONTENT else message_texts(
                e.input_messages, e.output_text)
            span.set_status(Status(StatusCode.ERROR, _status_text(
                e.error_message or e.error_type or "", contents)))
            span.end(end_time=end)
        elif not span.is_recording():
            span.end(end_time=end)
        else:
            if scope is None:
                self._unscoped.put((e.task_id, e.model_id), span, end, _MAX_UNSCOPED_PENDING)
            else:
                scope.put((e.task_id, e.model_id), span, end)

    def _on_quality(self, e: QualityEvent) -> None:
        self._instruments.quality_score(e)
        start, end = self._times(e.start_time_ns, e.end_time_ns)
        scores = {"overall": e.overall, "completeness": e.completeness,
                  "relevance": e.relevance, "coherence": e.coherence}
        key = (e.task_id, e.model_id)
        scope = self._scope.get()
        pending = (scope.pop(key) if scope is not None else None) or self._unscoped.pop(key)
        if pending is not None:
            chat, chat_end = pending
            label = e.label or self._threshold_label(e.overall)
            for name, value in scores.items():
                result: dict[str, Any] = {c.GEN_AI_EVALUATION_NAME: name,
                                          c.GEN_AI_EVALUATION_SCORE_VALUE: float(value)}
                if name == "overall":  # the label and explanation are the verdict's
                    if label is not None:
                        result[c.GEN_AI_EVALUATION_SCORE_LABEL] = label
                    if e.explanation:
                        result[c.GEN_AI_EVALUATION_EXPLANATION] = e.explanation
                chat.add_event(c.GEN_AI_EVALUATION_RESULT, result, timestamp=end)
            chat.end(end_time=chat_end)
            context = chat.get_span_context()
            if self._annotator is not None and context.trace_flags.sampled:
                self._annotator.annotate(format(context.span_id, "016x"), e, label)
        # amm.model_id, not gen_ai.request.model: viewers take any span with a request
        # model for an LLM call, and this one calls no model.
        attrs: dict[str, Any] = {
            c.AMM_MODEL_ID: e.model_id, c.AMM_AGENT_TYPE: e.agent_type,
            c.AMM_TASK_ID: e.task_id,
            **{f"amm.quality.{name}": float(value) for name, value in scores.items()},
        }
        self._add_common(attrs, c.OI_KIND_EVALUATOR, scope)
        self._finished.emit(c.SPAN_EVALUATE, attrs, start, end)

    def _threshold_label(self, overall: float) -> str | None:
        if self._quality_threshold is None:
            return None
        return c.EVAL_LABEL_PASS if overall >= self._quality_threshold else c.EVAL_LABEL_FAIL

    def _add_common(self, attrs: dict[str, Any], oi_kind: str, scope: _Pending | None) -> None:
        """The scope's session and user, and the span kind for the viewers."""
        if scope is not None:
            for key, value in scope.inherited.items():
                attrs.setdefault(key, value)
        if self._viewer:
            attrs.update(kind(oi_kind))

    def _add_io(self, attrs: dict[str, Any], scope: _Pending | None, e: AttemptEvent) -> None:
        """``input.value``/``output.value`` on the chat span and its agent span (content opt-in)."""
        text_in = input_text(e.input_messages)
        io: dict[str, Any] = {}
        if text_in is not None:
            io[c.INPUT_VALUE] = text_in
        if e.success and e.output_text is not None:
            io[c.OUTPUT_VALUE] = e.output_text
        attrs.update(io)
        agent = scope.agent if scope is not None else trace.INVALID_SPAN
        if io and agent.is_recording():
            # Last attempt wins: a failover's answer replaces nothing the first asked.
            agent.set_attributes(io)

    def _on_failover(self, e: FailoverEvent) -> None:
        self._instruments.failover(e)
        self._span_event(c.AMM_FAILOVER, {
            c.AMM_FAILOVER_FROM: e.from_model,
            c.AMM_FAILOVER_TO: e.to_model or "",
            c.AMM_FAILOVER_REASON: e.reason,
        })

    def _on_rate_limited(self, e: RateLimitedEvent) -> None:
        attrs: dict[str, Any] = {c.AMM_MODEL_ID: e.model_id, c.AMM_RATE_LIMIT_SOURCE: e.source}
        if e.retry_after_s is not None:
            attrs[c.AMM_RATE_LIMIT_RETRY_AFTER_S] = float(e.retry_after_s)
        self._span_event(c.AMM_RATE_LIMITED, attrs)

    def _on_cache(self, e: CacheEvent) -> None:
        self._instruments.cache_lookup(e)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(c.AMM_CACHE_HIT, e.hit)
            if e.hit and e.model_id:  # the model whose answer the cache served
                span.set_attribute(c.GEN_AI_RESPONSE_MODEL, e.model_id)

    def _on_budget_alert(self, e: BudgetAlertEvent) -> None:
        _log.warning("budget alert: %.0f%% of $%.2f used ($%.2f)", e.utilization_percent,
                     e.daily_budget, e.current_spend)
        self._span_event(c.AMM_BUDGET_ALERT, {
            c.AMM_BUDGET_THRESHOLD_PERCENT: float(e.threshold_percent),
            c.AMM_BUDGET_UTILIZATION_PERCENT: float(e.utilization_percent),
            c.AMM_BUDGET_CURRENT_SPEND: float(e.current_spend),
            c.AMM_BUDGET_DAILY: float(e.daily_budget),
        })

    def _on_health_change(self, e: HealthChangeEvent) -> None:
        _log.info("model %s is now %s", e.model_id,
                  "available" if e.is_available else "unavailable")
        attrs: dict[str, Any] = {c.AMM_MODEL_ID: e.model_id, c.AMM_HEALTH_AVAILABLE: e.is_available,
                                 c.AMM_HEALTH_CONSECUTIVE_FAILURES: e.consecutive_failures}
        if e.error:
            attrs[c.AMM_HEALTH_ERROR] = _status_text(e.error)
        self._span_event(c.AMM_HEALTH_CHANGE, attrs)

    def _on_degradation(self, e: DegradationEvent) -> None:
        _log.warning("model %s degraded on %s: %.4g vs baseline %.4g", e.model_id, e.metric,
                     e.current_value, e.baseline_value)
        attrs: dict[str, Any] = {
            c.AMM_MODEL_ID: e.model_id, c.AMM_DEGRADATION_METRIC: e.metric,
            c.AMM_DEGRADATION_CURRENT: float(e.current_value),
            c.AMM_DEGRADATION_BASELINE: float(e.baseline_value),
            c.AMM_DEGRADATION_THRESHOLD: float(e.threshold),
        }
        if e.agent_type:
            attrs[c.AMM_AGENT_TYPE] = e.agent_type
        self._span_event(c.AMM_DEGRADATION, attrs)

    def _on_demoted(self, e: ModelDemotedEvent) -> None:
        _log.warning("model %s demoted for %s: %s", e.model_id, e.agent_type, e.reason)
        self._span_event(c.AMM_MODEL_DEMOTED, {c.AMM_MODEL_ID: e.model_id,
                                               c.AMM_AGENT_TYPE: e.agent_type,
                                               c.AMM_REASON: e.reason})

    def _span_event(self, name: str, attrs: dict[str, Any], *, standalone: bool = True) -> None:
        """Add an event to the current span; with none (and ``standalone``), to a short span."""
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, attrs)
        elif standalone:
            with self._tracer.start_as_current_span(name, attributes=attrs) as own:
                own.add_event(name, attrs)


def _annotator_from_env(tp: TracerProvider) -> SpanAnnotator | None:
    """The annotator ``AMM_PHOENIX_ANNOTATIONS`` asks for; it flushes this recorder's
    tracer provider before each post, so spans reach Phoenix before their annotations."""
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider

    flush = tp.force_flush if isinstance(tp, SDKTracerProvider) else None
    return annotator_from_env(flush_spans=flush)


def _status_text(text: str, contents: Iterable[str] = (), limit: int = 200) -> str:
    """A span's status message: through the one redaction step, then shortened."""
    text = redact(text, contents=contents)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _candidates_json(e: SelectionEvent) -> str:
    """``amm.selection.candidates``: the decision's candidates as one JSON list (best
    first); an event without them (an older caller) gives its scores, probability unknown.

    Written by hand, not by ``json.dumps`` over dicts, and numbers to 6 significant
    digits: it runs on every selection for every eligible model (the chosen model's exact
    probability is ``amm.selection.propensity``). Formatting the numbers is most of the
    cost, so a model's quality, latency and success rate, which change only when its
    statistics do, are formatted once per value (34 candidates: 37 -> 21 -> 18 us)."""
    if not e.candidates:
        rows = [f'{_model_key(m)},"score":{_num(s)},"probability":null}}'
                for m, s in sorted(e.scores.items(), key=lambda kv: (-kv[1], kv[0]))]
        return "[" + ",".join(rows) + "]"
    # Every row's pieces into one format call (one C-level pass over all the numbers).
    candidates = e.candidates
    values = _row_values(candidates)
    # The statistics in the tails are made JSON-safe once; the rest is checked by a sum
    # (NaN and infinities carry through it; 2 us where searching the text took 6).
    if math.isfinite(sum([s + p + cost for _, s, p, cost, _, _, _ in candidates])):
        return _rows_format(len(candidates)) % values
    # A number that JSON cannot hold (or a sum too large for a float): row by row.
    rows = []
    for i in range(0, len(values), 5):
        head, s, p, cost, tail = values[i:i + 5]
        rows.append(head + _NOT_FINITE.sub("null", _MID % (s, p, cost)) + tail)
    return "[" + ",".join(rows) + "]"


@functools.lru_cache(maxsize=256)
def _rows_format(n: int) -> str:
    """The format of ``n`` candidate rows: each a model key, three numbers, a tail."""
    return "[" + ",".join(["%s" + _MID + "%s"] * n) + "]"


@functools.lru_cache(maxsize=4096)
def _model_key(model: str) -> str:
    return '{"model":' + json.dumps(model)


# json.dumps(x, separators=(",", ":")), without building an encoder per call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))
_MID = ',"score":%.6g,"probability":%.6g,"cost_usd":%.6g,'
_TAIL = '"quality":%.6g,"latency_ms":%.6g,"success_rate":%.6g}'
_NOT_FINITE = re.compile(r"-?(?:nan|inf)")
# A row's head (``{"model":...``) by model and its tail (the statistics) by their values:
# memos (same inputs, same strings), bounded; threads racing on them only recompute.
_HEADS: dict[str, str] = {}
_TAILS: dict[tuple[float, float, float], str] = {}


def _numbers(row: str) -> str:
    # JSON has no NaN/inf (SQLite's json functions would refuse the whole value): null.
    # The keys of _MID and _TAIL contain neither word, so only numbers match.
    return _NOT_FINITE.sub("null", row) if "nan" in row or "inf" in row else row


def _row_values(candidates: tuple[tuple[str, float, float, float, float, float, float], ...]
                ) -> tuple[Any, ...]:
    """Each candidate row's head, score, probability, cost and tail, in one flat tuple."""
    heads, tails = _HEADS, _TAILS
    try:
        return tuple([x for m, s, p, cost, q, lat, ok in candidates
                      for x in (heads[m], s, p, cost, tails[q, lat, ok])])
    except KeyError:  # a model or statistics not seen yet
        if len(heads) > 4096 or len(tails) > 4096:
            heads.clear()
            tails.clear()
        for m, _, _, _, q, lat, ok in candidates:
            heads[m] = _model_key(m)
            tails[q, lat, ok] = _numbers(_TAIL % (q, lat, ok))
    return tuple([x for m, s, p, cost, q, lat, ok in candidates  # (a racing clear: made again)
                  for x in (heads.get(m) or _model_key(m), s, p, cost,
                            tails.get((q, lat, ok)) or _numbers(_TAIL % (q, lat, ok)))])


def _num(x: float) -> str:
    # JSON has no NaN/inf (SQLite's json functions would refuse the whole value): null.
    return format(x, ".6g") if x - x == 0.0 else "null"
