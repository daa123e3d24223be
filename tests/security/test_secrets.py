"""A node with a broker password and a cluster token, logging everything (DEBUG, as JSON):
neither secret shows in its log, in ``edgetwin get`` or on /metrics."""

from __future__ import annotations

import asyncio
import re
import subprocess
import uuid
from pathlib import Path

import orjson
import yaml

from edgetwin.auth import PasswordFile
from tests.kube.conftest import OURS, own_cluster
from tests.metrics import http
from tests.support import EDGETWIN, Mosquitto, NodeProcess, env_without_edgetwin, unique


async def test_no_secret_in_logs_output_or_metrics(tmp_path: Path) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    passwords = PasswordFile(tmp_path / "passwd")
    passwords.set("node", password)
    passwords.save()
    listener = f"allow_anonymous false\npassword_file {tmp_path / 'passwd'}\n"
    node_name, device = unique("node"), unique("dev")
    with (
        Mosquitto(tmp_path, listener) as broker,
        own_cluster(tmp_path, OURS) as cluster,
    ):
        kubeconfig = cluster.node_kubeconfig(tmp_path, node_name)
        token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
        await cluster.add_thermostat(device, node_name)
        config = tmp_path / "node.yaml"
        settings = {
            "node": {"name": node_name, "data_dir": str(tmp_path / "data")},
            "broker": {"port": broker.port, "username": "node", "password": password},
            "cloud": {"kubeconfig": str(kubeconfig)},
            "log": {"level": "DEBUG", "format": "json"},
        }
        config.write_text(yaml.safe_dump(settings))
        node = NodeProcess(
            tmp_path / "data",
            node=node_name,
            external_port=broker.port,
            extra=("--config", str(config)),
        )
        with node:
            assert node.lines is not None
            line = node.lines.wait_for(re.compile(r"127\.0\.0\.1:(\d+)/metrics"), 10)
            health_port = int(re.findall(r"127\.0\.0\.1:(\d+)/metrics", line)[0])
            node.lines.wait_for(re.compile(r"listed 1 devices in default"), 15)
            outputs = []
            for command in (
                ["get", "devices", "-o", "yaml"],
                ["get", "device", f"default/{device}"],
            ):
                shown = await asyncio.to_thread(
                    subprocess.run,
                    [*EDGETWIN, *command, "--config", str(config)],
                    capture_output=True,
                    text=True,
                    env=env_without_edgetwin(),
                    check=False,
                )
                assert shown.returncode == 0, shown.stderr
                outputs.append(shown.stdout)
            assert device in outputs[0]
            outputs.append((await http(health_port, "/metrics"))[1])
            assert "edgetwin_cloud_synced 1.0" in outputs[-1]
            assert "edgetwin_cloud_connected 1.0" in outputs[-1]
            assert await http(health_port, "/readyz") == (200, "ready\n")
            assert node.stop() == 0
        log = "".join(node.lines.lines)

    entries = [orjson.loads(line) for line in log.splitlines()]
    assert {"time", "level", "logger", "message"} <= entries[0].keys()
    assert any(e["level"] == "DEBUG" for e in entries)
    for text in (log, *outputs):
        assert password not in text
        assert token not in text
