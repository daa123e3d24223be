"""deploy/systemd/edgetwin.service: systemd's own checks pass, and its ExecStart line, as
written, runs a node that tells systemd it is ready (sd_notify) and stops cleanly.

There is no systemd running here (no PID 1 of its own), so the line runs in the image,
which has the unit's paths (/opt/edgetwin, /etc/edgetwin, /var/lib/edgetwin) and user."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.image.podman import running, state_folder

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy/systemd/edgetwin.service"


def _settings(key: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


def test_systemd_verifies_the_unit_and_rates_its_hardening(tmp_path: Path) -> None:
    """verify checks every directive and that ExecStart's program exists; it is the test
    venv's here (the rest of the unit as it ships)."""
    program = shlex.split(_settings("ExecStart")[0])[0]
    local = ROOT / ".venv/bin/edgetwin"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(program, str(local)))
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert verified.returncode == 0
    assert verified.stderr == ""
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert exposure is not None, security.stdout + security.stderr
    assert float(exposure.group(1)) <= 2.5  # 'OK'; 10 is a unit with no hardening


@contextlib.contextmanager
def _notify_socket(folder: Path) -> Iterator[socket.socket]:
    """What systemd listens on for sd_notify: a datagram socket the service's user may use."""
    folder.mkdir()
    folder.chmod(0o777)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(folder / "notify"))
    (folder / "notify").chmod(0o777)
    sock.setblocking(False)  # noqa: FBT003 - its one argument
    try:
        yield sock
    finally:
        sock.close()


async def test_the_unit_s_exec_start_runs_a_node_that_says_it_is_ready(
    image: str, tmp_path: Path
) -> None:
    assert image
    program, *args = shlex.split(_settings("ExecStart")[0])
    env = dict(line.split("=", 1) for line in _settings("Environment"))
    config = tmp_path / "config.yaml"
    config.write_text("log:\n  level: INFO\n")
    config.chmod(0o644)
    state = state_folder(tmp_path / "state")
    loop = asyncio.get_running_loop()
    with _notify_socket(tmp_path / "systemd") as notify:
        env["NOTIFY_SOCKET"] = "/run/systemd-test/notify"
        mounts = {
            state: env["EDGETWIN_NODE__DATA_DIR"],
            config: "/etc/edgetwin/config.yaml:ro",
            tmp_path / "systemd": "/run/systemd-test",
        }
        async with running(*args, mounts=mounts, env=env, entrypoint=program) as container:
            said = await asyncio.wait_for(loop.sock_recv(notify, 256), 30)
            assert said == b"READY=1"
            assert await asyncio.to_thread(container.stop) == 0
            rest = await asyncio.wait_for(loop.sock_recv(notify, 256), 30)
            assert rest == b"STOPPING=1", container.logs()
    assert (state / "edgetwin.db").exists()
