"""The node's MQTT client: MQTT 3.1.1 over an asyncio Protocol (the codec is ``_codec``).

Why not a client library: the twin's link carries every update, and per
message aiomqtt (over paho) cost 275 µs of CPU for an echo, paho's own
thread 72 µs, gmqtt 37 µs; this client reads every packet that arrived in
one go and hands them over as a batch (:meth:`MqttConnection.batches`), and
writes everything sent in one event-loop turn with one system call. The
measurements are in ``bench/README.md``.

Every connection sets ``TCP_NODELAY``: without it a QoS 1 request/response
pays Nagle against delayed ACKs (40+ ms a round trip).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import orjson

from edgetwin.config import DEFAULTS, BrokerSettings
from edgetwin.errors import BrokerUnreachableError, RequestError
from edgetwin.logs import ThrottledLog
from edgetwin.mqtt import _codec as codec

log = logging.getLogger(__name__)
_skipped_log = ThrottledLog(log)

_CONNECT_TIMEOUT = 10.0
_PAUSE_AT = 10_000
"""Incoming messages waiting to be taken: above this the socket is not read."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where and how to connect; built from the broker settings."""

    host: str = DEFAULTS.broker.host
    port: int = DEFAULTS.broker.port
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    tls: bool = False
    keepalive: int = DEFAULTS.broker.keepalive
    max_packet_bytes: int = DEFAULTS.broker.max_packet_bytes

    @classmethod
    def from_settings(cls, settings: BrokerSettings, port: int | None = None) -> BrokerAddress:
        tls = settings.tls
        return cls(
            host=settings.host,
            port=settings.port if port is None else port,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            ca_file=tls.ca_file if tls else None,
            cert_file=tls.cert_file if tls else None,
            key_file=tls.key_file if tls else None,
            tls_insecure=tls.insecure if tls else False,
            tls=tls is not None,
            keepalive=settings.keepalive,
            max_packet_bytes=settings.max_packet_bytes,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        if self.tls_insecure:
            context.check_hostname = False  # the chain is still verified
        return context

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class _Protocol(asyncio.Protocol):
    """Bytes in and out for one connection; the MqttConnection does the rest."""

    def __init__(self, connection: MqttConnection, max_packet_bytes: int) -> None:
        self._connection = connection
        self._reader = codec.PacketReader(max_packet_bytes)
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.last_read = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        skipped = self._reader.oversized
        try:
            packets = self._reader.feed(data)
        except codec.ProtocolError as exc:
            self.close(exc)
            return
        if self._reader.oversized != skipped:
            _skipped_log.write(
                str(self._connection.address),
                "oversized",
                "skipped a packet from %s over the limit of %d bytes",
                self._connection.address,
                self._reader.max_packet_bytes,
            )
        if packets:
            self._connection._received(packets)  # noqa: SLF001 - its own protocol

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.lost.done():
            self.lost.set_result(None)
        self._connection._lost(exc)  # noqa: SLF001

    def send(self, packet: bytes) -> None:
        """Queue a packet; everything queued in one loop turn goes out in one write."""
        if self.transport is None:
            raise BrokerUnreachableError(
                f"not connected to the MQTT broker at {self._connection.address}"
            )
        self._out.append(packet)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def close(self, exc: Exception | None = None) -> None:
        if exc is not None:
            self._connection._lost(exc)  # noqa: SLF001 - say why before the socket says "closed"
        if self.transport is not None:
            self.flush()
            self.transport.close()

    @property
    def oversized(self) -> int:
        return self._reader.oversized


class MqttConnection:
    """One connection to the broker: ``async with MqttConnection(address) as mqtt: ...``.

    Raises BrokerUnreachableError if the broker cannot be reached or says no.
    With ``persistent`` the broker keeps the session (clean session off).
    """

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str | None = None,
        will: tuple[str, bytes] | None = None,
        persistent: bool = False,
    ) -> None:
        self.address = address
        self._persistent = persistent
        self.client_id = client_id or f"edgetwin-{uuid.uuid4().hex[:12]}"
        self._will = codec.Will(*will) if will is not None else None
        self._protocol: _Protocol | None = None
        self._incoming: deque[tuple[str, bytes]] = deque()
        self._arrived = asyncio.Event()
        self._paused = False
        self._error: BrokerUnreachableError | None = None
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        """Packet id -> the acknowledgement's body, for the calls that wait for one."""
        self._received_qos2: set[int] = set()
        self._next_id = 0
        self._connack: asyncio.Future[bytes] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self.session_present = False

    # --- connecting ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        address = self.address
        self._connack = loop.create_future()
        try:
            context = address.ssl_context()
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                _, protocol = await loop.create_connection(
                    lambda: _Protocol(self, address.max_packet_bytes),
                    address.host,
                    address.port,
                    ssl=context,
                )
                self._protocol = protocol
                protocol.send(
                    codec.connect(
                        self.client_id,
                        keepalive=address.keepalive,
                        clean_session=not self._persistent,
                        username=address.username,
                        password=address.password,
                        will=self._will,
                    )
                )
                connack = await self._connack
        except (OSError, TimeoutError, BrokerUnreachableError) as exc:
            await self._close()
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise BrokerUnreachableError(
                f"cannot connect to the MQTT broker at {address}: {reason}"
            ) from exc
        code = connack[1] if len(connack) == 2 else -1
        if code != 0:
            await self._close()
            reason = codec.CONNACK_REFUSALS.get(code, f"refused (code {code})")
            raise BrokerUnreachableError(
                f"cannot connect to the MQTT broker at {address}: {reason}"
            )
        self.session_present = bool(connack[0] & 0x01)
        if address.keepalive:
            self._keepalive = asyncio.create_task(self._keep_alive(), name="mqtt-keepalive")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            with contextlib.suppress(BrokerUnreachableError):
                protocol.send(codec.DISCONNECT_PACKET)
        await self._close()

    async def _close(self) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.cancel()  # nobody waits for it any more
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
            self._keepalive = None
        protocol = self._protocol
        if protocol is not None:
            protocol.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await protocol.lost
        self._lost(None)

    async def _keep_alive(self) -> None:
        """PINGREQ every keepalive; a broker silent for 1.5 keepalives is gone (MQTT-3.1.2-24)."""
        interval = self.address.keepalive
        protocol = self._protocol
        assert protocol is not None
        while True:
            await asyncio.sleep(interval / 2)
            if time.monotonic() - protocol.last_read > 1.5 * interval:
                protocol.close(BrokerUnreachableError("no answer to keep-alive pings"))
                return
            with contextlib.suppress(BrokerUnreachableError):
                protocol.send(codec.PINGREQ_PACKET)

    # --- what arrives -------------------------------------------------------------------------

    def _received(self, packets: list[codec.Message | codec.Control]) -> None:
        protocol = self._protocol
        assert protocol is not None
        incoming = self._incoming
        for packet in packets:
            if isinstance(packet, codec.Message):
                if packet.qos == 1:
                    protocol.send(codec.ack(codec.PUBACK, packet.packet_id))
                elif packet.qos == 2:
                    protocol.send(codec.ack(codec.PUBREC, packet.packet_id))
                    if packet.packet_id in self._received_qos2:
                        continue  # a resend before our PUBREC arrived: delivered once
                    self._received_qos2.add(packet.packet_id)
                incoming.append((packet.topic, packet.payload))
            else:
                self._control(protocol, packet)
        if incoming:
            self._arrived.set()
            if len(incoming) > _PAUSE_AT and not self._paused and protocol.transport:
                self._paused = True
                protocol.transport.pause_reading()

    def _control(self, protocol: _Protocol, packet: codec.Control) -> None:
        kind, body = packet.kind, packet.body
        if kind == codec.CONNACK:
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(body)
            return
        if kind == codec.PINGRESP or len(body) < 2:
            return
        packet_id = int.from_bytes(body[:2], "big")
        if kind == codec.PUBREL:
            self._received_qos2.discard(packet_id)
            protocol.send(codec.ack(codec.PUBCOMP, packet_id))
        elif kind == codec.PUBREC:
            protocol.send(codec.ack(codec.PUBREL, packet_id))
        elif kind in (codec.PUBACK, codec.PUBCOMP, codec.SUBACK, codec.UNSUBACK):
            waiter = self._waiting.pop(packet_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(body[2:])

    def _lost(self, exc: Exception | None) -> None:
        if self._error is None:
            reason = str(exc) if exc else "connection closed"
            self._error = BrokerUnreachableError(
                f"lost the MQTT broker at {self.address}: {reason}"
            )
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(self._error)
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(self._error)
        self._waiting.clear()
        self._arrived.set()

    async def batches(self) -> AsyncIterator[list[tuple[str, bytes]]]:
        """Every message waiting, as ``(topic, payload)`` in arrival order; then the next ones.

        Ends with BrokerUnreachableError once the connection is lost and what
        arrived before has been taken.
        """
        while True:
            if self._incoming:
                batch = list(self._incoming)
                self._incoming.clear()
                if self._paused:
                    self._paused = False
                    if self._protocol is not None and self._protocol.transport is not None:
                        self._protocol.transport.resume_reading()
                yield batch
                continue
            if self._error is not None:
                raise self._error
            self._arrived.clear()
            await self._arrived.wait()

    async def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        """Incoming messages one by one; ends with BrokerUnreachableError on loss."""
        async for batch in self.batches():
            for message in batch:
                yield message

    # --- what goes out ------------------------------------------------------------------------

    def _packet_id(self) -> int:
        for _ in range(0xFFFF):
            self._next_id = self._next_id % 0xFFFF + 1
            if self._next_id not in self._waiting:
                return self._next_id
        raise BrokerUnreachableError("no free MQTT packet id: 65,535 requests unanswered")

    @property
    def _connected(self) -> _Protocol:
        protocol = self._protocol
        if self._error is not None:
            raise self._error
        if protocol is None:
            raise BrokerUnreachableError(f"not connected to the MQTT broker at {self.address}")
        return protocol

    async def _request(self, packet_id: int, packet: bytes) -> bytes:
        """Send a packet and wait for the acknowledgement with its id."""
        protocol = self._connected
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[packet_id] = waiter
        protocol.send(packet)
        return await waiter

    async def subscribe(self, filters: Sequence[str], qos: int = 1) -> list[int]:
        """Subscribe; the broker's return code per filter (0x80: refused)."""
        packet_id = self._packet_id()
        granted = await self._request(
            packet_id, codec.subscribe(packet_id, [(f, qos) for f in filters])
        )
        return list(granted)

    async def unsubscribe(self, filters: Sequence[str]) -> None:
        packet_id = self._packet_id()
        await self._request(packet_id, codec.unsubscribe(packet_id, list(filters)))

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish and, for QoS 1 and 2, wait until the broker has it."""
        if not qos:
            self._connected.send(codec.publish(topic, payload, 0, retain))
            return
        packet_id = self._packet_id()
        await self._request(packet_id, codec.publish(topic, payload, qos, retain, packet_id))

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> None:
        """Send a publication without waiting for its acknowledgement."""
        packet_id = self._packet_id() if qos else 0
        self._connected.send(codec.publish(topic, payload, qos, retain, packet_id))

    @property
    def oversized(self) -> int:
        """Incoming packets skipped for being over ``max_packet_bytes``."""
        return self._protocol.oversized if self._protocol else 0


async def request(
    mqtt: MqttConnection,
    topic: str,
    payload: bytes,
    *,
    result_topic: str,
    event_id: str,
    wait: float = 10.0,
) -> bytes:
    """Publish a request and wait for the result carrying the same event_id."""
    await mqtt.subscribe([result_topic])

    async def wait_for_result() -> bytes:
        async for got_topic, got in mqtt.messages():
            if got_topic != result_topic:
                continue
            try:
                body = orjson.loads(got)
            except orjson.JSONDecodeError:
                continue
            if isinstance(body, dict) and body.get("event_id") == event_id:
                return got
        raise RequestError(f"no result on {result_topic}")

    waiter = asyncio.create_task(wait_for_result(), name="mqtt-request")
    try:
        await mqtt.publish(topic, payload)
        async with asyncio.timeout(wait):
            return await waiter
    except TimeoutError:
        raise RequestError(
            f"no answer on {result_topic} within {wait:g} s (is the node running?)"
        ) from None
    finally:
        waiter.cancel()
