"""Test helpers: free ports, a real mosquitto, a paho client awaited from asyncio, manifests."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import getpass
import inspect
import os
import re
import selectors
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Self

import orjson
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edgetwin.wire.resources import Device, DeviceModel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(found).exists():
        raise RuntimeError("mosquitto is not installed: run scripts/test, which installs it")
    return found


class Mosquitto:
    """A real mosquitto on a free loopback port, which can be reloaded, killed and restarted.

    ``listener`` is the rest of the listener's configuration (auth, TLS).
    """

    def __init__(self, workdir: Path, listener: str = "allow_anonymous true\n") -> None:
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"user {getpass.getuser()}\n"  # as root it would drop to 'mosquitto': no tmp access
            "per_listener_settings true\n"
            f"listener {self.port} 127.0.0.1\n"
            f"{listener}"
            "set_tcp_nodelay true\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 1000\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: LineWatch | None = None

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)], stderr=subprocess.PIPE
        )
        self.lines = LineWatch(self.proc)
        self.lines.wait_for(re.compile(r"mosquitto version \S+ running"), 10.0)  # listening
        return self

    def reload(self) -> None:
        """SIGHUP: mosquitto reads its password and ACL files again; back once it has."""
        assert self.proc is not None
        assert self.lines is not None
        seen = len(self.lines.lines)
        self.proc.send_signal(signal.SIGHUP)
        self.lines.wait_for(re.compile(r"Reloading config"), 10.0, start=seen)

    def kill(self) -> None:
        """SIGKILL, as a crash or power cut would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def mosquitto(workdir: Path, listener: str = "allow_anonymous true\n") -> Iterator[int]:
    """A real mosquitto on a free loopback port; yields the port once it is listening."""
    with Mosquitto(workdir, listener) as broker:
        yield broker.port


class LineWatch:
    """Reads a child's stderr on a thread (so a full pipe never stalls it), keeping the lines."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._stream = proc.stderr
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with self._stream:
            for raw in self._stream:
                with self._changed:
                    self.lines.append(raw.decode(errors="replace"))
                    self._changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout: float, start: int = 0) -> str:
        """The first line from ``start`` on that matches; the lines so far shown if none does."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if pattern.search(line):
                        return line
                start = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    text = "".join(self.lines)
                    raise TimeoutError(f"no line matching {pattern.pattern!r} in:\n{text}")


def wait_for_line(proc: subprocess.Popen[bytes], pattern: re.Pattern[str], timeout: float) -> str:
    """Read the process's stderr until a line matches; what was read is shown on failure."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
            for line in buffer.decode(errors="replace").splitlines():
                if pattern.search(line):
                    return line
    raise RuntimeError(f"no line matching {pattern.pattern!r}; got: {buffer.decode()[-2000:]}")


@contextlib.contextmanager
def child_process(
    args: list[str],
    ready: re.Pattern[str],
    *,
    env: dict[str, str] | None = None,
    clean_exit: bool = True,
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, once a line of its stderr matches ``ready``; terminated at the end
    (``clean_exit``: and it must exit with 0).

    Its stderr is then read to the end on a thread, so a full pipe never stalls
    it; the thread closes the pipe itself, and is joined once the child is gone.
    """
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, env=env)
    stream = proc.stderr
    assert stream is not None

    def read_to_the_end() -> None:
        with stream:
            collections.deque(stream, maxlen=0)

    reader: threading.Thread | None = None
    try:
        wait_for_line(proc, ready, 30.0)
        reader = threading.Thread(target=read_to_the_end, daemon=True)
        reader.start()
        yield proc
    finally:
        proc.terminate()
        code = proc.wait(10)
        if reader is not None:
            reader.join(10)
        else:
            stream.close()
    assert code == 0 or not clean_exit, f"{args[:3]} exited with {code}"


class Paho:
    """A paho-mqtt client (not our adapter) whose messages are awaited from asyncio."""

    def __init__(
        self,
        port: int,
        client_id: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        clean_session: bool = True,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.port = port
        self.messages: asyncio.Queue[tuple[str, bytes, bool]] = asyncio.Queue()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"paho-{uuid.uuid4().hex[:8]}",
            clean_session=clean_session,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.tls = tls is not None
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.on_message = self._on_message
        self._answered: asyncio.Future[str] = self.loop.create_future()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        self.loop.call_soon_threadsafe(self._answer, str(reason))

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        self.loop.call_soon_threadsafe(self._answer, f"disconnected: {reason}")

    def _answer(self, reason: str) -> None:
        if not self._answered.done():
            self._answered.set_result(reason)

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        item = (message.topic, bytes(message.payload), bool(message.retain))
        self.loop.call_soon_threadsafe(self.messages.put_nowait, item)

    async def __aenter__(self) -> Self:
        """Connected; ConnectionRefusedError with the broker's reason if it says no."""
        if self.tls:  # the handshake blocks, and the broker may be on this very loop
            await asyncio.to_thread(self.client.connect, "127.0.0.1", self.port)
        else:
            self.client.connect("127.0.0.1", self.port)
        sock = self.client.socket()
        if sock is None:  # closed already: a TLS 1.3 server refuses a client cert after connect
            raise ConnectionResetError("the broker closed the connection")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.loop_start()
        reason = await asyncio.wait_for(asyncio.shield(self._answered), 10)
        if reason != "Success":
            await self.__aexit__()
            raise ConnectionRefusedError(reason)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
        # paho closes its socket and wake-up socket pair only in __del__, which a reference
        # cycle can put off until some later garbage collection.
        self.client._reset_sockets()

    async def subscribe(self, *filters: str) -> list[bool]:
        """Subscribed (QoS 1); for each filter, whether the broker granted it."""
        done: asyncio.Future[list[bool]] = self.loop.create_future()

        def on_subscribe(_c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
            granted = [not code.is_failure for code in codes]
            self.loop.call_soon_threadsafe(done.set_result, granted)

        self.client.on_subscribe = on_subscribe
        self.client.subscribe([(f, 1) for f in filters])
        return await asyncio.wait_for(done, 10)

    def publish(self, topic: str, body: dict[str, Any] | bytes, retain: bool = False) -> None:
        payload = body if isinstance(body, bytes) else orjson.dumps(body)
        self.client.publish(topic, payload, qos=1, retain=retain)

    async def next(self, topic: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next message on exactly this topic (others on the way are dropped)."""
        while True:
            got_topic, payload, _ = await asyncio.wait_for(self.messages.get(), timeout)
            if got_topic == topic:
                return dict(orjson.loads(payload)) if payload else {}

    async def request(self, topic: str, body: dict[str, Any] | bytes) -> dict[str, Any]:
        """Publish to topic and wait for ``topic/result`` (subscribe first)."""
        self.publish(topic, body)
        return await self.next(f"{topic}/result")


async def until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 15.0
) -> None:
    """Until something no event announces holds: the node, on its own tasks, gets somewhere
    (a device in its engine, a counter, a log line), or another process shows it (an API
    server's objects; then ``condition`` is async). A bounded check every 10 ms."""

    async def holds() -> bool:
        result = condition()
        return bool(await result) if inspect.isawaitable(result) else bool(result)

    async with asyncio.timeout(timeout):
        while not await holds():
            await asyncio.sleep(0.01)
    assert await holds(), what


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def thermostat_model(namespace: str = "default", name: str = "thermostat") -> DeviceModel:
    return DeviceModel.model_validate(
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "DeviceModel",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "protocol": "modbus",
                "protocolConfigData": {"slaveID": 1},
                "properties": [
                    {
                        "name": "target",
                        "type": "FLOAT",
                        "accessMode": "ReadWrite",
                        "minimum": "5",
                        "maximum": "35",
                        "visitors": {
                            "protocolName": "modbus",
                            "configData": {"register": "HoldingRegister", "offset": 0},
                        },
                    },
                    {
                        "name": "current",
                        "type": "FLOAT",
                        "accessMode": "ReadOnly",
                        "minimum": "-40",
                        "maximum": "85",
                    },
                    {"name": "count", "type": "INT", "minimum": "0", "maximum": "1000000"},
                    {"name": "enabled", "type": "BOOLEAN"},
                    {"name": "label", "type": "STRING"},
                    {"name": "blob", "type": "BYTES"},
                ],
            },
        }
    )


def thermostat(
    name: str,
    namespace: str = "default",
    model: str = "thermostat",
    node: str | None = None,
    desired: dict[str, str] | None = None,
    protocol: str = "modbus",
) -> Device:
    properties: list[dict[str, Any]] = [
        {
            "name": p,
            "reportToCloud": True,
            **({"desired": {"value": desired[p]}} if desired and p in desired else {}),
        }
        for p in ("target", "current", "count", "enabled", "label", "blob")
    ]
    properties[0]["visitors"] = {"protocolName": "modbus", "configData": {"offset": 7}}
    spec: dict[str, Any] = {
        "deviceModelRef": {"name": model},
        "protocol": {"protocolName": protocol, "configData": {"ip": "127.0.0.1", "port": 502}},
        "properties": properties,
    }
    if node:
        spec["nodeName"] = node
    return Device.model_validate(
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def model_manifest(name: str, protocol: str, properties: list[dict[str, Any]]) -> DeviceModel:
    """A DeviceModel in the default namespace with these properties."""
    return DeviceModel.model_validate(
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "DeviceModel",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"protocol": protocol, "properties": properties},
        }
    )


def device_manifest(
    name: str,
    model: str,
    protocol: str,
    config: dict[str, Any],
    properties: list[dict[str, Any]] | None = None,
) -> Device:
    """A Device in the default namespace with its protocol config (and property settings)."""
    spec: dict[str, Any] = {
        "deviceModelRef": {"name": model},
        "protocol": {"protocolName": protocol, "configData": config},
    }
    if properties:
        spec["properties"] = properties
    return Device.model_validate(
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }
    )


def env_without_edgetwin() -> dict[str, str]:
    """The environment for child processes: no settings of ours but a free health port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGETWIN_")}
    return env | {"EDGETWIN_HEALTH__PORT": "0"}


EDGETWIN = [sys.executable, "-m", "edgetwin"]


class NodeProcess:
    """``edgetwin run`` as a child process on a free port; started once it logs 'ready'."""

    def __init__(
        self,
        data_dir: Path,
        *,
        node: str,
        port: int | None = None,
        external_port: int | None = None,
        manifests: Path | None = None,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        program: tuple[str, ...] = tuple(EDGETWIN),
    ) -> None:
        self.data_dir = data_dir
        self.env = env_without_edgetwin() | (env or {})
        self.node = node
        self.port = external_port or port or free_port()
        self.args = [
            *program,
            "run",
            "--node",
            node,
            "--data-dir",
            str(data_dir),
            "--broker",
            f"127.0.0.1:{self.port}",
        ]
        if external_port:
            self.args.append("--external-broker")
        if manifests:
            self.args += ["--manifests", str(manifests)]
        self.args += extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: LineWatch | None = None
        """The node's log so far, once started."""

    def start(self) -> NodeProcess:
        self.proc = subprocess.Popen(self.args, stderr=subprocess.PIPE, env=self.env)
        self.lines = LineWatch(self.proc)
        self.lines.wait_for(re.compile(r"node \S+ ready"), 30.0)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(20)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGETWIN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_without_edgetwin(),
        check=False,
    )


def write_manifests(folder: Path, devices: list[Device], model: DeviceModel | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    documents = [(model or thermostat_model()).to_document(), *(d.to_document() for d in devices)]
    (folder / "devices.yaml").write_text(yaml.safe_dump_all(documents))
    return folder


def make_certificates(folder: Path) -> None:
    """A CA, and a server certificate for 127.0.0.1 signed by it."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    )


def assert_store_holds(database: Path, confirmed: dict[str, int]) -> None:
    """The SQLite file is intact and holds, for each device, at least the ``count`` value
    whose update was confirmed (a later one may have been committed before a crash)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = dict(
            db.execute(
                "SELECT device, CAST(reported AS INTEGER) FROM twins "
                "WHERE property = 'count' AND reported IS NOT NULL"
            )
        )
    for device, i in confirmed.items():
        assert stored[device] >= i, (device, stored[device], i)
