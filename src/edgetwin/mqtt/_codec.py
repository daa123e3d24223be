"""MQTT 3.1.1 packets: what the node's client sends, and a reader for what it receives.

Only the client's side of the protocol (OASIS MQTT 3.1.1): CONNECT,
PUBLISH and its acknowledgements, SUBSCRIBE, UNSUBSCRIBE, PINGREQ,
DISCONNECT out; CONNACK, PUBLISH, the acknowledgements, SUBACK, UNSUBACK,
PINGRESP in. :class:`PacketReader` splits a byte stream into packets,
however the stream was cut, and hands PUBLISH packets over already split
into topic and payload: that is the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
PUBREC: Final = 5
PUBREL: Final = 6
PUBCOMP: Final = 7
SUBSCRIBE: Final = 8
SUBACK: Final = 9
UNSUBSCRIBE: Final = 10
UNSUBACK: Final = 11
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14

PINGREQ_PACKET: Final = bytes((PINGREQ << 4, 0))
DISCONNECT_PACKET: Final = bytes((DISCONNECT << 4, 0))

CONNACK_REFUSALS: Final = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class ProtocolError(Exception):
    """The broker sent something that is not MQTT 3.1.1."""


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    if len(data) > 0xFFFF:
        raise ValueError("an MQTT string is at most 65,535 bytes")
    return len(data).to_bytes(2, "big") + data


def _length(n: int) -> bytes:
    if n < 128:  # most packets: one byte
        return bytes((n,))
    out = bytearray()
    while True:
        digit, n = n & 0x7F, n >> 7
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _length(len(body)) + body


def connect(
    client_id: str,
    *,
    keepalive: int,
    clean_session: bool,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = _string(client_id)
    if will is not None:
        flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
        payload += _string(will.topic) + _string(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    header = _string("MQTT") + bytes((4, flags)) + keepalive.to_bytes(2, "big")
    return _packet(CONNECT << 4, header + payload)


def publish(
    topic: str, payload: bytes, qos: int = 0, retain: bool = False, packet_id: int = 0
) -> bytes:
    first = PUBLISH << 4 | qos << 1 | retain
    body = _string(topic)
    if qos:
        body += packet_id.to_bytes(2, "big")
    return _packet(first, body + payload)


def ack(kind: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP."""
    return bytes((kind << 4 | (0x02 if kind == PUBREL else 0), 2)) + packet_id.to_bytes(2, "big")


def subscribe(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    body = packet_id.to_bytes(2, "big") + b"".join(_string(f) + bytes((q,)) for f, q in filters)
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def unsubscribe(packet_id: int, filters: list[str]) -> bytes:
    body = packet_id.to_bytes(2, "big") + b"".join(_string(f) for f in filters)
    return _packet(UNSUBSCRIBE << 4 | 0x02, body)


@dataclass(frozen=True, slots=True)
class Message:
    """An incoming PUBLISH."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Control:
    """Any other incoming packet: its type, and the body after the fixed header."""

    kind: int
    body: bytes


class PacketReader:
    """Feed it bytes as they arrive; it returns the whole packets they complete.

    A packet over ``max_packet_bytes`` is skipped as it streams past, never
    buffered, and counted in :attr:`oversized`: the connection stays up.
    """

    def __init__(self, max_packet_bytes: int) -> None:
        self._buffer = bytearray()
        self.max_packet_bytes = max_packet_bytes
        self._skip = 0
        self.oversized = 0

    def feed(self, data: bytes) -> list[Message | Control]:
        if self._skip:
            skipped = min(self._skip, len(data))
            self._skip -= skipped
            data = data[skipped:]
        buffer = self._buffer
        buffer += data
        packets: list[Message | Control] = []
        at, end = 0, len(buffer)
        while end - at >= 2:
            first = buffer[at]
            length, shift, pos, complete = 0, 0, at + 1, False
            while pos < end:
                digit = buffer[pos]
                pos += 1
                length |= (digit & 0x7F) << shift
                if not digit & 0x80:
                    complete = True
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolError("malformed remaining length")
            if not complete:
                break  # the length itself is not all here yet
            if length > self.max_packet_bytes:
                self.oversized += 1
                self._skip = max(0, length - (end - pos))
                at = min(end, pos + length)
                continue
            if end - pos < length:
                break
            body = bytes(buffer[pos : pos + length])
            at = pos + length
            packets.append(self._decode(first, body))
        del buffer[:at]
        return packets

    @staticmethod
    def _decode(first: int, body: bytes) -> Message | Control:
        kind = first >> 4
        if kind != PUBLISH:
            return Control(kind, body)
        qos = (first >> 1) & 0x03
        if qos == 3 or len(body) < 2:
            raise ProtocolError("malformed PUBLISH")
        size = int.from_bytes(body[:2], "big")
        topic_end = 2 + size
        packet_id = 0
        start = topic_end
        if qos:
            packet_id = int.from_bytes(body[topic_end : topic_end + 2], "big")
            start += 2
        if len(body) < start:
            raise ProtocolError("malformed PUBLISH")
        try:
            topic = body[2:topic_end].decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError("a PUBLISH topic that is not UTF-8") from exc
        return Message(topic, body[start:], qos, packet_id, bool(first & 0x01))
