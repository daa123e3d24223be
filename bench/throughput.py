"""Reported updates per second end to end, beside the broker's raw pass-through rate.

For each broker (the node's embedded amqtt, and mosquitto) a real node process
runs with 1,000 devices. The same client library (paho) measures, in the same
run and with the same number of requests in flight:

- raw: QoS 1 publish -> broker -> a subscriber, counted at the subscriber;
- twin: QoS 1 twin/update (a reported value) -> committed in SQLite -> result
  received, over the 1,000 devices in turn.

On the embedded broker a third run has ``broker.auth`` on, with the bench
logged in as the modbus mapper: every publication and delivery goes through
the password-checked identity, the ACL (a device-protocol lookup per twin
topic) and the per-client rate limiter. The limiter is set high enough
not to drop in every run: the bench is one client far over the default
1,000 messages/s.

Also the RSS of the idle node with its devices loaded (health endpoint on,
as by default), and what one ``/metrics`` scrape costs after the run (median
of 20, and its size: the per-device state gauge grows with the devices). Run:
``.venv/bin/python -m bench.throughput [--messages N] [--window W]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
import yaml
from tests.support import NodeProcess, Paho, mosquitto, thermostat, write_manifests

from edgetwin.auth import PasswordFile
from edgetwin.wire import topics

DEVICES = 1000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _pump(
    client: Paho, messages: list[tuple[str, bytes]], done_topic_prefix: str, window: int
) -> float:
    """Publish with at most ``window`` unanswered; seconds until all are answered."""
    sent = received = 0
    started = time.perf_counter()
    while received < len(messages):
        while sent < len(messages) and sent - received < window:
            client.publish(*messages[sent])
            sent += 1
        topic, _payload, _ = await asyncio.wait_for(client.messages.get(), 30)
        if topic.startswith(done_topic_prefix):
            received += 1
    return time.perf_counter() - started


Login = tuple[str, str] | tuple[None, None]
ANONYMOUS: Login = (None, None)


async def measure(port: int, count: int, window: int, login: Login) -> tuple[float, float]:
    async with Paho(port, username=login[0], password=login[1]) as client:
        await client.subscribe("bench/raw/#", "$hw/events/device/+/+/twin/update/result")
        raw = [
            (f"bench/raw/{i % 10}", b'{"twin": {"count": {"actual": {"value": "1"}}}}')
            for i in range(count)
        ]
        twin = [
            (
                topics.twin_update_topic(f"default/d{i % DEVICES}"),
                orjson.dumps(
                    {"event_id": str(i), "twin": {"count": {"actual": {"value": str(i)}}}}
                ),
            )
            for i in range(count)
        ]
        await _pump(client, raw[: count // 10], "bench/raw/", window)  # warm up
        await _pump(client, twin[: count // 10], "$hw/", window)
        raw_s = await _pump(client, raw, "bench/raw/", window)
        twin_s = await _pump(client, twin, "$hw/", window)
    return count / raw_s, count / twin_s


async def wait_for_specs(port: int, login: Login) -> None:
    """Until every device's retained spec is at the broker: the node has settled."""
    async with Paho(port, username=login[0], password=login[1]) as client:
        await client.subscribe(topics.spec_filter("modbus"))
        for _ in range(DEVICES):
            await asyncio.wait_for(client.messages.get(), 30)


def scrape(url: str, times: int = 20) -> tuple[float, float]:
    """Median milliseconds of one /metrics scrape, and the body's size in KB."""
    took, size = [], 0
    for _ in range(times):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as response:
            size = len(response.read())
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took), size / 1024


def node_config(work: Path, *, auth: bool) -> tuple[Path, Login]:
    """A node config without the per-client rate limit (the bench is one fast client);
    with ``auth``, broker.auth on and the bench logged in as the modbus mapper."""
    broker: dict[str, object] = {"max_messages_per_second": 1_000_000}
    login = ANONYMOUS
    if auth:
        passwords = PasswordFile(work / "passwd")
        passwords.set("bench", "bench-password")
        passwords.save()
        broker["auth"] = {"password_file": str(passwords.path), "mappers": {"bench": "modbus"}}
        login = ("bench", "bench-password")
    config = work / f"config-{auth}.yaml"
    config.write_text(yaml.safe_dump({"broker": broker}))
    return config, login


async def run_one(
    kind: str, work: Path, count: int, window: int, mqtt_port: int | None, *, auth: bool = False
) -> dict[str, float]:
    manifests = write_manifests(work / f"m-{kind}", [thermostat(f"d{i}") for i in range(DEVICES)])
    config, login = node_config(work, auth=auth)
    node = NodeProcess(
        work / f"data-{kind}",
        node=f"bench-{kind}",
        external_port=mqtt_port,
        manifests=manifests,
        extra=("--config", str(config)),
    )
    with node:
        assert node.proc is not None
        await wait_for_specs(node.port, login)
        idle = rss_mb(node.proc.pid)
        raw, twin = await measure(node.port, count, window, login)
        busy = rss_mb(node.proc.pid)
        assert node.lines is not None
        url = node.lines.wait_for(re.compile(r"http://\S+/metrics"), 5).split()[-1]
        scrape_ms, scrape_kb = await asyncio.to_thread(scrape, url)
    return {
        "raw": raw,
        "twin": twin,
        "ratio": twin / raw,
        "rss_idle": idle,
        "rss_after": busy,
        "scrape_ms": scrape_ms,
        "scrape_kb": scrape_kb,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=100)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        results["amqtt (embedded)"] = await run_one("amqtt", work, args.messages, args.window, None)
        results["amqtt (embedded), auth + ACL"] = await run_one(
            "amqtt-auth", work, args.messages, args.window, None, auth=True
        )
        port = stack.enter_context(mosquitto(work))
        results["mosquitto"] = await run_one("mosquitto", work, args.messages, args.window, port)
    print(f"{args.messages} messages, window {args.window}, {DEVICES} devices, client paho\n")
    print(
        "| broker | raw pass-through msg/s | twin updates/s | twin / raw "
        "| node RSS idle MB | after run MB | /metrics ms | /metrics KB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(
            f"| {name} | {r['raw']:,.0f} | {r['twin']:,.0f} | {r['ratio']:.2f} | "
            f"{r['rss_idle']:.1f} | {r['rss_after']:.1f} | "
            f"{r['scrape_ms']:.1f} | {r['scrape_kb']:.0f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
