"""The ``amm`` command line.

    amm demo        run a multi-agent workload against the built-in simulator (no keys)
    amm sim         serve the provider simulator on a port
    amm models      the registry as a table
    amm check       validate the config, check keys (never printed), health-check each model
    amm report      the analytics summary of a store, in the terminal
    amm dashboard   open the Streamlit report on a store
    amm export      copy a store's spans into ClickHouse (the Collector exporter's table)

Every error ends in one line on stderr, ``amm COMMAND: what went wrong``, and an exit
status: 1 a failure at run time, 2 a bad config or argument, 3 an extra that is not
installed or an installation another distribution has written over, 130 interrupted.
``AMM_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amm.registry import ModelRegistry
    from analytics.source import SpanSource

from amm._resources import (
    DISTRIBUTION,
    TOP_LEVEL_PACKAGES,
    MissingExtraError,
    dashboard_app,
    installation_problems,
    require_extra,
)

__all__ = ["build_parser", "main"]

_DEFAULT_CONFIG = "config/model_registry.json"


def _config_path(arg: str | None) -> Path:
    path = Path(arg or os.environ.get("AMM_CONFIG") or _DEFAULT_CONFIG)
    if not path.exists():
        from amm.errors import ConfigurationError

        raise ConfigurationError(f"{path}: no registry file here; give --config FILE or set "
                                 "AMM_CONFIG (amm demo needs none)", path=str(path))
    return path


def _store_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("AMM_STORE") or "data/amm.db")


def _cmd_demo(args: argparse.Namespace) -> int:
    require_extra("analytics", "amm demo")  # its summary; checked before the workload runs
    from amm.demo import run_demo

    result = run_demo(requests=args.requests, concurrency=args.concurrency, seed=args.seed,
                      data_dir=args.data_dir, budget=args.budget)
    return 0 if result.succeeded > 0 else 1


def _cmd_sim(args: argparse.Namespace) -> int:
    from amm.sim import Simulator, demo_profiles

    Simulator.serve_forever(host=args.host, port=args.port, profiles=demo_profiles(),
                            seed=args.seed)
    return 0


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header), line.format(*("-" * w for w in widths))]
    out += [line.format(*map(str, r)) for r in rows]
    return "\n".join(out)


def _cmd_models(args: argparse.Namespace) -> int:
    from amm.registry import ModelRegistry

    registry = ModelRegistry(_config_path(args.config))
    rows = [
        [m.id, m.provider, "yes" if m.enabled else "no", f"{m.cost_per_1k_input_tokens:g}",
         f"{m.cost_per_1k_output_tokens:g}", f"{m.context_window:,}",
         f"{m.rate_limits.requests_per_minute}", ",".join(m.capabilities)]
        for m in registry.models()
    ]
    print(_table(rows, ["id", "provider", "enabled", "$/1k in", "$/1k out", "context", "rpm",
                        "capabilities"]))
    for exp in registry.experiments:
        arms = ", ".join(f"{m} {w:.0%}" for m, w in exp.arms.items())
        print(f"\nexperiment {exp.name} on {exp.agent_type}: {arms}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from amm.api_client import APIClientManager
    from amm.api_key_manager import APIKeyManager
    from amm.errors import APIModelError
    from amm.health_checker import HealthChecker
    from amm.registry import ModelRegistry

    problems = installation_problems()
    for problem in problems:
        print(f"install: {problem}")
    if problems:
        print(f"install: BROKEN; reinstall with: pip install --force-reinstall {DISTRIBUTION}")
    path = _config_path(args.config)
    try:
        registry = ModelRegistry(path)
    except APIModelError as exc:
        print(f"config: INVALID\n  {exc.error_message}")
        return 2
    print(f"config: {path} is valid ({len(registry.models())} models)")
    keys = APIKeyManager()
    keys.load_keys()
    providers = sorted({m.provider for m in registry.models()})
    for provider in providers:
        state = "n/a (local)" if provider == "ollama" else (
            "present" if keys.has_key(provider) else "MISSING")
        print(f"key {provider}: {state}")
    state_down = asyncio.run(_check_state(registry, args.state_url))
    if args.no_health:
        return 1 if state_down else 3 if problems else 0

    async def probe() -> int:
        failures = 0
        async with APIClientManager(keys, registry=registry, timeout_s=args.timeout) as client:
            checker = HealthChecker(registry, api_client=client)
            for model in registry.models():
                if not model.enabled:
                    continue
                status = await checker.check_model_health(model.id)
                # One check: its own outcome counts, not the model's 3-strike state.
                failed = status.error_message is not None
                mark = f"FAILED: {status.error_message}" if failed else "ok"
                failures += failed
                print(f"health {model.id}: {mark} ({status.response_time_ms:.0f} ms)")
        return failures

    if asyncio.run(probe()) or state_down:
        return 1
    return 3 if problems else 0


async def _check_state(registry: ModelRegistry, explicit: str | None) -> bool:
    """Print which state backend is in force and whether it answers; True when it does not."""
    import time as _time

    from amm.errors import ConfigurationError
    from amm.state import open_backend, resolve_state_url
    from amm.state.base import StateUnavailable

    url = resolve_state_url(explicit, (registry.state_config() or {}).get("url"))
    if url is None:
        print("state: in-process (no state URL: each process keeps its own limits and budget)")
        return False
    try:
        backend = open_backend(url)
    except ConfigurationError as exc:
        print(f"state: INVALID: {exc.error_message}")
        return True
    started = _time.perf_counter()
    try:
        await backend.ping()
    except StateUnavailable as exc:
        print(f"state: {backend!r} UNREACHABLE: {exc} (workers would fall back to "
              "in-process state)")
        return True
    finally:
        await backend.aclose()
    print(f"state: {backend!r} reachable ({(_time.perf_counter() - started) * 1000:.1f} ms)")
    return False


def _cmd_report(args: argparse.Namespace) -> int:
    require_extra("analytics", "amm report")
    store: str | Path = args.source or _store_path(args.store)
    if not _is_url(str(store)) and not Path(store).exists():
        print(f"amm report: no store at {store}: run `amm demo` first, or give --store",
              file=sys.stderr)
        return 2
    import json
    from datetime import UTC, datetime

    from analytics.ab import DecisionRule
    from analytics.report import ReportOptions, report_json, report_text

    try:
        since = datetime.fromisoformat(args.since) if args.since else None
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        guardrails = tuple(g for g in (args.guardrails or "").split(",") if g)
        options = ReportOptions(alpha=args.alpha, mde=args.mde, threshold=args.threshold,
                                rule=DecisionRule(args.primary, guardrails), since=since)
        if not (0 < args.alpha < 1 and args.mde > 0 and 0 < args.threshold < 1):
            raise ValueError("need 0 < --alpha < 1, --mde > 0 and 0 < --threshold < 1")
    except ValueError as exc:
        print(f"amm report: {exc}", file=sys.stderr)
        return 2
    try:
        source = _open_source(str(store), "amm report")
    except (ValueError, ImportError) as exc:
        print(f"amm report: {exc}", file=sys.stderr)
        return 3 if isinstance(exc, ImportError) else 2
    if args.format == "json":
        print(json.dumps(report_json(source, options), indent=2))
    else:
        print(report_text(source, options=options))
    if args.policy:  # off-policy "what if" (analytics.ope), beside the logged policy
        from analytics.ope import what_if

        print(what_if(source, args.policy, lam=args.lam))
    return 0


def _is_url(text: str) -> bool:
    return "://" in text


def _open_source(spec: str, command: str) -> SpanSource:
    """A SpanSource from --source/--store; a URL whose extra is missing says which."""
    from analytics.pushdown import open_source

    if spec.startswith(("clickhouse", "chdb")):
        module = "chdb" if spec.startswith("chdb") else "clickhouse_connect"
        import importlib.util

        if importlib.util.find_spec(module) is None:
            raise ImportError(f"{spec.split('://')[0]}:// sources need {module.replace('_', '-')}"
                              f"; install it with pip install '{DISTRIBUTION}[clickhouse]'")
    return open_source(spec)


def _cmd_export(args: argparse.Namespace) -> int:
    require_extra("analytics", "amm export")
    store = _store_path(args.store)
    if not store.exists():
        print(f"amm export: no store at {store}: run `amm demo` first, or give --store",
              file=sys.stderr)
        return 2
    try:
        _open_source(args.to, "amm export")
        from analytics.clickhouse import export_store

        copied = export_store(store, args.to)
    except ImportError as exc:
        print(f"amm export: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:
        print(f"amm export: {exc}", file=sys.stderr)
        return 2
    print(f"amm export: {copied} new spans from {store} to {args.to}")
    return 0


def _dashboard_env(source: str | None, store: str | None,
                   environ: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """What the dashboard reads and the environment that tells it (``AMM_SOURCE`` for a
    URL, ``AMM_STORE`` for a file). A URL is checked, not opened: an embedded chdb
    directory is locked by the process that opens it, and that must be the dashboard."""
    env = {k: v for k, v in environ.items() if k != "AMM_SOURCE"}
    if source and "://" in source and not source.startswith("sqlite://"):
        if not source.startswith(("clickhouse://", "clickhouses://", "chdb://")):
            raise ValueError(f"{source}: unknown source; expected a store path, "
                             "sqlite:///path, clickhouse://host:8123/db or chdb:///path")
        from analytics.clickhouse.runner import parse_url

        parse_url(source)  # a malformed URL says so here, not in the browser
        module = "chdb" if source.startswith("chdb") else "clickhouse_connect"
        import importlib.util

        if importlib.util.find_spec(module) is None:
            raise ImportError(f"{source.split('://')[0]}:// sources need "
                              f"{module.replace('_', '-')}; install it with "
                              f"pip install '{DISTRIBUTION}[clickhouse]'")
        return source, {**env, "AMM_SOURCE": source}
    path = source.removeprefix("sqlite://") if source else None
    store_path = str(Path(path).resolve()) if path else str(_store_path(store).resolve())
    return store_path, {**env, "AMM_STORE": store_path}


def _cmd_dashboard(args: argparse.Namespace) -> int:
    require_extra("dashboard", "amm dashboard")
    try:
        store, env = _dashboard_env(args.source, args.store, os.environ)
    except (ValueError, ImportError) as exc:
        print(f"amm dashboard: {exc}", file=sys.stderr)
        return 3 if isinstance(exc, ImportError) else 2
    with dashboard_app() as app:
        cmd = [sys.executable, "-m", "streamlit", "run", str(app),
               "--server.port", str(args.port), "--server.address", args.host,
               "--browser.gatherUsageStats", "false"]
        if args.headless:
            cmd += ["--server.headless", "true"]
        print(f"amm dashboard: {store} on http://{args.host}:{args.port} (Ctrl-C stops it)",
              flush=True)
        return _run_child(cmd, env)


def _run_child(cmd: list[str], env: dict[str, str]) -> int:
    """Run ``cmd`` until it exits; SIGINT, SIGTERM and SIGHUP sent to us go to it.

    The child must not outlive the command: a supervisor that stops ``amm dashboard``
    signals this process only, so each signal is forwarded and the child waited for.
    """
    child = subprocess.Popen(cmd, env=env)
    forwarded = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGHUP"):
        forwarded.append(signal.SIGHUP)

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in forwarded}
    try:
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if child.poll() is None:  # we are leaving for another reason: do not leave it behind
            child.kill()
            child.wait()
    # Stopped by a signal we forwarded: that is how the user ends it, not a failure.
    return 0 if code in (-signal.SIGINT, -signal.SIGTERM) else code


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``amm`` (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="amm",
        description="Route each LLM agent call to the best available model, and show why.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run a multi-agent workload against the built-in simulator")
    p.add_argument("--requests", type=int, default=300, help="number of agent calls (default 300)")
    p.add_argument("--concurrency", type=int, default=8, help="calls in flight at once (default 8)")
    p.add_argument("--seed", type=int, default=7, help="seed of the workload and the simulator")
    p.add_argument("--data-dir", default="data", help="where the store is written (default data/)")
    p.add_argument("--budget", type=float, default=5.0, help="daily budget in USD (default 5)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("sim",
                       help="serve the provider simulator (OpenAI, Anthropic, Gemini, Ollama)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_sim)

    p = sub.add_parser("models", help="show the registry as a table")
    p.add_argument("--config", help=f"registry file (default $AMM_CONFIG or {_DEFAULT_CONFIG})")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("check", help="validate config, check keys, health-check each model once")
    p.add_argument("--config", help=f"registry file (default $AMM_CONFIG or {_DEFAULT_CONFIG})")
    p.add_argument("--no-health", action="store_true", help="skip the health checks")
    p.add_argument("--state-url", default=None,
                   help="the fleet's shared state (default $AMM_STATE_URL, then the registry's)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per health check")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("report", help="print the analytics summary of a store")
    p.add_argument("--store", help="SQLite store (default $AMM_STORE or data/amm.db)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text (default) or JSON (schema amm.report/1, see analytics.report)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="A/B false-positive rate, family-wise over arms (default 0.05)")
    p.add_argument("--mde", type=float, default=0.03,
                   help="smallest quality difference worth finding (default 0.03)")
    p.add_argument("--primary", default="quality",
                   choices=("quality", "success_rate", "latency_ms", "cost_per_request"),
                   help="the metric that decides an A/B winner (default quality)")
    p.add_argument("--guardrails", default="success_rate,cost_per_request",
                   help="comma-separated metrics a winner must not be worse on "
                        "(default success_rate,cost_per_request; '' for none)")
    p.add_argument("--threshold", type=float, default=0.8,
                   help="degradation ratio floor, as the seed API's detect_degradation "
                        "(docs/seed.md; default 0.8)")
    p.add_argument("--since", help="report from this ISO time (UTC unless stated)")
    p.add_argument("--source", help="read spans elsewhere: clickhouse://user@host:8123/db or "
                   "chdb:///path (needs amm-sdk[clickhouse]); default the --store file")
    p.add_argument("--policy", action="append", metavar="POLICY",
                   help="what if: estimate this routing policy off-policy from the logged "
                        "decisions (always:<model>, cheapest, score); repeat for several")
    p.add_argument("--lambda", dest="lam", type=float, default=0.0,
                   help="with --policy: reward = quality - LAMBDA x cost in USD (default 0)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export", help="copy a store's spans into ClickHouse (otel_traces)")
    p.add_argument("--store", help="SQLite store (default $AMM_STORE or data/amm.db)")
    p.add_argument("--to", required=True, help="clickhouse://user@host:8123/db or chdb:///path "
                   "(table otel_traces, the Collector exporter's schema, made if missing)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("dashboard", help="open the Streamlit report on a store")
    p.add_argument("--store", help="SQLite store (default $AMM_STORE or data/amm.db)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.add_argument("--source", help="clickhouse://user@host:8123/db or chdb:///path instead "
                   "of the --store file")
    p.set_defaults(func=_cmd_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``amm`` command."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    args = build_parser().parse_args(argv)
    if os.environ.get("AMM_DEBUG"):
        return int(args.func(args))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the command line's boundary: one line, never a traceback
        message, code = _explain(exc)
        print(f"amm {args.command}: {message}", file=sys.stderr)
        return code


def _explain(exc: BaseException) -> tuple[str, int]:
    """One line and an exit status for an error that ended a command."""
    from amm.errors import APIModelError, ConfigurationError

    if isinstance(exc, MissingExtraError):
        return str(exc), 3
    if isinstance(exc, ImportError) and (exc.name or "").split(".")[0] in TOP_LEVEL_PACKAGES:
        problems = installation_problems()
        if problems:
            return (f"{exc}; the installation is damaged ({'; '.join(map(str, problems))}): "
                    f"pip install --force-reinstall {DISTRIBUTION}"), 3
    if isinstance(exc, ImportError) and exc.name:
        return f"{exc} (is {DISTRIBUTION} installed with its dependencies?)", 3
    if isinstance(exc, APIModelError):
        return exc.error_message or str(exc), 2 if isinstance(exc, ConfigurationError) else 1
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}", 1
    return f"{type(exc).__name__}: {exc} (AMM_DEBUG=1 shows the traceback)", 1


if __name__ == "__main__":
    raise SystemExit(main())
