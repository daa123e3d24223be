"""A fleet on one API server: as many node processes as this machine holds, each with its own
ServiceAccount token, following their own Devices on the tests' real kube-apiserver
(crds/ installed: the Role and the admission policies). Each node is a site: its Devices
in a namespace of their own, where the Role is bound (as the README advises: creating a
DeviceStatus checks every Device of its namespace, so namespaces stay site-sized).

Lighter node mode, stated: the nodes share one mosquitto (``--external-broker``) instead of
running one each, and run no mapper; the bench publishes the devices' reports itself.
Everything between a node and the API server (list, watch, status writes, the outbox, the
policies) is the full node's.

Measured from the API server's audit log (every request to devices.kubeedge.io) and its
/proc: requests per node per minute at rest and while every device reports every
``--report-every`` seconds; watches open (its ``apiserver_longrunning_requests``); status
writes; the API server's CPU and RSS (etcd runs in the same process here). Then one edit
changes every device's desired value (the admin patches each Device, as applying one
overlay does): the time until each node has every one of its deltas, p50/p99/max.

Run: ``.venv/bin/python -m bench.fleet [--nodes 50] [--devices 200] [--seconds 60]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
import yaml
from kubernetes import client, config
from tests.kube.conftest import OURS, Cluster, G, V, own_cluster
from tests.kube.kubestand import ROOT
from tests.support import Mosquitto, NodeProcess, Paho, thermostat, thermostat_model

from bench.throughput import cpu_seconds, rss_mb, wait_for_specs
from edgetwin.wire import topics


def _audit(cluster: Cluster, since: float) -> list[dict[str, object]]:
    """Completed requests to devices.kubeedge.io received after ``since`` (epoch s)."""
    out = []
    for line in cluster.server.audit_log.read_bytes().splitlines():
        event = orjson.loads(line)
        if event.get("stage") != "ResponseComplete":
            continue
        if datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp() < since:
            continue
        ref = event.get("objectRef") or {}
        out.append(
            {
                "user": event["user"]["username"],
                "verb": event["verb"],
                "resource": ref.get("resource", ""),
            }
        )
    return out


def _watches(cluster: Cluster) -> int:
    text = cluster.server.http("GET", "/metrics").decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("apiserver_longrunning_requests{")
        and 'group="devices.kubeedge.io"' in line
        and 'verb="WATCH"' in line
    )


def _window(cluster: Cluster, nodes: int, started: float, seconds: float) -> dict[str, float]:
    prefix = "system:serviceaccount:edgetwin-nodes:"
    events = [e for e in _audit(cluster, started) if str(e["user"]).startswith(prefix)]
    by_node = Counter(str(e["user"]).removeprefix(prefix) for e in events)
    per_minute = [by_node.get(f"n{i}", 0) * 60 / seconds for i in range(nodes)]
    writes = sum(1 for e in events if e["verb"] in ("patch", "update", "create"))
    return {
        "requests/node/min p50": statistics.median(per_minute),
        "requests/node/min max": max(per_minute),
        "status writes": writes,
        "status writes/s": writes / seconds,
    }


async def _report(port: int, devices: list[str], every: float, seconds: float) -> int:
    """Each device reports a new value every ``every`` seconds, for ``seconds``."""
    sent = 0
    async with Paho(port) as mqtt:
        deadline = time.monotonic() + seconds
        value = 0
        while time.monotonic() < deadline:
            turn = time.monotonic()
            value += 1
            for device in devices:
                body = {"twin": {"current": {"actual": {"value": str(20 + value % 10)}}}}
                mqtt.publish(topics.twin_update_topic(device), body)
                sent += 1
            await asyncio.sleep(max(0.0, turn + every - time.monotonic()))
    return sent


async def _fleet_change(
    cluster: Cluster, port: int, owners: dict[str, str], value: str
) -> list[float]:
    """Every Device's desired target patched; per node, seconds until its last delta."""
    api = client.CustomObjectsApi(client.ApiClient(_configuration(cluster)))
    pending = dict(owners)
    last: dict[str, float] = {}
    async with Paho(port) as mqtt:
        await mqtt.subscribe(f"{topics.DEVICE_PREFIX}/+/+/twin/update/delta")
        started = time.perf_counter()

        def patch_all() -> None:
            for device, node in owners.items():
                site, name = device.split("/", 1)
                spec = thermostat(name, site, node=node, desired={"target": value}).to_document()
                body = {"spec": spec["spec"]}
                api.patch_namespaced_custom_object(G, V, site, "devices", name, body)

        patching = asyncio.create_task(asyncio.to_thread(patch_all))
        while pending:
            topic, payload, _ = await asyncio.wait_for(mqtt.messages.get(), 600)
            device = "/".join(topic.split("/")[3:5])
            if device in pending and orjson.loads(payload).get("delta", {}).get("target") == value:
                last[pending.pop(device)] = time.perf_counter() - started
        await patching
    return sorted(last.values())


def _site(cluster: Cluster, name: str) -> str:
    """A namespace with the nodes' Role of crds/rbac.yaml bound in it."""
    cluster.namespace(name)
    rbac = client.RbacAuthorizationV1Api(client.ApiClient(_configuration(cluster)))
    for document in yaml.safe_load_all((ROOT / "crds/rbac.yaml").read_text()):
        if document["kind"] == "Role":
            document["metadata"]["namespace"] = name
            rbac.create_namespaced_role(name, document)
        elif document["kind"] == "RoleBinding":
            document["metadata"]["namespace"] = name
            rbac.create_namespaced_role_binding(name, document)
    return name


def _configuration(cluster: Cluster) -> client.Configuration:
    configuration = client.Configuration()
    config.load_kube_config(str(cluster.kubeconfig), client_configuration=configuration)
    return configuration


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--devices", type=int, default=200, help="per node")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--report-every", type=float, default=10.0)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="fleet-") as tmp,
        own_cluster(Path(tmp), OURS) as cluster,
    ):
        root = Path(tmp)
        assert cluster.server.proc is not None
        server = cluster.server.proc.pid
        owners: dict[str, str] = {}
        for n in range(args.nodes):
            site = _site(cluster, f"site-{n}")
            await cluster.create("devicemodels", thermostat_model(site).to_document(), site)
            for d in range(args.devices):
                name = f"n{n}-d{d}"
                device = thermostat(name, site, node=f"n{n}").to_document()
                await cluster.create("devices", device, site)
                owners[f"{site}/{name}"] = f"n{n}"
        print(f"{len(owners):,} Devices for {args.nodes} nodes", flush=True)
        cpu0, rss0 = cpu_seconds(server), rss_mb(server)
        with Mosquitto(root) as broker:
            nodes = []
            started = time.time()
            for n in range(args.nodes):
                kubeconfig = cluster.node_kubeconfig(root, f"n{n}")
                node = NodeProcess(
                    root / f"n{n}",
                    node=f"n{n}",
                    external_port=broker.port,
                    extra=("--kubeconfig", str(kubeconfig), "--namespace", f"site-{n}"),
                    env={"EDGETWIN_STORE__SYNCHRONOUS": "NORMAL"},
                )
                nodes.append(node.start())
            await wait_for_specs(broker.port, len(owners))
            up = time.time() - started
            print(f"all nodes synced in {up:.0f} s", flush=True)
            node_rss = statistics.median(rss_mb(n.proc.pid) for n in nodes if n.proc)
            try:
                rest = time.time()
                cpu = cpu_seconds(server)
                await asyncio.sleep(args.seconds)
                at_rest = _window(cluster, args.nodes, rest, args.seconds)
                at_rest["API server CPU"] = (cpu_seconds(server) - cpu) / args.seconds
                at_rest["watches open"] = _watches(cluster)
                print("at rest", at_rest, flush=True)

                windows = []
                for _ in ("first (each DeviceStatus created)", "then"):
                    busy = time.time()
                    cpu = cpu_seconds(server)
                    sent = await _report(broker.port, list(owners), args.report_every, args.seconds)
                    reporting = _window(cluster, args.nodes, busy, args.seconds)
                    reporting["API server CPU"] = (cpu_seconds(server) - cpu) / args.seconds
                    reporting["reports sent"] = sent
                    print("reporting", reporting, flush=True)
                    windows.append(reporting)

                cpu = cpu_seconds(server)
                times = await _fleet_change(cluster, broker.port, owners, "27.5")
                change_cpu = cpu_seconds(server) - cpu
            finally:
                for node in nodes:
                    node.stop()
        quantiles = statistics.quantiles(times, n=100, method="inclusive")
        print(
            f"\n{args.nodes} nodes x {args.devices} devices; node RSS p50 {node_rss:.0f} MB; "
            f"API server RSS {rss0:.0f} MB before the nodes, {rss_mb(server):.0f} MB after; "
            f"API server CPU from the nodes' start to the end "
            f"{cpu_seconds(server) - cpu0:.0f} s in all"
        )
        print(f"at rest: {at_rest}")
        for label, window in zip(("first minute", "second minute"), windows, strict=True):
            print(f"reporting (every device every {args.report_every:g} s), {label}: {window}")
        print(
            f"fleet-wide change of {len(owners):,} Devices: every node has it after p50 "
            f"{quantiles[49]:.1f} s, p99 {quantiles[98]:.1f} s, max {times[-1]:.1f} s; "
            f"API server CPU {change_cpu:.1f} s"
        )


if __name__ == "__main__":
    asyncio.run(main())
