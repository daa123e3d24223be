"""KubeEdge's own mapper runtime in the tests: the Go test mapper on mapper-framework
(tests/dmi/mapper, built by scripts/test into build/dmimapper/), driving Modbus TCP devices."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import yaml

from edgetwin.config import Settings
from edgetwin.wire.resources import Device, DeviceModel
from tests.support import child_process, device_manifest, model_manifest

ROOT = Path(__file__).resolve().parents[2]
MAPPER = ROOT / "build/dmimapper/dmimapper"


@contextlib.contextmanager
def socket_folder() -> Iterator[Path]:
    """A short folder for unix sockets (their paths are limited to 107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="dmi-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def with_dmi(settings: Settings, folder: Path) -> Settings:
    dmi = settings.dmi.model_copy(update={"enabled": True, "socket": folder / "dmi.sock"})
    return settings.model_copy(update={"dmi": dmi})


class Record:
    """The calls the mapper got from the edge, in order (its DMIMAPPER_RECORD file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def calls(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def methods(self) -> list[str]:
        return [call["method"] for call in self.calls()]


@contextlib.asynccontextmanager
async def kubeedge_mapper(
    folder: Path, edge: Path, protocol: str = "modbus", record: Record | None = None
) -> AsyncIterator[Path]:
    """The mapper, once it has registered with the edge at ``edge``; its own socket yielded.
    With ``record``, every call it gets is written there.

    Started and stopped on a thread: the node it registers with runs on this event loop."""
    own = folder / f"{protocol}.sock"
    config = folder / f"{protocol}-mapper.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "grpc_server": {"socket_path": str(own)},
                "common": {
                    "name": f"{protocol}-test-mapper",
                    "version": "v1.21.0",
                    "api_version": "v1.0.0",
                    "protocol": protocol,
                    "address": "127.0.0.1",
                    "edgecore_sock": str(edge),
                },
            }
        )
    )
    args = [str(MAPPER), "--config-file", str(config), "--v", "2"]
    env = {**os.environ, "DMIMAPPER_RECORD": str(record.path)} if record else None
    process = child_process(args, re.compile("serving protocol"), env=env)
    await asyncio.to_thread(process.__enter__)
    try:
        yield own
    finally:
        await asyncio.to_thread(process.__exit__, None, None, None)


def thermostat_model(name: str) -> DeviceModel:
    def prop(name: str, mode: str, register: str, low: str, high: str) -> dict[str, Any]:
        return {
            "name": name,
            "type": "FLOAT",
            "accessMode": mode,
            "minimum": low,
            "maximum": high,
            "visitors": {
                "protocolName": "modbus",
                "configData": {"register": register, "offset": 0, "scale": 0.1},
            },
        }

    return model_manifest(
        name,
        "modbus",
        [
            prop("target", "ReadWrite", "HoldingRegister", "5", "35"),
            prop("current", "ReadOnly", "InputRegister", "-40", "85"),
        ],
    )


def thermostat(name: str, model: str, port: int, target: str | None = "20.0") -> Device:
    """A thermostat whose ``target`` (ReadWrite) is ``target`` (the test mapper refuses a
    device whose ReadWrite property comes without a desired value)."""
    properties: list[dict[str, Any]] = [
        {"name": p, "collectCycle": 100, "reportCycle": 100, "reportToCloud": True}
        for p in ("target", "current")
    ]
    if target is not None:
        properties[0]["desired"] = {"value": target, "metadata": {"by": "test"}}
    config = {"ip": "127.0.0.1", "port": port, "slaveID": 1}
    return device_manifest(name, model, "modbus", config, properties)
