"""The in-memory twin of one device: a row per property, its delta and its documents.

Names: a :class:`DeviceTwin` (``twin``) holds its Device as a :class:`DeviceRecord`
(``record``) and a :class:`PropertyTwin` (``prop``) per property; ``device``
names a Device resource, ``device_id`` its ``namespace/name``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from edgetwin.twin.store.rows import StateRow, TwinRow, WriteRow
from edgetwin.twin.values import Parsed, PropertyRule
from edgetwin.wire.resources import Device, DeviceModel


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What the twin keeps of a Device: its JSON, and the few fields every request reads.

    A parsed Device costs ~8 KB; the JSON ~1 KB. The full resource is parsed
    again only when its merged spec must be rebuilt (the device or its model
    changed).
    """

    id: str
    namespace: str
    name: str
    model_name: str | None
    model_key: str | None
    own_protocol: str | None
    node_name: str | None
    property_names: frozenset[str]
    desired: tuple[tuple[str, str], ...]
    write_timeouts: tuple[tuple[str, str], ...]
    """Properties' own write timeouts (``desired.metadata.writeTimeout``), as written."""
    to_cloud: frozenset[str]
    """Properties whose values go to the cluster (``reportToCloud``)."""
    state_to_cloud: bool
    body: bytes

    @classmethod
    def from_device(cls, device: Device) -> DeviceRecord:
        return cls.from_json(device.model_dump_json(by_alias=True, exclude_unset=True).encode())

    @classmethod
    def from_json(cls, body: bytes) -> DeviceRecord:
        """From a body the twin wrote (already validated), without parsing it into models."""
        data = orjson.loads(body)
        meta, spec = data["metadata"], data.get("spec") or {}
        namespace, name = meta.get("namespace") or "default", meta["name"]
        model_name = (spec.get("deviceModelRef") or {}).get("name")
        properties = spec.get("properties") or []
        return cls(
            id=f"{namespace}/{name}",
            namespace=namespace,
            name=name,
            model_name=model_name,
            model_key=f"{namespace}/{model_name}" if model_name else None,
            own_protocol=(spec.get("protocol") or {}).get("protocolName"),
            node_name=spec.get("nodeName"),
            property_names=frozenset(p["name"] for p in properties),
            desired=tuple(
                (p["name"], p["desired"]["value"])
                for p in properties
                if (p.get("desired") or {}).get("value")
            ),
            write_timeouts=tuple(
                (p["name"], timeout)
                for p in properties
                if (timeout := ((p.get("desired") or {}).get("metadata") or {}).get("writeTimeout"))
            ),
            to_cloud=frozenset(p["name"] for p in properties if p.get("reportToCloud")),
            state_to_cloud=(spec.get("stateReport") or {}).get("reportToCloud") is not False,
            body=body,
        )

    def device(self) -> Device:
        return Device.model_validate_json(self.body)

    def protocol_name(self, model: DeviceModel | None) -> str | None:
        """The device's protocol, else its model's."""
        return self.own_protocol or (model.spec.protocol if model else None)


@dataclass(slots=True)
class PropertyTwin:
    """Desired and reported value of one property; each side's version only grows."""

    desired: str | None = None
    desired_ts: int = 0
    desired_version: int = 0
    reported: str | None = None
    reported_ts: int = 0
    reported_version: int = 0

    def copy(self) -> PropertyTwin:
        return PropertyTwin(
            self.desired,
            self.desired_ts,
            self.desired_version,
            self.reported,
            self.reported_ts,
            self.reported_version,
        )

    def sides(
        self, *, desired: bool = True, reported: bool = True, versions: bool = False
    ) -> dict[str, Any]:
        """The ``{expected, actual}`` form KubeEdge uses in results and documents
        (the sides asked for that are set; with their versions for documents)."""
        out: dict[str, Any] = {}
        if desired and self.desired is not None:
            meta: dict[str, Any] = {"timestamp": self.desired_ts}
            out["expected"] = {"value": self.desired, "metadata": meta}
            if versions:
                out["expected"]["version"] = self.desired_version
        if reported and self.reported is not None:
            meta = {"timestamp": self.reported_ts}
            out["actual"] = {"value": self.reported, "metadata": meta}
            if versions:
                out["actual"]["version"] = self.reported_version
        return out


@dataclass(slots=True)
class DeviceTwin:
    """A device as the twin holds it: its resource, model rules, property twins and state."""

    record: DeviceRecord
    model: DeviceModel | None = None
    rules: dict[str, PropertyRule] = field(default_factory=dict)
    properties: dict[str, PropertyTwin] = field(default_factory=dict)
    state: str = "unknown"
    last_online: int | None = None
    out_of_range: dict[str, str] = field(default_factory=dict)
    """Properties whose reported value is outside the model's bounds, and why."""
    writes: dict[str, WriteRow] = field(default_factory=dict)
    """Where each desired value's write stands, by property (``twin/writes.py``)."""

    @property
    def id(self) -> str:
        return self.record.id

    def delta(self) -> dict[str, str]:
        """The properties whose desired value is set and differs from the reported one."""
        out: dict[str, str] = {}
        for name in self.properties:
            desired = self.pending(name)
            if desired is not None:
                out[name] = desired
        return out

    def pending(self, name: str) -> str | None:
        """The desired value of ``name`` if it is set and differs from the reported one."""
        prop = self.properties[name]
        if prop.desired is None or self.rules[name].same(prop.desired, prop.reported):
            return None
        return prop.desired

    def flag_range(self, name: str, reading: Parsed | None = None) -> str | None:
        """Check the reported value of ``name`` against its bounds and keep the answer;
        ``reading`` is that value already typed, if it is at hand."""
        rule = self.rules[name]
        reported = self.properties[name].reported
        if reading is None or reported is None:
            problem = rule.stored_range_problem(reported)
        else:
            problem = rule.range_problem(reading, reported)
        if problem is None:
            self.out_of_range.pop(name, None)
        else:
            self.out_of_range[name] = problem
        return problem

    def twin_document(self) -> dict[str, Any]:
        """Every property as ``{expected, actual, optional, metadata: {type}}``, and
        ``out_of_range`` (why) where the reported value is outside the model's bounds."""
        document: dict[str, Any] = {}
        for name, prop in self.properties.items():
            entry = {
                **prop.sides(),
                "optional": False,
                "metadata": {"type": self.rules[name].type.lower()},
            }
            if name in self.out_of_range:
                entry["out_of_range"] = self.out_of_range[name]
            document[name] = entry
        return document

    def row(self, name: str) -> TwinRow:
        """The store row of one property."""
        p = self.properties[name]
        return TwinRow(
            self.id,
            name,
            p.desired,
            p.desired_ts,
            p.desired_version,
            p.reported,
            p.reported_ts,
            p.reported_version,
        )

    def state_status(self) -> dict[str, Any]:
        """The device's state as KubeEdge writes it (``lastOnlineTime`` in RFC 3339)."""
        out: dict[str, Any] = {"state": self.state}
        if self.last_online is not None:
            when = datetime.fromtimestamp(self.last_online / 1000, UTC)
            out["lastOnlineTime"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        return out

    def state_row(self) -> StateRow:
        return StateRow(self.id, self.state, self.last_online)
