"""A Last Will meets what a live publication of the same client would. On amqtt a device's
Will on another device's twin topic, or a retained Will on a mapper's spec topic, refuses
the CONNECT ("not authorized"); mosquitto (2.0, with edgetwin's plugin or the acl_file
edgetwin writes) accepts the CONNECT and checks the Will when it would go out, dropping it:
either way nothing reaches the other device's twin or the spec, and the node's broker
counts a refused Will. An allowed Will goes out when the client drops, and both of the
node's brokers check a Will again then, since the client's rights can have changed since
it connected."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from edgetwin.broker import MosquittoBroker
from edgetwin.wire import topics
from tests.raw_mqtt import RawClient, connect_packet, connected
from tests.security.conftest import PASSWORDS, Secured
from tests.support import thermostat, unique, until

NOT_AUTHORIZED = 5


def _report(value: str) -> bytes:
    return orjson.dumps({"event_id": "will", "twin": {"label": {"actual": {"value": value}}}})


async def _drop_with_will(secured: Secured, will: tuple[str, bytes, bool]) -> None:
    """dev-a connects with ``will`` and drops. Refused on the embedded broker; on mosquitto
    accepted, and then, to know its Will has been handled, dev-a connects again with the
    same client id: mosquitto (one thread) has dealt with the old connection's Will before
    it answers the new CONNECT, and anything it published went to the node before
    whatever the test asks after that."""
    client_id = unique("a")
    login = {"user": "dev-a", "password": PASSWORDS["dev-a"]}
    refused = secured.engine == "amqtt"
    async with connected(secured.port, connect_packet(client_id, will=will, **login)) as code:
        assert code == (NOT_AUTHORIZED if refused else 0)
    if not refused:
        async with connected(secured.port, connect_packet(client_id, **login)) as again:
            assert again == 0


async def test_a_will_on_another_devices_twin_is_refused(secured: Secured) -> None:
    await _drop_with_will(secured, (topics.twin_update_topic(secured.b), _report("pwned"), False))
    async with secured.client("admin") as admin:
        await admin.subscribe(f"{topics.twin_get_topic(secured.b)}/result")
        twin_b = await admin.request(topics.twin_get_topic(secured.b), {"event_id": "check"})
    assert "actual" not in twin_b["twin"]["label"]
    await secured.counted("the Will refused", lambda tally: tally.refused == {"will_denied": 1})


async def test_a_retained_will_cannot_replace_a_mappers_spec(secured: Secured) -> None:
    spec = topics.spec_topic("mqtt", secured.b)
    await _drop_with_will(secured, (spec, orjson.dumps({"forged": True}), True))
    async with secured.client("mqtt-mapper") as mapper:  # a mapper (re)starting
        await mapper.subscribe(spec)
        retained = await mapper.next(spec)
    assert "forged" not in retained
    assert (retained["id"], retained["protocol"]) == (secured.b, "mqtt")


async def test_an_allowed_will_goes_out_when_the_client_drops(secured: Secured) -> None:
    state = topics.state_update_topic(secured.a)
    will = (state, orjson.dumps({"event_id": "gone", "state": "offline"}), False)
    packet = connect_packet(unique("a"), user="dev-a", password=PASSWORDS["dev-a"], will=will)
    async with secured.client("admin") as admin:
        await admin.subscribe(f"{state}/result")
        async with connected(secured.port, packet) as code:
            assert code == 0
        result = await admin.next(f"{state}/result")
    assert result["event_id"] == "gone"


@pytest.mark.parametrize("secured", ["amqtt", "mosquitto"], indirect=True)  # an acl_file
@pytest.mark.parametrize("goes", ["drops", "falls silent"])  # follows membership through
async def test_the_node_s_broker_checks_a_will_again_when_it_goes_out(  # `acl --follow`,
    secured: Secured,  # tested in test_acl_follow.py
    goes: str,
) -> None:
    """The mapper goes by dropping its connection, or by sending nothing for 1.5 of its
    keep-alives: the broker cuts it off then, and its Will meets today's rights."""
    tally = secured.tally
    assert tally is not None
    update = topics.twin_update_topic(secured.a)  # a speaks modbus
    will = (update, _report("stale mapper"), False)
    login = {"user": "modbus-mapper", "password": PASSWORDS["modbus-mapper"]}
    async with RawClient(secured.port) as mapper:
        await mapper.connect(unique("m"), clean=True, keepalive=1, will=will, **login)
        name = secured.a.split("/")[1]
        assert await secured.node.service.apply([thermostat(name, protocol="mqtt")]) == []
        broker = secured.node.broker
        if isinstance(broker, MosquittoBroker):  # it reads the rules again: until it has
            await until(lambda: broker.rules_in_force_now, "the new rules in force")
        if goes == "falls silent":
            async with asyncio.timeout(10):
                await mapper.closed()
    await until(lambda: tally.refused == {"will_denied": 1}, "the Will refused as it goes out")
    async with secured.client("admin") as admin:
        await admin.subscribe(f"{topics.twin_get_topic(secured.a)}/result")
        twin_a = await admin.request(topics.twin_get_topic(secured.a), {"event_id": "check"})
    assert "actual" not in twin_a["twin"]["label"]
