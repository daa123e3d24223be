"""In a pod: the node finds the API server from KUBERNETES_SERVICE_HOST/PORT, speaks HTTPS
with the service account's CA and token, and follows the pod's own namespace (the
service account's namespace file), where the devices are and crds/rbac.yaml's Role is
bound as its comment says; the token never reaches the log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from edgetwin.config import load_settings
from tests.kube.conftest import Cluster, node_user, synced_node
from tests.kube.kubestand import ROOT, kubectl
from tests.support import unique


async def test_service_account_credentials(
    cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    node_name, name = unique("node"), unique("dev")
    kubeconfig = cluster.node_kubeconfig(tmp_path, node_name)
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(token)
    (account / "ca.crt").write_bytes((cluster.server.folder / "ca.crt").read_bytes())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(cluster.server.port))
    site = await asyncio.to_thread(cluster.namespace, unique("site"))
    (account / "namespace").write_text(site)
    rbac = [
        doc | {"metadata": doc["metadata"] | {"namespace": site}}
        for doc in yaml.safe_load_all((ROOT / "crds" / "rbac.yaml").read_text())
        if doc["kind"] in ("Role", "RoleBinding")
    ]
    (tmp_path / "rbac.yaml").write_text(yaml.safe_dump_all(rbac))
    bound = await asyncio.to_thread(
        kubectl, cluster.kubeconfig, "apply", "-f", str(tmp_path / "rbac.yaml")
    )
    assert bound.returncode == 0, bound.stderr
    await cluster.add_thermostat(name, node_name, namespace=site)
    settings = load_settings(
        node={"name": node_name, "data_dir": str(tmp_path / "data")},
        broker={"port": 0},
        cloud={"in_cluster": True, "service_account_dir": str(account)},
    )
    async with synced_node(settings) as node:
        assert set(node.engine.devices) == {f"{site}/{name}"}
    assert token not in caplog.text
    lists = [
        r
        for r in cluster.server.requests()
        if r.user == node_user(node_name)
        and r.resource == "devices"
        and r.verb == "list"
        and r.code == 200
    ]
    assert lists
