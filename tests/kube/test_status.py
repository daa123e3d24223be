"""Reported values and state go to the cluster through the outbox: coalesced, rate-bounded,
kept across outages, into a DeviceStatus owned by the Device (or Device.status on a cluster
that predates DeviceStatus)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgetwin.config import Settings, load_settings
from edgetwin.wire import topics
from tests.kube.apiserver import DEVICE_STATUSES, DEVICES, FakeKubeAPI
from tests.kube.conftest import Cluster, synced_node, until
from tests.support import Paho, run_cli, unique


def _reported(obj: dict[str, Any] | None) -> dict[str, str]:
    twins = ((obj or {}).get("status") or {}).get("twins") or []
    return {t["propertyName"]: t["reported"]["value"] for t in twins if "reported" in t}


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
        await cluster.api.until(
            lambda: (
                _reported(cluster.api.get(DEVICE_STATUSES, "default", name)).get("count") == "999"
            )
        )
        reporter = node.cloud.reporter
        await until(lambda: reporter.counters.outbox_depth == 0, "the sent rows are deleted")
        assert reporter.counters.created == 1
        stats = node.cloud.stats()
        assert stats["status_patches"] == reporter.counters.patches
        assert stats["reports_coalesced"] >= 1000 - stats["status_patches"]
        assert stats["outbox_depth"] == 0
    patches = cluster.api.count("PATCH", f"/devicestatuses/{name}/status")
    assert 1 <= patches <= 6, patches  # 1,000 reports in ~1-2 s at one patch per second
    status = cluster.api.get(DEVICE_STATUSES, "default", name)
    assert status is not None
    owner = status["metadata"]["ownerReferences"][0]
    device = cluster.api.get(DEVICES, "default", name)
    assert device is not None
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Device",
        name,
        device["metadata"]["uid"],
    )
    twin = next(t for t in status["status"]["twins"] if t["propertyName"] == "count")
    assert twin["reported"]["metadata"]["type"] == "int"


async def test_api_down_while_reports_flow_then_the_cluster_converges(
    cluster: Cluster, cloud_settings: Callable[..., Settings]
) -> None:
    settings = cloud_settings()
    name = await _device_with_node(cluster, settings)
    device = f"default/{name}"
    async with synced_node(settings) as node:
        assert node.cloud is not None
        cluster.api.stop()
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
        cluster.api.start()

        def converged() -> bool:
            status = (cluster.api.get(DEVICE_STATUSES, "default", name) or {}).get("status") or {}
            return (
                _reported(cluster.api.get(DEVICE_STATUSES, "default", name))
                == {"count": "199", "label": "7"}
                and status.get("state") == "online"
                and str(status.get("lastOnlineTime", "")).endswith("Z")
            )

        await cluster.api.until(converged)
        await until(
            lambda: node.cloud is not None and node.cloud.reporter.counters.outbox_depth == 0,
            "the outbox is empty",
        )


async def test_forbidden_status_writes_are_logged_once_and_the_node_keeps_serving(
    cluster: Cluster, cloud_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    cluster.api.forbidden.add(("patch", "devicestatuses/status"))
    settings = cloud_settings()
    name = await _device_with_node(cluster, settings)
    async with synced_node(settings) as node:
        assert node.cloud is not None
        await _burst(node.broker_port, f"default/{name}", range(3))
        await until(lambda: "Role does not allow" in caplog.text, "a clear log line")
        await _burst(node.broker_port, f"default/{name}", range(3, 6))
    assert caplog.text.count("Role does not allow") == 1
    assert f"status of default/{name} not written" in caplog.text


async def test_a_cluster_without_devicestatus_gets_device_status(tmp_path: Path) -> None:
    with (
        FakeKubeAPI(device_status=False, bookmark_interval=0.2) as api,
        Cluster(api, api.kubeconfig(tmp_path / "kubeconfig")) as cluster,
    ):
        settings = load_settings(
            node={"name": unique("node"), "data_dir": str(tmp_path)},
            broker={"port": 0},
            cloud={"kubeconfig": str(cluster.kubeconfig)},
        )
        name = await _device_with_node(cluster, settings)
        async with synced_node(settings) as node:
            await _burst(node.broker_port, f"default/{name}", range(5))
            await api.until(
                lambda: _reported(api.get(DEVICES, "default", name)).get("count") == "4"
            )
            # our own status write came back as a watch event, and changed nothing here
            assert node.engine.devices[f"default/{name}"].twins["count"].reported == "4"


async def test_get_devices_shows_whether_the_cluster_has_caught_up(
    cluster: Cluster, cloud_settings: Callable[..., Settings]
) -> None:
    settings = cloud_settings()
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

        cluster.api.stop()
        await _burst(node.broker_port, f"default/{name}", range(3))
        assert await cloud_column() == "pending"
        cluster.api.start()
        await cluster.api.until(
            lambda: _reported(cluster.api.get(DEVICE_STATUSES, "default", name)).get("count") == "2"
        )
        await until(lambda: not node.engine.cloud_pending, "nothing pending")
        assert await cloud_column() == "synced"


async def test_status_requests_stay_within_the_node_rate_limit(
    cluster: Cluster, cloud_settings: Callable[..., Settings]
) -> None:
    settings = cloud_settings(rate_limit=4.0)
    names = [await _device_with_node(cluster, settings) for _ in range(6)]
    async with synced_node(settings) as node:
        for name in names:  # each device's first write: GET, GET, POST, PATCH
            await _burst(node.broker_port, f"default/{name}", range(1))
        await cluster.api.until(
            lambda: all(
                _reported(cluster.api.get(DEVICE_STATUSES, "default", n)).get("count") == "0"
                for n in names
            ),
            timeout=30,
        )
    times = [
        t
        for t, _method, path in cluster.api.request_times
        if "/devicestatuses" in path or (_method == "GET" and "/devices/" in path)
    ]
    assert len(times) >= 6 * 4
    # a burst of at most 4, then 4 per second: no 1-second window holds more than 4 + 4
    assert max(sum(1 for u in times if t <= u < t + 1.0) for t in times) <= 8
    assert times[-1] - times[0] >= (len(times) - 4) / 4 - 0.5
