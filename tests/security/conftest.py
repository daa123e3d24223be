"""A node behind a broker that asks who you are: each embedded broker (amqtt in the node's
process; mosquitto as the node's child, with edgetwin's plugin and the rules the node
writes for it), or an external mosquitto with the files a person writes with edgetwin
(``edgetwin passwd``, ``edgetwin acl --mosquitto``).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgetwin.auth import PasswordFile, Tally, mosquitto_acl
from edgetwin.config import AuthSettings, load_settings
from edgetwin.node import Node
from tests.support import (
    EDGETWIN,
    Mosquitto,
    Paho,
    env_without_edgetwin,
    thermostat,
    thermostat_model,
    unique,
    until,
)

PASSWORDS = {
    "admin": "admin-secret",
    "dev-a": "a-secret",
    "dev-b": "b-secret",
    "modbus-mapper": "modbus-secret",
    "mqtt-mapper": "mqtt-secret",
}


@dataclass
class Secured:
    """The node, its broker's port, two devices (a: modbus, b: mqtt) and each user's client."""

    engine: str
    """amqtt, mosquitto (the node's), or external mosquitto."""
    node: Node
    port: int
    a: str
    b: str
    tally: Tally | None
    """What the node's broker refused and denied; None on an external mosquitto."""

    async def counted(self, what: str, condition: Callable[[Tally], bool]) -> None:
        """Until the node's broker has counted what ``condition`` says (the node's mosquitto
        tells it on its log, read a moment later); at once on an external one."""
        tally = self.tally
        if tally is not None:
            await until(lambda: condition(tally), what)

    def client(
        self,
        user: str | None,
        password: str | None = None,
        *,
        client_id: str | None = None,
        clean_session: bool = True,
    ) -> Paho:
        if user is not None and password is None:
            password = PASSWORDS[user]
        return Paho(
            self.port,
            client_id,
            username=user,
            password=password,
            clean_session=clean_session,
        )


def auth_settings(folder: Path, a: str, b: str) -> dict[str, Any]:
    passwords = PasswordFile(folder / "passwd")
    for user, password in PASSWORDS.items():
        if user != "admin":
            passwords.set(user, password)
    passwords.save()
    # The admin through the command, as a person would add one (password on stdin).
    subprocess.run(
        [*EDGETWIN, "passwd", str(folder / "passwd"), "admin", "--stdin"],
        input=PASSWORDS["admin"] + "\n",
        text=True,
        check=True,
        env=env_without_edgetwin(),
    )
    return {
        "password_file": str(folder / "passwd"),
        "admins": ["admin"],
        "mappers": {"modbus-mapper": "modbus", "mqtt-mapper": "mqtt"},
        "devices": {"dev-a": a, "dev-b": b},
    }


@pytest.fixture(params=["amqtt", "mosquitto", "external mosquitto"])
async def secured(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Secured]:
    a, b = unique("a"), unique("b")
    auth = auth_settings(tmp_path, f"default/{a}", f"default/{b}")
    node_name = unique("node")
    async with contextlib.AsyncExitStack() as stack:
        if request.param != "external mosquitto":  # an embedded broker
            settings = load_settings(
                node={"name": node_name, "data_dir": str(tmp_path)},
                store={"synchronous": "NORMAL"},
                broker={"port": 0, "auth": auth, "engine": request.param},
            )
            node = await stack.enter_async_context(Node(settings))
            await apply_devices(node, a, b)
            assert node.broker is not None
            devices = f"default/{a}", f"default/{b}"
            yield Secured(request.param, node, node.broker_port, *devices, node.broker.tally)
            return
        broker, node, config = await stack.enter_async_context(
            node_on_mosquitto(tmp_path, auth, node_name)
        )
        await apply_devices(node, a, b)
        written = await asyncio.to_thread(
            subprocess.run,
            [*EDGETWIN, "acl", "--mosquitto", "-o", str(tmp_path / "acl"), "--config", str(config)],
            capture_output=True,
            text=True,
            env=env_without_edgetwin(),
            check=False,
        )
        assert written.returncode == 0, written.stderr
        assert f"topic readwrite $hw/events/device/default/{a}/#" in (tmp_path / "acl").read_text()
        await asyncio.to_thread(broker.reload)
        yield Secured(request.param, node, broker.port, f"default/{a}", f"default/{b}", None)


@contextlib.asynccontextmanager
async def node_on_mosquitto(
    folder: Path, auth: dict[str, Any], node_name: str
) -> AsyncIterator[tuple[Mosquitto, Node, Path]]:
    """mosquitto with ``auth``'s password file and an acl_file (``folder/acl``, for no
    devices yet), a node on it as the admin, and a config file for the CLI as the admin."""
    acl = folder / "acl"
    acl.write_text(mosquitto_acl(AuthSettings.model_validate(auth), []))
    listener = f"allow_anonymous false\npassword_file {auth['password_file']}\nacl_file {acl}\n"
    with Mosquitto(folder, listener) as broker:
        client = {"port": broker.port, "username": "admin", "password": PASSWORDS["admin"]}
        settings = load_settings(
            node={"name": node_name, "data_dir": str(folder)},
            store={"synchronous": "NORMAL"},
            broker={"embedded": False, **client},
        )
        config = folder / "cli.yaml"
        config.write_text(
            yaml.safe_dump({"node": {"name": node_name}, "broker": client | {"auth": auth}})
        )
        async with Node(settings) as node:
            yield broker, node, config


async def apply_devices(node: Node, a: str, b: str) -> None:
    devices = [thermostat_model(), thermostat(a), thermostat(b, protocol="mqtt")]
    assert await node.service.apply(devices) == []
