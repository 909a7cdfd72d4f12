"""``python -m amm.sim``: serve the demo models until interrupted."""

from __future__ import annotations

import argparse

from amm.sim.server import Simulator

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Parse ``--host/--port/--seed`` and serve :func:`amm.sim.demo_profiles`."""
    parser = argparse.ArgumentParser(prog="python -m amm.sim",
                                     description="Serve the amm provider simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    Simulator.serve_forever(host=args.host, port=args.port, seed=args.seed)


if __name__ == "__main__":
    main()
