"""The examples as the README runs them: simulator, node and mapper as separate processes,
driven with the edgetwin CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from tests.mappers.watch import DeviceWatch
from tests.support import (
    EDGETWIN,
    NodeProcess,
    child_process,
    env_without_edgetwin,
    free_port,
    run_cli,
    unique,
)

EXAMPLES = Path(__file__).parents[2] / "examples"


@contextlib.contextmanager
def simulator(*args: str, ready: str) -> Iterator[None]:
    """``edgetwin simulate ...`` as a child process, once it says it is ready."""
    with child_process(
        [*EDGETWIN, "simulate", *args], re.compile(ready), env=env_without_edgetwin()
    ):
        yield


async def _cli(node: NodeProcess, *args: str) -> str:
    where = ["--broker", f"127.0.0.1:{node.port}", "--node", node.node]
    result = await asyncio.to_thread(run_cli, *args, *where)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_thermostat_warms_up_after_a_new_target(tmp_path: Path) -> None:
    modbus_port = free_port()
    manifests = tmp_path / "thermostat"
    shutil.copytree(EXAMPLES / "thermostat", manifests)
    device = manifests / "device.yaml"
    device.write_text(device.read_text().replace("port: 5020", f"port: {modbus_port}"))
    with (
        simulator("thermostat", "--port", str(modbus_port), "--start", "20.5", ready="thermostat"),
        NodeProcess(
            tmp_path, node=unique("node"), manifests=manifests, extra=("--mapper", "modbus")
        ) as node,
    ):
        async with DeviceWatch(node.port, "default/thermostat-01") as watch:
            out = await _cli(node, "set", "default/thermostat-01", "target-temperature=25")
            assert out == "default/thermostat-01 target-temperature: desired 25\n"
            await watch.until_reported(**{"target-temperature": "25"})
            # The simulator started the target at 21: above that, it is our 25 at work.
            await watch.until(lambda: float(watch.reported.get("current-temperature", "0")) > 21.0)
        twin = json.loads(await _cli(node, "get", "device", "default/thermostat-01", "-o", "json"))
        assert twin["state"] == "online"
        assert twin["twin"]["target-temperature"]["actual"]["value"] == "25"
        assert float(twin["twin"]["current-temperature"]["actual"]["value"]) > 21.0
        table = await _cli(node, "get", "device", "default/thermostat-01")
        assert re.search(r"target-temperature\s+float\s+25\s+25\s+yes", table)


async def test_mqtt_sensor_reports_and_takes_its_led(tmp_path: Path) -> None:
    with NodeProcess(
        tmp_path,
        node=unique("node"),
        manifests=EXAMPLES / "mqtt-sensor",
        extra=("--mapper", "mqtt"),
    ) as node:
        broker = f"127.0.0.1:{node.port}"
        with simulator("mqtt-sensor", "--broker", broker, "--interval", "0.2", ready="sensor"):
            async with DeviceWatch(node.port, "default/sensor-01", "mqtt") as watch:
                await watch.until(lambda: "temperature" in watch.reported)
                await _cli(node, "set", "default/sensor-01", "led=true")
                await watch.until_reported(led="true")
            twin = json.loads(await _cli(node, "get", "device", "default/sensor-01", "-o", "json"))
            assert twin["state"] == "online"
            assert twin["twin"]["led"]["actual"]["value"] == "true"
            assert -40 <= float(twin["twin"]["temperature"]["actual"]["value"]) <= 85
