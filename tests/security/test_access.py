"""Who may connect and what each may do, on the embedded broker and on mosquitto alike."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path

import pytest

from edgetwin.broker import MosquittoBroker
from edgetwin.config import load_settings
from edgetwin.node import Node
from edgetwin.wire import topics
from tests.metrics import http, samples
from tests.security.conftest import Secured, auth_settings
from tests.support import Paho, unique, until


@pytest.mark.parametrize(
    ("user", "password", "reason"),
    [
        ("dev-a", "wrong", "bad_credentials"),
        ("nobody", "a-secret", "bad_credentials"),
        (None, None, "no_credentials"),
    ],
)
async def test_wrong_or_missing_credentials_are_refused(
    secured: Secured, user: str | None, password: str | None, reason: str
) -> None:
    with pytest.raises(ConnectionRefusedError, match=r"[Nn]ot authori[sz]ed|[Bb]ad user"):
        async with secured.client(user, password):
            pass
    await secured.counted(reason, lambda tally: tally.refused == {reason: 1})


async def test_a_device_cannot_touch_another_devices_twin(secured: Secured) -> None:
    a, b = secured.a, secured.b
    async with secured.client("dev-a") as device_a, secured.client("admin") as admin:
        granted = await device_a.subscribe(
            f"{topics.twin_get_topic(a)}/result", f"{topics.twin_update_topic(b)}/result"
        )
        # Refused; a mosquitto of one's own (acl_file) grants it and delivers nothing on it.
        assert granted == [True, secured.tally is None]
        forged = {"event_id": "forged", "twin": {"label": {"actual": {"value": "pwned"}}}}
        device_a.publish(topics.twin_update_topic(b), forged)
        device_a.publish(topics.state_update_topic(b), {"state": "offline"})
        # The broker handles a client's messages in order: once A's own request is answered,
        # the two before it have been dropped.
        device_a.publish(topics.twin_get_topic(a), {"event_id": "mine"})
        topic, _, _ = await device_a.messages.get()
        assert topic == f"{topics.twin_get_topic(a)}/result"

        # B's own results are B's: the admin's change to B reaches A's subscription not at all.
        update_b = topics.twin_update_topic(b)
        await admin.subscribe(f"{update_b}/result", f"{topics.twin_get_topic(b)}/result")
        await admin.request(
            update_b, {"event_id": "ok", "twin": {"count": {"actual": {"value": "1"}}}}
        )
        device_a.publish(topics.twin_get_topic(a), {"event_id": "again"})
        topic, _, _ = await device_a.messages.get()
        assert topic == f"{topics.twin_get_topic(a)}/result"  # nothing of B's came before it

        twin_b = await admin.request(topics.twin_get_topic(b), {"event_id": "check"})
    assert "actual" not in twin_b["twin"]["label"]
    assert twin_b["state"] == "unknown"
    await secured.counted("denials", lambda tally: tally.denied == {"publish": 2, "subscribe": 1})


async def test_a_device_may_update_its_own_twin(secured: Secured) -> None:
    async with secured.client("dev-b") as device_b:
        update = topics.twin_update_topic(secured.b)
        await device_b.subscribe(f"{update}/result")
        result = await device_b.request(
            update, {"event_id": "1", "twin": {"label": {"actual": {"value": "mine"}}}}
        )
    assert result["twin"]["label"]["actual"]["value"] == "mine"


async def test_a_mapper_serves_only_its_protocols_devices(secured: Secured) -> None:
    a, b = secured.a, secured.b  # a speaks modbus, b mqtt
    async with secured.client("modbus-mapper") as mapper, secured.client("admin") as admin:
        granted = await mapper.subscribe(
            topics.DELTA_FILTER,
            topics.spec_filter("modbus"),
            f"{topics.twin_update_topic(a)}/result",
            topics.spec_filter("mqtt"),
        )
        assert granted == [True, True, True, secured.tally is None]
        spec = await mapper.next(topics.spec_topic("modbus", a))
        assert (spec["id"], spec["protocol"]) == (a, "modbus")

        for device in (b, a):  # b's delta first: had it been delivered, it would come first
            admin.publish(
                topics.twin_update_topic(device),
                {"event_id": "set", "twin": {"target": {"expected": {"value": "21"}}}},
            )
        seen = []
        while not seen or seen[-1] != topics.delta_topic(a):
            seen.append((await mapper.messages.get())[0])
        assert not [t for t in seen if b in t]

        report = {"event_id": "r", "twin": {"current": {"actual": {"value": "19.5"}}}}
        mapper.publish(topics.twin_update_topic(b), report)  # not its device: dropped
        accepted = await mapper.request(topics.twin_update_topic(a), report)
        assert accepted["twin"]["current"]["actual"]["value"] == "19.5"

        await admin.subscribe(f"{topics.twin_get_topic(b)}/result")
        twin_b = await admin.request(topics.twin_get_topic(b), {"event_id": "check"})
    assert "actual" not in twin_b["twin"]["current"]
    await secured.counted("denials", lambda tally: tally.denied == {"publish": 1, "subscribe": 1})


@pytest.mark.parametrize("engine", ["amqtt", "mosquitto"])
async def test_refusals_and_denials_are_counted_and_logged_once_per_reason(
    engine: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each kind twice, on each embedded broker: the same counters in /metrics and the same
    log lines, one per reason (a refusal) or per client and reason (a denial)."""
    a, b = unique("a"), unique("b")
    settings = load_settings(
        node={"name": unique("node"), "data_dir": str(tmp_path)},
        store={"synchronous": "NORMAL"},
        broker={"port": 0, "engine": engine, "auth": auth_settings(tmp_path, a, b)},
        health={"port": 0},
    )
    caplog.set_level(logging.WARNING, "edgetwin")
    async with Node(settings) as node:
        assert node.broker is not None
        tally = node.broker.tally
        tries = 2 * [("dev-a", "wrong"), ("nobody", "x"), (None, None)]
        for n, (user, password) in enumerate(tries):
            with pytest.raises(ConnectionRefusedError):
                async with Paho(node.broker_port, f"c{n}", username=user, password=password):
                    pass
        async with Paho(node.broker_port, "c9", username="dev-a", password="a-secret") as dev:
            assert await dev.subscribe("$hw/events/device/default/x/#") == [False]
            dev.publish("$hw/events/device/default/x/twin/update", {"event_id": "x"})
            dev.publish("$hw/events/device/default/x/twin/update", {"event_id": "y"})
            assert await dev.subscribe("$hw/events/device/default/y/#") == [False]
        await until(lambda: tally.denied == {"publish": 2, "subscribe": 2}, "denials counted")
        assert node.health_port is not None
        _, body = await http(node.health_port, "/metrics")
    counted = samples(body)
    for reason, count in (("bad_credentials", 4), ("no_credentials", 2)):
        assert counted["edgetwin_broker_connections_refused_total", (("reason", reason),)] == count
    for action in ("publish", "subscribe"):
        assert counted["edgetwin_broker_denied_total", (("action", action),)] == 2
    said = sorted(r.getMessage() for r in caplog.records if "refused" in r.getMessage())
    assert said == [
        "refused connection of c0: wrong user name or password (dev-a)",
        "refused connection of c2: no user name",
    ]
    denied = [r.getMessage() for r in caplog.records if r.getMessage().startswith("denied")]
    assert sorted(denied) == [
        f"denied publish $hw/events/device/default/x/twin/update to dev-a (device {a})",
        f"denied subscribe $hw/events/device/default/x/# to dev-a (device {a})",
    ]


@pytest.mark.parametrize("engine", ["amqtt", "mosquitto"])
async def test_a_password_entry_of_mosquitto_1_still_logs_in(engine: str, tmp_path: Path) -> None:
    """mosquitto 1.x wrote ``$6$<salt>$<SHA-512 of password and salt>``; both brokers read it
    (the node's mosquitto through its plugin, from the moment it runs)."""
    a, b = unique("a"), unique("b")
    auth = auth_settings(tmp_path, a, b)
    salt = os.urandom(12)
    digest = hashlib.sha512(b"old-secret" + salt).digest()
    entry = f"$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    with Path(auth["password_file"]).open("a") as passwords:
        passwords.write(f"old-device:{entry}\n")
    auth["devices"]["old-device"] = a
    settings = load_settings(
        node={"name": unique("node"), "data_dir": str(tmp_path)},
        broker={"port": 0, "engine": engine, "auth": auth},
    )
    async with Node(settings) as node:
        if isinstance(node.broker, MosquittoBroker):
            assert node.broker.rules_in_force_now  # told before mosquitto said it runs
        own = f"$hw/events/device/{a}/#"
        async with Paho(node.broker_port, username="old-device", password="old-secret") as old:
            assert await old.subscribe(own) == [True]
        with pytest.raises(ConnectionRefusedError):
            async with Paho(node.broker_port, username="old-device", password="old-secrets"):
                pass
