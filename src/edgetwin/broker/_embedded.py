"""The embedded amqtt broker behind a small interface.

amqtt descends from hbmqtt, which Home Assistant dropped for memory leaks;
keeping it behind :class:`EmbeddedBroker` lets a node swap it for any
external broker (``broker.embedded: false``) with nothing else changing.
Only the plugins we need are loaded: anonymous access for now, no ``$SYS``
topics and no packet logging, which cost CPU on every message.

Since 0.11.2 amqtt disconnects any client that publishes to a topic starting
with ``$`` (its reading of MQTT-4.7.2-1, a SHOULD in the standard). KubeEdge's
twin API lives under ``$hw/``, and mosquitto and EMQX allow it, so
:class:`_KubeEdgeBroker` lets ``$hw/`` publications through amqtt's usual
path (events, topic ACL, broadcast, retain) and leaves every other topic to
amqtt. Two amqtt bugs are fixed on the way: a new client was sent the
retained messages of every filter any client had subscribed to, and a client
that reset its connection left its socket open. amqtt is pinned to the
version this was written against.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any, Self

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import BrokerError
from amqtt.events import BrokerEvents

from edgetwin.broker._local import LocalConnection
from edgetwin.errors import BrokerStartError

log = logging.getLogger(__name__)

KUBEEDGE_PREFIX = "$hw/"


class _ClosingWriter(StreamWriterAdapter):  # type: ignore[misc]
    """amqtt's stream writer, whose close also closes the socket when the peer is gone.

    amqtt drains before closing; when the client has already reset the
    connection the drain raises and amqtt never closes the transport, which
    leaks the socket.
    """

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self._writer.close()


class _KubeEdgeBroker(Broker):  # type: ignore[misc]
    """amqtt's broker, allowing client publications under ``$hw/``, with in-process links."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._links: list[LocalConnection] = []

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        await self._client_connected(
            listener_name, StreamReaderAdapter(reader), _ClosingWriter(writer)
        )

    async def _publish_retained_messages_for_subscription(
        self,
        subscription: tuple[str, int],
        session: Any,  # noqa: ANN401 - amqtt's Session
    ) -> None:
        # On connect amqtt offers a client the retained messages of every filter anyone has
        # subscribed to; only the client's own subscriptions should get them.
        subscribers = self._subscriptions.get(subscription[0], [])
        if any(s.client_id == session.client_id for s, _ in subscribers):
            await super()._publish_retained_messages_for_subscription(subscription, session)

    # --- the LocalBroker protocol -----------------------------------------------------------

    def attach(self, link: LocalConnection) -> None:
        self._links.append(link)

    def detach(self, link: LocalConnection) -> None:
        if link in self._links:
            self._links.remove(link)

    def matches(self, topic: str, topic_filter: str) -> bool:
        return bool(self._matches(topic, topic_filter))

    async def broadcast(self, topic: str, payload: bytes, qos: int) -> None:
        await self.internal_message_broadcast(topic, payload, qos)

    async def retain(self, topic: str, payload: bytes, qos: int) -> None:
        await self.retain_message(None, topic, payload, qos)

    async def _broadcast_message(
        self,
        session: Any,  # noqa: ANN401 - amqtt's Session
        topic: str | None,
        data: bytes | bytearray | None,
        force_qos: int | None = None,
    ) -> None:
        # Client publications (session set; ACL already passed) also go to the local links.
        if session is not None and topic:
            for link in self._links:
                if link.wants(topic):
                    link.deliver(topic, bytes(data or b""))
        await super()._broadcast_message(session, topic, data, force_qos)

    async def _handle_message_delivery(  # amqtt's own signature, untyped there
        self,
        client_session: Any,  # noqa: ANN401
        handler: Any,  # noqa: ANN401
        wait_deliver: Any,  # noqa: ANN401
    ) -> bool:
        message = wait_deliver.result()
        topic = getattr(message, "topic", None)
        if not topic or not topic.startswith(KUBEEDGE_PREFIX) or "+" in topic or "#" in topic:
            return bool(
                await super()._handle_message_delivery(client_session, handler, wait_deliver)
            )
        client_id = client_session.client_id
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_RECEIVED, client_id=client_id, message=message
        )
        if not await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
            log.info("%s may not publish to %s", client_id, topic)
            return True
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_BROADCAST, client_id=client_id, message=message
        )
        await self._broadcast_message(client_session, topic, message.data)
        if message.publish_packet and message.publish_packet.retain_flag:
            await self.retain_message(client_session, topic, message.data, message.qos)
        return True


class EmbeddedBroker:
    """``async with EmbeddedBroker(host, port) as broker``; port 0 picks a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self._requested_port = port
        self._broker: _KubeEdgeBroker | None = None
        self.port = port

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{self.host}:{self._requested_port}"}
            },
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

    async def __aenter__(self) -> Self:
        broker = _KubeEdgeBroker(self._config())
        amqtt_log = logging.getLogger("amqtt")
        level = amqtt_log.level
        amqtt_log.setLevel(logging.CRITICAL)  # amqtt logs a traceback for a busy port
        try:
            await broker.start()
        except BrokerError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
                raise BrokerStartError(
                    f"cannot listen on {self.host}:{self._requested_port}: the port is in use"
                ) from None
            raise BrokerStartError(f"the embedded broker cannot start: {exc}") from None
        finally:
            amqtt_log.setLevel(level)
        self._broker = broker
        server = broker._servers["default"].instance  # noqa: SLF001 - the bound port for port 0
        self.port = server.sockets[0].getsockname()[1]
        log.info("embedded MQTT broker listening on %s:%d", self.host, self.port)
        return self

    def local_connection(self) -> LocalConnection:
        """An in-process link for a twin running in the broker's own process."""
        if self._broker is None:
            raise BrokerStartError("the embedded broker is not running")
        return LocalConnection(self._broker, f"{self.host}:{self.port} (in-process)")

    async def __aexit__(self, *exc_info: object) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
            log.info("embedded MQTT broker stopped")
