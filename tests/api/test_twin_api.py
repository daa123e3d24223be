"""The MQTT twin API, spoken by paho (not our client), on embedded amqtt and on mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime

import orjson

from edgetwin.node import Node
from edgetwin.wire import topics
from tests.support import Paho, thermostat, thermostat_model, unique


async def _with_device(node: Node, **kwargs: object) -> str:
    name = unique("dev")
    errors = await node.service.apply([thermostat_model(), thermostat(name, **kwargs)])  # type: ignore[arg-type]
    assert errors == []
    return f"default/{name}"


async def test_reported_update_gets_result_and_document(node: Node) -> None:
    device = await _with_device(node)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"$hw/events/device/{device}/twin/#")
        client.publish(
            topics.twin_update_topic(device),
            {
                "event_id": "e1",
                "timestamp": 1,
                "twin": {"current": {"actual": {"value": "21.5"}, "metadata": {"type": "float"}}},
            },
        )
        result = await client.next(f"{topics.twin_update_topic(device)}/result")
        document = await client.next(topics.document_topic(device))
    assert result["event_id"] == "e1"
    assert "code" not in result
    assert result["twin"]["current"]["actual"]["value"] == "21.5"
    assert document["twin"]["current"]["current"]["actual"]["value"] == "21.5"
    assert document["twin"]["current"]["current"]["actual"]["version"] == 1
    assert "actual" not in document["twin"]["current"]["last"]


async def test_desired_update_publishes_delta_until_reported_matches(node: Node) -> None:
    device = await _with_device(node)
    update = topics.twin_update_topic(device)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"$hw/events/device/{device}/twin/#")
        client.publish(
            update, {"event_id": "set", "twin": {"target": {"expected": {"value": "25"}}}}
        )
        delta = await client.next(topics.delta_topic(device))
        assert delta["delta"] == {"target": "25"}
        assert delta["event_id"] == "set"
        assert delta["twin"]["target"]["expected"]["value"] == "25"

        # The device reports the same value in another spelling: in sync, no delta left.
        client.publish(
            update, {"event_id": "rep", "twin": {"target": {"actual": {"value": "25.0"}}}}
        )
        await client.next(f"{update}/result")
        got = await client.request(topics.twin_get_topic(device), {"event_id": "g"})
    assert got["twin"]["target"]["expected"]["value"] == "25"
    assert got["twin"]["target"]["actual"]["value"] == "25.0"
    members = node.engine.devices[device]
    assert members.delta() == {}


async def test_get_returns_all_twins_with_types(node: Node) -> None:
    device = await _with_device(node, desired={"target": "20"})
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{topics.twin_get_topic(device)}/result")
        got = await client.request(topics.twin_get_topic(device), {"event_id": "x"})
    assert got["event_id"] == "x"
    assert set(got["twin"]) == {"target", "current", "count", "enabled", "label", "blob"}
    assert got["twin"]["target"]["expected"]["value"] == "20"
    assert got["twin"]["count"]["metadata"]["type"] == "int"
    assert got["state"] == "unknown"


async def test_state_update_sets_state_and_last_online(node: Node) -> None:
    device = await _with_device(node)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{topics.state_update_topic(device)}/result")
        result = await client.request(
            topics.state_update_topic(device), {"event_id": "s", "state": "online"}
        )
    # KubeEdge's shape (edge/pkg/devicetwin/dtmanager/device.go), and the time in ms besides
    name = device.split("/")[1]
    when = datetime.fromtimestamp(result["last_online_time"] / 1000, UTC)
    assert result["device"] == {
        "name": name,
        "state": "online",
        "lastOnlineTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    with sqlite3.connect(node.settings.database_path) as db:
        row = db.execute(
            "SELECT state, last_online FROM devices WHERE id = ?", (device,)
        ).fetchone()
    assert row == ("online", result["last_online_time"])


async def test_membership_get_and_updated(node: Node) -> None:
    node_name = node.settings.node.name
    async with Paho(node.broker_port) as client:
        await client.subscribe(
            f"{topics.membership_get_topic(node_name)}/result",
            topics.membership_updated_topic(node_name),
        )
        device = await _with_device(node)
        updated = await client.next(topics.membership_updated_topic(node_name))
        assert [d["id"] for d in updated["added_devices"]] == [device]
        got = await client.request(topics.membership_get_topic(node_name), {"event_id": "m"})
        assert [d["id"] for d in got["devices"]] == [device]
        assert got["devices"][0]["model"] == "thermostat"

        outcome = node.engine.catalog.remove_device(device, "test")
        await node.service._dispatch(outcome)
        removed = await client.next(topics.membership_updated_topic(node_name))
    assert [d["id"] for d in removed["removed_devices"]] == [device]


async def _spec_message(port: int, device: str) -> tuple[bytes, bool]:
    async with Paho(port) as client:
        await client.subscribe(topics.spec_filter("modbus"))
        while True:
            topic, payload, retained = await client.messages.get()
            if topic == topics.spec_topic("modbus", device):
                return payload, retained


async def test_merged_spec_is_retained_for_mappers(node: Node) -> None:
    device = await _with_device(node)
    await _spec_message(node.broker_port, device)  # published by now, live or retained
    payload, retained = await _spec_message(node.broker_port, device)  # a mapper starting later
    spec = orjson.loads(payload)
    assert retained
    assert spec["protocol_config"] == {"slaveID": 1, "ip": "127.0.0.1", "port": 502}
    target = next(p for p in spec["properties"] if p["name"] == "target")
    # The device's visitor config overrides the model's key by key.
    assert target["visitors"] == {"register": "HoldingRegister", "offset": 7}
    assert target["collect_cycle"] == 1000


async def test_results_come_back_in_order_for_a_burst(node: Node) -> None:
    device = await _with_device(node)
    update = topics.twin_update_topic(device)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{update}/result")
        for i in range(300):
            client.publish(
                update, {"event_id": str(i), "twin": {"count": {"actual": {"value": str(i)}}}}
            )
        ids = [(await client.next(f"{update}/result"))["event_id"] for _ in range(300)]
    assert ids == [str(i) for i in range(300)]
    twin = node.engine.devices[device].properties["count"]
    assert (twin.reported, twin.reported_version) == ("299", 300)
    assert node.store.commits < 300  # group commit: fewer transactions than updates


async def test_apply_over_mqtt(node: Node) -> None:
    node_name = node.settings.node.name
    name = unique("dev")
    documents = [
        thermostat_model().to_document(),
        thermostat(name).to_document(),
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": "Bad+Name"},
        },
    ]
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{topics.apply_topic(node_name)}/result")
        result = await client.request(
            topics.apply_topic(node_name), {"event_id": "a", "documents": documents}
        )
    assert result["applied"] == ["DeviceModel default/thermostat", f"Device default/{name}"]
    assert len(result["errors"]) == 1
    assert "metadata.name" in result["errors"][0]
    assert f"default/{name}" in node.engine.devices


async def test_a_cancelled_caller_does_not_stop_the_publisher(node: Node) -> None:
    """Regression: cancelling a task waiting in apply() cancelled the shared commit future:
    the publishing task died (results stopped, shutdown hung), or the committed change's
    messages were dropped."""
    name = unique("dev")
    caller = asyncio.create_task(node.service.apply([thermostat_model(), thermostat(name)]))
    await asyncio.sleep(0)  # enqueued, commit pending
    caller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await caller
    device = f"default/{name}"
    update = topics.twin_update_topic(device)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{update}/result")
        result = await client.request(
            update, {"event_id": "after", "twin": {"count": {"actual": {"value": "1"}}}}
        )
    assert result["event_id"] == "after"
    assert "code" not in result
    payload, _ = await asyncio.wait_for(_spec_message(node.broker_port, device), 5)
    assert orjson.loads(payload)["id"] == device
