"""asyncio helpers shared by the modules that may be called with or without a loop."""

from __future__ import annotations

import asyncio

__all__ = ["running_loop"]


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None (called from plain sync code)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
