"""A real pymodbus server for the mapper tests: over TCP, or RTU on a socat pseudo-terminal pair."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.base import ModbusBaseServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edgetwin.mappers import MapperRuntime
from edgetwin.mappers.modbus import ModbusMapper
from edgetwin.node import Node
from edgetwin.wire.resources import Device, DeviceModel
from tests.support import child_process, device_manifest, free_port, model_manifest

COILS, DISCRETE, HOLDING, INPUT = 1, 2, 3, 4  # function codes naming the tables


def slave(unit: int, read_only: tuple[int, ...] = ()) -> SimDevice:
    """A slave with 16 coils, 16 discrete inputs and 32 holding and input registers, all zero;
    the holding registers at ``read_only`` refuse writes (exception 2), as a device's can."""
    bits = [SimData(0, count=1, values=False, datatype=DataType.BITS)]
    holding = [
        SimData(a, count=1, values=0, datatype=DataType.REGISTERS, readonly=a in read_only)
        for a in range(32)
    ]
    return SimDevice(
        unit,
        simdata=(
            bits,
            [SimData(0, count=1, values=False, datatype=DataType.BITS)],
            holding,
            [SimData(0, count=32, values=0, datatype=DataType.REGISTERS)],
        ),
    )


class Slaves:
    """A running server and a client of the test's own to look at its registers."""

    def __init__(self, server: ModbusBaseServer, client: ModbusBaseClient | None = None) -> None:
        self.server = server
        self.client = client
        """TCP only: a serial line has one master, the mapper."""

    async def get(self, table: int, address: int, count: int = 1, unit: int = 1) -> list[Any]:
        return list(await self.server.async_getValues(unit, table, address, count))

    async def set(self, table: int, address: int, values: list[Any], unit: int = 1) -> None:
        await self.server.async_setValues(unit, table, address, values)


@contextlib.asynccontextmanager
async def tcp_slaves(
    port: int | None = None,
    units: tuple[int, ...] = (1,),
    trace_pdu: Callable[[bool, ModbusPDU], ModbusPDU] | None = None,
    read_only: tuple[int, ...] = (),
) -> AsyncIterator[Slaves]:
    port = port or free_port()
    server = ModbusTcpServer(
        [slave(u, read_only) for u in units], address=("127.0.0.1", port), trace_pdu=trace_pdu
    )
    await server.serve_forever(background=True)
    client = AsyncModbusTcpClient("127.0.0.1", port=port, reconnect_delay=0)
    await client.connect()
    try:
        yield Slaves(server, client)
    finally:
        client.close()
        await server.shutdown()  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def pty_pair(folder: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals from socat: (the device's end, the mapper's end)."""
    socat = shutil.which("socat")
    if socat is None:
        raise RuntimeError("socat is not installed: run scripts/test, which installs it")
    device_end, mapper_end = folder / "tty-device", folder / "tty-mapper"
    ends = [f"pty,raw,echo=0,link={device_end}", f"pty,raw,echo=0,link={mapper_end}"]
    ready = re.compile("starting data transfer loop")
    with child_process([socat, "-d", "-d", *ends], ready, clean_exit=False):
        yield str(device_end), str(mapper_end)


class _SilentForAbsentSlaves:
    """pymodbus 3.16's datastore raises KeyError for a slave id it does not have, which the
    server answers with an exception; NoSuchIdException makes it stay silent, as a bus does."""

    def __init__(self, core: Any) -> None:
        self.core = core

    def device_ids(self) -> list[int]:
        return list(self.core.device_ids())

    def _check(self, unit: int) -> None:
        if unit not in self.core.devices:
            raise NoSuchIdException(f"no slave {unit}")

    async def async_getValues(self, unit: int, *args: Any) -> Any:  # noqa: N802
        self._check(unit)
        return await self.core.async_getValues(unit, *args)

    async def async_setValues(self, unit: int, *args: Any) -> Any:  # noqa: N802
        self._check(unit)
        return await self.core.async_setValues(unit, *args)


@contextlib.asynccontextmanager
async def rtu_slaves(device_end: str, units: tuple[int, ...] = (1,)) -> AsyncIterator[Slaves]:
    """Slaves on a serial line; as on a real bus, no one answers for a slave id not there."""
    server = ModbusSerialServer(
        [slave(u) for u in units],
        port=device_end,
        baudrate=115200,
        ignore_missing_devices=True,
    )
    server.context = _SilentForAbsentSlaves(server.context)
    await server.serve_forever(background=True)
    try:
        yield Slaves(server)
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def modbus_mapper(node: Node) -> AsyncIterator[MapperRuntime]:
    """The node's Modbus mapper, quick to give up on a silent device."""
    mapper = ModbusMapper(timeout=0.3, retries=0, reconnect_max_delay=0.5)
    async with MapperRuntime(
        mapper, node.broker_address(), node=node.settings.node.name
    ) as runtime:
        yield runtime


def modbus_model(name: str) -> DeviceModel:
    """A model with one property of each register kind and several data types."""

    def prop(name: str, kind: str, mode: str, config: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "type": kind,
            "accessMode": mode,
            "visitors": {"protocolName": "modbus", "configData": config},
        }

    return model_manifest(
        name,
        "modbus",
        [
            prop(
                "setpoint",
                "FLOAT",
                "ReadWrite",
                {
                    "register": "HoldingRegister",
                    "offset": 0,
                    "scale": 0.1,
                    "dataType": "int",
                },
            ),
            prop(
                "ratio",
                "FLOAT",
                "ReadWrite",
                {
                    "register": "HoldingRegister",
                    "offset": 1,
                    "dataType": "float",
                    "isRegisterSwap": True,
                },
            ),
            prop(
                "label",
                "STRING",
                "ReadWrite",
                {
                    "register": "HoldingRegister",
                    "offset": 4,
                    "limit": 4,
                    "dataType": "string",
                },
            ),
            prop(
                "counter",
                "INT",
                "ReadOnly",
                {"register": "InputRegister", "offset": 2, "limit": 2, "dataType": "uint"},
            ),
            prop("relay", "BOOLEAN", "ReadWrite", {"register": "CoilRegister", "offset": 0}),
            prop(
                "alarm",
                "BOOLEAN",
                "ReadOnly",
                {"register": "DiscreteInputRegister", "offset": 0},
            ),
        ],
    )


def modbus_device(
    name: str,
    model: str,
    protocol: dict[str, Any],
    *,
    cycle_ms: int = 100,
    cycles: dict[str, tuple[int, int]] | None = None,
    visitors: dict[str, dict[str, Any]] | None = None,
) -> Device:
    """A device of :func:`modbus_model`; ``cycles`` gives some properties their own
    (collectCycle, reportCycle)."""
    cycles = cycles or {}
    properties = [
        {
            "name": p,
            "collectCycle": cycles.get(p, (cycle_ms, cycle_ms))[0],
            "reportCycle": cycles.get(p, (cycle_ms, cycle_ms))[1],
            **(
                {"visitors": {"protocolName": "modbus", "configData": visitors[p]}}
                if visitors and p in visitors
                else {}
            ),
        }
        for p in ("setpoint", "ratio", "label", "counter", "relay", "alarm")
    ]
    return device_manifest(name, model, "modbus", protocol, properties)
