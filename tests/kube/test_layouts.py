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

from edgetwin.cloud import device_status
from edgetwin.wire import topics
from edgetwin.wire.messages import write_failed_result
from tests.kube.conftest import (
    OURS,
    Cluster,
    install,
    kubeedge_crds,
    node_settings_for,
    node_user,
    own_cluster,
    synced_node,
)
from tests.kube.kubestand import ROOT, kubectl
from tests.manifests import KUBEEDGE_MODEL
from tests.support import Paho, unique, until

LAYOUTS = ["ours", "kubeedge"]


def layout(name: str) -> tuple[str, ...]:
    """What a cluster of that layout has installed, as ``install`` sources."""
    if name == "ours":
        return (OURS,)
    ours = (f"-f {ROOT / 'crds' / f}" for f in ("rbac.yaml", "admission.yaml"))
    return (*kubeedge_crds(), *ours)


@pytest.mark.parametrize("layout_name", LAYOUTS)
async def test_every_status_field_the_node_writes_reads_back(
    layout_name: str, tmp_path: Path
) -> None:
    with own_cluster(tmp_path, *layout(layout_name)) as cluster:
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
            written = device_status(node.engine.devices[device])
            assert len(written["twins"]) == len(report)
            assert written["state"] == "online"

            async def read_back() -> bool:
                obj = await cluster.get("devicestatuses", name)
                return (obj or {}).get("status") == written

            await until(read_back, "the status reads back as the node wrote it")
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
    with own_cluster(tmp_path, *kubeedge_crds()) as cluster:
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


KUBEEDGE_DEVICE = """
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: {name}
  labels:
    model: temperature-model
spec:
  deviceModelRef:
    name: temperature-model
  nodeName: {node}
  protocol:
    protocolName: modbus
    configData:
      deviceID: 2
      serialPort: /dev/ttyS0
      baudRate: 9600
      dataBits: 8
      parity: even
      stopBits: 1
      protocolID: 1
  properties:
    - name: temperature
      collectCycle: 10000
      reportCycle: 10000
      reportToCloud: true
      desired:
        value: "30"
      visitors:
        protocolName: modbus
        configData:
          register: HoldingRegister
          offset: 2
          limit: 1
          scale: 1
          isSwap: true
          isRegisterSwap: true
      pushMethod:
        mqtt:
          address: tcp://127.0.0.1:1883
          topic: temperature
          qos: 0
          retained: false
        dbMethod:
          influxdb2:
            influxdb2ClientConfig:
              url: http://127.0.0.1:8086
              org: test-org
              bucket: test-bucket
            influxdb2DataConfig:
              measurement: stat
              tag:
                unit: temperature
              fieldKey: beta1test
  methods:
    - name: setValue
      description: set the temperature
      propertyNames: [temperature]
  stateReport:
    reportToCloud: true
    reportCycle: 5000
"""


@pytest.mark.parametrize("layout_name", LAYOUTS)
async def test_a_kubeedge_device_manifest_applies_unchanged_and_reaches_the_node(
    layout_name: str, tmp_path: Path
) -> None:
    """A v1beta1 manifest as KubeEdge's users write them (pushMethod, methods, stateReport,
    KubeEdge's Modbus keys), applied with kubectl's strict validation on both layouts."""
    with own_cluster(tmp_path, *layout(layout_name)) as cluster:
        settings = node_settings_for(cluster, tmp_path)
        name = unique("beta1-device")
        manifest = tmp_path / "device.yaml"
        manifest.write_text(
            KUBEEDGE_MODEL + "---" + KUBEEDGE_DEVICE.format(name=name, node=settings.node.name)
        )
        applied = await asyncio.to_thread(kubectl, cluster.kubeconfig, "apply", "-f", str(manifest))
        assert applied.returncode == 0, applied.stderr
        assert applied.stderr == "", applied.stderr  # no warning of unknown or dropped fields
        async with synced_node(settings) as node:
            twin = node.engine.devices[f"default/{name}"]
            assert twin.properties["temperature"].desired == "30"


@pytest.mark.parametrize("layout_name", LAYOUTS)
async def test_kubectl_shows_where_each_write_stands(layout_name: str, tmp_path: Path) -> None:
    """A write read back and a write the mapper refused, as kubectl shows them: in our
    CRD's Writes column, and on either layout in the observed desired metadata (which
    KubeEdge's CRD keeps) and ``kubectl describe``."""
    with own_cluster(tmp_path, *layout(layout_name)) as cluster:
        settings = node_settings_for(cluster, tmp_path)
        name = unique("dev")
        device = f"default/{name}"
        await cluster.add_thermostat(
            name, settings.node.name, desired={"target": "22.5", "count": "3"}
        )
        async with synced_node(settings) as node, Paho(node.broker_port) as mapper:
            update = topics.twin_update_topic(device)
            await mapper.subscribe(f"{update}/result")
            read_back = {"twin": {"target": {"actual": {"value": "22.5"}}}}
            assert "code" not in await mapper.request(update, read_back)
            refusal = write_failed_result("count", "3", "Modbus exception 2: illegal data address")
            mapper.publish(topics.delta_result_topic(device), refusal)

            async def shown() -> bool:
                obj = await cluster.get("devicestatuses", name)
                writes = ((obj or {}).get("status") or {}).get("extensions", {}).get("writes")
                return writes == "count=failed, target=written"

            await until(shown, "the cluster has both writes' outcomes")
            assert node.engine.devices[device].writes["count"].phase == "failed"

        def run(*args: str) -> str:
            done = kubectl(cluster.kubeconfig, *args)
            assert done.returncode == 0, done.stderr
            return done.stdout

        path = '{.status.twins[?(@.propertyName=="count")].observedDesired.metadata}'
        metadata = orjson.loads(
            await asyncio.to_thread(run, "get", "devicestatus", name, "-o", f"jsonpath={path}")
        )
        assert metadata["write"] == "failed"
        assert metadata["writeReason"] == "Modbus exception 2: illegal data address"
        assert metadata["writeBy"] == "cluster"
        described = await asyncio.to_thread(run, "describe", "devicestatus", name)
        assert "illegal data address" in described
        assert "count=failed, target=written" in described
        table = await asyncio.to_thread(run, "get", "devicestatus", name)
        if layout_name == "ours":  # a column of our CRD; KubeEdge's has no columns
            header, row = table.splitlines()
            assert "WRITES" in header
            assert "count=failed, target=written" in row
