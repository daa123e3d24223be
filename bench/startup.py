"""Start-up cost: 10,000 devices x 10 properties loaded from SQLite.

Fills a store through the engine (as applying manifests would), then times in
a fresh engine: ``Store.load()`` (the SQL reads), ``TwinEngine.restore()``
(parsing and indexing), and a whole ``Node`` start to ready on the embedded
broker. Run: ``.venv/bin/python -m bench.startup [--devices N]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from edgetwin.config import TwinSettings, load_settings
from edgetwin.node import Node, paused_gc
from edgetwin.twin import Store, TwinEngine
from edgetwin.twin.store import WriteBatch
from edgetwin.wire.resources import Device, DeviceModel

PROPERTIES = 10


def model() -> DeviceModel:
    return DeviceModel.model_validate(
        {
            "metadata": {"name": "sensor"},
            "spec": {
                "protocol": "modbus",
                "properties": [
                    {
                        "name": f"p{i}",
                        "type": "INT",
                        "minimum": "0",
                        "maximum": "1000000",
                        "visitors": {"configData": {"register": "HoldingRegister", "offset": i}},
                    }
                    for i in range(PROPERTIES)
                ],
            },
        }
    )


def device(n: int) -> Device:
    return Device.model_validate(
        {
            "metadata": {"name": f"d{n}"},
            "spec": {
                "deviceModelRef": {"name": "sensor"},
                "protocol": {
                    "protocolName": "modbus",
                    "configData": {"ip": "127.0.0.1", "port": 502},
                },
                "properties": [
                    {"name": f"p{i}", "desired": {"value": str(i)}} for i in range(PROPERTIES)
                ],
            },
        }
    )


async def fill(path: Path, devices: int) -> None:
    engine = TwinEngine("bench", TwinSettings())
    async with Store(path, synchronous="NORMAL") as store:
        batch = WriteBatch()
        batch.merge(engine.catalog.apply_model(model(), "bench").batch)
        for n in range(devices):
            batch.merge(engine.catalog.apply_device(device(n), "bench").batch)
        await store.write(batch)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edgetwin.db"
        await fill(path, args.devices)
        async with Store(path) as store:
            with paused_gc():  # as the node does
                started = time.perf_counter()
                snapshot = await store.load()
                loaded = time.perf_counter()
                engine = TwinEngine("bench", TwinSettings())
                engine.catalog.restore(snapshot)
                restored = time.perf_counter()
        rows = len(snapshot.twins)
        del snapshot
        settings = load_settings(node={"name": "bench", "data_dir": tmp}, broker={"port": 0})
        started_node = time.perf_counter()
        async with Node(settings):
            ready = time.perf_counter()
    print(f"{args.devices:,} devices x {PROPERTIES} properties ({rows:,} twin rows)\n")
    print("| step | ms |")
    print("| --- | ---: |")
    print(f"| Store.load (SQL) | {(loaded - started) * 1000:.0f} |")
    print(f"| TwinEngine.restore | {(restored - loaded) * 1000:.0f} |")
    print(f"| load + restore | {(restored - started) * 1000:.0f} |")
    print(f"| whole Node start to ready (embedded broker) | {(ready - started_node) * 1000:.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
