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
    kubeedge_mapper,
    socket_folder,
    thermostat,
    thermostat_model,
    with_dmi,
)
from tests.mappers.modbus_support import HOLDING, INPUT, Slaves, tcp_slaves
from tests.mappers.watch import DeviceWatch
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
