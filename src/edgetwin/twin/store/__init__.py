"""The twin's SQLite store."""

from edgetwin.twin.store._store import Store
from edgetwin.twin.store.rows import (
    DeviceRow,
    OutboxRow,
    Snapshot,
    StateRow,
    StoredDevice,
    StoredTwin,
    TwinRow,
    WriteBatch,
)

__all__ = [
    "DeviceRow",
    "OutboxRow",
    "Snapshot",
    "StateRow",
    "Store",
    "StoredDevice",
    "StoredTwin",
    "TwinRow",
    "WriteBatch",
]
