"""The Modbus mapper against a real pymodbus server, over TCP and over RTU on a socat pty pair.

The node runs on each broker (embedded amqtt and mosquitto); the test talks
to the twin with paho and looks at the device with its own Modbus client
(TCP) or at the server's registers (RTU, where the mapper is the one master).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.pdu import ModbusPDU

from edgetwin.mappers import MapperRuntime
from edgetwin.node import Node
from tests.mappers.modbus_support import (
    COILS,
    DISCRETE,
    HOLDING,
    INPUT,
    Slaves,
    modbus_device,
    modbus_mapper,
    modbus_model,
    pty_pair,
    rtu_slaves,
    tcp_slaves,
)
from tests.mappers.watch import DeviceWatch
from tests.support import free_port, unique


async def _apply(node: Node, protocol: dict[str, Any], **kwargs: Any) -> str:
    model, name = unique("model"), unique("dev")
    errors = await node.service.apply(
        [modbus_model(model), modbus_device(name, model, protocol, **kwargs)]
    )
    assert errors == []
    return f"default/{name}"


@contextlib.asynccontextmanager
async def slaves_on(transport: str, tmp_path: Path) -> AsyncIterator[tuple[Slaves, dict[str, Any]]]:
    if transport == "tcp":
        port = free_port()
        async with tcp_slaves(port) as slaves:
            yield slaves, {"ip": "127.0.0.1", "port": port, "slaveID": 1}
    else:
        with pty_pair(tmp_path) as (device_end, mapper_end):
            async with rtu_slaves(device_end) as slaves:
                yield slaves, {"serialPort": mapper_end, "baudRate": 115200, "slaveID": 1}


@pytest.fixture(params=["tcp", "rtu"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_desired_values_reach_the_registers(
    node: Node, transport: str, tmp_path: Path
) -> None:
    async with slaves_on(transport, tmp_path) as (slaves, protocol), modbus_mapper(node):
        device = await _apply(node, protocol)
        async with DeviceWatch(node.broker_port, device) as watch:
            await watch.until_state("online")
            watch.set(setpoint="22.5", ratio="0.75", label="hi°", relay="true")
            await watch.until_reported(setpoint="22.5", ratio="0.75", label="hi°", relay="true")

        assert await slaves.get(HOLDING, 0) == [225]
        words = await slaves.get(HOLDING, 1, 2)
        assert struct.unpack(">f", struct.pack(">HH", words[1], words[0]))[0] == 0.75
        assert await slaves.get(HOLDING, 4, 4) == [0x6869, 0xC2B0, 0, 0]
        assert (await slaves.get(COILS, 0))[0] is True
        if slaves.client is not None:  # the same, through a Modbus client of the test's own
            response = await slaves.client.read_holding_registers(0, count=8, device_id=1)
            assert response.registers[0] == 225
            assert response.registers[4:6] == [0x6869, 0xC2B0]
            assert (await slaves.client.read_coils(0, count=1, device_id=1)).bits[0] is True

        twin = await _twin(node, device)
        assert twin["setpoint"]["actual"]["value"] == "22.5"
        assert twin["label"]["actual"]["value"] == "hi°"


async def test_register_changes_reach_the_twin(node: Node, transport: str, tmp_path: Path) -> None:
    async with slaves_on(transport, tmp_path) as (slaves, protocol), modbus_mapper(node):
        device = await _apply(node, protocol)
        async with DeviceWatch(node.broker_port, device) as watch:
            await watch.until_reported(counter="0", alarm="false", setpoint="0")
            await slaves.set(INPUT, 2, [0x0001, 0xE240])  # 123456 as a 32-bit unsigned
            await slaves.set(DISCRETE, 0, [True])
            if slaves.client is not None:
                await slaves.client.write_register(0, 0xFF9C, device_id=1)  # -100: -10.0 degrees
            else:
                await slaves.set(HOLDING, 0, [0xFF9C])
            await watch.until_reported(counter="123456", alarm="true", setpoint="-10")
        twin = await _twin(node, device)
        assert twin["counter"]["actual"]["value"] == "123456"
        assert twin["alarm"]["actual"]["value"] == "true"
        assert twin["setpoint"]["actual"]["value"] == "-10"


async def test_unreachable_device_goes_offline_and_gets_its_pending_value_when_back(
    node: Node,
) -> None:
    port = free_port()
    protocol = {"ip": "127.0.0.1", "port": port, "slaveID": 1}
    async with modbus_mapper(node):
        async with tcp_slaves(port):
            device = await _apply(node, protocol)
            watch = await DeviceWatch(node.broker_port, device).__aenter__()
            await watch.until_state("online")
        try:
            await watch.until_state("offline")
            watch.set(setpoint="30")
            result = await watch.until_message("twin/update/result")
            assert "code" not in result  # the twin takes it; the device gets it when back
            assert (await _twin_state(node, device)) == "offline"

            async with tcp_slaves(port) as slaves:
                await watch.until_state("online")
                await watch.until_reported(setpoint="30")
                assert await slaves.get(HOLDING, 0) == [300]
            assert await _twin_state(node, device) == "online"
        finally:
            await watch.__aexit__(None, None, None)


async def test_bad_visitor_config_is_an_error_for_that_device_only(node: Node) -> None:
    port = free_port()
    protocol = {"ip": "127.0.0.1", "port": port, "slaveID": 1}
    async with tcp_slaves(port), modbus_mapper(node) as runtime:
        good = await _apply(node, protocol)
        bad_name = unique("bad")
        async with DeviceWatch(node.broker_port, f"default/{bad_name}") as bad_watch:
            model = unique("model")
            bad = modbus_device(
                bad_name, model, protocol, visitors={"setpoint": {"register": "Holding"}}
            )
            assert await node.service.apply([modbus_model(model), bad]) == []
            result = await bad_watch.until_message("spec/result")
            await bad_watch.until_state("unhealthy")
        assert result["code"] == 400
        assert result["reason"].startswith("property setpoint: visitors.configData.register:")
        assert "'Holding' is not one of" in result["reason"]
        assert f"default/{bad_name}" in runtime.refused
        assert await _twin_state(node, f"default/{bad_name}") == "unhealthy"

        async with DeviceWatch(node.broker_port, good) as watch:  # the good one carries on
            watch.set(setpoint="12.5")
            await watch.until_reported(setpoint="12.5")


async def test_a_value_the_register_cannot_hold_gets_an_error_result(node: Node) -> None:
    async with slaves_on("tcp", Path()) as (slaves, protocol), modbus_mapper(node):
        device = await _apply(node, protocol)
        async with DeviceWatch(node.broker_port, device) as watch:
            await watch.until_state("online")
            watch.set(label="far too long for 8 bytes")
            error = await watch.until_message("twin/update/delta/result")
            assert error["code"] == 400
            assert error["property"] == "label"
            assert "do not fit in 4 register(s)" in error["reason"]
            watch.set(label="ok")  # and the device still takes what fits
            await watch.until_reported(label="ok")
        assert await slaves.get(HOLDING, 4, 1) == [0x6F6B]


@contextlib.asynccontextmanager
async def two_on_one_line(
    node: Node, tmp_path: Path, units: tuple[int, ...], ids: tuple[int, int]
) -> AsyncIterator[tuple[Slaves, MapperRuntime, DeviceWatch, DeviceWatch]]:
    """Slaves ``units`` on one pty line and two devices with ``ids`` on it, each watched."""
    with pty_pair(tmp_path) as (device_end, mapper_end):
        async with rtu_slaves(device_end, units=units) as slaves, modbus_mapper(node) as runtime:
            line = {"serialPort": mapper_end, "baudRate": 115200}
            first = await _apply(node, {**line, "slaveID": ids[0]})
            second = await _apply(node, {**line, "slaveID": ids[1]})
            async with (
                DeviceWatch(node.broker_port, first) as one,
                DeviceWatch(node.broker_port, second) as two,
            ):
                yield slaves, runtime, one, two


async def test_slaves_on_one_serial_line_share_it(node: Node, tmp_path: Path) -> None:
    async with two_on_one_line(node, tmp_path, (1, 2), (1, 2)) as (slaves, runtime, one, two):
        one.set(setpoint="11")
        two.set(setpoint="22")
        await one.until_reported(setpoint="11")
        await two.until_reported(setpoint="22")
        assert len(runtime.mapper.channels) == 1  # type: ignore[attr-defined]
        assert await slaves.get(HOLDING, 0, unit=1) == [110]
        assert await slaves.get(HOLDING, 0, unit=2) == [220]


async def _twin(node: Node, device: str) -> dict[str, Any]:
    return node.engine.devices[device].twin_document()


async def _twin_state(node: Node, device: str) -> str:
    return node.engine.devices[device].state


async def test_a_silent_slave_is_offline_while_its_line_mate_works(
    node: Node, tmp_path: Path
) -> None:
    async with two_on_one_line(node, tmp_path, (1,), (1, 9)) as (slaves, _, here, gone):
        await gone.until_state("offline")
        here.set(setpoint="7.5")
        await here.until_reported(setpoint="7.5")
        assert "offline" not in here.states
        assert await slaves.get(HOLDING, 0) == [75]
        assert await _twin_state(node, gone.device) == "offline"


async def test_properties_are_polled_every_collect_cycle(node: Node) -> None:
    reads: dict[int, int] = {}
    enough = asyncio.Event()

    def count(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending and pdu.function_code == 3:  # holding registers, as asked of the server
            reads[pdu.address] = reads.get(pdu.address, 0) + 1
            if reads.get(0, 0) >= 20:
                enough.set()
        return pdu

    port = free_port()
    async with tcp_slaves(port, trace_pdu=count), modbus_mapper(node):
        slow = dict.fromkeys(("ratio", "label", "counter", "relay", "alarm"), (500, 500))
        await _apply(node, {"ip": "127.0.0.1", "port": port}, cycles=slow)
        await asyncio.wait_for(enough.wait(), 15)  # setpoint at 0, every 100 ms
        fast, label = reads[0], reads.get(4, 0)
    # 20 reads of the 100 ms property take ~2 s: the 500 ms one is read ~4 times.
    assert 2 <= label <= 7, reads
    assert fast >= 2.5 * label, reads


async def test_reports_come_at_most_every_report_cycle(node: Node) -> None:
    port = free_port()
    async with tcp_slaves(port) as slaves, modbus_mapper(node):
        device = await _apply(
            node, {"ip": "127.0.0.1", "port": port}, cycles={"counter": (50, 500)}
        )
        async with DeviceWatch(node.broker_port, device) as watch:
            await watch.until_reported(counter="0")
            for value in range(1, 31):  # the device's counter changes every 50 ms for 1.5 s
                await slaves.set(INPUT, 2, [0, value])
                await asyncio.sleep(0.05)
            await watch.until_reported(counter="30")  # the last value still arrives
        times = watch.report_times["counter"]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 3
        assert min(gaps) >= 490, gaps  # ms, by the mapper's own timestamps
