"""``edgetwin acl --mosquitto``: mosquitto's acl_file for broker.auth's roles and the node's
devices, written once, or kept up to date as devices come and go (``--follow``).

The mapper rules name each device of the mapper's protocol, so a file written
once goes stale when devices are added. The follower subscribes to the node's
membership updates, asks for the membership after each one (one request in
flight; updates meanwhile ask again once it is answered), rewrites the file
when its text changes, and sends mosquitto SIGHUP (its ``pid_file``) to
reload it. It reconnects as the node's other clients do.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from pathlib import Path
from typing import Any, Self

import orjson

from edgetwin.auth import DeviceEntry, mosquitto_acl
from edgetwin.config import Settings
from edgetwin.mqtt import BrokerAddress, MqttConnection, Session, one_by_one
from edgetwin.wire import topics
from edgetwin.wire.messages import get_request

log = logging.getLogger(__name__)


def acl_text(settings: Settings, membership: dict[str, Any]) -> tuple[str, int]:
    """The acl_file for a membership/get result, and how many devices it names."""
    devices = [
        DeviceEntry(d["id"], d["protocol"])
        for d in membership.get("devices", [])
        if isinstance(d, dict) and isinstance(d.get("id"), str) and d.get("protocol")
    ]
    return mosquitto_acl(settings.broker.auth, devices), len(devices)


def write_if_changed(path: Path, text: str) -> bool:
    """Replace ``path`` atomically with ``text``; False if it already held it."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
    return True


def reload_mosquitto(pid_file: Path) -> None:
    """SIGHUP to the mosquitto whose pid is in ``pid_file``: it reads its acl_file again."""
    try:
        pid = int(pid_file.read_text(encoding="utf-8").strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        log.warning("cannot tell mosquitto to reload (pid file %s): %s", pid_file, exc)
        return
    log.info("told mosquitto (pid %d) to reload", pid)


class MosquittoAclFollower:
    """``async with MosquittoAclFollower(...)``: the acl_file follows the node's devices."""

    def __init__(self, settings: Settings, output: Path, reload_pid_file: Path | None) -> None:
        self.settings = settings
        self.output = output
        self.reload_pid_file = reload_pid_file
        self._address = BrokerAddress.from_settings(settings.broker)
        node = settings.node.name
        self._get = topics.membership_get_topic(node)
        self._updated = topics.membership_updated_topic(node)
        self._link: MqttConnection | None = None
        self._asked: str | None = None
        """The event_id of the membership request in flight, if any."""
        self._stale = False
        self._session = Session(
            self._connect,
            on_connect=self._on_connect,
            on_batch=one_by_one(self._on_message),
            on_disconnect=self._on_disconnect,
            max_delay=settings.broker.reconnect_max_delay,
            name="acl follower",
        )

    def _connect(self) -> MqttConnection:
        return MqttConnection(self._address, client_id=f"edgetwin-acl-{uuid.uuid4().hex[:8]}")

    async def __aenter__(self) -> Self:
        await self._session.__aenter__()  # a broker that cannot be reached is a clear error now
        log.info("following the devices of node %s into %s", self.settings.node.name, self.output)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.__aexit__(None, None, None)

    async def _on_connect(self, link: MqttConnection) -> None:
        self._link = link
        await link.subscribe([self._updated, f"{self._get}/result"])
        await self._ask()  # anything may have changed while we were away

    def _on_disconnect(self) -> None:
        self._link, self._asked = None, None

    async def _ask(self) -> None:
        if self._link is None:
            return
        self._asked, self._stale = uuid.uuid4().hex, False
        await self._link.publish(self._get, get_request(self._asked))

    async def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self._updated:
            if self._asked is None:
                await self._ask()
            else:
                self._stale = True  # asked again once the answer in flight is in
            return
        try:
            result = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(result, dict) or result.get("event_id") != self._asked:
            return
        self._asked = None
        if "code" in result:
            log.warning("the node refused the membership request: %s", result.get("reason"))
        else:
            self._write(result)
        if self._stale:
            await self._ask()

    def _write(self, membership: dict[str, Any]) -> None:
        text, count = acl_text(self.settings, membership)
        if not write_if_changed(self.output, text):
            return
        log.info("wrote %s: %d device(s)", self.output, count)
        if self.reload_pid_file is not None:
            reload_mosquitto(self.reload_pid_file)
