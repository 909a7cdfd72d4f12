"""Agent calls in telemetry: streamed attempts, tool calls, estimated usage, tool
execution spans and the invoke_agent call counts (SDK in-memory exporter and reader)."""

from __future__ import annotations

import json

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from telemetry import conventions as c
from telemetry.events import AttemptEvent
from telemetry.recorder import Recorder

T0 = 1_760_000_000_000_000_000  # epoch ns

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def recorder(otel, capture: str | bool | None = False) -> Recorder:
    return Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider,
                    capture_content=capture)


def attempt(**fields: object) -> AttemptEvent:
    base: dict[str, object] = dict(
        model_id="m", provider="openai", agent_type="review", task_id="t1", attempt=1,
        latency_ms=1500.0, success=True, input_tokens=10, output_tokens=20,
        cost_usd=0.001, finish_reason="stop", start_time_ns=T0,
        end_time_ns=T0 + 1_500_000_000)
    base.update(fields)
    return AttemptEvent(**base)  # type: ignore[arg-type]  # test-only keyword bag


def streamed(**fields) -> AttemptEvent:
    return attempt(stream=True, time_to_first_chunk_s=0.3, output_chunks=5, **fields)


def tool_attempt(**fields) -> AttemptEvent:
    return attempt(finish_reason="tool_calls", tool_call_count=1, output_text="",
                   input_messages=({"role": "user", "content": "Weather in Paris?"},),
                   tool_definitions=(WEATHER_TOOL,), output_tool_calls=(CALL,), **fields)


def chat(otel, rec: Recorder):
    rec.end_pending()
    return otel.span("chat m")


def everything(otel) -> str:
    return repr([(s.name, dict(s.attributes), s.status.description,
                  [(e.name, dict(e.attributes)) for e in s.events]) for s in otel.spans()])


# --- chat span ----------------------------------------------------------------------
def test_streamed_attempt_carries_stream_flag_and_time_to_first_chunk(otel):
    rec = recorder(otel)
    rec.record(streamed())
    span = chat(otel, rec)
    assert span.attributes[c.GEN_AI_REQUEST_STREAM] is True
    assert span.attributes[c.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == 0.3
    assert list(span.attributes[c.GEN_AI_RESPONSE_FINISH_REASONS]) == ["stop"]


def test_unstreamed_attempt_has_no_stream_attributes(otel):
    rec = recorder(otel)
    rec.record(attempt())
    span = chat(otel, rec)
    for name in (c.GEN_AI_REQUEST_STREAM, c.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                 c.AMM_USAGE_ESTIMATED, c.AMM_COST_ESTIMATED, c.AMM_TOOL_CALLS):
        assert name not in span.attributes


def test_estimated_usage_marks_usage_and_cost_as_estimated(otel):
    rec = recorder(otel)
    rec.record(attempt(usage_estimated=True))
    span = chat(otel, rec)
    assert span.attributes[c.AMM_USAGE_ESTIMATED] is True
    assert span.attributes[c.AMM_COST_ESTIMATED] is True
    assert span.attributes[c.AMM_COST_USD] == 0.001


def test_tool_call_count_and_finish_reason_without_content(otel, monkeypatch):
    monkeypatch.delenv(c.ENV_CAPTURE_MESSAGE_CONTENT, raising=False)
    rec = recorder(otel, capture=None)  # the default: nothing in the environment
    rec.record(tool_attempt())
    span = chat(otel, rec)
    assert span.attributes[c.AMM_TOOL_CALLS] == 1
    assert list(span.attributes[c.GEN_AI_RESPONSE_FINISH_REASONS]) == ["tool_calls"]
    for name in (c.GEN_AI_TOOL_DEFINITIONS, c.GEN_AI_OUTPUT_MESSAGES, c.GEN_AI_INPUT_MESSAGES):
        assert name not in span.attributes
    seen = everything(otel)
    for secret in ("Paris", "city", "Weather of a city", "parameters"):
        assert secret not in seen


def test_tool_definitions_and_output_tool_calls_under_the_opt_in(otel):
    rec = recorder(otel, capture="SPAN_ONLY")
    rec.record(tool_attempt())
    span = chat(otel, rec)
    assert json.loads(span.attributes[c.GEN_AI_TOOL_DEFINITIONS]) == [WEATHER_TOOL]
    assert json.loads(span.attributes[c.GEN_AI_OUTPUT_MESSAGES]) == [{
        "role": "assistant", "finish_reason": "tool_calls",
        "parts": [{"type": "tool_call", "id": "call_1", "name": "get_weather",
                   "arguments": {"city": "Paris"}}]}]


def test_output_message_keeps_text_next_to_flat_tool_calls(otel):
    rec = recorder(otel, capture=True)
    rec.record(attempt(output_text="Let me look.", tool_call_count=1, output_tool_calls=(
        {"id": "call_2", "name": "lookup", "arguments": "not json"},)))
    span = chat(otel, rec)
    parts = json.loads(span.attributes[c.GEN_AI_OUTPUT_MESSAGES])[0]["parts"]
    assert parts == [{"type": "text", "content": "Let me look."},
                     {"type": "tool_call", "id": "call_2", "name": "lookup",
                      "arguments": "not json"}]
    details = [e for e in span.events if e.name == c.GEN_AI_INFERENCE_DETAILS]
    assert details and c.GEN_AI_OUTPUT_MESSAGES in details[0].attributes


def test_input_messages_show_tool_calls_and_tool_results_under_the_opt_in(otel):
    rec = recorder(otel, capture="SPAN_ONLY")
    rec.record(attempt(input_messages=(
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
    ), output_text="It is 18C."))
    msgs = json.loads(chat(otel, rec).attributes[c.GEN_AI_INPUT_MESSAGES])
    assert msgs == [
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1",
                                         "name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1",
                                    "response": "18C, sunny"}]},
    ]


def test_event_only_capture_puts_tool_content_in_the_event_not_the_span(otel):
    rec = recorder(otel, capture="EVENT_ONLY")
    rec.record(tool_attempt())
    span = chat(otel, rec)
    assert c.GEN_AI_TOOL_DEFINITIONS not in span.attributes
    (details,) = [e for e in span.events if e.name == c.GEN_AI_INFERENCE_DETAILS]
    assert json.loads(details.attributes[c.GEN_AI_TOOL_DEFINITIONS]) == [WEATHER_TOOL]


# --- streaming metrics ----------------------------------------------------------------
def test_streamed_attempt_records_chunk_metrics_with_the_duration_attributes(otel):
    rec = recorder(otel)
    rec.record(streamed())
    (duration,) = otel.points(c.METRIC_OPERATION_DURATION)
    (ttfc,) = otel.points(c.METRIC_TIME_TO_FIRST_CHUNK)
    (per_chunk,) = otel.points(c.METRIC_TIME_PER_OUTPUT_CHUNK)
    assert ttfc.sum == pytest.approx(0.3)
    assert per_chunk.sum == pytest.approx((1.5 - 0.3) / 4)
    assert dict(ttfc.attributes) == dict(per_chunk.attributes) == dict(duration.attributes)
    assert tuple(ttfc.explicit_bounds) == c.DURATION_BUCKETS_S
    assert tuple(per_chunk.explicit_bounds) == c.DURATION_BUCKETS_S


def test_unstreamed_attempts_record_no_chunk_metrics(otel):
    rec = recorder(otel)
    rec.record(attempt())
    rec.record(attempt(time_to_first_chunk_s=0.2, output_chunks=3))  # not streamed
    assert len(otel.points(c.METRIC_OPERATION_DURATION)) == 1
    assert otel.points(c.METRIC_TIME_TO_FIRST_CHUNK) == []
    assert otel.points(c.METRIC_TIME_PER_OUTPUT_CHUNK) == []


def test_single_chunk_stream_records_time_to_first_chunk_only(otel):
    rec = recorder(otel)
    rec.record(attempt(stream=True, time_to_first_chunk_s=0.4, output_chunks=1))
    assert [p.count for p in otel.points(c.METRIC_TIME_TO_FIRST_CHUNK)] == [1]
    assert otel.points(c.METRIC_TIME_PER_OUTPUT_CHUNK) == []


def test_failed_stream_chunk_metrics_carry_the_error_type(otel):
    rec = recorder(otel)
    rec.record(streamed(success=False, error_type="StreamInterruptedError"))
    (ttfc,) = otel.points(c.METRIC_TIME_TO_FIRST_CHUNK)
    assert ttfc.attributes[c.ERROR_TYPE] == "StreamInterruptedError"


# --- execute_tool spans ---------------------------------------------------------------
def test_tool_span_nests_under_the_agent_span_without_content(otel):
    rec = recorder(otel)
    with rec.agent_span("review", "t1"), rec.tool_span(
            "get_weather", call_id="call_1", arguments='{"city": "Paris"}') as tool:
        tool.set_result("18C in Paris")
    span, agent = otel.span("execute_tool get_weather"), otel.span("invoke_agent review")
    assert span.kind is SpanKind.INTERNAL
    assert span.parent.span_id == agent.context.span_id
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes) == {
        c.GEN_AI_OPERATION_NAME: "execute_tool", c.GEN_AI_TOOL_NAME: "get_weather",
        c.GEN_AI_TOOL_CALL_ID: "call_1", c.GEN_AI_TOOL_TYPE: "function",
        c.OPENINFERENCE_SPAN_KIND: "TOOL"}
    assert "Paris" not in everything(otel)


def test_tool_span_records_arguments_and_result_under_the_opt_in(otel):
    rec = recorder(otel, capture="SPAN_AND_EVENT")
    with rec.tool_span("get_weather", call_id="call_1", arguments='{"city": "Paris"}') as tool:
        tool.set_result("18C")
    with rec.tool_span("count", tool_type="extension") as tool:
        tool.set_result({"n": 3})
    weather, count = otel.span("execute_tool get_weather"), otel.span("execute_tool count")
    assert weather.attributes[c.GEN_AI_TOOL_CALL_ARGUMENTS] == '{"city": "Paris"}'
    assert weather.attributes[c.GEN_AI_TOOL_CALL_RESULT] == "18C"
    assert json.loads(count.attributes[c.GEN_AI_TOOL_CALL_RESULT]) == {"n": 3}
    assert count.attributes[c.GEN_AI_TOOL_TYPE] == "extension"
    assert c.GEN_AI_TOOL_CALL_ID not in count.attributes


def test_tool_span_error_sets_error_type_and_reraises_without_leaking_the_message(otel):
    class ToolFailed(Exception):
        error_type = "tool_timeout"

    rec = recorder(otel)
    with pytest.raises(ValueError, match="Paris"), rec.tool_span("get_weather"):
        raise ValueError("no weather for Paris")
    with pytest.raises(ToolFailed), rec.tool_span("slow"):
        raise ToolFailed("gave up")
    span = otel.span("execute_tool get_weather")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[c.ERROR_TYPE] == "ValueError"
    assert otel.span("execute_tool slow").attributes[c.ERROR_TYPE] == "tool_timeout"
    assert "Paris" not in everything(otel)


def test_tool_span_error_message_is_kept_under_the_opt_in(otel):
    rec = recorder(otel, capture="SPAN_ONLY")
    with pytest.raises(ValueError), rec.tool_span("get_weather"):
        raise ValueError("no weather for Paris")
    assert otel.span("execute_tool get_weather").status.description == "no weather for Paris"


def test_spans_opened_inside_a_tool_span_nest_under_it(otel):
    rec = recorder(otel)
    with rec.tool_span("outer"), rec.tool_span("inner"):
        pass
    outer, inner = otel.span("execute_tool outer"), otel.span("execute_tool inner")
    assert outer.parent is None
    assert inner.parent.span_id == outer.context.span_id


def test_tool_span_costs_nothing_and_never_fails_with_tracing_off(otel):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    rec = Recorder(tracer_provider=TracerProvider(sampler=ALWAYS_OFF),
                   meter_provider=otel.meter_provider, capture_content=True)
    with rec.agent_span("review", "t1"), rec.tool_span("t", arguments="{}") as tool:
        tool.set_result("x")
    assert otel.spans() == []


# --- invoke_agent counts ----------------------------------------------------------------
def test_agent_span_counts_its_inference_calls_and_tool_executions(otel):
    rec = recorder(otel)
    with rec.agent_span("review", "t1"):
        rec.record(attempt(success=False, error_type="ProviderError"))
        rec.record(tool_attempt(attempt=2))
        with rec.tool_span("get_weather", call_id="call_1"):
            pass
        rec.record(attempt(attempt=3))
        with rec.agent_span("research", "t2"):  # a nested agent counts its own calls
            rec.record(attempt(task_id="t2"))
            with rec.tool_span("search"):
                pass
            with rec.tool_span("search"):
                pass
    outer, inner = otel.span("invoke_agent review"), otel.span("invoke_agent research")
    assert outer.attributes[c.GEN_AI_INVOKE_AGENT_INFERENCE_CALLS] == 3
    assert outer.attributes[c.GEN_AI_INVOKE_AGENT_TOOL_CALLS] == 1
    assert inner.attributes[c.GEN_AI_INVOKE_AGENT_INFERENCE_CALLS] == 1
    assert inner.attributes[c.GEN_AI_INVOKE_AGENT_TOOL_CALLS] == 2


def test_agent_span_without_calls_reports_zero_counts(otel):
    rec = recorder(otel)
    with rec.agent_span("review", "t1"):
        pass
    agent = otel.span("invoke_agent review")
    assert agent.attributes[c.GEN_AI_INVOKE_AGENT_INFERENCE_CALLS] == 0
    assert agent.attributes[c.GEN_AI_INVOKE_AGENT_TOOL_CALLS] == 0


def test_agent_span_counts_even_when_it_fails(otel):
    rec = recorder(otel)
    with pytest.raises(RuntimeError), rec.agent_span("review", "t1"):
        rec.record(attempt())
        raise RuntimeError("boom")
    agent = otel.span("invoke_agent review")
    assert agent.attributes[c.GEN_AI_INVOKE_AGENT_INFERENCE_CALLS] == 1
    assert agent.status.status_code is StatusCode.ERROR


# --- cost split (OpenInference llm.cost.prompt / llm.cost.completion) ----------------------
def test_the_chat_span_splits_its_cost_into_prompt_and_completion_when_known(otel):
    rec = recorder(otel)
    rec.record(attempt(cost_usd=0.0007, input_cost_usd=0.0001, output_cost_usd=0.0006))
    attrs = chat(otel, rec).attributes
    assert (attrs[c.LLM_COST_PROMPT], attrs[c.LLM_COST_COMPLETION]) == (0.0001, 0.0006)
    assert attrs[c.LLM_COST_TOTAL] == attrs[c.GEN_AI_USAGE_COST] == attrs[c.AMM_COST_USD] == 0.0007


def test_a_cost_of_unknown_split_is_written_as_a_total_only(otel):
    rec = recorder(otel)
    rec.record(attempt(cost_usd=0.0007))
    attrs = chat(otel, rec).attributes
    assert attrs[c.LLM_COST_TOTAL] == 0.0007
    assert c.LLM_COST_PROMPT not in attrs and c.LLM_COST_COMPLETION not in attrs


PRICED = {"models": [{
    "id": "priced", "provider": "openai", "name": "priced", "capabilities": ["x"],
    "cost_per_1k_input_tokens": 0.01, "cost_per_1k_output_tokens": 0.03,
    "rate_limits": {"requests_per_minute": 1, "tokens_per_minute": 1},
    "context_window": 10, "average_response_time_ms": 1}]}


class Sink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def record(self, event: object) -> None:
        self.events.append(event)


class FixedAdapter:
    """Answers every request with 1,000 input and 500 output tokens, at its own price."""

    async def complete(self, model, request, *, api_key, timeout_s):
        from amm.models import ModelResponse, TokenUsage

        return ModelResponse(content="An answer.", model_id=model.id,
                             token_usage=TokenUsage(1000, 500), latency_ms=0, cost=0.5)


async def client_attempts(model_id: str) -> list[AttemptEvent]:
    from amm.api_client import APIClientManager
    from amm.api_key_manager import APIKeyManager
    from amm.models import ModelRequest
    from amm.registry import ModelRegistry

    keys = APIKeyManager()
    keys.add_key("openai", "sk-test-key-one-aaaaaaaaaaaaaaaa")
    sink = Sink()
    async with APIClientManager(keys, {"openai": FixedAdapter()},
                                registry=ModelRegistry.from_dict(PRICED), events=sink) as client:
        await client.send_request(model_id, ModelRequest(prompt="hi", task_id="t", agent_type="a"))
    return [e for e in sink.events if isinstance(e, AttemptEvent)]


async def test_the_client_splits_a_registry_priced_cost_by_token_type():
    [event] = await client_attempts("priced")
    assert event.input_cost_usd == pytest.approx(0.01)  # 1,000 tokens x $0.01 / 1k
    assert event.output_cost_usd == pytest.approx(0.015)  # 500 tokens x $0.03 / 1k
    assert event.input_cost_usd + event.output_cost_usd == pytest.approx(event.cost_usd)


async def test_the_client_leaves_the_split_of_an_adapter_priced_cost_unknown():
    [event] = await client_attempts("openai/unregistered-model")
    assert event.cost_usd == 0.5
    assert event.input_cost_usd is None and event.output_cost_usd is None
