"""The fleet as an operator rolls it out: every manifest of deploy/ and of each site's overlay
in examples/fleet/ applies on the real API server with kubectl (strict validation, a
server-side dry run, then for real); and, since no kubelet runs here, each site's node is
run from the image with what its DaemonSet pod would get (its pod-bound ServiceAccount
token, namespace and CA, its ConfigMap, its environment): each gets its own devices and
setpoints only, and may write their status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgetwin.wire import topics
from tests.image.podman import running, state_folder
from tests.kube.conftest import OURS, Cluster, own_cluster
from tests.kube.kubestand import kubectl
from tests.support import Paho, until

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = [ROOT / "deploy/base", ROOT / "examples/fleet/site-a", ROOT / "examples/fleet/site-b"]
SITES = {"site-a": "site-a-edge-1", "site-b": "site-b-edge-1"}
"""Each site's namespace and its edge machine (the Devices' nodeName)."""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with own_cluster(tmp_path_factory.mktemp("fleet"), OURS) as cluster:
        yield cluster


def _apply(cluster: Cluster, *args: str) -> str:
    done = kubectl(cluster.kubeconfig, "apply", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_manifest_applies_under_strict_validation(fleet: Cluster) -> None:
    for overlay in OVERLAYS:
        namespace = overlay / "namespace.yaml"
        if namespace.exists():  # first, as Flux and Argo CD do: the dry run needs it
            _apply(fleet, "-f", str(namespace))
        _apply(fleet, "-k", str(overlay), "--dry-run=server")
        _apply(fleet, "-k", str(overlay))
    found = kubectl(fleet.kubeconfig, "get", "daemonset", "edgetwin", "-n", "site-b", "-o", "json")
    pod = json.loads(found.stdout)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"edgetwin.io/node": "true", "edgetwin.io/site": "site-b"}
    assert pod["containers"][0]["image"] == "registry.example.com/edgetwin:0.1.0"
    assert pod["hostNetwork"] is True
    assert pod["serviceAccountName"] == "edgetwin-node"


def _pod_credentials(cluster: Cluster, namespace: str, node: str, folder: Path) -> Path:
    """What the kubelet would mount into the site's pod on ``node``: a token of the
    DaemonSet's ServiceAccount bound to that pod (so the API server knows its node), the
    namespace and the cluster's CA."""
    folder.mkdir(parents=True)
    (folder / "token").write_text(cluster.pod_token(namespace, node))
    (folder / "namespace").write_text(namespace)
    (folder / "ca.crt").write_bytes((cluster.server.folder / "ca.crt").read_bytes())
    for part in folder.iterdir():
        part.chmod(0o644)
    return folder


def _as_the_pod_runs(cluster: Cluster, namespace: str, node: str, folder: Path) -> dict[str, Any]:
    """The container's arguments, mounts and environment, from the applied DaemonSet."""
    found = kubectl(
        cluster.kubeconfig,
        *("get", "daemonset/edgetwin", "configmap/edgetwin-config", "-n", namespace),
        *("-o", "json"),
    )
    items = {item["kind"]: item for item in json.loads(found.stdout)["items"]}
    container = items["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
    folder.mkdir(parents=True)
    config = folder / "config.yaml"
    config.write_text(items["ConfigMap"]["data"]["config.yaml"])
    config.chmod(0o644)
    service_account = _pod_credentials(cluster, namespace, node, folder / "serviceaccount")
    port = cluster.server.url.rsplit(":", 1)[1]
    return {
        "args": container["args"],
        "mounts": {
            state_folder(folder / "state"): "/var/lib/edgetwin",
            config: "/etc/edgetwin/config.yaml:ro",
            service_account: "/var/run/secrets/kubernetes.io/serviceaccount:ro",
        },
        "env": {
            "EDGETWIN_NODE__NAME": node,  # the DaemonSet's fieldRef spec.nodeName
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
        },
    }


async def _twin(port: int, device: str) -> dict[str, Any]:
    async with Paho(port) as mqtt:
        await mqtt.subscribe(f"{topics.DEVICE_PREFIX}/{device}/#")
        return await mqtt.request(topics.twin_get_topic(device), {"event_id": "fleet"})


async def test_each_site_s_node_from_the_image_gets_its_own_devices(
    fleet: Cluster, image: str, tmp_path: Path
) -> None:
    assert image
    for overlay in OVERLAYS[1:]:
        _apply(fleet, "-k", str(overlay))
    runs = {
        site: _as_the_pod_runs(fleet, site, node, tmp_path / site) for site, node in SITES.items()
    }
    site_a, site_b = runs["site-a"], runs["site-b"]
    async with (
        running(*site_a["args"], mounts=site_a["mounts"], env=site_a["env"]) as a,
        running(*site_b["args"], mounts=site_b["mounts"], env=site_b["env"]) as b,
    ):
        hall = await _twin(a.port, "site-a/hall-1")
        assert hall["twin"]["target"]["expected"]["value"] == "19.5"
        assert (await _twin(a.port, "site-a/hall-2"))["twin"]["target"]["expected"][
            "value"
        ] == "20.5"
        cold = await _twin(b.port, "site-b/cold-store")
        assert cold["twin"]["target"]["expected"]["value"] == "6"
        assert "code" in await _twin(a.port, "site-b/cold-store")  # not site A's
        assert "code" in await _twin(b.port, "site-a/hall-1")  # not site B's

        async with Paho(a.port) as mqtt:
            update = topics.twin_update_topic("site-a/hall-1")
            await mqtt.subscribe(f"{update}/result")
            report = {"event_id": "r", "twin": {"current": {"actual": {"value": "18.25"}}}}
            await mqtt.request(update, report)

        async def written_by_the_pod() -> bool:
            status = await fleet.get("devicestatuses", "hall-1", "site-a")
            twins = ((status or {}).get("status") or {}).get("twins") or []
            return any(t.get("reported", {}).get("value") == "18.25" for t in twins)

        await until(written_by_the_pod, "site A's node writes hall-1's status", timeout=30)
