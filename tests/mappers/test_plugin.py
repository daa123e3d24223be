"""A third-party mapper from its own package (examples/mapper-plugin), installed and run as
``edgetwin mapper loopback`` in its own process, against a node in another."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.mappers.watch import DeviceWatch
from tests.support import (
    EDGETWIN,
    NodeProcess,
    child_process,
    env_without_edgetwin,
    run_cli,
    unique,
)

PLUGIN = Path(__file__).parents[2] / "examples" / "mapper-plugin"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package installed into a folder of its own (not into the test venv),
    built from a copy so the build leaves nothing in the source tree."""
    target = tmp_path_factory.mktemp("plugin")
    source = tmp_path_factory.mktemp("plugin-source") / "mapper-plugin"
    shutil.copytree(PLUGIN, source)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return target


def _env(plugin_path: Path) -> dict[str, str]:
    env = env_without_edgetwin()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin_path), env.get("PYTHONPATH")]))
    return env


def _manifests(folder: Path) -> Path:
    model = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "loop", "namespace": "default"},
        "spec": {
            "protocol": "loopback",
            "properties": [
                {"name": "level", "type": "INT", "accessMode": "ReadWrite"},
                {
                    "name": "ticks",
                    "type": "INT",
                    "accessMode": "ReadOnly",
                    "visitors": {"configData": {"counts": True}},
                },
            ],
        },
    }
    device = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "loop-1", "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "loop"},
            "properties": [
                {"name": "level", "collectCycle": 100, "reportCycle": 100},
                {"name": "ticks", "collectCycle": 100, "reportCycle": 100},
            ],
        },
    }
    folder.mkdir()
    (folder / "loop.yaml").write_text(yaml.safe_dump_all([model, device]))
    return folder


@pytest.fixture
def mapper_process(plugin_path: Path, tmp_path: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path, node=unique("node"), manifests=_manifests(tmp_path / "m"))
    with node:
        args = [*EDGETWIN, "mapper", "loopback", "--broker", f"127.0.0.1:{node.port}"]
        ready = re.compile("serving device default/loop-1")
        with child_process([*args, "--node", node.node], ready, env=_env(plugin_path)):
            yield node


async def test_a_mapper_from_another_package_serves_its_devices(
    mapper_process: NodeProcess,
) -> None:
    async with DeviceWatch(mapper_process.port, "default/loop-1", "loopback") as watch:
        watch.set(level="7")
        await watch.until_reported(level="7")
        await watch.until(lambda: "ticks" in watch.reported)
        first = int(watch.reported["ticks"])
        await watch.until_reported(ticks=str(first + 2))  # polled every collectCycle
    node = ["--broker", f"127.0.0.1:{mapper_process.port}", "--node", mapper_process.node]
    listing = await asyncio.to_thread(run_cli, "get", "devices", *node)
    assert re.search(r"default/loop-1\s+loop\s+loopback\s+online\s+2/2", listing.stdout)


def test_an_unknown_mapper_is_one_line_naming_the_installed_ones(plugin_path: Path) -> None:
    result = subprocess.run(
        [*EDGETWIN, "mapper", "nosuch", "--broker", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        env=_env(plugin_path),
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "edgetwin: error: no mapper for protocol 'nosuch' is installed "
        "(installed: loopback, modbus, mqtt)\n"
    )
