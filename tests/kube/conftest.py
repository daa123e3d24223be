"""Fixtures: a real API server (one for the session, or one of a test's own), the official
client against it as an admin, and nodes that follow it with their own ServiceAccount token."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Self

import orjson
import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from edgetwin.config import Settings, load_settings
from edgetwin.node import Node
from tests.kube.kubestand import ROOT, KubeServer, kubectl
from tests.support import thermostat, thermostat_model, unique

G, V = "devices.kubeedge.io", "v1beta1"
NODES = "edgetwin-nodes"  # the namespace of the nodes' ServiceAccounts (crds/rbac.yaml)


def node_user(node: str) -> str:
    """The user name the API server knows a node by."""
    return f"system:serviceaccount:{NODES}:{node}"


KUBEEDGE_CRDS = ROOT.parent / "shared" / "kubeedge" / "crds"  # KubeEdge's own, as test data


def kubeedge_crds() -> tuple[str, ...]:
    """KubeEdge's CRDs as ``install`` sources, from ../shared beside the checkout."""
    if not KUBEEDGE_CRDS.is_dir():
        raise RuntimeError(f"KubeEdge's CRDs are not at {KUBEEDGE_CRDS} (shared/ beside the repo)")
    return tuple(f"-f {crd}" for crd in sorted(KUBEEDGE_CRDS.iterdir()))


Obj = dict[str, Any]


def install(kubeconfig: Path, *sources: str) -> str:
    """``kubectl apply`` each source (``-k DIR`` or ``-f FILE``), then wait until every CRD
    is established: what a user does before applying devices."""
    out = []
    for source in sources:
        flag, path = source.split(" ", 1)
        done = kubectl(kubeconfig, "apply", flag, path)
        assert done.returncode == 0, done.stderr
        out.append(done.stdout)
    established = kubectl(
        kubeconfig, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"
    )
    assert established.returncode == 0, established.stderr
    _until_published(kubeconfig)
    if "validatingadmissionpolicy" in "".join(out):
        _until_admitting(kubeconfig)
    return "".join(out)


def _until_admitting(kubeconfig: Path, timeout: float = 30.0) -> None:
    """Until the admission policies can run: a policy whose parameters are a CRD's objects
    refuses every write with "not yet synced" until the server has listed them
    (kubernetes#124237), which it does not announce. Probed with a server-side dry run,
    every 100 ms."""
    probe = {
        "apiVersion": f"{G}/{V}",
        "kind": "DeviceStatus",
        "metadata": {"name": "admission-probe", "namespace": "default"},
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = kubectl(
            kubeconfig, "create", "--dry-run=server", "-f", "-", stdin=orjson.dumps(probe).decode()
        )
        if "not yet synced" not in done.stderr:
            return
        time.sleep(0.1)
    raise AssertionError(f"the admission policies were not synced after {timeout} s")


def _until_published(kubeconfig: Path, timeout: float = 30.0) -> None:
    """Until the server's OpenAPI v3 document has the group (it follows a CRD's
    establishment by a few seconds; kubectl explain and validation read it): a bounded
    check every 100 ms, since the server announces nothing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        paths = kubectl(kubeconfig, "get", "--raw", "/openapi/v3")
        if f"apis/{G}/{V}" in paths.stdout:
            return
        time.sleep(0.1)
    raise AssertionError(f"{G}/{V} not in the OpenAPI document after {timeout} s")


class Cluster:
    """A real API server and the official client a user's tooling would use against it."""

    def __init__(self, server: KubeServer, folder: Path) -> None:
        self.server = server
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = server.kubeconfig(folder / "admin.kubeconfig")
        configuration = client.Configuration()
        config.load_kube_config(str(self.kubeconfig), client_configuration=configuration)
        self._client = client.ApiClient(configuration)
        self.objects = client.CustomObjectsApi(self._client)
        self.core = client.CoreV1Api(self._client)
        self.rbac = client.RbacAuthorizationV1Api(self._client)

    def close(self) -> None:
        self._client.close()
        self._client.rest_client.pool_manager.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.objects, method), *args, **kwargs)

    async def create(self, plural: str, body: Obj, namespace: str = "default") -> Any:
        return await self.call("create_namespaced_custom_object", G, V, namespace, plural, body)

    async def patch(self, plural: str, name: str, patch: Obj, namespace: str = "default") -> Any:
        return await self.call(
            "patch_namespaced_custom_object", G, V, namespace, plural, name, patch
        )

    async def delete(self, plural: str, name: str, namespace: str = "default") -> Any:
        return await self.call("delete_namespaced_custom_object", G, V, namespace, plural, name)

    async def get(self, plural: str, name: str, namespace: str = "default") -> Obj | None:
        try:
            found: Obj = await self.call(
                "get_namespaced_custom_object", G, V, namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    async def add_thermostat(
        self, name: str, node: str, namespace: str = "default", **kwargs: Any
    ) -> None:
        with contextlib.suppress(ApiException):  # 409: the model is there already
            await self.create("devicemodels", thermostat_model(namespace).to_document(), namespace)
        device = thermostat(name, node=node, **kwargs).to_document()
        device["metadata"]["namespace"] = namespace
        await self.create("devices", device, namespace)

    def service_account_kubeconfig(
        self, path: Path, account: str, namespace: str = "default", context: str | None = None
    ) -> Path:
        """A kubeconfig with a fresh token of that ServiceAccount (TokenRequest), its
        context in ``context`` (default: the account's namespace)."""
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        )
        answer = self.core.create_namespaced_service_account_token(account, namespace, request)
        return self.server.kubeconfig(
            path, token=answer.status.token, namespace=context or namespace
        )

    def node_kubeconfig(self, folder: Path, node: str, context: str = "default") -> Path:
        """A node's kubeconfig as crds/rbac.yaml says to make one: a ServiceAccount named
        as the node in edgetwin-nodes, and a token of it."""
        with contextlib.suppress(ApiException):  # 409: there already
            self.core.create_namespaced_service_account(
                NODES, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=node))
            )
        return self.service_account_kubeconfig(
            folder / f"{node}.kubeconfig", node, NODES, context=context
        )

    def pod_token(self, namespace: str, node: str, account: str = "edgetwin-node") -> str:
        """A token of ``account`` bound to a pod on ``node``, as the kubelet mounts it into
        a DaemonSet's pod: the Node and the Pod are made (no kubelet runs them), the token
        by kubectl as the issue of such tokens is tested by hand."""
        meta = client.V1ObjectMeta(name=node, labels={"edgetwin.io/node": "true"})
        self.core.create_node(client.V1Node(metadata=meta))
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=f"edgetwin-{node}", namespace=namespace),
            spec=client.V1PodSpec(
                node_name=node,
                service_account_name=account,
                containers=[client.V1Container(name="edgetwin", image="edgetwin")],
            ),
        )
        self.core.create_namespaced_pod(namespace, pod)
        token = kubectl(
            self.kubeconfig,
            *("create", "token", account, "-n", namespace),
            *("--bound-object-kind", "Pod", "--bound-object-name", f"edgetwin-{node}"),
        )
        assert token.returncode == 0, token.stderr
        return token.stdout.strip()

    def namespace(self, name: str) -> str:
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return name


@contextlib.asynccontextmanager
async def synced_node(settings: Settings) -> AsyncIterator[Node]:
    """A node whose cloud sync has listed everything once."""
    async with Node(settings) as node:
        assert node.cloud is not None
        await node.cloud.wait_synced()
        yield node


@contextlib.contextmanager
def own_cluster(folder: Path, *sources: str, flags: tuple[str, ...] = ()) -> Iterator[Cluster]:
    """A server of the test's own (to stop, restart or give other CRDs), with ``sources``
    installed by kubectl."""
    with KubeServer(folder / "server", *flags) as server, Cluster(server, folder) as cluster:
        if sources:
            install(cluster.kubeconfig, *sources)
        yield cluster


OURS = f"-k {ROOT / 'crds'}"


@pytest.fixture(scope="session")
def kube_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeServer]:
    """One real API server for the session, with our crds/ installed by kubectl."""
    folder = tmp_path_factory.mktemp("kube")
    with KubeServer(folder / "server") as server:
        install(server.kubeconfig(folder / "admin.kubeconfig"), OURS)
        yield server


@pytest.fixture(scope="session")
def image() -> str:
    """The node's image, built once a session (from cache after the first build)."""
    from tests.image.podman import build_image  # noqa: PLC0415 - podman only for these tests

    return build_image()


@pytest.fixture
def cluster(kube_server: KubeServer, tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(kube_server, tmp_path) as cluster:
        yield cluster


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A server of this test's own with our crds/, for tests that stop or restart it."""
    with own_cluster(tmp_path, OURS) as cluster:
        yield cluster


def node_settings_for(cluster: Cluster, folder: Path, **cloud: Any) -> Settings:
    """Settings of a node that follows ``cluster`` with its own ServiceAccount's token (the
    Role and admission policies of crds/), as a node in the field does."""
    name = unique("node")
    kubeconfig = cluster.node_kubeconfig(folder, name)
    return load_settings(
        node={"name": name, "data_dir": str(folder / "data")},
        broker={"port": 0},
        store={"synchronous": "NORMAL"},
        cloud={"kubeconfig": str(kubeconfig), "watch_timeout": 2, "retry_max_delay": 0.5, **cloud},
    )


@pytest.fixture
def cloud_settings(cluster: Cluster, tmp_path: Path) -> Callable[..., Settings]:
    settings = node_settings_for(cluster, tmp_path)

    def make(**cloud: Any) -> Settings:
        return settings.model_copy(
            update={"cloud": settings.cloud.model_copy(update=cloud)}, deep=True
        )

    return make


@pytest.fixture
async def cloud_node(cloud_settings: Callable[..., Settings]) -> AsyncIterator[Node]:
    async with Node(cloud_settings()) as node:
        yield node


def grant(
    cluster: Cluster,
    account: str,
    rules: list[tuple[list[str], list[str]]],
    namespace: str = "default",
) -> None:
    """A ServiceAccount with a Role of exactly these (resources, verbs) in devices.kubeedge.io."""
    meta = client.V1ObjectMeta(name=account)
    cluster.core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=meta)
    )
    role_rules = [
        client.V1PolicyRule(api_groups=[G], resources=resources, verbs=verbs)
        for resources, verbs in rules
    ]
    cluster.rbac.create_namespaced_role(namespace, client.V1Role(metadata=meta, rules=role_rules))
    cluster.rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=meta,
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name=account
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name=account, namespace=namespace)
            ],
        ),
    )
