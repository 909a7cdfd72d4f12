"""The provider simulator without litellm: text, profiles, decisions, raw HTTP.

The litellm round trips are in ``test_sim_litellm.py`` (one litellm import).
"""

from __future__ import annotations

import ast
import asyncio
import json
import random
import re
import subprocess
import sys

import aiohttp
import httpx
import pytest

from amm.errors import ConfigurationError
from amm.sim import PROTOCOLS, ModelProfile, Simulator, count_tokens, demo_profiles
from amm.sim.behaviour import Fault, ModelState, model_seed
from amm.sim.text import generate_text, key_terms, truncate_tokens

OPENAI_BODY = {"model": "sim-openai", "max_tokens": 64,
               "messages": [{"role": "system", "content": "You are terse."},
                            {"role": "user", "content": "Explain token budgets for routers."}]}


# One client for the module: a new httpx client per call costs ~25 ms (TLS context).
_HTTP = httpx.Client()


def post_openai(sim: Simulator, body: dict | None = None, **kw) -> httpx.Response:
    return _HTTP.post(sim.api_base("openai") + "/chat/completions", json=body or OPENAI_BODY,
                      headers={"Authorization": "Bearer k"}, **kw)


async def post_concurrently(url: str, n: int, concurrency: int = 64) -> list[tuple[int, bytes]]:
    """``n`` requests over ``concurrency`` keep-alive connections: (status, body) each."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker(count: int) -> list[tuple[int, bytes]]:
            out = []
            for _ in range(count):
                async with session.post(url, json=OPENAI_BODY) as answer:
                    out.append((answer.status, await answer.read()))
            return out

        batches = await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    return [item for batch in batches for item in batch]


@pytest.fixture(scope="module", autouse=True)
def _close_http_client():
    yield
    _HTTP.close()


def test_public_surface_of_amm_sim() -> None:
    import amm.sim

    assert set(amm.sim.__all__) == {
        "PROTOCOLS", "ModelProfile", "Simulator", "count_tokens", "demo_profiles"}


def test_importing_amm_sim_does_not_import_aiohttp_or_litellm() -> None:
    code = "import sys, amm.sim; print(sorted({'aiohttp', 'litellm'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# -- text ---------------------------------------------------------------------------

def test_count_tokens_counts_words_and_punctuation() -> None:
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("") == 0
    assert count_tokens("a_b c3 -> d") == 5


def test_truncate_tokens_keeps_exactly_max_tokens_and_reports_the_cut() -> None:
    text, cut = truncate_tokens("one two, three four.", 3)
    assert (text, cut, count_tokens(text)) == ("one two,", True, 3)
    assert truncate_tokens("one two", 5) == ("one two", False)


def test_good_text_reuses_prompt_terms_and_ends_with_a_sentence() -> None:
    prompt = "Describe how caching reduces latency for embeddings."
    text = generate_text(prompt, good=True, rng=random.Random(1))
    assert {"caching", "latency"} <= set(key_terms(text, limit=50))
    assert text.rstrip().endswith(".")


def test_good_text_answers_each_numbered_item_in_order() -> None:
    prompt = "Compare the providers:\n1. pricing tiers\n2. rate limits\n3. streaming support"
    text = generate_text(prompt, good=True, rng=random.Random(2))
    lines = [line for line in text.splitlines() if re.match(r"\d+\.", line)]
    assert [line.split(".")[0] for line in lines] == ["1", "2", "3"]
    assert "pricing tiers" in lines[0] and "streaming support" in lines[2]


def test_good_text_for_a_code_ask_has_a_python_block_that_parses() -> None:
    text = generate_text("Implement a python function that merges sorted lists.", good=True,
                         rng=random.Random(3))
    block = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert block is not None
    tree = ast.parse(block.group(1))
    assert isinstance(tree.body[0], ast.FunctionDef)


def test_bad_text_is_off_topic_repetitive_and_cut_mid_sentence() -> None:
    prompt = "Describe how caching reduces latency for embeddings."
    text = generate_text(prompt, good=False, rng=random.Random(4))
    assert not set(key_terms(prompt)) & set(key_terms(text, limit=50))
    sentences = [s for s in text.split(". ") if s]
    assert len(sentences) > len(set(sentences))
    assert not text.rstrip().endswith((".", "!", "?"))


def test_generated_text_is_deterministic_for_an_rng_seed() -> None:
    prompt = "Summarise the failover policy for timeouts."
    first = generate_text(prompt, good=True, rng=random.Random(9))
    assert generate_text(prompt, good=True, rng=random.Random(9)) == first


# -- profiles -------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("error_rate", 1.5), ("quality", -0.1), ("latency_ms", -1), ("error_status", 200),
    ("rpm_limit", 0), ("protocol", "grpc"), ("outages", [(5, 2)]),
])
def test_profile_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=field) as info:
        ModelProfile(**{field: value})
    assert info.value.field == field


def test_profile_outages_are_half_open_windows_stored_as_tuples() -> None:
    profile = ModelProfile(outages=[[2, 4]])
    assert profile.outages == ((2, 4),)
    assert [i for i in range(6) if profile.in_outage(i)] == [2, 3]


def test_demo_profiles_cover_each_behaviour_the_demo_needs() -> None:
    demo = demo_profiles()
    assert {name: p.protocol for name, p in demo.items()} == {
        "sim-gpt-4o": "openai", "sim-gpt-mini": "openai", "sim-claude": "anthropic",
        "sim-gemini": "google", "sim-llama": "ollama"}
    assert demo["sim-gpt-mini"].error_rate == 0.25
    assert demo["sim-claude"].rpm_limit == 60
    gemini = demo["sim-gemini"]
    assert (gemini.quality, gemini.degraded_quality, gemini.degrade_after) == (0.95, 0.35, 150)
    assert gemini.degraded_latency_factor == 3.0


# -- decisions (no server) -------------------------------------------------------------

def decide_many(profile: ModelProfile, n: int, *, seed: int = 7, model: str = "m",
                now: float = 0.0) -> list:
    state = ModelState(model, profile, model_seed(seed, model))
    return [state.decide(api_key=None, prompt_tokens=10, now=now) for _ in range(n)]


def test_decisions_repeat_for_the_same_seed_and_differ_for_another() -> None:
    profile = ModelProfile(error_rate=0.3, quality=0.5, malformed_rate=0.1)
    assert decide_many(profile, 200) == decide_many(profile, 200)
    assert decide_many(profile, 200) != decide_many(profile, 200, seed=8)


def test_error_rate_answers_about_that_fraction_with_the_error_status() -> None:
    decisions = decide_many(ModelProfile(error_rate=0.25, error_status=500), 2000)
    failed = [d for d in decisions if d.status == 500]
    assert all(d.fault is Fault.SERVER_ERROR for d in failed)
    assert 0.2 < len(failed) / 2000 < 0.3


def test_outage_windows_answer_503_exactly_at_their_indices() -> None:
    decisions = decide_many(ModelProfile(outages=[(3, 5), (8, 9)]), 10)
    assert [d.index for d in decisions if d.status == 503] == [3, 4, 8]


def test_rpm_limit_rejects_beyond_the_window_until_it_slides() -> None:
    state = ModelState("m", ModelProfile(rpm_limit=3), 1)
    admitted = [state.decide(api_key=None, prompt_tokens=1, now=t).status for t in (0, 10, 20)]
    rejected = state.decide(api_key=None, prompt_tokens=1, now=30)
    assert admitted == [200, 200, 200]
    assert (rejected.status, rejected.fault) == (429, Fault.RATE_LIMIT)
    assert rejected.rate is not None and rejected.rate.retry_after_s == 30  # first slot frees at 60
    assert state.decide(api_key=None, prompt_tokens=1, now=60.5).status == 200
    assert state.decide(api_key=None, prompt_tokens=1, now=61).status == 429


def test_retry_after_s_overrides_the_computed_wait() -> None:
    decisions = decide_many(ModelProfile(rpm_limit=1, retry_after_s=7), 2)
    assert decisions[1].rate is not None and decisions[1].rate.retry_after_s == 7


def test_degrade_after_lowers_quality_and_multiplies_latency_from_that_index() -> None:
    profile = ModelProfile(latency_ms=10, latency_jitter_ms=0, quality=1.0, degrade_after=5,
                           degraded_quality=0.0, degraded_latency_factor=3.0)
    decisions = decide_many(profile, 10)
    assert [d.good for d in decisions] == [True] * 5 + [False] * 5
    assert {d.delay_s for d in decisions[:5]} == {0.01}
    assert {round(d.delay_s, 6) for d in decisions[5:]} == {0.03}


def test_unknown_model_key_forbidden_quota_and_context_faults() -> None:
    assert ModelState("x", None, 1).decide(api_key=None, prompt_tokens=1, now=0).status == 404
    keyed = ModelState("m", ModelProfile(api_key="right"), 1)
    assert keyed.decide(api_key="wrong", prompt_tokens=1, now=0).status == 401
    assert keyed.decide(api_key="right", prompt_tokens=1, now=0).status == 200
    assert decide_many(ModelProfile(forbidden=True), 1)[0].status == 403
    assert decide_many(ModelProfile(quota_exhausted=True), 1)[0].fault is Fault.QUOTA
    assert decide_many(ModelProfile(max_context=5), 1)[0].fault is Fault.CONTEXT


# -- the server over raw HTTP --------------------------------------------------------------

def test_start_and_stop_are_idempotent_and_the_server_restarts() -> None:
    sim = Simulator({"m": ModelProfile()})
    base = sim.start()
    assert sim.start() == base == sim.base_url
    assert _HTTP.get(base + "/health").json()["status"] == "ok"
    sim.stop()
    sim.stop()
    with pytest.raises(ConfigurationError):
        _ = sim.base_url
    with sim:
        assert _HTTP.get(sim.base_url + "/health").status_code == 200


async def test_async_context_manager_serves_inside_a_running_loop() -> None:
    async with (Simulator({"sim-openai": ModelProfile(latency_ms=0)}) as sim,
                httpx.AsyncClient() as client):
        answer = await client.post(sim.api_base("openai") + "/chat/completions",
                                   json=OPENAI_BODY)
    assert answer.status_code == 200


def test_api_base_per_protocol_and_unknown_protocol_error(simulator: Simulator) -> None:
    base = simulator.base_url
    assert [simulator.api_base(p) for p in PROTOCOLS] == [
        base + "/v1", base, base, base + "/v1beta"]
    with pytest.raises(ConfigurationError, match="grpc"):
        simulator.api_base("grpc")


def test_models_endpoint_lists_the_configured_models(simulator: Simulator) -> None:
    data = _HTTP.get(simulator.base_url + "/v1/models").json()
    assert sorted(m["id"] for m in data["data"]) == sorted(
        ["sim-openai", "sim-anthropic", "sim-ollama", "sim-google"])


def test_openai_answer_has_usage_and_rate_limit_headers(simulator: Simulator) -> None:
    answer = post_openai(simulator)
    body = answer.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    content = body["choices"][0]["message"]["content"]
    assert body["usage"] == {
        "prompt_tokens": count_tokens("You are terse.") + count_tokens(
            "Explain token budgets for routers."),
        "completion_tokens": count_tokens(content),
        "total_tokens": body["usage"]["prompt_tokens"] + count_tokens(content)}
    assert answer.headers["x-ratelimit-remaining-requests"] == "9999"
    assert "x-ratelimit-reset-requests" in answer.headers


def test_max_tokens_truncates_and_reports_length(simulator: Simulator) -> None:
    body = post_openai(simulator, {**OPENAI_BODY, "max_tokens": 5}).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize(("path", "headers", "body", "expected"), [
    ("/v1/chat/completions", {}, {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
     {"error": {"message": "The model `nope` does not exist or you do not have access to it.",
                "type": "invalid_request_error", "param": None, "code": "model_not_found"}}),
    ("/v1/messages", {"anthropic-version": "2023-06-01"},
     {"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
     {"type": "error", "error": {"type": "not_found_error", "message": "model: nope"}}),
    ("/api/chat", {}, {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
     {"error": 'model "nope" not found, try pulling it first'}),
    ("/v1beta/models/nope:generateContent", {}, {"contents": [{"parts": [{"text": "x"}]}]},
     {"error": {"code": 404, "status": "NOT_FOUND", "message":
                "models/nope is not found for API version v1beta, or is not supported for "
                "generateContent."}}),
])
def test_unknown_model_gets_404_in_each_providers_error_shape(
        simulator: Simulator, path: str, headers: dict, body: dict, expected: dict) -> None:
    answer = _HTTP.post(simulator.base_url + path, json=body, headers=headers)
    assert (answer.status_code, answer.json()) == (404, expected)
    assert simulator.status_counts("nope") == {404: 1}


def test_default_profile_serves_unknown_model_names(make_simulator) -> None:
    sim = make_simulator({}, default_profile=ModelProfile(latency_ms=0))
    body = post_openai(sim, {**OPENAI_BODY, "model": "anything"}).json()
    assert body["model"] == "anything"


def test_rate_limited_answer_has_retry_after_and_openai_headers(make_simulator) -> None:
    sim = make_simulator({"sim-openai": ModelProfile(latency_ms=0, rpm_limit=2)})
    statuses = [post_openai(sim) for _ in range(3)]
    assert [a.status_code for a in statuses] == [200, 200, 429]
    limited = statuses[2]
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert statuses[1].headers["x-ratelimit-remaining-requests"] == "0"
    assert statuses[0].headers["x-ratelimit-limit-requests"] == "2"


def test_injected_clock_moves_the_rpm_window(make_simulator) -> None:
    now = [100.0]
    sim = make_simulator({"sim-openai": ModelProfile(latency_ms=0, rpm_limit=1)},
                         clock=lambda: now[0])
    assert [post_openai(sim).status_code for _ in range(2)] == [200, 429]
    now[0] += 60.0
    assert post_openai(sim).status_code == 200


def test_malformed_answer_is_a_200_whose_body_is_not_json(make_simulator) -> None:
    sim = make_simulator({"sim-openai": ModelProfile(latency_ms=0, malformed_rate=1.0)})
    answer = post_openai(sim)
    assert answer.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.text)
    assert sim.billed() == {}


def test_unparseable_request_gets_400_and_is_counted(simulator: Simulator) -> None:
    answer = _HTTP.post(simulator.api_base("openai") + "/chat/completions", content=b"{nope")
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["error"]["message"]
    assert simulator.request_count() == 1 and simulator.status_counts() == {400: 1}


def test_gemini_streaming_without_alt_sse_is_refused_with_400(simulator: Simulator) -> None:
    gemini = _HTTP.post(simulator.base_url + "/v1beta/models/sim-google:streamGenerateContent",
                        json={"contents": [{"parts": [{"text": "x"}]}]})
    assert gemini.status_code == 400


def test_hung_request_times_out_the_client_and_stop_cuts_it(make_simulator) -> None:
    sim = make_simulator({"sim-openai": ModelProfile(timeout_rate=1.0, hang_s=30)})
    with pytest.raises(httpx.ReadTimeout):
        post_openai(sim, timeout=0.2)
    sim.stop()  # returns after the short shutdown grace, not after hang_s
    assert sim.request_count("sim-openai") == 1


def test_set_profile_changes_behaviour_and_reset_zeroes_counters(simulator: Simulator) -> None:
    assert post_openai(simulator).status_code == 200
    simulator.set_profile("sim-openai", ModelProfile(forbidden=True))
    assert post_openai(simulator).status_code == 403
    assert simulator.status_counts("sim-openai") == {200: 1, 403: 1}
    assert simulator.request_count("sim-openai") == simulator.request_count() == 2
    simulator.reset()
    assert (simulator.request_count(), simulator.status_counts(), simulator.billed()) == (0, {}, {})


def test_same_seed_and_request_order_give_the_same_answers(make_simulator) -> None:
    profile = ModelProfile(latency_ms=0, quality=0.5, error_rate=0.2)
    runs = []
    for _ in range(2):
        sim = make_simulator({"sim-openai": profile}, seed=11)
        answers = [post_openai(sim) for _ in range(30)]
        runs.append([(a.status_code, a.json().get("id"), a.json().get("choices"))
                     for a in answers])
    assert runs[0] == runs[1]
    assert {status for status, _, _ in runs[0]} == {200, 503}


async def test_billed_equals_usage_summed_over_200_answers(make_simulator) -> None:
    sim = make_simulator({"sim-openai": ModelProfile(latency_ms=1, error_rate=0.2,
                                                     malformed_rate=0.1)}, seed=3)
    answers = await post_concurrently(sim.api_base("openai") + "/chat/completions", 256)
    usages, malformed = [], 0
    for status, body in answers:
        if status == 200:
            try:
                usages.append(json.loads(body)["usage"])
            except json.JSONDecodeError:
                malformed += 1
    assert malformed > 0 and 0 < len(usages) < 256
    assert sim.request_count() == 256 == sum(sim.status_counts().values())
    assert sim.billed() == {"sim-openai": (sum(u["prompt_tokens"] for u in usages),
                                           sum(u["completion_tokens"] for u in usages))}


async def test_concurrency_64_with_keep_alive_answers_every_request(simulator: Simulator) -> None:
    answers = await post_concurrently(simulator.api_base("openai") + "/chat/completions", 640)
    assert {status for status, _ in answers} == {200}
    assert simulator.status_counts() == {200: 640}
