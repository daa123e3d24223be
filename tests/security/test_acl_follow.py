"""``edgetwin acl --mosquitto --follow``: the acl_file follows the node's devices, and
mosquitto reloads it, so a mapper may serve a device added after the file was first written."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

from edgetwin.wire import topics
from tests.security.conftest import PASSWORDS, apply_devices, auth_settings, node_on_mosquitto
from tests.support import EDGETWIN, Paho, child_process, env_without_edgetwin, thermostat, unique


async def test_a_device_added_later_is_served_once_the_follower_has_reloaded_mosquitto(
    tmp_path: Path,
) -> None:
    a, b = unique("a"), unique("b")
    auth = auth_settings(tmp_path, f"default/{a}", f"default/{b}")
    async with node_on_mosquitto(tmp_path, auth, unique("node")) as (broker, node, config):
        await apply_devices(node, a, b)
        pid_file = tmp_path / "mosquitto.pid"  # as mosquitto's pid_file holds it
        assert broker.proc is not None
        pid_file.write_text(f"{broker.proc.pid}\n")
        acl = tmp_path / "acl"
        args = [*EDGETWIN, "acl", "--mosquitto", "-o", str(acl), "--follow"]
        args += ["--reload-pid-file", str(pid_file), "--config", str(config)]
        wrote = re.compile(r"wrote \S+: \d+ device")
        env = env_without_edgetwin()
        with contextlib.ExitStack() as stack:
            # Started from a thread: the node in this event loop must answer it meanwhile.
            follower = await asyncio.to_thread(
                stack.enter_context, child_process(args, wrote, env=env)
            )
            assert f"$hw/events/device/default/{a}/#" in acl.read_text()
            # mosquitto's log says when it has reloaded: once for the first file, ...
            assert broker.lines is not None
            reloaded = re.compile("Reloading config")
            await asyncio.to_thread(broker.lines.wait_for, reloaded, 15)
            reloads = len(broker.lines.lines)
            late = unique("late")
            assert await node.service.apply([thermostat(late)]) == []
            # ... and once more for the file that names the device added now.
            await asyncio.to_thread(broker.lines.wait_for, reloaded, 15, reloads)
            assert f"topic readwrite $hw/events/device/default/{late}/#" in acl.read_text()
            assert follower.poll() is None  # still following

            mapper = Paho(
                broker.port, username="modbus-mapper", password=PASSWORDS["modbus-mapper"]
            )
            async with mapper:
                update = topics.twin_update_topic(f"default/{late}")
                assert await mapper.subscribe(f"{update}/result") == [True]
                report = {"event_id": "r", "twin": {"current": {"actual": {"value": "21.5"}}}}
                result = await mapper.request(update, report)
            assert "code" not in result, result
            stored = node.engine.devices[f"default/{late}"].twin_document()
    assert stored["current"]["actual"]["value"] == "21.5"
