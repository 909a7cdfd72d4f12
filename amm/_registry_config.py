"""Registry config, parsed in two phases: raw (a JSON/YAML document), then validated.

Phase one (:func:`read_document`) turns a file into a plain mapping and reports
syntax errors with their line. Phase two (:func:`validate_document`) turns that
mapping into frozen :class:`~amm.models.ModelMetadata` and
:class:`~amm.models.Experiment` values, or raises one
:class:`~amm.errors.ConfigurationError` whose message quotes where the problem is::

    config/model_registry.json: models[gpt-4-turbo].cost_per_1k_input_tokens: must be a
    number >= 0, got -1

(one line in the message; folded here).

Hostile files are errors too, never crashes: a parser failure of any kind (nesting
too deep, an integer too long), a key given twice in one object, a number that is
not finite or beyond a sane bound, an ``api_base`` that is not an http(s) URL with a
host. A model's capability flags it leaves out come from a
:class:`CapabilityDefaults` (the registry passes one that reads litellm's model map).

Nothing here keeps state; :mod:`amm.registry` swaps the validated snapshot in.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol
from urllib.parse import urlsplit

from amm.errors import ConfigurationError
from amm.models import Experiment, ModelMetadata, RateLimits

__all__ = [
    "CAPABILITY_FLAGS",
    "DEFAULT_OLLAMA_BASE_URL",
    "KNOWN_PROVIDERS",
    "LITELLM_PREFIXES",
    "MAX_COUNT",
    "MAX_PRICE_PER_1K_USD",
    "MAX_RESPONSE_TIME_MS",
    "CapabilityDefaults",
    "CapabilityFlags",
    "Snapshot",
    "UnknownCapabilities",
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
#: The per-model booleans that say what a model can honour (fields of ModelMetadata).
CAPABILITY_FLAGS = ("supports_tools", "supports_streaming", "supports_response_schema")
_OPTIONAL_MODEL_KEYS = ("enabled", "litellm_model", "api_base", *CAPABILITY_FLAGS)
_MODEL_KEYS = frozenset(_REQUIRED_MODEL_KEYS + _OPTIONAL_MODEL_KEYS)
_RATE_LIMIT_KEYS = ("requests_per_minute", "tokens_per_minute")
_EXPERIMENT_KEYS = frozenset({"name", "agent_type", "arms", "enabled"})
_TOP_KEYS = frozenset({"models", "experiments", "policy", "state"})
_STATE_KEYS = frozenset({"url", "fail_closed"})
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ARM_TOLERANCE = 1e-6

# Bounds far above any real model, low enough that sums and products stay finite: a
# price of 1e308 would make every cost inf, an rpm of 10**400 overflows the limiter.
MAX_PRICE_PER_1K_USD = 1000.0
"""Highest accepted price, in USD per 1k tokens (input or output)."""
MAX_RESPONSE_TIME_MS = 86_400_000.0
"""Highest accepted ``average_response_time_ms``: one day."""
MAX_COUNT = 10**9
"""Highest accepted rate limit (requests or tokens per minute) and context window."""


@dataclass(frozen=True, slots=True)
class CapabilityFlags:
    """What a model can honour; the defaults are those of a model nobody knows."""

    supports_tools: bool = False
    supports_streaming: bool = True
    supports_response_schema: bool = False


class CapabilityDefaults(Protocol):
    """Where a model's capability flags come from when its config leaves them out."""

    def flags_for(self, litellm_model: str) -> CapabilityFlags:
        """The flags of ``litellm_model`` (e.g. ``"openai/gpt-4o"``)."""
        ...


class UnknownCapabilities:
    """Knows no model: every model gets :class:`CapabilityFlags`' defaults."""

    __slots__ = ()

    def flags_for(self, litellm_model: str) -> CapabilityFlags:
        """``CapabilityFlags()``, whatever the model."""
        return CapabilityFlags()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One validated configuration; the registry swaps whole snapshots, never edits one."""

    models: tuple[ModelMetadata, ...]
    by_id: Mapping[str, ModelMetadata]
    enabled: tuple[ModelMetadata, ...]
    experiments: tuple[Experiment, ...]
    by_agent_type: Mapping[str, Experiment]
    policy: Mapping[str, Any] | None = None  # the "policy" object, validated (amm.policy)
    state: Mapping[str, Any] | None = None  # the "state" object: the fleet's shared state


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
        data = _parse_yaml(text, where)
    else:
        data = _parse_json(text, where)
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"{where}: the document must be an object with a 'models' list, got {_kind(data)}",
            path=where,
        )
    return data


def _parse_json(text: str, where: str) -> Any:
    duplicates = _RepeatedKeys()
    try:
        data = json.loads(text, object_pairs_hook=duplicates)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{where}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}", path=where
        ) from exc
    except Exception as exc:  # hostile input may crash a parser in any way
        raise ConfigurationError(f"{where}: invalid JSON: {_crash(exc)}", path=where) from exc
    if duplicates.found:
        obj, key = duplicates.found[0]
        field = _join(_path_to(data, obj), key)
        raise ConfigurationError(
            f"{where}: {field}: duplicate key (JSON would keep only the last value)",
            path=where, field=field,
        )
    return data


class _RepeatedKeys:
    """``object_pairs_hook`` that notes each object with a repeated key.

    The hook sees one object at a time, not where it sits, so the path is found
    after parsing (:func:`_path_to`), when there is something to report.
    """

    __slots__ = ("found",)

    def __init__(self) -> None:
        self.found: list[tuple[dict[str, Any], str]] = []

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.found.append((obj, key))
                    break
                seen.add(key)
        return obj


def _path_to(document: Any, target: object) -> str:
    """Where ``target`` sits in ``document``, as the validator names it (``models[a].rate_limits``).

    A list item is named by its ``id`` or ``name`` when it has one, else by its index.
    Iterative, so a document as deep as the parser allows is walked without recursion.
    """
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        node, at = stack.pop()
        if node is target:
            return at
        if isinstance(node, dict):
            stack.extend((value, _join(at, str(key))) for key, value in node.items())
        elif isinstance(node, list):
            for index, item in enumerate(node):
                label: object = index
                if isinstance(item, dict):
                    label = next((item[k] for k in ("id", "name") if isinstance(item.get(k), str)),
                                 index)
                stack.append((item, f"{at}[{label}]"))
    return ""


def _join(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def _parse_yaml(text: str, where: str) -> Any:
    import yaml  # only YAML configs pay for it

    try:
        return yaml.load(text, Loader=_strict_yaml_loader())  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigurationError(f"{where}: {at}invalid YAML: {problem}", path=where) from exc
    except Exception as exc:  # hostile input may crash a parser in any way
        raise ConfigurationError(f"{where}: invalid YAML: {_crash(exc)}", path=where) from exc


def _crash(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return f"{type(exc).__name__}: {exc}"


@functools.cache
def _strict_yaml_loader() -> type:
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error."""
    import yaml

    class StrictSafeLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` then overriding a key is YAML's merge, not a repeat
                key = self.construct_object(key_node, deep=deep)
                try:
                    line = first_line.get(key)
                except TypeError:
                    continue  # an unhashable key: SafeLoader reports it below
                if line is not None:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {key!r} (first given at line {line + 1})",
                        key_node.start_mark)
                first_line[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return StrictSafeLoader


def validate_document(data: Mapping[str, Any], source: str, *,
                      capability_defaults: CapabilityDefaults | None = None) -> Snapshot:
    """Phase two: a raw mapping as a :class:`Snapshot`, or a ConfigurationError.

    ``capability_defaults`` is asked only for models that leave a capability flag
    out (default: :class:`UnknownCapabilities`).
    """
    v = _Validator(source, capability_defaults or UnknownCapabilities())
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
        policy=v.policy(data.get("policy")),
        state=v.state(data.get("state")),
    )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int) and abs(value) >= 10**18:
        # repr of a 5,000-digit int raises ValueError, and no reader wants to count zeros
        return f"an integer of about 1e{math.floor(math.log10(abs(value)))}"
    if isinstance(value, int | float):
        return repr(value)
    return type(value).__name__


class _Validator:
    """Checks one document; every failure names the source, the entry and the field."""

    def __init__(self, source: str, capability_defaults: CapabilityDefaults) -> None:
        self.source = source
        self.capability_defaults = capability_defaults

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
                      f"unknown provider {provider!r} "
                      f"(known: {', '.join(sorted(KNOWN_PROVIDERS))});"
                      " give an explicit litellm_model to use another one", model_id=model_id)
        else:
            litellm_model = f"{LITELLM_PREFIXES[provider]}/{model_id}"

        enabled = self.boolean(raw, "enabled", True, at, model_id)
        flags = self.flags(raw, litellm_model, at, model_id)
        return ModelMetadata(
            id=model_id,
            provider=provider,
            name=name,
            capabilities=self.capabilities(raw["capabilities"], at, model_id),
            cost_per_1k_input_tokens=self.price(raw, "cost_per_1k_input_tokens", at, model_id),
            cost_per_1k_output_tokens=self.price(raw, "cost_per_1k_output_tokens", at, model_id),
            rate_limits=self.rate_limits(raw["rate_limits"], at, model_id),
            context_window=self.positive_int(raw, "context_window", at, model_id),
            average_response_time_ms=self.number(raw, "average_response_time_ms", at, model_id,
                                                 at_most=MAX_RESPONSE_TIME_MS, unit="ms (one day)"),
            enabled=enabled,
            litellm_model=litellm_model,
            api_base=self.api_base(raw.get("api_base"), provider, at, model_id),
            supports_tools=flags.supports_tools,
            supports_streaming=flags.supports_streaming,
            supports_response_schema=flags.supports_response_schema,
        )

    def boolean(self, raw: Mapping[str, Any], key: str, default: bool, at: str,
                model_id: str | None) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{at}.{key}", f"must be true or false, got {_kind(value)}",
                      model_id=model_id)
        return value

    def flags(self, raw: Mapping[str, Any], litellm_model: str, at: str,
              model_id: str) -> CapabilityFlags:
        given = {key: self.boolean(raw, key, False, at, model_id)
                 for key in CAPABILITY_FLAGS if key in raw}
        if len(given) == len(CAPABILITY_FLAGS):
            return CapabilityFlags(**given)  # the common case asks no one (and loads nothing)
        defaults = self.capability_defaults.flags_for(litellm_model)
        return CapabilityFlags(**{key: given.get(key, getattr(defaults, key))
                                  for key in CAPABILITY_FLAGS})

    def string(self, raw: Mapping[str, Any], key: str, at: str, model_id: str | None) -> str:
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            self.fail(f"{at}.{key}", f"must be a non-empty string, got {_kind(value)}",
                      model_id=model_id)
        return value

    def price(self, raw: Mapping[str, Any], key: str, at: str, model_id: str) -> float:
        return self.number(raw, key, at, model_id, at_most=MAX_PRICE_PER_1K_USD,
                           unit="USD per 1k tokens")

    def number(self, raw: Mapping[str, Any], key: str, at: str, model_id: str, *,
               at_most: float, unit: str) -> float:
        value = raw[key]
        # bool is an int to Python, never a price to a person; NaN fails every comparison.
        if (not isinstance(value, int | float) or isinstance(value, bool)
                or not value >= 0):
            self.fail(f"{at}.{key}", f"must be a number >= 0, got {_kind(value)}",
                      model_id=model_id)
        # Compared before float(): float(10**400) raises OverflowError, the comparison is exact.
        if value > at_most:
            self.fail(f"{at}.{key}", f"must be at most {at_most:g} {unit}, got {_kind(value)}",
                      model_id=model_id)
        return float(value)

    def positive_int(self, raw: Mapping[str, Any], key: str, at: str, model_id: str) -> int:
        value = raw[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            self.fail(f"{at}.{key}", f"must be an integer > 0, got {_kind(value)}",
                      model_id=model_id)
        if value > MAX_COUNT:
            self.fail(f"{at}.{key}", f"must be at most {MAX_COUNT:,}, got {_kind(value)}",
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
        problem = _url_problem(expanded)
        if problem:
            self.fail(field, f"must be an http:// or https:// URL with a host, got {expanded!r}"
                      f" ({problem})", model_id=model_id)
        return expanded

    # -- policy ---------------------------------------------------------------------------

    def policy(self, raw: object) -> Mapping[str, Any] | None:
        """The routing policy object, checked by building it once (:mod:`amm.policy`)."""
        from amm.policy import policy_from_config

        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            self.fail("policy", f"must be an object with a kind, got {_kind(raw)}")
        try:
            policy_from_config(raw)
        except ConfigurationError as exc:
            field = exc.field or "policy"
            self.fail(field, exc.error_message.removeprefix(f"{field}: "))
        return dict(raw)

    # -- state --------------------------------------------------------------------------

    def state(self, raw: object) -> Mapping[str, Any] | None:
        """The fleet's shared state: ``{"url": "redis://host:port/db", "fail_closed": false}``
        (``${VAR}`` expanded in the URL; an empty URL means in-process)."""
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            self.fail("state", f"must be an object with a url, got {_kind(raw)}")
        self.no_unknown_keys(raw, _STATE_KEYS, "state")
        url = raw.get("url", "")
        if not isinstance(url, str):
            self.fail("state.url", f"must be a string, got {_kind(url)}")
        url = _ENV_REF.sub(lambda m: os.environ.get(m.group(1), ""), url).strip()
        if url and not url.startswith(("redis://", "rediss://", "unix://", "memory://")):
            self.fail("state.url", f"must be a redis://host:port/db URL, got {url!r}")
        fail_closed = raw.get("fail_closed", False)
        if not isinstance(fail_closed, bool):
            self.fail("state.fail_closed", f"must be true or false, got {_kind(fail_closed)}")
        return {"url": url, "fail_closed": fail_closed}

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

    def experiment(self, raw: object, index: int,
                   models: Mapping[str, ModelMetadata]) -> Experiment:
        if not isinstance(raw, Mapping):
            self.fail(f"experiments[{index}]", f"must be an object, got {_kind(raw)}")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            self.fail(f"experiments[{index}].name",
                      f"must be a non-empty string, got {_kind(name)}")
        at = f"experiments[{name}]"
        self.no_unknown_keys(raw, _EXPERIMENT_KEYS, at)
        for key in ("agent_type", "arms"):
            if key not in raw:
                self.fail(f"{at}.{key}", "missing required key")
        agent_type = self.string(raw, "agent_type", at, None)
        enabled = self.boolean(raw, "enabled", True, at, None)
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
                    or not weight >= 0):
                self.fail(field, f"weight must be a number >= 0, got {_kind(weight)}",
                          model_id=model_id)
            if weight > 1:  # also keeps 10**400 away from float() and fsum()
                self.fail(field, f"weight must be at most 1, got {_kind(weight)}",
                          model_id=model_id)
            weights[model_id] = float(weight)
        total = math.fsum(weights.values())
        if abs(total - 1.0) > _ARM_TOLERANCE:
            self.fail(f"{at}.arms", f"weights must sum to 1, got {total:g}")
        return Experiment(name=name, agent_type=agent_type, arms=weights,
                          enabled=enabled)


def _url_problem(url: str) -> str | None:
    """Why ``url`` is no usable http(s) base URL, or None when it is one."""
    if any(c.isspace() or not c.isprintable() for c in url):
        return "it contains a space or a control character"
    try:
        parts = urlsplit(url)
        _ = parts.port  # parsing the port is what raises for "host:99999"
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return "the scheme is not http or https"
    if not parts.hostname:
        return "no host"
    return None


def as_document(models: Sequence[ModelMetadata], experiments: Sequence[Experiment] = (),
                policy: Mapping[str, Any] | None = None,
                state: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Values back as a raw document, so built-in values pass the same validation as files."""
    document: dict[str, Any] = {
        "models": [_model_entry(m) for m in models],
        "experiments": [
            {"name": e.name, "agent_type": e.agent_type, "arms": dict(e.arms), "enabled": e.enabled}
            for e in experiments
        ],
    }
    if policy is not None:
        document["policy"] = dict(policy)
    if state is not None:
        document["state"] = dict(state)
    return document


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
        **{key: getattr(m, key) for key in CAPABILITY_FLAGS},
    }
