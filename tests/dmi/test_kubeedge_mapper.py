"""A KubeEdge mapper, built on KubeEdge's own mapper-framework, drives a Modbus device through
the node over the Device Management Interface: registration, devices and models, reports,
states, desired values; on both brokers, across a node restart."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edgetwin.config import Settings
from edgetwin.node import Node
from tests.dmi.kubeedge_mapper import (
    Record,
    kubeedge_mapper,
    socket_folder,
    thermostat,
    thermostat_model,
    with_dmi,
)
from tests.mappers.modbus_support import HOLDING, INPUT, Slaves, tcp_slaves
from tests.mappers.watch import DeviceWatch
from tests.metrics import http, samples
from tests.support import free_port, unique, until


@pytest.fixture
def sockets() -> Iterator[Path]:
    with socket_folder() as folder:
        yield folder


@pytest.fixture
async def slaves() -> AsyncIterator[tuple[Slaves, int]]:
    port = free_port()
    async with tcp_slaves(port) as running:
        await running.set(INPUT, 0, [215])  # 21.5 °C
        await running.set(HOLDING, 0, [200])  # 20.0 °C
        yield running, port


@pytest.fixture
def record(sockets: Path) -> Record:
    return Record(sockets / "calls.jsonl")


@pytest.fixture
def dmi_settings(node_settings: Settings, sockets: Path) -> Settings:
    return with_dmi(node_settings, sockets)


async def _apply(node: Node, port: int) -> str:
    model, name = unique("model"), unique("thermostat")
    errors = await node.service.apply([thermostat_model(model), thermostat(name, model, port)])
    assert errors == []
    return f"default/{name}"


async def _drive(node: Node, device: str, slaves: Slaves) -> None:
    """Readings reach the twin; a desired value set on the twin reaches the register."""
    async with DeviceWatch(node.broker_port, device) as watch:
        await watch.until_reported(current="21.5", target="20.0")
        await watch.until_state("online")
        watch.set(target="25")
        await until(lambda: _register(slaves), "target written to holding register 0")
        await watch.until_reported(target="25.0")


async def _register(slaves: Slaves) -> bool:
    return await slaves.get(HOLDING, 0) == [250]


async def test_a_device_applied_after_the_mapper_registered(
    dmi_settings: Settings, sockets: Path, slaves: tuple[Slaves, int]
) -> None:
    running, port = slaves
    async with Node(dmi_settings) as node, kubeedge_mapper(sockets, dmi_settings.dmi.socket):
        device = await _apply(node, port)  # CreateDeviceModel, RegisterDevice
        await _drive(node, device, running)
        assert node.dmi is not None
        assert set(node.dmi.mappers["modbus"].devices) == {device}
        assert "modbus" in node.mappers
        await node.service.remove([device])  # RemoveDevice, RemoveDeviceModel
        await until(lambda: not node.dmi.mappers["modbus"].devices, "device gone")  # type: ignore[union-attr]


async def test_a_device_the_node_had_before_the_mapper_came(
    dmi_settings: Settings, sockets: Path, slaves: tuple[Slaves, int]
) -> None:
    running, port = slaves
    async with Node(dmi_settings) as node:
        device = await _apply(node, port)
        async with kubeedge_mapper(sockets, dmi_settings.dmi.socket):  # in its registration's list
            await _drive(node, device, running)


async def test_a_restarted_node_calls_the_mapper_where_it_registered(
    dmi_settings: Settings, sockets: Path, slaves: tuple[Slaves, int]
) -> None:
    """mapper-framework registers once, when it starts; the node remembers where it is."""
    running, port = slaves
    async with contextlib.AsyncExitStack() as mapper:
        async with Node(dmi_settings) as node:
            await mapper.enter_async_context(kubeedge_mapper(sockets, dmi_settings.dmi.socket))
            device = await _apply(node, port)
            async with DeviceWatch(node.broker_port, device) as watch:
                await watch.until_reported(current="21.5")
        async with Node(dmi_settings) as node:  # the mapper runs on, registered with the first
            assert node.dmi is not None
            assert "modbus" in node.dmi.mappers
            await _drive(node, device, running)


async def _written(slaves: Slaves, raw: int) -> None:
    await until(lambda: _holds(slaves, raw), f"holding register 0 = {raw}")


async def _holds(slaves: Slaves, raw: int) -> bool:
    return await slaves.get(HOLDING, 0) == [raw]


async def _set(node: Node, device: str, slaves: Slaves, target: str, raw: int) -> None:
    """A new desired value through the twin: the mapper writes it to the register, and its
    report of it is in the twin (so no report is on its way when the test goes on)."""
    async with DeviceWatch(node.broker_port, device) as watch:
        watch.set(target=target)
        await _written(slaves, raw)
        await watch.until_reported(target=f"{raw / 10:.1f}")


async def test_the_first_answer_holds_the_device_whole_and_nothing_follows(
    dmi_settings: Settings, sockets: Path, slaves: tuple[Slaves, int], record: Record
) -> None:
    """As edgecore answers: the registration lists the device with its desired value, and
    no RegisterDevice or UpdateDevice repeats it; the next call is the next change."""
    running, port = slaves
    async with Node(dmi_settings) as node:
        model, name = unique("model"), unique("thermostat")
        errors = await node.service.apply(
            [thermostat_model(model), thermostat(name, model, port, target="22.5")]
        )
        assert errors == []
        device = f"default/{name}"
        async with kubeedge_mapper(sockets, dmi_settings.dmi.socket, record=record):
            await _written(running, 225)  # written by the mapper from its registration
            await _set(node, device, running, "24", 240)
            assert node.dmi is not None
            calls = node.dmi.mappers["modbus"].handover.results
    first, *rest = record.calls()
    assert first["method"] == "MapperRegister"
    assert first["result"] == "ok"
    assert first["devices"] == {device: {"target": "22.5", "current": ""}}
    assert first["models"] == [f"default/{model}"]
    assert [(c["method"], c["desired"]) for c in rest] == [
        ("UpdateDevice", {"target": "24", "current": ""})
    ]
    assert calls == {("UpdateDevice", "ok"): 1}


async def test_a_device_applied_later_is_registered_once_with_its_desired_value(
    dmi_settings: Settings, sockets: Path, slaves: tuple[Slaves, int], record: Record
) -> None:
    running, port = slaves
    async with (
        Node(dmi_settings) as node,
        kubeedge_mapper(sockets, dmi_settings.dmi.socket, record=record),
    ):
        model, name = unique("model"), unique("thermostat")
        errors = await node.service.apply(
            [thermostat_model(model), thermostat(name, model, port, target="23")]
        )
        assert errors == []
        await _written(running, 230)
        await _set(node, f"default/{name}", running, "21", 210)
    assert [(c["method"], c.get("desired")) for c in record.calls()] == [
        ("MapperRegister", None),
        ("CreateDeviceModel", None),
        ("RegisterDevice", {"target": "23", "current": ""}),
        ("UpdateDevice", {"target": "21", "current": ""}),
    ]


async def test_after_a_node_restart_the_mapper_is_sent_only_what_changed(
    dmi_settings: Settings, sockets: Path, slaves: tuple[Slaves, int], record: Record
) -> None:
    """mapper-framework registers once and ignores a RegisterDevice for a device it has:
    the restarted node knows what the mapper holds and sends it nothing again."""
    running, port = slaves
    async with contextlib.AsyncExitStack() as mapper:
        async with Node(dmi_settings) as node:
            device = await _apply(node, port)
            await mapper.enter_async_context(
                kubeedge_mapper(sockets, dmi_settings.dmi.socket, record=record)
            )
            await _written(running, 200)
        before = len(record.calls())
        async with Node(dmi_settings) as node:
            await _set(node, device, running, "26", 260)
        after = record.calls()[before:]
    assert [(c["method"], c["desired"]) for c in after] == [
        ("UpdateDevice", {"target": "26", "current": ""})
    ]


async def test_a_mapper_that_comes_back_is_given_the_device_whole_again(
    dmi_settings: Settings, sockets: Path, slaves: tuple[Slaves, int], record: Record
) -> None:
    """The mapper dies; a desired value set meanwhile waits for it; when it registers
    again its answer holds the device with that value, and nothing is sent twice."""
    running, port = slaves
    async with Node(dmi_settings) as node:
        device = await _apply(node, port)
        async with kubeedge_mapper(sockets, dmi_settings.dmi.socket):
            await _written(running, 200)
        async with DeviceWatch(node.broker_port, device) as watch:
            watch.set(target="27")
            assert node.dmi is not None
            handover = node.dmi.mappers["modbus"].handover
            await until(lambda: handover.results["UpdateDevice", "unavailable"] > 0, "retried")
        async with kubeedge_mapper(sockets, dmi_settings.dmi.socket, record=record):
            await _written(running, 270)
            await _set(node, device, running, "28", 280)
    first, *rest = record.calls()
    assert first["devices"] == {device: {"target": "27", "current": ""}}
    assert [(c["method"], c["desired"]) for c in rest] == [
        ("UpdateDevice", {"target": "28", "current": ""})
    ]


async def test_a_device_the_mapper_refuses_is_counted_and_handed_over_again(
    dmi_settings: Settings,
    sockets: Path,
    slaves: tuple[Slaves, int],
    record: Record,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The strict mapper refuses a device with no desired value for its ReadWrite target:
    the refusal is counted and logged, retried with backoff, and the device is handed over
    whole once a desired value is set."""
    running, port = slaves
    async with (
        Node(dmi_settings) as node,
        kubeedge_mapper(sockets, dmi_settings.dmi.socket, record=record),
    ):
        model, name = unique("model"), unique("thermostat")
        device = f"default/{name}"
        errors = await node.service.apply(
            [thermostat_model(model), thermostat(name, model, port, target=None)]
        )
        assert errors == []
        assert node.dmi is not None
        handover = node.dmi.mappers["modbus"].handover
        await until(lambda: handover.results["RegisterDevice", "refused"] >= 2, "retried")
        async with DeviceWatch(node.broker_port, device) as watch:
            watch.set(target="19")
            await _written(running, 190)
            await watch.until_reported(target="19.0")
        assert node.health_port is not None
        metrics = samples((await http(node.health_port, "/metrics"))[1])
    assert "has no desired value" in caplog.text
    refused = (("method", "RegisterDevice"), ("protocol", "modbus"), ("result", "refused"))
    assert metrics["edgetwin_dmi_calls_total", refused] >= 2
    assert metrics["edgetwin_dmi_registrations_total", (("protocol", "modbus"),)] == 1
    register = (("code", "OK"), ("method", "MapperRegister"))
    assert metrics["edgetwin_dmi_requests_total", register] == 1
    assert metrics["edgetwin_dmi_devices_pending", (("protocol", "modbus"),)] == 0
    registers = [c for c in record.calls() if c["method"] == "RegisterDevice"]
    assert all("no desired value" in c["result"] for c in registers[:-1])
    assert registers[-1] == {
        "method": "RegisterDevice",
        "device": device,
        "desired": {"target": "19", "current": ""},
        "result": "ok",
    }
