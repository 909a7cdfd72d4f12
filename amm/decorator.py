"""``@managed_model``: give an agent function an ``llm`` handle routed by amm.

>>> @managed_model(agent_type="implementation", capabilities=["code-generation"],
...                max_cost_per_request=0.10)
... async def implement(spec: str, *, llm) -> str:
...     reply = await llm.complete(f"Implement: {spec}", max_tokens=800)
...     return reply.content

Each call opens an ``invoke_agent {agent_type}`` span (nested agents nest), binds
``llm`` to the agent type, the constraints and a task id (the caller's ``task_id=``
if given, else a new one), and runs on the manager given as ``manager=``, else the
process default (:func:`configure`, else built from ``AMM_CONFIG`` or
``config/model_registry.json``). Plain ``def`` functions get a blocking ``llm``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import threading
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack

from amm._aio import running_loop
from amm.errors import ConfigurationError, InvalidRequestError
from amm.manager import ACTIVE_AGENT
from amm.models import ModelRequest, ModelResponse, Priority, SelectionConstraints

if TYPE_CHECKING:
    from amm.streaming import ManagedStream

__all__ = ["LLM", "CallOptions", "SyncLLM", "configure", "get_default_manager", "managed_model"]

class CallOptions(TypedDict, total=False):
    """Every keyword ``llm.complete`` / ``llm.stream`` takes; any other raises
    InvalidRequestError before anything is sent.

    Generation: ``max_tokens``, ``temperature``, and the provider parameters amm passes
    through (``top_p``, ``stop``, ``seed``, ``presence_penalty``, ``frequency_penalty``,
    ``user``, ``parallel_tool_calls``). Agent calls: ``tools``, ``tool_choice``,
    ``response_format``, ``on_invalid``. Per-call control: ``model`` (pin),
    ``fallbacks`` (where a pinned call may fail over), ``exclude_models``,
    ``providers`` (only these), ``timeout`` (seconds, the whole call with failover),
    ``max_retries`` (per model), ``cache`` (False skips it), ``metadata`` (recorded on
    the spans; ``session.id``/``user.id`` as viewers group them).
    """

    max_tokens: int | None
    temperature: float | None
    tools: Sequence[Mapping[str, Any]] | None
    tool_choice: str | Mapping[str, Any] | None
    response_format: Mapping[str, Any] | None
    on_invalid: str
    model: str | None
    fallbacks: Sequence[str] | None
    exclude_models: Sequence[str] | None
    providers: Sequence[str] | None
    timeout: float | None
    max_retries: int | None
    cache: bool | None
    metadata: Mapping[str, Any] | None
    top_p: float
    stop: str | list[str]
    seed: int
    presence_penalty: float
    frequency_penalty: float
    user: str
    parallel_tool_calls: bool
    priority: str


_PROVIDER_PARAMETERS = frozenset({
    "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "user",
    "parallel_tool_calls", "priority",
})
_CALL_OPTIONS = frozenset(CallOptions.__annotations__)

T = TypeVar("T")

_default_manager: Any = None
_default_lock = threading.Lock()


def configure(manager: Any = None, /, *, warm: bool = False, **from_config: Any) -> Any:
    """Set the process-wide manager used by ``@managed_model`` without ``manager=``.

    Give a built :class:`~amm.manager.ModelManager`, or the keyword arguments of
    :meth:`ModelManager.from_config` (``config_path=``, ``data_dir=``, ``state_url=``...).
    ``warm=True`` imports litellm in the background now, so the first call does not
    wait for it (5-8 s); the manager also does this when it starts.
    """
    global _default_manager
    if warm:
        from amm.manager import warm_up

        warm_up()
    if manager is None:
        from amm.manager import ModelManager

        manager = ModelManager.from_config(**from_config)
    elif from_config:
        raise ConfigurationError("configure() takes a manager or from_config arguments, not both",
                                 field="configure")
    with _default_lock:
        _default_manager = manager
    return manager


def get_default_manager() -> Any:
    """The process default manager; built on first use from ``AMM_CONFIG`` or
    ``config/model_registry.json`` (data in ``AMM_DATA_DIR``, default ``data``)."""
    global _default_manager
    with _default_lock:
        if _default_manager is None:
            from amm.manager import ModelManager

            path = Path(os.environ.get("AMM_CONFIG", "config/model_registry.json"))
            if not path.exists():
                raise ConfigurationError(
                    f"{path}: no registry file; set AMM_CONFIG or call amm.configure(...)",
                    path=str(path),
                )
            _default_manager = ModelManager.from_config(
                path, data_dir=os.environ.get("AMM_DATA_DIR", "data")
            )
        return _default_manager


class LLM:
    """The handle an async agent receives: ``await llm.complete(...)``."""

    __slots__ = ("_manager", "agent_type", "constraints", "priority", "task_id")

    def __init__(
        self,
        manager: Any,
        agent_type: str,
        task_id: str,
        constraints: SelectionConstraints | None,
        priority: Priority | None,
    ) -> None:
        self._manager = manager
        self.agent_type = agent_type
        self.task_id = task_id
        self.constraints = constraints
        self.priority = priority

    def request(self, prompt: str | Sequence[Mapping[str, Any]],
                **options: Unpack[CallOptions]) -> ModelRequest:
        """The :class:`ModelRequest` that ``complete`` would send (see :class:`CallOptions`).

        A keyword amm does not know raises InvalidRequestError here, before anything
        is sent, rather than being dropped without a word.
        """
        unknown = sorted(set(options) - _CALL_OPTIONS)
        if unknown:
            raise InvalidRequestError(
                f"llm.complete: unknown parameter(s) {', '.join(unknown)}; amm takes "
                f"{', '.join(sorted(_CALL_OPTIONS))} (provider-specific ones are not passed "
                f"through)", task_id=self.task_id, error_type="unknown_parameter")
        opts: dict[str, Any] = dict(options)
        parameters = {k: opts.pop(k) for k in list(opts) if k in _PROVIDER_PARAMETERS}
        temperature = opts.pop("temperature", None)
        if temperature is not None:
            parameters["temperature"] = temperature
        messages: list[Mapping[str, Any]] | None = None
        if isinstance(prompt, str):
            text = prompt
        elif isinstance(prompt, Sequence) and not isinstance(prompt, bytes | bytearray):
            text, messages = "", list(prompt)  # type: ignore[arg-type]
        else:
            raise InvalidRequestError(
                f"llm.complete: the prompt must be a string or a list of chat messages; got "
                f"{type(prompt).__name__}", task_id=self.task_id, error_type="invalid_prompt")
        if "timeout" in opts:
            opts["timeout_s"] = opts.pop("timeout")
        for name in ("fallbacks", "exclude_models"):
            if opts.get(name) is None:
                opts.pop(name, None)
        if opts.get("cache") is None:
            opts.pop("cache", None)
        return ModelRequest(
            prompt=text, messages=messages, parameters=parameters, task_id=self.task_id,
            agent_type=self.agent_type, max_tokens=opts.pop("max_tokens", None),
            temperature=0.7 if temperature is None else temperature, priority=self.priority,
            **opts,
        )

    async def complete(self, prompt: str | Sequence[Mapping[str, Any]],
                       **options: Unpack[CallOptions]) -> ModelResponse:
        """Send a prompt (or chat messages) through the manager's request path.

        ``tools``/``tool_choice`` (OpenAI shape) let the model answer with
        ``reply.tool_calls``; ``response_format`` asks for JSON (validated against its
        schema; ``on_invalid="failover"`` tries the next model on an invalid answer);
        ``model=`` pins a model; see :class:`CallOptions` for every keyword.
        """
        request = self.request(prompt, **options)
        return await self._manager.complete(request, self.constraints)  # type: ignore[no-any-return,unused-ignore]

    def stream(self, prompt: str | Sequence[Mapping[str, Any]],
               **options: Unpack[CallOptions]) -> ManagedStream:
        """Stream the answer: ``async for chunk in llm.stream(...)`` (``for`` in a sync
        agent); ``stream.response`` is the whole answer after the loop."""
        request = self.request(prompt, **options)
        return self._manager.stream(request, self.constraints)  # type: ignore[no-any-return,unused-ignore]

    def tool(self, name: str, *, call_id: str | None = None,
             arguments: str | None = None) -> Any:
        """A span for one tool execution, nested in this agent's trace::

            for call in reply.tool_calls:
                with llm.tool(call.name, call_id=call.id, arguments=call.arguments) as span:
                    result = run(call)
                    span.set_result(result)

        Arguments and result are recorded only under the content opt-in.
        """
        return self._manager.recorder.tool_span(name, call_id=call_id, arguments=arguments)

    def __repr__(self) -> str:
        return f"LLM(agent_type={self.agent_type!r}, task_id={self.task_id!r})"


class SyncLLM(LLM):
    """The handle a plain ``def`` agent receives: ``llm.complete(...)`` blocks."""

    __slots__ = ()

    def complete(self, prompt: str | Sequence[Mapping[str, Any]],  # type: ignore[override]
                 **options: Unpack[CallOptions]) -> ModelResponse:
        request = self.request(prompt, **options)
        response: ModelResponse = _portal().run(self._manager.complete(request, self.constraints))
        return response


class _Portal:
    """One event loop on a daemon thread, where blocking callers run coroutines.

    The caller's contextvars (the current span among them) travel with the
    coroutine, so a sync agent's LLM calls nest under its ``invoke_agent`` span.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="amm-portal",
                                        daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise InvalidRequestError("a sync agent cannot be called from amm's own event loop")
        if running_loop() is not None:  # without a loop on this thread, blocking is fine
            coro.close()
            raise InvalidRequestError(
                "a sync (def) agent was called on a thread that runs an event loop: its "
                "blocking LLM call would stall that loop. Make the agent `async def`, or call "
                "it with `await asyncio.to_thread(agent, ...)`", error_type="sync_in_async")
        ctx = contextvars.copy_context()
        done: Future[T] = Future()

        def start() -> None:
            task: asyncio.Task[T] = self._loop.create_task(coro, context=ctx)

            def finish(t: asyncio.Task[T]) -> None:
                if t.cancelled():
                    done.cancel()
                elif (exc := t.exception()) is not None:
                    done.set_exception(exc)
                else:
                    done.set_result(t.result())

            task.add_done_callback(finish)

        self._loop.call_soon_threadsafe(start)
        return done.result()


_portal_instance: _Portal | None = None


def _portal() -> _Portal:
    global _portal_instance
    with _default_lock:
        if _portal_instance is None:
            _portal_instance = _Portal()
        return _portal_instance


def managed_model(
    agent_type: str | None = None,
    *,
    capabilities: Sequence[str] | None = None,
    required_capabilities: Sequence[str] | None = None,
    max_cost_per_request: float | None = None,
    excluded_providers: Sequence[str] | None = None,
    max_latency_ms: float | None = None,
    priority: Priority | str | None = None,
    manager: Any = None,
    agent_name: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate an agent function that takes a keyword ``llm``; amm injects it.

    ``agent_type`` defaults to the function's name. ``capabilities`` is an alias of
    ``required_capabilities``. Bad constraints raise ``InvalidRequestError`` here,
    at decoration time.
    """
    if capabilities is not None and required_capabilities is not None:
        raise ConfigurationError("managed_model: give capabilities or required_capabilities, "
                                 "not both", field="capabilities")
    caps = list(capabilities if capabilities is not None else required_capabilities or [])
    constraints = SelectionConstraints(
        max_cost_per_request=max_cost_per_request,
        required_capabilities=caps,
        excluded_providers=list(excluded_providers or []),
        max_latency_ms=max_latency_ms,
    )
    prio = Priority.parse(priority) if priority is not None else None

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = inspect.signature(fn).parameters
        if "llm" not in params:
            raise InvalidRequestError(f"{fn.__qualname__} must accept a keyword argument 'llm'")
        accepts_task_id = "task_id" in params
        agent = agent_type or fn.__name__
        name = agent_name or agent

        def bind(kwargs: dict[str, Any], handle: type[LLM]) -> tuple[Any, LLM]:
            task_id = kwargs.get("task_id") if accepts_task_id else kwargs.pop("task_id", None)
            if task_id is None and (parent := ACTIVE_AGENT.get()) is not None:
                task_id = parent[1]  # a nested agent works on its caller's task
            mgr = manager if manager is not None else get_default_manager()
            llm = handle(mgr, agent, str(task_id or uuid.uuid4().hex), constraints, prio)
            kwargs["llm"] = llm
            return mgr, llm

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                mgr, llm = bind(kwargs, LLM)
                token = ACTIVE_AGENT.set((agent, llm.task_id))
                try:
                    with mgr.recorder.agent_span(agent, llm.task_id, agent_name=name):
                        return await fn(*args, **kwargs)
                finally:
                    ACTIVE_AGENT.reset(token)

            return run_async

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            mgr, llm = bind(kwargs, SyncLLM)
            token = ACTIVE_AGENT.set((agent, llm.task_id))
            try:
                with mgr.recorder.agent_span(agent, llm.task_id, agent_name=name):
                    return fn(*args, **kwargs)
            finally:
                ACTIVE_AGENT.reset(token)

        return run_sync

    return decorate
