"""/metrics, /healthz and /readyz of a running node, read over HTTP as Prometheus would."""

from __future__ import annotations

from edgetwin.broker import EmbeddedBroker
from edgetwin.node import Node
from edgetwin.wire import topics
from tests.metrics import http, samples
from tests.support import Paho, thermostat, thermostat_model, unique


async def test_metrics_count_what_the_node_did(node: Node) -> None:
    assert node.health_port is not None
    name = unique("dev")
    device = f"default/{name}"
    assert await node.service.apply([thermostat_model(), thermostat(name)]) == []
    update = topics.twin_update_topic(device)
    async with Paho(node.broker_port) as client:
        await client.subscribe(f"{update}/result", "$hw/events/device/default/nope/twin/get/result")
        ok = {"event_id": "1", "twin": {"count": {"actual": {"value": "3"}}}}
        assert "code" not in await client.request(update, ok)
        assert (await client.request(update, b"{not json"))["code"] == 400
        nope = await client.request("$hw/events/device/default/nope/twin/get", {"event_id": "x"})
        assert nope["code"] == 404
        status, text = await http(node.health_port, "/metrics")
        clients = 1 if isinstance(node.broker, EmbeddedBroker) else None

    assert status == 200
    got = samples(text)
    assert got["edgetwin_twin_requests_accepted_total", (("kind", "twin/update"),)] == 1
    assert got["edgetwin_twin_requests_rejected_total", (("reason", "bad_request"),)] == 1
    assert got["edgetwin_twin_requests_rejected_total", (("reason", "not_found"),)] == 1
    assert got["edgetwin_twin_result_latency_seconds_count", ()] == 3
    assert got["edgetwin_device_state", (("device", device), ("state", "unknown"))] == 1
    assert got["edgetwin_devices", (("state", "unknown"),)] == 1
    if clients is not None:  # amqtt: the paho client (the twin is in-process)
        assert got["edgetwin_broker_clients", ()] == clients
    else:  # the node's mosquitto, which has not died
        assert got["edgetwin_broker_restarts_total", ()] == 0


async def test_health_and_readiness(node: Node) -> None:
    assert node.health_port is not None
    assert await http(node.health_port, "/healthz") == (200, "ok\n")
    assert await http(node.health_port, "/readyz") == (200, "ready\n")
    assert (await http(node.health_port, "/nothing"))[0] == 404
    assert (await http(node.health_port, "/metrics", "POST"))[0] == 405
    status, body = await http(node.health_port, "/metrics", "HEAD")
    assert (status, body) == (200, "")
