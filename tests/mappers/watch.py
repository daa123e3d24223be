"""Watching a device on the broker the way any MQTT client can: what its mapper reports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Self

import orjson

from edgetwin.wire import topics
from tests.support import Paho


class DeviceWatch:
    """A paho client following one device's topics; waits are awaited messages, never sleeps."""

    def __init__(self, port: int, device: str, protocol: str = "modbus") -> None:
        self.device = device
        self.protocol = protocol
        self.paho = Paho(port)
        self.reported: dict[str, str] = {}
        """Each property's actual value as the twin stored it (from its update documents)."""
        self.report_times: dict[str, list[int]] = {}
        """When the mapper sent each property's reports (its ``timestamp``, epoch ms)."""
        self.states: list[str] = []
        """The device states the twin stored, in order."""
        self.seen: dict[str, list[dict[str, Any]]] = {}

    async def __aenter__(self) -> Self:
        await self.paho.__aenter__()
        await self.paho.subscribe(
            f"$hw/events/device/{self.device}/#",
            f"$hw/events/mapper/{self.protocol}/{self.device}/#",
        )
        # What the twin held before the watch began: its answer comes in order with what follows.
        self.paho.publish(topics.twin_get_topic(self.device), {"event_id": "watch"})
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.paho.__aexit__(*exc)

    def set(self, **desired: str) -> None:
        twin = {name: {"expected": {"value": value}} for name, value in desired.items()}
        self.paho.publish(topics.twin_update_topic(self.device), {"event_id": "test", "twin": twin})

    async def _next(self, timeout: float) -> tuple[str, dict[str, Any]]:
        topic, payload, _ = await asyncio.wait_for(self.paho.messages.get(), timeout)
        body = orjson.loads(payload) if payload else {}
        self.seen.setdefault(topic.rsplit(self.device, 1)[-1], []).append(body)
        if topic == topics.twin_update_topic(self.device) and body.get("event_id") != "test":
            for name, sides in body.get("twin", {}).items():
                if "actual" in sides:
                    self.report_times.setdefault(name, []).append(body["timestamp"])
        if topic == topics.twin_get_topic(self.device) + "/result" and "twin" in body:
            for name, sides in body["twin"].items():
                if "actual" in sides:
                    self.reported[name] = sides["actual"]["value"]
            self.states.append(body["state"])
        if topic == topics.document_topic(self.device):
            for name, versions in body.get("twin", {}).items():
                if "actual" in versions["current"]:
                    self.reported[name] = versions["current"]["actual"]["value"]
        if topic == topics.state_update_topic(self.device) + "/result" and "device" in body:
            self.states.append(body["device"]["state"])  # the twin's answer: the state is stored
        return topic, body

    async def until(self, done: Callable[[], bool], timeout: float = 15.0) -> None:
        """Until what the device's messages said so far makes ``done()`` true."""
        async with asyncio.timeout(timeout):
            while not done():
                await self._next(timeout)

    async def until_reported(self, timeout: float = 15.0, **values: str) -> None:
        """Until the twin holds these actual values, as reported by the mapper and committed."""
        await self.until(lambda: all(self.reported.get(k) == v for k, v in values.items()), timeout)

    async def until_state(self, state: str, timeout: float = 15.0) -> None:
        await self.until(lambda: bool(self.states) and self.states[-1] == state, timeout)

    async def until_message(self, suffix: str, timeout: float = 15.0) -> dict[str, Any]:
        """The next message on ``<device prefix>/<device>/<suffix>``."""
        async with asyncio.timeout(timeout):
            while True:
                topic, body = await self._next(timeout)
                if topic.endswith(f"{self.device}/{suffix}"):
                    return body
