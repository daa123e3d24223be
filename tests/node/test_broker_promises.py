"""MQTT 3.1.1's promises to a client that comes back, on both embedded brokers (the node's
mosquitto and amqtt in its process): a resumed session says so in CONNACK and gets what was
published for it while it was away, once; a QoS 1/2 message it had not acknowledged comes
again, marked DUP; a client silent for 1.5 keep-alives is cut off and its Will goes out.
The client is written by hand (tests/raw_mqtt.py) so that it acknowledges nothing and
sends nothing unless the test says so."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from edgetwin.node import Node
from edgetwin.wire import topics
from tests.raw_mqtt import Publish, RawClient
from tests.support import Paho, thermostat, thermostat_model, unique


async def _published(port: int, *messages: tuple[str, bytes, int]) -> None:
    """Each (topic, payload, qos) published by another client and acknowledged by the broker."""
    async with Paho(port) as publisher:
        sent = [publisher.client.publish(t, p, qos=q) for t, p, q in messages]
        for info in sent:
            await asyncio.to_thread(info.wait_for_publish, 10)


async def _acked(client: RawClient, message: Publish) -> None:
    client.ack(message)
    if message.qos == 2:
        await client.release(message)


async def test_a_resumed_session_gets_what_was_published_while_away_once(node: Node) -> None:
    client_id, base = unique("resume"), f"promise/{unique('t')}"
    async with RawClient(node.broker_port) as client:
        assert await client.connect(client_id, clean=False) is False
        assert await client.subscribe(f"{base}/one", 1) == 1
        assert await client.subscribe(f"{base}/two", 2) == 2
    await _published(node.broker_port, (f"{base}/one", b"1", 1), (f"{base}/two", b"2", 2))
    async with RawClient(node.broker_port) as client:
        assert await client.connect(client_id, clean=False) is True
        got = []
        for _ in range(2):
            message = await client.publish()
            await _acked(client, message)
            got.append((message.topic, message.payload, message.qos, message.retain))
        # Live messages, not retained ones (amqtt sent them flagged RETAIN).
        assert sorted(got) == [(f"{base}/one", b"1", 1, False), (f"{base}/two", b"2", 2, False)]
        # Once: a message published now is the next to come, nothing queued before it.
        await _published(node.broker_port, (f"{base}/one", b"after", 1))
        message = await client.publish()
        assert (message.payload, message.dup) == (b"after", False)


@pytest.mark.parametrize("qos", [1, 2])
async def test_an_unacknowledged_message_comes_again_with_dup(node: Node, qos: int) -> None:
    client_id, topic = unique("redeliver"), f"promise/{unique('t')}"
    async with RawClient(node.broker_port) as client:
        await client.connect(client_id, clean=False)
        assert await client.subscribe(topic, qos) == qos
        await _published(node.broker_port, (topic, b"once", qos))
        first = await client.publish()
        assert (first.topic, first.payload, first.qos, first.dup) == (topic, b"once", qos, False)
    # Dropped without acknowledging it: the broker must send it again on resume.
    async with RawClient(node.broker_port) as client:
        assert await client.connect(client_id, clean=False) is True
        again = await client.publish()
        assert (again.topic, again.payload, again.qos, again.dup) == (topic, b"once", qos, True)
        await _acked(client, again)


async def test_a_silent_client_is_cut_off_and_its_will_goes_out(node: Node) -> None:
    will_topic = f"promise/{unique('will')}"
    async with Paho(node.broker_port) as watcher:
        assert await watcher.subscribe(will_topic) == [True]
        async with RawClient(node.broker_port) as client:
            will = (will_topic, b"gone", False)
            await client.connect(unique("silent"), clean=True, keepalive=1, will=will)
            # No PINGREQ from here on. MQTT-3.1.2-24: the broker disconnects after 1.5 s;
            # the bound leaves room for a busy machine, not for a broker that never does.
            async with asyncio.timeout(10):
                await client.closed()
        topic, payload, _ = await asyncio.wait_for(watcher.messages.get(), 10)
    assert (topic, payload) == (will_topic, b"gone")


async def test_a_delta_sent_while_a_mapper_was_away_reaches_it_on_resume(node: Node) -> None:
    """No twin/get needed: the broker keeps the twin's QoS 1 delta in the mapper's session."""
    name = unique("thermo")
    assert await node.service.apply([thermostat_model(), thermostat(name)]) == []
    mapper_id, delta = unique("mapper"), topics.delta_topic(f"default/{name}")
    async with RawClient(node.broker_port) as mapper:
        await mapper.connect(mapper_id, clean=False)
        assert await mapper.subscribe(delta, 1) == 1
    async with Paho(node.broker_port) as admin:
        update = topics.twin_update_topic(f"default/{name}")
        await admin.subscribe(f"{update}/result", delta)
        body = {"event_id": "set", "twin": {"target": {"expected": {"value": "23"}}}}
        assert "code" not in await admin.request(update, body)
        await admin.next(delta)  # the twin has sent it
    async with RawClient(node.broker_port) as mapper:
        assert await mapper.connect(mapper_id, clean=False) is True
        message = await mapper.publish()
        await _acked(mapper, message)
    assert (message.topic, message.qos) == (delta, 1)
    assert orjson.loads(message.payload)["delta"] == {"target": "23"}


async def test_a_message_arrives_at_the_lower_of_its_qos_and_the_subscriptions(
    node: Node,
) -> None:
    """MQTT-3.8.4-6: a QoS 1 publication reaches a QoS 2 subscription at QoS 1 and a QoS 0
    one at QoS 0; so does the twin's own QoS 1 delta."""
    name = unique("thermo")
    assert await node.service.apply([thermostat_model(), thermostat(name)]) == []
    topic, delta = f"promise/{unique('t')}", topics.delta_topic(f"default/{name}")
    async with RawClient(node.broker_port) as high, RawClient(node.broker_port) as low:
        await high.connect(unique("high"), clean=True)
        await low.connect(unique("low"), clean=True)
        assert await high.subscribe(topic, 2) == 2
        assert await low.subscribe(topic, 0) == 0
        assert await low.subscribe(delta, 0) == 0
        await _published(node.broker_port, (topic, b"one", 1))
        got = await high.publish()
        await _acked(high, got)
        assert (got.payload, got.qos) == (b"one", 1)
        got = await low.publish()
        assert (got.payload, got.qos) == (b"one", 0)
        body = {"event_id": "set", "twin": {"target": {"expected": {"value": "24"}}}}
        update = topics.twin_update_topic(f"default/{name}")
        await _published(node.broker_port, (update, orjson.dumps(body), 1))
        got = await low.publish()
        assert (got.topic, got.qos) == (delta, 0)
