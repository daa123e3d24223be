"""What the twin writes: rows, gathered in a batch that commits as one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class TwinRow(NamedTuple):
    device: str
    property: str
    desired: str | None
    desired_ts: int
    desired_version: int
    reported: str | None
    reported_ts: int
    reported_version: int


class DeviceRow(NamedTuple):
    """A Device's JSON, and its merged spec with the topic it is retained on (if it has one)."""

    body: bytes
    spec_topic: str | None = None
    spec: bytes | None = None


class StoredDevice(NamedTuple):
    body: bytes
    state: str
    last_online: int | None
    spec_topic: str | None
    spec: bytes | None


class OutboxRow(NamedTuple):
    """A device field the cluster has not seen yet (``twin/<property>`` or ``state``)."""

    device: str
    field: str
    value: bytes
    updated_ms: int


class WriteRow(NamedTuple):
    """Where the write of one desired value stands (``twin/writes.py`` says how it moves)."""

    device: str
    property: str
    phase: str
    value: str
    """The desired value this write is of."""
    by: str
    """Who set it: ``cluster``, ``manifests``, ``cli:<user>``, ``mqtt``, ..."""
    set_ms: int
    sent_ms: int
    """When the delta went out to the mappers (0: not yet)."""
    at_ms: int
    """When the write entered its phase."""
    deadline_ms: int
    """When an open write (pending, sent) times out."""
    reason: str
    """Why it failed or timed out, or what drifted."""


class HistoryRow(NamedTuple):
    """One accepted change, as the history keeps it (``property`` is "" for device events)."""

    ts: int
    device: str
    property: str
    kind: str
    value: str | None
    detail: str | None = None


HistoryEntry = tuple[int, str, str, str, str | None, str | None]
"""A :class:`HistoryRow` as the twin adds it to a batch: a plain tuple, made per update (a
named tuple costs twice as much to make)."""


class StateRow(NamedTuple):
    device: str
    state: str
    last_online: int | None


@dataclass(slots=True)
class WriteBatch:
    """Rows to write together; merging keeps the latest row per key.

    ``devices`` and ``models`` map an id to its row, or to None to delete it (a
    deleted device takes its twin rows with it).
    """

    twins: dict[tuple[str, str], TwinRow] = field(default_factory=dict)
    states: dict[str, StateRow] = field(default_factory=dict)
    devices: dict[str, DeviceRow | None] = field(default_factory=dict)
    models: dict[str, bytes | None] = field(default_factory=dict)
    outbox: dict[tuple[str, str], OutboxRow] = field(default_factory=dict)
    outbox_sent: list[OutboxRow] = field(default_factory=list)
    """Rows the cluster now has: deleted if they are still what was sent."""
    writes: dict[tuple[str, str], WriteRow | None] = field(default_factory=dict)
    """Write lifecycles by (device, property); None ends one (its desired value is gone)."""
    history: list[HistoryEntry] = field(default_factory=list)
    """Changes for the history, in order; kept when their device goes."""

    def __bool__(self) -> bool:
        return bool(len(self))

    def __len__(self) -> int:
        return (
            len(self.twins)
            + len(self.states)
            + len(self.devices)
            + len(self.models)
            + len(self.outbox)
            + len(self.outbox_sent)
            + len(self.writes)
            + len(self.history)
        )

    def add_twin(self, row: TwinRow) -> None:
        self.twins[row.device, row.property] = row

    def merge(self, other: WriteBatch) -> None:
        for device, body in other.devices.items():
            if body is None:
                self.twins = {k: v for k, v in self.twins.items() if k[0] != device}
                self.outbox = {k: v for k, v in self.outbox.items() if k[0] != device}
                self.writes = {k: v for k, v in self.writes.items() if k[0] != device}
                self.states.pop(device, None)
            self.devices[device] = body
        self.models.update(other.models)
        self.twins.update(other.twins)
        self.states.update(other.states)
        self.outbox.update(other.outbox)
        self.outbox_sent.extend(other.outbox_sent)
        self.writes.update(other.writes)
        self.history.extend(other.history)

    def device_ids(self) -> set[str]:
        return (
            {key[0] for key in self.twins}
            | {key[0] for key in self.outbox}
            | {key[0] for key in self.writes}
            | set(self.states)
            | set(self.devices)
        )


# A twin row as sqlite returns it, in TwinRow's column order (no wrapping: 100k rows at start).
StoredTwin = tuple[str, str, str | None, int, int, str | None, int, int]


@dataclass(slots=True)
class Snapshot:
    """Everything the store holds, as loaded at start."""

    models: dict[str, bytes]
    devices: dict[str, StoredDevice]
    twins: list[StoredTwin]
    writes: list[WriteRow] = field(default_factory=list)
