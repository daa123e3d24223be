"""The node's MQTT client against a real mosquitto: sessions, QoS 2, keep-alive, refusals,
oversized messages, and the session helper that serves a connection until it is closed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edgetwin.auth import PasswordFile
from edgetwin.errors import BrokerUnreachableError
from edgetwin.mqtt import BrokerAddress, MqttConnection, Session
from tests.support import Mosquitto, Paho, unique


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path) as running:
        yield running


async def _next(mqtt: MqttConnection) -> list[tuple[str, bytes]]:
    batches = mqtt.batches()
    return await asyncio.wait_for(anext(batches), 10)


async def test_a_persistent_session_gets_what_came_while_it_was_away(broker: Mosquitto) -> None:
    address = BrokerAddress(port=broker.port)
    client_id = unique("persistent")
    async with MqttConnection(address, client_id=client_id, persistent=True) as mqtt:
        assert not mqtt.session_present
        assert await mqtt.subscribe(["t/+"], qos=1) == [1]
    async with Paho(broker.port) as other:
        other.publish("t/1", b"while away")
    async with MqttConnection(address, client_id=client_id, persistent=True) as mqtt:
        assert mqtt.session_present
        assert await _next(mqtt) == [("t/1", b"while away")]


async def test_qos_2_is_delivered_once(broker: Mosquitto) -> None:
    async with MqttConnection(BrokerAddress(port=broker.port)) as mqtt:
        assert await mqtt.subscribe(["q2"], qos=2) == [2]
        async with Paho(broker.port) as other:
            other.client.publish("q2", b"once", qos=2).wait_for_publish(5)
        await mqtt.publish("q2", b"marker", qos=2)  # ours at QoS 2 too: PUBREC, PUBREL, PUBCOMP
        got: list[tuple[str, bytes]] = []
        while len(got) < 2:
            got += await _next(mqtt)
    assert got == [("q2", b"once"), ("q2", b"marker")]


async def _drain(mqtt: MqttConnection) -> None:
    async for _ in mqtt.batches():
        pass


async def test_a_broker_that_stops_answering_is_left_after_one_and_a_half_keepalives(
    broker: Mosquitto,
) -> None:
    assert broker.proc is not None
    address = BrokerAddress(port=broker.port, keepalive=1)
    async with MqttConnection(address) as mqtt:
        os.kill(broker.proc.pid, signal.SIGSTOP)  # alive, connected, silent
        try:
            # 1.5 keep-alives is 1.5 s; 5 s leaves room for a loaded machine, not for "never".
            with pytest.raises(BrokerUnreachableError, match="keep-alive"):
                await asyncio.wait_for(_drain(mqtt), 5)
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)


async def test_a_message_over_the_size_limit_is_skipped_and_the_connection_stays(
    broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    address = BrokerAddress(port=broker.port, max_packet_bytes=64 * 1024)
    async with MqttConnection(address) as mqtt:
        await mqtt.subscribe(["big", "small"])
        async with Paho(broker.port) as other:
            other.publish("big", b"x" * 200_000)
            other.publish("small", b"after it")
        assert await _next(mqtt) == [("small", b"after it")]
        assert mqtt.oversized == 1
    assert [r.getMessage() for r in caplog.records if "skipped a packet" in r.getMessage()] == [
        f"skipped a packet from 127.0.0.1:{broker.port} over the limit of 65536 bytes"
    ]


async def test_refusals_say_why(tmp_path: Path) -> None:
    passwords = PasswordFile(tmp_path / "passwd")
    passwords.set("node", "right")
    passwords.save()
    listener = f"allow_anonymous false\npassword_file {passwords.path}\n"
    with Mosquitto(tmp_path, listener) as broker:
        for password in ("wrong", None):
            address = BrokerAddress(port=broker.port, username="node", password=password)
            with pytest.raises(BrokerUnreachableError, match=r"not authorised|bad user name"):
                async with MqttConnection(address):
                    pass
        async with MqttConnection(
            BrokerAddress(port=broker.port, username="node", password="right")
        ):
            pass


async def test_a_session_whose_first_setup_fails_closes_its_connection(
    broker: Mosquitto,
) -> None:
    address = BrokerAddress(port=broker.port)
    links: list[MqttConnection] = []
    disconnects = 0

    def connect() -> MqttConnection:
        links.append(MqttConnection(address))
        return links[-1]

    async def fail(_link: MqttConnection) -> None:
        raise BrokerUnreachableError("subscribe failed")

    async def ignore(_batch: list[tuple[str, bytes]]) -> None:
        pass

    def disconnected() -> None:
        nonlocal disconnects
        disconnects += 1

    session = Session(
        connect, on_connect=fail, on_batch=ignore, on_disconnect=disconnected, max_delay=1, name="t"
    )
    with pytest.raises(BrokerUnreachableError, match="subscribe failed"):
        async with session:
            pass
    # Closed: no keep-alive task left behind (the autouse leak check), and the socket is gone.
    assert len(links) == 1
    with pytest.raises(BrokerUnreachableError):
        await links[0].publish("t", b"")


@contextlib.asynccontextmanager
async def _served(
    address: BrokerAddress, got: asyncio.Queue[str]
) -> AsyncIterator[Session[MqttConnection]]:
    async def subscribe(link: MqttConnection) -> None:
        await link.subscribe(["s/#"])
        got.put_nowait("+")

    async def take(batch: list[tuple[str, bytes]]) -> None:
        for topic, _ in batch:
            got.put_nowait(topic)

    session = Session(
        lambda: MqttConnection(address),
        on_connect=subscribe,
        on_batch=take,
        on_disconnect=lambda: got.put_nowait("-"),
        max_delay=0.2,
        name="t",
    )
    async with session:
        yield session


async def test_a_session_connects_again_and_subscribes_again(broker: Mosquitto) -> None:
    got: asyncio.Queue[str] = asyncio.Queue()
    async with _served(BrokerAddress(port=broker.port), got):
        assert got.get_nowait() == "+"
        async with Paho(broker.port) as other:
            other.publish("s/1", b"")
            assert await asyncio.wait_for(got.get(), 10) == "s/1"
        broker.kill()
        assert await asyncio.wait_for(got.get(), 10) == "-"
        broker.start()  # the same port
        assert await asyncio.wait_for(got.get(), 10) == "+"  # connected and subscribed again
        async with Paho(broker.port) as other:
            other.publish("s/2", b"")
            assert await asyncio.wait_for(got.get(), 10) == "s/2"
