"""What the per-node admission policies (crds/admission.yaml) cost the API server.

The bench runs the tests' real kube-apiserver with our crds/ (or, with ``--policies``,
another admission file in their place: the one before the O(1) redesign, say), and times
sequential status patches of one device as the Devices of its namespace grow (``--sizes``):
as a node (the policies apply) and as an admin (they do not), reporting latency and the
API server's CPU per patch (from /proc/PID/stat). A policy with parameters collects them
(every Device of the namespace) for every request it matches, before its match conditions
look at who asks: that is what the redesign keeps off the status patch.

Run: ``.venv/bin/python -m bench.admission [--patches N] [--sizes 10 1000 10000]
[--policies FILE]``, e.g. the former policies:
``git show 6177211:crds/admission.yaml > /tmp/before.yaml``.
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
from tests.kube.conftest import OURS, Cluster, G, V, install, own_cluster

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
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--policies", type=Path, help="an admission file instead of ours")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, own_cluster(Path(tmp), OURS) as cluster:
        if args.policies is not None:
            replace_policies(cluster, args.policies)
        node = "bench-node"
        as_node = _api(cluster.node_kubeconfig(Path(tmp), node))
        as_admin = _api(cluster.kubeconfig)
        await cluster.add_thermostat("mine", node)
        device = await cluster.get("devices", "mine")
        assert device is not None
        owner = {"apiVersion": f"{G}/{V}", "kind": "Device", "name": "mine"}
        owner["uid"] = device["metadata"]["uid"]
        meta = {
            "name": "mine",
            "annotations": {"edgetwin.io/status-writer": node},
            "labels": {"edgetwin.io/node-status": "true"},
            "ownerReferences": [owner],
        }
        body = {"apiVersion": f"{G}/{V}", "kind": "DeviceStatus", "metadata": meta}
        as_node.create_namespaced_custom_object(G, V, "default", "devicestatuses", body)
        count = 1
        for size in args.sizes:
            while count < size:
                await cluster.add_thermostat(f"other-{count}", "another-node")
                count += 1
            for who, api in (("node", as_node), ("admin", as_admin)):
                measure(cluster, api, "mine", 5)  # warm up
                p50, p99, cpu = measure(cluster, api, "mine", args.patches)
                rows.append((size, who, p50, p99, cpu))
                print(rows[-1], flush=True)
        creates = await _creates(cluster, as_node, as_admin, node)
    policies = args.policies or "crds/admission.yaml"
    print(
        f"{args.patches} sequential DeviceStatus merge patches, kube-apiserver 1.37.2 on "
        f"loopback, policies {policies}\n"
    )
    print("| Devices in the namespace | writer | p50 | p99 | API server CPU per patch |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for size, who, p50, p99, cpu in rows:
        print(f"| {size:,} | {who} | {p50:.1f} ms | {p99:.1f} ms | {cpu:.2f} ms |")
    print(f"\nDeviceStatus creates with {count:,} Devices in the namespace, API server CPU each:")
    for who, cpu in creates.items():
        print(f"- {who}: {cpu:.2f} ms")


async def _creates(
    cluster: Cluster, as_node: Any, as_admin: Any, node: str, each: int = 20
) -> dict[str, float]:
    """API server CPU per DeviceStatus create: a node's (checked against the namespace's
    Devices) and an admin's or cloudcore's (not)."""
    assert cluster.server.proc is not None
    pid = cluster.server.proc.pid
    out = {}
    for who, api in (("node", as_node), ("admin", as_admin)):
        bodies = []
        for i in range(each):
            name = f"{who}-create-{i}"
            await cluster.add_thermostat(name, node)
            device = await cluster.get("devices", name)
            assert device is not None
            owner = {"apiVersion": f"{G}/{V}", "kind": "Device", "name": name}
            owner["uid"] = device["metadata"]["uid"]
            meta: dict[str, Any] = {"name": name, "ownerReferences": [owner]}
            if who == "node":
                meta["annotations"] = {"edgetwin.io/status-writer": node}
                meta["labels"] = {"edgetwin.io/node-status": "true"}
            bodies.append({"apiVersion": f"{G}/{V}", "kind": "DeviceStatus", "metadata": meta})
        cpu = _cpu_seconds(pid)
        for body in bodies:
            api.create_namespaced_custom_object(G, V, "default", "devicestatuses", body)
        out[who] = (_cpu_seconds(pid) - cpu) * 1000 / each
    return out


def replace_policies(cluster: Cluster, policies: Path) -> None:
    """Our policies and bindings out, those of ``policies`` in."""
    admission = client.AdmissionregistrationV1Api(
        client.ApiClient(_configuration(cluster.kubeconfig))
    )
    for binding in admission.list_validating_admission_policy_binding().items:
        admission.delete_validating_admission_policy_binding(binding.metadata.name)
    for policy in admission.list_validating_admission_policy().items:
        admission.delete_validating_admission_policy(policy.metadata.name)
    install(cluster.kubeconfig, f"-f {policies}")


if __name__ == "__main__":
    asyncio.run(main())
