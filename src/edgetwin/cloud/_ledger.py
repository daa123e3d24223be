"""What the cluster has yet to see of the twin, and the shape it sees it in.

The twin tells the ledger of each change (it is the twin's :class:`CloudView`);
a change to a property with ``reportToCloud``, or to the state of a device
that reports it, becomes an outbox row in the change's own batch. The
:class:`StatusReporter` sends them and clears what it sent.
"""

from __future__ import annotations

from typing import Any

import orjson

from edgetwin.twin import DeviceTwin
from edgetwin.twin.store import OutboxRow, WriteBatch, WriteRow


class CloudLedger:
    def __init__(self) -> None:
        self.scope: str | None = None
        """What the cloud sync follows, in words, once it runs."""
        self.pending: set[str] = set()
        """Devices with changes the cluster has not seen yet."""
        self.marked = 0
        """Changes marked for the cluster (each a device field), for the metrics."""

    def twin_changed(self, batch: WriteBatch, twin: DeviceTwin, name: str, now: int) -> None:
        if name in twin.record.to_cloud:
            self._mark(batch, twin.id, f"twin/{name}", twin_status(twin, name), now)

    def write_changed(self, batch: WriteBatch, twin: DeviceTwin, name: str, now: int) -> None:
        """A property's write moved: its observed desired metadata, and the summary of the
        device's writes (every property's, reportToCloud or not)."""
        self.twin_changed(batch, twin, name, now)
        self._mark(batch, twin.id, "writes", {"writes": writes_summary(twin)}, now)

    def state_changed(self, batch: WriteBatch, twin: DeviceTwin, now: int) -> None:
        if twin.record.state_to_cloud:
            self._mark(batch, twin.id, "state", twin.state_status(), now)

    def is_pending(self, device_id: str) -> bool:
        return device_id in self.pending

    def _mark(
        self, batch: WriteBatch, device_id: str, field: str, value: dict[str, Any], now: int
    ) -> None:
        self.pending.add(device_id)
        self.marked += 1
        batch.outbox[device_id, field] = OutboxRow(device_id, field, orjson.dumps(value), now)


def device_status(twin: DeviceTwin) -> dict[str, Any]:
    """The device's whole ``status`` as the cluster keeps it.

    Whole, because a merge patch replaces ``twins`` (a list) as one value.
    """
    props = twin.properties
    status: dict[str, Any] = {
        "twins": [
            twin_status(twin, name)
            for name in sorted(twin.record.to_cloud)
            if name in props and (props[name].reported is not None or name in twin.writes)
        ]
    }
    if twin.record.state_to_cloud:
        status |= twin.state_status()
    if twin.writes:
        status["extensions"] = {"writes": writes_summary(twin)}
    return status


def writes_summary(twin: DeviceTwin) -> str:
    """Each write's phase, ``property=phase`` in name order (``kubectl get devicestatus``)."""
    return ", ".join(f"{name}={row.phase}" for name, row in sorted(twin.writes.items()))


def twin_status(twin: DeviceTwin, name: str) -> dict[str, Any]:
    """One ``status.twins[]`` entry: reported and observed desired, metadata as strings."""
    prop = twin.properties[name]
    entry: dict[str, Any] = {"propertyName": name}
    kind = twin.rules[name].type.lower()
    if prop.reported is not None:
        metadata = {"timestamp": str(prop.reported_ts), "type": kind}
        if name in twin.out_of_range:
            metadata["outOfRange"] = twin.out_of_range[name]
        entry["reported"] = {"value": prop.reported, "metadata": metadata}
    if prop.desired is not None:
        metadata = {"timestamp": str(prop.desired_ts), "type": kind}
        write = twin.writes.get(name)
        if write is not None:
            metadata |= write_metadata(write)
        entry["observedDesired"] = {"value": prop.desired, "metadata": metadata}
    return entry


def write_metadata(write: WriteRow) -> dict[str, str]:
    """A write as observed desired metadata (strings, which is all KubeEdge's CRD keeps there):
    ``write`` (its phase), ``writeTime`` (ms), ``writeBy``, and ``writeReason`` if any."""
    out = {"write": write.phase, "writeTime": str(write.at_ms), "writeBy": write.by}
    if write.reason:
        out["writeReason"] = write.reason
    return out
