"""A store that cannot write (SQLite's own size limit reached): error results, the twin in
memory falls back to what is on disk, and service resumes when space returns."""

from __future__ import annotations

from edgetwin.node import Node
from edgetwin.wire import topics
from tests.support import Paho, thermostat, thermostat_model, unique


async def test_full_store_gives_error_results_and_recovers(node: Node) -> None:
    name = unique("dev")
    device = f"default/{name}"
    assert await node.service.apply([thermostat_model(), thermostat(name)]) == []
    update = topics.twin_update_topic(device)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{update}/result", f"{topics.twin_get_topic(device)}/result")
        ok = await client.request(
            update, {"event_id": "1", "twin": {"label": {"actual": {"value": "a"}}}}
        )
        assert "code" not in ok

        [(pages,)] = await node.store.execute("PRAGMA page_count")
        await node.store.execute(f"PRAGMA max_page_count = {pages}")
        big = "x" * 60_000
        failed = await client.request(
            update, {"event_id": "2", "twin": {"label": {"actual": {"value": big}}}}
        )
        assert failed["code"] == 500
        assert failed["event_id"] == "2"

        # The next request sees the twin as the store has it, not the failed value.
        got = await client.request(topics.twin_get_topic(device), {"event_id": "3"})
        assert got["twin"]["label"]["actual"]["value"] == "a"
        assert node.engine.devices[device].properties["label"].reported_version == 1

        await node.store.execute("PRAGMA max_page_count = 1073741823")
        again = await client.request(
            update, {"event_id": "4", "twin": {"label": {"actual": {"value": big}}}}
        )
        assert "code" not in again
    twin = node.engine.devices[device].properties["label"]
    assert (twin.reported, twin.reported_version) == (big, 2)
