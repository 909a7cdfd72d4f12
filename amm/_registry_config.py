"""Registry config, parsed in two phases: raw (a JSON/YAML document), then validated.

Phase one (:func:`read_document`) turns a file into a plain mapping and reports
syntax errors with their line. Phase two (:func:`validate_document`) turns that
mapping into frozen :class:`~amm.models.ModelMetadata` and
:class:`~amm.models.Experiment` values, or raises one
:class:`~amm.errors.ConfigurationError` whose message quotes where the problem is::

    config/model_registry.json: models[gpt-4-turbo].cost_per_1k_input_tokens: must be a number >= 0, got -1

Nothing here keeps state; :mod:`amm.registry` swaps the validated snapshot in.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from amm.errors import ConfigurationError
from amm.models import Experiment, ModelMetadata, RateLimits

__all__ = [
    "DEFAULT_OLLAMA_BASE_URL",
    "KNOWN_PROVIDERS",
    "LITELLM_PREFIXES",
    "Snapshot",
    "as_document",
    "read_document",
    "validate_document",
]

#: litellm's model prefix for each provider amm knows (``{prefix}/{id}`` is the default).
LITELLM_PREFIXES: Mapping[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gemini",
    "ollama": "ollama_chat",  # the chat endpoint; plain "ollama/" uses a prompt template
}
KNOWN_PROVIDERS = frozenset(LITELLM_PREFIXES)

#: Where Ollama listens when neither the config nor ``OLLAMA_BASE_URL`` says.
DEFAULT_OLLAMA_BASE_URL = "http://localhost:11434"

_REQUIRED_MODEL_KEYS = (
    "id", "provider", "name", "capabilities", "cost_per_1k_input_tokens",
    "cost_per_1k_output_tokens", "rate_limits", "context_window", "average_response_time_ms",
)
_OPTIONAL_MODEL_KEYS = ("enabled", "litellm_model", "api_base")
_MODEL_KEYS = frozenset(_REQUIRED_MODEL_KEYS + _OPTIONAL_MODEL_KEYS)
_RATE_LIMIT_KEYS = ("requests_per_minute", "tokens_per_minute")
_EXPERIMENT_KEYS = frozenset({"name", "agent_type", "arms", "enabled"})
_TOP_KEYS = frozenset({"models", "experiments"})
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ARM_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One validated configuration; the registry swaps whole snapshots, never edits one."""

    models: tuple[ModelMetadata, ...]
    by_id: Mapping[str, ModelMetadata]
    enabled: tuple[ModelMetadata, ...]
    experiments: tuple[Experiment, ...]
    by_agent_type: Mapping[str, Experiment]


def read_document(path: Path) -> dict[str, Any]:
    """Phase one: the file as a mapping (JSON, or YAML by the ``.yaml``/``.yml`` suffix)."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"{where}: file not found", path=where) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{where}: cannot read: {exc}", path=where) from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # only YAML configs pay for it

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f"line {mark.line + 1}: " if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigurationError(f"{where}: {at}invalid YAML: {problem}", path=where) from exc
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(
                f"{where}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}", path=where
            ) from exc
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"{where}: the document must be an object with a 'models' list, got {_kind(data)}",
            path=where,
        )
    return data


def validate_document(data: Mapping[str, Any], source: str) -> Snapshot:
    """Phase two: a raw mapping as a :class:`Snapshot`, or a ConfigurationError."""
    v = _Validator(source)
    if not isinstance(data, Mapping):
        v.fail("", f"the document must be an object with a 'models' list, got {_kind(data)}")
    v.no_unknown_keys(data, _TOP_KEYS, "")
    if "models" not in data:
        v.fail("models", "missing required key")
    raw_models = data["models"]
    if not isinstance(raw_models, list):
        v.fail("models", f"must be a list, got {_kind(raw_models)}")
    models: list[ModelMetadata] = []
    by_id: dict[str, ModelMetadata] = {}
    for index, raw in enumerate(raw_models):
        model = v.model(raw, index)
        if model.id in by_id:
            v.fail(f"models[{model.id}].id", "duplicate model id", model_id=model.id)
        by_id[model.id] = model
        models.append(model)
    experiments = v.experiments(data.get("experiments", []), by_id)
    by_agent = {e.agent_type: e for e in experiments if e.enabled}
    return Snapshot(
        models=tuple(models),
        by_id=by_id,
        enabled=tuple(m for m in models if m.enabled),
        experiments=tuple(experiments),
        by_agent_type=by_agent,
    )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return repr(value)
    return type(value).__name__


class _Validator:
    """Checks one document; every failure names the source, the entry and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, problem: str, *, model_id: str | None = None) -> NoReturn:
        where = f"{self.source}: {field}: " if field else f"{self.source}: "
        raise ConfigurationError(where + problem, path=self.source, field=field or None,
                                 model_id=model_id)

    def no_unknown_keys(self, raw: Mapping[str, Any], allowed: frozenset[str], at: str,
                        model_id: str | None = None) -> None:
        for key in raw:
            if key not in allowed:
                field = f"{at}.{key}" if at else str(key)
                self.fail(field, f"unknown key (allowed: {', '.join(sorted(allowed))})",
                          model_id=model_id)

    # -- models ---------------------------------------------------------------------------

    def model(self, raw: object, index: int) -> ModelMetadata:
        if not isinstance(raw, Mapping):
            self.fail(f"models[{index}]", f"must be an object, got {_kind(raw)}")
        if "id" not in raw:
            self.fail(f"models[{index}].id", "missing required key")
        model_id = raw["id"]
        if not isinstance(model_id, str) or not model_id.strip():
            self.fail(f"models[{index}].id", f"must be a non-empty string, got {_kind(model_id)}")
        at = f"models[{model_id}]"
        self.no_unknown_keys(raw, _MODEL_KEYS, at, model_id)
        for key in _REQUIRED_MODEL_KEYS:
            if key not in raw:
                self.fail(f"{at}.{key}", "missing required key", model_id=model_id)

        provider = self.string(raw, "provider", at, model_id)
        name = self.string(raw, "name", at, model_id)
        litellm_model = raw.get("litellm_model")
        if litellm_model is not None:
            litellm_model = self.string(raw, "litellm_model", at, model_id)
        elif provider not in KNOWN_PROVIDERS:
            self.fail(f"{at}.provider",
                      f"unknown provider {provider!r} (known: {', '.join(sorted(KNOWN_PROVIDERS))});"
                      " give an explicit litellm_model to use another one", model_id=model_id)
        else:
            litellm_model = f"{LITELLM_PREFIXES[provider]}/{model_id}"

        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            self.fail(f"{at}.enabled", f"must be true or false, got {_kind(enabled)}",
                      model_id=model_id)
        return ModelMetadata(
            id=model_id,
            provider=provider,
            name=name,
            capabilities=self.capabilities(raw["capabilities"], at, model_id),
            cost_per_1k_input_tokens=self.number(raw, "cost_per_1k_input_tokens", at, model_id),
            cost_per_1k_output_tokens=self.number(raw, "cost_per_1k_output_tokens", at, model_id),
            rate_limits=self.rate_limits(raw["rate_limits"], at, model_id),
            context_window=self.positive_int(raw, "context_window", at, model_id),
            average_response_time_ms=self.number(raw, "average_response_time_ms", at, model_id),
            enabled=enabled,
            litellm_model=litellm_model,
            api_base=self.api_base(raw.get("api_base"), provider, at, model_id),
        )

    def string(self, raw: Mapping[str, Any], key: str, at: str, model_id: str | None) -> str:
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            self.fail(f"{at}.{key}", f"must be a non-empty string, got {_kind(value)}",
                      model_id=model_id)
        return value

    def number(self, raw: Mapping[str, Any], key: str, at: str, model_id: str) -> float:
        value = raw[key]
        # bool is an int to Python, never a price to a person.
        if (not isinstance(value, int | float) or isinstance(value, bool)
                or not math.isfinite(value) or value < 0):
            self.fail(f"{at}.{key}", f"must be a number >= 0, got {_kind(value)}",
                      model_id=model_id)
        return float(value)

    def positive_int(self, raw: Mapping[str, Any], key: str, at: str, model_id: str) -> int:
        value = raw[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            self.fail(f"{at}.{key}", f"must be an integer > 0, got {_kind(value)}",
                      model_id=model_id)
        return value

    def capabilities(self, value: object, at: str, model_id: str) -> list[str]:
        field = f"{at}.capabilities"
        if not isinstance(value, list) or not value:
            self.fail(field, f"must be a non-empty list of strings, got {_kind(value)}",
                      model_id=model_id)
        for i, cap in enumerate(value):
            if not isinstance(cap, str) or not cap.strip():
                self.fail(f"{field}[{i}]", f"must be a non-empty string, got {_kind(cap)}",
                          model_id=model_id)
        return list(value)

    def rate_limits(self, value: object, at: str, model_id: str) -> RateLimits:
        field = f"{at}.rate_limits"
        if not isinstance(value, Mapping):
            self.fail(field, f"must be an object with {' and '.join(_RATE_LIMIT_KEYS)}, "
                      f"got {_kind(value)}", model_id=model_id)
        self.no_unknown_keys(value, frozenset(_RATE_LIMIT_KEYS), field, model_id)
        for key in _RATE_LIMIT_KEYS:
            if key not in value:
                self.fail(f"{field}.{key}", "missing required key", model_id=model_id)
        return RateLimits(
            requests_per_minute=self.positive_int(value, "requests_per_minute", field, model_id),
            tokens_per_minute=self.positive_int(value, "tokens_per_minute", field, model_id),
        )

    def api_base(self, value: object, provider: str, at: str, model_id: str) -> str | None:
        field = f"{at}.api_base"
        if value is None:
            if provider == "ollama":
                return os.environ.get("OLLAMA_BASE_URL") or DEFAULT_OLLAMA_BASE_URL
            return None
        if not isinstance(value, str):
            self.fail(field, f"must be a URL string or null, got {_kind(value)}", model_id=model_id)

        def expand(match: re.Match[str]) -> str:
            name = match.group(1)
            resolved = os.environ.get(name)
            if not resolved:
                self.fail(field, f"environment variable {name} is not set (referenced as "
                          f"${{{name}}})", model_id=model_id)
            return resolved

        expanded = _ENV_REF.sub(expand, value)
        if not expanded.startswith(("http://", "https://")):
            self.fail(field, f"must be an http:// or https:// URL, got {expanded!r}",
                      model_id=model_id)
        return expanded

    # -- experiments ----------------------------------------------------------------------

    def experiments(self, raw: object, models: Mapping[str, ModelMetadata]) -> list[Experiment]:
        if not isinstance(raw, list):
            self.fail("experiments", f"must be a list, got {_kind(raw)}")
        result: list[Experiment] = []
        names: set[str] = set()
        agent_types: dict[str, str] = {}
        for index, entry in enumerate(raw):
            exp = self.experiment(entry, index, models)
            if exp.name in names:
                self.fail(f"experiments[{exp.name}].name", "duplicate experiment name")
            names.add(exp.name)
            if exp.enabled:
                other = agent_types.get(exp.agent_type)
                if other is not None:
                    self.fail(f"experiments[{exp.name}].agent_type",
                              f"agent type {exp.agent_type!r} already has experiment {other!r}"
                              " (one enabled experiment per agent type)")
                agent_types[exp.agent_type] = exp.name
            result.append(exp)
        return result

    def experiment(self, raw: object, index: int, models: Mapping[str, ModelMetadata]) -> Experiment:
        if not isinstance(raw, Mapping):
            self.fail(f"experiments[{index}]", f"must be an object, got {_kind(raw)}")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            self.fail(f"experiments[{index}].name", f"must be a non-empty string, got {_kind(name)}")
        at = f"experiments[{name}]"
        self.no_unknown_keys(raw, _EXPERIMENT_KEYS, at)
        for key in ("agent_type", "arms"):
            if key not in raw:
                self.fail(f"{at}.{key}", "missing required key")
        agent_type = self.string(raw, "agent_type", at, None)
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            self.fail(f"{at}.enabled", f"must be true or false, got {_kind(enabled)}")
        arms = raw["arms"]
        if not isinstance(arms, Mapping) or not arms:
            self.fail(f"{at}.arms", f"must be a non-empty object of model id -> weight, "
                      f"got {_kind(arms)}")
        weights: dict[str, float] = {}
        for model_id, weight in arms.items():
            field = f"{at}.arms.{model_id}"
            model = models.get(model_id)
            if model is None:
                self.fail(field, "unknown model", model_id=str(model_id))
            elif enabled and not model.enabled:
                self.fail(field, "model is disabled", model_id=model_id)
            if (not isinstance(weight, int | float) or isinstance(weight, bool)
                    or not math.isfinite(weight) or weight < 0):
                self.fail(field, f"weight must be a number >= 0, got {_kind(weight)}",
                          model_id=model_id)
            weights[model_id] = float(weight)
        total = math.fsum(weights.values())
        if abs(total - 1.0) > _ARM_TOLERANCE:
            self.fail(f"{at}.arms", f"weights must sum to 1, got {total:g}")
        return Experiment(name=name, agent_type=agent_type, arms=weights,
                          enabled=enabled)


def as_document(models: Sequence[ModelMetadata], experiments: Sequence[Experiment] = ()) -> dict[str, Any]:
    """Values back as a raw document, so built-in values pass the same validation as files."""
    return {
        "models": [_model_entry(m) for m in models],
        "experiments": [
            {"name": e.name, "agent_type": e.agent_type, "arms": dict(e.arms), "enabled": e.enabled}
            for e in experiments
        ],
    }


def _model_entry(m: ModelMetadata) -> dict[str, Any]:
    rate_limits: Any = m.rate_limits
    if isinstance(rate_limits, RateLimits):
        rate_limits = {"requests_per_minute": rate_limits.requests_per_minute,
                       "tokens_per_minute": rate_limits.tokens_per_minute}
    return {
        "id": m.id, "provider": m.provider, "name": m.name,
        "capabilities": list(m.capabilities) if isinstance(m.capabilities, list | tuple)
        else m.capabilities,
        "cost_per_1k_input_tokens": m.cost_per_1k_input_tokens,
        "cost_per_1k_output_tokens": m.cost_per_1k_output_tokens,
        "rate_limits": rate_limits, "context_window": m.context_window,
        "average_response_time_ms": m.average_response_time_ms, "enabled": m.enabled,
        "litellm_model": m.litellm_model, "api_base": m.api_base,
    }
