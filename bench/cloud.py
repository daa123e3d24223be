"""Cloud sync: time from a Device update at the API server to the delta on MQTT, and status
patches per 1,000 reported updates.

A real node process follows a real kube-apiserver (the tests' stand: ``kubestand``, built
by tests/kube/stand/build, with our crds/ installed by kubectl) with its own
ServiceAccount token; the bench drives the server with the official client as an admin and
listens on MQTT with paho. Patches are counted from the API server's audit log.
Run: ``.venv/bin/python -m bench.cloud [--updates N]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from tests.kube.conftest import OURS, Cluster, own_cluster
from tests.support import NodeProcess, Paho, thermostat

from edgetwin.wire import topics


async def latency(
    cluster: Cluster, port: int, node: str, updates: int
) -> tuple[list[float], list[float]]:
    """Per update: PATCH sent -> delta on MQTT, and the PATCH's own round trip (ms)."""
    device = "default/bench-1"
    samples, round_trips = [], []
    async with Paho(port) as mqtt:
        await mqtt.subscribe(topics.delta_topic(device))
        for i in range(updates):
            spec = thermostat(
                "bench-1", node=node, desired={"target": str(10 + i % 20)}
            ).to_document()["spec"]
            started = time.perf_counter()
            await cluster.patch("devices", "bench-1", {"spec": spec})
            round_trips.append((time.perf_counter() - started) * 1000)
            delta = await mqtt.next(topics.delta_topic(device))
            samples.append((time.perf_counter() - started) * 1000)
            assert delta["delta"]["target"] == str(10 + i % 20)
    return samples, round_trips


async def reports(
    cluster: Cluster, port: int, name: str, count: int, rate: float | None
) -> tuple[int, float]:
    """Reported updates (a burst, or ``rate`` per second); the patches until status is exact."""
    before = patches(cluster, name)
    update = topics.twin_update_topic(f"default/{name}")
    started = time.perf_counter()
    async with Paho(port) as mqtt:
        await mqtt.subscribe(f"{update}/result")
        for i in range(count):
            mqtt.publish(update, {"twin": {"count": {"actual": {"value": str(i)}}}})
            if rate:
                await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.perf_counter()))
        for _ in range(count):
            await mqtt.next(f"{update}/result")
    last = str(count - 1)
    while True:
        status = await cluster.get("devicestatuses", name) or {}
        twins = (status.get("status") or {}).get("twins") or []
        if any(t["propertyName"] == "count" and t["reported"]["value"] == last for t in twins):
            break
        await asyncio.sleep(0.05)
    return patches(cluster, name) - before, time.perf_counter() - started


def patches(cluster: Cluster, name: str) -> int:
    return sum(
        1
        for r in cluster.server.requests()
        if r.verb == "patch" and r.resource == "devicestatuses" and r.name == name
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=1000)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        own_cluster(Path(tmp), OURS) as cluster,
    ):
        node_name = "bench-node"
        for name in ("bench-1", "bench-2", "bench-3"):
            await cluster.add_thermostat(name, node_name)
        kubeconfig = cluster.node_kubeconfig(Path(tmp), node_name)
        node = NodeProcess(
            Path(tmp) / "data", node=node_name, extra=("--kubeconfig", str(kubeconfig))
        )
        with node:
            async with Paho(node.port) as mqtt:  # until the node has the devices
                get = topics.twin_get_topic("default/bench-3")
                await mqtt.subscribe(f"{get}/result")
                while "code" in await mqtt.request(get, {}):
                    await asyncio.sleep(0.05)
            samples, round_trips = await latency(cluster, node.port, node_name, args.updates)
            burst = await reports(cluster, node.port, "bench-2", 1000, None)
            steady = await reports(cluster, node.port, "bench-3", 1000, 200.0)
    quantiles = statistics.quantiles(samples, n=100)
    print(
        f"{args.updates} Device updates, one at a time; node process, kube-apiserver on loopback\n"
    )
    print("| measure | value |")
    print("| --- | ---: |")
    print(f"| update at API server -> delta on MQTT, p50 | {quantiles[49]:.1f} ms |")
    print(f"| update at API server -> delta on MQTT, p99 | {quantiles[98]:.1f} ms |")
    print(f"| of which the PATCH round trip, p50 | {statistics.median(round_trips):.1f} ms |")
    print(
        f"| status patches for 1,000 reports in a burst ({burst[1]:.1f} s to exact) | {burst[0]} |"
    )
    print(
        f"| status patches for 1,000 reports at 200/s ({steady[1]:.1f} s to exact) | {steady[0]} |"
    )


if __name__ == "__main__":
    asyncio.run(main())
