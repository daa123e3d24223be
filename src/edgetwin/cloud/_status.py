"""Reported values and device state out to the cluster, from the SQLite outbox.

The engine writes an outbox row with every change the cluster should see,
in the same transaction as the change, one row per device field, so a burst
coalesces to the latest value and nothing is lost across restarts or
outages. This reporter wakes when a commit adds rows, writes each due device
as one merge patch of its whole status (``twins`` is a list, which a merge
patch replaces whole), at most once per ``status_interval`` per device and
at most ``rate_limit`` requests per second for the node, then deletes exactly
the rows it sent; a newer value written meanwhile stays queued.

Where the status goes: a DeviceStatus of the same name, created owned by the
Device and naming this node as its writer if missing, or made again if it
names no writer or another (KubeEdge 1.23); on a cluster without that resource, the
Device's own ``status`` (older KubeEdge). Whether that resource has a status
subresource comes from discovery at start: KubeEdge's DeviceStatus has none,
and cloudcore merge-patches the main object, so the node does the same there
(a patch of ``/status`` would be a 404 on such a cluster; one of the main
object on a CRD with the subresource would silently drop the status).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from edgetwin.cloud._client import GROUP, VERSION, KubeApi
from edgetwin.cloud._errors import ConflictError, ForbiddenError, NotFoundError
from edgetwin.cloud._ledger import CloudLedger, device_status
from edgetwin.config import CloudSettings
from edgetwin.errors import CloudError
from edgetwin.tasks import Backoff
from edgetwin.twin import TwinEngine
from edgetwin.twin.store import OutboxRow, Store, WriteBatch
from edgetwin.wire.names import split_device_id

log = logging.getLogger(__name__)

Obj = dict[str, Any]

WRITER_ANNOTATION = "edgetwin.io/status-writer"
"""Names the node that writes a DeviceStatus (crds/admission.yaml checks it on updates)."""
NODE_STATUS_LABEL = "edgetwin.io/node-status"
"""Marks a DeviceStatus a node creates: its create is checked against the Device."""


@dataclass(frozen=True)
class StatusTarget:
    """Where a device's status goes in this cluster."""

    plural: str  # devicestatuses, or devices on clusters before DeviceStatus
    subresource: bool  # whether it has a status subresource to patch

    def __str__(self) -> str:
        where = "DeviceStatus" if self.plural == "devicestatuses" else "Device.status"
        return f"{where} ({'status subresource' if self.subresource else 'main object'})"


async def discover_target(api: KubeApi) -> StatusTarget:
    served = await api.served_resources()
    plural = "devicestatuses" if "devicestatuses" in served else "devices"
    return StatusTarget(plural, f"{plural}/status" in served)


@dataclass
class StatusCounters:
    patches: int = 0
    created: int = 0
    outbox_depth: int = 0
    failures: int = 0


class TokenBucket:
    """At most ``rate`` takes per second, in bursts of at most ``rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = rate
        self._at = time.monotonic()

    async def take(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            await asyncio.sleep((1 - self._tokens) / self.rate)
            self._tokens, self._at = 1.0, time.monotonic()
        self._tokens -= 1


class StatusReporter:
    def __init__(
        self,
        api: KubeApi,
        engine: TwinEngine,
        ledger: CloudLedger,
        store: Store,
        settings: CloudSettings,
    ) -> None:
        self.api = api
        self.engine = engine
        self.ledger = ledger
        self.store = store
        self.settings = settings
        self.counters = StatusCounters()
        self._bucket = TokenBucket(settings.rate_limit)
        self._next: dict[str, float] = {}  # device -> earliest time of its next write
        self._has_status_object: set[str] = set()
        self.target: StatusTarget | None = None
        """Where status goes, once discovered."""
        self._forbidden_logged: set[str] = set()

    async def run(self) -> None:
        backoff = Backoff(self.settings.retry_max_delay, first=0.2)
        while True:
            self.store.outbox_written.clear()
            try:
                if self.target is None:
                    self.target = await discover_target(self.api)
                    log.info("device status goes to %s", self.target)
                wait = await self._flush_due(self.target)
                backoff.reset()
            except CloudError as exc:
                self.counters.failures += 1
                wait = backoff.next_delay()
                log.warning("status not written: %s; retrying in %.1f s", exc, wait)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.store.outbox_written.wait()

    async def _flush_due(self, target: StatusTarget) -> float | None:
        """Write every due device; how long until the next one is due (None: none waits)."""
        rows = await self.store.outbox()
        self.counters.outbox_depth = len(rows)
        by_device: dict[str, list[OutboxRow]] = defaultdict(list)
        for row in rows:
            by_device[row.device].append(row)
        self.ledger.pending |= set(by_device)
        now = time.monotonic()
        later: list[float] = []
        for device, device_rows in by_device.items():
            due = self._next.get(device, 0.0)
            if due > now:
                later.append(due)
                continue
            try:
                await self._write(device, target)
            except ForbiddenError as exc:
                self._forbid(device, exc)
                continue
            except ConflictError as exc:  # changed under us: read it again next time
                self.counters.failures += 1
                self._has_status_object.discard(device)
                log.info("status of %s: %s; retrying from fresh state", device, exc)
                continue
            self._next[device] = time.monotonic() + self.settings.status_interval
            await self.store.write(WriteBatch(outbox_sent=device_rows))
            self.ledger.pending.discard(device)
            self.counters.outbox_depth -= len(device_rows)
        return max(0.0, min(later) - time.monotonic()) if later else None

    def _forbid(self, device: str, exc: ForbiddenError) -> None:
        self.counters.failures += 1
        self._has_status_object.discard(device)  # looked at again: one to make anew?
        self._next[device] = time.monotonic() + self.settings.retry_max_delay
        if device not in self._forbidden_logged:
            self._forbidden_logged.add(device)
            log.error(
                "status of %s not written: the node's Role does not allow it: %s", device, exc
            )

    async def _write(self, device: str, target: StatusTarget) -> None:
        twin = self.engine.devices.get(device)
        if twin is None:
            return  # gone here; the rows go with it
        status = device_status(twin)
        namespace, name = split_device_id(device)
        if target.plural == "devicestatuses" and device not in self._has_status_object:
            await self._ensure_status_object(namespace, name)
            self._has_status_object.add(device)
        patch = {"status": status}
        await self._request(
            self.api.patch(target.plural, namespace, name, patch, status=target.subresource)
        )
        self.counters.patches += 1

    async def _request(self, call: Awaitable[Obj]) -> Obj:
        """One API request, within the node-wide rate limit."""
        await self._bucket.take()
        return await call

    async def _ensure_status_object(self, namespace: str, name: str) -> None:
        """A DeviceStatus for the device that names this node as its writer, owned by the
        Device, so it goes when the Device goes. One made by someone else (cloudcore, an
        admin, an older node, another node before the Device existed) is replaced: the
        admission policies let a node update only a DeviceStatus that names it."""
        node = self.engine.catalog.node
        try:
            found = await self._request(self.api.get("devicestatuses", namespace, name))
        except NotFoundError:
            pass
        else:
            meta = found.get("metadata") or {}
            if (meta.get("annotations") or {}).get(WRITER_ANNOTATION) == node:
                return
            log.info("DeviceStatus %s/%s was not written by this node: made again", namespace, name)
            with contextlib.suppress(NotFoundError):
                await self._request(self.api.delete("devicestatuses", namespace, name, meta["uid"]))
        device = await self._request(self.api.get("devices", namespace, name))
        owner = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Device",
            "name": name,
            "uid": device["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DeviceStatus",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "ownerReferences": [owner],
                "annotations": {WRITER_ANNOTATION: node},
                "labels": {NODE_STATUS_LABEL: "true"},
            },
        }
        try:
            await self._request(self.api.create("devicestatuses", namespace, body))
            self.counters.created += 1
        except ConflictError:
            pass  # created meanwhile by someone else: fine, it is there
