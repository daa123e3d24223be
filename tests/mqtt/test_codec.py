"""The packet reader: whole packets out of a stream cut anywhere, big ones skipped."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgetwin.mqtt import _codec as codec


def _stream() -> tuple[bytes, list[tuple[str, bytes, int]]]:
    sent = [
        ("a/b", b"", 0),
        ("$hw/events/device/default/d1/twin/update", b'{"twin":{}}', 1),
        ("x", b"y" * 300, 2),  # a two-byte remaining length
        ("big", b"z" * 20_000, 1),  # three bytes
    ]
    data = b"".join(codec.publish(t, p, q, packet_id=i + 1) for i, (t, p, q) in enumerate(sent))
    data += codec.ack(codec.PUBACK, 7)
    return data, sent


@given(st.lists(st.integers(min_value=1, max_value=5000), max_size=40))
def test_any_cut_gives_the_same_packets(cuts: list[int]) -> None:
    data, sent = _stream()
    reader = codec.PacketReader(1 << 20)
    got: list[codec.Message | codec.Control] = []
    at = 0
    for size in cuts:
        got += reader.feed(data[at : at + size])
        at += size
    got += reader.feed(data[at:])
    messages = [p for p in got if isinstance(p, codec.Message)]
    assert [(m.topic, m.payload, m.qos) for m in messages] == sent
    assert [m.packet_id for m in messages if m.qos] == [2, 3, 4]
    assert got[-1] == codec.Control(codec.PUBACK, b"\x00\x07")


def test_a_packet_over_the_limit_is_skipped_and_counted_not_buffered() -> None:
    data, _ = _stream()
    reader = codec.PacketReader(1000)
    got = []
    for at in range(0, len(data), 700):  # the big one streams past in pieces
        got += reader.feed(data[at : at + 700])
        assert len(reader._buffer) <= 1400  # what it holds: not the 20 KB
    assert [p.topic for p in got if isinstance(p, codec.Message)] == [
        "a/b",
        "$hw/events/device/default/d1/twin/update",
        "x",
    ]
    assert reader.oversized == 1
    assert isinstance(got[-1], codec.Control)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x30\xff\xff\xff\xff\x01", "remaining length"),
        (b"\x36\x03\x00\x01a", "PUBLISH"),  # QoS 3
        (b"\x30\x04\x00\x02\xff\xfe", "UTF-8"),
        (b"\x32\x03\x00\x01a", "PUBLISH"),  # QoS 1 without its packet id
    ],
)
def test_malformed_packets_are_protocol_errors(data: bytes, why: str) -> None:
    with pytest.raises(codec.ProtocolError, match=why):
        codec.PacketReader(1 << 20).feed(data)
