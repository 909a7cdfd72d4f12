"""``python -m benchmarks`` (``make bench``); see :mod:`benchmarks.main`."""

from __future__ import annotations

__all__: list[str] = []

if __name__ == "__main__":
    from benchmarks.main import main

    raise SystemExit(main())
