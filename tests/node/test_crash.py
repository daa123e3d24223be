"""A node killed with SIGKILL while it confirms a burst of updates comes back with every
confirmed value, in the twin and in its history, and the database passes PRAGMA
integrity_check."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from edgetwin.wire import topics
from tests.support import (
    NodeProcess,
    Paho,
    assert_store_holds,
    thermostat,
    unique,
    write_manifests,
)

DEVICES = 5
UPDATES = 2000
KILL_AFTER = 400


@pytest.mark.parametrize("broker_kind", ["amqtt", "mosquitto"])
async def test_sigkill_keeps_every_confirmed_update(
    tmp_path: Path, broker_kind: str, request: pytest.FixtureRequest
) -> None:
    names = [unique("dev") for _ in range(DEVICES)]
    manifests = write_manifests(tmp_path / "manifests", [thermostat(n) for n in names])
    external = request.getfixturevalue("mosquitto_port") if broker_kind == "mosquitto" else None
    node = NodeProcess(
        tmp_path / "data", node=unique("node"), external_port=external, manifests=manifests
    )
    confirmed: dict[str, int] = {}
    with node:
        async with Paho(node.port) as client:
            await client.subscribe("$hw/events/device/+/+/twin/update/result")
            for i in range(UPDATES):
                device = f"default/{names[i % DEVICES]}"
                client.publish(
                    topics.twin_update_topic(device),
                    {"event_id": f"{device}|{i}", "twin": {"count": {"actual": {"value": str(i)}}}},
                )
            for _ in range(KILL_AFTER):
                _topic, payload, _ = await asyncio.wait_for(client.messages.get(), 30)
                result = orjson.loads(payload)
                assert "code" not in result, result
                device, i = result["event_id"].split("|")
                confirmed[device] = max(confirmed.get(device, -1), int(i))
            node.kill()  # right after results were published, updates still in flight

    assert_store_holds(tmp_path / "data" / "edgetwin.db", confirmed)

    with NodeProcess(tmp_path / "data", node=node.node, external_port=external) as again:
        async with Paho(again.port) as client:
            for device, i in confirmed.items():
                get = topics.twin_get_topic(device)
                await client.subscribe(f"{get}/result")
                got = await client.request(get, {"event_id": "g"})
                assert int(got["twin"]["count"]["actual"]["value"]) >= i
                # The history committed with each update: every confirmed value is in it.
                history = topics.history_get_topic(device)
                await client.subscribe(f"{history}/result")
                asked = {"event_id": "h", "property": "count", "limit": UPDATES}
                events = (await client.request(history, asked))["events"]
                kept = {int(e["value"]) for e in events if e["kind"] == "reported"}
                first = names.index(device.split("/")[1])
                assert set(range(first, i + 1, DEVICES)) <= kept
        assert again.stop() == 0
