"""A whole edge node as one async context manager: store, broker, twin service, manifests.

``edgetwin run`` serves a :class:`Node` until a signal; tests and other
programs embed it the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import gc
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Self

from edgetwin.auth import DeviceEntry, Identity, Role
from edgetwin.broker import MosquittoBroker, find_mosquitto, find_plugin
from edgetwin.config import Settings
from edgetwin.errors import BrokerStartError, ManifestError
from edgetwin.mappers import Mapper, MapperRuntime, load_mapper
from edgetwin.mqtt import BrokerAddress, MqttConnection
from edgetwin.twin import Store, TwinEngine, TwinLink, TwinService, load_manifests

if TYPE_CHECKING:
    from edgetwin.broker import EmbeddedBroker
    from edgetwin.cloud import CloudLedger, CloudSync
    from edgetwin.health import NodeMetrics
    from edgetwin.mappers.dmi import DmiServer

log = logging.getLogger(__name__)

_NO_PLUGIN = (
    "edgetwin was installed without its mosquitto plugin (building it needs the Debian "
    "packages mosquitto-dev, libmosquitto-dev, libssl-dev and gcc)"
)


class Node:
    """``async with Node(settings) as node``: serving until the block ends."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ledger: CloudLedger | None = None
        """What the cluster has yet to see; kept from the start, the sync sends it."""
        if settings.cloud.enabled:
            # Imported only here: the kubernetes client costs ~11 MB of memory.
            from edgetwin.cloud import CloudLedger  # noqa: PLC0415

            self.ledger = CloudLedger()
        self.engine = TwinEngine(
            settings.node.name, settings.twin, cloud=self.ledger, history=settings.history.enabled
        )
        self.broker_port = settings.broker.port
        self._stack = contextlib.AsyncExitStack()
        self.store: Store
        self.service: TwinService
        self.cloud: CloudSync | None = None
        self.mappers: dict[str, MapperRuntime] = {}
        self.broker: EmbeddedBroker | MosquittoBroker | None = None
        self.dmi: DmiServer | None = None
        self.metrics: NodeMetrics | None = None
        self.health_port: int | None = None

    async def __aenter__(self) -> Self:
        settings = self.settings
        if settings.manifests is not None and not settings.manifests.exists():
            raise ManifestError(f"{settings.manifests} does not exist")
        started = time.perf_counter()
        async with contextlib.AsyncExitStack() as stack:
            self.store = await stack.enter_async_context(
                Store(
                    settings.database_path,
                    synchronous=settings.store.synchronous,
                    max_batch=settings.store.max_batch,
                    max_history_rows=settings.history.max_rows,
                    max_history_age=settings.history.max_age,
                )
            )
            with paused_gc():
                self.engine.catalog.restore(await self.store.load())
            log.info(
                "loaded %d device(s) and %d model(s) from %s in %.0f ms",
                len(self.engine.devices),
                len(self.engine.catalog.models),
                settings.database_path,
                (time.perf_counter() - started) * 1000,
            )
            connect = await self._start_broker(stack)
            if settings.health.enabled:
                from edgetwin.health import NodeMetrics  # noqa: PLC0415 - ~14 MB, only if asked

                self.metrics = NodeMetrics(self)
            self.service = await stack.enter_async_context(
                TwinService(
                    self.engine,
                    self.store,
                    connect,
                    reconnect_max_delay=settings.broker.reconnect_max_delay,
                    observe_latency=self.metrics.latency.observe if self.metrics else _ignore,
                )
            )
            if settings.manifests:
                await self._apply_manifests(settings.manifests)
            for protocol in settings.mappers:
                runtime = self._mapper_runtime(load_mapper(protocol))
                self.mappers[protocol] = await stack.enter_async_context(runtime)
            if settings.dmi.enabled:
                from edgetwin.mappers.dmi import DmiServer  # noqa: PLC0415 - grpc only if asked

                self.dmi = await stack.enter_async_context(
                    DmiServer(
                        settings.dmi,
                        settings.node.data_dir,
                        self.mappers,
                        self._mapper_runtime,
                        self.engine.catalog,
                        reconnect_max_delay=settings.broker.reconnect_max_delay,
                    )
                )
            if self.ledger is not None:
                from edgetwin.cloud import CloudSync  # noqa: PLC0415 - imported with the ledger

                self.cloud = await stack.enter_async_context(
                    CloudSync(settings.cloud, settings.node.name, self.service, self.ledger)
                )
            if self.metrics is not None:
                await self._serve_health(stack, self.metrics)
            self._stack = stack.pop_all()
        release_free_memory()
        log.info(
            "node %s ready: %d device(s), MQTT on %s:%d",
            settings.node.name,
            len(self.engine.devices),
            settings.broker.host,
            self.broker_port,
        )
        return self

    async def _start_broker(self, stack: contextlib.AsyncExitStack) -> Callable[[], TwinLink]:
        """The embedded broker, if the node runs one; how the twin connects."""
        settings = self.settings.broker
        if not settings.embedded:
            return self._mqtt_connection
        binary = find_mosquitto(settings.mosquitto) if settings.engine != "amqtt" else None
        plugin = find_plugin()
        if settings.engine == "mosquitto" and (binary is None or plugin is None):
            raise BrokerStartError(
                "broker.engine is mosquitto, but "
                + ("no mosquitto binary is found" if binary is None else _NO_PLUGIN)
            )
        if binary is not None and plugin is None:
            log.warning("mosquitto is here, but %s: the embedded broker is amqtt", _NO_PLUGIN)
        if binary is not None and plugin is not None:
            folder = self.settings.node.data_dir / "mosquitto"
            mosquitto = MosquittoBroker(binary, plugin, settings, folder, self._device_entries)
            twin = Identity(f"edgetwin-node-twin-{self.settings.node.name}", Role.ADMIN)
            for identity in (twin, *map(_mapper_identity, self.settings.mappers)):
                mosquitto.internal_user(identity)  # in its rules from the start
            self.broker = await stack.enter_async_context(mosquitto)
            self.broker_port = mosquitto.port
            self.engine.membership_listeners.append(mosquitto.devices_changed)
            return functools.partial(self._mqtt_connection, self._credentials(twin))
        from edgetwin.broker import EmbeddedBroker  # noqa: PLC0415 - amqtt only if it runs

        amqtt = EmbeddedBroker(
            settings.host,
            settings.port,
            auth=settings.auth,
            tls=settings.tls_listener,
            protocol_of=self.engine.catalog.protocol_of,
            max_messages_per_second=settings.max_messages_per_second,
            max_packet_bytes=settings.max_packet_bytes,
        )
        self.broker = await stack.enter_async_context(amqtt)
        self.broker_port = amqtt.port
        return amqtt.local_connection

    def _device_entries(self) -> list[DeviceEntry]:
        """The node's devices and their protocols, for the broker's ACL."""
        return [
            DeviceEntry(device, protocol)
            for device in self.engine.devices
            if (protocol := self.engine.catalog.protocol_of(device)) is not None
        ]

    async def _apply_manifests(self, path: Path) -> None:
        # Parsed here so the resources die with this frame, before memory is trimmed.
        errors = await self.service.apply(load_manifests(path))
        if errors:
            raise ManifestError(f"{path}: {errors[0]}")

    def broker_address(self) -> BrokerAddress:
        """Where clients in this process (the mappers) reach the broker."""
        address = BrokerAddress.from_settings(self.settings.broker, port=self.broker_port)
        if address.host in ("0.0.0.0", "::", ""):  # noqa: S104 - a listen address, not ours
            return BrokerAddress.from_settings(
                self.settings.broker.model_copy(update={"host": "127.0.0.1"}),
                port=self.broker_port,
            )
        return address

    def _mapper_runtime(self, mapper: Mapper) -> MapperRuntime:
        """A runtime for one of the node's mappers (its own, or a DMI mapper's bridge)."""
        return MapperRuntime(
            mapper,
            self._mapper_address(mapper.protocol),
            node=self.settings.node.name,
            reconnect_max_delay=self.settings.broker.reconnect_max_delay,
        )

    def _mapper_address(self, protocol: str) -> BrokerAddress:
        """A mapper of the node reaches the embedded broker with credentials of its own."""
        return self._credentials(_mapper_identity(protocol))

    def _credentials(self, identity: Identity) -> BrokerAddress:
        """Where a client of this process reaches the broker, logged in as ``identity``
        when the embedded broker asks who is there."""
        address = self.broker_address()
        login = self.broker.internal_user(identity) if self.broker is not None else None
        if login is None:
            return address
        return dataclasses.replace(address, username=login[0], password=login[1])

    async def _serve_health(self, stack: contextlib.AsyncExitStack, metrics: NodeMetrics) -> None:
        from edgetwin.health import HealthServer, always, page_routes  # noqa: PLC0415

        settings = self.settings.health

        async def exposition(_query: dict[str, str]) -> tuple[int, str, bytes]:
            return 200, CONTENT_TYPE_METRICS, metrics.exposition()

        async def readiness(_query: dict[str, str]) -> tuple[int, str, bytes]:
            return self._readiness()

        routes = {
            "/metrics": exposition,
            "/healthz": always((200, "text/plain", b"ok\n")),
            "/readyz": readiness,
        }
        if settings.page:
            routes |= page_routes(self)
        server = await stack.enter_async_context(HealthServer(settings.host, settings.port, routes))
        self.health_port = server.port

    def _readiness(self) -> tuple[int, str, bytes]:
        """Ready when the twin API is connected and, with a cloud sync, the cluster is listed."""
        if not self.service.connected.is_set():
            return 503, "text/plain", b"twin API not connected to the broker\n"
        if self.cloud is not None and not self.cloud.synced:
            return 503, "text/plain", b"cloud sync has not listed the cluster yet\n"
        return 200, "text/plain", b"ready\n"

    def _mqtt_connection(self, address: BrokerAddress | None = None) -> MqttConnection:
        """The twin's client of a broker over TCP (external, or the mosquitto child): a
        persistent session, so the broker keeps requests for the twin while it reconnects."""
        address = address or BrokerAddress.from_settings(self.settings.broker)
        client_id = f"edgetwin-twin-{self.settings.node.name}"
        return MqttConnection(address, client_id=client_id, persistent=True)

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()
        log.info("node %s stopped", self.settings.node.name)


CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"


def _mapper_identity(protocol: str) -> Identity:
    """Who a mapper of the node is to the embedded broker."""
    return Identity(f"edgetwin-node-mapper-{protocol}", Role.MAPPER, protocol)


def _ignore(_seconds: float) -> None:
    pass


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection for a bulk load.

    Loading 100,000 twin rows creates hundreds of thousands of objects, which
    would set off full collections over all of them again and again; they hold
    no cycles, so collecting once at the end is enough.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def release_free_memory() -> None:
    """Hand the heap freed after start-up (parsed manifests, the loaded snapshot) back to the OS.

    CPython keeps freed memory for reuse; on glibc, ``malloc_trim`` returns
    the free pages, which is most of a node's start-up peak.
    """
    gc.collect()
    # What start-up built lives as long as the node: out of the collector's sight, so
    # that full collections while serving walk only what was made since (gc.freeze).
    gc.freeze()
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name)
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
