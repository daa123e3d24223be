"""A KubeEdge mapper (DMI) as one more mapper of the node: the bridge between the twin's MQTT
API and a mapper's ``DeviceMapperService``.

Each registered protocol gets a :class:`DmiMapper` run by the ordinary
:class:`~edgetwin.mappers.runtime.MapperRuntime`, so a DMI mapper gets
exactly the devices of its protocol on this node from the retained specs,
and its reports reach the twin as every mapper's do (validation, SQLite,
status sync, metrics). What the runtime does for a device becomes calls, as
KubeEdge's edge makes them: a new device is ``CreateDeviceModel`` (or
``UpdateDeviceModel``) then ``RegisterDevice``; a changed spec or a desired
value is ``UpdateDevice`` with the device's desired values in its
properties (KubeEdge's path for desired values); a device that leaves is
``RemoveDevice``, and ``RemoveDeviceModel`` after its model's last device.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from edgetwin.mappers.dmi._api import dmi_v1beta1_api_pb2 as pb
from edgetwin.mappers.dmi.calls import MapperCallError, MapperCalls
from edgetwin.mappers.dmi.convert import device_message, model_message, model_properties
from edgetwin.mappers.plugin import DeviceDriver, DeviceSink, Mapper, PropertyError
from edgetwin.wire.spec import DeviceSpecMessage, PropertySpec

log = logging.getLogger(__name__)


class DmiDevice(DeviceDriver):
    """A device served by a DMI mapper: it reports and keeps its state itself."""

    polled = False
    self_reporting = True

    def __init__(self, mapper: DmiMapper, spec: DeviceSpecMessage, sink: DeviceSink) -> None:
        self.mapper = mapper
        self.spec = spec
        self.sink = sink
        self.desired: dict[str, str] = {}

    async def read(self, _properties: Sequence[PropertySpec]) -> dict[str, str | PropertyError]:
        return {}  # never called: the mapper reports

    async def write(self, prop: PropertySpec, value: str) -> None:
        before = self.desired.get(prop.name)
        self.desired[prop.name] = value
        request = pb.UpdateDeviceRequest(device=device_message(self.spec, self.desired))
        try:
            await self.mapper.calls.call("UpdateDevice", request, pb.UpdateDeviceResponse)
        except MapperCallError as exc:
            if before is None:
                self.desired.pop(prop.name, None)
            else:
                self.desired[prop.name] = before
            raise PropertyError(f"the mapper refused the update: {exc}") from exc

    def message(self) -> pb.Device:
        return device_message(self.spec, self.desired)


class DmiMapper(Mapper):
    """The node's side of one registered DMI mapper (one protocol)."""

    def __init__(self, protocol: str, calls: MapperCalls) -> None:
        self.protocol = protocol
        self.calls = calls
        self.devices: dict[str, DmiDevice] = {}
        self._told: set[str] = set()
        """Devices the mapper has been given (RegisterDevice, or its registration's list)."""
        self._models: dict[str, dict[str, pb.ModelProperty]] = {}
        """Each model (``namespace/name``) as the mapper has it: what its devices show."""

    async def open(self, spec: DeviceSpecMessage, sink: DeviceSink) -> DeviceDriver:
        device = DmiDevice(self, spec, sink)
        old = self.devices.get(spec.id)
        if old is not None:
            device.desired = old.desired
        self.devices[spec.id] = device
        self._tell_model(spec)
        if spec.id in self._told:
            request = pb.UpdateDeviceRequest(device=device.message())
            self.calls.send("UpdateDevice", request, pb.UpdateDeviceResponse)
        else:
            self._told.add(spec.id)
            register = pb.RegisterDeviceRequest(device=device.message())
            self.calls.send("RegisterDevice", register, pb.RegisterDeviceResponse)
        return device

    async def removed(self, device: str) -> None:
        gone = self.devices.pop(device, None)
        if gone is None:
            return
        self._told.discard(device)
        spec = gone.spec
        request = pb.RemoveDeviceRequest(deviceName=spec.name, deviceNamespace=spec.namespace)
        self.calls.send("RemoveDevice", request, pb.RemoveDeviceResponse)
        key = f"{spec.namespace}/{spec.model}"
        if not any(f"{d.spec.namespace}/{d.spec.model}" == key for d in self.devices.values()):
            self._models.pop(key, None)
            remove = pb.RemoveDeviceModelRequest(
                modelName=spec.model, modelNamespace=spec.namespace
            )
            self.calls.send("RemoveDeviceModel", remove, pb.RemoveDeviceModelResponse)

    async def stop(self) -> None:
        await self.calls.close()

    def registration(self) -> pb.MapperRegisterResponse:
        """What the mapper gets when it registers: every device of its protocol and the models,
        desired values included. It holds them all after this, so nothing is sent again."""
        self._told = set(self.devices)
        models = []
        for key, properties in sorted(self._models.items()):
            namespace, name = key.split("/", 1)
            models.append(model_message(namespace, name, properties))
        devices = [self.devices[d].message() for d in sorted(self.devices)]
        return pb.MapperRegisterResponse(modelList=models, deviceList=devices)

    def _tell_model(self, spec: DeviceSpecMessage) -> None:
        key = f"{spec.namespace}/{spec.model}"
        known = self._models.get(key)
        properties = {**(known or {}), **model_properties(spec)}
        if known == properties:
            return
        self._models[key] = properties
        model = model_message(spec.namespace, spec.model, properties)
        if known is None:
            request = pb.CreateDeviceModelRequest(model=model)
            self.calls.send("CreateDeviceModel", request, pb.CreateDeviceModelResponse)
        else:
            update = pb.UpdateDeviceModelRequest(model=model)
            self.calls.send("UpdateDeviceModel", update, pb.UpdateDeviceModelResponse)

    def reported(self, device: str, values: Mapping[str, str]) -> bool:
        """Readings of one of this mapper's devices; False if it has no such device."""
        served = self.devices.get(device)
        if served is None:
            return False
        served.sink.push(values)
        return True
