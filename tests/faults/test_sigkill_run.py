"""A run of 10,000 updates during which the node is killed (SIGKILL) 20 times, each time after
a random number of confirmed results. After every kill the database passes
``PRAGMA integrity_check`` and holds every confirmed update; the sender then goes on
against the restarted node.

It goes on from the highest number it sent, not the highest confirmed: the node's own
mosquitto keeps the twin's session when the node dies, so the updates that were in flight
are delivered and applied after the restart, before any new one. Numbering on from below
them would make a device's values go down in the order the twin applies them, and the
store would rightly hold a smaller number than a stale update's confirmation."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import orjson
import pytest
import yaml

from edgetwin.wire import topics
from tests.support import (
    NodeProcess,
    Paho,
    assert_store_holds,
    thermostat,
    unique,
    write_manifests,
)

UPDATES = 10_000
KILLS = 20
DEVICES = 5
WINDOW = 500  # updates in flight at once


async def _one_life(
    port: int, start: int, confirmed: dict[str, int], *, kill_after: int, end: int
) -> int:
    """Send updates numbered from ``start`` until ``kill_after`` results came back or every
    update below ``end`` is answered; the next number to send."""
    results = 0
    following = start
    async with Paho(port) as client:
        await client.subscribe("$hw/events/device/+/+/twin/update/result")
        sent = start
        while results < kill_after and following < end:
            while sent < min(end, following + WINDOW):
                device = f"default/dev{sent % DEVICES}"
                count = {"count": {"actual": {"value": str(sent)}}}
                client.publish(
                    topics.twin_update_topic(device),
                    {"event_id": f"{device}|{sent}", "twin": count},
                )
                sent += 1
            _topic, payload, _ = await asyncio.wait_for(client.messages.get(), 30)
            result = orjson.loads(payload)
            assert "code" not in result, result
            device, i = result["event_id"].split("|")
            confirmed[device] = max(confirmed.get(device, -1), int(i))
            following = max(following, int(i) + 1)
            results += 1
    return sent


@pytest.mark.parametrize("engine", ["amqtt", "mosquitto"])
async def test_twenty_kills_during_ten_thousand_updates(tmp_path: Path, engine: str) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}")  # to replay a failure
    manifests = write_manifests(
        tmp_path / "manifests", [thermostat(f"dev{i}") for i in range(DEVICES)]
    )
    database = tmp_path / "data" / "edgetwin.db"
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump({"broker": {"engine": engine}}))
    node = NodeProcess(
        tmp_path / "data", node=unique("node"), manifests=manifests, extra=("--config", str(config))
    )
    confirmed: dict[str, int] = {}
    position = 0
    for _ in range(KILLS):
        with node:
            kill_after = rng.randint(1, 2 * UPDATES // KILLS)
            position = await _one_life(
                node.port, position, confirmed, kill_after=kill_after, end=UPDATES
            )
            node.kill()  # results just published, more updates still in flight
        assert_store_holds(database, confirmed)
    end = position + WINDOW  # a last life, not killed: every one of its updates answered
    with node:
        position = await _one_life(node.port, position, confirmed, kill_after=end, end=end)
        assert node.stop() == 0
    assert position == end
    assert_store_holds(database, confirmed)
    assert confirmed == {f"default/dev{n % DEVICES}": n for n in range(end - DEVICES, end)}
