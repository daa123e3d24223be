"""The real kubectl against the fake API server: install crds/, then apply Device manifests
and see them reach a node. (The fake server serves no OpenAPI document, so kubectl's
client-side validation is off: --validate=false.)"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import yaml

from edgetwin.wire import topics
from tests.kube.apiserver import Resource
from tests.kube.conftest import Cluster, synced_node
from tests.support import Paho

ROOT = Path(__file__).parents[2]


def kubectl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "--validate=false", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_kubectl_apply_k_installs_the_crds_and_the_role(cluster: Cluster) -> None:
    first = await asyncio.to_thread(kubectl, cluster, "apply", "-k", str(ROOT / "crds"))
    assert first.returncode == 0, first.stderr
    for created in (
        "customresourcedefinition.apiextensions.k8s.io/devices.devices.kubeedge.io created",
        "customresourcedefinition.apiextensions.k8s.io/devicestatuses.devices.kubeedge.io created",
        "role.rbac.authorization.k8s.io/edgetwin-node created",
        "serviceaccount/edgetwin-node created",
    ):
        assert created in first.stdout
    again = await asyncio.to_thread(kubectl, cluster, "apply", "-k", str(ROOT / "crds"))
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout

    crds = Resource(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
    )
    device_crd = cluster.api.get(crds, "", "devices.devices.kubeedge.io")
    assert device_crd is not None
    version = device_crd["spec"]["versions"][0]
    assert version["selectableFields"] == [{"jsonPath": ".spec.nodeName"}]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Model",
        "Node",
        "Protocol",
        "Age",
    ]
    status_crd = cluster.api.get(crds, "", "devicestatuses.devices.kubeedge.io")
    assert status_crd is not None
    assert status_crd["spec"]["versions"][0]["subresources"] == {"status": {}}

    roles = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role")
    role = cluster.api.get(roles, "default", "edgetwin-node")
    assert role is not None
    grants = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert grants == {
        *((r, v) for r in ("devices", "devicemodels") for v in ("get", "list", "watch")),
        *(
            (r, v)
            for r in ("devicestatuses", "devicestatuses/status")
            for v in ("get", "create", "patch")
        ),
    }


async def test_kubectl_apply_of_a_device_reaches_the_node(
    cluster: Cluster, cloud_settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = cloud_settings()
    device = yaml.safe_load((ROOT / "examples/thermostat/device.yaml").read_text())
    device["spec"]["nodeName"] = settings.node.name
    manifest = tmp_path / "device.yaml"
    manifest.write_text(yaml.safe_dump(device))
    applied = await asyncio.to_thread(
        kubectl,
        cluster,
        "apply",
        "-f",
        str(ROOT / "examples/thermostat/model.yaml"),
        "-f",
        str(manifest),
    )
    assert applied.returncode == 0, applied.stderr
    async with synced_node(settings) as node:
        assert (
            node.engine.devices["default/thermostat-01"].twins["target-temperature"].desired == "21"
        )
        async with Paho(node.broker_port) as mqtt:
            delta_topic = topics.delta_topic("default/thermostat-01")
            await mqtt.subscribe(delta_topic)
            device["spec"]["properties"][0]["desired"]["value"] = "24.5"
            manifest.write_text(yaml.safe_dump(device))
            again = await asyncio.to_thread(kubectl, cluster, "apply", "-f", str(manifest))
            assert again.returncode == 0, again.stderr
            assert "thermostat-01 configured" in again.stdout
            delta = await mqtt.next(delta_topic)
    assert delta["delta"] == {"target-temperature": "24.5"}
