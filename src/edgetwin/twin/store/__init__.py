"""The twin's SQLite store."""

from edgetwin.twin.store._store import Store
from edgetwin.twin.store.rows import (
    DeviceRow,
    Snapshot,
    StateRow,
    StoredDevice,
    StoredTwin,
    TwinRow,
    WriteBatch,
)

__all__ = [
    "DeviceRow",
    "Snapshot",
    "StateRow",
    "Store",
    "StoredDevice",
    "StoredTwin",
    "TwinRow",
    "WriteBatch",
]
