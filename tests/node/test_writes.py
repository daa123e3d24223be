"""Did my setting reach the device? Each write's lifecycle end to end, on both brokers: a real
Modbus server that takes the value, one that refuses it, an MQTT device that never reads it
back, and a device changed behind the node's back (drift), seen with ``edgetwin set --wait``,
``edgetwin get device``, ``edgetwin history`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson

from edgetwin.node import Node
from edgetwin.wire.resources import DeviceModel
from tests.mappers.modbus_support import (
    HOLDING,
    modbus_device,
    modbus_mapper,
    modbus_model,
    tcp_slaves,
)
from tests.mappers.test_mqtt_mapper import mqtt_mapper, sensor, sensor_model
from tests.mappers.watch import DeviceWatch
from tests.metrics import http, samples
from tests.support import Paho, run_cli, unique


async def _cli(node: Node, *args: str) -> tuple[int, str, str]:
    where = ("--broker", f"127.0.0.1:{node.broker_port}", "--node", node.settings.node.name)
    done = await asyncio.to_thread(run_cli, *args, *where)
    return done.returncode, done.stdout, done.stderr


async def _writes_metrics(node: Node) -> dict[str, float]:
    assert node.health_port is not None
    status, body = await http(node.health_port, "/metrics")
    assert status == 200
    return {
        dict(labels).get("result", name): value
        for (name, labels), value in samples(body).items()
        if name == "edgetwin_writes_total"
    }


async def _modbus_device(node: Node, port: int) -> str:
    model, name = unique("model"), unique("dev")
    protocol = {"ip": "127.0.0.1", "port": port, "slaveID": 1}
    errors = await node.service.apply([modbus_model(model), modbus_device(name, model, protocol)])
    assert errors == []
    return f"default/{name}"


async def test_set_wait_returns_once_the_device_has_the_value_and_drift_is_reapplied(
    node: Node,
) -> None:
    async with tcp_slaves() as slaves, modbus_mapper(node):
        device = await _modbus_device(node, slaves.server.comm_params.source_address[1])
        async with DeviceWatch(node.broker_port, device) as watch:
            await watch.until_state("online")
            code, out, err = await _cli(node, "set", device, "setpoint=21.5", "--wait")
            assert code == 0, err
            assert f"{device} setpoint: desired 21.5\n" in out
            assert re.search(rf"{device} setpoint: written \(\d+ ms\)", out), out
            assert await slaves.get(HOLDING, 0) == [215]

            await slaves.set(HOLDING, 0, [180])  # someone at the panel: 18.0
            await watch.until_reported(setpoint="18")
            await watch.until_reported(setpoint="21.5")  # the node applied it again
        assert await slaves.get(HOLDING, 0) == [215]
        write = node.engine.devices[device].writes["setpoint"]
        assert write.phase == "written"
        assert write.by.startswith("mqtt/cli:")
        assert node.engine.writes.drifts == 1

        code, out, err = await _cli(node, "history", device, "setpoint", "-o", "json")
        assert code == 0, err
        events = [(e["kind"], e["value"]) for e in orjson.loads(out)["events"]]
        assert events == [
            ("reported", "0"),  # the first poll
            ("desired", "21.5"),
            ("write", "pending"),
            ("write", "sent"),
            ("reported", "21.5"),
            ("write", "written"),
            ("reported", "18"),
            ("write", "drift"),
            ("write", "sent"),
            ("reported", "21.5"),
            ("write", "written"),
        ]
    assert (await _writes_metrics(node))["written"] == 2.0


async def test_a_write_the_modbus_device_refuses_fails_with_the_device_s_reason(
    node: Node,
) -> None:
    async with tcp_slaves(read_only=(0,)) as slaves, modbus_mapper(node):
        device = await _modbus_device(node, slaves.server.comm_params.source_address[1])
        async with DeviceWatch(node.broker_port, device) as watch:
            await watch.until_state("online")
            code, out, err = await _cli(node, "set", device, "setpoint=21.5", "--wait")
        assert code == 1
        assert f"{device} setpoint: desired 21.5\n" in out
        failed = node.engine.devices[device].writes["setpoint"]
        assert failed.phase == "failed"
        assert "exception" in failed.reason.lower(), failed.reason
        assert err == f"edgetwin: error: {device}: setpoint failed: {failed.reason}\n"
        assert await slaves.get(HOLDING, 0) == [0]

        code, table, err = await _cli(node, "get", "device", device)
        assert code == 0, err
        row = next(line for line in table.splitlines() if line.startswith("setpoint"))
        assert row.endswith(f"failed: {failed.reason}")
    assert (await _writes_metrics(node))["failed"] == 1.0


def _annotated(model: DeviceModel, annotations: dict[str, str]) -> DeviceModel:
    document: dict[str, Any] = model.to_document()
    document["metadata"]["annotations"] = annotations
    return DeviceModel.model_validate(document)


async def test_an_mqtt_device_that_never_reads_back_times_out(node: Node) -> None:
    model, name = unique("model"), unique("sensor")
    device = f"default/{name}"
    quick = _annotated(sensor_model(model), {"edgetwin.io/write-timeout": "300ms"})
    assert await node.service.apply([quick, sensor(name, model)]) == []
    async with mqtt_mapper(node), Paho(node.broker_port) as deaf:
        await deaf.subscribe(f"z2m/{name}/set")
        deaf.publish(f"z2m/{name}", {"temperature": 20.5, "climate": {"setpoint": 18}})
        async with DeviceWatch(node.broker_port, device, "mqtt") as watch:
            await watch.until_reported(setpoint="18")
            code, out, err = await _cli(node, "set", device, "setpoint=22", "--wait")
            assert out == f"{device} setpoint: desired 22\n"
            command = await deaf.next(f"z2m/{name}/set")  # it got the command, and says nothing
    assert command == {"climate": {"setpoint": 22.0}}
    assert code == 1
    assert err == (f"edgetwin: error: {device}: setpoint timed out: not read back within 0.3 s\n")
    assert node.engine.devices[device].writes["setpoint"].phase == "timedout"
    assert (await _writes_metrics(node))["timedout"] == 1.0
