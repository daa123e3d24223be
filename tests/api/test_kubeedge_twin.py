"""The twin API as KubeEdge's edge speaks it: a reading is a fact (type-checked, kept when out
of range, flagged), one bad property never costs the others, KubeEdge's state spellings,
``null`` deletes, an empty twin is answered. On both brokers, spoken by paho."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from edgetwin.cloud import device_status
from edgetwin.node import Node
from edgetwin.wire import topics
from edgetwin.wire.resources import Device, DeviceModel
from tests.metrics import http, samples
from tests.support import Paho, model_manifest, unique


def boiler_model(name: str) -> DeviceModel:
    def prop(name: str, mode: str, low: str, high: str) -> dict[str, Any]:
        return {"name": name, "type": "FLOAT", "accessMode": mode, "minimum": low, "maximum": high}

    properties = [
        prop("setpoint", "ReadWrite", "30", "80"),
        prop("water-temp", "ReadOnly", "0", "100"),
    ]
    return model_manifest(name, "modbus", properties)


def boiler(name: str, model: str, desired: str | None = None) -> Device:
    setpoint: dict[str, Any] = {"name": "setpoint", "reportToCloud": True}
    if desired is not None:
        setpoint["desired"] = {"value": desired}
    return Device.model_validate(
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "deviceModelRef": {"name": model},
                "protocol": {"protocolName": "modbus"},
                "properties": [setpoint, {"name": "water-temp", "reportToCloud": True}],
            },
        }
    )


async def _boiler(node: Node, desired: str | None = None) -> str:
    model, name = unique("boiler-model"), unique("boiler")
    assert await node.service.apply([boiler_model(model), boiler(name, model, desired)]) == []
    return f"default/{name}"


def _report(**values: str) -> dict[str, Any]:
    return {"event_id": "r", "twin": {k: {"actual": {"value": v}} for k, v in values.items()}}


async def _twin(client: Paho, device: str) -> dict[str, Any]:
    result = await client.request(topics.twin_get_topic(device), {"event_id": "g"})
    twin: dict[str, Any] = result["twin"]
    return twin


async def test_a_reading_out_of_range_is_kept_and_does_not_cost_the_others(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """A Modbus mapper's first read: the setpoint register before its first write (0, the
    model says at least 30) beside a good water temperature, in one message."""
    device = await _boiler(node)
    update = topics.twin_update_topic(device)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{update}/result", f"{topics.twin_get_topic(device)}/result")
        with caplog.at_level(logging.WARNING, logger="edgetwin.twin.engine"):
            result = await client.request(update, _report(setpoint="0", **{"water-temp": "21.5"}))
            again = await client.request(update, _report(setpoint="0"))
            other = await client.request(update, _report(setpoint="95"))
        twin = await _twin(client, device)
        assert node.health_port is not None
        _, metrics = await http(node.health_port, "/metrics")

    assert "code" not in result
    assert result["twin"]["setpoint"]["actual"]["value"] == "0"
    assert result["twin"]["water-temp"]["actual"]["value"] == "21.5"
    assert result["out_of_range"] == {"setpoint": "0 is below the minimum 30"}
    assert again["out_of_range"] == {"setpoint": "0 is below the minimum 30"}
    assert other["out_of_range"] == {"setpoint": "95 is above the maximum 80"}
    assert twin["setpoint"]["actual"]["value"] == "95"
    assert twin["setpoint"]["out_of_range"] == "95 is above the maximum 80"
    assert twin["water-temp"]["actual"]["value"] == "21.5"
    assert "out_of_range" not in twin["water-temp"]
    lines = [r.getMessage() for r in caplog.records if "out of range" in r.getMessage()]
    assert len(lines) == 2, lines  # once per property and value
    got = samples(metrics)
    assert got["edgetwin_property_out_of_range", (("device", device), ("property", "setpoint"))]
    assert got["edgetwin_twin_reported_out_of_range_total", ()] == 3
    # The cluster gets the value as reported, flagged in its metadata.
    status = device_status(node.engine.devices[device])
    setpoint = next(t for t in status["twins"] if t["propertyName"] == "setpoint")
    assert setpoint["reported"]["value"] == "95"
    assert setpoint["reported"]["metadata"]["outOfRange"] == "95 is above the maximum 80"


async def test_back_in_range_clears_the_flag(node: Node) -> None:
    device = await _boiler(node)
    update = topics.twin_update_topic(device)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{update}/result", f"{topics.twin_get_topic(device)}/result")
        await client.request(update, _report(setpoint="0"))
        result = await client.request(update, _report(setpoint="45"))
        twin = await _twin(client, device)
    assert "out_of_range" not in result
    assert "out_of_range" not in twin["setpoint"]
    assert node.engine.devices[device].out_of_range == {}


async def test_one_bad_property_is_refused_alone(node: Node) -> None:
    device = await _boiler(node)
    update = topics.twin_update_topic(device)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{update}/result", f"{topics.twin_get_topic(device)}/result")
        message = _report(setpoint="40", **{"water-temp": "warm"})
        message["twin"]["nope"] = {"actual": {"value": "1"}}
        result = await client.request(update, message)
        twin = await _twin(client, device)
    assert "code" not in result
    assert set(result["twin"]) == {"setpoint"}
    assert result["errors"] == {
        "water-temp": {
            "code": 400,
            "reason": "twin.water-temp.actual.value: 'warm' is not a finite number",
        },
        "nope": {"code": 404, "reason": f"device {device} has no property 'nope'"},
    }
    assert twin["setpoint"]["actual"]["value"] == "40"
    assert "actual" not in twin["water-temp"]


async def test_desired_values_keep_their_strict_checks(node: Node) -> None:
    device = await _boiler(node)
    update = topics.twin_update_topic(device)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{update}/result")
        low = {"event_id": "d", "twin": {"setpoint": {"expected": {"value": "10"}}}}
        refused = await client.request(update, low)
        ro = {"event_id": "d", "twin": {"water-temp": {"expected": {"value": "10"}}}}
        read_only = await client.request(update, ro)
    assert refused["code"] == 400
    assert refused["reason"] == "twin.setpoint.expected.value: 10 is below the minimum 30"
    assert read_only["code"] == 403
    assert node.engine.devices[device].properties["setpoint"].desired is None


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("OK", "ok"),
        ("Online", "online"),
        ("OFFLINE", "offline"),
        ("disconnected", "offline"),
        ("Unhealthy", "unhealthy"),
        ("unknown", "unknown"),
    ],
)
async def test_kubeedge_state_spellings(node: Node, sent: str, stored: str) -> None:
    device = await _boiler(node)
    topic = topics.state_update_topic(device)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{topic}/result")
        result = await client.request(topic, {"event_id": "s", "state": sent})
    assert result["device"]["state"] == stored
    assert result["device"]["name"] == device.split("/")[1]
    assert node.engine.devices[device].state == stored
    assert ("lastOnlineTime" in result["device"]) == (stored in ("ok", "online"))


async def test_a_state_kubeedge_does_not_know_is_refused(node: Node) -> None:
    device = await _boiler(node)
    topic = topics.state_update_topic(device)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{topic}/result")
        result = await client.request(topic, {"event_id": "s", "state": "broken"})
    assert result["code"] == 400
    assert "state" in result["reason"]
    assert node.engine.devices[device].state == "unknown"


async def test_null_deletes_a_property_but_not_the_clusters_desired_value(node: Node) -> None:
    device = await _boiler(node, desired="45")
    update = topics.twin_update_topic(device)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{update}/result", f"{topics.twin_get_topic(device)}/result")
        both = {
            "event_id": "1",
            "twin": {
                "setpoint": {"actual": {"value": "40"}},
                "water-temp": {"actual": {"value": "20"}},
            },
        }
        await client.request(update, both)
        result = await client.request(
            update, {"event_id": "2", "twin": {"setpoint": None, "water-temp": None}}
        )
        twin = await _twin(client, device)
    assert result["twin"] == {"setpoint": None, "water-temp": None}
    assert "actual" not in twin["setpoint"]
    assert "actual" not in twin["water-temp"]
    assert twin["setpoint"]["expected"]["value"] == "45"  # the Device's spec sets it


async def test_null_deletes_a_desired_value_set_over_mqtt(node: Node) -> None:
    device = await _boiler(node)
    update = topics.twin_update_topic(device)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{update}/result", f"{topics.twin_get_topic(device)}/result")
        await client.request(
            update, {"event_id": "1", "twin": {"setpoint": {"expected": {"value": "50"}}}}
        )
        await client.request(update, {"event_id": "2", "twin": {"setpoint": None}})
        twin = await _twin(client, device)
    assert "expected" not in twin["setpoint"]
    assert node.engine.devices[device].delta() == {}


async def test_an_empty_twin_is_answered_and_changes_nothing(node: Node) -> None:
    device = await _boiler(node)
    update = topics.twin_update_topic(device)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{update}/result")
        result = await client.request(update, {"event_id": "e", "twin": {}})
    assert result["event_id"] == "e"
    assert result["twin"] == {}
    assert "code" not in result
