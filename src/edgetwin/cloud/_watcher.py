"""List, then watch from the list's resourceVersion, for one resource in one namespace.

The loop an informer runs: a watch that the server ends (its timeout) is
renewed from the last resourceVersion seen, bookmarks included; a version
that has expired (410 Gone) means listing again; an unreachable server
means waiting, with jittered exponential backoff, then resuming. If the
server cannot select by field (400: a CRD without ``selectableFields``), the
selection moves to this side. Either way an object that stops matching is
handed on as deleted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edgetwin.cloud._client import KubeApi
from edgetwin.cloud._errors import BadRequestError, ForbiddenError, GoneError
from edgetwin.config import DEFAULTS
from edgetwin.errors import CloudError
from edgetwin.tasks import Backoff

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class WatchHandler(Protocol):
    """Where a watcher's objects go."""

    async def replace(self, objects: list[Obj]) -> None:
        """All objects, after a (re)list: anything else held for this watch is gone."""

    async def upsert(self, obj: Obj) -> None: ...

    async def delete(self, obj: Obj) -> None: ...


@dataclass
class WatchCounters:
    lists: int = 0
    relists: int = 0
    watch_requests: int = 0
    watch_restarts: int = 0
    events: int = 0


class ResourceWatcher:
    def __init__(
        self,
        api: KubeApi,
        plural: str,
        namespace: str | None,
        handler: WatchHandler,
        *,
        selector: str = "",
        keep: Callable[[Obj], bool] = lambda _: True,
        watch_timeout: int = 300,
        max_delay: float = DEFAULTS.cloud.retry_max_delay,
        counters: WatchCounters | None = None,
    ) -> None:
        self.api = api
        self.plural = plural
        self.namespace = namespace
        self.handler = handler
        self.selector = selector
        self.keep = keep
        self.watch_timeout = watch_timeout
        self.max_delay = max_delay
        self.counters = counters or WatchCounters()
        self.synced = asyncio.Event()
        self.reachable = False
        """Whether the last list or watch request got an answer (for the health endpoint)."""
        self._where = f"{plural} in {namespace or 'all namespaces'}"

    async def run(self) -> None:
        resource_version: str | None = None
        backoff = Backoff(self.max_delay, first=0.2)
        while True:
            try:
                if resource_version is None:
                    resource_version = await self._list()
                resource_version = await self._watch(resource_version)
                self.reachable = True
                backoff.reset()
                continue
            except GoneError:
                log.info("watch of %s expired; listing again", self._where)
                self.counters.relists += 1
                resource_version = None
                continue
            except BadRequestError as exc:
                if not self.selector:
                    raise
                log.warning(
                    "the API server cannot select %s by %r (%s); selecting on this node",
                    self._where,
                    self.selector,
                    exc,
                )
                self.selector = ""
                resource_version = None
                continue
            except ForbiddenError as exc:
                self.reachable = False
                log.error("%s: the node's Role does not allow it: %s", self._where, exc)  # noqa: TRY400
                backoff.longest()
            except CloudError as exc:
                self.reachable = False
                log.warning("%s: %s; trying again", self._where, exc)
            self.counters.watch_restarts += 1
            await backoff.wait()

    async def _list(self) -> str:
        objects, resource_version = await self.api.list(self.plural, self.namespace, self.selector)
        await self.handler.replace([o for o in objects if self.keep(o)])
        self.counters.lists += 1
        self.reachable = True
        self.synced.set()
        log.info("listed %d %s at version %s", len(objects), self._where, resource_version)
        return resource_version

    async def _watch(self, resource_version: str) -> str:
        """Follow one watch request; the last resourceVersion seen when it ends."""
        self.counters.watch_requests += 1
        stream = self.api.watch(
            self.plural, self.namespace, resource_version, self.selector, self.watch_timeout
        )
        async for kind, obj in stream:
            resource_version = str(
                obj.get("metadata", {}).get("resourceVersion") or resource_version
            )
            if kind == "BOOKMARK":
                continue
            self.counters.events += 1
            if kind == "ERROR":
                log.warning("%s: watch error %s", self._where, obj.get("message"))
                continue
            if kind == "DELETED" or not self.keep(obj):
                await self.handler.delete(obj)
            else:
                await self.handler.upsert(obj)
        return resource_version
