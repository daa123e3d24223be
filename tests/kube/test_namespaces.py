"""Which namespaces a node follows, as kubectl would: the kubeconfig context's namespace by
default, each --namespace given, or every namespace with --all-namespaces (and the
ClusterRole of crds/rbac-all-namespaces.yaml). The node says which at start, and
``edgetwin get devices`` shows it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from edgetwin.config import load_settings
from edgetwin.node import Node
from tests.kube.conftest import Cluster, grant, install, synced_node
from tests.kube.kubestand import ROOT
from tests.support import run_cli, unique, until


async def test_the_kubeconfig_context_namespace_is_followed(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    site = await asyncio.to_thread(cluster.namespace, unique("site"))
    await asyncio.to_thread(
        grant, cluster, "node", [(["devices", "devicemodels"], ["get", "list", "watch"])], site
    )
    kubeconfig = cluster.service_account_kubeconfig(tmp_path / "site.kubeconfig", "node", site)
    node_name, name = unique("node"), unique("dev")
    await cluster.add_thermostat(name, node_name, namespace=site)
    settings = load_settings(
        node={"name": node_name, "data_dir": str(tmp_path / "data")},
        broker={"port": 0},
        cloud={"kubeconfig": str(kubeconfig)},
    )
    async with synced_node(settings) as node:
        assert set(node.engine.devices) == {f"{site}/{name}"}
        shown = await asyncio.to_thread(
            run_cli,
            "get",
            "devices",
            "--node",
            node_name,
            "--broker",
            f"127.0.0.1:{node.broker_port}",
        )
    assert shown.returncode == 0, shown.stderr
    assert f"following namespace {site} of the cluster" in shown.stderr
    assert f"{site}/{name}" in shown.stdout
    assert f"following namespace {site}" in caplog.text


async def test_each_namespace_given_is_followed(cluster: Cluster, tmp_path: Path) -> None:
    first, second = [await asyncio.to_thread(cluster.namespace, unique("ns")) for _ in range(2)]
    node_name = unique("node")
    for namespace in (first, second, "default"):
        await cluster.add_thermostat(unique("dev"), node_name, namespace=namespace)
    settings = load_settings(
        node={"name": node_name, "data_dir": str(tmp_path / "data")},
        broker={"port": 0},
        cloud={"kubeconfig": str(cluster.kubeconfig), "namespaces": [first, second]},
    )
    async with synced_node(settings) as node:
        assert {d.split("/")[0] for d in node.engine.devices} == {first, second}


async def test_all_namespaces_with_the_cluster_role(cluster: Cluster, tmp_path: Path) -> None:
    await asyncio.to_thread(
        install, cluster.kubeconfig, f"-f {ROOT / 'crds' / 'rbac-all-namespaces.yaml'}"
    )
    node_name = unique("node")
    kubeconfig = cluster.node_kubeconfig(tmp_path, node_name)
    spaces = [await asyncio.to_thread(cluster.namespace, unique("ns")) for _ in range(2)]
    names = {namespace: unique("dev") for namespace in spaces}
    for namespace, name in names.items():
        await cluster.add_thermostat(name, node_name, namespace=namespace)
    await cluster.add_thermostat(unique("theirs"), "another-node", namespace=spaces[0])
    settings = load_settings(
        node={"name": node_name, "data_dir": str(tmp_path / "data")},
        broker={"port": 0},
        cloud={"kubeconfig": str(kubeconfig), "all_namespaces": True, "retry_max_delay": 0.5},
    )
    async with Node(settings) as node:
        assert node.cloud is not None
        await node.cloud.wait_synced()
        assert set(node.engine.devices) == {f"{ns}/{name}" for ns, name in names.items()}
        later = await asyncio.to_thread(cluster.namespace, unique("ns"))
        await cluster.add_thermostat("late", node_name, namespace=later)
        await until(lambda: f"{later}/late" in node.engine.devices, "a device in a new namespace")
        await cluster.patch("devices", "late", {"spec": {"nodeName": "elsewhere"}}, later)
        await until(lambda: f"{later}/late" not in node.engine.devices, "it moved away")


def test_the_cluster_role_grants_what_the_role_does() -> None:
    """crds/rbac-all-namespaces.yaml repeats rbac.yaml's rules cluster-wide: kept in step."""

    def rules(file: str, kind: str) -> object:
        docs = yaml.safe_load_all((ROOT / "crds" / file).read_text())
        return next(doc["rules"] for doc in docs if doc["kind"] == kind)

    assert rules("rbac-all-namespaces.yaml", "ClusterRole") == rules("rbac.yaml", "Role")
