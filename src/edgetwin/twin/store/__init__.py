"""The twin's SQLite store."""

from edgetwin.twin.store._store import Store
from edgetwin.twin.store.rows import Snapshot, StateRow, TwinRow, WriteBatch

__all__ = ["Snapshot", "StateRow", "Store", "TwinRow", "WriteBatch"]
