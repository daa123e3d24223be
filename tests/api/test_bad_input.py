"""Bad input from the network: an error result with a code and a reason, nothing changed,
and the node keeps serving. Runs on both brokers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from edgetwin.node import Node
from edgetwin.wire import topics
from tests.support import Paho, thermostat, thermostat_model, unique

DEVICE = "{device}"


def _update(twin: object, **extra: object) -> bytes:
    return orjson.dumps({"event_id": "bad", "twin": twin, **extra})


CASES = [
    # (case, topic template, payload, code, words in the reason)
    ("malformed json", "twin/update", b'{"twin": {', 400, "Invalid JSON"),
    ("not utf-8", "twin/update", b'{"twin": "\xff\xfe"}', 400, "Invalid JSON"),
    ("json not an object", "twin/update", b"[1, 2]", 400, "object"),
    ("empty payload", "twin/update", b"", 400, "twin"),
    ("twin is missing", "twin/update", orjson.dumps({"event_id": "bad"}), 400, "twin"),
    ("entry with no side", "twin/update", _update({"target": {}}), 400, "expected"),
    (
        "value is a number",
        "twin/update",
        _update({"target": {"expected": {"value": 25}}}),
        400,
        "twin.target.expected.value",
    ),
    (
        "value is null",
        "twin/update",
        _update({"target": {"expected": {"value": None}}}),
        400,
        "twin.target.expected.value",
    ),
    (
        "event_id wrong type",
        "twin/update",
        orjson.dumps({"event_id": 5, "twin": {"count": {"actual": {"value": "1"}}}}),
        400,
        "event_id",
    ),
    (
        "above maximum",
        "twin/update",
        _update({"target": {"expected": {"value": "99"}}}),
        400,
        "above the maximum 35",
    ),
    (
        "desired below minimum",
        "twin/update",
        _update({"count": {"expected": {"value": "-1"}}}),
        400,
        "below the minimum 0",
    ),
    (
        "not an integer",
        "twin/update",
        _update({"count": {"actual": {"value": "1.5"}}}),
        400,
        "not an integer",
    ),
    (
        "empty string for INT",
        "twin/update",
        _update({"count": {"actual": {"value": ""}}}),
        400,
        "not an integer",
    ),
    (
        "NaN string",
        "twin/update",
        _update({"target": {"actual": {"value": "NaN"}}}),
        400,
        "not a finite number",
    ),
    (
        "Infinity string",
        "twin/update",
        _update({"target": {"actual": {"value": "Infinity"}}}),
        400,
        "not a finite number",
    ),
    (
        "overflowing float",
        "twin/update",
        _update({"target": {"actual": {"value": "1e999"}}}),
        400,
        "too large",
    ),
    ("NaN literal", "twin/update", b'{"twin": {"target": {"actual": {"value": NaN}}}}', 400, ""),
    (
        "not a boolean",
        "twin/update",
        _update({"enabled": {"actual": {"value": "yes"}}}),
        400,
        "not a boolean",
    ),
    (
        "not base64",
        "twin/update",
        _update({"blob": {"actual": {"value": "***"}}}),
        400,
        "not base64",
    ),
    (
        "lone surrogate",
        "twin/update",
        b'{"twin": {"label": {"actual": {"value": "\\ud800"}}}}',
        400,
        "Invalid JSON",
    ),
    (
        "value too long",
        "twin/update",
        _update({"label": {"actual": {"value": "x" * 70_000}}}),
        400,
        "longer than 65536",
    ),
    (
        "unknown property",
        "twin/update",
        _update({"nope": {"actual": {"value": "1"}}}),
        404,
        "no property 'nope'",
    ),
    (
        "wildcard property",
        "twin/update",
        _update({"a+b/#": {"actual": {"value": "1"}}}),
        404,
        "no property",
    ),
    (
        "empty property name",
        "twin/update",
        _update({"": {"actual": {"value": "1"}}}),
        404,
        "no property ''",
    ),
    (
        "desired on ReadOnly",
        "twin/update",
        _update({"current": {"expected": {"value": "20"}}}),
        403,
        "ReadOnly",
    ),
    ("1 MB payload", "twin/update", b"{" + b" " * 1_000_000 + b"}", 413, "over the limit"),
    (
        "bad state",
        "state/update",
        orjson.dumps({"event_id": "bad", "state": "melting"}),
        400,
        "state",
    ),
]

TOPIC_CASES = [
    # (case, device part of the topic, code, words in the reason)
    ("unknown device", "default/no-such-device", 404, "unknown device"),
    ("extra level in the id", "default/a/b", 400, "<namespace>/<name>"),
    ("missing namespace", "lonely", 400, "<namespace>/<name>"),
    ("uppercase name", "default/Thermo", 400, "DNS-1123"),
]


def _store_rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return [
            *db.execute("SELECT * FROM twins ORDER BY device, property"),
            *db.execute("SELECT id, state, last_online FROM devices ORDER BY id"),
        ]


async def _check_rejected(node: Node, topic: str, payload: bytes, code: int, words: str) -> None:
    device = f"default/{unique('dev')}"
    errors = await node.service.apply([thermostat_model(), thermostat(device.split("/")[1])])
    assert errors == []
    topic = topic.replace(DEVICE, device)
    before_rows = _store_rows(node.settings.database_path)
    before_twins = {k: v.copy() for k, v in node.engine.devices[device].properties.items()}
    rejected_before = node.engine.api.rejected[code]
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{topic}/result", topics.delta_topic(device))
        client.publish(topic, payload)
        result = await client.next(f"{topic}/result")
        assert result["code"] == code, result
        assert words in result["reason"], result
        assert result["event_id"] in ("bad", "")
        assert node.engine.api.rejected[code] == rejected_before + 1

        # Still serving, and the rejected message changed nothing.
        update = topics.twin_update_topic(device)
        await client.subscribe(f"{update}/result")
        ok = await client.request(
            update, {"event_id": "ok", "twin": {"count": {"actual": {"value": "7"}}}}
        )
        assert "code" not in ok
    twins = node.engine.devices[device].properties
    assert {k: v for k, v in twins.items() if k != "count"} == {
        k: v for k, v in before_twins.items() if k != "count"
    }
    after_rows = _store_rows(node.settings.database_path)
    changed = set(after_rows) - set(before_rows)
    assert all(row[0] == device and row[1] == "count" for row in changed), changed


@pytest.mark.parametrize(
    ("suffix", "payload", "code", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_bad_payload(node: Node, suffix: str, payload: bytes, code: int, words: str) -> None:
    await _check_rejected(node, f"$hw/events/device/{DEVICE}/{suffix}", payload, code, words)


@pytest.mark.parametrize(
    ("device", "code", "words"), [c[1:] for c in TOPIC_CASES], ids=[c[0] for c in TOPIC_CASES]
)
async def test_bad_device_in_topic(node: Node, device: str, code: int, words: str) -> None:
    body = orjson.dumps({"event_id": "bad", "twin": {"count": {"actual": {"value": "1"}}}})
    await _check_rejected(node, topics.twin_update_topic(device), body, code, words)
