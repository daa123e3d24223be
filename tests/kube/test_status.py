"""Reported values and state go to the cluster through the outbox: coalesced, rate-bounded,
kept across outages, into a DeviceStatus owned by the Device (or Device.status on a cluster
that predates DeviceStatus)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgetwin.config import Settings
from edgetwin.wire import topics
from tests.kube.conftest import (
    Cluster,
    grant,
    node_settings_for,
    node_user,
    own_cluster,
    synced_node,
)
from tests.kube.kubestand import ROOT
from tests.support import Paho, run_cli, unique, until


def _reported(obj: dict[str, Any] | None) -> dict[str, str]:
    twins = ((obj or {}).get("status") or {}).get("twins") or []
    return {t["propertyName"]: t["reported"]["value"] for t in twins if "reported" in t}


async def _reported_in(cluster: Cluster, plural: str, name: str) -> dict[str, str]:
    return _reported(await cluster.get(plural, name))


async def _device_with_node(cluster: Cluster, settings: Settings) -> str:
    name = unique("dev")
    await cluster.add_thermostat(name, settings.node.name)
    return name


async def _burst(port: int, device: str, values: range, prop: str = "count") -> None:
    """Reported updates, each confirmed before the burst is done."""
    update = topics.twin_update_topic(device)
    async with Paho(port) as mqtt:
        await mqtt.subscribe(f"{update}/result")
        for i in values:
            mqtt.publish(
                update, {"event_id": str(i), "twin": {prop: {"actual": {"value": str(i)}}}}
            )
        for _ in values:
            result = await mqtt.next(f"{update}/result")
            assert "code" not in result, result


async def test_a_burst_becomes_a_handful_of_patches_and_the_status_is_exact(
    cluster: Cluster, cloud_settings: Callable[..., Settings]
) -> None:
    settings = cloud_settings()
    name = await _device_with_node(cluster, settings)
    async with synced_node(settings) as node:
        assert node.cloud is not None
        await _burst(node.broker_port, f"default/{name}", range(1000))

        async def all_there() -> bool:
            return (await _reported_in(cluster, "devicestatuses", name)).get("count") == "999"

        await until(all_there, "the last report reaches the cluster")
        reporter = node.cloud.reporter
        await until(lambda: reporter.counters.outbox_depth == 0, "the sent rows are deleted")
        assert reporter.counters.created == 1
        stats = node.cloud.stats()
        assert stats["status_patches"] == reporter.counters.patches
        assert stats["reports_coalesced"] >= 1000 - stats["status_patches"]
        assert stats["outbox_depth"] == 0
    patches = [
        r
        for r in cluster.server.requests()
        if r.verb == "patch" and r.resource == "devicestatuses" and r.name == name
    ]
    assert 1 <= len(patches) <= 6, patches  # 1,000 reports in ~1-2 s at one patch per second
    status = await cluster.get("devicestatuses", name)
    assert status is not None
    owner = status["metadata"]["ownerReferences"][0]
    device = await cluster.get("devices", name)
    assert device is not None
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Device",
        name,
        device["metadata"]["uid"],
    )
    twin = next(t for t in status["status"]["twins"] if t["propertyName"] == "count")
    assert twin["reported"]["metadata"]["type"] == "int"


async def test_api_down_while_reports_flow_then_the_cluster_converges(
    fresh_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = fresh_cluster
    settings = node_settings_for(cluster, tmp_path)
    name = await _device_with_node(cluster, settings)
    device = f"default/{name}"
    async with synced_node(settings) as node:
        assert node.cloud is not None
        cluster.server.kill()
        await _burst(node.broker_port, device, range(200))
        await _burst(node.broker_port, device, range(7, 8), prop="label")
        state = topics.state_update_topic(device)
        async with Paho(node.broker_port) as mqtt:
            await mqtt.subscribe(f"{state}/result")
            await mqtt.request(state, {"state": "online"})
        await until(
            lambda: node.cloud is not None and node.cloud.reporter.counters.failures > 0,
            "the reporter saw the API gone",
        )
        cluster.server.start()

        async def converged() -> bool:
            obj = await cluster.get("devicestatuses", name)
            status = (obj or {}).get("status") or {}
            return (
                _reported(obj) == {"count": "199", "label": "7"}
                and status.get("state") == "online"
                and bool(status.get("lastOnlineTime"))
            )

        await until(converged, "the cluster has every report", timeout=60)  # #124237
        await until(
            lambda: node.cloud is not None and node.cloud.reporter.counters.outbox_depth == 0,
            "the outbox is empty",
        )


async def test_forbidden_status_writes_are_logged_once_and_the_node_keeps_serving(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    account = unique("read-only")
    await asyncio.to_thread(
        grant, cluster, account, [(["devices", "devicemodels"], ["get", "list", "watch"])]
    )
    settings = node_settings_for(cluster, tmp_path)
    kubeconfig = cluster.service_account_kubeconfig(tmp_path / "read-only.kubeconfig", account)
    settings.cloud.kubeconfig = kubeconfig
    name = await _device_with_node(cluster, settings)
    async with synced_node(settings) as node:
        assert node.cloud is not None
        await _burst(node.broker_port, f"default/{name}", range(3))
        await until(lambda: "Role does not allow" in caplog.text, "a clear log line")
        await _burst(node.broker_port, f"default/{name}", range(3, 6))
    assert caplog.text.count("Role does not allow") == 1
    assert f"status of default/{name} not written" in caplog.text


async def test_a_cluster_without_devicestatus_gets_device_status(tmp_path: Path) -> None:
    """KubeEdge before 1.23: Device and DeviceModel only; the status goes into Device.status,
    with the node's own Role from crds/rbac.yaml."""
    crds = ROOT / "crds"
    with own_cluster(
        tmp_path,
        f"-f {crds / 'devicemodels.yaml'}",
        f"-f {crds / 'devices.yaml'}",
        f"-f {crds / 'rbac.yaml'}",
        f"-f {crds / 'admission.yaml'}",
    ) as cluster:
        settings = node_settings_for(cluster, tmp_path)
        name = await _device_with_node(cluster, settings)
        async with synced_node(settings) as node:
            await _burst(node.broker_port, f"default/{name}", range(5))

            async def reported() -> bool:
                return (await _reported_in(cluster, "devices", name)).get("count") == "4"

            await until(reported, "Device.status has the last report")
            # our own status write came back as a watch event, and changed nothing here
            assert node.engine.devices[f"default/{name}"].properties["count"].reported == "4"


async def test_get_devices_shows_whether_the_cluster_has_caught_up(
    fresh_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = fresh_cluster
    settings = node_settings_for(cluster, tmp_path)
    name = await _device_with_node(cluster, settings)
    async with synced_node(settings) as node:
        args = (
            "get",
            "devices",
            "--node",
            settings.node.name,
            "--broker",
            f"127.0.0.1:{node.broker_port}",
        )

        async def cloud_column() -> str:
            table = await asyncio.to_thread(run_cli, *args)
            assert table.returncode == 0, table.stderr
            header, row = table.stdout.splitlines()
            assert header.split()[-1] == "CLOUD"
            return row.split()[-1]

        cluster.server.kill()
        await _burst(node.broker_port, f"default/{name}", range(3))
        assert await cloud_column() == "pending"
        cluster.server.start()

        async def caught_up() -> bool:
            return (await _reported_in(cluster, "devicestatuses", name)).get("count") == "2"

        await until(caught_up, "the cluster has the last report", timeout=60)  # #124237
        await until(lambda: node.ledger is not None and not node.ledger.pending, "nothing pending")
        assert await cloud_column() == "synced"


async def test_status_requests_stay_within_the_node_rate_limit(
    cluster: Cluster, cloud_settings: Callable[..., Settings]
) -> None:
    settings = cloud_settings(rate_limit=4.0)
    names = [await _device_with_node(cluster, settings) for _ in range(6)]
    async with synced_node(settings) as node:
        for name in names:  # each device's first write: GET, GET, POST, PATCH
            await _burst(node.broker_port, f"default/{name}", range(1))

        async def all_reported() -> bool:
            for n in names:
                if (await _reported_in(cluster, "devicestatuses", n)).get("count") != "0":
                    return False
            return True

        await until(all_reported, "every device's report arrives", timeout=30)
    times = [
        r.received
        for r in cluster.server.requests()
        if r.name in names
        and r.user == node_user(settings.node.name)
        and (r.resource == "devicestatuses" or r.verb == "get")
    ]
    assert len(times) >= 6 * 4
    # a burst of at most 4, then 4 per second: no 1-second window holds more than 4 + 4
    assert max(sum(1 for u in times if t <= u < t + 1.0) for t in times) <= 8
    assert times[-1] - times[0] >= (len(times) - 4) / 4 - 0.5
