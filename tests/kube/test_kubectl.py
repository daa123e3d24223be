"""kubectl, built from k8s.io/kubectl, against the real API server as a user runs it (strict
field validation, its default): install crds/, explain and list devices, apply Device
manifests and see them reach a node."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import yaml

from edgetwin.wire import topics
from tests.kube.conftest import OURS, Cluster, install, own_cluster, synced_node
from tests.kube.kubestand import ROOT, kubectl
from tests.support import Paho, unique


def _ok(done: Any) -> str:
    assert done.returncode == 0, done.stderr
    return str(done.stdout)


async def test_kubectl_apply_k_installs_the_crds_and_the_role(tmp_path: Path) -> None:
    with own_cluster(tmp_path) as cluster:
        first = await asyncio.to_thread(install, cluster.kubeconfig, OURS)
        crd = "customresourcedefinition.apiextensions.k8s.io"
        policy = "validatingadmissionpolicy.admissionregistration.k8s.io"
        for created in (
            f"{crd}/devices.devices.kubeedge.io created",
            f"{crd}/devicestatuses.devices.kubeedge.io created",
            "role.rbac.authorization.k8s.io/edgetwin-node created",
            "namespace/edgetwin-nodes created",
            f"{policy}/edgetwin-node-status-writes created",
        ):
            assert created in first
        again = await asyncio.to_thread(install, cluster.kubeconfig, OURS)
        assert "created" not in again

        crd = orjson.loads(
            _ok(
                kubectl(
                    cluster.kubeconfig, "get", "crd", "devices.devices.kubeedge.io", "-o", "json"
                )
            )
        )
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
        assert version["selectableFields"] == [{"jsonPath": ".spec.nodeName"}]
        assert [c["name"] for c in version["additionalPrinterColumns"]] == [
            "Model",
            "Node",
            "Protocol",
            "Age",
        ]
        role = orjson.loads(
            _ok(kubectl(cluster.kubeconfig, "get", "role", "edgetwin-node", "-o", "json"))
        )
        grants = {
            (r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]
        }
        assert grants == {
            *((r, v) for r in ("devices", "devicemodels") for v in ("get", "list", "watch")),
            *(("devicestatuses", v) for v in ("get", "create", "patch", "delete")),
            *((r, "patch") for r in ("devices", "devices/status", "devicestatuses/status")),
        }


async def test_kubectl_explain_describes_device_properties(cluster: Cluster) -> None:
    explained = await asyncio.to_thread(
        kubectl, cluster.kubeconfig, "explain", "device.spec.properties"
    )
    text = _ok(explained)
    assert "GROUP:      devices.kubeedge.io" in text
    for field in ("desired", "visitors", "reportCycle", "collectCycle", "reportToCloud"):
        assert field in text


async def test_kubectl_get_devices_columns_and_field_selector(cluster: Cluster) -> None:
    node_a, node_b = unique("edge"), unique("edge")
    mine, theirs = unique("dev"), unique("dev")
    await cluster.add_thermostat(mine, node_a)
    await cluster.add_thermostat(theirs, node_b)
    table = _ok(
        await asyncio.to_thread(
            kubectl,
            cluster.kubeconfig,
            "get",
            "devices",
            "--field-selector",
            f"spec.nodeName={node_a}",
        )
    )
    header, *rows = table.splitlines()
    assert header.split() == ["NAME", "MODEL", "NODE", "PROTOCOL", "AGE"]
    assert [row.split()[:4] for row in rows] == [[mine, "thermostat", node_a, "modbus"]]


async def test_strict_validation_refuses_a_misspelt_field(cluster: Cluster, tmp_path: Path) -> None:
    device = yaml.safe_load((ROOT / "examples/thermostat/device.yaml").read_text())
    device["metadata"]["name"] = unique("dev")
    device["spec"]["properties"][0]["reportCylce"] = 1000  # sic
    manifest = tmp_path / "device.yaml"
    manifest.write_text(yaml.safe_dump(device))
    refused = await asyncio.to_thread(kubectl, cluster.kubeconfig, "apply", "-f", str(manifest))
    assert refused.returncode != 0
    assert 'unknown field "spec.properties[0].reportCylce"' in refused.stderr


async def test_kubectl_apply_of_a_device_reaches_the_node(
    cluster: Cluster, cloud_settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = cloud_settings()
    device = yaml.safe_load((ROOT / "examples/thermostat/device.yaml").read_text())
    name = device["metadata"]["name"] = unique("thermostat")
    device["spec"]["nodeName"] = settings.node.name
    manifest = tmp_path / "device.yaml"
    manifest.write_text(yaml.safe_dump(device))
    model = ROOT / "examples/thermostat/model.yaml"
    _ok(
        await asyncio.to_thread(
            kubectl, cluster.kubeconfig, "apply", "-f", str(model), "-f", str(manifest)
        )
    )
    async with synced_node(settings) as node:
        assert (
            node.engine.devices[f"default/{name}"].properties["target-temperature"].desired == "21"
        )
        async with Paho(node.broker_port) as mqtt:
            delta_topic = topics.delta_topic(f"default/{name}")
            await mqtt.subscribe(delta_topic)
            device["spec"]["properties"][0]["desired"]["value"] = "24.5"
            manifest.write_text(yaml.safe_dump(device))
            again = _ok(
                await asyncio.to_thread(kubectl, cluster.kubeconfig, "apply", "-f", str(manifest))
            )
            assert f"{name} configured" in again
            delta = await mqtt.next(delta_topic)
    assert delta["delta"] == {"target-temperature": "24.5"}
