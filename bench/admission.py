"""What the per-node admission policies (crds/admission.yaml) cost the API server.

A DeviceStatus write by a node is checked against every Device of its namespace (the
policy's parameters), so its cost grows with the namespace. The bench runs the tests'
real kube-apiserver with our crds/, and times sequential status patches of one device
with 10 and with 1,000 Devices in the namespace: as a node (the policies apply) and as an
admin (they do not), reporting latency and the API server's CPU per patch (from
/proc/PID/stat). Run: ``.venv/bin/python -m bench.admission [--patches N]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from tests.kube.conftest import OURS, Cluster, G, V, own_cluster

_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _configuration(kubeconfig: Path) -> Any:
    configuration = client.Configuration()
    config.load_kube_config(str(kubeconfig), client_configuration=configuration)
    return configuration


def _api(kubeconfig: Path) -> Any:
    return client.CustomObjectsApi(client.ApiClient(_configuration(kubeconfig)))


def measure(cluster: Cluster, api: Any, name: str, patches: int) -> tuple[float, float, float]:
    """p50 and p99 latency (ms) and API server CPU per patch (ms)."""
    assert cluster.server.proc is not None
    pid = cluster.server.proc.pid
    samples = []
    cpu = _cpu_seconds(pid)
    for i in range(patches):
        body = {"status": {"twins": [{"propertyName": "count", "reported": {"value": str(i)}}]}}
        started = time.perf_counter()
        api.patch_namespaced_custom_object(G, V, "default", "devicestatuses", name, body)
        samples.append((time.perf_counter() - started) * 1000)
    cpu = (_cpu_seconds(pid) - cpu) * 1000 / patches
    quantiles = statistics.quantiles(samples, n=100)
    return quantiles[49], quantiles[98], cpu


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patches", type=int, default=500)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, own_cluster(Path(tmp), OURS) as cluster:
        node = "bench-node"
        as_node = _api(cluster.node_kubeconfig(Path(tmp), node))
        as_admin = _api(cluster.kubeconfig)
        await cluster.add_thermostat("mine", node)
        await cluster.create(
            "devicestatuses",
            {"apiVersion": f"{G}/{V}", "kind": "DeviceStatus", "metadata": {"name": "mine"}},
        )
        count = 1
        for size in (10, 1000):
            while count < size:
                await cluster.add_thermostat(f"other-{count}", "another-node")
                count += 1
            for who, api in (("node", as_node), ("admin", as_admin)):
                measure(cluster, api, "mine", 50)  # warm up
                p50, p99, cpu = measure(cluster, api, "mine", args.patches)
                rows.append((size, who, "bound", p50, p99, cpu))
        admission = client.AdmissionregistrationV1Api(
            client.ApiClient(_configuration(cluster.kubeconfig))
        )
        admission.delete_validating_admission_policy_binding("edgetwin-node-status-writes")
        for who, api in (("node", as_node), ("admin", as_admin)):
            measure(cluster, api, "mine", 50)  # warm up, and the binding is gone meanwhile
            p50, p99, cpu = measure(cluster, api, "mine", args.patches)
            rows.append((count, who, "removed", p50, p99, cpu))
    print(
        f"{args.patches} sequential DeviceStatus merge patches, kube-apiserver 1.37.2 on loopback\n"
    )
    print(
        "| Devices in the namespace | writer | DeviceStatus policy binding | p50 | p99 "
        "| API server CPU per patch |"
    )
    print("| ---: | --- | --- | ---: | ---: | ---: |")
    for size, who, binding, p50, p99, cpu in rows:
        print(f"| {size:,} | {who} | {binding} | {p50:.1f} ms | {p99:.1f} ms | {cpu:.2f} ms |")


if __name__ == "__main__":
    asyncio.run(main())
