"""The measured call paths: one object per path, each sending the same request to the mock.

Every path implements :class:`Path` (``setup`` / ``call`` / ``close``); ``call(i)``
sends prompt number ``i``. A streamed path (:class:`StreamPath`) reads the answer with
``async for`` and returns when its first chunk carrying text arrived. Prompts vary with
``i`` on every path alike, so amm's cache always misses while the request bytes stay
comparable between paths.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = [
    "BENCH_MODEL",
    "MAX_TOKENS",
    "TEMPERATURE",
    "LitellmPath",
    "LitellmStreamPath",
    "Path",
    "RawHttpxPath",
    "RouterPath",
    "StreamPath",
    "prompt",
]

BENCH_MODEL = "bench-model"
MAX_TOKENS = 64
# Temperature 0 makes every amm call cacheable, so each one pays a real cache lookup
# (a miss: prompts never repeat) and a cache store, as a deterministic agent's call does.
TEMPERATURE = 0.0
# A fake key: the mock ignores it, litellm and the OpenAI client refuse to run without one.
BENCH_API_KEY = "sk-bench-not-a-real-key"


def prompt(i: int) -> str:
    """Prompt number ``i``: the same length and shape for every path, unique per call."""
    return f"Summarise benchmark item {i:08d} in one short sentence."


class Path(Protocol):
    """One way of sending a chat completion to the mock."""

    name: str

    async def setup(self) -> None:
        """Build clients (imports happen here, not at construction)."""

    async def call(self, i: int) -> None:
        """Send prompt ``i`` and wait for the whole answer; raise on failure."""

    async def close(self) -> None:
        """Release clients. Safe to call twice."""


class StreamPath(Protocol):
    """One way of streaming a chat completion from the mock."""

    name: str

    async def setup(self) -> None:
        """Build clients (imports happen here, not at construction)."""

    async def call(self, i: int) -> float:
        """Stream prompt ``i`` to its end; return the ``time.perf_counter()`` at which the
        first chunk carrying text reached the caller. Raise on failure."""

    async def close(self) -> None:
        """Release clients. Safe to call twice."""


class RawHttpxPath:
    """The floor: one ``httpx.AsyncClient`` POSTing the OpenAI JSON body."""

    name = "raw_httpx"

    def __init__(self, url: str, *, max_connections: int = 128) -> None:
        self._url = url
        self._max_connections = max_connections
        self._client: Any = None

    async def setup(self) -> None:
        import httpx

        limits = httpx.Limits(max_connections=self._max_connections,
                              max_keepalive_connections=self._max_connections)
        self._client = httpx.AsyncClient(
            limits=limits, timeout=30,
            headers={"Authorization": f"Bearer {BENCH_API_KEY}"},
        )

    async def call(self, i: int) -> None:
        body = {"model": BENCH_MODEL, "messages": [{"role": "user", "content": prompt(i)}],
                "max_tokens": MAX_TOKENS, "temperature": TEMPERATURE}
        reply = await self._client.post(self._url, json=body)
        reply.raise_for_status()
        if not reply.json()["choices"][0]["message"]["content"]:
            raise RuntimeError("empty completion from the mock")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class LitellmPath:
    """``litellm.acompletion`` as an application would call it, retries off."""

    name = "litellm"

    def __init__(self, api_base: str) -> None:
        self._api_base = api_base
        self._acompletion: Any = None

    async def setup(self) -> None:
        import litellm

        self._acompletion = litellm.acompletion

    async def call(self, i: int) -> None:
        reply = await self._acompletion(
            model=f"openai/{BENCH_MODEL}", api_base=self._api_base, api_key=BENCH_API_KEY,
            messages=[{"role": "user", "content": prompt(i)}],
            max_tokens=MAX_TOKENS, temperature=TEMPERATURE, max_retries=0,
        )
        if not reply.choices[0].message.content:
            raise RuntimeError("empty completion from litellm")

    async def close(self) -> None:
        self._acompletion = None


class RouterPath:
    """``litellm.Router`` over three deployments of the same mock (simple shuffle)."""

    name = "router"

    def __init__(self, api_base: str, *, deployments: int = 3) -> None:
        self._api_base = api_base
        self._deployments = deployments
        self._router: Any = None

    def model_list(self) -> list[Mapping[str, Any]]:
        """Three deployments of one model group, each its own deployment id."""
        return [
            {"model_name": "bench", "litellm_params": {
                "model": f"openai/{BENCH_MODEL}", "api_base": self._api_base,
                "api_key": BENCH_API_KEY, "max_retries": 0,
            }, "model_info": {"id": f"bench-{n}"}}
            for n in range(self._deployments)
        ]

    async def setup(self) -> None:
        from litellm import Router

        self._router = Router(model_list=self.model_list(), num_retries=0)

    async def call(self, i: int) -> None:
        reply = await self._router.acompletion(
            model="bench", messages=[{"role": "user", "content": prompt(i)}],
            max_tokens=MAX_TOKENS, temperature=TEMPERATURE,
        )
        if not reply.choices[0].message.content:
            raise RuntimeError("empty completion from the router")

    async def close(self) -> None:
        router, self._router = self._router, None
        if router is not None:
            # Router.discard() ends its background work; absent in some versions.
            discard = getattr(router, "discard", None)
            if callable(discard):
                discard()


class LitellmStreamPath:
    """``litellm.acompletion(stream=True)`` read with ``async for``, usage asked for in the
    last chunk (``include_usage``), as amm asks; retries off.

    litellm first yields the role-only chunk (empty text); amm yields only chunks that
    carry something, so both are timed at the first chunk with text.
    """

    name = "litellm_stream"

    def __init__(self, api_base: str) -> None:
        self._api_base = api_base
        self._acompletion: Any = None

    async def setup(self) -> None:
        import litellm

        self._acompletion = litellm.acompletion

    async def call(self, i: int) -> float:
        stream = await self._acompletion(
            model=f"openai/{BENCH_MODEL}", api_base=self._api_base, api_key=BENCH_API_KEY,
            messages=[{"role": "user", "content": prompt(i)}],
            max_tokens=MAX_TOKENS, temperature=TEMPERATURE, max_retries=0,
            stream=True, stream_options={"include_usage": True},
        )
        first = 0.0
        text = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                if not first:
                    first = time.perf_counter()
                text.append(chunk.choices[0].delta.content)
        if not first or not "".join(text):
            raise RuntimeError("no text streamed by litellm")
        return first

    async def close(self) -> None:
        self._acompletion = None


def litellm_env() -> None:
    """Keep litellm offline and quiet (set before its first import)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
