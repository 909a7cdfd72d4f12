"""What a team that runs Jaeger, Tempo, Phoenix or Langfuse expects of amm's export.

Configuration as the OpenTelemetry specification says (service name, protocol
default, per-signal settings), failures said once, traces-only backends told once
that they get no metrics, and the attributes GenAI viewers read (span kinds, cost,
session, input/output only under the content opt-in). setup() installs global
providers (once per process), so each env-driven run is a subprocess.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from telemetry import conventions as c
from telemetry.events import AttemptEvent, QualityEvent, SelectionEvent
from telemetry.receiver import OTLPReceiver
from telemetry.recorder import Recorder
from telemetry.setup import otlp_endpoint, otlp_protocol
from tests.test_telemetry_recorder import failover_request

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, env: dict[str, str], *args: str, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AMM_TELEMETRY"))}
    clean.update(env)
    clean["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], cwd=ROOT,
                          env=clean, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


# --- configuration -------------------------------------------------------------------------
def test_the_protocol_defaults_to_http_protobuf_whatever_the_port(monkeypatch):
    for name in (c.ENV_OTLP_PROTOCOL, c.ENV_OTLP_TRACES_PROTOCOL, c.ENV_OTLP_METRICS_PROTOCOL,
                 c.ENV_OTLP_TRACES_ENDPOINT, c.ENV_OTLP_METRICS_ENDPOINT):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(c.ENV_OTLP_ENDPOINT, "http://127.0.0.1:6006/")
    assert otlp_protocol("traces") == otlp_protocol("metrics") == "http/protobuf"
    assert otlp_endpoint("traces") == "http://127.0.0.1:6006/v1/traces"
    monkeypatch.setenv(c.ENV_OTLP_ENDPOINT, "http://127.0.0.1:4317")  # no port guessing either
    assert otlp_protocol("traces") == "http/protobuf"
    monkeypatch.setenv(c.ENV_OTLP_PROTOCOL, "grpc")
    monkeypatch.setenv(c.ENV_OTLP_METRICS_PROTOCOL, "http/protobuf")
    monkeypatch.setenv(c.ENV_OTLP_METRICS_ENDPOINT, "http://metrics:4318/v1/metrics")
    assert otlp_protocol("traces") == "grpc" and otlp_endpoint("traces") == "http://127.0.0.1:4317"
    assert otlp_protocol("metrics") == "http/protobuf"
    assert otlp_endpoint("metrics") == "http://metrics:4318/v1/metrics"


DRIVER = """
    import json, sys, time
    import telemetry.setup as ts
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from tests.test_telemetry_recorder import failover_request
    reader = InMemoryMetricReader()
    tel = ts.setup(metric_readers=[reader])
    rec = tel.recorder()
    for _ in range(int(sys.argv[1])):
        failover_request(rec)
        tel.force_flush()
        time.sleep(float(sys.argv[2]))
    failures = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == "amm.telemetry.export.failures":
                    for p in m.data.data_points:
                        signal = p.attributes["amm.telemetry.signal"]
                        key = signal + ":" + p.attributes["error.type"]
                        failures[key] = p.value
    tel.shutdown()
    print(json.dumps({"failures": failures,
                      "guards": [[g.signal, g.protocol, g.stopped] for g in tel.guards]}))
"""


def test_with_no_protocol_set_spans_go_over_http_protobuf():
    with OTLPReceiver() as rx:
        run(DRIVER, {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.http_endpoint,
                     "OTEL_METRICS_EXPORTER": "none"}, "1", "0")
        assert rx.wait_for(5, timeout=10)
        assert {s.transport for s in rx.spans()} == {"http"}


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_traces_only_backend_gets_one_warning_and_no_more_metrics(protocol):
    with OTLPReceiver(metrics=False) as rx:
        endpoint = rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint
        proc = run(DRIVER, {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                            "OTEL_METRIC_EXPORT_INTERVAL": "100"}, "8", "0.15")
        out = json.loads(proc.stdout.splitlines()[-1])
        assert rx.wait_for(40, timeout=10)  # the traces all arrived
        refused = rx.refused
    assert proc.stderr.count("does not accept metrics") == 1, proc.stderr
    assert "Failed to export" not in proc.stderr and "Method Not Allowed" not in proc.stderr
    assert refused == 1  # about ten exports were due; one was tried
    assert ["metrics", protocol, True] in out["guards"]
    assert ["traces", protocol, False] in out["guards"]


def test_a_backend_that_is_down_is_reported_once_and_counted():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run(DRIVER, {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                        "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5", "OTEL_METRICS_EXPORTER": "none",
                        "OTEL_LOGS_EXPORTER": "none"},
               "3", "0")
    out = json.loads(proc.stdout.splitlines()[-1])
    warnings = [line for line in proc.stderr.splitlines() if "export to" in line]
    assert len(warnings) == 1, proc.stderr
    assert "Is the backend running" in warnings[0]
    assert "Failed to export" not in proc.stderr.replace(warnings[0], "")
    assert sum(v for k, v in out["failures"].items() if k.startswith("traces:")) >= 3


SERVICE = """
    import asyncio, json, os, sys
    from amm._resources import demo_registry
    from amm.api_key_manager import APIKeyManager
    from amm.manager import ModelManager
    from amm.models import ModelRequest
    from amm.sim import Simulator, demo_profiles
    explicit = sys.argv[2] or None

    async def main():
        keys = APIKeyManager()
        for provider in ("openai", "anthropic", "google"):
            keys.add_key(provider, f"sim-key-{provider}-0123456789abcdef")
        with demo_registry() as registry:
            manager = ModelManager.from_config(registry, data_dir=sys.argv[1], key_manager=keys,
                                               start_health_checks=False, service_name=explicit)
        async with manager:
            await manager.complete(ModelRequest(prompt="Say hi", agent_type="docs", task_id="t1"))

    with Simulator(demo_profiles(), seed=1) as sim:
        os.environ["AMM_SIM_URL"] = sim.base_url
        asyncio.run(main())
"""


def services(store: Path) -> set[str]:
    return {r[0] for r in sqlite3.connect(store).execute("SELECT ServiceName FROM otel_traces")}


@pytest.mark.parametrize(("env", "explicit", "expected"), [
    ({"OTEL_SERVICE_NAME": "my-agents"}, "", "my-agents"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,team=x"}, "", "from-attrs"),
    ({"OTEL_SERVICE_NAME": "my-agents"}, "given-in-code", "given-in-code"),
    ({}, "", "amm"),
])
def test_from_config_takes_the_service_name_from_the_environment(tmp_path, env, explicit, expected):
    run(SERVICE, env, str(tmp_path / "data"), explicit)
    assert services(tmp_path / "data" / "amm.db") == {expected}


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_amm_demo_sends_every_span_under_OTEL_SERVICE_NAME(tmp_path, protocol):
    with OTLPReceiver(metrics=False) as rx:
        endpoint = rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env |= {"OTEL_SERVICE_NAME": "demo-agents", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
        if protocol == "grpc":
            env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
        proc = subprocess.run([sys.executable, "-m", "amm", "demo", "--requests", "20",
                               "--data-dir", str(tmp_path / "data")], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        store = tmp_path / "data" / "amm.db"
        sent = sqlite3.connect(store).execute("SELECT COUNT(*) FROM otel_traces").fetchone()[0]
        assert rx.wait_for(sent, timeout=20)
        received = rx.spans()
    assert len(received) == sent
    assert {s.resource["service.name"] for s in received} == {"demo-agents"}
    assert {s.resource["openinference.project.name"] for s in received} == {"demo-agents"}
    assert services(store) == {"demo-agents"}
    assert f"traces: exported to {endpoint}" in proc.stdout
    assert "set OTEL_EXPORTER_OTLP_ENDPOINT" not in proc.stdout
    assert proc.stderr.count("does not accept metrics") <= 1


# --- what viewers read -------------------------------------------------------------------
def kinds(otel) -> dict[str, str]:
    return {s.name: s.attributes.get(c.OPENINFERENCE_SPAN_KIND) for s in otel.spans()}


def test_every_span_has_the_kind_viewers_classify_by(otel):
    failover_request(Recorder(tracer_provider=otel.tracer_provider,
                              meter_provider=otel.meter_provider))
    assert kinds(otel) == {"invoke_agent implementation": "AGENT", "amm.select": "CHAIN",
                           "chat gpt-4-turbo": "LLM", "chat claude-3.5-sonnet": "LLM",
                           "amm.evaluate": "EVALUATOR"}
    evaluate = otel.span("amm.evaluate")
    assert c.GEN_AI_REQUEST_MODEL not in evaluate.attributes  # else viewers call it an LLM
    assert evaluate.attributes[c.AMM_MODEL_ID] == "claude-3.5-sonnet"
    ok = otel.span("chat claude-3.5-sonnet")
    assert ok.attributes[c.GEN_AI_USAGE_COST] == ok.attributes[c.LLM_COST_TOTAL] == 0.0042


def test_the_viewer_attributes_switch_off_leaves_the_conventions_alone(otel, monkeypatch):
    monkeypatch.setenv(c.ENV_VIEWER_ATTRIBUTES, "false")
    failover_request(Recorder(tracer_provider=otel.tracer_provider,
                              meter_provider=otel.meter_provider))
    for span in otel.spans():
        assert not {c.OPENINFERENCE_SPAN_KIND, c.LLM_COST_TOTAL, c.GEN_AI_USAGE_COST,
                    c.SESSION_ID} & set(span.attributes)
    assert otel.span("chat claude-3.5-sonnet").attributes[c.AMM_COST_USD] == 0.0042


def test_session_and_user_reach_every_span_of_the_agent(otel):
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    with rec.agent_span("research", "t-1", session_id="chat-42", user_id="u-7",
                        attributes={"app.tenant": "acme"}):
        rec.record(SelectionEvent(agent_type="research", task_id="t-1", chosen="m", reason="r",
                                  scores={"m": 1.0}, excluded={}))
        with rec.agent_span("helper", "t-2"):
            rec.record(AttemptEvent("m", "openai", "helper", "t-2", 1, 5.0, True))
    for span in otel.spans():
        assert (span.attributes[c.SESSION_ID] == span.attributes[c.GEN_AI_CONVERSATION_ID]
                == "chat-42")
        assert span.attributes[c.USER_ID] == "u-7"
    assert otel.span("invoke_agent research").attributes["app.tenant"] == "acme"


MESSAGES = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "SECRET-PROMPT"})


def one_call(rec: Recorder) -> None:
    with rec.agent_span("research", "t-1"):
        rec.record(AttemptEvent("m", "openai", "research", "t-1", 1, 5.0, True, input_tokens=3,
                                output_tokens=4, cost_usd=0.01, input_messages=MESSAGES,
                                output_text="SECRET-ANSWER"))
        rec.record(QualityEvent("m", "research", "t-1", 0.6, 0.7, 0.6, 0.5))


def everything(otel) -> str:
    return json.dumps([[dict(s.attributes), [dict(e.attributes) for e in s.events]]
                       for s in otel.spans()], default=str)


def test_no_message_content_leaves_without_the_opt_in(otel, monkeypatch):
    monkeypatch.delenv(c.ENV_CAPTURE_MESSAGE_CONTENT, raising=False)
    one_call(Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider))
    dump = everything(otel)
    assert "SECRET" not in dump and c.INPUT_VALUE not in dump and c.OUTPUT_VALUE not in dump


def test_with_the_opt_in_the_agent_span_shows_input_and_output(otel):
    one_call(Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider,
                      capture_content="SPAN_ONLY"))
    for name in ("invoke_agent research", "chat m"):
        attrs = otel.span(name).attributes
        assert (attrs[c.INPUT_VALUE], attrs[c.OUTPUT_VALUE]) == ("SECRET-PROMPT", "SECRET-ANSWER")


def test_quality_is_labelled_against_the_threshold_when_given(otel):
    one_call(Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider,
                      quality_threshold=0.7))
    labels = {
        e.attributes[c.GEN_AI_EVALUATION_NAME]: e.attributes.get(c.GEN_AI_EVALUATION_SCORE_LABEL)
        for e in otel.span("chat m").events if e.name == c.GEN_AI_EVALUATION_RESULT}
    assert labels == {"overall": "fail", "completeness": None, "relevance": None, "coherence": None}
