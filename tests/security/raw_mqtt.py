"""MQTT 3.1.1 CONNECT written by hand, for what client libraries make hard on purpose:
a Will on any topic, and a connection dropped without DISCONNECT (so the Will goes out)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator


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
    variable = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", 60)
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
