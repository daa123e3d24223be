"""End to end with KubeEdge's own mapper runtime: kubectl applies a Device, the node gives it
to a mapper built on KubeEdge's mapper-framework over DMI, the mapper reads and writes a Modbus
device, and what it reports lands in the DeviceStatus; a desired value changed with kubectl
apply reaches the device's register; and the calls the mapper gets are the ones edgecore
would make, on the first start and after a node restart, on both brokers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from edgetwin.config import Settings
from tests.dmi.kubeedge_mapper import (
    Record,
    kubeedge_mapper,
    socket_folder,
    thermostat,
    thermostat_model,
    with_dmi,
)
from tests.kube.conftest import Cluster, synced_node
from tests.kube.kubestand import kubectl
from tests.mappers.modbus_support import HOLDING, INPUT, tcp_slaves
from tests.support import free_port, unique, until


def _manifest(resource: Any, node: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = resource.model_dump(by_alias=True, exclude_unset=True)
    if node is not None:
        body["spec"]["nodeName"] = node
    return body


async def _apply(cluster: Cluster, path: Path, *documents: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump_all(documents))
    done = await asyncio.to_thread(kubectl, cluster.kubeconfig, "apply", "-f", str(path))
    assert done.returncode == 0, done.stderr


async def test_kubectl_to_a_kubeedge_mapper_and_back(
    cluster: Cluster, cloud_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    port = free_port()
    model, name = unique("model"), unique("thermostat")
    with socket_folder() as sockets:
        settings = with_dmi(cloud_settings(), sockets)
        device = _manifest(thermostat(name, model, port), settings.node.name)
        manifest = tmp_path / "thermostat.yaml"
        await _apply(cluster, manifest, _manifest(thermostat_model(model)), device)

        async def reported(prop: str, value: str) -> bool:
            status = await cluster.get("devicestatuses", name)
            twins = ((status or {}).get("status") or {}).get("twins") or []
            return any(
                t["propertyName"] == prop and t.get("reported", {}).get("value") == value
                for t in twins
            )

        async with (
            tcp_slaves(port) as slaves,
            synced_node(settings) as node,
            kubeedge_mapper(sockets, settings.dmi.socket),
        ):
            await slaves.set(INPUT, 0, [215])
            await slaves.set(HOLDING, 0, [200])
            await until(lambda: reported("current", "21.5"), "current in the DeviceStatus")
            await until(lambda: reported("target", "20.0"), "target in the DeviceStatus")

            device["spec"]["properties"][0]["desired"] = {"value": "23.5"}
            await _apply(cluster, manifest, device)

            async def written() -> bool:
                return await slaves.get(HOLDING, 0) == [235]

            await until(written, "the desired value in the register")
            await until(lambda: reported("target", "23.5"), "the new target in the DeviceStatus")
            status = await cluster.get("devicestatuses", name)
            assert status is not None
            assert status["status"]["state"] == "online"
            target = next(t for t in status["status"]["twins"] if t["propertyName"] == "target")
            assert target["observedDesired"]["value"] == "23.5"
            assert node.dmi is not None
            assert f"default/{name}" in node.dmi.mappers["modbus"].devices


async def test_the_mapper_gets_edgecore_s_calls_on_the_first_start_and_after_a_restart(
    cluster: Cluster,
    cloud_settings: Callable[..., Settings],
    broker_kind: str,
    tmp_path: Path,
) -> None:
    """Registration: its answer lists the Device with the desired value kubectl applied, and
    nothing repeats it; a kubectl change is one UpdateDevice; a restarted node sends the
    mapper (still running, registered with the first) only the next change."""
    port = free_port()
    model, name = unique("model"), unique("thermostat")
    device_id = f"default/{name}"
    with socket_folder() as sockets:
        settings = with_dmi(cloud_settings(), sockets)
        broker = settings.broker.model_copy(update={"engine": broker_kind})
        settings = settings.model_copy(update={"broker": broker})
        record = Record(sockets / "calls.jsonl")
        device = _manifest(thermostat(name, model, port, target="21.5"), settings.node.name)
        manifest = tmp_path / "thermostat.yaml"
        await _apply(cluster, manifest, _manifest(thermostat_model(model)), device)

        async def desired(value: str, raw: int) -> None:
            device["spec"]["properties"][0]["desired"] = {"value": value}
            await _apply(cluster, manifest, device)

            async def written() -> bool:
                return await slaves.get(HOLDING, 0) == [raw]

            await until(written, f"{value} in the register")

        async with tcp_slaves(port) as slaves, contextlib.AsyncExitStack() as mapper:
            await slaves.set(HOLDING, 0, [200])
            async with synced_node(settings):
                await mapper.enter_async_context(
                    kubeedge_mapper(sockets, settings.dmi.socket, record=record)
                )
                await desired("22.5", 225)
            first_start = record.calls()
            async with synced_node(settings):
                await desired("23.5", 235)
            restarted = record.calls()[len(first_start) :]
    register, *changes = first_start
    assert register["method"] == "MapperRegister"
    assert register["devices"] == {device_id: {"target": "21.5", "current": ""}}
    assert [(c["method"], c["desired"]) for c in changes] == [
        ("UpdateDevice", {"target": "22.5", "current": ""})
    ]
    assert [(c["method"], c["desired"]) for c in restarted] == [
        ("UpdateDevice", {"target": "23.5", "current": ""})
    ]
