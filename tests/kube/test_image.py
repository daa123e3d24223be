"""The image as shipped: built from the Containerfile, run by podman. Its node serves the twin
API to a client outside the container, syncs with the real API server through a mounted
kubeconfig, runs as its own user, stops cleanly on SIGTERM, and keeps its twin across a
restart of the container (the state volume)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edgetwin.wire import topics
from tests.image.podman import NODE_USER, running, state_folder
from tests.kube.conftest import Cluster
from tests.support import Paho, unique, until


async def test_the_image_serves_syncs_and_keeps_its_twin(
    image: str, cluster: Cluster, tmp_path: Path
) -> None:
    node, name = unique("node"), unique("thermostat")
    device = f"default/{name}"
    kubeconfig = cluster.node_kubeconfig(tmp_path, node)
    kubeconfig.chmod(0o644)
    ca = cluster.server.folder / "ca.crt"
    state = state_folder(tmp_path / "state")
    await cluster.add_thermostat(name, node, desired={"target": "21.5"})
    mounts = {state: "/var/lib/edgetwin", kubeconfig: "/etc/edgetwin/kubeconfig:ro", ca: f"{ca}:ro"}
    args = ("--node", node, "--kubeconfig", "/etc/edgetwin/kubeconfig")
    async with running(*args, mounts=mounts, env={}) as container:
        assert container.exec("id", "-u") == str(NODE_USER)
        async with Paho(container.port) as mqtt:
            await mqtt.subscribe(f"{topics.DEVICE_PREFIX}/{device}/#")
            twin = await mqtt.request(topics.twin_get_topic(device), {"event_id": "1"})
            assert twin["twin"]["target"]["expected"]["value"] == "21.5"
            report = {"event_id": "2", "twin": {"current": {"actual": {"value": "19.0"}}}}
            await mqtt.request(topics.twin_update_topic(device), report)

        async def in_the_cluster() -> bool:
            status = await cluster.get("devicestatuses", name)
            twins = ((status or {}).get("status") or {}).get("twins") or []
            return any(t.get("reported", {}).get("value") == "19.0" for t in twins)

        await until(in_the_cluster, "the reported value in the DeviceStatus")
        await asyncio.to_thread(container.restart)  # SIGTERM, then the same volume
        await container.ready()
        async with Paho(container.port) as mqtt:
            await mqtt.subscribe(f"{topics.DEVICE_PREFIX}/{device}/#")
            twin = await mqtt.request(topics.twin_get_topic(device), {"event_id": "3"})
        assert twin["twin"]["current"]["actual"]["value"] == "19.0"
        assert await asyncio.to_thread(container.stop) == 0
        assert "SIGTERM: shutting down" in container.logs()
        assert (state / "edgetwin.db").stat().st_uid == NODE_USER
