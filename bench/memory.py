"""What a node's memory is made of: import cost per part, per-device state, whole-node RSS.

- **Parts**: one fresh interpreter imports the node's parts one after another (what
  each configuration turns on) and reads its RSS after each: Python itself, the core
  (config, wire, twin, store, MQTT client, node), then prometheus-client (health, on by
  default), pymodbus (the Modbus mapper), the kubernetes client (cloud sync), amqtt
  (the embedded amqtt), grpc (DMI).
- **Per device** (tracemalloc, in this process): a twin engine with 1,000 devices of the
  Modbus tests' model (a property of each register kind and several data types) applied:
  what it holds after a collection, and how much of that is the retained spec messages
  it keeps for the mappers.
- **Whole node** (RSS of ``edgetwin run``, and of it the anonymous memory): 1,000
  devices idle on the node's own mosquitto; with the Modbus mapper serving them; with
  the cloud sync following them on a real kube-apiserver (the tests' stand) as well.

Run: ``.venv/bin/python -m bench.memory [--devices N] [--no-cloud]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import subprocess
import sys
import tempfile
import tracemalloc
import urllib.request
from pathlib import Path

from tests.mappers.modbus_support import modbus_device, modbus_model
from tests.support import NodeProcess, free_port, write_manifests

from bench.throughput import rss_mb, wait_for_specs
from edgetwin.wire.resources import Device

PARTS = [
    ("Python", ""),
    ("core: config, wire, twin, store, MQTT client, node", "edgetwin.node"),
    ("prometheus-client (health and metrics)", "edgetwin.health"),
    ("pymodbus (Modbus mapper)", "edgetwin.mappers.modbus"),
    ("kubernetes client (cloud sync)", "edgetwin.cloud"),
    ("amqtt (embedded amqtt)", "edgetwin.broker._embedded"),
    ("grpc, protobuf (DMI)", "edgetwin.mappers.dmi"),
]

_IMPORTER = """
import gc, importlib, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
for module in sys.argv[1:]:
    if module:
        importlib.import_module(module)
    gc.collect()
    print(rss())
"""


def import_costs() -> list[tuple[str, float, float]]:
    """(part, MB it adds, RSS after it) in import order, in one fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _IMPORTER, *(module for _, module in PARTS)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    totals = [float(x) for x in out]
    rows, before = [], 0.0
    for (name, _), total in zip(PARTS, totals, strict=True):
        rows.append((name, total - before, total))
        before = total
    return rows


MODEL = "bench-modbus"
_NOBODY = free_port()  # devices that do not answer: the mapper keeps trying


def modbus_things(devices: int, node: str | None = None) -> list[Device]:
    """Devices of the Modbus test model (eight registers of each kind and type)."""
    out = []
    for i in range(devices):
        document = modbus_device(
            f"d{i}", MODEL, {"ip": "127.0.0.1", "port": _NOBODY, "slaveID": 1}
        ).to_document()
        if node is not None:
            document["spec"]["nodeName"] = node
        out.append(Device.model_validate(document))
    return out


def per_device(devices: int) -> tuple[float, float]:
    """MB the twin engine holds for ``devices`` devices, and of it the retained specs."""
    from edgetwin.config import TwinSettings  # noqa: PLC0415 - after tracing starts
    from edgetwin.twin import TwinEngine  # noqa: PLC0415

    resources = [modbus_model(MODEL), *modbus_things(devices)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = TwinEngine("bench", TwinSettings())
    engine.catalog.apply_resources(resources, "bench")
    del resources
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    specs = sum(
        sys.getsizeof(topic) + sys.getsizeof(payload)
        for topic, payload in engine.catalog.specs.values()
    )
    tracemalloc.stop()
    return held / 2**20, specs / 2**20


async def node_rss(
    work: Path, devices: int, *, mapper: bool, kubeconfig: Path | None
) -> tuple[float, float]:
    """RSS of an idle node once its devices' specs are at the broker, and of it the anonymous
    memory (the rest maps files: the interpreter and shared libraries, shared with others)."""
    tag = f"{'m' if mapper else ''}{'c' if kubeconfig else ''}"
    extra: list[str] = []
    manifests = None
    if kubeconfig is not None:
        extra += ["--kubeconfig", str(kubeconfig)]
    else:
        manifests = write_manifests(work / f"m-{tag}", modbus_things(devices), modbus_model(MODEL))
    if mapper:
        extra += ["--mapper", "modbus"]
    node = NodeProcess(
        work / f"data-{tag}", node="bench-mem", manifests=manifests, extra=tuple(extra)
    )
    with node:
        assert node.proc is not None
        await wait_for_specs(node.port, devices)
        if mapper:
            assert node.lines is not None
            url = node.lines.wait_for(re.compile(r"http://\S+/metrics"), 5).split()[-1]
            await _until_serving(url, devices)
        return rss_mb(node.proc.pid), rss_mb(node.proc.pid, "RssAnon")


async def _until_serving(url: str, devices: int) -> None:
    """Until the Modbus mapper serves every device (read from /metrics, a gauge: polled)."""
    want = f'edgetwin_mapper_devices{{protocol="modbus"}} {float(devices)}'
    while True:
        with urllib.request.urlopen(url, timeout=10) as response:
            if want in response.read().decode():
                return
        await asyncio.sleep(0.2)


async def cloud_rss(work: Path, devices: int) -> tuple[float, float]:
    from tests.kube.conftest import OURS, own_cluster  # noqa: PLC0415 - Go stand only if asked

    with own_cluster(work / "cluster", OURS) as cluster:
        await cluster.create("devicemodels", modbus_model(MODEL).to_document())
        for device in modbus_things(devices, node="bench-mem"):
            await cluster.create("devices", device.to_document())
        kubeconfig = cluster.node_kubeconfig(work, "bench-mem")
        return await node_rss(work, devices, mapper=True, kubeconfig=kubeconfig)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--no-cloud", action="store_true")
    args = parser.parse_args()
    print("| part (imported in this order) | adds MB | RSS after MB |")
    print("| --- | ---: | ---: |")
    for name, adds, total in import_costs():
        print(f"| {name} | {adds:.1f} | {total:.1f} |")
    held, specs = per_device(args.devices)
    print(f"\n{args.devices:,} devices in the twin engine (tracemalloc):\n")
    print("| held | per device | of it retained specs |")
    print("| ---: | ---: | ---: |")
    print(f"| {held:.1f} MB | {held * 2**20 / args.devices / 1024:.1f} KB | {specs:.1f} MB |")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = [
            (
                "node, own mosquitto",
                await node_rss(work, args.devices, mapper=False, kubeconfig=None),
            ),
            ("+ Modbus mapper", await node_rss(work, args.devices, mapper=True, kubeconfig=None)),
        ]
        if not args.no_cloud:
            rows.append(
                ("+ cloud sync (devices from kube-apiserver)", await cloud_rss(work, args.devices))
            )
    print(f"\nWhole node, {args.devices:,} devices, idle:\n")
    print("| node | RSS MB | of it anonymous MB |")
    print("| --- | ---: | ---: |")
    for name, (rss, anonymous) in rows:
        print(f"| {name} | {rss:.1f} | {anonymous:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
