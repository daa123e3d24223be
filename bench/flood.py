"""One device floods the node: are the other devices' updates still served, and how fast?

A node process (``edgetwin run`` on its own mosquitto, the default broker, with
``broker.max_messages_per_second`` at ``--broker-rate``: the default, or 1,000,000 to see
the twin's own budget alone) with 1,000 devices and one more, the flooder. The Go load
generator (``bench/loadgen``) sends the others' twin/updates at a steady rate, paced
(open loop: latency from the planned send time), first alone, then while a second
generator floods: the flooder's twin/updates at ``--flood-rate``, none of them awaited
(``-flood``). Reported: the others' result latency p50/p99 in both runs and how many of
them were answered a second, the rate the flooder sent at, and the CPU of the node and
of its mosquitto.

Run: ``.venv/bin/python -m bench.flood [--flood-rate 20000] [--rate 1000] [--messages 20000]
[--broker-rate N]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from tests.support import NodeProcess, thermostat, write_manifests

from bench.throughput import build_go_tools, cpu_seconds, loadgen, node_config, wait_for_specs
from edgetwin.config import DEFAULTS


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=1000, help="the others' updates/s")
    parser.add_argument("--messages", type=int, default=20_000, help="the others' updates")
    parser.add_argument("--flood-rate", type=int, default=20_000)
    default_rate = DEFAULTS.broker.max_messages_per_second
    parser.add_argument("--broker-rate", type=float, default=default_rate)
    args = parser.parse_args()
    build_go_tools()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        devices = [thermostat(f"d{i}") for i in range(args.devices)] + [thermostat("f0")]
        manifests = write_manifests(work / "manifests", devices)
        config = node_config(work, "embedded mosquitto", "on", args.broker_rate)
        node = NodeProcess(
            work / "data", node="flood", manifests=manifests, extra=("--config", str(config))
        )
        with node:
            assert node.proc is not None
            pid = node.proc.pid
            await wait_for_specs(node.port, args.devices + 1)
            others = {"messages": args.messages, "devices": args.devices, "rate": args.rate}
            broker = _child(pid)
            cpu = cpu_seconds(pid), cpu_seconds(broker)
            alone = await loadgen(node.port, "twin", window=20_000, **others)
            cpu_alone = cpu_seconds(pid) - cpu[0], cpu_seconds(broker) - cpu[1]
            seconds = args.messages / args.rate + 5  # the flood outlasts the measured run
            flood = asyncio.create_task(
                loadgen(
                    node.port,
                    "twin",
                    flood="true",
                    warmup=0,
                    messages=int(args.flood_rate * seconds),
                    devices=1,
                    prefix="f",
                    clients=1,
                    rate=args.flood_rate,
                )
            )
            await asyncio.sleep(2)  # the flood is under way (a bench may wait by the clock)
            cpu = cpu_seconds(pid), cpu_seconds(broker)
            under = await loadgen(node.port, "twin", window=20_000, **others)
            cpu_under = cpu_seconds(pid) - cpu[0], cpu_seconds(broker) - cpu[1]
            flooded = await flood
    print(
        f"{args.devices:,} devices at {args.rate:,} updates/s; one device at "
        f"{args.flood_rate:,}/s asked; broker.max_messages_per_second {args.broker_rate:g}\n"
    )
    print(
        "| run | others answered/s | others p50 ms | others p99 ms | node CPU (cores) "
        "| mosquitto CPU (cores) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, run, cpu in (("alone", alone, cpu_alone), ("under the flood", under, cpu_under)):
        busy = args.messages / run["rate"]
        print(
            f"| {label} | {run['rate']:,.0f} | {run['p50_ms']:.1f} | {run['p99_ms']:.1f} "
            f"| {cpu[0] / busy:.2f} | {cpu[1] / busy:.2f} |"
        )
    print(f"\nthe flooder sent {flooded['rate']:,.0f} updates/s")


def _child(pid: int) -> int:
    """The node's one child process: its mosquitto."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0])


if __name__ == "__main__":
    asyncio.run(main())
