"""Modbus mappers: time from a desired value set over MQTT to the register written, through the
node's own Modbus mapper (MQTT) and through a KubeEdge mapper (DMI); and Modbus requests per
second for 100 devices polled with read coalescing on and off.

Latency: a node (embedded amqtt) in this process, a pymodbus server in this process too, and
either the Modbus mapper in this process or the Go test mapper on KubeEdge's mapper-framework
(build/dmimapper, built by scripts/test) as its own process over DMI; paho publishes
``twin/update`` with an expected value and the server's write hook stops the clock.

Polling: 100 slaves (8 adjacent holding registers each, read as 8 properties every
``collectCycle`` of 100 ms) behind one Modbus TCP connection, the way a gateway serves a
line; the server runs in its own process.

Scale: 1,000 devices of 8 registers every 100 ms (80,000 values/s) behind 10 Modbus
TCP gateways of 100 slaves each (``bench/modbusd``, Go on simonvetter/modbus, its
own process: it is not the limit, see its self-test), the Modbus mapper in this
process reporting to a node process (``edgetwin run`` on the node's mosquitto) at
each reportCycle given. Counted: values read against values asked (a worker that
falls behind skips polls), requests, twin/updates sent and answered, and CPU of
the mapper (this process), the node, its mosquitto and the gateways.

Run: ``.venv/bin/python -m bench.mappers [--samples N] [--seconds S]
[--only latency|polling|scale] [--devices N] [--gateways G] [--report-ms MS ...]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from tests.dmi.kubeedge_mapper import kubeedge_mapper
from tests.mappers.modbus_support import slave
from tests.metrics import http, samples
from tests.support import NodeProcess, Paho, device_manifest, free_port, write_manifests

from bench.throughput import GO_TOOLS, build_go_tools, cpu_seconds, wait_for_specs
from edgetwin.config import load_settings
from edgetwin.mappers import MapperRuntime
from edgetwin.mappers.modbus import ModbusMapper
from edgetwin.mappers.plugin import DeviceDriver, DeviceSink, PropertyError
from edgetwin.mqtt import BrokerAddress
from edgetwin.node import Node
from edgetwin.wire import topics
from edgetwin.wire.resources import DeviceModel
from edgetwin.wire.spec import DeviceSpecMessage, PropertySpec

REGISTERS = 8
DEVICES = 100


def _model(name: str, registers: int) -> DeviceModel:
    properties = [
        {
            "name": f"r{i}",
            "type": "INT",
            "accessMode": "ReadWrite",
            "visitors": {"configData": {"register": "HoldingRegister", "offset": i}},
        }
        for i in range(registers)
    ]
    return DeviceModel.model_validate(
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "DeviceModel",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"protocol": "modbus", "properties": properties},
        }
    )


def _cycles(registers: int, ms: int) -> list[dict[str, Any]]:
    return [{"name": f"r{i}", "collectCycle": ms, "reportCycle": ms} for i in range(registers)]


async def _node(folder: str, *, dmi: bool = False) -> Node:
    settings = load_settings(
        node={"name": "bench", "data_dir": folder},
        broker={"port": 0, "engine": "amqtt"},  # as measured before the node's mosquitto
        store={"synchronous": "NORMAL"},
        dmi={"enabled": dmi, "socket": f"{folder}/dmi.sock"},
    )
    return await Node(settings).__aenter__()


@contextlib.asynccontextmanager
async def _mapper(kind: str, node: Node, folder: str) -> AsyncIterator[None]:
    if kind == "dmi":
        async with kubeedge_mapper(Path(folder), node.settings.dmi.socket):
            yield
    else:
        async with MapperRuntime(ModbusMapper(), node.broker_address(), node="bench"):
            yield


async def latency(samples: int, kind: str = "mqtt") -> list[float]:
    """Milliseconds from publishing a desired value to the register write at the device."""
    port = free_port()
    written: asyncio.Queue[tuple[int, float]] = asyncio.Queue()

    async def on_access(
        function_code: int, _start: int, address: int, _count: int, _regs: Any, values: Any
    ) -> None:
        if function_code == 6 and address == 0 and values:
            written.put_nowait((int(values[0]), time.perf_counter()))

    regs = [SimData(0, count=REGISTERS, values=0, datatype=DataType.REGISTERS)]
    bits = [SimData(0, count=1, values=False, datatype=DataType.BITS)]
    device = SimDevice(1, simdata=(bits, bits, regs, regs), action=on_access)
    server = ModbusTcpServer([device], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-", dir="/tmp") as folder:  # short: sockets
        node = await _node(folder, dmi=kind == "dmi")
        try:
            config = {"ip": "127.0.0.1", "port": port, "slaveID": 1}
            await node.service.apply(
                [
                    _model("lat", 1),
                    device_manifest("lat-1", "lat", "modbus", config, _cycles(1, 1000)),
                ]
            )
            async with _mapper(kind, node, folder), Paho(node.broker_port) as client:
                update = topics.twin_update_topic("default/lat-1")
                for i in range(samples + 10):
                    value = 100 + i % 500
                    started = time.perf_counter()
                    client.publish(update, {"twin": {"r0": {"expected": {"value": str(value)}}}})
                    while True:
                        got, when = await asyncio.wait_for(written.get(), 10)
                        if got == value:
                            break
                    if i >= 10:  # the first few warm up connections and caches
                        out.append((when - started) * 1000)
        finally:
            await node.__aexit__(None, None, None)
            await server.shutdown()
    return out


def _serve_slaves(port: int, ready: Any) -> None:
    logging.disable(logging.CRITICAL)

    async def main() -> None:
        server = ModbusTcpServer(
            [slave(u) for u in range(1, DEVICES + 1)], address=("127.0.0.1", port)
        )
        await server.serve_forever(background=True)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


class _Counting(ModbusMapper):
    """The Modbus mapper, counting the property values its devices read."""

    def __init__(self, *, coalesce: bool) -> None:
        super().__init__(coalesce=coalesce, timeout=2.0)
        self.values_read = 0

    async def open(self, spec: DeviceSpecMessage, sink: DeviceSink) -> DeviceDriver:
        driver = await super().open(spec, sink)
        counter = self
        read = driver.read

        async def counting_read(props: Sequence[PropertySpec]) -> dict[str, str | PropertyError]:
            values = await read(props)
            counter.values_read += sum(1 for v in values.values() if isinstance(v, str))
            return values

        driver.read = counting_read  # type: ignore[method-assign]
        return driver


async def polling(*, coalesce: bool, seconds: float) -> tuple[float, float]:
    """Modbus requests per second on the wire, and property values read per second."""
    port = free_port()
    ready = multiprocessing.get_context("spawn").Event()
    server = multiprocessing.get_context("spawn").Process(
        target=_serve_slaves, args=(port, ready), daemon=True
    )
    server.start()
    ready.wait(30)
    try:
        with tempfile.TemporaryDirectory() as folder:
            node = await _node(folder)
            try:
                resources: list[Any] = [_model("poll", REGISTERS)]
                for unit in range(1, DEVICES + 1):
                    config = {"ip": "127.0.0.1", "port": port, "slaveID": unit}
                    cycles = _cycles(REGISTERS, 100)
                    resources.append(device_manifest(f"p-{unit}", "poll", "modbus", config, cycles))
                await node.service.apply(resources)
                mapper = _Counting(coalesce=coalesce)
                async with MapperRuntime(mapper, node.broker_address(), node="bench"):
                    while len(mapper.channels) < 1 or mapper.values_read == 0:
                        await asyncio.sleep(0.1)
                    await asyncio.sleep(1.0)  # every device polling
                    channel = next(iter(mapper.channels.values()))
                    requests, values = channel.requests, mapper.values_read
                    started = time.perf_counter()
                    await asyncio.sleep(seconds)
                    elapsed = time.perf_counter() - started
                    return (
                        (channel.requests - requests) / elapsed,
                        (mapper.values_read - values) / elapsed,
                    )
            finally:
                await node.__aexit__(None, None, None)
    finally:
        server.terminate()
        server.join()


@dataclass
class Scale:
    """One run of :func:`scale`, per second: rates, and CPU seconds of each process."""

    asked: float  # property values the devices' collectCycles ask for
    values: float  # property values read
    requests: float  # Modbus requests on the wire
    reports: float  # twin/updates the mapper sent
    accepted: float  # twin/updates the node answered
    mapper_cpu: float
    node_cpu: float
    broker_cpu: float  # the node's mosquitto
    gateways_cpu: float


class _CountingRuntime(MapperRuntime):
    """The mapper runtime, counting the twin/updates it sends."""

    reports = 0

    def report(self, device: str, twin: dict[str, Any]) -> None:
        self.reports += 1
        super().report(device, twin)


async def _sample(
    mapper: _Counting, runtime: _CountingRuntime, node: int, gateways: int, health: int
) -> tuple[float, ...]:
    _, text = await http(health, "/metrics")
    accepted = samples(text).get(
        ("edgetwin_twin_requests_accepted_total", (("kind", "twin/update"),)), 0.0
    )
    children = Path(f"/proc/{node}/task/{node}/children").read_text().split()
    return (
        mapper.values_read,
        sum(c.requests for c in mapper.channels.values()),
        runtime.reports,
        accepted,
        time.process_time(),
        cpu_seconds(node),
        sum(cpu_seconds(int(c)) for c in children),
        cpu_seconds(gateways),
    )


async def scale(
    devices: int, gateways: int, cycle_ms: int, report_ms: int, seconds: float
) -> Scale:
    """The Modbus mapper (in this process) polling ``devices`` of 8 registers every
    ``cycle_ms`` behind ``gateways`` Modbus TCP gateways (bench/modbusd, Go, its own
    process), reporting to a node (``edgetwin run``, the node's mosquitto) every
    ``report_ms``."""
    listen = _listen(gateways)
    ports = [int(a.rsplit(":", 1)[1]) for a in listen.split(",")]
    server = await asyncio.create_subprocess_exec(
        str(GO_TOOLS / "modbusd" / "modbusd"),
        "-listen",
        listen,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert server.stdout is not None
    assert server.stdin is not None
    await asyncio.wait_for(server.stdout.readline(), 10)  # "ready"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-", dir="/tmp") as folder:
            work = Path(folder)
            per_gateway = -(-devices // gateways)
            resources = [
                device_manifest(
                    f"s-{i}",
                    "scale",
                    "modbus",
                    {"ip": "127.0.0.1", "port": ports[i // per_gateway], "slaveID": 1 + i % 247},
                    [
                        {"name": f"r{r}", "collectCycle": cycle_ms, "reportCycle": report_ms}
                        for r in range(REGISTERS)
                    ],
                )
                for i in range(devices)
            ]
            manifests = write_manifests(work / "m", resources, _model("scale", REGISTERS))
            health = free_port()
            node = NodeProcess(
                work / "data",
                node="bench",
                manifests=manifests,
                env={"EDGETWIN_HEALTH__PORT": str(health)},
            )
            with node:
                assert node.proc is not None
                await wait_for_specs(node.port, devices)
                mapper = _Counting(coalesce=True)
                runtime = _CountingRuntime(
                    mapper, BrokerAddress("127.0.0.1", node.port), node="bench"
                )
                async with runtime:
                    while mapper.values_read < devices * REGISTERS:
                        await asyncio.sleep(0.2)
                    await asyncio.sleep(2.0)  # every device polling, the reports flowing
                    pids = node.proc.pid, server.pid
                    before = await _sample(mapper, runtime, *pids, health)
                    started = time.perf_counter()
                    await asyncio.sleep(seconds)
                    after = await _sample(mapper, runtime, *pids, health)
                    elapsed = time.perf_counter() - started
                    rates = [(a - b) / elapsed for a, b in zip(after, before, strict=True)]
                    return Scale(devices * REGISTERS * 1000 / cycle_ms, *rates)
    finally:
        server.stdin.close()
        await server.wait()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--only", choices=("latency", "polling", "scale"))
    parser.add_argument("--devices", type=int, default=1000, help="scale: devices")
    parser.add_argument("--gateways", type=int, default=10, help="scale: Modbus TCP gateways")
    parser.add_argument(
        "--report-ms", type=int, nargs="+", default=[1000, 100], help="scale: reportCycles"
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    if args.only in (None, "latency"):
        await print_latency(args)
    if args.only in (None, "polling"):
        await print_polling(args)
    if args.only in (None, "scale"):
        await print_scale(args)


async def print_latency(args: argparse.Namespace) -> None:
    print(f"desired over MQTT -> register written, {args.samples} samples:")
    print("| mapper | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: |")
    for kind, label in (("mqtt", "edgetwin Modbus (MQTT)"), ("dmi", "KubeEdge mapper (DMI)")):
        lat = sorted(await latency(args.samples, kind))
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"| {label} | {statistics.median(lat):.1f} | {p99:.1f} | {lat[-1]:.1f} |")
    print()


async def print_polling(args: argparse.Namespace) -> None:
    demand = DEVICES * REGISTERS * 10
    print(
        f"{DEVICES} devices x {REGISTERS} registers every 100 ms "
        f"({demand:,} values/s asked), one TCP connection, {args.seconds:g} s:"
    )
    print("| coalescing | Modbus requests/s | values read/s | values per request |")
    print("| --- | ---: | ---: | ---: |")
    for coalesce in (True, False):
        requests, values = await polling(coalesce=coalesce, seconds=args.seconds)
        print(
            f"| {'on' if coalesce else 'off'} | {requests:,.0f} | {values:,.0f} | "
            f"{values / requests if requests else 0:.1f} |"
        )
    print()


async def print_scale(args: argparse.Namespace) -> None:
    build_go_tools()
    ceiling = subprocess.run(
        [str(GO_TOOLS / "modbusd" / "modbusd"), "-selftest", "-listen", _listen(args.gateways)],
        check=True,
        capture_output=True,
    )
    alone = orjson.loads(ceiling.stdout)
    print(
        f"{args.devices:,} devices x {REGISTERS} registers every 100 ms behind {args.gateways} "
        f"Modbus TCP gateways (bench/modbusd, Go: {alone['requests_per_s']:,.0f} requests/s "
        f"against Go clients alone), {args.seconds:g} s; CPU in ms per second (one core: 1000):"
    )
    print(
        "| reportCycle | values/s asked | read | Modbus requests/s | twin/updates sent | "
        "answered | mapper µs/value | mapper CPU | node CPU | mosquitto CPU | gateways CPU |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for report_ms in args.report_ms:
        got = await scale(args.devices, args.gateways, 100, report_ms, args.seconds)
        per_value = got.mapper_cpu / got.values * 1e6 if got.values else float("nan")
        print(
            f"| {report_ms} ms | {got.asked:,.0f} | {got.values:,.0f} | {got.requests:,.0f} | "
            f"{got.reports:,.0f} | {got.accepted:,.0f} | {per_value:.1f} | "
            f"{got.mapper_cpu * 1000:.0f} | {got.node_cpu * 1000:.0f} | "
            f"{got.broker_cpu * 1000:.0f} | {got.gateways_cpu * 1000:.0f} |"
        )


def _listen(gateways: int) -> str:
    return ",".join(f"127.0.0.1:{free_port()}" for _ in range(gateways))


if __name__ == "__main__":
    asyncio.run(main())
