"""One batching writer per store file: every component's writes, one transaction a batch.

The cost ledger, the performance table, the response cache and the span store all
write ``amm.db`` through the one :class:`StoreWriter` of that file in this process
(:meth:`StoreWriter.open` shares it, counting users; :meth:`release` closes it after
the last). A write is *submitted*: appended to an in-memory queue and given a ticket
(a sequence number). A daemon thread commits the queue every ``flush_interval_s``,
or at once when someone waits for a ticket: **group commit**, so callers that wait
together share one commit. The file is WAL with ``synchronous=NORMAL``: a committed
batch survives a killed process (power loss can take the last commits).

>>> writer = StoreWriter.open("data/amm.db")
>>> ticket = writer.submit("INSERT INTO amm_performance (ts, model_id) VALUES (?, ?)", (t, "m"))
>>> await writer.wait_async(ticket)       # True once committed
True
>>> writer.release()

A store that cannot be written (disk full, read-only, locked) never fails the
caller: the batch stays queued (up to ``max_pending`` items, then the oldest are
dropped and counted in ``dropped``) and is retried with backoff; the first failure
of an episode logs one WARNING saying what to do, later ones only count in
``write_failures``; a waiter gets False at once while the store is failing.
``close`` never raises: it returns whether everything was written.

Retention (spans and performance rows older than ``retention_days``; the ledger is
kept forever) runs on the writer thread when it is idle, in small DELETE batches,
each its own short transaction, so writers never wait long behind it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from telemetry.store_barrier import CommitBarrier
from telemetry.store_batch import BAD_ITEM, Item, Work, run_batch, run_isolating
from telemetry.store_retention import Retention
from telemetry.store_schema import connect, ensure_store_schema

__all__ = ["ENV_RETENTION_DAYS", "StoreError", "StoreWriter", "Work"]

_log = logging.getLogger("amm.store")

ENV_RETENTION_DAYS = "AMM_RETENTION_DAYS"
"""Days spans and performance rows are kept (default 30) unless given explicitly."""

_T = TypeVar("_T")
_CHECKPOINT_AFTER = 2000  # commits: under constant load, checkpoint anyway
_INLINE_COMMIT_MAX = 32  # queued items an async waiter commits itself when the writer is idle
_registry: dict[str, StoreWriter] = {}
_registry_lock = threading.Lock()


class StoreError(Exception):
    """The store file cannot be opened or created; ``path`` names it."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def _default_retention_days() -> float:
    raw = os.environ.get(ENV_RETENTION_DAYS, "")
    try:
        return float(raw) if raw else 30.0
    except ValueError:
        _log.warning("%s=%r is not a number of days; keeping 30", ENV_RETENTION_DAYS, raw)
        return 30.0


class StoreWriter:
    """The batching writer of one store file (see the module docstring)."""

    def __init__(self, path: str | Path, *, flush_interval_s: float = 0.5,
                 busy_timeout_s: float = 5.0, batch_size: int = 512,
                 max_pending: int = 200_000, retention_days: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.retention = Retention(_default_retention_days() if retention_days is None
                                   else retention_days, clock=clock)
        self.write_failures = 0  # commit attempts that failed
        self.dropped = 0  # items dropped because the queue passed max_pending
        self._busy_timeout_s = busy_timeout_s
        # _db_lock serialises use of the connection and is taken before _lock, never
        # after; _lock guards the queue, tickets and waiters for a few operations.
        self._db_lock = threading.Lock()
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._queue: list[Item] = []
        self._seq = 0  # ticket of the newest submitted item
        self._failing = False
        self._backoff_s = flush_interval_s
        self._uncheckpointed = 0  # commits since the last checkpoint
        self._inline_pending = False  # a loop's _commit_inline is scheduled
        self._users = 0
        self._closed = False
        self._wake = threading.Event()
        self._barrier = CommitBarrier(self._wake_now)
        self._thread: threading.Thread | None = None
        self._key = str(self.path.resolve())
        try:
            self._conn = connect(self.path, timeout_s=busy_timeout_s)
            self._conn.isolation_level = None  # we say BEGIN and COMMIT ourselves
            # Checkpoints (which fsync) run when the writer is idle, not inside the
            # commit a request waits for (see _checkpoint).
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
            ensure_store_schema(self._conn)
        except (sqlite3.Error, OSError) as exc:
            if getattr(self, "_conn", None) is not None:
                self._conn.close()
            raise StoreError(f"store {self.path}: cannot open: {exc}", self.path) from exc
        self._reader: sqlite3.Connection | None = None

    @classmethod
    def open(cls, path: str | Path, *, retention_days: float | None = None,
             **options: Any) -> StoreWriter:
        """The process's writer of ``path`` (made on first use), with one more user.
        ``retention_days`` given here replaces the writer's. Raises :class:`StoreError`."""
        key = str(Path(path).resolve())
        with _registry_lock:
            writer = _registry.get(key)
            if writer is None or writer._closed:
                writer = cls(path, retention_days=retention_days, **options)
                _registry[key] = writer
            elif retention_days is not None:
                writer.retention.days = retention_days
            writer._users += 1
            return writer

    def release(self) -> bool:
        """One user fewer; the last one closes the writer. Never raises; False when
        something could not be written (see the log)."""
        with _registry_lock:
            self._users -= 1
            last = self._users <= 0
            if last and _registry.get(self._key) is self:
                del _registry[self._key]
        return self.close() if last else True

    def __repr__(self) -> str:
        return (f"StoreWriter({str(self.path)!r}, pending={self.pending()}, "
                f"committed={self._barrier.committed}, write_failures={self.write_failures}, "
                f"failing={self._failing}, closed={self._closed})")

    # -- submitting ------------------------------------------------------------------

    def submit(self, sql: str | Work, params: tuple[Any, ...] = ()) -> int:
        """Queue one statement (or a :data:`Work`) for the next batch; its ticket."""
        with self._lock:
            self._queue.append((sql, params))
            self._seq += 1
            ticket, backlog = self._bound_locked()
        self._nudge(backlog)
        return ticket

    def submit_many(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
        """Queue ``sql`` once per row; the ticket of the last one."""
        with self._lock:
            self._queue.extend((sql, row) for row in rows)
            self._seq += len(rows)
            ticket, backlog = self._bound_locked()
        self._nudge(backlog)
        return ticket

    def _bound_locked(self) -> tuple[int, int]:
        """After queueing (lock held): drop the oldest past ``max_pending``; the newest
        ticket and the backlog."""
        backlog = len(self._queue)
        if backlog > self.max_pending:
            self._drop_oldest_locked(backlog - self.max_pending)
        return self._seq, backlog

    def _nudge(self, backlog: int) -> None:
        """Start the writer thread on first use; wake it when a batch is full."""
        if self._thread is None:
            self._start()
        if backlog >= self.batch_size:
            self._wake.set()

    @property
    def last_ticket(self) -> int:
        """The ticket of the newest submitted item."""
        return self._seq

    @property
    def healthy(self) -> bool:
        """False while the store is failing (the last commit attempt failed)."""
        return not self._failing

    def pending(self) -> int:
        """Items submitted and not committed yet."""
        with self._lock:
            return len(self._queue)

    def is_committed(self, ticket: int) -> bool:
        """Whether the item of ``ticket`` is committed."""
        return self._barrier.committed >= ticket

    # -- waiting (the durability barrier) ----------------------------------------------

    def wait(self, ticket: int | None = None, timeout_s: float | None = None) -> bool:
        """Block until ``ticket`` (default: everything submitted so far) is committed;
        False when the store failed, is failing, or ``timeout_s`` passed."""
        ticket = self._seq if ticket is None else ticket
        if self._barrier.committed < ticket and (self._failing or self._closed):
            return False
        return self._barrier.wait(ticket, timeout_s)

    async def wait_async(self, ticket: int | None = None) -> bool:
        """:meth:`wait` for an event loop: the loop keeps running while the writer
        thread commits.

        When only a few items wait (a request's own rows) the commit runs on the loop
        instead, once per loop iteration for every waiter of that iteration (still a
        group commit): a commit of a few rows costs ~30 us, while handing it to the
        writer thread and back costs two thread wake-ups, each waiting for the GIL
        behind whatever thread holds it (~0.5 ms p50 under the benchmark's load). A
        longer queue, or a writer busy committing, is left to the writer thread, so
        the loop is never held long.
        """
        ticket = self._seq if ticket is None else ticket
        if self._barrier.committed >= ticket:
            return True
        if self._failing or self._closed:
            return False
        if not self._inline_pending and len(self._queue) <= _INLINE_COMMIT_MAX:
            self._inline_pending = True
            asyncio.get_running_loop().call_soon(self._commit_inline)
        return await self._barrier.wait_async(ticket)

    def _commit_inline(self) -> None:
        """The loop's group commit (see :meth:`wait_async`); the writer thread's job
        when the queue grew long meanwhile or the thread is committing now."""
        self._inline_pending = False
        if len(self._queue) > _INLINE_COMMIT_MAX or not self._db_lock.acquire(blocking=False):
            self._wake_now()
            return
        try:
            self._commit_locked()
        except sqlite3.Error:
            pass  # counted and logged in _failed; its waiters were answered False
        finally:
            self._db_lock.release()

    def _wake_now(self) -> None:
        if self._inline_pending:
            return  # the loop commits in a moment (_commit_inline)
        if self._thread is None:
            self._start()
        self._wake.set()

    # -- committing ------------------------------------------------------------------

    def flush(self) -> int:
        """Commit everything queued now, on the caller's thread; how many items.
        Raises ``sqlite3.Error`` when the store refuses (the items stay queued)."""
        with self._db_lock:
            return self._commit_locked()

    def _commit_locked(self) -> int:
        with self._lock:
            batch, self._queue = self._queue, []
            upto = self._seq
        if not batch:
            self._settle(upto, ok=True)
            return 0
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                run_batch(conn, batch)
            except BAD_ITEM:
                # A bad item (a bug, not the environment): write the rest without it.
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                run_isolating(conn, batch)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            with self._lock:  # back in front, in order, for the next try
                self._queue[:0] = batch
                if len(self._queue) > self.max_pending:
                    self._drop_oldest_locked(len(self._queue) - self.max_pending)
            self._failed(exc)
            self._settle(upto, ok=False)
            raise
        self._recovered(len(batch))
        self._uncheckpointed += 1
        self._settle(upto, ok=True)
        return len(batch)

    def _settle(self, upto: int, *, ok: bool) -> None:
        self._barrier.settle(upto, ok=ok)

    def _failed(self, exc: sqlite3.Error) -> None:
        self.write_failures += 1
        self._backoff_s = min(self._backoff_s * 2, 5.0) if self._failing else self.flush_interval_s
        if not self._failing:
            self._failing = True
            _log.warning(
                "amm store %s cannot be written (%s). Requests are still served; records "
                "are kept in memory (up to %d) and retried. Free disk space, make the "
                "directory writable or stop the process holding the database lock. "
                "Further failures are only counted (write_failures).",
                self.path, exc, self.max_pending)

    def _recovered(self, written: int) -> None:
        if self._failing:
            self._failing = False
            self._backoff_s = self.flush_interval_s
            _log.warning("amm store %s is writable again (%d records written after %d "
                         "failed attempts)", self.path, written, self.write_failures)

    def _drop_oldest_locked(self, n: int) -> None:
        del self._queue[:n]
        if self.dropped == 0:
            _log.error("amm store %s: more than %d records waiting; the oldest are dropped "
                       "(counted in dropped)", self.path, self.max_pending)
        self.dropped += n

    # -- the thread --------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="amm-store-writer",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        next_retention = time.monotonic() + self.retention.first_run_s
        while not self._closed:
            urgent = self._wake.wait(self._backoff_s if self._failing else self.flush_interval_s)
            self._wake.clear()
            if self._closed:
                return
            if urgent and self._failing:
                # A failing store is retried on the backoff, not once per waiter.
                self._wake.wait(self._backoff_s)
            try:
                self.flush()
            except sqlite3.Error:
                continue  # counted and logged once in _failed
            if self._uncheckpointed and (not urgent or self._uncheckpointed >= _CHECKPOINT_AFTER):
                self._checkpoint()
            if time.monotonic() >= next_retention:  # chunked: gives way to waiters
                next_retention = time.monotonic() + self.retention.interval_s
                self._retain()

    def _checkpoint(self) -> None:
        """Copy the WAL back into the database file (PASSIVE: never waits for readers)."""
        with self._db_lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self._uncheckpointed = 0
            except sqlite3.Error as exc:
                _log.debug("checkpoint of %s postponed: %s", self.path, exc)

    def _retain(self) -> None:
        """Retention in small transactions; gives way whenever someone waits."""
        while not self._closed:
            with self._db_lock:
                try:
                    deleted = self.retention.run_chunk(self._conn)
                except sqlite3.Error as exc:
                    _log.debug("retention on %s postponed: %s", self.path, exc)
                    return
            if deleted == 0:
                return
            if self._barrier.waiting or self._wake.is_set():
                self.flush_quietly()

    def flush_quietly(self) -> bool:
        """:meth:`flush` that never raises; False when the store refused."""
        try:
            self.flush()
        except sqlite3.Error:
            return False
        return True

    def apply_retention(self) -> int:
        """Delete every span and performance row past the retention now, in small
        batches; how many rows went."""
        total = 0
        while True:
            with self._db_lock:
                deleted = self.retention.run_chunk(self._conn)
            if deleted == 0:
                return total
            total += deleted

    # -- other uses of the connection ------------------------------------------------

    def run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Commit what is queued, then run ``work`` in its own transaction on the
        caller's thread (maintenance: evictions, deletes). Raises ``sqlite3.Error``."""
        with self._db_lock:
            self._commit_locked()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

    def read(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run read-only ``work`` on the reader connection: WAL lets it run beside a
        batch being written. It sees committed data only. Raises ``sqlite3.Error``."""
        with self._read_lock:
            if self._reader is None:
                self._reader = connect(self.path, timeout_s=self._busy_timeout_s)
                self._reader.isolation_level = None
            return work(self._reader)

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> bool:
        """Stop the thread, commit what is queued and close. Idempotent; never raises:
        returns False (and logs what was lost) when the store refused."""
        with self._lock:
            if self._closed:
                return not self._queue
            self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10.0)
        ok = self.flush_quietly()
        if not ok:
            _log.warning("amm store %s: %d records could not be written at close",
                         self.path, self.pending())
        self._settle(self._seq, ok=False)  # nobody waits forever
        with self._db_lock:
            self._conn.close()
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with _registry_lock:
            if _registry.get(self._key) is self:
                del _registry[self._key]
        return ok


@atexit.register
def _close_all() -> None:
    """Write what is queued at interpreter exit (the threads are daemons)."""
    with _registry_lock:
        writers = list(_registry.values())
    for writer in writers:
        writer.close()
