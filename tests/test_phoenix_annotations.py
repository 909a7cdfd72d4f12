"""Quality scores as Phoenix span annotations (telemetry.phoenix), against a local
stand-in of Phoenix's ``POST /v1/span_annotations`` (a real HTTP server). The real
Phoenix is in tests/test_phoenix.py."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from telemetry import conventions as c
from telemetry.events import AttemptEvent, QualityEvent
from telemetry.phoenix import PhoenixAnnotator, annotator_from_env
from telemetry.recorder import Recorder


class FakePhoenix:
    """Takes ``POST /v1/span_annotations`` like Phoenix (async mode: 200, empty data)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.posts.append({"path": self.path, "body": json.loads(body)})
                fake.headers.append(dict(self.headers))
                payload = json.dumps({"data": []}).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def annotations(self) -> list[dict[str, Any]]:
        return [a for post in self.posts for a in post["body"]["data"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def phoenix() -> Iterator[FakePhoenix]:
    fake = FakePhoenix()
    yield fake
    fake.close()


def quality(task: str = "t1", overall: float = 0.82, **fields: Any) -> QualityEvent:
    return QualityEvent("m", "research", task, overall, 0.9, 0.8, 0.75, **fields)


def evaluated_call(rec: Recorder, task: str = "t1", **fields: Any) -> None:
    with rec.agent_span("research", task):
        rec.record(AttemptEvent("m", "openai", "research", task, 1, 5.0, True, input_tokens=3,
                                output_tokens=4, cost_usd=0.01))
        rec.record(quality(task, **fields))


def test_an_evaluated_chat_span_becomes_four_annotations_with_label_and_explanation(otel, phoenix):
    annotator = PhoenixAnnotator(phoenix.url, interval_s=60)
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider,
                   annotator=annotator)
    evaluated_call(rec, label="pass", explanation="completeness 0.90, relevance 0.80")
    assert annotator.flush()
    chat_id = format(otel.span("chat m").context.span_id, "016x")
    [post] = phoenix.posts
    assert post["path"] == "/v1/span_annotations"
    by_name = {a["name"]: a for a in phoenix.annotations()}
    assert set(by_name) == set(c.EVAL_NAMES)
    assert {a["span_id"] for a in by_name.values()} == {chat_id}
    assert by_name["overall"]["result"] == {"score": 0.82, "label": "pass",
                                            "explanation": "completeness 0.90, relevance 0.80"}
    assert by_name["relevance"]["result"] == {"score": 0.8}
    assert {(a["annotator_kind"], a["identifier"]) for a in by_name.values()} == {("CODE", "amm")}
    assert by_name["overall"]["metadata"] == {"amm.model_id": "m", "amm.agent_type": "research",
                                              "amm.task_id": "t1"}
    assert annotator.posted == 1


def test_the_label_falls_back_to_the_recorders_threshold(otel, phoenix):
    annotator = PhoenixAnnotator(phoenix.url, interval_s=60)
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider,
                   annotator=annotator, quality_threshold=0.9)
    evaluated_call(rec)
    annotator.flush()
    [overall] = [a for a in phoenix.annotations() if a["name"] == "overall"]
    assert overall["result"] == {"score": 0.82, "label": "fail"}


def test_annotations_are_posted_in_batches_by_the_thread_after_the_spans_are_flushed(otel, phoenix):
    flushed: list[int] = []
    annotator = PhoenixAnnotator(phoenix.url, interval_s=0.05, batch_spans=3,
                                 flush_spans=lambda: flushed.append(len(phoenix.posts)))
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider,
                   annotator=annotator)
    for i in range(7):
        evaluated_call(rec, task=f"t{i}")
    deadline = time.monotonic() + 10
    while annotator.posted < 7 and time.monotonic() < deadline:
        time.sleep(0.02)
    annotator.shutdown()
    assert annotator.posted == 7 and annotator.failed == 0
    assert len(phoenix.annotations()) == 7 * 4
    assert all(len(p["body"]["data"]) <= 3 * 4 for p in phoenix.posts)
    assert flushed == list(range(len(phoenix.posts)))  # spans flushed before every post


def test_unsampled_spans_are_not_annotated(phoenix):
    tp = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    annotator = PhoenixAnnotator(phoenix.url, interval_s=60)
    evaluated_call(Recorder(tracer_provider=tp, annotator=annotator))
    annotator.shutdown()
    assert phoenix.posts == [] and annotator.posted == 0


def test_phoenix_down_never_fails_the_call_and_is_said_once(otel, caplog):
    down = FakePhoenix()
    down.close()  # nothing listens there any more
    annotator = PhoenixAnnotator(down.url, interval_s=60, timeout_s=1)
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider,
                   annotator=annotator)
    with caplog.at_level(logging.DEBUG, logger="amm.telemetry"):
        for i in range(3):
            evaluated_call(rec, task=f"t{i}")
            assert not annotator.flush()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "is Phoenix running" in warnings[0].getMessage()
    assert annotator.failed == 3 and annotator.posted == 0
    assert len(otel.spans()) == 3 * 3  # the calls were recorded all the same


def test_a_refusing_phoenix_is_counted_as_failed(otel):
    refusing = FakePhoenix(status=422)
    try:
        annotator = PhoenixAnnotator(refusing.url, interval_s=60)
        evaluated_call(Recorder(tracer_provider=otel.tracer_provider, annotator=annotator))
        assert not annotator.flush()
        assert annotator.failed == 1
    finally:
        refusing.close()


def test_a_phoenix_that_is_away_costs_one_failed_post_per_flush_and_shutdown_gives_up(otel):
    down = FakePhoenix()
    down.close()
    annotator = PhoenixAnnotator(down.url, interval_s=60, batch_spans=1, timeout_s=1)
    rec = Recorder(tracer_provider=otel.tracer_provider, annotator=annotator)
    for i in range(5):
        evaluated_call(rec, task=f"t{i}")
    assert not annotator.flush()
    assert annotator.failed == 1  # one batch tried; four still queued
    annotator.shutdown()
    assert annotator.failed == 5 and annotator.posted == 0
    annotator.annotate("00f067aa0ba902b7", quality(), None)  # after shutdown: dropped
    assert annotator.dropped == 1


def test_a_full_queue_drops_and_counts():
    annotator = PhoenixAnnotator("http://127.0.0.1:9", interval_s=60, max_queue=2)
    annotator.shutdown()  # stopped: nothing is queued any more
    annotator.annotate("00f067aa0ba902b7", quality(), None)
    assert annotator.dropped == 1
    queued = PhoenixAnnotator("http://127.0.0.1:9", interval_s=60, max_queue=2)
    try:
        for _ in range(5):
            queued.annotate("00f067aa0ba902b7", quality(), None)
        assert queued.dropped == 3
    finally:
        queued.shutdown()  # nothing listens on port 9: the post fails, quietly


def test_shutdown_posts_what_is_left_and_is_idempotent(otel, phoenix):
    annotator = PhoenixAnnotator(phoenix.url, interval_s=60)
    evaluated_call(Recorder(tracer_provider=otel.tracer_provider, annotator=annotator))
    annotator.shutdown()
    annotator.shutdown()
    assert annotator.posted == 1 and len(phoenix.posts) == 1


def test_the_api_key_is_sent_as_a_bearer_token(otel, phoenix, monkeypatch):
    monkeypatch.setenv("PHOENIX_API_KEY", "px-secret")
    annotator = PhoenixAnnotator(phoenix.url, interval_s=60)
    evaluated_call(Recorder(tracer_provider=otel.tracer_provider, annotator=annotator))
    annotator.flush()
    assert phoenix.headers[0]["Authorization"] == "Bearer px-secret"
    assert "px-secret" not in repr(annotator)


def test_the_environment_turns_annotations_on(monkeypatch, caplog):
    monkeypatch.delenv(c.ENV_PHOENIX_ANNOTATIONS, raising=False)
    assert annotator_from_env() is None
    monkeypatch.setenv(c.ENV_PHOENIX_ANNOTATIONS, "false")
    assert annotator_from_env() is None
    monkeypatch.setenv(c.ENV_PHOENIX_ANNOTATIONS, "localhost:6006")
    assert annotator_from_env() is None
    assert "not an http(s) URL" in caplog.text
    monkeypatch.setenv(c.ENV_PHOENIX_ANNOTATIONS, "http://127.0.0.1:6006/")
    annotator = annotator_from_env()
    assert annotator is not None and annotator.endpoint == "http://127.0.0.1:6006/v1/span_annotations"


def test_a_recorder_takes_its_annotator_from_the_environment(otel, phoenix, monkeypatch):
    monkeypatch.setenv(c.ENV_PHOENIX_ANNOTATIONS, phoenix.url)
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    evaluated_call(rec)
    annotator = rec.annotator
    assert isinstance(annotator, PhoenixAnnotator)
    annotator.shutdown()
    assert {a["name"] for a in phoenix.annotations()} == set(c.EVAL_NAMES)


def test_without_the_environment_a_recorder_posts_nothing(otel, monkeypatch):
    monkeypatch.delenv(c.ENV_PHOENIX_ANNOTATIONS, raising=False)
    rec = Recorder(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    assert rec.annotator is None
