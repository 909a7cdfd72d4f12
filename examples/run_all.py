"""Run the seed's usage examples in one process (litellm is imported once, not 14 times).

    python examples/run_all.py            # every example script, in order
    python examples/run_all.py 03 error   # only those whose number or name part is given

The seed's usage examples (``example_NN_*.py``) run first, then its error handling
examples (``error_example_*.py``), then the ModelOptimizer integration
(``integration_example_*.py``).

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

__all__ = ["BEGIN", "END", "PATTERNS", "discover", "main", "run_examples"]

EXAMPLES_DIR = Path(__file__).resolve().parent
BEGIN = "===== {name} ====="
END = "----- {name}: {outcome} ({seconds:.1f} s)"
DEFAULT_TIMEOUT_S = 120.0
"""How long one example may run before it counts as failed."""


PATTERNS = ("example_*.py", "error_example_*.py", "integration_example_*.py")
"""The example scripts, in run order."""


def discover(selectors: list[str] | None = None) -> list[str]:
    """Module names of the example scripts, in order. ``selectors`` keep only the
    scripts whose number ("3" or "03") or a part of whose name ("error") is given."""
    names = [p.stem for pattern in PATTERNS for p in sorted(EXAMPLES_DIR.glob(pattern))]
    if selectors:
        names = [n for n in names if any(_selects(s, n) for s in selectors)]
    return names


def _selects(selector: str, name: str) -> bool:
    if selector.isdigit():
        return name.startswith("example_") and name.split("_")[1] == selector.zfill(2)
    return selector in name


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
    parser.add_argument("selectors", nargs="*",
                        help="example numbers or name parts to run (default: all)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds one example may take")
    args = parser.parse_args(argv)
    if str(EXAMPLES_DIR) not in sys.path:
        sys.path.insert(0, str(EXAMPLES_DIR))
    names = discover(args.selectors)
    if not names:
        parser.error(f"no example matches {args.selectors}")
    failed = asyncio.run(run_examples(names, args.timeout))
    print(f"{len(names) - len(failed)}/{len(names)} examples ok"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
