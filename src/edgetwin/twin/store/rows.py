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


class StateRow(NamedTuple):
    device: str
    state: str
    last_online: int | None


@dataclass(slots=True)
class WriteBatch:
    """Rows to write together; merging keeps the latest row per key.

    ``devices`` and ``models`` map an id to its JSON body, or to None to delete
    it (a deleted device takes its twin rows with it).
    """

    twins: dict[tuple[str, str], TwinRow] = field(default_factory=dict)
    states: dict[str, StateRow] = field(default_factory=dict)
    devices: dict[str, bytes | None] = field(default_factory=dict)
    models: dict[str, bytes | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.twins or self.states or self.devices or self.models)

    def __len__(self) -> int:
        return len(self.twins) + len(self.states) + len(self.devices) + len(self.models)

    def add_twin(self, row: TwinRow) -> None:
        self.twins[row.device, row.property] = row

    def merge(self, other: WriteBatch) -> None:
        for device, body in other.devices.items():
            if body is None:
                self.twins = {k: v for k, v in self.twins.items() if k[0] != device}
                self.states.pop(device, None)
            self.devices[device] = body
        self.models.update(other.models)
        self.twins.update(other.twins)
        self.states.update(other.states)

    def device_ids(self) -> set[str]:
        return {key[0] for key in self.twins} | set(self.states) | set(self.devices)


@dataclass(slots=True)
class Snapshot:
    """Everything the store holds, as loaded at start."""

    models: dict[str, bytes]
    devices: dict[str, tuple[bytes, str, int | None]]
    twins: list[TwinRow]
