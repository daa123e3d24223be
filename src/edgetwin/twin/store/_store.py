"""The twin's SQLite file (WAL), written with group commit.

Callers :meth:`Store.submit` a batch and await the future it returns. One
writer task takes every batch that is waiting, merges them (the latest row
per key wins) and commits them in one transaction, so a burst of updates
costs one fsync, not one per update. A future resolves only after its
transaction has committed, which is what lets the twin publish a result
only for what is on disk.

The connection lives on one thread of its own, and a whole transaction is
one call to it: aiosqlite, used before, made a thread hop per statement
(BEGIN, each executemany, COMMIT), ~75 µs of the event loop's time each.

The history (every accepted change, ``_history.py``) is written in the same
transaction as the change. It is kept within ``max_history_rows`` and
``max_history_age`` by deleting its oldest rows in a transaction of their
own, when it has grown 1 % over the limit, and for age at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar

from edgetwin.config import DEFAULTS
from edgetwin.errors import StoreError
from edgetwin.tasks import stop_task
from edgetwin.twin.store._bulk import write_rows
from edgetwin.twin.store._history import HistoryTable
from edgetwin.twin.store.rows import (
    HistoryRow,
    OutboxRow,
    Snapshot,
    StoredDevice,
    WriteBatch,
    WriteRow,
)
from edgetwin.twin.store.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

_UPSERT_TWINS = "INSERT OR REPLACE INTO twins"
_UPSERT_DEVICE = (
    "INSERT INTO devices (id, body, spec_topic, spec) VALUES (?, ?, ?, ?) ON CONFLICT (id)"
    " DO UPDATE SET body = excluded.body, spec_topic = excluded.spec_topic, spec = excluded.spec"
)
_UPSERT_MODEL = "INSERT OR REPLACE INTO models (id, body) VALUES (?, ?)"
_UPDATE_STATE = "UPDATE devices SET state = ?, last_online = ? WHERE id = ?"
_UPSERT_OUTBOX = (
    "INSERT OR REPLACE INTO outbox (device, field, value, updated_ms) VALUES (?, ?, ?, ?)"
)
_DELETE_SENT = "DELETE FROM outbox WHERE device = ? AND field = ? AND value = ?"
_UPSERT_WRITE = "INSERT OR REPLACE INTO writes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_DELETE_WRITE = "DELETE FROM writes WHERE device = ? AND property = ?"
_PRUNE_AGE_EVERY = 60.0
"""Seconds between two deletions of history rows past their age."""

_Pending = tuple[WriteBatch, "asyncio.Future[None]"]
T = TypeVar("T")


class Store:
    """The SQLite store; an async context manager that owns the connection and the writer."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        max_batch: int = 2000,
        max_history_rows: int = DEFAULTS.history.max_rows,
        max_history_age: float = DEFAULTS.history.max_age,
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._max_batch = max_batch
        self._max_history_rows = max_history_rows
        self._max_history_age = max_history_age
        self._history: HistoryTable | None = None
        self._aged_at = 0.0
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        """The one thread that touches the connection."""
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0
        self.outbox_written = asyncio.Event()
        """Set after a commit that queued rows for the cluster."""
        self.failed_devices: set[str] = set()
        """Devices whose rows a failed commit dropped; the twin reloads them from here."""

    async def __aenter__(self) -> Self:
        try:
            await self._run(self._open)
        except (sqlite3.Error, OSError) as exc:
            await self._close_db()
            raise StoreError(f"cannot open the store {self.path}: {exc}") from None
        except BaseException:
            await self._close_db()
            raise
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._writer is not None:
            await self.flush()
            await stop_task(self._writer)
            await self._prune_history()  # and save the history's heads
        await self._close_db()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(f"PRAGMA synchronous = {self._synchronous}")
        self._migrate()
        self._history = HistoryTable(self._db)

    async def _close_db(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._thread.shutdown(wait=False)

    async def _run(self, call: Callable[[], T]) -> T:
        """Run a call on the store's thread; shielded, so a cancelled caller cannot stop
        a transaction half way (the call runs to its end, and its answer is dropped)."""
        future = asyncio.get_running_loop().run_in_executor(self._thread, call)
        return await asyncio.shield(future)

    @property
    def history_rows(self) -> int:
        """Rows in the history now."""
        return self._history.rows if self._history is not None else 0

    @property
    def history_table(self) -> HistoryTable:
        if self._history is None:
            raise StoreError("the store is not open")
        return self._history

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    async def execute(self, sql: str) -> list[Any]:
        """One statement on the store's connection, its rows (tests set pragmas with it)."""
        return await self._run(lambda: self.db.execute(sql).fetchall())

    def _migrate(self) -> None:
        row = self.db.execute("PRAGMA user_version").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store {self.path} has schema version {version}, newer than this "
                f"edgetwin knows ({SCHEMA_VERSION})"
            )
        for number in range(version, SCHEMA_VERSION):
            log.info("migrating the store to schema version %d", number + 1)
            self.db.executescript(
                f"BEGIN IMMEDIATE; {MIGRATIONS[number]};"
                f" PRAGMA user_version = {number + 1}; COMMIT;"
            )

    # --- reading ------------------------------------------------------------------------------

    async def load(self) -> Snapshot:
        """Everything in the store (start-up, and recovery after a failed commit)."""
        return await self._run(self._load)

    def _load(self) -> Snapshot:
        db = self.db
        models = {k: bytes(v) for k, v in db.execute("SELECT id, body FROM models")}
        devices = {
            row[0]: StoredDevice(*row[1:])
            for row in db.execute(
                "SELECT id, body, state, last_online, spec_topic, spec FROM devices"
            )
        }
        twins = db.execute("SELECT * FROM twins").fetchall()
        writes = [WriteRow(*row) for row in db.execute("SELECT * FROM writes")]
        return Snapshot(models, devices, twins, writes)

    async def outbox(self) -> list[OutboxRow]:
        """What the cluster has not seen yet, oldest first."""
        rows = await self.execute("SELECT * FROM outbox ORDER BY updated_ms")
        return [OutboxRow(*row) for row in rows]

    async def history(
        self, device: str, prop: str | None = None, since_ms: int = 0, limit: int = 1000
    ) -> list[HistoryRow]:
        """The latest ``limit`` changes of a device (of one property) since a time, oldest first."""
        table = self.history_table
        try:
            return await self._run(lambda: table.read(device, prop, since_ms, limit))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the history: {exc}") from exc

    # --- writing ------------------------------------------------------------------------------

    def take_failed_devices(self) -> set[str]:
        failed, self.failed_devices = self.failed_devices, set()
        return failed

    def submit(self, batch: WriteBatch) -> asyncio.Future[None]:
        """Queue rows for the next group commit; the future resolves once they are on disk."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not batch:
            future.set_result(None)
            return future
        self._pending.append((batch, future))
        self._wakeup.set()
        return future

    async def write(self, batch: WriteBatch) -> None:
        await self.submit(batch)

    async def flush(self) -> None:
        """Wait until everything submitted so far has been committed (or failed)."""
        if self._pending:
            await asyncio.gather(*(f for _, f in self._pending), return_exceptions=True)

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                group = self._take_group()
                merged = WriteBatch()
                for batch, _ in group:
                    merged.merge(batch)
                try:
                    await self._run(functools.partial(self._commit, merged))
                except (sqlite3.Error, OSError) as exc:
                    self._fail(group, merged, exc)
                else:
                    self._succeed(group, merged)
            if self._history_due():
                await self._prune_history()

    def _history_due(self) -> bool:
        slack = max(100, self._max_history_rows // 100)
        over = self.history_rows > self._max_history_rows + slack
        return over or time.monotonic() - self._aged_at > _PRUNE_AGE_EVERY

    async def _prune_history(self) -> None:
        """Delete the history's rows past its age and over its size, oldest first."""
        self._aged_at = time.monotonic()
        cutoff = time.time_ns() // 1_000_000 - int(self._max_history_age * 1000)
        try:
            deleted = await self._run(functools.partial(self._prune, cutoff))
        except (sqlite3.Error, OSError) as exc:
            log.warning("history not pruned: %s", exc)
            return
        self.history_table.pruned(deleted)

    def _prune(self, cutoff_ms: int) -> int:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            deleted = self.history_table.prune(cutoff_ms, self._max_history_rows)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return deleted

    def _succeed(self, group: list[_Pending], merged: WriteBatch) -> None:
        self.commits += 1
        if merged.outbox:
            self.outbox_written.set()
        for _, future in group:
            if not future.done():
                future.set_result(None)

    def _fail(self, group: list[_Pending], merged: WriteBatch, exc: Exception) -> None:
        # What waits behind the failed group was built on its rows: fail it too.
        group += self._pending
        self._pending = []
        log.error("store commit of %d rows failed: %s", len(merged), exc)
        error = StoreError(f"store write failed: {exc}")
        for batch, future in group:
            self.failed_devices |= batch.device_ids()
            if not future.done():
                future.set_exception(error)

    def _take_group(self) -> list[_Pending]:
        taken = 0
        for index, (batch, _) in enumerate(self._pending):
            taken += len(batch)
            if taken > self._max_batch and index > 0:
                group, self._pending = self._pending[:index], self._pending[index:]
                return group
        group, self._pending = self._pending, []
        return group

    def _commit(self, batch: WriteBatch) -> None:
        """One transaction, on the store's thread."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if batch.models:
                self._upsert_or_delete(batch.models, _UPSERT_MODEL, "models")
            if batch.devices:
                self._upsert_or_delete(batch.devices, _UPSERT_DEVICE, "devices")
                gone = [(k,) for k, v in batch.devices.items() if v is None]
                if gone:
                    db.executemany("DELETE FROM twins WHERE device = ?", gone)
                    db.executemany("DELETE FROM outbox WHERE device = ?", gone)
                    db.executemany("DELETE FROM writes WHERE device = ?", gone)
            if batch.twins:
                write_rows(db, _UPSERT_TWINS, 8, batch.twins.values())
            if batch.outbox:
                db.executemany(_UPSERT_OUTBOX, batch.outbox.values())
            if batch.outbox_sent:
                db.executemany(_DELETE_SENT, [r[:3] for r in batch.outbox_sent])
            appended = self._commit_writes_and_history(batch)
            if batch.states:
                db.executemany(
                    _UPDATE_STATE,
                    [(s.state, s.last_online, s.device) for s in batch.states.values()],
                )
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        if appended is not None:
            self.history_table.committed(appended, len(batch.history))

    def _commit_writes_and_history(self, batch: WriteBatch) -> tuple[int, dict[str, int]] | None:
        keep = [row for row in batch.writes.values() if row is not None]
        gone = [key for key, row in batch.writes.items() if row is None]
        if keep:
            self.db.executemany(_UPSERT_WRITE, keep)
        if gone:
            self.db.executemany(_DELETE_WRITE, gone)
        return self.history_table.append(batch.history) if batch.history else None

    def _upsert_or_delete(
        self, rows: Mapping[str, bytes | tuple[object, ...] | None], upsert: str, table: str
    ) -> None:
        keep = [
            (k, *v) if isinstance(v, tuple) else (k, v) for k, v in rows.items() if v is not None
        ]
        gone = [(k,) for k, v in rows.items() if v is None]
        if keep:
            self.db.executemany(upsert, keep)
        if gone:
            self.db.executemany(f"DELETE FROM {table} WHERE id = ?", gone)  # noqa: S608
