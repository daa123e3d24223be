"""A run of 10,000 updates during which the node is killed (SIGKILL) 20 times, each time after
a random number of confirmed results. After every kill the database passes
``PRAGMA integrity_check`` and holds every confirmed update; the sender then goes on
from where the confirmations stopped, against the restarted node."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import orjson

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


async def _one_life(port: int, start: int, kill_after: int, confirmed: dict[str, int]) -> int:
    """Send updates from ``start`` on until ``kill_after`` results came back; the next start."""
    results = 0
    following = start
    async with Paho(port) as client:
        await client.subscribe("$hw/events/device/+/+/twin/update/result")
        sent = start
        while results < kill_after and following < UPDATES:
            while sent < min(UPDATES, following + WINDOW):
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
    return following


async def test_twenty_kills_during_ten_thousand_updates(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}")  # to replay a failure
    manifests = write_manifests(
        tmp_path / "manifests", [thermostat(f"dev{i}") for i in range(DEVICES)]
    )
    database = tmp_path / "data" / "edgetwin.db"
    node = NodeProcess(tmp_path / "data", node=unique("node"), manifests=manifests)
    confirmed: dict[str, int] = {}
    position = 0
    for _ in range(KILLS):
        with node:
            kill_after = rng.randint(1, 2 * UPDATES // KILLS)
            position = await _one_life(node.port, position, kill_after, confirmed)
            node.kill()  # results just published, more updates still in flight
        assert_store_holds(database, confirmed)
    with node:
        position = await _one_life(node.port, position, UPDATES, confirmed)
        assert node.stop() == 0
    assert position == UPDATES
    assert_store_holds(database, confirmed)
    assert confirmed == {f"default/dev{i}": UPDATES - DEVICES + i for i in range(DEVICES)}
