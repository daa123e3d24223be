"""The twin's SQLite store."""

from edgetwin.twin.store._store import Store
from edgetwin.twin.store.rows import (
    DeviceRow,
    HistoryRow,
    OutboxRow,
    Snapshot,
    StateRow,
    StoredDevice,
    StoredTwin,
    TwinRow,
    WriteBatch,
    WriteRow,
)

__all__ = [
    "DeviceRow",
    "HistoryRow",
    "OutboxRow",
    "Snapshot",
    "StateRow",
    "Store",
    "StoredDevice",
    "StoredTwin",
    "TwinRow",
    "WriteBatch",
    "WriteRow",
]
