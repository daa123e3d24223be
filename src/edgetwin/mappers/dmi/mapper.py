"""A KubeEdge mapper (DMI) as one more mapper of the node: the bridge between the twin's MQTT
API and a mapper's ``DeviceMapperService``.

Each registered protocol gets a :class:`DmiMapper` run by the ordinary
:class:`~edgetwin.mappers.runtime.MapperRuntime`, so its reports reach the
twin as every mapper's do (validation, SQLite, status sync, metrics), and
the runtime tells it when a device of its protocol arrives, changes, leaves
or gets a new desired value. What the mapper is given is each device whole,
as edgecore converts it: the merged spec and every property's desired value
with its metadata, which the node's :class:`DeviceBook` (the twin) supplies,
so a device never reaches a mapper with an empty desired value. The
:class:`~.handover.Handover` turns that into calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from edgetwin.mappers.dmi._api import dmi_v1beta1_api_pb2 as pb
from edgetwin.mappers.dmi.calls import MapperCallError, MapperCalls
from edgetwin.mappers.dmi.convert import device_message, model_message, model_properties
from edgetwin.mappers.dmi.handover import Handover, Held
from edgetwin.mappers.plugin import DeviceDriver, DeviceSink, Mapper, PropertyError
from edgetwin.wire.spec import Desired, DeviceSpecMessage, PropertySpec

log = logging.getLogger(__name__)


class DeviceBook(Protocol):
    """What the node has for a protocol's mappers (edgecore's device cache); the twin's
    catalog is one."""

    def device_specs(self, protocol: str) -> list[DeviceSpecMessage]:
        """The merged specs of this node's devices of ``protocol``."""
        ...

    def desired_values(self, device_id: str) -> dict[str, Desired]:
        """The desired values the twin has for a device, by property."""
        ...


class DmiDevice(DeviceDriver):
    """A device served by a DMI mapper: it reports and keeps its state itself."""

    polled = False
    self_reporting = True

    def __init__(self, mapper: DmiMapper, device_id: str, sink: DeviceSink) -> None:
        self.mapper = mapper
        self.id = device_id
        self.sink = sink

    async def read(self, _properties: Sequence[PropertySpec]) -> dict[str, str | PropertyError]:
        return {}  # never called: the mapper reports

    async def write(self, prop: PropertySpec, value: str) -> None:
        """A desired value reaches the mapper in the whole device (UpdateDevice), as on
        KubeEdge's edge; nothing is sent if the mapper was given it already."""
        try:
            await self.mapper.desire(self.id, prop.name, value)
        except MapperCallError as exc:
            raise PropertyError(f"the mapper refused the update: {exc}") from exc


class DmiMapper(Mapper):
    """The node's side of one registered DMI mapper (one protocol)."""

    def __init__(
        self,
        protocol: str,
        calls: MapperCalls,
        book: DeviceBook,
        held: Held,
        *,
        max_delay: float,
        on_held: Callable[[], None],
    ) -> None:
        self.protocol = protocol
        self.book = book
        self.handover = Handover(calls, held, max_delay=max_delay, on_held=on_held)
        self.devices: dict[str, DmiDevice] = {}
        """The devices the runtime serves: where the mapper's reports go."""
        self._specs: dict[str, DeviceSpecMessage] = {}
        self._desired: dict[str, dict[str, Desired]] = {}
        self._model_properties: dict[str, dict[str, pb.ModelProperty]] = {}
        self.refresh()

    @property
    def calls(self) -> MapperCalls:
        return self.handover.calls

    def refresh(self) -> None:
        """Take what the mapper should hold from the book: every device of the protocol."""
        self._specs = {spec.id: spec for spec in self.book.device_specs(self.protocol)}
        self._desired = {
            device_id: self.book.desired_values(device_id) for device_id in self._specs
        }
        self._model_properties = {}
        for spec in self._specs.values():
            key = _model_key(spec)
            self._model_properties[key] = {
                **self._model_properties.get(key, {}),
                **model_properties(spec),
            }
        self.handover.want(
            [device_message(spec, self._desired[i]) for i, spec in self._specs.items()],
            [self._model(key) for key in self._model_properties],
        )

    async def registration(self, *, with_data: bool) -> pb.MapperRegisterResponse:
        """What the mapper gets when it registers: every device of its protocol, whole,
        and their models; it holds them all after this, so nothing is sent again."""
        self.refresh()
        return await self.handover.registered(with_data=with_data)

    async def open(self, spec: DeviceSpecMessage, sink: DeviceSink) -> DeviceDriver:
        device = DmiDevice(self, spec.id, sink)
        self.devices[spec.id] = device
        if self._specs.get(spec.id) == spec:
            return device  # the mapper was given it already (its registration, a restart)
        self._specs[spec.id] = spec
        self._desired[spec.id] = self.book.desired_values(spec.id)
        key = _model_key(spec)
        known = self._model_properties.get(key, {})
        properties = {**known, **model_properties(spec)}
        if properties != known:
            self._model_properties[key] = properties
            self.handover.put_model(self._model(key))
        self.handover.put_device(device_message(spec, self._desired[spec.id]))
        return device

    async def desire(self, device_id: str, name: str, value: str) -> None:
        """A desired value for the mapper; returns once it holds it (MapperCallError if it
        refuses)."""
        spec = self._specs.get(device_id)
        if spec is None:
            return
        desired = dict(self._desired.get(device_id, {}))
        if name not in desired or desired[name].value != value:
            known = self.book.desired_values(device_id).get(name)
            desired[name] = known if known and known.value == value else Desired(value, {})
            self._desired[device_id] = desired
            self.handover.put_device(device_message(spec, desired))
        await self.handover.settled(device_id)

    async def removed(self, device: str) -> None:
        self.devices.pop(device, None)
        spec = self._specs.pop(device, None)
        self._desired.pop(device, None)
        self.handover.remove_device(device)
        if spec is None:
            return
        key = _model_key(spec)
        if not any(_model_key(s) == key for s in self._specs.values()):
            self._model_properties.pop(key, None)
            self.handover.remove_model(key)

    async def stop(self) -> None:
        await self.handover.close()

    def reported(self, device: str, values: Mapping[str, str]) -> bool:
        """Readings of one of this mapper's devices; False if it has no such device."""
        served = self.devices.get(device)
        if served is None:
            return False
        served.sink.push(values)
        return True

    def _model(self, key: str) -> pb.DeviceModel:
        namespace, name = key.split("/", 1)
        return model_message(namespace, name, self._model_properties[key])


def _model_key(spec: DeviceSpecMessage) -> str:
    return f"{spec.namespace}/{spec.model}"
