"""The cloud sync: a node follows the DeviceModels and its own Devices in the cluster.

The cluster owns which devices a node has and their desired values: for each
watched namespace, after every (re)list the node's devices there are exactly
the cluster's Devices whose ``spec.nodeName`` is this node, so a device deleted
or moved away while the node was offline goes when it reconnects. Until the
API server answers, the node serves what SQLite holds.

Objects are reduced to what the twin uses before they are applied (no
managedFields, status, resourceVersion), so an unchanged Device is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Self

from edgetwin.cloud._client import KubeApi
from edgetwin.cloud._ledger import CloudLedger
from edgetwin.cloud._status import StatusReporter
from edgetwin.cloud._watcher import ResourceWatcher, WatchCounters, WatchHandler
from edgetwin.config import CloudSettings
from edgetwin.errors import EdgetwinError
from edgetwin.tasks import start_guarded
from edgetwin.twin import TwinService, parse_document
from edgetwin.wire.names import device_id
from edgetwin.wire.resources import Device, DeviceModel, Resource

log = logging.getLogger(__name__)

Obj = dict[str, Any]
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
BY_CLUSTER = "cluster"
"""Who the history says changed a Device the sync applied."""


class CloudSync:
    """``async with CloudSync(settings, node, service)``: following the cluster meanwhile."""

    def __init__(
        self, settings: CloudSettings, node: str, service: TwinService, ledger: CloudLedger
    ) -> None:
        self.settings = settings
        self.node = node
        self.service = service
        self.ledger = ledger
        self.counters = WatchCounters()
        self.reporter: StatusReporter
        self.watchers: list[ResourceWatcher] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.api: KubeApi

    async def __aenter__(self) -> Self:
        settings = self.settings
        self.api = KubeApi(
            kubeconfig=settings.kubeconfig,
            in_cluster=settings.in_cluster,
            service_account_dir=settings.service_account_dir,
        )
        scopes: list[str | None] = (
            [None] if settings.all_namespaces else list(settings.namespaces or [self.api.namespace])
        )
        self.scope = (
            "all namespaces"
            if settings.all_namespaces
            else f"namespace{'s' if len(scopes) > 1 else ''} {', '.join(map(str, scopes))}"
        )
        """What the node follows, in words (the log, ``edgetwin get devices``)."""
        self.ledger.scope = self.scope
        log.info(
            "cloud sync with %s as node %s, following %s", self.api.server, self.node, self.scope
        )
        self.reporter = StatusReporter(
            self.api, self.service.engine, self.ledger, self.service.store, self.settings
        )
        self._start(self.reporter.run(), "status-reporter")
        self._start(self._log_stats(), "cloud-stats-log")
        for namespace in scopes:
            where = namespace or "all"
            models = self._watcher("devicemodels", namespace, _ModelHandler(self.service))
            devices = self._watcher(
                "devices",
                namespace,
                _DeviceHandler(self.service, namespace),
                selector=f"spec.nodeName={self.node}",
                keep=lambda obj: (obj.get("spec") or {}).get("nodeName") == self.node,
            )
            self._start(models.run(), f"watch-devicemodels-{where}")
            self._start(self._after(models, devices), f"watch-devices-{where}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.api.close()

    def stats(self) -> dict[str, int]:
        """The sync's counters, for the log and the metrics endpoint."""
        watch, status = self.counters, self.reporter.counters
        marked = self.ledger.marked
        return {
            "lists": watch.lists,
            "watch_requests": watch.watch_requests,
            "watch_restarts": watch.watch_restarts,
            "relists": watch.relists,
            "watch_events": watch.events,
            "status_patches": status.patches,
            "status_objects_created": status.created,
            "reports_coalesced": max(0, marked - status.patches - status.outbox_depth),
            "outbox_depth": status.outbox_depth,
            "status_failures": status.failures,
        }

    async def _log_stats(self, every: float = 60.0) -> None:
        last: dict[str, int] = {}
        while True:
            await asyncio.sleep(every)
            now = self.stats()
            if now != last:
                log.info("cloud sync: %s", ", ".join(f"{k} {v}" for k, v in now.items()))
                last = now

    @property
    def connected(self) -> bool:
        """Whether every watch is reaching the API server now."""
        return all(w.reachable for w in self.watchers)

    @property
    def synced(self) -> bool:
        """Whether every watch has listed once (the node follows the cluster)."""
        return all(w.synced.is_set() for w in self.watchers)

    async def wait_synced(self) -> None:
        """Until every watch has listed once."""
        await asyncio.gather(*(w.synced.wait() for w in self.watchers))

    def _watcher(
        self,
        plural: str,
        namespace: str | None,
        handler: WatchHandler,
        selector: str = "",
        keep: Callable[[Obj], bool] = lambda _: True,
    ) -> ResourceWatcher:
        watcher = ResourceWatcher(
            self.api,
            plural,
            namespace,
            handler,
            selector=selector,
            keep=keep,
            watch_timeout=self.settings.watch_timeout,
            max_delay=self.settings.retry_max_delay,
            counters=self.counters,
        )
        self.watchers.append(watcher)
        return watcher

    @staticmethod
    async def _after(first: ResourceWatcher, then: ResourceWatcher) -> None:
        """Devices after their models have been listed, so they find them."""
        await first.synced.wait()
        await then.run()

    def _start(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(start_guarded(coroutine, name))


class _ModelHandler:
    def __init__(self, service: TwinService) -> None:
        self.service = service

    async def replace(self, objects: list[Obj]) -> None:
        await _apply(self.service, objects)

    async def upsert(self, obj: Obj) -> None:
        await _apply(self.service, [obj])

    async def delete(self, obj: Obj) -> None:
        name = (obj.get("metadata") or {}).get("name")
        log.info("DeviceModel %s deleted in the cluster; its devices keep it until replaced", name)


class _DeviceHandler:
    """The node's devices in one namespace, or in all (None)."""

    def __init__(self, service: TwinService, namespace: str | None) -> None:
        self.service = service
        self.namespace = namespace

    async def replace(self, objects: list[Obj]) -> None:
        applied = await _apply(self.service, objects)
        listed = {device_id(r.metadata.namespace, r.metadata.name) for r in applied}
        prefix = f"{self.namespace}/" if self.namespace else ""
        gone = [
            device_id
            for device_id in self.service.engine.devices
            if device_id.startswith(prefix) and device_id not in listed
        ]
        if gone:
            log.info("removing %d device(s) no longer in the cluster: %s", len(gone), gone)
            await self.service.remove(gone, BY_CLUSTER)

    async def upsert(self, obj: Obj) -> None:
        await _apply(self.service, [obj])

    async def delete(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        await self.service.remove([f"{meta.get('namespace')}/{meta.get('name')}"], BY_CLUSTER)


async def _apply(service: TwinService, objects: list[Obj]) -> list[Resource]:
    """Apply what parses; a bad object from the cluster is logged and skipped."""
    resources: list[Resource] = []
    for obj in objects:
        try:
            resource = parse_document(_essentials(obj), "cluster")
        except EdgetwinError as exc:
            log.warning("skipping an object from the cluster: %s", exc)
            continue
        if isinstance(resource, Device | DeviceModel):
            resources.append(resource)
    if resources:
        await service.apply(resources, BY_CLUSTER)
    return resources


def _essentials(obj: Obj) -> Obj:
    """The object as the twin keeps it: identity, labels, annotations and spec."""
    meta = obj.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "namespace", "uid", "labels", "annotations") if k in meta}
    if isinstance(kept.get("annotations"), dict):
        kept["annotations"] = {k: v for k, v in kept["annotations"].items() if k != _LAST_APPLIED}
        if not kept["annotations"]:
            del kept["annotations"]
    out: Obj = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": kept}
    if "spec" in obj:
        out["spec"] = obj["spec"]
    return out
