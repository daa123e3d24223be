"""Least privilege per node, enforced by the API server (the admission policies and Role of
crds/), not by our code: a node's token writes the status of its own devices and is
refused (403) for another node's, whether it creates or patches, in DeviceStatus or in
Device.status; and it may not change a Device's spec. The requests here are made with the
official client as a stolen token would be used, not through the node."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from edgetwin.wire import topics
from tests.kube.conftest import Cluster, G, V, node_settings_for, synced_node
from tests.kube.kubestand import kubectl
from tests.support import Paho, unique, until

Obj = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def _objects_as(kubeconfig: Path) -> Iterator[client.CustomObjectsApi]:
    configuration = client.Configuration()
    config.load_kube_config(str(kubeconfig), client_configuration=configuration)
    api_client = client.ApiClient(configuration)
    try:
        yield client.CustomObjectsApi(api_client)
    finally:
        api_client.close()
        api_client.rest_client.pool_manager.clear()


def _status_body(name: str, value: str, writer: str, owner_uid: str) -> Obj:
    """A DeviceStatus as a node makes one: owned by its Device, naming its writer."""
    owner = {"apiVersion": f"{G}/{V}", "kind": "Device", "name": name, "uid": owner_uid}
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "DeviceStatus",
        "metadata": {
            "name": name,
            "annotations": {"edgetwin.io/status-writer": writer},
            "labels": {"edgetwin.io/node-status": "true"},
            "ownerReferences": [owner],
        },
        "status": {"twins": [{"propertyName": "count", "reported": {"value": value}}]},
    }


async def _code(call: Callable[[], Any]) -> int:
    try:
        await asyncio.to_thread(call)
    except ApiException as exc:
        return int(exc.status)
    return 200


async def _until_enforced(attempt: Callable[[], Awaitable[int]]) -> int:
    """The policies take effect a moment after they are created (the API server loads
    them asynchronously): a bounded retry of a write that must end up refused."""
    async with asyncio.timeout(20):
        while (code := await attempt()) != 403:
            await asyncio.sleep(0.1)
    return code


async def test_a_node_token_writes_only_its_own_devices(cluster: Cluster, tmp_path: Path) -> None:
    node_a, node_b = unique("edge-a"), unique("edge-b")
    dev_a, dev_b = unique("dev"), unique("dev")
    await cluster.add_thermostat(dev_a, node_a)
    await cluster.add_thermostat(dev_b, node_b)
    with (
        _objects_as(cluster.node_kubeconfig(tmp_path, node_a)) as as_a,
        _objects_as(cluster.node_kubeconfig(tmp_path, node_b)) as as_b,
    ):
        await _writes_as_two_nodes(cluster, as_a, as_b, (node_a, dev_a), (node_b, dev_b))


async def test_pod_bound_tokens_of_one_daemonset_write_only_their_node_s_devices(
    cluster: Cluster, tmp_path: Path
) -> None:
    """deploy/: one ServiceAccount for every pod of the DaemonSet; each pod's token is bound
    to it, and the API server tells the policies which node it is on."""
    ns = cluster.namespace(unique("site"))
    applied = kubectl(cluster.kubeconfig, "apply", "-k", str(ROOT / "deploy/base"), "-n", ns)
    assert applied.returncode == 0, applied.stderr
    node_a, node_b = unique("edge-a"), unique("edge-b")
    dev_a, dev_b = unique("dev"), unique("dev")
    await cluster.add_thermostat(dev_a, node_a, ns)
    await cluster.add_thermostat(dev_b, node_b, ns)

    def kubeconfig(token: str, name: str) -> Path:
        return cluster.server.kubeconfig(tmp_path / name, token=token, namespace=ns)

    pod_a, pod_b = cluster.pod_token(ns, node_a), cluster.pod_token(ns, node_b)
    unbound = kubectl(cluster.kubeconfig, "create", "token", "edgetwin-node", "-n", ns)
    with (
        _objects_as(kubeconfig(pod_a, "a.kubeconfig")) as as_a,
        _objects_as(kubeconfig(pod_b, "b.kubeconfig")) as as_b,
        _objects_as(kubeconfig(unbound.stdout.strip(), "unbound.kubeconfig")) as as_nobody,
    ):
        await _writes_as_two_nodes(cluster, as_a, as_b, (node_a, dev_a), (node_b, dev_b), ns)
        body = {"status": {"twins": [{"propertyName": "count", "reported": {"value": "7"}}]}}
        # A token of the account that is bound to no pod names no node: refused even for A's.
        refused = await _code(
            lambda: as_nobody.patch_namespaced_custom_object(
                G, V, ns, "devicestatuses", dev_a, body
            )
        )
        assert refused == 403


async def _writes_as_two_nodes(
    cluster: Cluster,
    as_a: client.CustomObjectsApi,
    as_b: client.CustomObjectsApi,
    a: tuple[str, str],
    b: tuple[str, str],
    ns: str = "default",
) -> None:
    (node_a, dev_a), (node_b, dev_b) = a, b
    uids = {}
    for name in (dev_a, dev_b):
        device = await cluster.get("devices", name, ns)
        assert device is not None
        uids[name] = device["metadata"]["uid"]
    writers = {as_a: node_a, as_b: node_b}

    def create(api: client.CustomObjectsApi, name: str) -> Callable[[], Any]:
        body = _status_body(name, "1", writers[api], uids[name])
        return lambda: api.create_namespaced_custom_object(G, V, ns, "devicestatuses", body)

    def patch(api: client.CustomObjectsApi, plural: str, name: str, body: Obj) -> Callable[[], Any]:
        return lambda: api.patch_namespaced_custom_object(G, V, ns, plural, name, body)

    forged = {"status": {"twins": [{"propertyName": "count", "reported": {"value": "666"}}]}}
    # A creating B's DeviceStatus: refused by the server.
    assert await _until_enforced(lambda: _code(create(as_a, dev_b))) == 403
    # Its own without the label that sends a node's create to the check against the Device:
    # refused (else the check would be skipped).
    unlabelled = _status_body(dev_a, "1", node_a, uids[dev_a])
    del unlabelled["metadata"]["labels"]
    create_unlabelled = lambda: as_a.create_namespaced_custom_object(  # noqa: E731
        G, V, ns, "devicestatuses", unlabelled
    )
    assert await _code(create_unlabelled) == 422
    # Each creating its own: allowed.
    assert await _code(create(as_a, dev_a)) == 200
    assert await _code(create(as_b, dev_b)) == 200
    # A patching B's: refused; its own: allowed.
    assert await _code(patch(as_a, "devicestatuses", dev_b, forged)) == 403
    assert await _code(patch(as_a, "devicestatuses", dev_a, forged)) == 200
    # Device.status (clusters before DeviceStatus): the same, and no spec change.
    assert await _code(patch(as_a, "devices", dev_b, forged)) == 403
    assert await _code(patch(as_a, "devices", dev_a, forged)) == 200
    moved = {"spec": {"nodeName": node_a}}
    assert await _code(patch(as_a, "devices", dev_a, {"spec": {"nodeName": "elsewhere"}})) == 403
    assert await _code(patch(as_a, "devices", dev_b, moved)) == 403
    assert await _code(patch(as_a, "devices", dev_a, {"metadata": {"labels": {"x": "y"}}})) == 403

    status_b = await cluster.get("devicestatuses", dev_b, ns)
    assert status_b is not None
    assert status_b["status"]["twins"][0]["reported"]["value"] == "1"
    device_b = await cluster.get("devices", dev_b, ns)
    assert device_b is not None
    assert device_b["spec"]["nodeName"] == node_b
    assert "status" not in device_b
    refused = [r for r in cluster.server.requests() if r.code == 403 and r.name in (dev_a, dev_b)]
    assert refused, "the 403s came from the API server (its audit log has them)"


async def test_the_node_itself_works_under_the_policies(cluster: Cluster, tmp_path: Path) -> None:
    settings = node_settings_for(cluster, tmp_path)
    name = unique("dev")
    await cluster.add_thermostat(name, settings.node.name)
    async with synced_node(settings) as node, Paho(node.broker_port) as mqtt:
        update = topics.twin_update_topic(f"default/{name}")
        await mqtt.subscribe(f"{update}/result")
        assert "code" not in await mqtt.request(
            update, {"twin": {"count": {"actual": {"value": "5"}}}}
        )

        async def reported() -> bool:
            obj = await cluster.get("devicestatuses", name) or {}
            twins = (obj.get("status") or {}).get("twins") or []
            return any(t["reported"]["value"] == "5" for t in twins)

        await until(reported, "the node's own status write passes the policies")


async def test_a_node_takes_over_a_device_status_someone_else_made(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A DeviceStatus made by another (cloudcore, an admin, an older node) names no writer:
    the device's node deletes it and makes its own, which then only it may update."""
    settings = node_settings_for(cluster, tmp_path)
    name, other = unique("dev"), unique("edge-other")
    await cluster.add_thermostat(name, settings.node.name)
    made = {"apiVersion": f"{G}/{V}", "kind": "DeviceStatus", "metadata": {"name": name}}
    made["status"] = {"twins": [{"propertyName": "count", "reported": {"value": "0"}}]}
    await cluster.create("devicestatuses", made)
    async with synced_node(settings) as node, Paho(node.broker_port) as mqtt:
        update = topics.twin_update_topic(f"default/{name}")
        await mqtt.subscribe(f"{update}/result")
        await mqtt.request(update, {"twin": {"count": {"actual": {"value": "5"}}}})

        async def taken_over() -> bool:
            obj = await cluster.get("devicestatuses", name) or {}
            meta = obj.get("metadata") or {}  # none: between the delete and the create
            writer = (meta.get("annotations") or {}).get("edgetwin.io/status-writer")
            twins = (obj.get("status") or {}).get("twins") or []
            return writer == settings.node.name and any(
                t["reported"]["value"] == "5" for t in twins
            )

        await until(taken_over, "the node's own DeviceStatus, with its value")
    with _objects_as(cluster.node_kubeconfig(tmp_path, other)) as as_other:
        forged = {"status": {"twins": [{"propertyName": "count", "reported": {"value": "9"}}]}}
        code = await _code(
            lambda: as_other.patch_namespaced_custom_object(
                G, V, "default", "devicestatuses", name, forged
            )
        )
        assert code == 403
