"""The history of accepted changes: rows added to the change's own batch, so they commit with it.

What is kept, by ``kind``: ``desired`` (the value, and who set it),
``reported`` (a value that differs from the one before), ``state``,
``write`` (a write's phase: sent, written, failed, timedout, drift, with
the reason) and ``spec`` (a Device added, changed or removed, by whom).
The store keeps it within ``history.max_rows`` and ``history.max_age``.
"""

from __future__ import annotations

from enum import StrEnum

from edgetwin.twin.store.rows import HistoryRow, WriteBatch


class Kind(StrEnum):
    DESIRED = "desired"
    REPORTED = "reported"
    STATE = "state"
    WRITE = "write"
    SPEC = "spec"


class History:
    """Adds history rows to batches, when the history is on."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled

    def record(
        self,
        batch: WriteBatch,
        device: str,
        prop: str,
        kind: Kind,
        value: str | None,
        *,
        at: int,
        detail: str | None = None,
    ) -> None:
        if self.enabled:
            batch.history.append((at, device, prop, kind, value, detail))


def history_event(row: HistoryRow) -> dict[str, object]:
    """One change as the twin API and the page give it (``ts`` in epoch ms)."""
    event: dict[str, object] = {"ts": row.ts, "kind": row.kind}
    if row.property:
        event["property"] = row.property
    event["value"] = row.value
    if row.detail is not None:
        event["detail"] = row.detail
    return event
