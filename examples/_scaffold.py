"""Scaffolding for the seed's usage examples: everything the seed leaves undefined.

Each ``examples/example_NN_*.py`` is the code of the seed API document
(``api-model-management-api.md``) with only the import prefix changed to ``amm``.
The seed's snippets assume things they never define; this module supplies them,
and nothing else:

- a fresh working directory, because the seed uses relative paths
  (``config/model_registry.json``, ``data/*.db``, ``tasks.json``);
- the provider simulator (:mod:`amm.sim`) serving every registered model on
  127.0.0.1, so no real provider or key is needed;
- ``config/model_registry.json``: the shipped registry with each model's
  ``api_base`` pointing at the simulator;
- fake API keys in the environment (the simulator accepts any key);
- the components an earlier snippet would have built (``selector``,
  ``api_client``, ``request``...), built as the seed's "Component Initialization"
  best practice builds them, and the helpers it names without defining
  (``adapters``, ``create_request``, ``process_task``, ``load_tasks_from_file``,
  ``local_model``).

>>> async with Workspace() as ws:
...     selector, request = await ws.provide("selector", "request")
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

# litellm must run offline and quietly: set before anything imports it.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")

# Run from a source checkout as well as with amm installed.
_REPO_ROOT = Path(__file__).resolve().parent.parent
try:
    import amm  # noqa: F401
except ModuleNotFoundError:
    sys.path.insert(0, str(_REPO_ROOT))

from amm.sim import ModelProfile, Simulator  # noqa: E402

__all__ = [
    "CONFIG_PATH",
    "DB_PATH",
    "OPTIMIZER_CONFIG",
    "SAMPLE_TASKS",
    "SHIPPED_REGISTRY",
    "LocalModel",
    "ModelOptimizer",
    "Workspace",
    "create_request",
    "load_tasks_from_file",
    "one_round_asyncio",
    "run",
]

SHIPPED_REGISTRY = _REPO_ROOT / "config" / "model_registry.json"
"""The registry the project ships; the scaffold copies it with ``api_base`` set."""

CONFIG_PATH = Path("config/model_registry.json")
"""Where the seed looks for the registry (relative to the working directory)."""

DB_PATH = Path("data/api_model_management.db")
"""The store the seed's "Component Initialization" best practice gives every component."""

SAMPLE_TASKS: list[dict[str, Any]] = [
    {"task_id": "batch-1", "priority": "HIGH", "max_tokens": 400,
     "prompt": "Analyse the trade-offs of event sourcing for an order service"},
    {"task_id": "batch-2", "priority": "MEDIUM", "max_tokens": 200,
     "prompt": "Summarise the key points of the twelve-factor app methodology"},
    {"task_id": "batch-3", "priority": "LOW", "max_tokens": 100,
     "prompt": "Explain what a Python list comprehension is"},
    {"task_id": "batch-4", "priority": "LOW", "max_tokens": 100,
     "prompt": "Give three tips for naming variables well"},
]
"""What the scaffold writes to ``tasks.json`` for Example 12's ``load_tasks_from_file``."""

# litellm's provider prefix -> the simulator protocol that answers it.
_PROTOCOL_OF_PREFIX = {"openai": "openai", "anthropic": "anthropic", "gemini": "google",
                       "ollama": "ollama", "ollama_chat": "ollama"}

# Answer quality per model in the simulator (probability of a good answer), so the
# A/B and quality examples have something to tell apart; unknown models get 0.9.
_SIM_QUALITY = {"gpt-4-turbo": 0.92, "gpt-3.5-turbo": 0.8, "claude-3.5-sonnet": 0.93,
                "gemini-pro": 0.9, "llama3": 0.7}

# Fake keys, one per variable the key manager reads; the simulator accepts any key.
_SIM_KEYS = {
    "OPENAI_API_KEY": "sim-openai-key-1",
    "OPENAI_API_KEY_2": "sim-openai-key-2",
    "ANTHROPIC_API_KEY": "sim-anthropic-key",
    "GOOGLE_API_KEY": "sim-google-key",
    "GEMINI_API_KEY": None,  # unset: a real key from the caller's shell must not leak in
}

_LOCAL_MODEL_WIRE_NAME = "local-fallback"
"""The simulator model behind :class:`LocalModel` (not in the registry)."""


def _wire_name(litellm_model: str) -> tuple[str, str]:
    """(protocol, model name on the wire) of a litellm model string."""
    prefix, _, name = litellm_model.partition("/")
    if prefix not in _PROTOCOL_OF_PREFIX or not name:
        raise ValueError(f"cannot serve litellm model {litellm_model!r} from the simulator")
    return _PROTOCOL_OF_PREFIX[prefix], name


@dataclasses.dataclass(frozen=True)
class LocalModel:
    """The seed's ``local_model``: a local Ollama model used when every API model failed.

    Served by the simulator's Ollama protocol under a name outside the registry, so it
    keeps answering when the registered models are made to fail.
    """

    base_url: str
    model: str = _LOCAL_MODEL_WIRE_NAME

    async def generate(self, prompt: str) -> Any:
        """Answer ``prompt`` as a :class:`amm.ModelResponse` (free: it runs locally)."""
        import litellm
        from amm import ModelResponse, TokenUsage

        started = time.perf_counter()
        reply = await litellm.acompletion(
            model=f"ollama_chat/{self.model}", api_base=self.base_url, max_tokens=256,
            messages=[{"role": "user", "content": prompt}])
        usage = reply.usage
        return ModelResponse(
            content=reply.choices[0].message.content or "",
            model_id=f"local/{self.model}",
            token_usage=TokenUsage(usage.prompt_tokens, usage.completion_tokens),
            latency_ms=(time.perf_counter() - started) * 1000.0,
            cost=0.0,
            metadata={"fallback": True},
        )


def create_request(task_id: str, prompt: str) -> Any:
    """Example 9's ``create_request``: a research request for ``prompt``."""
    from amm import ModelRequest

    return ModelRequest(prompt=prompt, parameters={"temperature": 0.7}, task_id=task_id,
                        agent_type="research", max_tokens=500)


def load_tasks_from_file(path: str | Path) -> list[Any]:
    """Example 12's ``load_tasks_from_file``: ModelRequests from a JSON list of
    ``{task_id, prompt, priority, max_tokens}`` (see :data:`SAMPLE_TASKS`)."""
    from amm import ModelRequest

    return [
        ModelRequest(prompt=t["prompt"], parameters={"temperature": 0.7},
                     task_id=t["task_id"], agent_type="analysis",
                     max_tokens=t.get("max_tokens"), priority=t["priority"])
        for t in json.loads(Path(path).read_text())
    ]


class ModelOptimizer:
    """Stand-in for the seed's existing ``agentic_sdlc.orchestration.engine.model_optimizer.
    ModelOptimizer`` (not part of amm): proposes a model per agent type from its JSON
    config (``{"assignments": {agent_type: model_id, "default": model_id}}``) and keeps
    the performance feedback it is given."""

    def __init__(self, config_path: str | Path) -> None:
        self.assignments: dict[str, str] = json.loads(Path(config_path).read_text())["assignments"]
        self.feedback: list[tuple[str, str, dict[str, Any]]] = []

    def select_model_for_agent(self, agent_type: str, task: Any) -> tuple[str, Any]:
        """``(model_id, APIModelAssignment)`` for ``agent_type``."""
        from amm import APIModelAssignment

        model_id = self.assignments.get(agent_type, self.assignments["default"])
        return model_id, APIModelAssignment(model_id=model_id, agent_type=agent_type)

    def record_performance(self, model_id: str, agent_type: str,
                           performance_data: dict[str, Any]) -> None:
        """Keep one piece of feedback (what amm reports after each request)."""
        self.feedback.append((model_id, agent_type, performance_data))


OPTIMIZER_CONFIG: dict[str, Any] = {
    "assignments": {"implementation": "gpt-4-turbo", "research": "claude-3.5-sonnet",
                    "default": "gpt-3.5-turbo"}}
"""What the scaffold writes to ``config/optimizer.json`` for :class:`ModelOptimizer`."""


class Workspace:
    """A working directory with a simulator-backed registry, keys and seed components.

    ``model_behaviour`` maps a registry model id to :class:`amm.sim.ModelProfile`
    fields that change how the simulator treats it (``{"gpt-4-turbo":
    {"error_rate": 1.0}}`` makes every request to it fail). ``workdir`` keeps the
    files in a directory of your choice instead of a temporary one.
    """

    def __init__(self, *, model_behaviour: Mapping[str, Mapping[str, Any]] | None = None,
                 workdir: Path | str | None = None, seed: int = 0) -> None:
        self._behaviour = dict(model_behaviour or {})
        self._workdir = Path(workdir).resolve() if workdir is not None else None
        self._keep = workdir is not None
        self._seed = seed
        self._sim: Simulator | None = None
        self._wire: dict[str, tuple[str, str]] = {}  # model id -> (protocol, wire name)
        self._saved_env: dict[str, str | None] = {}
        self._saved_cwd: str | None = None
        self._built: dict[str, Any] = {}
        self._cleanups: list[Callable[[], Any]] = []

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Workspace:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="amm-example-"))
        (self._workdir / "config").mkdir(parents=True, exist_ok=True)
        (self._workdir / "data").mkdir(exist_ok=True)
        document = json.loads(SHIPPED_REGISTRY.read_text())
        profiles = {_LOCAL_MODEL_WIRE_NAME: ModelProfile(protocol="ollama", quality=0.6)}
        for entry in document["models"]:
            protocol, name = _wire_name(entry["litellm_model"])
            self._wire[entry["id"]] = (protocol, name)
            profiles[name] = self._profile(entry["id"], protocol)
        unknown = set(self._behaviour) - set(self._wire)
        if unknown:
            raise ValueError(f"model_behaviour names models not in the registry: {sorted(unknown)}")
        self._sim = Simulator(profiles, seed=self._seed)
        self._sim.start()
        for entry in document["models"]:
            entry["api_base"] = self._sim.api_base(self._wire[entry["id"]][0])
        (self._workdir / CONFIG_PATH).write_text(json.dumps(document, indent=2))
        self._saved_cwd = os.getcwd()
        os.chdir(self._workdir)
        self._set_env({**_SIM_KEYS, "OLLAMA_BASE_URL": self._sim.base_url,
                       "AMM_CONFIG": str(self._workdir / CONFIG_PATH)})
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            for cleanup in reversed(self._cleanups):
                outcome = cleanup()
                if inspect.isawaitable(outcome):
                    await outcome
        finally:
            self._cleanups.clear()
            self._restore_env()
            if self._saved_cwd is not None:
                os.chdir(self._saved_cwd)
            if self._sim is not None:
                await asyncio.to_thread(self._sim.stop)
            if not self._keep and self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)

    def _profile(self, model_id: str, protocol: str) -> ModelProfile:
        base = ModelProfile(latency_ms=5, quality=_SIM_QUALITY.get(model_id, 0.9),
                            protocol=protocol)
        return dataclasses.replace(base, **self._behaviour.get(model_id, {}))

    def _set_env(self, values: Mapping[str, str | None]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()

    # -- the simulator -----------------------------------------------------------------

    @property
    def sim(self) -> Simulator:
        """The running simulator."""
        assert self._sim is not None, "use the Workspace as `async with Workspace() as ws`"
        return self._sim

    @property
    def workdir(self) -> Path:
        """The working directory the seed's relative paths resolve in."""
        assert self._workdir is not None
        return self._workdir

    def set_behaviour(self, model_id: str, **changes: Any) -> None:
        """Change how the simulator treats ``model_id`` from its next request on."""
        protocol, name = self._wire[model_id]
        self.sim.set_profile(name, dataclasses.replace(self._profile(model_id, protocol),
                                                       **changes))

    def requests_to(self, model_id: str) -> int:
        """How many requests the simulator received for ``model_id``."""
        return self.sim.request_count(self._wire[model_id][1])

    # -- what the seed leaves undefined ----------------------------------------------

    async def provide(self, *names: str) -> Any:
        """The named objects, built once each (dependencies first); one name gives the
        object itself, several give a tuple."""
        values = [await self._get(name) for name in names]
        return values[0] if len(values) == 1 else tuple(values)

    async def _get(self, name: str) -> Any:
        if name not in self._built:
            builder = getattr(self, f"_build_{name}", None)
            if builder is None:
                raise KeyError(f"the scaffold provides no {name!r}")
            self._built[name] = await builder()
            close = getattr(self._built[name], "close", None)
            if callable(close):  # the seed never closes what it opens; the scaffold does
                self._cleanups.append(close)
        return self._built[name]

    # The builders follow the seed's "Component Initialization" best practice.

    async def _build_registry(self) -> Any:
        from amm import ModelRegistry

        registry = ModelRegistry(CONFIG_PATH)
        registry.load_config()
        return registry

    async def _build_health_checker(self) -> Any:
        from amm import HealthChecker

        health_checker = HealthChecker(await self._get("registry"))
        await health_checker.start()
        self._cleanups.append(health_checker.stop)
        return health_checker

    async def _build_rate_limiter(self) -> Any:
        from amm import RateLimiter

        return RateLimiter(await self._get("registry"))

    async def _build_performance_monitor(self) -> Any:
        from amm import PerformanceMonitor

        return PerformanceMonitor(DB_PATH)

    async def _build_selector(self) -> Any:
        from amm import ModelSelector

        return ModelSelector(await self._get("registry"), await self._get("health_checker"),
                             await self._get("rate_limiter"),
                             await self._get("performance_monitor"))

    async def _build_cost_tracker(self) -> Any:
        from amm import CostTracker

        return CostTracker(DB_PATH)

    async def _build_cache_manager(self) -> Any:
        from amm import CacheManager

        return CacheManager(DB_PATH)

    async def _build_evaluator(self) -> Any:
        from amm import ResponseEvaluator

        return ResponseEvaluator()

    async def _build_key_manager(self) -> Any:
        from amm import APIKeyManager

        key_manager = APIKeyManager()
        key_manager.load_keys()
        return key_manager

    async def _build_adapters(self) -> Any:
        # amm's APIClientManager takes None as "litellm serves every provider".
        return None

    async def _build_api_client(self) -> Any:
        from amm import APIClientManager

        return APIClientManager(await self._get("key_manager"), await self._get("adapters"))

    async def _build_failover_manager(self) -> Any:
        from amm import FailoverManager

        return FailoverManager(await self._get("selector"))

    async def _build_request(self) -> Any:
        # The seed's Quick Start "Simple Example" request.
        from amm import ModelRequest

        return ModelRequest(
            prompt="Write a Python function to calculate fibonacci numbers",
            parameters={"temperature": 0.7},
            task_id="task-123",
            agent_type="implementation",
            max_tokens=1000,
        )

    async def _build_response(self) -> Any:
        # What the seed's Example 4 does before its later snippets use `response`.
        api_client, request = await self._get("api_client"), await self._get("request")
        return await api_client.send_request("gpt-4-turbo", request)

    async def _build_quality(self) -> Any:
        evaluator = await self._get("evaluator")
        return await evaluator.evaluate_response(await self._get("response"),
                                                 await self._get("request"))

    async def _build_logger(self) -> Any:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return logging.getLogger("api_model_management")

    async def _build_process_task(self) -> Any:
        api_client = await self._get("api_client")
        cost_tracker = await self._get("cost_tracker")

        async def process_task(task: Any, model_id: str) -> Any:
            """Send ``task`` to ``model_id`` and book its cost; the response has ``.cost``."""
            response = await api_client.send_request(model_id, task)
            await cost_tracker.record_cost(
                model_id=response.model_id, agent_type=task.agent_type,
                input_tokens=response.token_usage.input_tokens,
                output_tokens=response.token_usage.output_tokens,
                cost=response.cost, task_id=task.task_id)
            return response

        return process_task

    async def _build_optimizer(self) -> Any:
        path = Path("config/optimizer.json")
        path.write_text(json.dumps(OPTIMIZER_CONFIG, indent=2))
        return ModelOptimizer(config_path=path)

    async def _build_local_model(self) -> Any:
        return LocalModel(self.sim.base_url)

    def write_sample_tasks(self, path: str | Path = "tasks.json") -> Path:
        """Write :data:`SAMPLE_TASKS` for ``load_tasks_from_file`` and return the path."""
        target = Path(path)
        target.write_text(json.dumps(SAMPLE_TASKS, indent=2))
        return target


class _OneRound(Exception):
    """Raised by :func:`one_round_asyncio`'s ``sleep``: the loop's round is over."""


class _OneRoundAsyncio:
    """The ``asyncio`` module, except that ``sleep`` ends the current loop round."""

    OneRound = _OneRound

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float, result: Any = None) -> Any:
        raise _OneRound(f"one round done (the loop would now sleep {delay} s)")


def one_round_asyncio() -> Any:
    """A stand-in for the ``asyncio`` module whose ``sleep`` raises ``.OneRound``.

    Bind it to the name ``asyncio`` in a script whose seed code loops ``while True: ...
    await asyncio.sleep(60)`` to run exactly one round, then catch ``asyncio.OneRound``.
    """
    return _OneRoundAsyncio()


def run(example: Callable[[Path | None], Awaitable[Any]]) -> None:
    """Run one example script: ``python examples/example_NN_x.py [--workdir DIR]``."""
    parser = argparse.ArgumentParser(description=(example.__module__ or "").strip())
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the example's files (config/, data/) here "
                             "instead of in a temporary directory")
    args = parser.parse_args()
    asyncio.run(example(args.workdir))
