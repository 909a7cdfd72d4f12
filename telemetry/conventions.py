"""Every telemetry name amm uses, once: attributes, spans, events, metrics, env vars.

GenAI names follow the OpenTelemetry GenAI semantic conventions (newest:
``gen_ai.provider.name``, never the deprecated ``gen_ai.system``); what they do
not cover lives under ``amm.*``. This module imports nothing, so anyone can use
the names (analytics reads stored spans by them).

List-valued selection attributes (so a trace UI shows them as readable lists):

* ``amm.selection.candidates``: a JSON list, every eligible candidate best score
  first, ``[{"model": "gpt-4o", "score": 0.8123, "probability": 0.9, "cost_usd": 0.004,
  "quality": 0.91, "latency_ms": 812.0, "success_rate": 0.99}, ...]``: its score, the
  probability the policy gave it, and the features the policy saw (estimated cost of
  this request, quality, p50 latency, success rate). One JSON string, because an
  OpenTelemetry attribute cannot hold a list of objects;
* ``amm.selection.excluded``: ``["gemini-pro: unavailable", ...]``, every excluded
  model as ``"model: reason"``.

Configuration precedence everywhere (as the OpenTelemetry SDK): explicit argument >
``OTEL_*`` environment variable > the documented default.
"""

from __future__ import annotations

__all__ = [
    "AMM_AGENT_TYPE",
    "AMM_ATTEMPT",
    "AMM_BUDGET_ALERT",
    "AMM_BUDGET_CURRENT_SPEND",
    "AMM_BUDGET_DAILY",
    "AMM_BUDGET_THRESHOLD_PERCENT",
    "AMM_BUDGET_UTILIZATION_PERCENT",
    "AMM_CACHE_HIT",
    "AMM_CACHE_RESULT",
    "AMM_COST_ESTIMATED",
    "AMM_COST_USD",
    "AMM_DEGRADATION",
    "AMM_DEGRADATION_BASELINE",
    "AMM_DEGRADATION_CURRENT",
    "AMM_DEGRADATION_METRIC",
    "AMM_DEGRADATION_THRESHOLD",
    "AMM_ERROR_MESSAGE",
    "AMM_EXPERIMENT_ARM",
    "AMM_EXPERIMENT_NAME",
    "AMM_FAILOVER",
    "AMM_FAILOVER_FROM",
    "AMM_FAILOVER_REASON",
    "AMM_FAILOVER_TO",
    "AMM_HEALTH_AVAILABLE",
    "AMM_HEALTH_CHANGE",
    "AMM_HEALTH_CONSECUTIVE_FAILURES",
    "AMM_HEALTH_ERROR",
    "AMM_MODEL_DEMOTED",
    "AMM_MODEL_ID",
    "AMM_RATE_LIMITED",
    "AMM_RATE_LIMIT_RETRY_AFTER_S",
    "AMM_RATE_LIMIT_SOURCE",
    "AMM_REASON",
    "AMM_SELECTION_ARM_HONOURED",
    "AMM_SELECTION_CANDIDATES",
    "AMM_SELECTION_CHOSEN",
    "AMM_SELECTION_EXCLUDED",
    "AMM_SELECTION_FEATURES",
    "AMM_SELECTION_POLICY",
    "AMM_SELECTION_POLICY_VERSION",
    "AMM_SELECTION_PROPENSITY",
    "AMM_SELECTION_REASON",
    "AMM_SELECTION_STAGE",
    "AMM_TASK_ID",
    "AMM_TELEMETRY_SIGNAL",
    "AMM_TOOL_CALLS",
    "AMM_USAGE_ESTIMATED",
    "CONTENT_EVENT_ONLY",
    "CONTENT_NO_CONTENT",
    "CONTENT_SPAN_AND_EVENT",
    "CONTENT_SPAN_ONLY",
    "DEFAULT_OTLP_PROTOCOL",
    "DURATION_BUCKETS_S",
    "ENV_CAPTURE_MESSAGE_CONTENT",
    "ENV_LOGS_EXPORTER",
    "ENV_METRICS_EXPORTER",
    "ENV_OTLP_ENDPOINT",
    "ENV_OTLP_LOGS_ENDPOINT",
    "ENV_OTLP_LOGS_PROTOCOL",
    "ENV_OTLP_METRICS_ENDPOINT",
    "ENV_OTLP_METRICS_PROTOCOL",
    "ENV_OTLP_PROTOCOL",
    "ENV_OTLP_TRACES_ENDPOINT",
    "ENV_OTLP_TRACES_PROTOCOL",
    "ENV_PHOENIX_ANNOTATIONS",
    "ENV_RESOURCE_ATTRIBUTES",
    "ENV_SDK_DISABLED",
    "ENV_SERVICE_NAME",
    "ENV_TRACES_EXPORTER",
    "ENV_TRACES_SAMPLER",
    "ENV_TRACES_SAMPLER_ARG",
    "ENV_VIEWER_ATTRIBUTES",
    "ERROR_TYPE",
    "ERROR_TYPE_OTHER",
    "EVAL_LABEL_FAIL",
    "EVAL_LABEL_PASS",
    "EVAL_NAMES",
    "GEN_AI_AGENT_NAME",
    "GEN_AI_CONVERSATION_ID",
    "GEN_AI_EVALUATION_EXPLANATION",
    "GEN_AI_EVALUATION_NAME",
    "GEN_AI_EVALUATION_RESULT",
    "GEN_AI_EVALUATION_SCORE_LABEL",
    "GEN_AI_EVALUATION_SCORE_VALUE",
    "GEN_AI_INFERENCE_DETAILS",
    "GEN_AI_INPUT_MESSAGES",
    "GEN_AI_INVOKE_AGENT_INFERENCE_CALLS",
    "GEN_AI_INVOKE_AGENT_TOOL_CALLS",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_OUTPUT_MESSAGES",
    "GEN_AI_PROVIDER_NAME",
    "GEN_AI_REQUEST_MAX_TOKENS",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_REQUEST_STREAM",
    "GEN_AI_REQUEST_TEMPERATURE",
    "GEN_AI_RESPONSE_FINISH_REASONS",
    "GEN_AI_RESPONSE_ID",
    "GEN_AI_RESPONSE_MODEL",
    "GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK",
    "GEN_AI_TOKEN_TYPE",
    "GEN_AI_TOOL_CALL_ARGUMENTS",
    "GEN_AI_TOOL_CALL_ID",
    "GEN_AI_TOOL_CALL_RESULT",
    "GEN_AI_TOOL_DEFINITIONS",
    "GEN_AI_TOOL_NAME",
    "GEN_AI_TOOL_TYPE",
    "GEN_AI_USAGE_COST",
    "GEN_AI_USAGE_INPUT_TOKENS",
    "GEN_AI_USAGE_OUTPUT_TOKENS",
    "INPUT_MIME_TYPE",
    "INPUT_VALUE",
    "INSTRUMENTATION_SCOPE",
    "LLM_COST_COMPLETION",
    "LLM_COST_PROMPT",
    "LLM_COST_TOTAL",
    "METRIC_BUDGET_UTILIZATION",
    "METRIC_CACHE_REQUESTS",
    "METRIC_COST",
    "METRIC_EXPORT_FAILURES",
    "METRIC_FAILOVERS",
    "METRIC_MODEL_AVAILABLE",
    "METRIC_OPERATION_DURATION",
    "METRIC_QUALITY_SCORE",
    "METRIC_SPANS_DROPPED",
    "METRIC_TIME_PER_OUTPUT_CHUNK",
    "METRIC_TIME_TO_FIRST_CHUNK",
    "METRIC_TOKEN_USAGE",
    "OI_KIND_AGENT",
    "OI_KIND_CHAIN",
    "OI_KIND_EVALUATOR",
    "OI_KIND_LLM",
    "OI_KIND_TOOL",
    "OPENINFERENCE_PROJECT_NAME",
    "OPENINFERENCE_SPAN_KIND",
    "OP_CHAT",
    "OP_EXECUTE_TOOL",
    "OP_INVOKE_AGENT",
    "OUTPUT_MIME_TYPE",
    "OUTPUT_VALUE",
    "QUALITY_BUCKETS",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "SESSION_ID",
    "SPAN_EVALUATE",
    "SPAN_SELECT",
    "TOKEN_BUCKETS",
    "TOKEN_TYPE_INPUT",
    "TOKEN_TYPE_OUTPUT",
    "TOOL_TYPE_FUNCTION",
    "USER_ID",
    "agent_span_name",
    "chat_span_name",
    "provider_name",
    "tool_span_name",
]

INSTRUMENTATION_SCOPE = "amm"
"""Name of amm's tracer and meter (the span's instrumentation scope)."""

# --- GenAI semantic conventions -------------------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
"""``true`` on the ``chat`` span of a streamed attempt (absent otherwise)."""
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
"""Seconds from sending a streamed request to its first chunk."""
GEN_AI_TOOL_DEFINITIONS = "gen_ai.tool.definitions"
"""JSON list of the tools offered to the model; content opt-in only (they may hold secrets)."""
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
"""Arguments of one tool execution (the model's JSON text); content opt-in only."""
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"
"""What the tool returned; content opt-in only."""
TOOL_TYPE_FUNCTION = "function"
GEN_AI_INVOKE_AGENT_INFERENCE_CALLS = "gen_ai.invoke_agent.inference_calls"
"""On ``invoke_agent``: how many ``chat`` attempts ran under it (set when it ends)."""
GEN_AI_INVOKE_AGENT_TOOL_CALLS = "gen_ai.invoke_agent.tool_calls"
"""On ``invoke_agent``: how many ``execute_tool`` spans ran under it (set when it ends)."""
GEN_AI_INFERENCE_DETAILS = "gen_ai.client.inference.operation.details"
"""Event carrying the messages when content capture includes events."""
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
"""The conversation (session, thread) a call belongs to; from ``agent_span(session_id=...)``."""
GEN_AI_USAGE_COST = "gen_ai.usage.cost"
"""Not (yet) in the conventions: the cost in USD of one attempt, where Langfuse reads it.
Written with the viewer attributes (``AMM_TELEMETRY_VIEWER_ATTRIBUTES``)."""
TOKEN_TYPE_INPUT = "input"
TOKEN_TYPE_OUTPUT = "output"

GEN_AI_EVALUATION_RESULT = "gen_ai.evaluation.result"
"""Event name of one quality score, on the evaluated ``chat`` span."""
GEN_AI_EVALUATION_NAME = "gen_ai.evaluation.name"
GEN_AI_EVALUATION_SCORE_VALUE = "gen_ai.evaluation.score.value"
GEN_AI_EVALUATION_SCORE_LABEL = "gen_ai.evaluation.score.label"
GEN_AI_EVALUATION_EXPLANATION = "gen_ai.evaluation.explanation"
EVAL_NAMES = ("overall", "completeness", "relevance", "coherence")
"""The ``gen_ai.evaluation.name`` values amm emits, one event each."""
EVAL_LABEL_PASS = "pass"
EVAL_LABEL_FAIL = "fail"
"""``gen_ai.evaluation.score.label`` of the ``overall`` score against the quality threshold."""

OP_CHAT = "chat"
OP_INVOKE_AGENT = "invoke_agent"
OP_EXECUTE_TOOL = "execute_tool"

SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
ERROR_TYPE_OTHER = "_OTHER"

# --- general attributes (OpenTelemetry semantic conventions) ----------------------
SESSION_ID = "session.id"
"""The session (conversation) of a call; Phoenix and Langfuse group traces by it."""
USER_ID = "user.id"
"""The end user on whose behalf a call ran; Phoenix and Langfuse filter by it."""

# --- viewer attributes (OpenInference: Arize Phoenix, Langfuse) ---------------------
# Written next to the GenAI names, never instead of them, while the viewer attributes
# are on (ENV_VIEWER_ATTRIBUTES). Phoenix derives a span's kind from gen_ai.* on its
# own but takes every span with gen_ai.request.model and no operation for an LLM call,
# and only reads openinference.span.kind for the rest; Langfuse reads
# openinference.span.kind before gen_ai.operation.name, and its cost from
# gen_ai.usage.cost or llm.cost.total. Neither reads amm.cost_usd.
OPENINFERENCE_SPAN_KIND = "openinference.span.kind"
OI_KIND_AGENT = "AGENT"
OI_KIND_CHAIN = "CHAIN"
OI_KIND_LLM = "LLM"
OI_KIND_EVALUATOR = "EVALUATOR"
OI_KIND_TOOL = "TOOL"
OPENINFERENCE_PROJECT_NAME = "openinference.project.name"
"""Resource attribute naming the Phoenix project; amm sets it to ``service.name`` unless
given (Phoenix ignores ``service.name``)."""
INPUT_VALUE = "input.value"
"""What a viewer's trace list shows as Input (``invoke_agent``, content opt-in only)."""
OUTPUT_VALUE = "output.value"
"""What a viewer's trace list shows as Output (``invoke_agent``, content opt-in only)."""
INPUT_MIME_TYPE = "input.mime_type"
OUTPUT_MIME_TYPE = "output.mime_type"
LLM_COST_PROMPT = "llm.cost.prompt"
LLM_COST_COMPLETION = "llm.cost.completion"
LLM_COST_TOTAL = "llm.cost.total"
"""OpenInference cost names (USD); ``llm.cost.total`` equals ``amm.cost_usd``."""

# --- amm attributes ---------------------------------------------------------------
AMM_TASK_ID = "amm.task_id"
AMM_AGENT_TYPE = "amm.agent_type"
AMM_MODEL_ID = "amm.model_id"
AMM_COST_USD = "amm.cost_usd"
AMM_CACHE_HIT = "amm.cache.hit"
AMM_CACHE_RESULT = "amm.cache.result"
"""Attribute of ``amm.cache.requests``: ``hit`` or ``miss``."""
AMM_ATTEMPT = "amm.attempt"
AMM_USAGE_ESTIMATED = "amm.usage.estimated"
"""``true`` on ``chat`` when the provider reported no usage and the tokens are amm's estimate."""
AMM_COST_ESTIMATED = "amm.cost.estimated"
"""``true`` on ``chat`` when ``amm.cost_usd`` is priced from estimated tokens."""
AMM_TOOL_CALLS = "amm.tool_calls"
"""On ``chat``: how many tool calls the answer asked for (set when > 0)."""
AMM_ERROR_MESSAGE = "amm.error.message"
AMM_REASON = "amm.reason"
AMM_SELECTION_CHOSEN = "amm.selection.chosen"
AMM_SELECTION_REASON = "amm.selection.reason"
AMM_SELECTION_PROPENSITY = "amm.selection.propensity"
AMM_SELECTION_CANDIDATES = "amm.selection.candidates"
AMM_SELECTION_EXCLUDED = "amm.selection.excluded"
AMM_EXPERIMENT_NAME = "amm.experiment.name"
AMM_EXPERIMENT_ARM = "amm.experiment.arm"
AMM_SELECTION_POLICY = "amm.selection.policy"
"""On ``amm.select``: the routing policy kind that decided (``score``, ``softmax``,
``thompson``)."""
AMM_SELECTION_POLICY_VERSION = "amm.selection.policy_version"
"""On ``amm.select``: the policy's version (its kind and a hash of its parameters)."""
AMM_SELECTION_FEATURES = "amm.selection.features"
"""On ``amm.select``: JSON object of the request features the policy saw (agent type,
priority, prompt and output token estimates, required capabilities)."""
AMM_SELECTION_STAGE = "amm.selection.stage"
"""On ``amm.select``: ``initial`` (the routing decision), ``failover`` (a re-selection
after a failed attempt) or ``cache_hit`` (answered from the cache, no routing)."""
AMM_SELECTION_ARM_HONOURED = "amm.selection.arm_honoured"
"""On ``amm.select``: the experiment's assigned arm was the model chosen (randomised traffic)."""

AMM_FAILOVER_FROM = "amm.failover.from"
AMM_FAILOVER_TO = "amm.failover.to"
AMM_FAILOVER_REASON = "amm.failover.reason"
AMM_RATE_LIMIT_SOURCE = "amm.rate_limit.source"
AMM_RATE_LIMIT_RETRY_AFTER_S = "amm.rate_limit.retry_after_s"
AMM_BUDGET_THRESHOLD_PERCENT = "amm.budget.threshold_percent"
AMM_BUDGET_UTILIZATION_PERCENT = "amm.budget.utilization_percent"
AMM_BUDGET_CURRENT_SPEND = "amm.budget.current_spend_usd"
AMM_BUDGET_DAILY = "amm.budget.daily_budget_usd"
AMM_HEALTH_AVAILABLE = "amm.health.available"
AMM_HEALTH_CONSECUTIVE_FAILURES = "amm.health.consecutive_failures"
AMM_HEALTH_ERROR = "amm.health.error"
AMM_DEGRADATION_METRIC = "amm.degradation.metric"
AMM_DEGRADATION_CURRENT = "amm.degradation.current_value"
AMM_DEGRADATION_BASELINE = "amm.degradation.baseline_value"
AMM_DEGRADATION_THRESHOLD = "amm.degradation.threshold"

# --- spans and span events --------------------------------------------------------
SPAN_SELECT = "amm.select"
SPAN_EVALUATE = "amm.evaluate"
AMM_FAILOVER = "amm.failover"
AMM_RATE_LIMITED = "amm.rate_limited"
AMM_BUDGET_ALERT = "amm.budget.alert"
AMM_DEGRADATION = "amm.degradation"
AMM_HEALTH_CHANGE = "amm.health.change"
AMM_MODEL_DEMOTED = "amm.model.demoted"


def agent_span_name(agent: str) -> str:
    """``invoke_agent {agent}``: the span of one managed agent call."""
    return f"{OP_INVOKE_AGENT} {agent}"


def chat_span_name(model: str) -> str:
    """``chat {model}``: the CLIENT span of one provider attempt."""
    return f"{OP_CHAT} {model}"


def tool_span_name(tool: str) -> str:
    """``execute_tool {tool}``: the span of one tool execution."""
    return f"{OP_EXECUTE_TOOL} {tool}"


# --- metrics ----------------------------------------------------------------------
METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"
METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"
METRIC_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
"""Histogram (s, streamed attempts only): request sent -> first chunk."""
METRIC_TIME_PER_OUTPUT_CHUNK = "gen_ai.client.operation.time_per_output_chunk"
"""Histogram (s, streamed attempts of 2+ chunks only): mean time per chunk after the first."""
METRIC_COST = "amm.cost"
METRIC_FAILOVERS = "amm.failovers"
METRIC_CACHE_REQUESTS = "amm.cache.requests"
METRIC_QUALITY_SCORE = "amm.quality.score"
METRIC_BUDGET_UTILIZATION = "amm.budget.utilization"
METRIC_MODEL_AVAILABLE = "amm.model.available"
METRIC_SPANS_DROPPED = "amm.telemetry.spans_dropped"
METRIC_EXPORT_FAILURES = "amm.telemetry.export.failures"
"""Counter: exports (batches) an OTLP backend did not take, by ``amm.telemetry.signal`` and
``error.type`` (the HTTP status, the gRPC code or the exception's name)."""
AMM_TELEMETRY_SIGNAL = "amm.telemetry.signal"
"""Attribute of ``amm.telemetry.export.failures``: ``traces``, ``metrics`` or ``logs``."""

DURATION_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)
"""Advised buckets of ``gen_ai.client.operation.duration`` (seconds); also used for the
streaming histograms (time to first chunk, time per output chunk)."""
TOKEN_BUCKETS: tuple[float, ...] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)
"""Advised buckets of ``gen_ai.client.token.usage``."""
QUALITY_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""amm's buckets of ``amm.quality.score`` (scores are in [0, 1])."""

# --- providers ----------------------------------------------------------------------
_PROVIDER_NAMES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "google": "gcp.gemini",
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "ollama": "ollama",
    "ollama_chat": "ollama",
    "mistral": "mistral_ai",
    "groq": "groq",
    "cohere": "cohere",
    "deepseek": "deepseek",
}


def provider_name(provider: str) -> str:
    """The ``gen_ai.provider.name`` value of an amm provider.

    >>> provider_name("google")
    'gcp.gemini'

    Unknown providers are passed through lower-cased (the convention allows custom
    values), so nothing is lost.
    """
    key = provider.strip().lower()
    return _PROVIDER_NAMES.get(key, key)


# --- content capture ------------------------------------------------------------------
CONTENT_NO_CONTENT = "NO_CONTENT"
CONTENT_SPAN_ONLY = "SPAN_ONLY"
CONTENT_EVENT_ONLY = "EVENT_ONLY"
CONTENT_SPAN_AND_EVENT = "SPAN_AND_EVENT"

# --- environment variables ------------------------------------------------------------
ENV_SERVICE_NAME = "OTEL_SERVICE_NAME"
"""Service name of the resource; default ``"amm"`` (``setup(service_name=...)`` wins)."""
ENV_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
"""Extra resource attributes, ``key=value,key2=value2`` (read by the SDK's Resource)."""
ENV_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
"""OTLP base endpoint; OTLP export is on only when this (or a per-signal one) is set.
gRPC: ``http://localhost:4317``; HTTP: ``http://localhost:4318`` (``/v1/traces`` is
appended for traces and ``/v1/metrics`` for metrics)."""
ENV_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
"""OTLP endpoint of traces only; for HTTP the full URL (nothing is appended)."""
ENV_OTLP_METRICS_ENDPOINT = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
"""OTLP endpoint of metrics only; for HTTP the full URL (nothing is appended)."""
ENV_OTLP_LOGS_ENDPOINT = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"
"""OTLP endpoint of logs only; for HTTP the full URL (nothing is appended)."""
DEFAULT_OTLP_PROTOCOL = "http/protobuf"
"""The specification's default OTLP protocol, whatever the endpoint's port."""
ENV_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
"""``http/protobuf`` (default, as the specification says) or ``grpc``; the per-signal
variables below win for their signal. ``http/json`` is not supported by the Python
exporters: amm says so and uses ``http/protobuf``."""
ENV_OTLP_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
"""Protocol of traces only (wins over ``OTEL_EXPORTER_OTLP_PROTOCOL``)."""
ENV_OTLP_METRICS_PROTOCOL = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
"""Protocol of metrics only (wins over ``OTEL_EXPORTER_OTLP_PROTOCOL``)."""
ENV_OTLP_LOGS_PROTOCOL = "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"
"""Protocol of logs only (wins over ``OTEL_EXPORTER_OTLP_PROTOCOL``)."""
ENV_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
"""Comma list of ``otlp``, ``console``, ``none``; default ``otlp`` (active only with an
endpoint)."""
ENV_METRICS_EXPORTER = "OTEL_METRICS_EXPORTER"
"""Comma list of ``otlp``, ``console``, ``none``; default ``otlp`` (active only with an
endpoint)."""
ENV_LOGS_EXPORTER = "OTEL_LOGS_EXPORTER"
"""Comma list of ``otlp``, ``console``, ``none``; default ``otlp`` (active only with an
endpoint): amm's own log records (``amm.*`` loggers, WARNING and above) as OTLP logs."""
ENV_VIEWER_ATTRIBUTES = "AMM_TELEMETRY_VIEWER_ATTRIBUTES"
"""``true`` (default) or ``false``: also write the attributes GenAI trace viewers read
(``openinference.span.kind``, ``llm.cost.*``, ``gen_ai.usage.cost``, ``session.id``,
``input.value``/``output.value`` under the content opt-in, the resource's
``openinference.project.name``). The GenAI convention names are written either way."""
ENV_PHOENIX_ANNOTATIONS = "AMM_PHOENIX_ANNOTATIONS"
"""Arize Phoenix's base URL (``http://127.0.0.1:6006``): also post each evaluated ``chat``
span's quality scores to Phoenix as span annotations (:mod:`telemetry.phoenix`); unset
(default): none are posted."""
ENV_TRACES_SAMPLER = "OTEL_TRACES_SAMPLER"
"""``always_on``, ``always_off``, ``traceidratio``, ``parentbased_*``; default
``parentbased_always_on``."""
ENV_TRACES_SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"
"""Argument of the sampler, e.g. ``0.1`` for ``traceidratio``."""
ENV_SDK_DISABLED = "OTEL_SDK_DISABLED"
"""``true`` disables tracing and metrics export (listeners still learn)."""
ENV_CAPTURE_MESSAGE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""``NO_CONTENT`` (default), ``SPAN_ONLY``, ``EVENT_ONLY``, ``SPAN_AND_EVENT``;
``true`` means ``SPAN_AND_EVENT`` and ``false`` means ``NO_CONTENT``."""
