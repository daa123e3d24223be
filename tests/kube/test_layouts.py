"""Two CRD layouts on a real API server: our crds/, and KubeEdge's own CRDs exactly as a
cluster that runs KubeEdge has them (loaded from ../shared/kubeedge/crds, with our Role).
KubeEdge's DeviceStatus has no status subresource (cloudcore merge-patches the main
object): the node finds out from discovery and writes where the cluster takes it, and
nothing it writes is pruned by either schema. Our CRDs applied over KubeEdge's leave
KubeEdge working."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from edgetwin.wire import topics
from tests.kube.conftest import (
    KUBEEDGE_CRDS,
    OURS,
    Cluster,
    install,
    node_settings_for,
    node_user,
    own_cluster,
    synced_node,
)
from tests.kube.kubestand import ROOT, kubectl
from tests.support import Paho, unique

KUBEEDGE = tuple(f"-f {crd}" for crd in sorted(KUBEEDGE_CRDS.iterdir()))
LAYOUTS = {
    "ours": (OURS,),
    "kubeedge": (*KUBEEDGE, *(f"-f {ROOT / 'crds' / f}" for f in ("rbac.yaml", "admission.yaml"))),
}


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_every_status_field_the_node_writes_reads_back(layout: str, tmp_path: Path) -> None:
    with own_cluster(tmp_path, *LAYOUTS[layout]) as cluster:
        settings = node_settings_for(cluster, tmp_path)
        name = unique("dev")
        device = f"default/{name}"
        await cluster.add_thermostat(name, settings.node.name, desired={"target": "22.5"})
        async with synced_node(settings) as node, Paho(node.broker_port) as mqtt:
            update, state = topics.twin_update_topic(device), topics.state_update_topic(device)
            await mqtt.subscribe(f"{update}/result", f"{state}/result")
            report = {
                "target": "22.5",
                "current": "19.25",
                "count": "7",
                "enabled": "true",
                "label": "hall",
                "blob": "AAE=",
            }
            twin = {prop: {"actual": {"value": value}} for prop, value in report.items()}
            assert "code" not in await mqtt.request(update, {"twin": twin})
            assert "code" not in await mqtt.request(state, {"state": "online"})
            written = node.engine.cloud_status(device)
            assert written is not None
            assert len(written["twins"]) == len(report)
            assert written["state"] == "online"

            async def read_back() -> bool:
                obj = await cluster.get("devicestatuses", name)
                return (obj or {}).get("status") == written

            await cluster.until(read_back, "the status reads back as the node wrote it")
        writes = [
            r
            for r in cluster.server.requests()
            if r.user == node_user(settings.node.name) and r.verb in ("create", "patch", "update")
        ]
        assert {(r.resource, r.subresource, r.code) for r in writes} == {
            ("devicestatuses", "", 201),
            ("devicestatuses", "", 200),
        }


async def _as_cloudcore(cluster: Cluster, name: str, value: str) -> dict[str, Any] | None:
    """What cloudcore does: a JSON merge patch of the DeviceStatus main object."""
    await cluster.patch(
        "devicestatuses",
        name,
        {
            "status": {
                "twins": [{"propertyName": "count", "reported": {"value": value}}],
                "extensions": {"cloudcore": {"seen": value}},
            }
        },
    )
    return await cluster.get("devicestatuses", name)


async def test_our_crds_applied_on_a_kubeedge_cluster_keep_it_working(tmp_path: Path) -> None:
    with own_cluster(tmp_path, *KUBEEDGE) as cluster:
        name = unique("dev")
        await cluster.add_thermostat(name, "edge-1")
        await cluster.create(
            "devicestatuses",
            {
                "apiVersion": "devices.kubeedge.io/v1beta1",
                "kind": "DeviceStatus",
                "metadata": {"name": name},
                "spec": {},
            },
        )
        before = await _as_cloudcore(cluster, name, "1")
        assert before is not None
        assert before["status"]["extensions"] == {"cloudcore": {"seen": "1"}}

        await asyncio.to_thread(install, cluster.kubeconfig, OURS)

        after = await _as_cloudcore(cluster, name, "2")
        assert after is not None
        assert after["status"]["twins"] == [{"propertyName": "count", "reported": {"value": "2"}}]
        assert after["status"]["extensions"] == {"cloudcore": {"seen": "2"}}
        assert after["spec"] == {}
        for plural in ("devices", "devicemodels", "devicestatuses"):
            listed = await asyncio.to_thread(
                kubectl,
                cluster.kubeconfig,
                "get",
                f"{plural}.v1alpha2.devices.kubeedge.io",
                "-o",
                "json",
            )
            assert listed.returncode == 0, listed.stderr
            assert orjson.loads(listed.stdout)["items"], plural
