"""The history's rows in SQLite: appended in ``seq`` order, each device's rows chained.

Each row points at its device's row before it (``prev``), and the table
keeps each device's newest (its head) in memory, so a device's changes are
read by walking its chain back from the head, and an insert only appends:
an index by device cost 12 µs a row against 2 here, because every commit
wrote a page of the index for each device it touched. The heads are saved
in ``history_heads`` with each pruning (its row ``""`` says up to which
``seq``); at start the rows after that are read again, so heads lost to a
crash are found. Age and size are kept by deleting from the oldest ``seq``,
which costs only the rows deleted; a chain simply ends where its older rows
were deleted.

Everything here runs on the store's thread, inside the store's transactions.
"""

from __future__ import annotations

import sqlite3

from edgetwin.twin.store._bulk import write_rows
from edgetwin.twin.store.rows import HistoryEntry, HistoryRow

_INSERT = "INSERT INTO history (seq, ts, device, property, kind, value, detail, prev)"
_SAVE_HEADS = "INSERT OR REPLACE INTO history_heads (device, seq)"
_UP_TO = ""
"""The ``history_heads`` row that holds the seq the saved heads are up to."""
_ROW = "SELECT ts, property, kind, value, detail, prev FROM history WHERE seq = ?"
WALK_PER_ROW = 50
"""Most rows a read walks per row it may return (a property's rows among its device's)."""


class HistoryTable:
    """The history of one store: its newest seq, its heads and its size, kept in step."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.last_seq: int = db.execute("SELECT max(seq) FROM history").fetchone()[0] or 0
        self.heads: dict[str, int] = dict(db.execute("SELECT device, seq FROM history_heads"))
        saved = self.heads.pop(_UP_TO, 0)
        self.heads.update(db.execute("SELECT device, seq FROM history WHERE seq > ?", (saved,)))
        self._unsaved: set[str] = set(self.heads)
        self.rows: int = db.execute("SELECT count(*) FROM history").fetchone()[0]

    def append(self, rows: list[HistoryEntry]) -> tuple[int, dict[str, int]]:
        """Insert within the caller's transaction; what :meth:`committed` takes once it is."""
        heads: dict[str, int] = {}
        seq = self.last_seq
        stored = []
        for ts, device, prop, kind, value, detail in rows:
            seq += 1
            prev = heads.get(device) or self.heads.get(device)
            stored.append((seq, ts, device, prop, kind, value, detail, prev))
            heads[device] = seq
        write_rows(self.db, _INSERT, 8, stored)
        return seq, heads

    def committed(self, appended: tuple[int, dict[str, int]], count: int) -> None:
        self.last_seq = appended[0]
        self.heads.update(appended[1])
        self._unsaved.update(appended[1])
        self.rows += count

    def read(self, device: str, prop: str | None, since_ms: int, limit: int) -> list[HistoryRow]:
        """The device's latest ``limit`` changes (of ``prop``) since a time, oldest first."""
        found: list[HistoryRow] = []
        seq = self.heads.get(device)
        steps = limit * WALK_PER_ROW
        while seq is not None and len(found) < limit and steps > 0:
            steps -= 1
            row = self.db.execute(_ROW, (seq,)).fetchone()
            if row is None:
                break  # the older rows were deleted
            ts, name, kind, value, detail, seq = row
            if ts < since_ms:
                break
            if prop is None or name == prop:
                found.append(HistoryRow(ts, device, name, kind, value, detail))
        found.reverse()
        return found

    def prune(self, cutoff_ms: int, max_rows: int) -> int:
        """Within the caller's transaction: delete rows older than ``cutoff_ms`` and the
        oldest beyond ``max_rows``; how many went."""
        db = self.db
        first = db.execute(
            "SELECT seq FROM history WHERE ts >= ? ORDER BY seq LIMIT 1", (cutoff_ms,)
        ).fetchone()
        if first is None:
            deleted = db.execute("DELETE FROM history").rowcount
        else:
            deleted = db.execute("DELETE FROM history WHERE seq < ?", first).rowcount
        excess = self.rows - deleted - max_rows
        if excess > 0:
            deleted += db.execute(
                "DELETE FROM history WHERE seq <= "
                "(SELECT seq FROM history ORDER BY seq LIMIT 1 OFFSET ?)",
                (excess - 1,),
            ).rowcount
        heads = [(device, self.heads[device]) for device in self._unsaved]
        write_rows(db, _SAVE_HEADS, 2, [*heads, (_UP_TO, self.last_seq)])
        return int(deleted)

    def pruned(self, deleted: int) -> None:
        """After the pruning committed (its heads saved)."""
        self.rows -= deleted
        self._unsaved.clear()
