"""The MQTT mapper against a JSON device simulated with paho, on embedded amqtt and mosquitto."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from edgetwin.mappers import MapperRuntime
from edgetwin.mappers.mqttjson import MqttJsonMapper
from edgetwin.node import Node
from edgetwin.wire.resources import Device, DeviceModel
from tests.mappers.watch import DeviceWatch
from tests.support import Paho, device_manifest, model_manifest, unique


def sensor_model(name: str) -> DeviceModel:
    return model_manifest(
        name,
        "mqtt",
        [
            {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly"},
            {
                "name": "setpoint",
                "type": "FLOAT",
                "accessMode": "ReadWrite",
                "visitors": {"configData": {"path": "climate.setpoint"}},
            },
            {
                "name": "power",
                "type": "BOOLEAN",
                "accessMode": "ReadWrite",
                "visitors": {
                    "configData": {
                        "path": "state",
                        "valueMap": {"true": "ON", "false": "OFF"},
                    }
                },
            },
        ],
    )


def sensor(name: str, model: str, **protocol: str) -> Device:
    base = f"z2m/{name}"
    config = {
        "stateTopic": base,
        "commandTopic": f"{base}/set",
        "availabilityTopic": f"{base}/availability",
        **protocol,
    }
    return device_manifest(name, model, "mqtt", config)


@contextlib.asynccontextmanager
async def mqtt_mapper(node: Node) -> AsyncIterator[MapperRuntime]:
    async with MapperRuntime(
        MqttJsonMapper(), node.broker_address(), node=node.settings.node.name
    ) as runtime:
        yield runtime


class JsonDevice:
    """The device's side, in paho: it takes commands and publishes its state after each."""

    def __init__(self, client: Paho, name: str) -> None:
        self.client = client
        self.base = f"z2m/{name}"
        self.state: dict[str, Any] = {
            "temperature": 20.5,
            "climate": {"setpoint": 18},
            "state": "OFF",
        }

    def publish_state(self) -> None:
        self.client.publish(self.base, self.state)

    def availability(self, text: str) -> None:
        self.client.publish(f"{self.base}/availability", text.encode(), retain=True)

    async def command(self) -> dict[str, Any]:
        command = await self.client.next(f"{self.base}/set")
        for key, value in command.items():
            if isinstance(value, dict):
                self.state[key].update(value)
            else:
                self.state[key] = value
        self.publish_state()
        return command


@contextlib.asynccontextmanager
async def online_sensor(node: Node) -> AsyncIterator[tuple[JsonDevice, DeviceWatch]]:
    """A sensor applied to the node, its paho device online and publishing its state."""
    name = await _apply(node)
    async with (
        Paho(node.broker_port) as client,
        DeviceWatch(node.broker_port, f"default/{name}", "mqtt") as watch,
    ):
        await client.subscribe(f"z2m/{name}/set")
        device = JsonDevice(client, name)
        device.availability("online")
        device.publish_state()
        await watch.until_state("online")
        yield device, watch


async def _apply(node: Node, name: str = "", **protocol: str) -> str:
    model, name = unique("model"), name or unique("sensor")
    assert await node.service.apply([sensor_model(model), sensor(name, model, **protocol)]) == []
    return name


async def test_state_reaches_the_twin_and_desired_values_reach_the_device(node: Node) -> None:
    async with mqtt_mapper(node), online_sensor(node) as (device, watch):
        await watch.until_reported(temperature="20.5", setpoint="18", power="false")

        watch.set(power="true")
        assert await device.command() == {"state": "ON"}
        watch.set(setpoint="22.5")
        assert await device.command() == {"climate": {"setpoint": 22.5}}
        await watch.until_reported(setpoint="22.5", power="true")

        device.client.publish(device.base, b"{not json")  # ignored, logged
        device.state["temperature"] = 23.0
        device.publish_state()
        await watch.until_reported(temperature="23.0")
        twin = node.engine.devices[watch.device].twin_document()
        assert twin["power"]["actual"]["value"] == "true"
        assert twin["setpoint"]["expected"]["value"] == "22.5"


async def test_offline_device_gets_the_pending_value_when_it_is_back(node: Node) -> None:
    async with mqtt_mapper(node), online_sensor(node) as (device, watch):
        device.availability('{"state": "offline"}')  # Zigbee2MQTT's JSON form
        await watch.until_state("offline")
        watch.set(setpoint="25")
        await watch.until_message("twin/update/result")
        assert device.client.messages.empty()  # nothing sent to an offline device
        device.availability("online")
        await watch.until_state("online")
        assert await device.command() == {"climate": {"setpoint": 25}}
        await watch.until_reported(setpoint="25")


async def test_topic_wildcards_in_the_config_are_refused(node: Node) -> None:
    async with mqtt_mapper(node) as runtime:
        model, name = unique("model"), unique("sensor")
        async with DeviceWatch(node.broker_port, f"default/{name}", "mqtt") as watch:
            bad = sensor(name, model, stateTopic="z2m/+/state")
            assert await node.service.apply([sensor_model(model), bad]) == []
            result = await watch.until_message("spec/result")
            await watch.until_state("unhealthy")
        assert result["code"] == 400
        assert result["reason"] == "stateTopic: 'z2m/+/state' has MQTT wildcards; name one topic"
        assert f"default/{name}" in runtime.refused


async def test_removed_device_is_no_longer_served(node: Node) -> None:
    async with mqtt_mapper(node) as runtime:
        name, other = unique("sensor"), unique("sensor")
        device_id = f"default/{name}"
        async with DeviceWatch(node.broker_port, device_id, "mqtt") as watch:
            await _apply(node, name)
            await watch.until_message("spec/result")
            assert device_id in runtime.devices
            await node.service.remove([device_id])
            spec = await watch.until_message("spec")
            assert spec == {}  # the retained spec cleared
        # The runtime handles messages in order: once it answers a later spec, the removal is done.
        async with DeviceWatch(node.broker_port, f"default/{other}", "mqtt") as watch:
            await _apply(node, other)
            await watch.until_message("spec/result")
        assert device_id not in runtime.devices


async def test_a_refused_reading_is_reported_again_unchanged(node: Node) -> None:
    """Mappers report on change; a reading the twin refused (a FLOAT that does not parse)
    is sent again with the next reading although it has not changed."""
    async with mqtt_mapper(node), online_sensor(node) as (device, watch):
        device.state["temperature"] = "warm"
        for _ in range(2):
            device.publish_state()
            result = await watch.until_message("twin/update/result")
            while "temperature" not in result.get("errors", {}) and "code" not in result:
                result = await watch.until_message("twin/update/result")
            reason = result.get("reason") or result["errors"]["temperature"]["reason"]
            assert reason == "twin.temperature.actual.value: 'warm' is not a finite number"
        sent = [
            body["twin"]["temperature"]["actual"]["value"]
            for body in watch.seen["/twin/update"]
            if "temperature" in body.get("twin", {})
        ]
        assert sent[-2:] == ["warm", "warm"]
