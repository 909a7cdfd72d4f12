"""amm's door to the shared store writer: errors become amm errors here, once.

:func:`open_store` returns the process's :class:`~telemetry.store_writer.StoreWriter`
of a file (one per file, shared by the ledger, the performance table, the cache
and the span store) and turns a file that cannot be opened into a
:class:`~amm.errors.ConfigurationError` naming the path.

>>> store = open_store(Path("data/amm.db"), retention_days=30)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from amm.errors import ConfigurationError
from telemetry.store_writer import StoreError, StoreWriter

__all__ = ["open_store"]


def open_store(path: str | Path, *, retention_days: float | None = None,
               **options: Any) -> StoreWriter:
    """The shared writer of ``path`` with one more user (``release()`` it when done).

    Raises ConfigurationError (``path`` and ``field='data_dir'`` set) when the file or
    its directory cannot be created, opened or written.
    """
    try:
        return StoreWriter.open(path, retention_days=retention_days, **options)
    except StoreError as exc:
        raise ConfigurationError(
            f"{exc.path}: cannot open the amm store ({exc.__cause__}); check that its "
            f"directory exists or can be created, is writable and has free space",
            path=str(exc.path), field="data_dir") from exc
