"""Configured limits give clear errors: devices per node, properties per device, and
messages per second per client (on the embedded broker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from edgetwin.config import load_settings
from edgetwin.node import Node
from edgetwin.wire import topics
from edgetwin.wire.resources import DeviceModel
from tests.support import Paho, thermostat, thermostat_model, unique


def _settings(tmp_path: Path, **sections: Any) -> Any:
    return load_settings(
        node={"name": unique("node"), "data_dir": str(tmp_path)},
        store={"synchronous": "NORMAL"},
        **sections,
    )


async def test_devices_per_node_and_properties_per_device(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, broker={"port": 0}, twin={"max_devices": 2, "max_properties_per_device": 6}
    )
    async with Node(settings) as node:
        names = [unique("dev") for _ in range(3)]
        errors = await node.service.apply([thermostat_model(), *(thermostat(n) for n in names)])
        too_many = f"Device default/{names[2]}: this node already serves 2 devices, the limit"
        assert errors == [f"{too_many} (twin.max_devices)"]
        assert await node.service.apply([thermostat(names[0], desired={"target": "20"})]) == []

        big = thermostat_model(name="big").to_document()
        big["spec"]["properties"].append({"name": "seventh", "type": "INT"})
        errors = await node.service.apply([DeviceModel.model_validate(big)])
    too_big = "DeviceModel default/big: 7 properties, more than the limit of 6"
    assert errors == [f"{too_big} (twin.max_properties_per_device)"]


async def test_a_client_over_its_message_rate_is_told_to_slow_down(tmp_path: Path) -> None:
    settings = _settings(tmp_path, broker={"port": 0, "max_messages_per_second": 20})
    async with Node(settings) as node:
        name = unique("dev")
        assert await node.service.apply([thermostat_model(), thermostat(name)]) == []
        get = topics.twin_get_topic(f"default/{name}")
        async with Paho(node.broker_port) as flood, Paho(node.broker_port) as calm:
            await flood.subscribe(f"{get}/result")
            for i in range(100):  # a burst of 40 (2 s at 20/s) passes, the rest does not
                flood.publish(get, {"event_id": str(i)})
            codes = []
            while len(codes) < 100:
                _topic, payload, _ = await flood.messages.get()
                codes.append(orjson.loads(payload).get("code", 200))
            await calm.subscribe(f"{get}/result")
            answered = await calm.request(get, {"event_id": "calm"})  # others are not slowed
        assert node.broker is not None
        limited = node.broker.gate.rate_limited
    assert 40 <= codes.count(200) < 50
    assert codes.count(429) == limited == 100 - codes.count(200)
    assert answered["event_id"] == "calm"
