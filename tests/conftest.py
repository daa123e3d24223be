"""Fixtures: the brokers every MQTT test runs on, nodes, and a task-leak check."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

# Before anything imports gRPC (see edgetwin.mappers.dmi): the tests fork mosquittos too.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from edgetwin.config import load_settings
from edgetwin.node import Node
from tests.support import mosquitto, unique

BROKERS = ["amqtt", "mosquitto"]

# Nodes in the tests serve health and metrics on a free port, never the default 9464.
os.environ["EDGETWIN_HEALTH__PORT"] = "0"


@pytest.fixture(scope="session")
def mosquitto_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with mosquitto(tmp_path_factory.mktemp("mosquitto")) as port:
        yield port


@pytest.fixture(params=BROKERS)
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def node_settings(broker_kind: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Settings for a node on the chosen embedded broker, on a free port: amqtt in its process,
    or mosquitto as its supervised child."""
    broker: dict[str, object] = {"engine": broker_kind, "port": 0}
    return load_settings(
        node={"name": unique("node"), "data_dir": str(tmp_path)},
        broker=broker,
        store={"synchronous": "NORMAL"},
    )


@pytest.fixture
async def node(node_settings) -> AsyncIterator[Node]:  # type: ignore[no-untyped-def]
    async with Node(node_settings) as running:
        yield running


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves an asyncio task running behind it."""
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if leaked:
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        pytest.fail(f"test left tasks running: {[t.get_name() for t in leaked]}")
