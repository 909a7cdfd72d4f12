"""Hostile registry files: every one is a ConfigurationError naming the file, never a crash.

Each case here was accepted, or crashed with a raw Python error, before the fix:
numbers beyond a float or a sane bound, nesting deeper than the parser's recursion,
keys given twice, ``api_base`` values that are not usable URLs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from amm.errors import ConfigurationError
from amm.registry import ModelRegistry

HUGE = "1" + "0" * 400  # 10**400 as JSON text: parses to an int no float can hold


def _model(model_id: str = "a", **over: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": model_id,
        "provider": "openai",
        "name": model_id.upper(),
        "capabilities": ["text-generation"],
        "cost_per_1k_input_tokens": 0.001,
        "cost_per_1k_output_tokens": 0.002,
        "rate_limits": {"requests_per_minute": 100, "tokens_per_minute": 10000},
        "context_window": 8000,
        "average_response_time_ms": 500,
        "supports_tools": False,
        "supports_streaming": True,
        "supports_response_schema": False,
    }
    entry.update(over)
    return entry


def _json_with(tmp_path: Path, field: str, raw_value: str, name: str = "registry.json") -> Path:
    """A registry whose model ``a`` has ``field`` set to ``raw_value``, spelled as given."""
    path = tmp_path / name
    text = json.dumps({"models": [_model(**{field: "@@"})]})
    path.write_text(text.replace('"@@"', raw_value), encoding="utf-8")
    return path


def _write(tmp_path: Path, text: str, name: str = "registry.json") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        ModelRegistry(path)
    assert info.value.path == str(path)
    return info.value


# -- numbers: finite and within bounds ----------------------------------------------------

@pytest.mark.parametrize("field", ["cost_per_1k_input_tokens", "cost_per_1k_output_tokens",
                                   "average_response_time_ms"])
def test_number_too_big_for_a_float_is_a_configuration_error_not_an_overflow(
    tmp_path: Path, field: str,
) -> None:
    path = _json_with(tmp_path, field, HUGE)
    message = _error(path).error_message
    assert message.startswith(f"{path}: models[a].{field}: must be at most ")
    assert message.endswith("got an integer of about 1e400")


def test_price_of_1e308_is_rejected_naming_the_bound(tmp_path: Path) -> None:
    path = _json_with(tmp_path, "cost_per_1k_output_tokens", "1e308")
    assert _error(path).error_message == (
        f"{path}: models[a].cost_per_1k_output_tokens: must be at most 1000 USD per 1k tokens,"
        " got 1e+308")


def test_price_at_the_bound_is_accepted(tmp_path: Path) -> None:
    model = ModelRegistry(_json_with(tmp_path, "cost_per_1k_input_tokens", "1000")).get_model("a")
    assert model is not None and model.cost_per_1k_input_tokens == 1000.0


def test_average_response_time_above_one_day_is_rejected(tmp_path: Path) -> None:
    path = _json_with(tmp_path, "average_response_time_ms", "86400001")
    assert _error(path).error_message == (
        f"{path}: models[a].average_response_time_ms: must be at most 8.64e+07 ms (one day),"
        " got 86400001")


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_price_is_rejected(tmp_path: Path, raw: str) -> None:
    path = _json_with(tmp_path, "cost_per_1k_input_tokens", raw)
    assert "models[a].cost_per_1k_input_tokens: must be" in _error(path).error_message


def test_infinite_latency_in_yaml_is_rejected(tmp_path: Path) -> None:
    doc = json.dumps({"models": [_model(average_response_time_ms="@@")]}).replace('"@@"', ".inf")
    path = _write(tmp_path, doc, "registry.yaml")  # JSON is YAML; .inf is YAML's infinity
    assert "models[a].average_response_time_ms: must be at most" in _error(path).error_message


@pytest.mark.parametrize(("field", "raw"), [
    ("rate_limits.requests_per_minute", HUGE),
    ("rate_limits.tokens_per_minute", "1000000001"),
    ("context_window", "10000000000"),
])
def test_rate_limits_and_context_window_above_a_billion_are_rejected(
    tmp_path: Path, field: str, raw: str,
) -> None:
    limits = {"requests_per_minute": "@@rpm", "tokens_per_minute": "@@tpm"}
    text = json.dumps({"models": [_model(rate_limits=limits, context_window="@@ctx")]})
    values = {"@@rpm": "100", "@@tpm": "1000", "@@ctx": "8000"}
    values[{"rate_limits.requests_per_minute": "@@rpm", "rate_limits.tokens_per_minute": "@@tpm",
            "context_window": "@@ctx"}[field]] = raw
    for marker, value in values.items():
        text = text.replace(f'"{marker}"', value)
    path = _write(tmp_path, text)
    message = _error(path).error_message
    assert message.startswith(f"{path}: models[a].{field}: must be at most 1,000,000,000, got ")


def test_experiment_weight_too_big_for_a_float_is_rejected(tmp_path: Path) -> None:
    text = json.dumps({"models": [_model("a"), _model("b")],
                       "experiments": [{"name": "ab", "agent_type": "impl",
                                        "arms": {"a": "@@", "b": 0.0}}]})
    path = _write(tmp_path, text.replace('"@@"', HUGE))
    assert _error(path).error_message.startswith(
        f"{path}: experiments[ab].arms.a: weight must be at most 1, got an integer of about 1e400")


# -- parser crashes ---------------------------------------------------------------------------

def test_deeply_nested_json_is_a_configuration_error_naming_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, '{"models": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert _error(path).error_message == f"{path}: invalid JSON: nested too deeply"


def test_deeply_nested_yaml_is_a_configuration_error_naming_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "models: " + "[" * 2_000 + "]" * 2_000 + "\n", "registry.yaml")
    assert _error(path).error_message == f"{path}: invalid YAML: nested too deeply"


@pytest.mark.parametrize("name", ["registry.json", "registry.yaml"])
def test_integer_too_long_to_parse_is_a_configuration_error(tmp_path: Path, name: str) -> None:
    # Python refuses int() of more than 4,300 digits with a ValueError inside the parser.
    path = _json_with(tmp_path, "context_window", "9" * 5_000, name)
    message = _error(path).error_message
    assert message.startswith(f"{path}: invalid {'YAML' if name.endswith('yaml') else 'JSON'}: "
                              "ValueError: Exceeds the limit")


def test_document_nested_too_deeply_for_a_copy_is_rejected_by_from_dict() -> None:
    nested: list[Any] = []
    for _ in range(5_000):
        nested = [nested]
    with pytest.raises(ConfigurationError, match="inline: the document is nested too deeply"):
        ModelRegistry.from_dict({"models": nested}, source="inline")


# -- duplicate keys ---------------------------------------------------------------------------

def test_duplicate_key_in_a_json_model_names_the_key_and_the_model(tmp_path: Path) -> None:
    text = json.dumps({"models": [_model("a"), _model("b")]}).replace(
        '"cost_per_1k_input_tokens": 0.001', '"cost_per_1k_input_tokens": 0.001, '
        '"cost_per_1k_input_tokens": 0.0', 1)
    path = _write(tmp_path, text)
    error = _error(path)
    assert error.error_message == (f"{path}: models[a].cost_per_1k_input_tokens: duplicate key"
                                   " (JSON would keep only the last value)")
    assert error.field == "models[a].cost_per_1k_input_tokens"


@pytest.mark.parametrize(("text", "field"), [
    ('{"models": [], "models": []}', "models"),
    ('{"models": [{"id": "x", "rate_limits": {"requests_per_minute": 1, '
     '"requests_per_minute": 2}}]}', "models[x].rate_limits.requests_per_minute"),
    ('{"models": [{"name": "no id", "provider": "a", "provider": "b"}]}', "models[no id].provider"),
    ('{"models": [], "experiments": [{"name": "ab", "arms": {"a": 0.5, "a": 0.5}}]}',
     "experiments[ab].arms.a"),
])
def test_duplicate_key_in_json_names_where_it_is(tmp_path: Path, text: str, field: str) -> None:
    path = _write(tmp_path, text)
    assert _error(path).error_message.startswith(f"{path}: {field}: duplicate key")


def test_duplicate_key_in_a_yaml_mapping_names_the_key_and_its_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, "models:\n  - id: a\n    provider: openai\n    provider: anthropic\n",
                  "registry.yml")
    assert _error(path).error_message == (
        f"{path}: line 4: invalid YAML: duplicate key 'provider' (first given at line 3)")


def test_duplicate_key_in_a_yaml_flow_mapping_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, 'models: [{id: a, id: b}]\n', "registry.yaml")
    assert "invalid YAML: duplicate key 'id'" in _error(path).error_message


def test_yaml_merge_key_may_still_override_a_merged_value(tmp_path: Path) -> None:
    base = json.dumps({k: v for k, v in _model("base").items() if k != "id"})
    path = _write(tmp_path, f"models:\n  - <<: {base}\n    id: a\n    name: A\n"
                  "    cost_per_1k_input_tokens: 0.5\n", "registry.yaml")
    model = ModelRegistry(path).get_model("a")
    assert model is not None and (model.name, model.cost_per_1k_input_tokens) == ("A", 0.5)


# -- api_base ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("api_base", "why"), [
    ("http://", "no host"),
    ("https:///v1", "no host"),
    ("http://local host:8000", "it contains a space or a control character"),
    ("http://localhost:8000/v1 ", "it contains a space or a control character"),
    ("http://localhost:8000/\nv1", "it contains a space or a control character"),
    ("http://[::1", "Invalid IPv6 URL"),
    ("http://localhost:99999", "Port out of range 0-65535"),
    ("http://localhost:port", "Port could not be cast to integer value as 'port'"),
    ("ftp://files.example.com", "must be an http:// or https:// URL"),
])
def test_api_base_must_be_an_http_url_with_a_host(tmp_path: Path, api_base: str, why: str) -> None:
    path = _write(tmp_path, json.dumps({"models": [_model(api_base=api_base)]}))
    message = _error(path).error_message
    assert message.startswith(f"{path}: models[a].api_base: must be an http:// or https:// URL")
    assert why in message and repr(api_base) in message


def test_api_base_from_an_environment_variable_is_checked_after_expansion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMM_TEST_BASE", "http://")
    path = _write(tmp_path, json.dumps({"models": [_model(api_base="${AMM_TEST_BASE}")]}))
    assert "models[a].api_base: must be an http:// or https:// URL with a host, got 'http://'" \
        in _error(path).error_message


@pytest.mark.parametrize("api_base", ["http://[::1]:8000/v1", "https://api.example.com",
                                      "http://127.0.0.1:5555/v1beta", "http://gpu-box:11434"])
def test_usable_api_base_urls_are_accepted(tmp_path: Path, api_base: str) -> None:
    path = _write(tmp_path, json.dumps({"models": [_model(api_base=api_base)]}))
    assert ModelRegistry(path).get_model("a").api_base == api_base  # type: ignore[union-attr]


# -- reloads ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    '{"models": ' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"models": [], "models": []}',
    json.dumps({"models": [_model(api_base="http://[::1")]}),
    json.dumps({"models": [_model()]}).replace("0.002", HUGE),
])
def test_hostile_reload_keeps_the_last_good_configuration(tmp_path: Path, bad: str) -> None:
    path = _write(tmp_path, json.dumps({"models": [_model("good")]}))
    registry = ModelRegistry(path)
    version = registry.version
    path.write_text(bad, encoding="utf-8")
    with pytest.raises(ConfigurationError):
        registry.load_config()
    assert [m.id for m in registry.models()] == ["good"] and registry.version == version
