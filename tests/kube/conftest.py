"""Fixtures: a fake API server per test, the official client against it, nodes that follow it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest
from kubernetes import client, config

from edgetwin.config import Settings, load_settings
from edgetwin.node import Node
from tests.kube.apiserver import FakeKubeAPI
from tests.support import thermostat, thermostat_model, unique

G, V = "devices.kubeedge.io", "v1beta1"


class Cluster:
    """The fake API server and the official client a user's tooling would use against it."""

    def __init__(self, api: FakeKubeAPI, kubeconfig: Path) -> None:
        self.api = api
        self.kubeconfig = kubeconfig
        configuration = client.Configuration()
        config.load_kube_config(str(kubeconfig), client_configuration=configuration)
        self._client = client.ApiClient(configuration)
        self.objects = client.CustomObjectsApi(self._client)

    def close(self) -> None:
        self._client.close()
        self._client.rest_client.pool_manager.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def call(self, method: str, *args: Any) -> Any:
        return await asyncio.to_thread(getattr(self.objects, method), *args)

    async def create(self, plural: str, body: dict[str, Any], namespace: str = "default") -> Any:
        return await self.call("create_namespaced_custom_object", G, V, namespace, plural, body)

    async def patch(
        self, plural: str, name: str, patch: dict[str, Any], namespace: str = "default"
    ) -> Any:
        return await self.call(
            "patch_namespaced_custom_object", G, V, namespace, plural, name, patch
        )

    async def delete(self, plural: str, name: str, namespace: str = "default") -> Any:
        return await self.call("delete_namespaced_custom_object", G, V, namespace, plural, name)

    async def add_thermostat(self, name: str, node: str, **kwargs: Any) -> None:
        if self.api.get(self.api.resources[1], "default", "thermostat") is None:
            await self.create("devicemodels", thermostat_model().to_document())
        await self.create("devices", thermostat(name, node=node, **kwargs).to_document())


async def until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Until the node, on its own tasks, gets somewhere no event of its announces (a device
    in its engine, a counter, a log line): a bounded check every 10 ms. State of the API
    server is awaited with ``FakeKubeAPI.until`` instead."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
    assert condition(), what


@contextlib.asynccontextmanager
async def synced_node(settings: Settings) -> AsyncIterator[Node]:
    """A node whose cloud sync has listed everything once."""
    async with Node(settings) as node:
        assert node.cloud is not None
        await node.cloud.wait_synced()
        yield node


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with (
        FakeKubeAPI(bookmark_interval=0.2) as api,
        Cluster(api, api.kubeconfig(tmp_path / "kubeconfig")) as cluster,
    ):
        yield cluster


@pytest.fixture
def cloud_settings(cluster: Cluster, tmp_path: Path) -> Callable[..., Settings]:
    name = unique("node")

    def make(**cloud: Any) -> Settings:
        return load_settings(
            node={"name": name, "data_dir": str(tmp_path / "data")},
            broker={"port": 0},
            store={"synchronous": "NORMAL"},
            cloud={
                "kubeconfig": str(cluster.kubeconfig),
                "watch_timeout": 2,
                "retry_max_delay": 0.5,
                **cloud,
            },
        )

    return make


@pytest.fixture
async def cloud_node(cloud_settings: Callable[..., Settings]) -> AsyncIterator[Node]:
    async with Node(cloud_settings()) as node:
        yield node
