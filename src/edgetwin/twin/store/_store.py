"""The twin's SQLite file (WAL), written with group commit.

Callers :meth:`Store.submit` a batch and await the future it returns. One
writer task takes every batch that is waiting, merges them (the latest row
per key wins) and commits them in one transaction, so a burst of updates
costs one fsync, not one per update. A future resolves only after its
transaction has committed, which is what lets the twin publish a result
only for what is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import aiosqlite

from edgetwin.errors import StoreError
from edgetwin.tasks import stop_task
from edgetwin.twin.store.rows import OutboxRow, Snapshot, StoredDevice, WriteBatch
from edgetwin.twin.store.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

_UPSERT_TWIN = "INSERT OR REPLACE INTO twins VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
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

_Pending = tuple[WriteBatch, "asyncio.Future[None]"]


class Store:
    """The SQLite store; an async context manager that owns the connection and the writer."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", max_batch: int = 2000) -> None:
        self.path = path
        self._synchronous = synchronous
        self._max_batch = max_batch
        self._db: aiosqlite.Connection | None = None
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
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._db.execute("PRAGMA journal_mode = WAL")
            await self._db.execute(f"PRAGMA synchronous = {self._synchronous}")
            await self._migrate()
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
        await self._close_db()

    async def _close_db(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    async def _migrate(self) -> None:
        async with self.db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store {self.path} has schema version {version}, newer than this "
                f"edgetwin knows ({SCHEMA_VERSION})"
            )
        for number in range(version, SCHEMA_VERSION):
            log.info("migrating the store to schema version %d", number + 1)
            await self.db.executescript(
                f"BEGIN IMMEDIATE; {MIGRATIONS[number]};"
                f" PRAGMA user_version = {number + 1}; COMMIT;"
            )

    # --- reading ------------------------------------------------------------------------------

    async def load(self) -> Snapshot:
        """Everything in the store (start-up, and recovery after a failed commit)."""
        models = {k: bytes(v) for k, v in await self._all("SELECT id, body FROM models")}
        devices = {
            row[0]: StoredDevice(*row[1:])
            for row in await self._all(
                "SELECT id, body, state, last_online, spec_topic, spec FROM devices"
            )
        }
        twins = await self._all("SELECT * FROM twins")
        return Snapshot(models, devices, twins)

    async def outbox(self) -> list[OutboxRow]:
        """What the cluster has not seen yet, oldest first."""
        rows = await self._all("SELECT * FROM outbox ORDER BY updated_ms")
        return [OutboxRow(*row) for row in rows]

    async def _all(self, sql: str) -> list[Any]:
        async with self.db.execute(sql) as cursor:
            return list(await cursor.fetchall())

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
                    await self._commit(merged)
                except (sqlite3.Error, OSError) as exc:
                    self._fail(group, merged, exc)
                else:
                    self._succeed(group, merged)

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

    async def _commit(self, batch: WriteBatch) -> None:
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            if batch.models:
                await self._upsert_or_delete(batch.models, _UPSERT_MODEL, "models")
            if batch.devices:
                await self._upsert_or_delete(batch.devices, _UPSERT_DEVICE, "devices")
                gone = [(k,) for k, v in batch.devices.items() if v is None]
                if gone:
                    await db.executemany("DELETE FROM twins WHERE device = ?", gone)
                    await db.executemany("DELETE FROM outbox WHERE device = ?", gone)
            if batch.twins:
                await db.executemany(_UPSERT_TWIN, list(batch.twins.values()))
            if batch.outbox:
                await db.executemany(_UPSERT_OUTBOX, list(batch.outbox.values()))
            if batch.outbox_sent:
                await db.executemany(_DELETE_SENT, [r[:3] for r in batch.outbox_sent])
            if batch.states:
                await db.executemany(
                    _UPDATE_STATE,
                    [(s.state, s.last_online, s.device) for s in batch.states.values()],
                )
            await db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await db.execute("ROLLBACK")
            raise

    async def _upsert_or_delete(
        self, rows: Mapping[str, bytes | tuple[object, ...] | None], upsert: str, table: str
    ) -> None:
        keep = [
            (k, *v) if isinstance(v, tuple) else (k, v) for k, v in rows.items() if v is not None
        ]
        gone = [(k,) for k, v in rows.items() if v is None]
        if keep:
            await self.db.executemany(upsert, keep)
        if gone:
            await self.db.executemany(f"DELETE FROM {table} WHERE id = ?", gone)  # noqa: S608
