"""Configured limits give clear errors: devices per node, properties per device, updates
per second per device and messages per second per client (on both brokers: mosquitto's
through edgetwin's plugin), and packet size (on the embedded amqtt: mosquitto's packet
limit is its own)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from edgetwin.config import Settings, load_settings
from edgetwin.node import Node
from edgetwin.wire import topics
from edgetwin.wire.messages import Code
from edgetwin.wire.resources import DeviceModel
from tests.security.conftest import PASSWORDS, auth_settings
from tests.support import Paho, thermostat, thermostat_model, unique, until


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


async def test_a_device_over_its_update_rate_is_told_to_slow_down_and_others_are_not(
    node_settings: Settings,
) -> None:
    twin = node_settings.twin.model_copy(update={"max_updates_per_device_per_second": 5.0})
    async with Node(node_settings.model_copy(update={"twin": twin})) as node:
        flooder, calm = unique("dev"), unique("dev")
        models = [thermostat_model(), thermostat(flooder), thermostat(calm)]
        assert await node.service.apply(models) == []
        update = topics.twin_update_topic(f"default/{flooder}")
        get = topics.twin_get_topic(f"default/{flooder}")
        async with Paho(node.broker_port) as flood, Paho(node.broker_port) as other:
            await flood.subscribe(f"{update}/result")
            await flood.subscribe(f"{get}/result")
            for i in range(100):  # a burst of 10 (2 s at 5/s) passes, the rest does not
                flood.publish(update, {"event_id": str(i), "twin": {"count": _reported(i)}})
            flood.publish(get, {"event_id": "after"})  # not budgeted; answered after them all
            answers: dict[str, dict[str, Any]] = {}
            while "after" not in answers:
                _topic, payload, _ = await flood.messages.get()
                answer = orjson.loads(payload)
                answers[answer["event_id"]] = answer
            calm_update = topics.twin_update_topic(f"default/{calm}")
            await other.subscribe(f"{calm_update}/result")
            calm_twin = {"count": _reported(1)}
            answered = await other.request(calm_update, {"event_id": "calm", "twin": calm_twin})
        limited = node.engine.api.rejected[Code.TOO_MANY_REQUESTS]
    after = answers.pop("after")
    applied = sorted(int(e) for e, a in answers.items() if "code" not in a)
    told = sorted(int(e) for e, a in answers.items() if a.get("code") == Code.TOO_MANY_REQUESTS)
    assert 10 <= len(applied) < 20  # the bucket refills by 5 a second meanwhile
    assert limited == 100 - len(applied)
    # Told once a second (the burst takes well under 2 s); the rest dropped unread.
    assert 1 <= len(told) <= 2
    assert told[0] == min(set(range(100)) - set(applied))  # the first one over is told
    assert after["twin"]["count"]["actual"]["value"] == str(applied[-1])
    assert "code" not in answered  # the other device is not slowed


def _reported(value: int) -> dict[str, Any]:
    return {"actual": {"value": str(value)}}


SLOW_DOWN = "over this client's message rate; slow down"


async def _answered(node: Node, client: Paho, topic: str, count: int) -> list[int]:
    """``count`` twin/gets from ``client``; the codes of the answers, once each request is
    answered or counted as dropped by the broker (and the one told so has heard). A 429
    says why in the same words on both brokers."""
    assert node.broker is not None
    tally, dropped = node.broker.tally, node.broker.tally.rate_limited
    for i in range(count):
        client.publish(topic, {"event_id": str(i)})
    codes: list[int] = []

    def settled() -> bool:
        while not client.messages.empty():
            answer = orjson.loads(client.messages.get_nowait()[1])
            codes.append(answer.get("code", 200))
            assert answer.get("reason", SLOW_DOWN) == SLOW_DOWN
        over = tally.rate_limited - dropped
        return codes.count(200) + over == count and (over == 0 or Code.TOO_MANY_REQUESTS in codes)

    await until(settled, "each request answered or dropped")
    return codes


@pytest.mark.parametrize("engine", ["amqtt", "mosquitto"])
async def test_a_client_over_its_message_rate_is_told_to_slow_down(
    engine: str, tmp_path: Path
) -> None:
    settings = _settings(
        tmp_path, broker={"port": 0, "engine": engine, "max_messages_per_second": 5}
    )
    async with Node(settings) as node:
        name = unique("dev")
        assert await node.service.apply([thermostat_model(), thermostat(name)]) == []
        get = topics.twin_get_topic(f"default/{name}")
        async with Paho(node.broker_port) as flood, Paho(node.broker_port) as calm:
            await flood.subscribe(f"{get}/result")
            codes = await _answered(node, flood, get, 100)
            await calm.subscribe(f"{get}/result")
            answered = await calm.request(get, {"event_id": "calm"})  # others are not slowed
    assert 10 <= codes.count(200) < 20  # a burst of 10 (2 s at 5/s), refilled by 5 a second
    assert 1 <= codes.count(429) <= 2  # told once a second, the rest dropped unanswered
    assert len(codes) == codes.count(200) + codes.count(429)
    assert answered["event_id"] == "calm"


@pytest.mark.parametrize("engine", ["amqtt", "mosquitto"])
async def test_with_auth_devices_are_limited_and_mappers_are_not(
    engine: str, tmp_path: Path
) -> None:
    name = unique("dev")
    device = f"default/{name}"
    auth = auth_settings(tmp_path, device, f"default/{unique('other')}")
    settings = _settings(
        tmp_path, broker={"port": 0, "engine": engine, "max_messages_per_second": 5, "auth": auth}
    )
    async with Node(settings) as node:
        assert await node.service.apply([thermostat_model(), thermostat(name)]) == []
        get = topics.twin_get_topic(device)
        codes: dict[str, list[int]] = {}
        for user in ("dev-a", "modbus-mapper"):
            async with Paho(node.broker_port, username=user, password=PASSWORDS[user]) as client:
                await client.subscribe(f"{get}/result")
                codes[user] = await _answered(node, client, get, 50)
    assert 10 <= codes["dev-a"].count(200) < 20  # a burst of 10, then 5 a second
    assert 1 <= codes["dev-a"].count(429) <= 2
    assert codes["modbus-mapper"] == [200] * 50


def _packet(kind: int, body: bytes, announced: int | None = None) -> bytes:
    """An MQTT 3.1.1 packet: its fixed header (announcing ``announced`` bytes) and body."""
    length, encoded = len(body) if announced is None else announced, bytearray()
    while True:
        length, byte = divmod(length, 128)
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes([kind]) + bytes(encoded) + body


def _string(text: str) -> bytes:
    return len(text).to_bytes(2, "big") + text.encode()


CONNECT = _packet(0x10, _string("MQTT") + bytes([4, 0x02, 0, 60]) + _string("raw-client"))


async def _closed_by_the_broker(port: int, *packets: bytes) -> bytes:
    """Send ``packets`` on a raw connection; what the broker sent before it closed it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for packet in packets:
            writer.write(packet)
        writer.write(b"\0" * 4096)  # the start of a body the broker must not wait for
        return await asyncio.wait_for(reader.read(), 10)  # until the end of the stream
    finally:
        writer.close()


async def test_a_packet_over_the_size_limit_ends_the_connection_before_it_is_read(
    tmp_path: Path,
) -> None:
    settings = _settings(
        tmp_path,
        broker={"port": 0, "engine": "amqtt", "max_packet_bytes": 65536},
        twin={"max_payload_bytes": 4096},
    )
    async with Node(settings) as node:
        assert node.broker is not None
        name = unique("dev")
        device = f"default/{name}"
        before = thermostat(name, desired={"label": "before"})
        assert await node.service.apply([thermostat_model(), before]) == []
        update = topics.twin_update_topic(device)

        # Before any CONNECT, a client announcing a 200 MB packet is cut off at once.
        assert await _closed_by_the_broker(node.broker_port, _packet(0x10, b"", 200_000_000)) == b""
        # Connected, a 100 KB publication is cut off at its fixed header: CONNACK, then the end.
        publish = _packet(0x30, _string(update), 100_000)
        sent_back = await _closed_by_the_broker(node.broker_port, CONNECT, publish)
        assert sent_back == bytes([0x20, 2, 0, 0])
        assert node.broker.tally.too_large == 2

        async with Paho(node.broker_port) as client:  # under the packet limit: a clear 413
            get = topics.twin_get_topic(device)
            await client.subscribe(f"{update}/result", f"{get}/result")
            big = {"event_id": "big", "twin": {"label": {"expected": {"value": "x" * 5000}}}}
            refused = await client.request(update, big)
            twin = await client.request(get, {"event_id": "get"})
    assert refused["code"] == 413
    assert twin["twin"]["label"]["expected"]["value"] == "before"
