"""A mapper in a package of its own: protocol ``loopback``, devices that hold their values.

Each property reads back the last value written to it, or its visitor's
``initial`` value; a property with ``visitors.configData.counts: true``
goes up by one on every read. It talks to edgetwin only through the public
plugin interface, :mod:`edgetwin.mappers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from edgetwin.mappers import DeviceConfigError, DeviceDriver, DeviceSink, Mapper, PropertyError
from edgetwin.wire.spec import DeviceSpecMessage, PropertySpec


class LoopbackMapper(Mapper):
    protocol: ClassVar[str] = "loopback"

    async def open(self, spec: DeviceSpecMessage, sink: DeviceSink) -> DeviceDriver:
        del sink  # polled
        return LoopbackDevice(spec)


class LoopbackDevice(DeviceDriver):
    def __init__(self, spec: DeviceSpecMessage) -> None:
        self.values: dict[str, str] = {}
        self.counting: set[str] = set()
        for prop in spec.properties:
            initial = prop.visitors.get("initial", "0")
            if not isinstance(initial, str):
                raise DeviceConfigError(
                    f"property {prop.name}: visitors.configData.initial: a string"
                )
            self.values[prop.name] = initial
            if prop.visitors.get("counts") is True:
                self.counting.add(prop.name)

    async def read(self, properties: Sequence[PropertySpec]) -> dict[str, str | PropertyError]:
        out: dict[str, str | PropertyError] = {}
        for prop in properties:
            if prop.name in self.counting:
                self.values[prop.name] = str(int(self.values[prop.name]) + 1)
            out[prop.name] = self.values[prop.name]
        return out

    async def write(self, prop: PropertySpec, value: str) -> None:
        self.values[prop.name] = value
