"""The broker dies (SIGKILL) and comes back: the node and the mappers reconnect and
resubscribe, nothing confirmed is lost, and a desired value set meanwhile reaches the device.

Against mosquitto (killed and restarted on its port) with the node and a mapper in this
process; against the node's own mosquitto child, killed under the node, which starts it
again; and against each embedded broker by killing the whole node, with the mapper as a
process of its own (``edgetwin mapper modbus``).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from edgetwin.broker import MosquittoBroker
from edgetwin.config import load_settings
from edgetwin.mappers import MapperRuntime
from edgetwin.mappers.modbus import ModbusMapper
from edgetwin.mqtt import BrokerAddress
from edgetwin.node import Node
from edgetwin.wire.resources import Device
from tests.mappers.modbus_support import HOLDING, modbus_device, modbus_model, tcp_slaves
from tests.mappers.watch import DeviceWatch
from tests.support import (
    EDGETWIN,
    LineWatch,
    Mosquitto,
    NodeProcess,
    env_without_edgetwin,
    free_port,
    unique,
    write_manifests,
)


def _with_desired(device: Device, setpoint: str) -> Device:
    document = device.to_document()
    document["spec"]["properties"][0]["desired"] = {"value": setpoint}  # setpoint is first
    return Device.model_validate(document)


async def test_mosquitto_killed_and_restarted(tmp_path: Path) -> None:
    port = free_port()
    model, name = unique("model"), unique("dev")
    device = modbus_device(name, model, {"ip": "127.0.0.1", "port": port, "slaveID": 1})
    with Mosquitto(tmp_path) as broker:
        settings = load_settings(
            node={"name": unique("node"), "data_dir": str(tmp_path)},
            broker={"embedded": False, "port": broker.port, "reconnect_max_delay": 0.3},
        )
        mapper = ModbusMapper(timeout=0.3, retries=0, reconnect_max_delay=0.5)
        address = BrokerAddress(port=broker.port)
        async with (
            tcp_slaves(port) as slaves,
            Node(settings) as node,
            MapperRuntime(mapper, address, node=settings.node.name, reconnect_max_delay=0.3),
        ):
            assert await node.service.apply([modbus_model(model), device]) == []
            async with DeviceWatch(broker.port, f"default/{name}") as watch:
                watch.set(setpoint="20")
                await watch.until_reported(setpoint="20")  # confirmed: committed and answered

            broker.kill()
            # While the broker is away the cluster changes the desired value.
            assert await node.service.apply([_with_desired(device, "25")]) == []
            broker.start()

            async with DeviceWatch(broker.port, f"default/{name}") as watch:
                await watch.until_reported(setpoint="25")
            assert await slaves.get(HOLDING, 0) == [250]
            assert node.engine.devices[f"default/{name}"].properties["setpoint"].reported == "25"


async def test_the_nodes_mosquitto_killed_is_started_again(tmp_path: Path) -> None:
    port = free_port()
    model, name = unique("model"), unique("dev")
    device = modbus_device(name, model, {"ip": "127.0.0.1", "port": port, "slaveID": 1})
    settings = load_settings(
        node={"name": unique("node"), "data_dir": str(tmp_path)},
        broker={"engine": "mosquitto", "port": 0, "reconnect_max_delay": 0.3},
    )
    mapper = ModbusMapper(timeout=0.3, retries=0, reconnect_max_delay=0.5)
    async with tcp_slaves(port) as slaves, Node(settings) as node:
        assert isinstance(node.broker, MosquittoBroker)
        assert node.broker.pid is not None
        address = node.broker_address()
        async with MapperRuntime(mapper, address, node=settings.node.name, reconnect_max_delay=0.3):
            assert await node.service.apply([modbus_model(model), device]) == []
            async with DeviceWatch(node.broker_port, f"default/{name}") as watch:
                watch.set(setpoint="20")
                await watch.until_reported(setpoint="20")

            os.kill(node.broker.pid, signal.SIGKILL)
            assert await node.service.apply([_with_desired(device, "25")]) == []
            await asyncio.wait_for(node.broker.restarted.wait(), 20)

            async with DeviceWatch(node.broker_port, f"default/{name}") as watch:
                await watch.until_reported(setpoint="25")
            assert await slaves.get(HOLDING, 0) == [250]
        assert node.broker.restarts == 1


@pytest.mark.parametrize("engine", ["amqtt", "mosquitto"])
async def test_embedded_broker_restarted_with_its_node(tmp_path: Path, engine: str) -> None:
    port = free_port()
    model, name = unique("model"), unique("dev")
    device = modbus_device(name, model, {"ip": "127.0.0.1", "port": port, "slaveID": 1})
    manifests = write_manifests(tmp_path / "manifests", [device], modbus_model(model))
    node_name = unique("node")
    node_config = tmp_path / "node.yaml"
    node_config.write_text(yaml.safe_dump({"broker": {"engine": engine}}))
    node = NodeProcess(
        tmp_path / "data",
        node=node_name,
        manifests=manifests,
        extra=("--config", str(node_config)),
    )
    config = tmp_path / "mapper.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "node": {"name": node_name},
                "broker": {"port": node.port, "reconnect_max_delay": 0.3},
            }
        )
    )
    async with tcp_slaves(port) as slaves:
        with node:
            mapper = subprocess.Popen(
                [*EDGETWIN, "mapper", "modbus", "--config", str(config)],
                stderr=subprocess.PIPE,
                env=env_without_edgetwin(),
            )
            try:
                log = LineWatch(mapper)
                await asyncio.to_thread(
                    log.wait_for, re.compile(f"serving device default/{name}"), 20
                )
                async with DeviceWatch(node.port, f"default/{name}") as watch:
                    watch.set(setpoint="21")
                    await watch.until_reported(setpoint="21")
                node.kill()
                node.start()  # the same data and port
                async with DeviceWatch(node.port, f"default/{name}") as watch:
                    assert watch.reported.get("setpoint") in (None, "21")
                    await watch.until_reported(setpoint="21")  # kept across the kill
                    watch.set(setpoint="23")  # the mapper is back and subscribed
                    await watch.until_reported(setpoint="23")
                assert await slaves.get(HOLDING, 0) == [230]
            finally:
                mapper.terminate()
                assert mapper.wait(10) == 0
