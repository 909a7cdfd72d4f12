"""The simulator's HTTP server: aiohttp on 127.0.0.1, in a thread with its own loop.

Running in its own thread makes one server usable from sync code, pytest fixtures,
an async demo (whose loop it never blocks) and the ``amm sim`` command alike.

>>> with Simulator({"sim-gpt": ModelProfile()}, seed=7) as sim:
...     base = sim.api_base("openai")   # give this to litellm as api_base
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from amm.errors import ConfigurationError
from amm.sim.answers import compose
from amm.sim.behaviour import Bill, Decision, Fault, ModelState, model_seed
from amm.sim.profile import PROTOCOLS, ModelProfile, demo_profiles
from amm.sim.protocols import PROTOCOL_CLASSES
from amm.sim.streams import ENCODERS, StreamGate, pieces
from amm.sim.wire import Answer, ParsedRequest, WireError, WireProtocol, error_message

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["Simulator"]

_SHUTDOWN_TIMEOUT_S = 0.25
"""How long stop() lets in-flight answers finish before cancelling them (hung ones)."""

_API_BASE_SUFFIX = {"openai": "/v1", "anthropic": "", "ollama": "", "google": "/v1beta"}


class Simulator:
    """A local provider that speaks the OpenAI, Anthropic, Ollama and Gemini protocols.

    ``profiles`` maps the model name on the wire to its :class:`ModelProfile`;
    unknown names get the provider's 404 unless ``default_profile`` is given.
    ``clock`` (monotonic seconds) drives the rpm window, so tests move time by hand.
    """

    def __init__(
        self,
        profiles: Mapping[str, ModelProfile] | None = None,
        *,
        seed: int = 0,
        default_profile: ModelProfile | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seed = seed
        self._default_profile = default_profile
        self._host = host
        self._port = port
        self._clock = clock
        # One lock guards all model state: the server thread decides and records under
        # it, callers read counters and swap profiles under it; it is held for microseconds.
        self._lock = threading.Lock()
        self._states: dict[str, ModelState] = {}
        for name, profile in (profiles or {}).items():
            self._states[name] = ModelState(name, profile, model_seed(seed, name))
        self._protocols = {name: cls() for name, cls in PROTOCOL_CLASSES.items()}
        self._gates: dict[str, StreamGate] = {}
        self._lifecycle = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._base_url: str | None = None
        self._start_error: BaseException | None = None

    def __repr__(self) -> str:
        state = self._base_url or "stopped"
        return f"<Simulator {state} models={sorted(self._states)} seed={self._seed}>"

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> str:
        """Start serving (idempotent) and return the base URL ``http://127.0.0.1:PORT``."""
        with self._lifecycle:
            if self._base_url is not None:
                return self._base_url
            ready = threading.Event()
            self._start_error = None
            self._thread = threading.Thread(target=self._run, args=(ready,),
                                            name="amm-sim", daemon=True)
            self._thread.start()
            ready.wait()
            if self._start_error is not None:
                self._thread.join()
                self._thread = None
                raise self._start_error
            assert self._base_url is not None
            return self._base_url

    def stop(self) -> None:
        """Stop serving and join the server thread (idempotent). Hung answers are cut."""
        with self._lifecycle:
            thread, loop = self._thread, self._loop
            if thread is None or loop is None:
                return
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            self._thread = self._loop = self._base_url = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> Simulator:
        self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        # Joining the server thread can take up to the shutdown timeout: keep the
        # caller's loop free meanwhile.
        await asyncio.to_thread(self.stop)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running server."""
        if self._base_url is None:
            raise ConfigurationError("Simulator.base_url: the simulator is not started")
        return self._base_url

    def api_base(self, protocol: str) -> str:
        """The ``api_base`` to give litellm for ``protocol`` (openai, anthropic, ollama,
        google): ``openai/<m>`` needs ``<base>/v1``, ``gemini/<m>`` ``<base>/v1beta``."""
        if protocol not in _API_BASE_SUFFIX:
            raise ConfigurationError(
                f"Simulator.api_base: protocol must be one of {', '.join(PROTOCOLS)}, "
                f"got {protocol!r}", field="protocol")
        return self.base_url + _API_BASE_SUFFIX[protocol]

    @classmethod
    def serve_forever(cls, host: str = "127.0.0.1", port: int = 0,
                      profiles: Mapping[str, ModelProfile] | None = None, seed: int = 0) -> None:
        """Serve until interrupted (``amm sim``); prints the URL and each model's api_base."""
        profiles = demo_profiles() if profiles is None else profiles
        sim = cls(profiles, seed=seed, host=host, port=port)
        base = sim.start()
        print(f"amm provider simulator listening on {base}", flush=True)
        for name, profile in sorted(profiles.items()):
            print(f"  {name:<16} {profile.protocol:<10} api_base={sim.api_base(profile.protocol)}",
                  flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            sim.stop()

    # -- behaviour and counters ----------------------------------------------------

    def set_profile(self, model: str, profile: ModelProfile) -> None:
        """Change ``model``'s behaviour from the next request on (thread-safe)."""
        with self._lock:
            state = self._states.get(model)
            if state is None:
                self._states[model] = ModelState(model, profile, model_seed(self._seed, model))
            else:
                state.profile = profile

    def profiles(self) -> dict[str, ModelProfile]:
        """The configured profiles by model name."""
        with self._lock:
            return {name: s.profile for name, s in self._states.items() if s.profile is not None}

    def billed(self) -> dict[str, tuple[int, int]]:
        """(input, output) tokens per model over the 200 answers that carried usage."""
        with self._lock:
            return {name: (s.input_tokens, s.output_tokens)
                    for name, s in self._states.items() if s.billed_answers}

    def bills(self, model: str | None = None) -> list[Bill]:
        """The billed answers one by one (the last :data:`~amm.sim.behaviour.BILLS_KEPT`
        per model), for one model or all: what a provider's usage export lists, so a
        test can hold each ledger row against its request's bill."""
        with self._lock:
            states = [s for name, s in self._states.items() if model in (None, name)]
            return [bill for state in states for bill in state.bills]

    def request_count(self, model: str | None = None) -> int:
        """Requests received, for one model or all (unparseable ones count under "")."""
        with self._lock:
            if model is not None:
                state = self._states.get(model)
                return state.received if state else 0
            return sum(s.received for s in self._states.values())

    def status_counts(self, model: str | None = None) -> dict[int, int]:
        """Answers sent by HTTP status, for one model or all."""
        with self._lock:
            states = [self._states[model]] if model in self._states else (
                [] if model is not None else list(self._states.values()))
            total: Counter[int] = Counter()
            for state in states:
                total.update(state.statuses)
            return dict(total)

    def stream_gate(self, model: str) -> StreamGate:
        """A new, closed gate for ``model``'s streams (replacing and releasing the last
        one): each stream writes its first content chunk, sets
        ``gate.first_chunk_sent`` and waits for ``gate.release()`` before the rest."""
        gate = StreamGate()
        with self._lock:
            previous = self._gates.get(model)
            self._gates[model] = gate
        if previous is not None:
            previous.release()
        return gate

    def reset(self) -> None:
        """Counters, request indices and rpm windows back to zero; profiles stay."""
        with self._lock:
            for state in self._states.values():
                state.reset()

    def _state_for(self, model: str) -> ModelState:
        state = self._states.get(model)
        if state is None:
            state = ModelState(model, self._default_profile, model_seed(self._seed, model))
            self._states[model] = state
        return state

    # -- the server thread -----------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            runner = loop.run_until_complete(self._open())
        except BaseException as exc:  # reported to start()'s caller, in its thread
            self._start_error = exc
            loop.close()
            ready.set()
            return
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _open(self) -> web.AppRunner:
        from aiohttp import web  # 0.3 s to import: paid when a server starts, not at import

        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        for path, name in (("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic"),
                           ("/api/chat", "ollama"), ("/v1beta/models/{target}", "google")):
            app.router.add_post(path, self._handler(self._protocols[name]))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2]
        self._base_url = f"http://{host}:{port}"
        return runner

    async def _health(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.json_response({"status": "ok", "models": sorted(self.profiles())})

    async def _models(self, request: web.Request) -> web.Response:
        from aiohttp import web

        data = [{"id": name, "object": "model", "created": 0, "owned_by": "amm-sim"}
                for name in sorted(self.profiles())]
        return web.json_response({"object": "list", "data": data})

    def _handler(self, protocol: WireProtocol) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._answer(protocol, request)
        return handle

    async def _answer(self, protocol: WireProtocol, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        body = await request.read()
        # Gemini names the model and the method in the path: "<model>:<method>".
        target = request.match_info.get("target")
        try:
            parsed = protocol.parse(body, request.headers, target, request.query)
        except WireError as exc:
            return self._bad_request(protocol, (target or "").rpartition(":")[0], str(exc))

        with self._lock:
            state = self._state_for(parsed.model)
            decision = state.decide(api_key=parsed.api_key, prompt_tokens=parsed.prompt_tokens,
                                    now=self._clock())
            profile = state.profile
            gate = self._gates.get(parsed.model)
        rng = random.Random(decision.rng_seed)
        headers = protocol.headers(decision, rng)
        if decision.fault is not None or profile is None:
            self._record(state, decision.status)
            error = protocol.error(decision, error_message(decision))
            note = self._quotes(parsed, profile)
            return web.json_response(protocol.quote(error, note) if note else error,
                                     status=decision.status, headers=headers)
        if decision.delay_s > 0:
            await asyncio.sleep(decision.delay_s)
        answer = compose(parsed, profile, decision, rng)
        if parsed.stream:
            return await self._stream(protocol, request, parsed, decision, profile, answer,
                                      state, gate, rng, headers)
        if decision.malformed:
            self._record(state, 200)
            return web.Response(body=protocol.malformed(decision), headers=headers,
                                content_type="application/json")
        if decision.empty:
            answer = Answer("", answer.input_tokens, 0, False)
            payload = protocol.empty(decision, answer.input_tokens, rng)
        else:
            payload = protocol.success(decision, answer, rng)
        self._record(state, 200, Bill(parsed.model, parsed.prompt, answer.input_tokens,
                                      answer.output_tokens))
        if decision.missing_usage:
            payload = {k: v for k, v in payload.items() if k not in protocol.usage_keys}
        text = json.dumps(payload)
        if decision.truncated_body:
            text = text[:len(text) // 2]
        return web.Response(text=text, headers=headers, content_type="application/json")

    @staticmethod
    def _quotes(parsed: ParsedRequest, profile: ModelProfile | None) -> str:
        """What a careless provider's error message quotes from the request."""
        if profile is None:
            return ""
        notes = []
        if profile.echo_key:
            notes.append(f"(api key: {parsed.api_key})")
        if profile.echo_prompt:
            notes.append(f"(prompt: {parsed.prompt!r})")
        return " ".join(notes)

    async def _stream(self, protocol: WireProtocol, request: web.Request, parsed: ParsedRequest,
                      decision: Decision, profile: ModelProfile, answer: Answer,
                      state: ModelState, gate: StreamGate | None, rng: random.Random,
                      headers: dict[str, str]) -> web.StreamResponse:
        """Write ``answer`` chunk by chunk, with the profile's delays, stall and cut."""
        from aiohttp import web

        encoder = ENCODERS[protocol.name](decision, parsed, answer, rng)
        response = web.StreamResponse(headers={**headers, "Content-Type": encoder.content_type,
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        sent, ended = 0, "client_left"
        try:
            if profile.first_chunk_delay_ms > 0:
                await asyncio.sleep(profile.first_chunk_delay_ms / 1000.0)
            if opening := encoder.opening():
                await response.write(opening)
            for index, piece in enumerate(pieces(answer, whole_calls=encoder.whole_calls)):
                if index == profile.stream_cut_after:
                    if report := encoder.usage_before_cut(sent):
                        await response.write(report)
                    self._cut(request)
                    ended = "cut"
                    return response
                sent += piece.tokens
                await response.write(encoder.piece(piece, sent))
                if index == 0:
                    if gate is not None and gate.closed:
                        await gate.passed(lambda: request.transport is None
                                          or request.transport.is_closing())
                    if profile.stream_stall_s > 0:
                        await asyncio.sleep(profile.stream_stall_s)
            await response.write(encoder.closing())
            await response.write_eof()
            sent, ended = answer.output_tokens, "complete"
        except ConnectionError:
            pass  # the client went away; it is billed for what was generated until then
        finally:
            self._record(state, 200, Bill(parsed.model, parsed.prompt, answer.input_tokens, sent,
                                          stream=True, ended=ended))
        return response

    @staticmethod
    def _cut(request: web.Request) -> None:
        """Close the connection without ending the chunked body: the client sees a
        response cut short, as when a provider's connection drops mid-stream."""
        transport = request.transport
        if transport is not None:
            transport.close()  # close(), not abort(): what was written still arrives

    def _bad_request(self, protocol: WireProtocol, model: str, message: str) -> web.Response:
        from aiohttp import web

        with self._lock:
            state = self._states.get(model) or self._state_for("")
            state.received_unparsed += 1
            state.record(400)
        decision = Decision(model, -1, 400, Fault.BAD_REQUEST)
        return web.json_response(protocol.error(decision, message), status=400)

    def _record(self, state: ModelState, status: int, bill: Bill | None = None) -> None:
        with self._lock:
            state.record(status, bill)
