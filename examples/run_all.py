"""Run the seed's usage examples in one process (litellm is imported once, not 14 times).

    python examples/run_all.py            # every example_*.py, in order
    python examples/run_all.py 03 07      # only the examples whose number is given

Each example's output sits between a ``===== <name> =====`` line and a
``----- <name>: ok|FAILED (<seconds> s)`` line; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
import traceback
from pathlib import Path

__all__ = ["BEGIN", "END", "discover", "main", "run_examples"]

EXAMPLES_DIR = Path(__file__).resolve().parent
BEGIN = "===== {name} ====="
END = "----- {name}: {outcome} ({seconds:.1f} s)"
DEFAULT_TIMEOUT_S = 120.0
"""How long one example may run before it counts as failed."""


def discover(numbers: list[str] | None = None) -> list[str]:
    """Module names of the example scripts, in order; only ``numbers`` ("03") if given."""
    names = sorted(p.stem for p in EXAMPLES_DIR.glob("example_*.py"))
    if numbers:
        wanted = {n.zfill(2) for n in numbers}
        names = [n for n in names if n.split("_")[1] in wanted]
    return names


async def run_examples(names: list[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """Run each example's ``example()`` in turn; return the names of those that failed."""
    failed = []
    for name in names:
        print(BEGIN.format(name=name), flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(name)
            await asyncio.wait_for(module.example(), timeout_s)
            outcome = "ok"
        except Exception:  # one broken example must not hide the others' results
            traceback.print_exc(file=sys.stdout)
            outcome = "FAILED"
            failed.append(name)
        print(END.format(name=name, outcome=outcome, seconds=time.perf_counter() - started),
              flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("numbers", nargs="*", help="example numbers to run (default: all)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds one example may take")
    args = parser.parse_args(argv)
    if str(EXAMPLES_DIR) not in sys.path:
        sys.path.insert(0, str(EXAMPLES_DIR))
    names = discover(args.numbers)
    if not names:
        parser.error(f"no example matches {args.numbers}")
    failed = asyncio.run(run_examples(names, args.timeout))
    print(f"{len(names) - len(failed)}/{len(names)} examples ok"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
