"""A node killed with SIGKILL while its outbox holds reports the cluster has not seen:
after a restart the cluster gets them."""

from __future__ import annotations

import asyncio
import sqlite3

import orjson

from edgetwin.wire import topics
from tests.kube.conftest import Cluster
from tests.support import NodeProcess, Paho, unique, until


async def test_outbox_survives_sigkill_and_is_flushed_after_restart(
    fresh_cluster: Cluster, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    cluster = fresh_cluster
    node_name, name = unique("node"), unique("dev")
    device = f"default/{name}"
    await cluster.add_thermostat(name, node_name)
    kubeconfig = cluster.node_kubeconfig(tmp_path, node_name)
    config = tmp_path / "node.yaml"
    config.write_text(orjson.dumps({"cloud": {"retry_max_delay": 1.0}}).decode())
    extra = ("--kubeconfig", str(kubeconfig), "--config", str(config))
    node = NodeProcess(tmp_path / "data", node=node_name, extra=extra)
    with node:
        async with Paho(node.port) as mqtt:
            get = topics.twin_get_topic(device)
            await mqtt.subscribe(f"{get}/result")
            while "code" in await mqtt.request(get, {}):  # until the watch brought the device
                await asyncio.sleep(0.05)
            cluster.server.kill()
            update = topics.twin_update_topic(device)
            await mqtt.subscribe(f"{update}/result")
            for i in range(50):
                mqtt.publish(update, {"twin": {"count": {"actual": {"value": str(i)}}}})
            for _ in range(50):
                assert "code" not in await mqtt.next(f"{update}/result")
        node.kill()

    with sqlite3.connect(tmp_path / "data" / "edgetwin.db") as db:
        pending = db.execute("SELECT field FROM outbox WHERE device = ?", (device,)).fetchall()
    assert pending == [("twin/count",)]

    cluster.server.start()
    db_path = tmp_path / "data" / "edgetwin.db"
    with NodeProcess(tmp_path / "data", node=node_name, extra=extra) as again:

        async def flushed() -> bool:
            return await _reported_count(cluster, name) == "49"

        # up to ~30 s more after a restart: the API server's admission policies refuse
        # node writes until its discovery has the Device CRD (kubernetes#124237)
        await until(flushed, "the outbox reaches the cluster", timeout=60)
        # the sent row is deleted just after; another process's file, so checked, not awaited
        await until(lambda: _outbox_size(db_path) == 0, "the outbox is empty")
        assert again.stop() == 0


async def _reported_count(cluster: Cluster, name: str) -> str | None:
    status = await cluster.get("devicestatuses", name) or {}
    twins = (status.get("status") or {}).get("twins") or []
    return next((t["reported"]["value"] for t in twins if t["propertyName"] == "count"), None)


def _outbox_size(db_path) -> int:  # type: ignore[no-untyped-def]
    with sqlite3.connect(db_path) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
