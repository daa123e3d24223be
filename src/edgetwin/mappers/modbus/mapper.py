"""The Modbus mapper: devices on Modbus TCP and RTU, one channel per connection."""

from __future__ import annotations

from collections.abc import Sequence

from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadDiscreteInputsRequest,
    WriteSingleCoilRequest,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from edgetwin.config import DEFAULTS
from edgetwin.mappers.modbus.channel import WRITE, Channel, Endpoint, slave_id
from edgetwin.mappers.modbus.plan import ReadRange, plan_reads
from edgetwin.mappers.modbus.visitor import Register, Visitor
from edgetwin.mappers.plugin import (
    DeviceConfigError,
    DeviceDriver,
    DeviceSink,
    Mapper,
    PropertyError,
)
from edgetwin.wire.spec import DeviceSpecMessage, PropertySpec

_READ_REQUESTS: dict[Register, type[ModbusPDU]] = {
    Register.COIL: ReadCoilsRequest,
    Register.DISCRETE_INPUT: ReadDiscreteInputsRequest,
    Register.HOLDING: ReadHoldingRegistersRequest,
    Register.INPUT: ReadInputRegistersRequest,
}


class ModbusMapper(Mapper):
    """``modbus``: KubeEdge's Modbus protocol and visitor config."""

    protocol = "modbus"

    def __init__(
        self,
        *,
        coalesce: bool = True,
        timeout: float = 1.0,
        retries: int = 1,
        reconnect_max_delay: float = DEFAULTS.broker.reconnect_max_delay,
    ) -> None:
        self.coalesce = coalesce
        self.timeout = timeout
        self.retries = retries
        self.reconnect_max_delay = reconnect_max_delay
        self.channels: dict[Endpoint, Channel] = {}

    async def open(self, spec: DeviceSpecMessage, sink: DeviceSink) -> DeviceDriver:
        del sink  # Modbus devices are polled
        endpoint = Endpoint.parse(spec.protocol_config)
        unit = slave_id(spec.protocol_config)
        visitors: dict[str, Visitor] = {}
        for prop in spec.properties:
            try:
                visitors[prop.name] = Visitor.parse(prop.visitors, prop.type)
            except DeviceConfigError as exc:
                raise DeviceConfigError(
                    f"property {prop.name}: visitors.configData.{exc}"
                ) from None
        if endpoint.serial_port is not None:
            self._check_line(endpoint)
        channel = self.channels.get(endpoint)
        if channel is None:
            channel = Channel(
                endpoint,
                timeout=self.timeout,
                retries=self.retries,
                reconnect_max_delay=self.reconnect_max_delay,
            )
            self.channels[endpoint] = channel
        channel.users += 1
        return ModbusDevice(self, channel, unit, visitors)

    def _check_line(self, endpoint: Endpoint) -> None:
        """Devices on one serial line must agree on its settings."""
        for other in self.channels:
            if other.serial_port == endpoint.serial_port and other != endpoint:
                raise DeviceConfigError(
                    f"protocol: {endpoint.serial_port} is already open with other line settings "
                    f"({other.baudrate} baud, {other.bytesize}{other.parity}{other.stopbits})"
                )

    async def release(self, channel: Channel) -> None:
        channel.users -= 1
        if channel.users <= 0:
            self.channels.pop(channel.endpoint, None)
            await channel.close()

    async def stop(self) -> None:
        for channel in list(self.channels.values()):
            await channel.close()
        self.channels.clear()


class ModbusDevice(DeviceDriver):
    """One slave on a channel."""

    def __init__(
        self, mapper: ModbusMapper, channel: Channel, unit: int, visitors: dict[str, Visitor]
    ) -> None:
        self._mapper = mapper
        self.channel = channel
        self.unit = unit
        self.visitors = visitors
        self._plans: dict[tuple[str, ...], list[ReadRange]] = {}
        """The reads for each set of properties polled together: a device has few."""

    async def read(self, properties: Sequence[PropertySpec]) -> dict[str, str | PropertyError]:
        names = tuple(p.name for p in properties)
        plan = self._plans.get(names)
        if plan is None:
            due = [(n, self.visitors[n]) for n in names if n in self.visitors]
            plan = self._plans[names] = plan_reads(due, coalesce=self._mapper.coalesce)
        values: dict[str, str | PropertyError] = {}
        for read in plan:
            try:
                items = await self._read(read)
            except PropertyError as exc:
                for name, _ in read.members:
                    values[name] = exc
                continue
            for name, visitor in read.members:
                try:
                    values[name] = visitor.decode(read.items_of(visitor, items))
                except PropertyError as exc:
                    values[name] = exc
        return values

    async def _read(self, read: ReadRange) -> list[int] | list[bool]:
        request = _READ_REQUESTS[read.register](
            address=read.start, count=read.count, dev_id=self.unit
        )
        response = await self.channel.call(request)
        if read.register in (Register.COIL, Register.DISCRETE_INPUT):
            return list(response.bits[: read.count])
        return list(response.registers)

    async def write(self, prop: PropertySpec, value: str) -> None:
        visitor = self.visitors.get(prop.name)
        if visitor is None or not visitor.register.writable:
            where = visitor.register.value if visitor else "no register"
            raise PropertyError(f"{prop.name} is in a {where}, which cannot be written")
        encoded = visitor.encode(value)
        address, unit = visitor.offset, self.unit
        request: ModbusPDU
        if isinstance(encoded, bool):
            request = WriteSingleCoilRequest(address=address, bits=[encoded], dev_id=unit)
        elif len(encoded) == 1:
            request = WriteSingleRegisterRequest(address=address, registers=encoded, dev_id=unit)
        else:  # a multi-register value in one request, never torn in half
            request = WriteMultipleRegistersRequest(address=address, registers=encoded, dev_id=unit)
        await self.channel.call(request, priority=WRITE)

    async def close(self) -> None:
        await self._mapper.release(self.channel)
