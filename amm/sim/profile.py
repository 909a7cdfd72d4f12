"""How one simulated model behaves: :class:`ModelProfile`, and the demo's models.

A profile is a frozen value; the simulator reads it on every request, so
``Simulator.set_profile`` changes behaviour between two requests without a restart.

>>> flaky = ModelProfile(latency_ms=15, error_rate=0.25)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from amm.errors import ConfigurationError

__all__ = ["PROTOCOLS", "ModelProfile", "demo_profiles"]

PROTOCOLS: tuple[str, ...] = ("openai", "anthropic", "ollama", "google")
"""The wire protocols the simulator speaks (see ``Simulator.api_base``)."""


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigurationError(f"ModelProfile.{name}: must be in [0, 1], got {value!r}",
                                 field=name)


def _check_non_negative(name: str, value: float | None) -> None:
    if value is not None and value < 0:
        raise ConfigurationError(f"ModelProfile.{name}: must be >= 0, got {value!r}", field=name)


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """Behaviour of one simulated model; every field has a harmless default.

    Request indices count the requests the model received since the last
    ``Simulator.reset()``, starting at 0; every random decision for request ``i``
    is drawn from an RNG seeded by (simulator seed, model name, ``i``).

    Fields:
      ``latency_ms`` / ``latency_jitter_ms``: mean answer delay and the half-width of
      the uniform jitter around it.
      ``error_rate``: fraction of requests answered with ``error_status`` (503
      unless set). ``outages``: request-index windows ``(start, end)``, half-open
      like ``range``, answered 503.
      ``rpm_limit``: requests admitted per sliding 60 s window; beyond it 429 with
      ``Retry-After`` (``retry_after_s`` if set, else the seconds until the window
      frees a slot). ``quota_exhausted``: every request gets 429
      ``insufficient_quota``. ``api_key``: if set, any other key gets 401.
      ``forbidden``: every request gets 403.
      ``malformed_rate``: fraction answered 200 with a body that is not JSON
      (non-streamed requests only).
      ``timeout_rate`` / ``hang_s``: fraction of requests that wait ``hang_s``
      seconds before answering normally (the client times out first).
      ``quality``: probability that the text is a good, on-topic answer.
      ``degrade_after``: requests with index >= this use ``degraded_quality`` and
      ``latency_ms * degraded_latency_factor``.
      ``max_context``: prompts with more tokens get the provider's 400
      context-length error.
      ``protocol``: the wire protocol clients should use for this model (the
      simulator answers every model on every protocol; this tells a registry which
      ``Simulator.api_base`` to use).

    Agent behaviour:
      ``tool_rounds``: when the request declares tools (and tool choice is not
      "none"), the model answers with tool calls while the conversation holds fewer
      than this many tool-result turns (a run of tool messages, a user message of
      ``tool_result`` blocks, a content of ``functionResponse`` parts); then it answers
      text that mentions the results. It calls the first declared tool, or the one
      the tool choice names, with arguments that are a valid instance of its schema.
      ``parallel_tool_calls``: call every declared tool once, in declaration order,
      in one turn. ``json_support``: honour a request for JSON output (an instance of
      the schema, or a generic object); when False the model answers prose.

    Streaming (requests that ask for a stream):
      ``first_chunk_delay_ms``: wait after the headers before the first chunk.
      ``stream_stall_s``: wait after the first content chunk before the rest.
      ``stream_cut_after``: close the connection abruptly after this many content
      chunks (text pieces, tool-call openings and argument fragments): no final
      chunk, no ``[DONE]``. A cut stream bills the input tokens plus the output tokens
      of the content actually sent, and, just before the cut, reports exactly that
      usage where the protocol has a place for it: OpenAI a ``choices: []`` chunk
      with ``usage`` (only when ``stream_options.include_usage`` was asked),
      Anthropic a ``message_delta`` with the cumulative ``usage``, Gemini the
      ``usageMetadata`` every chunk carries. Ollama reports usage only on its final
      line, so a cut Ollama stream reports none.

    Non-streamed fault modes (fractions like ``malformed_rate``; the stream path
      ignores them): ``empty_choices_rate``: a 200 with an empty ``choices`` /
      ``content`` / ``candidates`` list (Ollama: empty content), billing the input
      only. ``missing_usage_rate``: a 200 without any usage block, billed all the
      same. ``truncated_body_rate``: a 200 whose JSON body stops halfway, billed all
      the same (the provider did the work; the answer was lost on the way).
      ``echo_key`` / ``echo_prompt``: error answers quote the request's API key / the
      prompt text, as a careless provider does (for tests that logs redact them).
    """

    latency_ms: float = 5.0
    latency_jitter_ms: float = 1.0
    error_rate: float = 0.0
    error_status: int = 503
    outages: tuple[tuple[int, int], ...] = field(default=())
    rpm_limit: int | None = None
    retry_after_s: float | None = None
    quota_exhausted: bool = False
    api_key: str | None = field(default=None, repr=False)
    forbidden: bool = False
    malformed_rate: float = 0.0
    timeout_rate: float = 0.0
    hang_s: float = 30.0
    quality: float = 0.9
    degrade_after: int | None = None
    degraded_quality: float | None = None
    degraded_latency_factor: float = 1.0
    max_context: int | None = None
    protocol: str = "openai"
    tool_rounds: int = 1
    parallel_tool_calls: bool = False
    json_support: bool = True
    first_chunk_delay_ms: float = 0.0
    stream_cut_after: int | None = None
    stream_stall_s: float = 0.0
    empty_choices_rate: float = 0.0
    missing_usage_rate: float = 0.0
    truncated_body_rate: float = 0.0
    echo_key: bool = False
    echo_prompt: bool = False

    def __post_init__(self) -> None:
        for name in ("error_rate", "malformed_rate", "timeout_rate", "quality",
                     "empty_choices_rate", "missing_usage_rate", "truncated_body_rate"):
            _check_fraction(name, getattr(self, name))
        if self.degraded_quality is not None:
            _check_fraction("degraded_quality", self.degraded_quality)
        for name in ("latency_ms", "latency_jitter_ms", "hang_s", "retry_after_s",
                     "degraded_latency_factor", "degrade_after", "tool_rounds",
                     "first_chunk_delay_ms", "stream_cut_after", "stream_stall_s"):
            _check_non_negative(name, getattr(self, name))
        if not 400 <= self.error_status <= 599:
            raise ConfigurationError(
                "ModelProfile.error_status: must be an HTTP error status, "
                f"got {self.error_status!r}",
                field="error_status")
        for name in ("parallel_tool_calls", "json_support", "echo_key", "echo_prompt"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(
                    f"ModelProfile.{name}: must be True or False, got {getattr(self, name)!r}",
                    field=name)
        for name in ("tool_rounds", "stream_cut_after"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigurationError(f"ModelProfile.{name}: must be an integer, got {value!r}",
                                         field=name)
        for name in ("rpm_limit", "max_context"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigurationError(f"ModelProfile.{name}: must be >= 1, got {value!r}",
                                         field=name)
        if self.protocol not in PROTOCOLS:
            raise ConfigurationError(
                f"ModelProfile.protocol: must be one of {', '.join(PROTOCOLS)}, "
                f"got {self.protocol!r}",
                field="protocol")
        # Accept any iterable of pairs (a list reads naturally) but store a tuple so the
        # profile stays hashable and immutable.
        object.__setattr__(self, "outages", _normalise_outages(self.outages))

    def in_outage(self, index: int) -> bool:
        """Whether request ``index`` falls in one of the outage windows."""
        return any(start <= index < end for start, end in self.outages)

    def degraded(self, index: int) -> bool:
        """Whether request ``index`` is past ``degrade_after``."""
        return self.degrade_after is not None and index >= self.degrade_after


def _normalise_outages(outages: Iterable[Iterable[int]]) -> tuple[tuple[int, int], ...]:
    windows = []
    for window in outages:
        pair = tuple(window)
        if len(pair) != 2 or not all(isinstance(i, int) for i in pair) or pair[0] > pair[1]:
            raise ConfigurationError(
                f"ModelProfile.outages: each window must be (start_index, end_index) with "
                f"start <= end, got {window!r}", field="outages")
        windows.append((pair[0], pair[1]))
    return tuple(windows)


def demo_profiles() -> dict[str, ModelProfile]:
    """The models ``amm demo`` runs against, keyed by the model name on the wire.

    - ``sim-gpt-4o``: healthy OpenAI-protocol model, ~30 ms, good answers (0.92).
    - ``sim-gpt-mini``: flaky OpenAI-protocol model, ~15 ms, a quarter of the
      requests answered 503.
    - ``sim-claude``: Anthropic-protocol model, ~25 ms, high quality (0.93), but
      only 60 requests per minute: bursts get 429 with ``Retry-After``.
    - ``sim-gemini``: Google-protocol model, ~20 ms and quality 0.95 for its first
      150 requests, then quality 0.35 and three times the latency (slow
      degradation that the analytics should detect).
    - ``sim-llama``: Ollama-protocol local model, ~40 ms, middling quality (0.7).
    """
    return {
        "sim-gpt-4o": ModelProfile(latency_ms=30, latency_jitter_ms=8, quality=0.92,
                                   protocol="openai"),
        "sim-gpt-mini": ModelProfile(latency_ms=15, latency_jitter_ms=4, error_rate=0.25,
                                     quality=0.8, protocol="openai"),
        "sim-claude": ModelProfile(latency_ms=25, latency_jitter_ms=6, rpm_limit=60,
                                   quality=0.93, protocol="anthropic"),
        "sim-gemini": ModelProfile(latency_ms=20, latency_jitter_ms=5, quality=0.95,
                                   degrade_after=150, degraded_quality=0.35,
                                   degraded_latency_factor=3.0, protocol="google"),
        "sim-llama": ModelProfile(latency_ms=40, latency_jitter_ms=10, quality=0.7,
                                  protocol="ollama"),
    }
