"""The recorder fans one event out to spans, metrics and listeners (SDK in-memory exporter)."""

from __future__ import annotations

import asyncio
import json

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from telemetry import conventions as c
from telemetry.events import (
    AttemptEvent,
    BudgetAlertEvent,
    CacheEvent,
    DegradationEvent,
    FailoverEvent,
    HealthChangeEvent,
    ModelDemotedEvent,
    QualityEvent,
    RateLimitedEvent,
    SelectionEvent,
)
from telemetry.recorder import Recorder
from telemetry.stats import RollingStats

T0 = 1_760_000_000_000_000_000  # epoch ns


class StatsListener:
    """What the lead wires: rolling stats that learn from attempts and quality."""

    def __init__(self) -> None:
        self.stats = RollingStats(clock=lambda: T0 / 1e9)
        self.events: list[object] = []

    def record(self, event: object) -> None:
        self.events.append(event)
        if isinstance(event, AttemptEvent):
            self.stats.observe_attempt(event.model_id, event.agent_type, event.latency_ms,
                                       event.success, event.error_type, event.cost_usd,
                                       event.input_tokens, event.output_tokens)
        elif isinstance(event, QualityEvent):
            self.stats.observe_quality(event.model_id, event.agent_type, event.overall)


def failover_request(rec: Recorder) -> None:
    """The events of one request that fails over once, then succeeds."""
    with rec.agent_span("implementation", "task-7"):
        rec.record(CacheEvent(hit=False, agent_type="implementation", task_id="task-7"))
        rec.record(SelectionEvent(
            agent_type="implementation", task_id="task-7", chosen="gpt-4-turbo",
            reason="experiment arm", scores={"gpt-4-turbo": 0.81, "claude-3.5-sonnet": 0.77},
            excluded={"gemini-pro": "unavailable"}, experiment="impl-ab", arm="gpt-4-turbo",
            propensity=0.5, start_time_ns=T0, end_time_ns=T0 + 100_000))
        rec.record(AttemptEvent(
            model_id="gpt-4-turbo", provider="openai", agent_type="implementation",
            task_id="task-7", attempt=1, latency_ms=30.0, success=False,
            error_type="ProviderError", error_message="HTTP 503 from provider",
            server_address="127.0.0.1", server_port=8080, request_max_tokens=500,
            request_temperature=0.2, start_time_ns=T0 + 200_000, end_time_ns=T0 + 30_200_000))
        rec.record(FailoverEvent("gpt-4-turbo", "claude-3.5-sonnet", "provider_error",
                                 "implementation", "task-7"))
        rec.record(AttemptEvent(
            model_id="claude-3.5-sonnet", provider="anthropic", agent_type="implementation",
            task_id="task-7", attempt=2, latency_ms=250.0, success=True, input_tokens=120,
            output_tokens=340, cost_usd=0.0042, finish_reason="stop",
            response_model="claude-3-5-sonnet-20241022", response_id="msg_1",
            server_address="127.0.0.1", server_port=8080, request_max_tokens=500,
            request_temperature=0.2, start_time_ns=T0 + 31_000_000, end_time_ns=T0 + 281_000_000))
        rec.record(QualityEvent("claude-3.5-sonnet", "implementation", "task-7", overall=0.82,
                                completeness=0.9, relevance=0.8, coherence=0.75,
                                start_time_ns=T0 + 282_000_000, end_time_ns=T0 + 283_000_000))


def test_failover_request_builds_the_span_tree_with_every_attribute(otel):
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider,
                   clock_ns=lambda: T0 + 300_000_000)
    failover_request(rec)

    agent = otel.span("invoke_agent implementation")
    select = otel.span("amm.select")
    failed = otel.span("chat gpt-4-turbo")
    ok = otel.span("chat claude-3.5-sonnet")
    evaluate = otel.span("amm.evaluate")
    assert len(otel.spans()) == 5
    assert agent.parent is None
    for child in (select, failed, ok, evaluate):
        assert child.parent.span_id == agent.context.span_id
        assert child.context.trace_id == agent.context.trace_id

    assert dict(agent.attributes) == {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "implementation",
        "amm.agent_type": "implementation", "amm.task_id": "task-7", "amm.cache.hit": False,
        "gen_ai.invoke_agent.inference_calls": 2, "gen_ai.invoke_agent.tool_calls": 0,
        "openinference.span.kind": "AGENT"}

    assert select.attributes["amm.selection.chosen"] == "gpt-4-turbo"
    assert select.attributes["amm.selection.reason"] == "experiment arm"
    assert select.attributes["amm.selection.propensity"] == 0.5
    assert select.attributes["amm.experiment.name"] == "impl-ab"
    assert select.attributes["amm.experiment.arm"] == "gpt-4-turbo"
    assert json.loads(select.attributes["amm.selection.candidates"]) == [
        {"model": "gpt-4-turbo", "score": 0.81, "probability": None},
        {"model": "claude-3.5-sonnet", "score": 0.77, "probability": None}]
    assert list(select.attributes["amm.selection.excluded"]) == ["gemini-pro: unavailable"]
    assert (select.start_time, select.end_time) == (T0, T0 + 100_000)

    assert failed.kind is SpanKind.CLIENT
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "ProviderError"
    assert failed.attributes["amm.attempt"] == 1
    assert (failed.start_time, failed.end_time) == (T0 + 200_000, T0 + 30_200_000)

    assert ok.kind is SpanKind.CLIENT
    assert ok.status.status_code is StatusCode.UNSET
    assert dict(ok.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-3.5-sonnet",
        "gen_ai.response.model": "claude-3-5-sonnet-20241022",
        "gen_ai.response.id": "msg_1",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 340,
        "gen_ai.request.max_tokens": 500,
        "gen_ai.request.temperature": 0.2,
        "server.address": "127.0.0.1",
        "server.port": 8080,
        "amm.cost_usd": 0.0042,
        "amm.cache.hit": False,
        "amm.attempt": 2,
        "amm.task_id": "task-7",
        "amm.agent_type": "implementation",
        "gen_ai.usage.cost": 0.0042,
        "llm.cost.total": 0.0042,
        "openinference.span.kind": "LLM",
    }
    assert "gen_ai.system" not in ok.attributes
    # Held open for the quality event, then ended with the attempt's own end time.
    assert (ok.start_time, ok.end_time) == (T0 + 31_000_000, T0 + 281_000_000)
    evals = {e.attributes["gen_ai.evaluation.name"]: e.attributes["gen_ai.evaluation.score.value"]
             for e in ok.events if e.name == "gen_ai.evaluation.result"}
    assert evals == {"overall": 0.82, "completeness": 0.9, "relevance": 0.8, "coherence": 0.75}

    assert evaluate.attributes["amm.quality.overall"] == 0.82
    failovers = [e for e in agent.events if e.name == "amm.failover"]
    assert [dict(e.attributes) for e in failovers] == [{
        "amm.failover.from": "gpt-4-turbo", "amm.failover.to": "claude-3.5-sonnet",
        "amm.failover.reason": "provider_error"}]


def test_failover_request_records_every_metric_point(otel):
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    failover_request(rec)

    durations = {p.attributes["gen_ai.request.model"]: p
                 for p in otel.points(c.METRIC_OPERATION_DURATION)}
    assert durations["gpt-4-turbo"].attributes == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4-turbo", "error.type": "ProviderError"}
    assert durations["gpt-4-turbo"].sum == pytest.approx(0.030)
    assert durations["claude-3.5-sonnet"].sum == pytest.approx(0.250)
    assert "error.type" not in durations["claude-3.5-sonnet"].attributes
    assert tuple(durations["claude-3.5-sonnet"].explicit_bounds) == c.DURATION_BUCKETS_S

    tokens = {p.attributes["gen_ai.token.type"]: p for p in otel.points(c.METRIC_TOKEN_USAGE)}
    assert tokens["input"].sum == 120 and tokens["output"].sum == 340
    assert tuple(tokens["input"].explicit_bounds) == c.TOKEN_BUCKETS

    [cost] = otel.points(c.METRIC_COST)
    assert cost.value == pytest.approx(0.0042)
    [failover] = otel.points(c.METRIC_FAILOVERS)
    assert failover.value == 1 and failover.attributes["amm.failover.from"] == "gpt-4-turbo"
    [cache] = otel.points(c.METRIC_CACHE_REQUESTS)
    assert cache.value == 1 and cache.attributes["amm.cache.result"] == "miss"
    [quality] = otel.points(c.METRIC_QUALITY_SCORE)
    assert quality.sum == pytest.approx(0.82) and quality.count == 1


def test_observable_gauges_report_budget_and_availability(otel):
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    rec.observe_budget(lambda: 42.5)
    rec.observe_availability(lambda: {"a": True, "b": False})
    rec.observe_availability(lambda: 1 / 0)  # a broken source is logged, not raised
    [budget] = otel.points(c.METRIC_BUDGET_UTILIZATION)
    assert budget.value == 42.5
    avail = {p.attributes["gen_ai.request.model"]: p.value
             for p in otel.points(c.METRIC_MODEL_AVAILABLE)}
    assert avail == {"a": 1, "b": 0}


def test_listeners_learn_even_when_tracing_is_sampled_off(otel):
    exporter = InMemorySpanExporter()
    tp = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    listener = StatsListener()
    rec = Recorder(tracer_provider=tp, meter_provider=otel.meter_provider, listeners=[listener])
    failover_request(rec)

    assert exporter.get_finished_spans() == ()
    snap = listener.stats.snapshot("claude-3.5-sonnet")
    assert snap is not None and snap.count == 1 and snap.mean_quality == pytest.approx(0.82)
    assert listener.stats.snapshot("gpt-4-turbo").errors == {"ProviderError": 1}
    assert len(listener.events) == 6
    # Metrics do not depend on sampling either.
    assert len(otel.points(c.METRIC_OPERATION_DURATION)) == 2


def test_listeners_learn_with_no_sdk_installed():
    listener = StatsListener()
    rec = Recorder(listeners=[listener])  # global no-op/proxy providers
    failover_request(rec)
    assert listener.stats.snapshot("claude-3.5-sonnet").count == 1


def test_a_raising_listener_is_logged_and_the_others_still_learn(otel, caplog):
    class Broken:
        def record(self, event: object) -> None:
            raise RuntimeError("listener bug")

    good = StatsListener()
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider,
                   listeners=[Broken(), good])
    failover_request(rec)
    assert len(good.events) == 6
    assert "listener bug" in caplog.text


def test_agent_span_sets_error_type_and_reraises(otel):
    class QuotaError(Exception):
        error_type = "QuotaExceededError"

    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    with pytest.raises(QuotaError), rec.agent_span("review", "t-err"):
        raise QuotaError("no quota")
    span = otel.span("invoke_agent review")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "QuotaExceededError"


def test_nested_agent_spans_nest(otel):
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    with (rec.agent_span("planner", "t1", agent_name="lead-planner"),
          rec.agent_span("research", "t2")):
        pass
    outer, inner = otel.span("invoke_agent lead-planner"), otel.span("invoke_agent research")
    assert inner.parent.span_id == outer.context.span_id
    assert outer.attributes["gen_ai.agent.name"] == "lead-planner"


def test_pending_chat_span_is_ended_when_the_agent_span_ends_without_quality(otel):
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    with rec.agent_span("review", "t3"):
        rec.record(AttemptEvent("m", "openai", "review", "t3", 1, 10.0, True,
                                start_time_ns=T0, end_time_ns=T0 + 10_000_000))
        assert [s.name for s in otel.spans()] == []  # still waiting for a quality event
    chat = otel.span("chat m")
    assert chat.end_time == T0 + 10_000_000
    assert chat.parent.span_id == otel.span("invoke_agent review").context.span_id


def test_end_pending_ends_unscoped_chat_spans(otel):
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    rec.record(AttemptEvent("m", "ollama", "review", "t4", 1, 10.0, True))
    assert otel.spans() == []
    rec.end_pending()
    assert otel.span("chat m").attributes["gen_ai.provider.name"] == "ollama"


async def test_concurrent_tasks_never_mix_pending_spans(otel):
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)

    async def request(task: str, quality: float) -> None:
        with rec.agent_span("review", task):
            rec.record(AttemptEvent("same-model", "openai", "review", task, 1, 5.0, True))
            await asyncio.sleep(0)
            rec.record(QualityEvent("same-model", "review", task, quality, 1.0, 1.0, 1.0))

    await asyncio.gather(request("a", 0.1), request("b", 0.9))
    agents = {s.attributes["amm.task_id"]: s
              for s in otel.spans() if s.name == "invoke_agent review"}
    for chat in (s for s in otel.spans() if s.name == "chat same-model"):
        task = chat.attributes["amm.task_id"]
        assert chat.parent.span_id == agents[task].context.span_id
        overall = [e.attributes["gen_ai.evaluation.score.value"] for e in chat.events
                   if e.attributes["gen_ai.evaluation.name"] == "overall"]
        assert overall == [{"a": 0.1, "b": 0.9}[task]]


def test_other_events_land_on_the_current_span_or_a_standalone_one(otel, caplog):
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    with rec.agent_span("review", "t5"):
        rec.record(RateLimitedEvent("m", "provider", retry_after_s=2.0))
        rec.record(BudgetAlertEvent(80.0, 81.5, 81.5, 100.0))
    rec.record(HealthChangeEvent("m", False, 3, "timeout"))
    rec.record(DegradationEvent("m", "quality", 0.5, 0.8, 0.8))
    rec.record(ModelDemotedEvent("m", "review", "low quality"))
    agent = otel.span("invoke_agent review")
    names = [e.name for e in agent.events]
    assert names == ["amm.rate_limited", "amm.budget.alert"]
    assert agent.events[0].attributes["amm.rate_limit.retry_after_s"] == 2.0
    for name in ("amm.health.change", "amm.degradation", "amm.model.demoted"):
        assert [e.name for e in otel.span(name).events] == [name]
    assert otel.span("amm.degradation").attributes["amm.degradation.metric"] == "quality"
    assert "degraded" in caplog.text and "demoted" in caplog.text


@pytest.mark.parametrize(("mode", "on_span", "on_event"), [
    (None, False, False), ("NO_CONTENT", False, False), ("SPAN_ONLY", True, False),
    ("EVENT_ONLY", False, True), ("SPAN_AND_EVENT", True, True), ("true", True, True),
    ("false", False, False), ("bogus", False, False),
])
def test_content_capture_follows_the_env_switch(otel, monkeypatch, mode, on_span, on_event):
    if mode is None:
        monkeypatch.delenv(c.ENV_CAPTURE_MESSAGE_CONTENT, raising=False)
    else:
        monkeypatch.setenv(c.ENV_CAPTURE_MESSAGE_CONTENT, mode)
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    rec.record(AttemptEvent("m", "openai", "review", "t6", 1, 5.0, False, error_type="x",
                            input_messages=({"role": "user", "content": "secret prompt"},),
                            output_text="secret answer"))
    span = otel.span("chat m")
    assert (c.GEN_AI_INPUT_MESSAGES in span.attributes) is on_span
    details = [e for e in span.events if e.name == c.GEN_AI_INFERENCE_DETAILS]
    assert bool(details) is on_event
    if on_span:
        msgs = json.loads(span.attributes[c.GEN_AI_INPUT_MESSAGES])
        assert msgs == [{"role": "user", "parts": [{"type": "text", "content": "secret prompt"}]}]
        assert "secret answer" in span.attributes[c.GEN_AI_OUTPUT_MESSAGES]
    if not on_span and not on_event:
        everything = repr([(s.attributes, [e.attributes for e in s.events]) for s in otel.spans()])
        assert "secret" not in everything


def test_capture_content_argument_beats_the_environment(otel, monkeypatch):
    monkeypatch.setenv(c.ENV_CAPTURE_MESSAGE_CONTENT, "SPAN_AND_EVENT")
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider,
                   capture_content=False)
    rec.record(AttemptEvent("m", "openai", "review", "t", 1, 5.0, False, output_text="secret"))
    assert c.GEN_AI_OUTPUT_MESSAGES not in otel.span("chat m").attributes


def test_provider_names_follow_the_genai_conventions():
    assert [c.provider_name(p) for p in ("openai", "anthropic", "google", "ollama", "Custom")] == [
        "openai", "anthropic", "gcp.gemini", "ollama", "custom"]


def test_a_failing_exporter_never_breaks_recording(caplog):
    class Exploding(InMemorySpanExporter):
        def export(self, spans):
            raise OSError("collector down")

    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(Exploding()))
    listener = StatsListener()
    rec = Recorder(tracer_provider=tp, listeners=[listener])
    failover_request(rec)  # must not raise
    assert listener.stats.snapshot("claude-3.5-sonnet").count == 1
    assert "collector down" in caplog.text


# --- the verdict of an evaluation: label and explanation -------------------------------------
def evaluation_events(otel, model: str = "m") -> dict[str, dict[str, object]]:
    return {str(e.attributes[c.GEN_AI_EVALUATION_NAME]): dict(e.attributes)
            for e in otel.span(f"chat {model}").events if e.name == c.GEN_AI_EVALUATION_RESULT}


def test_the_overall_evaluation_carries_the_events_label_and_explanation(otel):
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider,
                   quality_threshold=0.99)  # the event's own label wins over the recorder's
    with rec.agent_span("review", "t"):
        rec.record(AttemptEvent("m", "openai", "review", "t", 1, 5.0, True))
        rec.record(QualityEvent("m", "review", "t", 0.8, 0.9, 0.7, 0.8, label="pass",
                                explanation="completeness 0.90, relevance 0.70"))
    events = evaluation_events(otel)
    assert events["overall"] == {
        c.GEN_AI_EVALUATION_NAME: "overall", c.GEN_AI_EVALUATION_SCORE_VALUE: 0.8,
        c.GEN_AI_EVALUATION_SCORE_LABEL: "pass",
        c.GEN_AI_EVALUATION_EXPLANATION: "completeness 0.90, relevance 0.70"}
    assert events["relevance"] == {c.GEN_AI_EVALUATION_NAME: "relevance",
                                   c.GEN_AI_EVALUATION_SCORE_VALUE: 0.7}


@pytest.mark.parametrize(("scores", "label"),
                         [((1.0, 1.0, 1.0), "pass"), ((0.0, 0.1, 0.2), "fail")])
async def test_the_evaluator_labels_against_its_threshold_and_explains_the_breakdown(scores, label):
    from amm.evaluator import ResponseEvaluator
    from amm.models import ModelRequest, ModelResponse, QualityScore, TokenUsage

    class Fixed:
        def score(self, response, task):
            completeness, relevance, coherence = scores
            overall = 0.4 * completeness + 0.35 * relevance + 0.25 * coherence
            return QualityScore(overall, completeness, relevance, coherence)

    listener = StatsListener()
    evaluator = ResponseEvaluator(quality_threshold=0.7, scorer=Fixed(), events=listener)
    await evaluator.evaluate_response(
        ModelResponse(content="x", model_id="m", token_usage=TokenUsage(1, 1), latency_ms=1.0,
                      cost=0.0), ModelRequest(prompt="p", task_id="t", agent_type="review"))
    [event] = listener.events
    assert isinstance(event, QualityEvent) and event.label == label
    completeness, relevance, coherence = scores
    assert event.explanation == (
        f"completeness {completeness:.2f}, relevance {relevance:.2f}, coherence {coherence:.2f}; "
        f"overall {event.overall:.2f}, threshold 0.70")


async def test_an_overall_score_at_the_threshold_passes():
    from amm.evaluator import ResponseEvaluator
    from amm.models import ModelRequest, ModelResponse, QualityScore, TokenUsage

    class AtThreshold:
        def score(self, response, task):
            return QualityScore(0.7 - 1e-12, 0.7, 0.7, 0.7)  # a weighted sum off in the decimals

    listener = StatsListener()
    evaluator = ResponseEvaluator(quality_threshold=0.7, scorer=AtThreshold(), events=listener)
    await evaluator.evaluate_response(
        ModelResponse(content="x", model_id="m", token_usage=TokenUsage(1, 1), latency_ms=1.0,
                      cost=0.0), ModelRequest(prompt="p", task_id="t", agent_type="review"))
    assert listener.events[0].label == "pass"


def test_the_candidates_json_holds_every_row_and_no_number_json_cannot_hold(otel):
    """Each row's numbers as given (6 significant digits), NaN and infinities as null,
    model names quoted (also one that reads like a number JSON cannot hold), the same
    text whether a row's statistics are new or were seen before."""
    nan, inf = float("nan"), float("inf")
    rows = (("m-a", 0.8125, 0.5, 0.00123, 0.9, 310.0, 0.99),
            ('in"f', 0.5, 0.25, 2e-5, 0.7, 420.5, 1.0),
            ("nan-model", 0.25, 0.25, 0.0, 0.7, 420.5, 1.0))
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    expected = [
        {"model": "m-a", "score": 0.8125, "probability": 0.5, "cost_usd": 0.00123,
         "quality": 0.9, "latency_ms": 310.0, "success_rate": 0.99},
        {"model": 'in"f', "score": 0.5, "probability": 0.25, "cost_usd": 2e-5,
         "quality": 0.7, "latency_ms": 420.5, "success_rate": 1.0},
        {"model": "nan-model", "score": 0.25, "probability": 0.25, "cost_usd": 0.0,
         "quality": 0.7, "latency_ms": 420.5, "success_rate": 1.0}]
    odd = (("m-b", nan, 1.0, inf, nan, 0.0, 1.0), ("m-c", -inf, 0.0, 1.0, 0.5, inf, 0.5))
    for n, candidates in enumerate((rows, rows, odd)):
        rec.record(SelectionEvent(agent_type="a", task_id=f"t{n}", chosen=candidates[0][0],
                                  reason="r", candidates=candidates))
    texts = [s.attributes["amm.selection.candidates"] for s in otel.spans()
             if s.name == "amm.select"]
    assert json.loads(texts[0]) == expected and texts[1] == texts[0]
    assert json.loads(texts[2]) == [
        {"model": "m-b", "score": None, "probability": 1.0, "cost_usd": None,
         "quality": None, "latency_ms": 0.0, "success_rate": 1.0},
        {"model": "m-c", "score": None, "probability": 0.0, "cost_usd": 1.0,
         "quality": 0.5, "latency_ms": None, "success_rate": 0.5}]
