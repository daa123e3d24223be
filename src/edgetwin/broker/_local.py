"""An in-process link to the embedded broker, for the twin that runs beside it.

It offers the calls of an MQTT connection (subscribe, publish, messages) but
skips TCP and MQTT encoding: client publications that match its filters are
handed over after amqtt has checked them (ACL included), and what it
publishes enters amqtt's broadcast and retain paths directly. With the
broker and the twin sharing one core, that halves amqtt's work per update.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, Self

from edgetwin.tasks import stop_task

log = logging.getLogger(__name__)


class LocalBroker(Protocol):
    """What the link needs of the broker."""

    def attach(self, link: LocalConnection) -> None: ...
    def detach(self, link: LocalConnection) -> None: ...
    def matches(self, topic: str, topic_filter: str) -> bool: ...
    async def broadcast(self, topic: str, payload: bytes, qos: int) -> None: ...
    async def retain(self, topic: str, payload: bytes, qos: int) -> None: ...


class LocalConnection:
    """``async with broker.local_connection() as link``: the same calls as MqttConnection."""

    def __init__(self, broker: LocalBroker, address: str) -> None:
        self._broker = broker
        self.address = address
        self._filters: list[str] = []
        self._incoming: deque[tuple[str, bytes]] = deque()
        self._arrived = asyncio.Event()
        self._outgoing: asyncio.Queue[tuple[str, bytes, int, bool]] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._broker.attach(self)
        self._sender = asyncio.create_task(self._send_loop(), name="local-link-sender")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._broker.detach(self)
        if self._sender is not None:
            await self._outgoing.join()  # what was published before closing still goes out
            await stop_task(self._sender)

    def wants(self, topic: str) -> bool:
        return any(self._broker.matches(topic, f) for f in self._filters)

    def deliver(self, topic: str, payload: bytes) -> None:
        self._incoming.append((topic, payload))
        self._arrived.set()

    async def subscribe(self, filters: Sequence[str], qos: int = 1) -> None:
        del qos  # in-process delivery cannot be lost
        self._filters.extend(f for f in filters if f not in self._filters)

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> None:
        self._outgoing.put_nowait((topic, payload, qos, retain))

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.publish_nowait(topic, payload, qos, retain)

    async def batches(self) -> AsyncIterator[list[tuple[str, bytes]]]:
        """Every message waiting, in arrival order; then the next ones."""
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            batch = list(self._incoming)
            self._incoming.clear()
            yield batch

    async def _send_loop(self) -> None:
        while True:
            topic, payload, qos, retain = await self._outgoing.get()
            try:
                if retain:
                    await self._broker.retain(topic, payload, qos)
                # An empty retained message clears the topic and still reaches subscribers
                # (MQTT-3.3.1-10): that is how a mapper learns a device was removed.
                await self._broker.broadcast(topic, payload, qos)
            except Exception:
                log.exception("local publish to %s failed", topic)
            finally:
                self._outgoing.task_done()
