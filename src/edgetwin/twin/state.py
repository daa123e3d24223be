"""The in-memory twin of one device: a row per property, its delta and its documents."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from edgetwin.twin.values import PropertyRule
from edgetwin.wire.resources import Device, DeviceModel


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
        return replace(self)

    def sides(self) -> dict[str, Any]:
        """The ``{expected, actual}`` form KubeEdge uses in results and documents."""
        out: dict[str, Any] = {}
        if self.desired is not None:
            out["expected"] = {
                "value": self.desired,
                "metadata": {"timestamp": self.desired_ts},
            }
        if self.reported is not None:
            out["actual"] = {
                "value": self.reported,
                "metadata": {"timestamp": self.reported_ts},
            }
        return out


@dataclass(slots=True)
class DeviceTwin:
    """A device as the twin holds it: its resource, model rules, property twins and state."""

    device: Device
    model: DeviceModel | None = None
    rules: dict[str, PropertyRule] = field(default_factory=dict)
    twins: dict[str, PropertyTwin] = field(default_factory=dict)
    state: str = "unknown"
    last_online: int | None = None

    @property
    def id(self) -> str:
        return self.device.id

    def delta(self) -> dict[str, str]:
        """The properties whose desired value is set and differs from the reported one."""
        out: dict[str, str] = {}
        for name, twin in self.twins.items():
            if twin.desired is not None and not self.rules[name].same(twin.desired, twin.reported):
                out[name] = twin.desired
        return out

    def twin_document(self) -> dict[str, Any]:
        """Every property as ``{expected, actual, optional, metadata: {type}}``."""
        return {
            name: {
                **twin.sides(),
                "optional": False,
                "metadata": {"type": self.rules[name].type.lower()},
            }
            for name, twin in self.twins.items()
        }
