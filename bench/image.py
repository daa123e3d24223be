"""The node's image: its size, the container's start-up time, and its memory with 1,000 devices.

The image is built by tests/image/build (the Containerfile, on a base made from Debian's
packages here: see the README for how that base differs from the registry's). Start-up is
timed from ``podman run`` to the first 200 of ``/readyz`` (polled every 10 ms), the best of
``--runs``, with an empty state volume and with 1,000 devices' manifests loaded. Memory:
RSS of the node's process and of its mosquitto, read from /proc through the container's
main pid, once the devices are in.

Run: ``.venv/bin/python -m bench.image [--devices N] [--runs N]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

from tests.image.podman import IMAGE, Container, build_image, podman, state_folder
from tests.metrics import http
from tests.support import thermostat, write_manifests

from bench.throughput import rss_mb


async def _start(container: Container) -> float:
    """Seconds from ``podman run`` to ready."""
    started = time.perf_counter()
    await asyncio.to_thread(container.start)
    while True:
        with contextlib.suppress(OSError):
            if (await http(container.health_port, "/readyz"))[0] == 200:
                return time.perf_counter() - started
        await asyncio.sleep(0.01)


def _memory(container: Container) -> tuple[float, float]:
    """RSS of the node's process and of its mosquitto, MB."""
    pid = int(podman("inspect", "--format", "{{.State.Pid}}", container.name))
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return rss_mb(pid), sum(rss_mb(int(child)) for child in children)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    await asyncio.to_thread(build_image)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE))
    print(f"image {IMAGE}: {size / 1e6:.0f} MB")
    with tempfile.TemporaryDirectory(prefix="bench-image-") as folder:
        root = Path(folder)
        devices = [thermostat(f"t{i}", node="bench") for i in range(args.devices)]
        manifests = write_manifests(root / "manifests", devices)
        for path in (manifests, *manifests.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        for label, extra in (("empty", False), (f"{args.devices} devices", True)):
            times = []
            for run in range(args.runs):
                state = state_folder(root / f"state-{label}-{run}")
                mounts = {state: "/var/lib/edgetwin"}
                node_args = ["--node", "bench"]
                if extra:
                    mounts[manifests] = "/etc/edgetwin/manifests:ro"
                    node_args += ["--manifests", "/etc/edgetwin/manifests"]
                container = Container(*node_args, mounts=mounts, env={})
                try:
                    times.append(await _start(container))
                    if extra and run == args.runs - 1:
                        node, broker = _memory(container)
                        print(f"RSS with {label}: node {node:.1f} MB, mosquitto {broker:.1f} MB")
                finally:
                    await asyncio.to_thread(container.remove)
            print(
                f"start-up to ready, {label}: best {min(times) * 1000:.0f} ms, "
                f"median {sorted(times)[len(times) // 2] * 1000:.0f} ms"
            )


if __name__ == "__main__":
    asyncio.run(main())
