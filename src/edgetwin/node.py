"""A whole edge node as one async context manager: store, broker, twin service, manifests.

``edgetwin run`` is a thin wrapper over :func:`run_node`; tests and other
programs embed :class:`Node` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Self

from edgetwin.broker import EmbeddedBroker
from edgetwin.config import Settings
from edgetwin.errors import ManifestError
from edgetwin.mqtt import BrokerAddress
from edgetwin.twin import Store, TwinEngine, TwinService, load_manifests

log = logging.getLogger(__name__)


class Node:
    """``async with Node(settings) as node``: serving until the block ends."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = TwinEngine(settings.node.name, settings.twin)
        self.broker_port = settings.broker.port
        self._stack = contextlib.AsyncExitStack()
        self.store: Store
        self.service: TwinService

    async def __aenter__(self) -> Self:
        settings = self.settings
        started = time.perf_counter()
        async with contextlib.AsyncExitStack() as stack:
            resources = load_manifests(settings.manifests) if settings.manifests else []
            self.store = await stack.enter_async_context(
                Store(
                    settings.database_path,
                    synchronous=settings.store.synchronous,
                    max_batch=settings.store.max_batch,
                )
            )
            self.engine.restore(await self.store.load())
            log.info(
                "loaded %d device(s) and %d model(s) from %s in %.0f ms",
                len(self.engine.devices),
                len(self.engine.models),
                settings.database_path,
                (time.perf_counter() - started) * 1000,
            )
            if settings.broker.embedded:
                broker = await stack.enter_async_context(
                    EmbeddedBroker(settings.broker.host, settings.broker.port)
                )
                self.broker_port = broker.port
            address = BrokerAddress.from_settings(settings.broker, port=self.broker_port)
            self.service = await stack.enter_async_context(
                TwinService(
                    self.engine,
                    self.store,
                    address,
                    reconnect_max_delay=settings.broker.reconnect_max_delay,
                )
            )
            if resources:
                errors = await self.service.apply(resources)
                if errors:
                    raise ManifestError(f"{settings.manifests}: {errors[0]}")
            self._stack = stack.pop_all()
        log.info(
            "node %s ready: %d device(s), MQTT on %s:%d",
            settings.node.name,
            len(self.engine.devices),
            settings.broker.host,
            self.broker_port,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()
        log.info("node %s stopped", self.settings.node.name)


async def run_node(
    settings: Settings,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a node until ``stop`` is set (forever if None)."""
    stop = stop or asyncio.Event()
    async with Node(settings):
        if ready is not None:
            ready.set()
        await stop.wait()
