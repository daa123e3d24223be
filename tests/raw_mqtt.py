"""MQTT 3.1.1 written by hand, for what client libraries make hard on purpose: a Will on
any topic, a connection dropped without DISCONNECT (so the Will goes out), a client that
never acknowledges what it gets, or that stops talking within its keep-alive."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import NamedTuple, Self


def _string(data: str | bytes) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return struct.pack("!H", len(raw)) + raw


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(
    client_id: str,
    *,
    user: str | None = None,
    password: str | None = None,
    will: tuple[str, bytes, bool] | None = None,
    clean: bool = True,
    keepalive: int = 60,
) -> bytes:
    """CONNECT; ``will`` is (topic, payload, retain), sent at QoS 1."""
    flags = 0x02 if clean else 0
    payload = _string(client_id)
    if will is not None:
        topic, message, retain = will
        flags |= 0x04 | (1 << 3) | (0x20 if retain else 0)
        payload += _string(topic) + _string(message)
    if user is not None:
        flags |= 0x80
        payload += _string(user)
    if password is not None:
        flags |= 0x40
        payload += _string(password)
    variable = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body = variable + payload
    return bytes([0x10]) + _length(len(body)) + body


@contextlib.asynccontextmanager
async def connected(port: int, packet: bytes) -> AsyncIterator[int]:
    """Send CONNECT; the CONNACK's return code. Leaving the block drops the connection
    without DISCONNECT (a reset), as a device that loses power would."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(packet)
        await writer.drain()
        try:
            connack = await asyncio.wait_for(reader.readexactly(4), 10)
        except asyncio.IncompleteReadError:  # closed without an answer: refused too
            yield -1
        else:
            assert connack[0] == 0x20, connack
            yield connack[3]
    finally:
        writer.transport.abort()


class Publish(NamedTuple):
    topic: str
    payload: bytes
    qos: int
    dup: bool
    retain: bool
    packet_id: int | None


class RawClient:
    """One connection, packet by packet: it sends only what the test says, so it can leave a
    QoS 1/2 message unacknowledged or fall silent. Leaving the block drops the connection
    without DISCONNECT."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader
        self._writer: asyncio.StreamWriter
        self._next_id = 0

    async def __aenter__(self) -> Self:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._writer.transport.abort()

    async def connect(
        self,
        client_id: str,
        *,
        clean: bool,
        keepalive: int = 60,
        will: tuple[str, bytes, bool] | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> bool:
        """CONNECT, accepted; whether the broker had a session for this client id."""
        packet = connect_packet(
            client_id, clean=clean, keepalive=keepalive, will=will, user=user, password=password
        )
        self._send(packet)
        kind, body = await self.packet()
        assert kind == 0x20, hex(kind)
        assert body[1] == 0, f"CONNACK return code {body[1]}"
        return bool(body[0] & 1)

    async def subscribe(self, topic_filter: str, qos: int) -> int:
        """SUBSCRIBE one filter; the granted QoS."""
        self._next_id += 1
        body = struct.pack("!H", self._next_id) + _string(topic_filter) + bytes([qos])
        self._send(bytes([0x82]) + _length(len(body)) + body)
        kind, answer = await self.packet()
        assert kind == 0x90, hex(kind)
        return answer[2]

    async def publish(self) -> Publish:
        """The next PUBLISH, not acknowledged (see :meth:`ack`)."""
        kind, body = await self.packet()
        assert kind >> 4 == 3, hex(kind)
        qos = (kind >> 1) & 3
        (length,) = struct.unpack("!H", body[:2])
        topic, rest = body[2 : 2 + length].decode(), body[2 + length :]
        packet_id = None
        if qos:
            (packet_id,), rest = struct.unpack("!H", rest[:2]), rest[2:]
        return Publish(topic, rest, qos, bool(kind & 0x08), bool(kind & 0x01), packet_id)

    def ack(self, message: Publish) -> None:
        """PUBACK a QoS 1 message; PUBREC a QoS 2 one (and PUBCOMP once the broker releases
        it: :meth:`release`)."""
        assert message.packet_id is not None
        kind = 0x40 if message.qos == 1 else 0x50
        self._send(bytes([kind, 2]) + struct.pack("!H", message.packet_id))

    async def release(self, message: Publish) -> None:
        """A QoS 2 message's PUBREL in, its PUBCOMP out."""
        kind, body = await self.packet()
        assert kind == 0x62, hex(kind)
        assert struct.unpack("!H", body)[0] == message.packet_id
        self._send(bytes([0x70, 2]) + body)

    async def packet(self) -> tuple[int, bytes]:
        """The next packet: its first byte and its body (TimeoutError after 10 s)."""
        async with asyncio.timeout(10):
            return await self._packet()

    async def _packet(self) -> tuple[int, bytes]:
        first = (await self._reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            digit = (await self._reader.readexactly(1))[0]
            length += (digit & 0x7F) << shift
            shift += 7
            if not digit & 0x80:
                break
        return first, await self._reader.readexactly(length)

    async def closed(self) -> None:
        """Until the broker closes the connection (reading whatever comes before)."""
        while await self._reader.read(4096):
            pass

    def _send(self, data: bytes) -> None:
        self._writer.write(data)
