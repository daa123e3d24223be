"""The log is not the clients' to write: a topic with a line break cannot start a forged line
(text or JSON format), and a client sending refused requests as fast as it can gets one
line per device and reason every 10 s, the rest counted. The forged line on amqtt (mosquitto
refuses control characters in topics itself)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from edgetwin.config import Settings
from edgetwin.node import Node
from edgetwin.wire import topics
from tests.metrics import http
from tests.support import NodeProcess, Paho, thermostat, thermostat_model, unique

FORGED = "2026-12-03 00:00:00,000 INFO    edgetwin.node: node forged ready"


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_topic_with_a_line_break_cannot_forge_a_log_line(
    log_format: str, tmp_path: Path
) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(
        yaml.safe_dump({"log": {"format": log_format}, "broker": {"engine": "amqtt"}})
    )
    node = NodeProcess(tmp_path / "data", node=unique("node"), extra=("--config", str(config)))
    with node:
        async with Paho(node.port) as client:
            await client.subscribe("$hw/events/device/+/+/twin/update/result")
            topic = f"$hw/events/device/default/x\n{FORGED}/twin/update"
            client.publish(topic, {"event_id": "forge"})
            result = await client.next(f"{topic}/result")  # logged before it is answered
        assert result["code"] in (400, 404)
        assert node.stop() == 0
    assert node.lines is not None
    lines = "".join(node.lines.lines).splitlines()
    assert not [line for line in lines if line.startswith(FORGED[:23])]
    rejected = [line for line in lines if "rejected twin/update" in line]
    assert len(rejected) == 1
    if log_format == "json":
        message = orjson.loads(rejected[0])["message"]
        assert f"x\n{FORGED}" in message  # the JSON string carries it, escaped on the wire
    else:
        assert f"x\\n{FORGED}" in rejected[0]


async def test_refused_requests_are_logged_once_per_device_and_reason(
    node_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique("dev")
    device = f"default/{name}"
    async with Node(node_settings) as node:
        assert await node.service.apply([thermostat_model(), thermostat(name)]) == []
        update = topics.twin_update_topic(device)
        async with Paho(node.broker_port) as client:
            await client.subscribe(f"{update}/result")
            for i in range(200):
                bad = {"event_id": str(i), "twin": {"count": {"actual": {"value": "many"}}}}
                client.publish(update, bad)
            for _ in range(200):
                assert (await client.next(f"{update}/result"))["code"] == 400
            unknown = {"event_id": "u", "twin": {"nope": {"actual": {"value": "1"}}}}
            assert (await client.request(update, unknown))["code"] == 404
        lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
        assert len(lines) == 2, lines  # one for the 400s, one for the 404
        assert node.engine.api.rejections.suppressed == 199
        assert node.engine.api.rejected[400] == 200
        assert node.health_port is not None
        _, metrics = await http(node.health_port, "/metrics")
    assert 'edgetwin_log_lines_suppressed_total{source="twin"} 199.0' in metrics
