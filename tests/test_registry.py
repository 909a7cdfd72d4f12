"""ModelRegistry: loading, queries, validation of bad configs, reloads and changes."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from amm._registry_config import CapabilityFlags
from amm.errors import ConfigurationError, InvalidRequestError
from amm.models import Experiment, ModelMetadata, RateLimits
from amm.registry import LiteLLMCapabilityMap, ModelRegistry, get_default_registry

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "config" / "model_registry.json"


def _model(model_id: str, **over: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": model_id,
        "provider": "openai",
        "name": model_id.upper(),
        "capabilities": ["text-generation", "code-generation"],
        "cost_per_1k_input_tokens": 0.001,
        "cost_per_1k_output_tokens": 0.002,
        "rate_limits": {"requests_per_minute": 100, "tokens_per_minute": 10000},
        "context_window": 8000,
        "average_response_time_ms": 500,
    }
    entry.update(over)
    return entry


def _doc(*models: dict[str, Any],
         experiments: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"models": list(models) or [_model("a"), _model("b")]}
    if experiments is not None:
        doc["experiments"] = experiments
    return doc


def _write(tmp_path: Path, data: Any, name: str = "registry.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


# -- the shipped file ---------------------------------------------------------------------

def test_shipped_config_loads_with_the_seed_models_at_list_prices() -> None:
    registry = ModelRegistry(SHIPPED)
    assert [m.id for m in registry.models()] == [
        "gpt-4-turbo", "gpt-3.5-turbo", "claude-3.5-sonnet", "gemini-pro", "llama3"]
    gpt4 = registry.get_model("gpt-4-turbo")
    assert gpt4 is not None
    assert (gpt4.cost_per_1k_input_tokens, gpt4.cost_per_1k_output_tokens) == (0.01, 0.03)
    assert gpt4.context_window == 128000
    claude = registry.get_model("claude-3.5-sonnet")
    assert claude is not None and claude.litellm_model == "anthropic/claude-3-5-sonnet-20241022"
    llama = registry.get_model("llama3")
    assert llama is not None and llama.estimate_cost(1000, 1000) == 0.0
    assert registry.experiments == []


def test_seed_example_constructs_then_calls_load_config() -> None:
    registry = ModelRegistry(SHIPPED)
    registry.load_config()
    assert len(registry.get_models_by_capability("code-generation")) == 5


# -- defaults -------------------------------------------------------------------------------

def test_litellm_model_defaults_to_the_providers_litellm_prefix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_BASE_URL", raising=False)
    registry = ModelRegistry.from_dict(_doc(
        _model("o"), _model("a", provider="anthropic"), _model("g", provider="google"),
        _model("l", provider="ollama")))
    assert {m.id: m.litellm_model for m in registry.models()} == {
        "o": "openai/o", "a": "anthropic/a", "g": "gemini/g", "l": "ollama_chat/l"}
    assert registry.get_model("l").api_base == "http://localhost:11434"  # type: ignore[union-attr]
    assert registry.get_model("o").api_base is None  # type: ignore[union-attr]


def test_ollama_api_base_defaults_to_OLLAMA_BASE_URL(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://gpu-box:11434")
    registry = ModelRegistry.from_dict(_doc(_model("l", provider="ollama")))
    assert registry.get_model("l").api_base == "http://gpu-box:11434"  # type: ignore[union-attr]


def test_api_base_expands_environment_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMM_SIM_URL", "http://127.0.0.1:5555")
    registry = ModelRegistry.from_dict(_doc(_model("a", api_base="${AMM_SIM_URL}/v1")))
    assert registry.get_model("a").api_base == "http://127.0.0.1:5555/v1"  # type: ignore[union-attr]


def test_other_provider_is_accepted_with_an_explicit_litellm_model() -> None:
    registry = ModelRegistry.from_dict(_doc(_model("m", provider="mistral",
                                                   litellm_model="mistral/mistral-large")))
    assert registry.get_model("m").litellm_model == "mistral/mistral-large"  # type: ignore[union-attr]


def test_yaml_config_is_accepted_by_suffix(tmp_path: Path) -> None:
    path = _write(tmp_path, "models:\n" + "".join(
        f"  - {json.dumps(m)}\n" for m in (_model("a"), _model("b"))), "registry.yaml")
    assert [m.id for m in ModelRegistry(path).models()] == ["a", "b"]


# -- capability flags ---------------------------------------------------------------------

_ALL_FLAGS = {"supports_tools": True, "supports_streaming": False, "supports_response_schema": True}


class _RecordingDefaults:
    """CapabilityDefaults that answers one set of flags and remembers who asked."""

    def __init__(self, flags: CapabilityFlags) -> None:
        self.flags = flags
        self.asked: list[str] = []

    def flags_for(self, litellm_model: str) -> CapabilityFlags:
        self.asked.append(litellm_model)
        return self.flags


def test_capability_flags_stated_in_the_config_are_used_and_ask_no_one() -> None:
    defaults = _RecordingDefaults(CapabilityFlags())
    registry = ModelRegistry.from_dict(_doc(_model("a", **_ALL_FLAGS)),
                                       capability_defaults=defaults)
    a = registry.get_model("a")
    assert a is not None
    flags = (a.supports_tools, a.supports_streaming, a.supports_response_schema)
    assert flags == (True, False, True)
    assert defaults.asked == []


def test_flags_a_model_leaves_out_come_from_the_defaults_for_its_litellm_model() -> None:
    defaults = _RecordingDefaults(CapabilityFlags(supports_tools=True, supports_streaming=False,
                                                  supports_response_schema=True))
    registry = ModelRegistry.from_dict(
        _doc(_model("a", litellm_model="openai/gpt-4o", supports_tools=False)),
        capability_defaults=defaults)
    a = registry.get_model("a")
    assert a is not None
    flags = (a.supports_tools, a.supports_streaming, a.supports_response_schema)
    assert flags == (False, False, True)
    assert defaults.asked == ["openai/gpt-4o"]


def test_add_model_keeps_the_flags_of_the_metadata() -> None:
    defaults = _RecordingDefaults(CapabilityFlags())
    registry = ModelRegistry.from_dict(_doc(_model("a", **_ALL_FLAGS)),
                                       capability_defaults=defaults)
    a = registry.get_model("a")
    assert a is not None
    assert registry.add_model(replace(a, id="c", supports_tools=False)) is True
    c = registry.get_model("c")
    assert c is not None and (c.supports_tools, c.supports_response_schema) == (False, True)
    assert defaults.asked == []


def _litellm_map(tmp_path: Path, entries: dict[str, Any]) -> Path:
    path = tmp_path / "model_prices.json"
    path.write_text(json.dumps({"sample_spec": {"supports_function_calling": True}, **entries}),
                    encoding="utf-8")
    return path


def test_litellm_map_looks_up_the_prefixed_name_then_the_bare_name(tmp_path: Path) -> None:
    capabilities = LiteLLMCapabilityMap(_litellm_map(tmp_path, {
        "gpt-4o": {"supports_function_calling": True, "supports_response_schema": True},
        "gemini/flash": {"supports_function_calling": True},
        "o1-pro": {"supports_function_calling": True, "supports_native_streaming": False},
    }))
    assert capabilities.flags_for("openai/gpt-4o") == CapabilityFlags(True, True, True)
    assert capabilities.flags_for("gemini/flash") == CapabilityFlags(True, True, False)
    assert capabilities.flags_for("openai/o1-pro") == CapabilityFlags(True, False, False)
    assert capabilities.flags_for("openai/unknown") == CapabilityFlags(False, True, False)


def test_litellm_map_is_read_once_and_only_on_first_need(tmp_path: Path) -> None:
    path = _litellm_map(tmp_path, {"gpt-4o": {"supports_function_calling": True}})
    capabilities = LiteLLMCapabilityMap(path)
    ModelRegistry.from_dict(_doc(_model("a", **_ALL_FLAGS)), capability_defaults=capabilities)
    assert not capabilities.loaded and repr(capabilities) == "LiteLLMCapabilityMap(not loaded)"
    first = capabilities.flags_for("openai/gpt-4o")
    path.unlink()  # a second read would now find nothing
    assert capabilities.flags_for("openai/gpt-4o") == first == CapabilityFlags(supports_tools=True)
    assert repr(capabilities) == "LiteLLMCapabilityMap(2 models)"


def test_unreadable_litellm_map_gives_every_model_the_unknown_model_defaults(
        tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    for path in (broken, tmp_path / "missing.json"):
        assert LiteLLMCapabilityMap(path).flags_for("openai/gpt-4o") == CapabilityFlags()


def test_bundled_litellm_map_is_read_without_importing_litellm() -> None:
    code = ("import sys; from amm.registry import LiteLLMCapabilityMap; "
            "f = LiteLLMCapabilityMap().flags_for('openai/gpt-4o'); "
            "print(f.supports_tools, f.supports_response_schema, 'litellm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO, timeout=60)
    assert out.stdout.split() == ["True", "True", "False"]


def _shipped_registries() -> list[Path]:
    # The demo registry is package data; it lived in config/ before.
    return sorted({*REPO.glob("config/*.json"), *REPO.glob("amm/_data/*registry*.json")})


@pytest.mark.parametrize("path", _shipped_registries(), ids=lambda p: p.name)
def test_shipped_registries_state_every_capability_flag(path: Path) -> None:
    raw = json.loads(path.read_text(encoding="utf-8"))
    for entry in raw["models"]:
        missing = {"supports_tools", "supports_streaming", "supports_response_schema"} - set(entry)
        assert not missing, f"{path.name}: {entry['id']} leaves out {sorted(missing)}"


def test_simulator_models_support_tools_and_response_schema(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMM_SIM_URL", "http://127.0.0.1:1")
    demo = next(p for p in _shipped_registries() if p.name == "demo_registry.json")
    sims = [m for m in ModelRegistry(demo).models() if m.id.startswith("sim-")]
    assert {m.id for m in sims} >= {"sim-gpt-4o", "sim-claude", "sim-gemini", "sim-llama",
                                    "sim-gpt-mini"}
    assert all(m.supports_tools and m.supports_response_schema for m in sims)


# -- queries --------------------------------------------------------------------------------

def test_queries_filter_by_provider_capability_and_blended_cost() -> None:
    registry = ModelRegistry.from_dict(_doc(
        _model("cheap", cost_per_1k_input_tokens=0.0, cost_per_1k_output_tokens=0.002),
        _model("mid", provider="anthropic", capabilities=["analysis"],
               cost_per_1k_input_tokens=0.004, cost_per_1k_output_tokens=0.006),
        _model("dear", cost_per_1k_input_tokens=0.01, cost_per_1k_output_tokens=0.03,
               enabled=False),
    ))
    assert [m.id for m in registry.get_models_by_provider("openai")] == ["cheap", "dear"]
    assert [m.id for m in registry.get_models_by_capability("analysis")] == ["mid"]
    # blended = (input + output) / 2: cheap 0.001, mid 0.005, dear 0.02; bounds inclusive
    assert [m.id for m in registry.get_models_by_cost_range(0.001, 0.005)] == ["cheap", "mid"]
    assert [m.id for m in registry.get_models_by_cost_range(0.0, 1.0)] == ["cheap", "mid", "dear"]
    assert [m.id for m in registry.enabled_models()] == ["cheap", "mid"]
    assert "mid" in registry and "nope" not in registry and len(registry) == 3
    assert registry.get_model("nope") is None


def test_cost_range_rejects_inverted_or_negative_bounds() -> None:
    registry = ModelRegistry.from_dict(_doc())
    with pytest.raises(InvalidRequestError, match="min_cost"):
        registry.get_models_by_cost_range(0.5, 0.1)
    with pytest.raises(InvalidRequestError, match="max_cost"):
        registry.get_models_by_cost_range(0.0, -1)


def test_experiments_are_loaded_and_found_by_agent_type() -> None:
    registry = ModelRegistry.from_dict(_doc(experiments=[
        {"name": "ab", "agent_type": "implementation", "arms": {"a": 0.25, "b": 0.75}},
        {"name": "old", "agent_type": "implementation", "arms": {"a": 1.0}, "enabled": False},
    ]))
    exp = registry.experiment_for("implementation")
    assert exp == Experiment(name="ab", agent_type="implementation", arms={"a": 0.25, "b": 0.75})
    assert registry.experiment_for("research") is None
    assert [e.name for e in registry.experiments] == ["ab", "old"]


# -- bad configs: each names the file, the model (or experiment) and the field -------------

def _bad_models() -> list[tuple[str, dict[str, Any], str]]:
    """(case, document, the 'entry.field: problem' the message must contain)."""
    no_rpm = _model("a")
    no_rpm["rate_limits"] = {"tokens_per_minute": 5}
    missing_name = _model("a")
    del missing_name["name"]
    return [
        ("unknown key", _doc(_model("a", colour="red")), "models[a].colour: unknown key"),
        ("missing key", _doc(missing_name), "models[a].name: missing required key"),
        ("negative cost", _doc(_model("a", cost_per_1k_input_tokens=-1)),
         "models[a].cost_per_1k_input_tokens: must be a number >= 0, got -1"),
        ("string cost", _doc(_model("a", cost_per_1k_output_tokens="0.1")),
         "models[a].cost_per_1k_output_tokens: must be a number >= 0, got string '0.1'"),
        ("bool cost", _doc(_model("a", cost_per_1k_input_tokens=True)),
         "models[a].cost_per_1k_input_tokens: must be a number >= 0, got boolean True"),
        ("zero context", _doc(_model("a", context_window=0)),
         "models[a].context_window: must be an integer > 0, got 0"),
        ("float context", _doc(_model("a", context_window=1.5)),
         "models[a].context_window: must be an integer > 0, got 1.5"),
        ("negative rpm", _doc(_model("a", rate_limits={"requests_per_minute": -5,
                                                        "tokens_per_minute": 5})),
         "models[a].rate_limits.requests_per_minute: must be an integer > 0, got -5"),
        ("missing rpm", _doc(no_rpm),
         "models[a].rate_limits.requests_per_minute: missing required key"),
        ("unknown provider", _doc(_model("a", provider="acme")),
         "models[a].provider: unknown provider 'acme'"),
        ("duplicate id", _doc(_model("a"), _model("a")), "models[a].id: duplicate model id"),
        ("empty capabilities", _doc(_model("a", capabilities=[])),
         "models[a].capabilities: must be a non-empty list of strings"),
        ("non-string capability", _doc(_model("a", capabilities=["x", 3])),
         "models[a].capabilities[1]: must be a non-empty string, got 3"),
        ("enabled not bool", _doc(_model("a", enabled="yes")),
         "models[a].enabled: must be true or false, got string 'yes'"),
        ("supports_tools not bool", _doc(_model("a", supports_tools="yes")),
         "models[a].supports_tools: must be true or false, got string 'yes'"),
        ("supports_streaming not bool", _doc(_model("a", supports_streaming=1)),
         "models[a].supports_streaming: must be true or false, got 1"),
        ("supports_response_schema not bool", _doc(_model("a", supports_response_schema=None)),
         "models[a].supports_response_schema: must be true or false, got null"),
        ("unset env var", _doc(_model("a", api_base="${AMM_TEST_UNSET_VAR}/v1")),
         "models[a].api_base: environment variable AMM_TEST_UNSET_VAR is not set"),
        ("api_base not a URL", _doc(_model("a", api_base="localhost:8000")),
         "models[a].api_base: must be an http:// or https:// URL"),
        ("missing id", {"models": [{"provider": "openai"}]}, "models[0].id: missing required key"),
        ("unknown top-level key", {"models": [_model("a")], "modles": []},
         "modles: unknown key"),
    ]


def _bad_experiments() -> list[tuple[str, dict[str, Any], str]]:
    def exp(arms: Any, name: str = "ab", agent: str = "impl") -> dict[str, Any]:
        return {"name": name, "agent_type": agent, "arms": arms}

    return [
        ("arms do not sum to 1", _doc(experiments=[exp({"a": 0.5, "b": 0.4})]),
         "experiments[ab].arms: weights must sum to 1, got 0.9"),
        ("arm names unknown model", _doc(experiments=[exp({"a": 0.5, "zzz": 0.5})]),
         "experiments[ab].arms.zzz: unknown model"),
        ("arm names disabled model",
         _doc(_model("a"), _model("b", enabled=False), experiments=[exp({"a": 0.5, "b": 0.5})]),
         "experiments[ab].arms.b: model is disabled"),
        ("negative weight", _doc(experiments=[exp({"a": 1.0, "b": -0.5})]),
         "experiments[ab].arms.b: weight must be a number >= 0, got -0.5"),
        ("duplicate experiment name",
         _doc(experiments=[exp({"a": 1.0}), exp({"b": 1.0}, agent="other")]),
         "experiments[ab].name: duplicate experiment name"),
        ("two experiments on one agent type",
         _doc(experiments=[exp({"a": 1.0}), exp({"b": 1.0}, name="cd")]),
         "experiments[cd].agent_type: agent type 'impl' already has experiment 'ab'"),
        ("experiment unknown key", _doc(experiments=[{**exp({"a": 1.0}), "split": 2}]),
         "experiments[ab].split: unknown key"),
    ]


@pytest.mark.parametrize(("case", "document", "expected"),
                         [pytest.param(*c, id=c[0]) for c in _bad_models() + _bad_experiments()])
def test_bad_config_raises_configuration_error_naming_file_entry_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, document: dict[str, Any],
    expected: str,
) -> None:
    monkeypatch.delenv("AMM_TEST_UNSET_VAR", raising=False)
    path = _write(tmp_path, document)
    with pytest.raises(ConfigurationError) as info:
        ModelRegistry(path)
    assert info.value.error_message.startswith(f"{path}: {expected}")
    assert info.value.path == str(path)


def test_missing_file_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigurationError, match=f"{path}: file not found"):
        ModelRegistry(path)


def test_invalid_json_reports_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, '{\n  "models": [\n    {"id": "a",}\n  ]\n}')
    with pytest.raises(ConfigurationError, match=r"registry.json: line 3 column \d+: invalid JSON"):
        ModelRegistry(path)


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "models:\n  - id: a\n    name: [unclosed\n", "registry.yml")
    with pytest.raises(ConfigurationError, match=r"registry.yml: line \d+: invalid YAML"):
        ModelRegistry(path)


def test_document_that_is_not_an_object_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError,
                       match="must be an object with a 'models' list, got list"):
        ModelRegistry(_write(tmp_path, [1, 2]))


# -- reloads and changes -------------------------------------------------------------------

def test_failed_reload_keeps_the_last_good_configuration(tmp_path: Path) -> None:
    path = _write(tmp_path, _doc())
    registry = ModelRegistry(path)
    version = registry.version
    _write(tmp_path, _doc(_model("a", cost_per_1k_input_tokens=-1)))
    with pytest.raises(ConfigurationError, match="cost_per_1k_input_tokens"):
        registry.load_config()
    assert [m.id for m in registry.models()] == ["a", "b"]
    assert registry.version == version
    _write(tmp_path, _doc(_model("c")))
    registry.load_config()
    assert [m.id for m in registry.models()] == ["c"] and registry.version == version + 1


def test_add_model_validates_fills_defaults_and_refuses_a_taken_id() -> None:
    registry = ModelRegistry.from_dict(_doc())
    new = ModelMetadata(id="c", provider="anthropic", name="C", capabilities=["analysis"],
                        cost_per_1k_input_tokens=0.1, cost_per_1k_output_tokens=0.2,
                        rate_limits=RateLimits(10, 1000), context_window=100,
                        average_response_time_ms=10)
    version = registry.version
    assert registry.add_model(new) is True
    assert registry.get_model("c").litellm_model == "anthropic/c"  # type: ignore[union-attr]
    assert registry.version == version + 1
    assert registry.add_model(replace(new, name="other")) is False
    assert registry.get_model("c").name == "C"  # type: ignore[union-attr]


def test_invalid_add_raises_and_changes_nothing() -> None:
    registry = ModelRegistry.from_dict(_doc())
    a = registry.get_model("a")
    assert a is not None
    bad = replace(a, id="c", cost_per_1k_output_tokens=-0.5)
    version = registry.version
    with pytest.raises(ConfigurationError, match=r"models\[c\]\.cost_per_1k_output_tokens"):
        registry.add_model(bad)
    assert "c" not in registry and registry.version == version


def test_update_model_replaces_known_and_refuses_unknown_ids() -> None:
    registry = ModelRegistry.from_dict(_doc())
    a = registry.get_model("a")
    assert a is not None
    assert registry.update_model("a", replace(a, cost_per_1k_input_tokens=0.5)) is True
    assert registry.get_model("a").cost_per_1k_input_tokens == 0.5  # type: ignore[union-attr]
    assert registry.update_model("zzz", replace(a, id="zzz")) is False
    with pytest.raises(ConfigurationError, match="cannot rename"):
        registry.update_model("a", replace(a, id="b2"))


def test_update_that_breaks_an_experiment_is_refused() -> None:
    registry = ModelRegistry.from_dict(_doc(experiments=[
        {"name": "ab", "agent_type": "impl", "arms": {"a": 0.5, "b": 0.5}}]))
    b = registry.get_model("b")
    assert b is not None
    with pytest.raises(ConfigurationError, match=r"experiments\[ab\]\.arms\.b: model is disabled"):
        registry.update_model("b", replace(b, enabled=False))
    assert registry.get_model("b").enabled is True  # type: ignore[union-attr]


def test_from_models_validates_like_a_file() -> None:
    source = ModelRegistry.from_dict(_doc())
    copied = ModelRegistry.from_models(source.models(), [Experiment("x", "impl", {"a": 1.0})])
    assert copied.models() == source.models()
    assert copied.config_path is None
    assert copied.experiment_for("impl") is not None
    with pytest.raises(ConfigurationError, match=r"<models>: models\[a\]\.id: duplicate"):
        ModelRegistry.from_models([source.models()[0]] * 2)


def test_from_dict_does_not_alias_the_callers_document() -> None:
    doc = _doc()
    snapshot = copy.deepcopy(doc)
    registry = ModelRegistry.from_dict(doc, source="inline")
    doc["models"][0]["cost_per_1k_input_tokens"] = 99
    registry.load_config()
    assert registry.get_model("a").cost_per_1k_input_tokens == 0.001  # type: ignore[union-attr]
    assert doc["models"][1] == snapshot["models"][1]


def test_readers_see_whole_snapshots_during_reloads(tmp_path: Path) -> None:
    one, two = _doc(_model("a"), _model("b")), _doc(_model("x"), _model("y"), _model("z"))
    path = _write(tmp_path, one)
    registry = ModelRegistry(path)
    seen: set[tuple[str, ...]] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(tuple(m.id for m in registry.models()))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(30):
            _write(tmp_path, two if i % 2 else one)
            registry.load_config()
    finally:
        stop.set()
        reader.join()
    assert seen <= {("a", "b"), ("x", "y", "z")}


def test_default_registry_follows_AMM_CONFIG_and_is_cached_per_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = _write(tmp_path, _doc(_model("only")))
    monkeypatch.setenv("AMM_CONFIG", str(path))
    first = get_default_registry()
    assert [m.id for m in first.models()] == ["only"]
    assert get_default_registry() is first
    monkeypatch.delenv("AMM_CONFIG")
    monkeypatch.chdir(REPO)
    assert get_default_registry().get_model("gpt-4-turbo") is not None


def test_repr_shows_source_counts_and_version() -> None:
    registry = ModelRegistry.from_dict(_doc(), source="inline")
    assert repr(registry) == (
        "ModelRegistry('inline', models=2, enabled=2, experiments=0, version=1)")
