"""The model registry: which models exist, what they cost, where litellm sends them.

The registry reads ``config/model_registry.json`` (or YAML) in two phases (see
:mod:`amm._registry_config`) and keeps the result as one immutable snapshot.
Readers take the current snapshot without a lock; a reload or change validates a
whole new snapshot and swaps it in, so a reader never sees half a configuration
and a bad file never replaces a good one.

A model whose config leaves out ``supports_tools``, ``supports_streaming`` or
``supports_response_schema`` gets what litellm's bundled model map says about its
``litellm_model`` (:class:`LiteLLMCapabilityMap`, read without importing litellm),
else the defaults of an unknown model.

>>> registry = ModelRegistry(Path("config/model_registry.json"))
>>> registry.get_model("gpt-4-turbo").cost_per_1k_input_tokens
0.01
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from amm._registry_config import (
    CapabilityDefaults,
    CapabilityFlags,
    Snapshot,
    as_document,
    read_document,
    validate_document,
)
from amm.errors import ConfigurationError, InvalidRequestError
from amm.models import Experiment, ModelMetadata

__all__ = [
    "AMM_CONFIG",
    "DEFAULT_CONFIG_PATH",
    "LITELLM_CAPABILITIES",
    "LiteLLMCapabilityMap",
    "ModelRegistry",
    "blended_cost",
    "get_default_registry",
]

AMM_CONFIG = "AMM_CONFIG"
"""Environment variable naming the registry file :func:`get_default_registry` loads."""

DEFAULT_CONFIG_PATH = Path("config/model_registry.json")
"""The registry file used when ``AMM_CONFIG`` is unset (relative to the working directory)."""

_log = logging.getLogger(__name__)


class ModelRegistry:
    """Model metadata and A/B experiments, loaded from a config file and validated.

    Queries return models in config order and include disabled models (use
    :meth:`enabled_models` for the ones selection may use). :meth:`add_model` and
    :meth:`update_model` change the in-memory configuration only; :meth:`load_config`
    re-reads the file and so drops them. ``version`` grows on every successful change,
    so callers can cache what they derive from the registry.
    """

    __slots__ = ("_capability_defaults", "_config_path", "_lock", "_raw", "_snapshot", "_source",
                 "_version")

    def __init__(self, config_path: Path | str | None, *,
                 capability_defaults: CapabilityDefaults | None = None) -> None:
        """Load ``config_path`` (JSON, or YAML by suffix); raise ConfigurationError if bad.

        ``capability_defaults`` fills the capability flags a model leaves out
        (default: litellm's bundled model map, read once per process on first need).
        """
        self._capability_defaults = capability_defaults or LITELLM_CAPABILITIES
        self._config_path = Path(config_path) if config_path is not None else None
        self._source = str(self._config_path) if self._config_path is not None else "<dict>"
        self._lock = threading.Lock()
        self._raw: dict[str, Any] | None = None  # the source document of a file-less registry
        self._version = 0
        self._snapshot = Snapshot((), {}, (), (), {})
        if self._config_path is not None:
            self.load_config()

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>",
                  capability_defaults: CapabilityDefaults | None = None) -> ModelRegistry:
        """A registry from a config document already in memory (tests, benchmarks).

        ``source`` is the name error messages quote instead of a file name.
        """
        registry = cls(None, capability_defaults=capability_defaults)
        registry._source = source
        registry._raw = _copied(data, source)
        registry.load_config()
        return registry

    @classmethod
    def from_models(
        cls, models: Iterable[ModelMetadata], experiments: Iterable[Experiment] = ()
    ) -> ModelRegistry:
        """A registry holding the given models and experiments, validated like a file."""
        return cls.from_dict(as_document(list(models), list(experiments)), source="<models>")

    # -- loading and changes ------------------------------------------------------------

    def load_config(self) -> None:
        """(Re)load the configuration. On any error raise ConfigurationError and keep the
        last good configuration."""
        with self._lock:
            if self._config_path is not None:
                data = read_document(self._config_path)
            else:
                data = _copied(self._raw or {"models": []}, self._source)
            self._swap(validate_document(data, self._source,
                                         capability_defaults=self._capability_defaults))

    def add_model(self, metadata: ModelMetadata) -> bool:
        """Add a model. False if its id is taken; ConfigurationError if it is invalid."""
        with self._lock:
            current = self._snapshot
            if getattr(metadata, "id", None) in current.by_id:
                return False
            self._swap(self._validated([*current.models, metadata], current))
            return True

    def update_model(self, model_id: str, metadata: ModelMetadata) -> bool:
        """Replace ``model_id``'s metadata. False if no such model; ConfigurationError if the
        new metadata is invalid, renames the model, or breaks an experiment."""
        with self._lock:
            current = self._snapshot
            if model_id not in current.by_id:
                return False
            if getattr(metadata, "id", None) != model_id:
                raise ConfigurationError(
                    f"{self._source}: models[{model_id}].id: update_model cannot rename a model "
                    f"(got id {getattr(metadata, 'id', None)!r})",
                    path=self._source, field=f"models[{model_id}].id", model_id=model_id,
                )
            models = [metadata if m.id == model_id else m for m in current.models]
            self._swap(self._validated(models, current))
            return True

    def _validated(self, models: list[ModelMetadata], current: Snapshot) -> Snapshot:
        for m in models:
            if not isinstance(m, ModelMetadata):
                raise ConfigurationError(
                    f"{self._source}: models: expected a ModelMetadata, got {type(m).__name__}",
                    path=self._source, field="models",
                )
        return validate_document(as_document(models, current.experiments, current.policy,
                                             current.state),
                                 self._source,
                                 capability_defaults=self._capability_defaults)

    def _swap(self, snapshot: Snapshot) -> None:
        # One attribute store: readers see the old snapshot or the new one, never a mix.
        self._snapshot = snapshot
        self._version += 1

    # -- queries ------------------------------------------------------------------------

    @property
    def config_path(self) -> Path | None:
        """The file this registry loads, or None when built from memory."""
        return self._config_path

    @property
    def version(self) -> int:
        """Grows by one on every successful load, reload, add or update."""
        return self._version

    def get_model(self, model_id: str) -> ModelMetadata | None:
        """The model with this id, or None."""
        return self._snapshot.by_id.get(model_id)

    def models(self) -> list[ModelMetadata]:
        """Every model, enabled or not, in config order."""
        return list(self._snapshot.models)

    def enabled_models(self) -> list[ModelMetadata]:
        """The enabled models, in config order."""
        return list(self._snapshot.enabled)

    def get_models_by_provider(self, provider: str) -> list[ModelMetadata]:
        """Every model of ``provider`` (e.g. ``"openai"``), in config order."""
        return [m for m in self._snapshot.models if m.provider == provider]

    def get_models_by_capability(self, capability: str) -> list[ModelMetadata]:
        """Every model that lists ``capability``, in config order."""
        return [m for m in self._snapshot.models if capability in m.capabilities]

    def get_models_by_cost_range(self, min_cost: float, max_cost: float) -> list[ModelMetadata]:
        """Models whose blended price per 1k tokens, the mean of the input and output
        price, lies in ``[min_cost, max_cost]`` (both inclusive)."""
        for name, value in (("min_cost", min_cost), ("max_cost", max_cost)):
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise InvalidRequestError(f"{name} must be a number >= 0; got {value!r}",
                                          error_type="invalid_cost_range")
        if min_cost > max_cost:
            raise InvalidRequestError(
                f"min_cost ({min_cost}) must not exceed max_cost ({max_cost})",
                error_type="invalid_cost_range",
            )
        return [m for m in self._snapshot.models if min_cost <= blended_cost(m) <= max_cost]

    @property
    def experiments(self) -> list[Experiment]:
        """Every configured experiment (enabled or not), in config order."""
        return list(self._snapshot.experiments)

    def policy_config(self) -> Mapping[str, Any] | None:
        """The registry's ``"policy"`` object (:mod:`amm.policy`), or None for the default."""
        return self._snapshot.policy

    def state_config(self) -> Mapping[str, Any] | None:
        """The registry's ``"state"`` object (``url``, ``fail_closed``), or None: the
        fleet's shared state (see :mod:`amm.state`)."""
        return self._snapshot.state

    def experiment_for(self, agent_type: str) -> Experiment | None:
        """The enabled experiment that splits ``agent_type``'s traffic, if any."""
        return self._snapshot.by_agent_type.get(agent_type)

    def __len__(self) -> int:
        return len(self._snapshot.models)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._snapshot.by_id

    def __repr__(self) -> str:
        snap = self._snapshot
        return (f"ModelRegistry({self._source!r}, models={len(snap.models)}, "
                f"enabled={len(snap.enabled)}, experiments={len(snap.experiments)}, "
                f"version={self._version})")


def _copied(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    try:
        return copy.deepcopy(dict(data))
    except RecursionError:
        raise ConfigurationError(f"{source}: the document is nested too deeply",
                                 path=source) from None


class LiteLLMCapabilityMap:
    """Capability flags from litellm's bundled model map, read without importing litellm.

    ``import litellm`` takes seconds; its map is a plain JSON file inside the package
    (``model_prices_and_context_window_backup.json``), found with
    :func:`importlib.util.find_spec`, which locates a package without running it. The
    file is read on the first :meth:`flags_for` only, then kept as flags per model
    (a few hundred kB instead of the whole 3 MB map). A model is looked up by its
    ``litellm_model`` (``openai/gpt-4o``), then without the provider prefix
    (``gpt-4o``). Without litellm, or with a map it cannot read, every model gets the
    defaults of an unknown model.
    """

    __slots__ = ("_flags", "_lock", "_path")

    def __init__(self, path: Path | None = None) -> None:
        """Read ``path`` (default: the map inside the installed litellm) on first need."""
        self._path = path
        self._lock = threading.Lock()
        self._flags: dict[str, CapabilityFlags] | None = None

    def flags_for(self, litellm_model: str) -> CapabilityFlags:
        """What litellm's map says ``litellm_model`` supports; unknown models get the defaults."""
        flags = self._flags if self._flags is not None else self._load()
        found = flags.get(litellm_model)
        if found is None and "/" in litellm_model:
            found = flags.get(litellm_model.split("/", 1)[1])
        return found or CapabilityFlags()

    @property
    def loaded(self) -> bool:
        """Whether the map has been read (it is read at most once)."""
        return self._flags is not None

    def _load(self) -> dict[str, CapabilityFlags]:
        with self._lock:
            if self._flags is None:
                self._flags = _read_litellm_map(self._path or _bundled_litellm_map())
            return self._flags

    def __repr__(self) -> str:
        state = f"{len(self._flags)} models" if self._flags is not None else "not loaded"
        return f"LiteLLMCapabilityMap({state})"


def _bundled_litellm_map() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / (
        "model_prices_and_context_window_backup.json")


def _read_litellm_map(path: Path | None) -> dict[str, CapabilityFlags]:
    if path is None:
        return {}
    try:
        with path.open("rb") as file:
            raw = json.load(file)
    except (OSError, ValueError, RecursionError) as exc:
        # Only defaults are lost: explicit flags in the config still work.
        _log.warning("cannot read litellm's model map %s (%s); capability flags a model "
                     "leaves out get the defaults", path, exc)
        return {}
    # Eight distinct values at most: share them instead of one object per model.
    interned: dict[CapabilityFlags, CapabilityFlags] = {}
    flags: dict[str, CapabilityFlags] = {}
    for model, info in raw.items() if isinstance(raw, dict) else ():
        if isinstance(info, dict):
            value = _flags_of(info)
            flags[model] = interned.setdefault(value, value)
    return flags


def _flags_of(info: Mapping[str, Any]) -> CapabilityFlags:
    streaming = info.get("supports_native_streaming", info.get("supports_streaming"))
    return CapabilityFlags(
        supports_tools=info.get("supports_function_calling") is True,
        supports_streaming=streaming if isinstance(streaming, bool) else True,
        supports_response_schema=info.get("supports_response_schema") is True,
    )


LITELLM_CAPABILITIES = LiteLLMCapabilityMap()
"""The process-wide map every registry uses unless given another (read once, on first need)."""


def blended_cost(model: ModelMetadata) -> float:
    """The mean of a model's input and output price per 1k tokens (the cost-range key)."""
    return (model.cost_per_1k_input_tokens + model.cost_per_1k_output_tokens) / 2.0


_defaults: dict[Path, ModelRegistry] = {}
_defaults_lock = threading.Lock()


def get_default_registry() -> ModelRegistry:
    """The registry of the file named by ``AMM_CONFIG``, else ``config/model_registry.json``
    in the working directory; loaded once per (absolute) path and then shared."""
    path = Path(os.environ.get(AMM_CONFIG) or DEFAULT_CONFIG_PATH)
    key = path.resolve()
    with _defaults_lock:
        registry = _defaults.get(key)
        if registry is None:
            registry = _defaults[key] = ModelRegistry(path)
        return registry
