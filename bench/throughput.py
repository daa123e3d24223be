"""Committed twin updates per second, beside the broker's raw pass-through rate.

A real node process (``edgetwin run``) with 1,000 and with 10,000 devices, on
each broker (the embedded ones: the node's supervised mosquitto, the default
where mosquitto is installed, and amqtt in the node's process; and an
external mosquitto), SQLite under ``store.synchronous=FULL``. One load generator
(``bench/loadgen``, Go, a minimal MQTT 3.1.1 client: it is not the limit,
see its raw rate) measures in the same run:

- **raw**: QoS 1 publish -> broker -> a subscriber, with nothing of the node's
  in the path (the broker's pass-through, and the generator's own ceiling);
- **twin**: QoS 1 ``twin/update`` of a reported FLOAT -> checked -> committed ->
  ``twin/update/result`` received (matched by ``event_id``), over the devices in
  turn, as fast as answered with ``--window`` in flight: the maximum rate, and
  the node's CPU per update over that run (``/proc/PID/stat``);
- **latency** p50/p99 of the result at 50 % and 90 % of that maximum, paced
  (open loop: from the planned send time);
- the node's **RSS** once its retained specs are at the broker (idle) and after.

Each update changes the reported value, so with the history on (the default) each
is a history row too; ``--history on off`` measures both.

Run: ``.venv/bin/python -m bench.throughput [--messages N] [--window W] [--devices 1000 10000]
[--history on off]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from tests.support import NodeProcess, Paho, mosquitto, thermostat, write_manifests

from edgetwin.wire import topics

ROOT = Path(__file__).resolve().parent.parent
GO_TOOLS = ROOT / "build"
"""Where bench/build-go puts the Go tools, each in a folder of its name."""
LOADGEN = GO_TOOLS / "loadgen" / "loadgen"
TICKS = os.sysconf("SC_CLK_TCK")


def build_go_tools() -> None:
    subprocess.run([str(ROOT / "bench" / "build-go")], check=True)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory (or another of /proc's memory fields) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def loadgen(port: int, mode: str, **flags: object) -> dict[str, Any]:
    args = [str(LOADGEN), "-broker", f"127.0.0.1:{port}", "-mode", mode]
    args += [f"-{name}={value}" for name, value in flags.items()]  # -flag=v: bools too
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen {mode} failed ({proc.returncode})")
    result: dict[str, Any] = orjson.loads(out)
    return result


async def wait_for_specs(port: int, devices: int) -> None:
    """Until every device's retained spec is at the broker: the node has settled."""
    async with Paho(port) as client:
        await client.subscribe(topics.spec_filter("modbus"))
        for _ in range(devices):
            await asyncio.wait_for(client.messages.get(), 60)


@dataclass
class Row:
    broker: str
    devices: int
    history: str = "on"
    raw: float = 0.0
    twin: float = 0.0
    cpu_us: float = 0.0
    latency: tuple[float, ...] = ()
    rss_idle: float = 0.0
    rss_after: float = 0.0


ENGINES = {"embedded mosquitto": "mosquitto", "embedded amqtt": "amqtt"}


def node_config(
    work: Path, broker: str, history: str, messages_per_second: float = 1_000_000
) -> Path:
    """The embedded broker's engine; its per-client rate limit raised (the generator is a
    few very fast clients); the history on or off."""
    config = work / f"config-{broker.replace(' ', '-')}-{history}.yaml"
    settings = {
        "max_messages_per_second": messages_per_second,
        "engine": ENGINES.get(broker, "auto"),
    }
    config.write_text(
        yaml.safe_dump(
            {
                "broker": settings,
                "store": {"synchronous": "FULL"},
                "history": {"enabled": history == "on"},
            }
        )
    )
    return config


async def run_one(
    broker: str,
    work: Path,
    devices: int,
    history: str,
    args: argparse.Namespace,
    mqtt_port: int | None,
) -> Row:
    tag = f"{broker.replace(' ', '-')}-{devices}-{history}"
    manifests = write_manifests(work / f"m-{tag}", [thermostat(f"d{i}") for i in range(devices)])
    node = NodeProcess(
        work / f"data-{tag}",
        node=f"bench-{tag}",
        external_port=mqtt_port,
        manifests=manifests,
        extra=("--config", str(node_config(work, broker, history))),
    )
    row = Row(broker, devices, history)
    with node:
        assert node.proc is not None
        pid = node.proc.pid
        await wait_for_specs(node.port, devices)
        row.rss_idle = rss_mb(pid)
        common: dict[str, object] = {"messages": args.messages, "devices": devices}
        row.raw = (await loadgen(node.port, "raw", window=args.window, **common))["rate"]
        before = cpu_seconds(pid)
        most = await loadgen(node.port, "twin", window=args.window, **common)
        row.cpu_us = (cpu_seconds(pid) - before) / (args.messages + 2000) * 1e6  # + warm-up
        row.twin = most["rate"]
        latency: list[float] = []
        for share in (0.5, 0.9):
            paced = await loadgen(
                node.port, "twin", window=20_000, rate=int(share * row.twin), **common
            )
            latency += [paced["p50_ms"], paced["p99_ms"]]
        row.latency = tuple(latency)
        row.rss_after = rss_mb(pid)
    return row


def table(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        f"{args.messages:,} updates a run, window {args.window}, store.synchronous=FULL\n",
        (
            "| broker | devices | history | raw msg/s | twin updates/s | twin / raw "
            "| node CPU µs/update | p50 / p99 ms at 50 % | p50 / p99 ms at 90 % | RSS idle MB "
            "| after MB |"
        ),
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        p50a, p99a, p50b, p99b = r.latency
        lines.append(
            f"| {r.broker} | {r.devices:,} | {r.history} | {r.raw:,.0f} | {r.twin:,.0f} "
            f"| {r.twin / r.raw:.2f} "
            f"| {r.cpu_us:.0f} | {p50a:.1f} / {p99a:.1f} | {p50b:.1f} / {p99b:.1f} "
            f"| {r.rss_idle:.1f} | {r.rss_after:.1f} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--devices", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument(
        "--brokers",
        nargs="+",
        default=[*ENGINES, "external mosquitto"],
        choices=[*ENGINES, "external mosquitto"],
    )
    parser.add_argument("--history", nargs="+", default=["on"], choices=["on", "off"])
    args = parser.parse_args()
    build_go_tools()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        port = stack.enter_context(mosquitto(work))
        for broker in args.brokers:
            for devices in args.devices:
                for history in args.history:
                    external = port if broker == "external mosquitto" else None
                    row = await run_one(broker, work, devices, history, args, external)
                    rows.append(row)
                    print(table(rows[-1:], args).splitlines()[-1], flush=True)
        print(table(rows, args), flush=True)  # before the folder goes, which may fail


if __name__ == "__main__":
    asyncio.run(main())
