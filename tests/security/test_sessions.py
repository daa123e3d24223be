"""A saved session belongs to the user that created it. Device B keeps a persistent session
(clean_session=0) and goes away; the twin sends it a delta meanwhile. Device A connecting
with B's client id gets none of B's queued messages: the node's broker refuses the
CONNECT as not authorized (and leaves B's session as it was), a mosquitto of one's own
(2.0, with the acl_file edgetwin writes) lets A in but delivers nothing A may not read."""

from __future__ import annotations

import pytest

from edgetwin.wire import topics
from tests.security.conftest import Secured
from tests.support import thermostat, unique


async def test_another_users_client_id_gets_none_of_the_sessions_messages(
    secured: Secured,
) -> None:
    b_id = unique("dev-b")
    delta = topics.delta_topic(secured.b)
    async with secured.client("dev-b", client_id=b_id, clean_session=False) as device_b:
        assert await device_b.subscribe(delta) == [True]
    async with secured.client("admin") as admin:  # while B is away: a delta, queued for B
        update = topics.twin_update_topic(secured.b)
        await admin.subscribe(f"{update}/result", delta)
        await admin.request(
            update, {"event_id": "set", "twin": {"label": {"expected": {"value": "x"}}}}
        )
        await admin.next(delta)  # the twin has sent it (the admin sees it too)

    if secured.tally is not None:
        with pytest.raises(ConnectionRefusedError, match=r"[Nn]ot authori[sz]ed"):
            async with secured.client("dev-a", client_id=b_id, clean_session=False):
                pass
        await secured.counted("taken", lambda tally: tally.refused == {"client_id_taken": 1})
    else:
        async with secured.client("dev-a", client_id=b_id, clean_session=False) as device_a:
            own = topics.twin_get_topic(secured.a)
            await device_a.subscribe(f"{own}/result")
            device_a.publish(own, {"event_id": "barrier"})
            # Queued messages go out right after CONNACK: had any of B's come, it would be
            # here before the answer to A's own request.
            topic, _, _ = await device_a.messages.get()
            assert topic == f"{own}/result"

    async with secured.client("dev-b", client_id=b_id, clean_session=False) as device_b:
        assert await device_b.subscribe(delta) == [True]  # B's session still works for B


@pytest.mark.parametrize("secured", ["amqtt"], indirect=True)  # mosquitto's acl_file follows
async def test_queued_messages_pass_the_receive_check_again_on_resume(  # membership through
    secured: Secured,  # `acl --follow` (test_acl_follow.py)
) -> None:
    """A mapper's queued delta for a device that has since left its protocol stays queued no
    more: it goes through the same check as a live delivery, with today's rights."""
    mapper_id, marker = unique("mapper"), f"marker/{unique('m')}"
    deltas = "$hw/events/device/+/+/twin/update/delta"
    mapper = {"client_id": mapper_id, "clean_session": False}
    async with secured.client("modbus-mapper", **mapper) as away:
        assert await away.subscribe(deltas, marker) == [True, True]
    async with secured.client("admin") as admin:  # a (modbus) gets a delta while it is away
        update = topics.twin_update_topic(secured.a)
        delta = topics.delta_topic(secured.a)
        await admin.subscribe(f"{update}/result", delta)
        await admin.request(
            update, {"event_id": "d", "twin": {"label": {"expected": {"value": "y"}}}}
        )
        await admin.next(delta)
    name = secured.a.split("/")[1]
    assert await secured.node.service.apply([thermostat(name, protocol="mqtt")]) == []
    async with secured.client("modbus-mapper", **mapper) as back:
        back.publish(marker, b"{}")  # queued messages go out before this comes back
        topic, _, _ = await back.messages.get()
    assert topic == marker
