"""The SQLite store: migrations, group commit, and what a failed commit leaves behind."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from edgetwin.errors import StoreError
from edgetwin.twin.store import DeviceRow, HistoryRow, StateRow, Store, TwinRow, WriteBatch
from edgetwin.twin.store.schema import MIGRATIONS, SCHEMA_VERSION


def _twin(device: str, prop: str, value: str, version: int) -> WriteBatch:
    batch = WriteBatch()
    batch.add_twin(TwinRow(device, prop, None, 0, 0, value, 1, version))
    return batch


async def test_fresh_store_is_migrated_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    async with Store(path):
        pass
    async with Store(path) as store:
        snapshot = await store.load()
    assert (snapshot.models, snapshot.devices, snapshot.twins) == ({}, {}, [])
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"models", "devices", "twins", "outbox"} <= tables


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99, newer"):
        async with Store(path):
            pass


async def test_group_commit_writes_a_burst_in_few_transactions(tmp_path: Path) -> None:
    async with Store(tmp_path / "t.db") as store:
        futures = [store.submit(_twin(f"ns/d{i % 10}", "p", str(i), i)) for i in range(500)]
        await asyncio.gather(*futures)
        assert store.commits < 50
        snapshot = await store.load()
    latest = {TwinRow(*row).device: TwinRow(*row).reported for row in snapshot.twins}
    assert latest == {f"ns/d{i}": str(490 + i) for i in range(10)}


async def test_device_delete_removes_its_twins(tmp_path: Path) -> None:
    async with Store(tmp_path / "t.db") as store:
        batch = _twin("ns/a", "p", "1", 1)
        batch.devices["ns/a"] = DeviceRow(b"{}", "spec/topic", b"{}")
        batch.states["ns/a"] = StateRow("ns/a", "online", 5)
        await store.write(batch)
        gone = WriteBatch(devices={"ns/a": None})
        await store.write(gone)
        snapshot = await store.load()
    assert snapshot.devices == {}
    assert snapshot.twins == []


async def test_a_full_disk_fails_the_group_and_what_waits_behind_it(tmp_path: Path) -> None:
    async with Store(tmp_path / "t.db") as store:
        await store.write(_twin("ns/a", "p", "small", 1))
        [(pages,)] = await store.execute("PRAGMA page_count")
        await store.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own size limit
        big = "x" * 200_000
        first = store.submit(_twin("ns/a", "p", big, 2))
        second = store.submit(_twin("ns/b", "p", "tiny", 1))
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results), results
        assert "full" in str(results[0])
        assert store.take_failed_devices() == {"ns/a", "ns/b"}
        snapshot = await store.load()
        assert [(r[0], r[5]) for r in snapshot.twins] == [("ns/a", "small")]

        await store.execute("PRAGMA max_page_count = 1073741823")  # space is back
        await store.write(_twin("ns/a", "p", big, 2))
        snapshot = await store.load()
    assert [(r[0], r[5]) for r in snapshot.twins] == [("ns/a", big)]
    with sqlite3.connect(tmp_path / "t.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_an_older_store_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0])
        db.execute("INSERT INTO devices (id, body) VALUES ('ns/a', x'7b7d')")
        db.execute("PRAGMA user_version = 1")
    async with Store(path) as store:
        snapshot = await store.load()
    assert snapshot.devices["ns/a"] == (b"{}", "unknown", None, None, None)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


def _history(device: str, start: int, count: int, at: int) -> WriteBatch:
    rows = [HistoryRow(at, device, "p", "reported", str(n)) for n in range(start, start + count)]
    return WriteBatch(history=rows)


async def test_the_history_keeps_its_newest_rows_within_max_rows(tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    async with Store(tmp_path / "t.db", max_history_rows=1000) as store:
        await store.write(_history("ns/a", 0, 1000, now))
        await store.write(_history("ns/b", 1000, 150, now))  # 1 % over, and 100 more
        await store.write(WriteBatch(history=[]))  # nothing: no commit to wait behind
        await store.write(_history("ns/b", 1150, 1, now))  # committed after the pruning
        assert store.history_rows == 1001
        kept = await store.history("ns/a", limit=10_000)
    assert [r.value for r in kept] == [str(n) for n in range(150, 1000)]
    async with Store(tmp_path / "t.db", max_history_rows=1000) as store:
        assert store.history_rows == 1000  # pruned at close, counted again at start
        again = await store.history("ns/b", limit=2)
    assert [r.value for r in again] == ["1149", "1150"]


async def test_the_history_forgets_what_is_older_than_max_age(tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    async with Store(tmp_path / "t.db", max_history_age=60.0) as store:
        old = _history("ns/a", 0, 5, now - 61_000)
        await store.write(old)
        await store.write(_history("ns/a", 5, 3, now))  # the first commit prunes by age
        await store.write(_history("ns/a", 8, 1, now))
        kept = await store.history("ns/a")
        assert [r.value for r in kept] == [str(n) for n in range(5, 9)]
        assert store.history_rows == 4
        since = await store.history("ns/a", since_ms=now, limit=2)
    assert [r.value for r in since] == ["7", "8"]
