"""The node follows its Devices in a cluster (a real API server, driven by the official client)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from edgetwin.config import Settings, load_settings
from edgetwin.node import Node
from edgetwin.wire import topics
from tests.kube.conftest import (
    Cluster,
    grant,
    kubeedge_crds,
    node_settings_for,
    own_cluster,
    synced_node,
)
from tests.support import Paho, thermostat, unique, until


async def test_desired_change_in_the_cluster_reaches_mqtt_as_a_delta(
    cluster: Cluster, cloud_settings: Callable[..., Settings]
) -> None:
    settings = cloud_settings()
    name = unique("dev")
    await cluster.add_thermostat(name, settings.node.name, desired={"target": "20"})
    async with Node(settings) as node:
        assert node.cloud is not None
        await node.cloud.wait_synced()
        device = f"default/{name}"
        assert node.engine.devices[device].properties["target"].desired == "20"
        async with Paho(node.broker_port) as mqtt:
            await mqtt.subscribe(topics.delta_topic(device))
            changed = thermostat(name, node=settings.node.name, desired={"target": "26.5"})
            await cluster.patch("devices", name, {"spec": changed.to_document()["spec"]})
            delta = await mqtt.next(topics.delta_topic(device))
    assert delta["delta"] == {"target": "26.5"}


async def test_devices_of_other_nodes_are_not_taken(cluster: Cluster, cloud_node: Node) -> None:
    mine, theirs = unique("mine"), unique("theirs")
    await cluster.add_thermostat(mine, cloud_node.settings.node.name)
    await cluster.add_thermostat(theirs, "another-node")
    await until(lambda: f"default/{mine}" in cloud_node.engine.devices, "my device arrives")
    assert f"default/{theirs}" not in cloud_node.engine.devices


async def test_a_device_moved_to_another_node_leaves(cluster: Cluster, cloud_node: Node) -> None:
    name = unique("dev")
    await cluster.add_thermostat(name, cloud_node.settings.node.name)
    await until(lambda: f"default/{name}" in cloud_node.engine.devices, "device arrives")
    await cluster.patch("devices", name, {"spec": {"nodeName": "another-node"}})
    await until(lambda: f"default/{name}" not in cloud_node.engine.devices, "device leaves")


async def test_a_device_deleted_while_the_node_was_away_goes_after_reconnect(
    cluster: Cluster, cloud_settings: Callable[..., Settings]
) -> None:
    settings = cloud_settings()
    keep, drop = unique("keep"), unique("drop")
    for name in (keep, drop):
        await cluster.add_thermostat(name, settings.node.name)
    async with Node(settings) as node:
        assert node.cloud is not None
        await node.cloud.wait_synced()
        assert {f"default/{keep}", f"default/{drop}"} <= set(node.engine.devices)

    await cluster.delete("devices", drop)  # while the node is down

    async with Node(settings) as node:
        assert f"default/{drop}" in node.engine.devices  # from SQLite, before the cluster answers
        assert node.cloud is not None
        await node.cloud.wait_synced()
        assert f"default/{drop}" not in node.engine.devices
        assert f"default/{keep}" in node.engine.devices
        async with Paho(node.broker_port) as mqtt:  # mappers hear of it: no spec retained
            await mqtt.subscribe(topics.spec_filter("modbus"))
            seen = set()
            while topics.spec_topic("modbus", f"default/{keep}") not in seen:
                topic, payload, _ = await asyncio.wait_for(mqtt.messages.get(), 10)
                if payload:
                    seen.add(topic)
        assert topics.spec_topic("modbus", f"default/{drop}") not in seen
    with sqlite3.connect(settings.database_path) as db:
        ids = {row[0] for row in db.execute("SELECT id FROM devices")}
    assert ids == {f"default/{keep}"}


async def test_outage_and_expired_watch_relist_without_losing_a_change(
    fresh_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = fresh_cluster
    settings = node_settings_for(cluster, tmp_path)
    name = unique("dev")
    node_name = settings.node.name
    await cluster.add_thermostat(name, node_name, desired={"target": "20"})
    device = f"default/{name}"
    async with synced_node(settings) as node:
        assert node.cloud is not None
        relists = node.cloud.counters.relists
        with cluster.server.out_of_reach():  # the API server goes away...
            async with Paho(node.broker_port) as mqtt:  # ...and the node keeps serving
                update = topics.twin_update_topic(device)
                await mqtt.subscribe(f"{update}/result")
                result = await mqtt.request(
                    update, {"twin": {"current": {"actual": {"value": "19"}}}}
                )
                assert "code" not in result
            # Meanwhile the cluster changes and compacts its history.
            with Cluster(cluster.server, tmp_path / "elsewhere") as there:
                changed = thermostat(name, node=node_name, desired={"target": "31"}).to_document()
                await there.patch("devices", name, {"spec": changed["spec"]})
            cluster.server.compact()

        await until(
            lambda: node.engine.devices[device].properties["target"].desired == "31",
            "the change made during the outage arrives",
        )
        assert node.cloud.counters.relists > relists
        assert node.cloud.counters.watch_restarts > 0


async def test_forbidden_is_a_clear_log_line_and_the_node_keeps_serving(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    account = unique("models-only")
    await asyncio.to_thread(grant, cluster, account, [(["devicemodels"], ["get", "list", "watch"])])
    kubeconfig = cluster.service_account_kubeconfig(tmp_path / "limited.kubeconfig", account)
    settings = load_settings(
        node={"name": unique("node"), "data_dir": str(tmp_path / "data")},
        broker={"port": 0},
        cloud={"kubeconfig": str(kubeconfig), "retry_max_delay": 0.5},
    )
    async with Node(settings) as node:
        await until(lambda: "does not allow" in caplog.text, "a log line about the Role")
        assert "devices in default: the node's Role does not allow it: 403" in caplog.text
        async with Paho(node.broker_port) as mqtt:
            topic = topics.membership_get_topic(node.settings.node.name)
            await mqtt.subscribe(f"{topic}/result")
            assert (await mqtt.request(topic, {"event_id": "m"}))["devices"] == []


async def test_without_a_node_selector_the_node_selects_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """KubeEdge's own Device CRD has no selectableFields: the server answers 400 to a field
    selector on spec.nodeName, and the node selects on its side."""
    with own_cluster(tmp_path, *kubeedge_crds()) as cluster:
        node_name = unique("node")
        mine, theirs = unique("mine"), unique("theirs")
        await cluster.add_thermostat(mine, node_name)
        await cluster.add_thermostat(theirs, "another-node")
        settings = load_settings(
            node={"name": node_name, "data_dir": str(tmp_path)},
            broker={"port": 0},
            cloud={"kubeconfig": str(cluster.kubeconfig)},
        )
        async with synced_node(settings) as node:
            assert set(node.engine.devices) == {f"default/{mine}"}
            await cluster.patch("devices", theirs, {"spec": {"nodeName": node_name}})
            await until(lambda: f"default/{theirs}" in node.engine.devices, "a device moved here")
    assert "selecting on this node" in caplog.text
