"""The node's image in the tests: built from the Containerfile by tests/image/build, run with
podman on the host's network (its ports on 127.0.0.1), stopped with SIGTERM as a kubelet
or systemd would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from tests.metrics import http
from tests.support import free_port, unique, until

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/edgetwin:test"
NODE_USER = 10001
"""The image's user (Containerfile); files it must read or write are made its own."""
_CONF = ROOT / "tests/image/containers.conf"


def podman(*args: str, timeout: float = 120.0) -> str:
    """What podman printed (its standard output, and its standard error: a container's log
    comes on both)."""
    done = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "CONTAINERS_CONF": str(_CONF)},
    )
    if done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.stderr.strip()}")
    return (done.stdout + (done.stderr if args[0] == "logs" else "")).strip()


def build_image() -> str:
    subprocess.run([str(ROOT / "tests/image/build"), IMAGE], check=True, timeout=1800)
    return IMAGE


def state_folder(path: Path) -> Path:
    """A folder for the node's state, its user's as the DaemonSet's init container makes it."""
    path.mkdir(parents=True)
    os.chown(path, NODE_USER, 0)
    return path


class Container:
    """A node's container: ``edgetwin run`` with ``args``, its broker and health server on
    free ports of 127.0.0.1 (the environment overrides whatever settings file it gets)."""

    def __init__(
        self,
        *args: str,
        mounts: dict[Path, str],
        env: dict[str, str],
        entrypoint: str | None = None,
    ) -> None:
        self.name = unique("edgetwin")
        self.port = free_port()
        self.health_port = free_port()
        own = {
            "EDGETWIN_BROKER__HOST": "127.0.0.1",
            "EDGETWIN_BROKER__PORT": str(self.port),
            "EDGETWIN_HEALTH__HOST": "127.0.0.1",
            "EDGETWIN_HEALTH__PORT": str(self.health_port),
        }
        self.run_args = ["--network", "host", "--name", self.name]
        if entrypoint is not None:
            self.run_args += ["--entrypoint", entrypoint]
        for source, target in mounts.items():
            self.run_args += ["--volume", f"{source}:{target}"]
        for key, value in {**env, **own}.items():
            self.run_args += ["--env", f"{key}={value}"]
        self.args = args

    def start(self) -> None:
        podman("run", "--detach", *self.run_args, IMAGE, *self.args)

    def restart(self) -> None:
        podman("restart", "--time", "30", self.name, timeout=60)

    def stop(self) -> int:
        """SIGTERM, then the exit code."""
        podman("stop", "--time", "30", self.name, timeout=60)
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name))

    def logs(self) -> str:
        return podman("logs", self.name)

    def exec(self, *command: str) -> str:
        return podman("exec", self.name, *command)

    async def ready(self) -> None:
        """Until /readyz answers 200: the twin is connected and, with a cluster, synced."""

        async def answers() -> bool:
            with contextlib.suppress(OSError):
                return (await http(self.health_port, "/readyz"))[0] == 200
            return False

        try:
            await until(answers, f"container {self.name} ready", timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from exc

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name)


@contextlib.asynccontextmanager
async def running(
    *args: str, mounts: dict[Path, str], env: dict[str, str], entrypoint: str | None = None
) -> AsyncIterator[Container]:
    container = Container(*args, mounts=mounts, env=env, entrypoint=entrypoint)
    await asyncio.to_thread(container.start)
    try:
        await container.ready()
        yield container
    finally:
        await asyncio.to_thread(container.remove)
